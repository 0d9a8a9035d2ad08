//! Compiles `proto/api.proto` (the gRPC server API) and `proto/proxy.proto` (the proxy API the
//! hub calls on backends) with protox, a protobuf compiler in pure Rust, so building needs no
//! `protoc` on the machine. Both get client and server stubs: the hub serves the API and calls
//! the proxy; tests call the API and serve a fake proxy backend.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/api.proto");
    println!("cargo:rerun-if-changed=proto/proxy.proto");
    let fds = protox::compile(["api.proto", "proxy.proto"], ["proto"])?;
    tonic_prost_build::configure()
        // Payloads stay `bytes::Bytes`: no copy between the wire and the hub.
        .bytes(".")
        // RPCs we do not implement answer UNIMPLEMENTED by default.
        .generate_default_stubs(true)
        // The client is generic over any gRPC service (tests, examples bring a channel).
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
