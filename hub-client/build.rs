//! Generates the gRPC client from hub-server's `proto/api.proto` (Centrifugo's `CentrifugoApi`
//! definition) with protox, a protobuf compiler in pure Rust: no `protoc` needed, and no
//! dependency on the hub-server crate.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = "../hub-server/proto";
    println!("cargo:rerun-if-changed={dir}/api.proto");
    let fds = protox::compile(["api.proto"], [dir])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
