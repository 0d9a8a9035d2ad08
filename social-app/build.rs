//! Compiles `proto/social.proto` (the app's backend services) with protox, a protobuf compiler
//! in pure Rust: building needs no `protoc`. Servers and clients both: the services serve,
//! the gateway and the services call each other.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/social.proto");
    let fds = protox::compile(["social.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_transport(true)
        .compile_fds(fds)?;
    Ok(())
}
