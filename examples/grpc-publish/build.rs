//! Generates the client from hub-server's `api.proto` (Centrifugo's definition), with protox:
//! no `protoc` needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = "../../hub-server/proto";
    println!("cargo:rerun-if-changed={dir}/api.proto");
    let fds = protox::compile(["api.proto"], [dir])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
