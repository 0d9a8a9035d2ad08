//! `cargo run -p example-embed`: serves ws://127.0.0.1:8080/connection/websocket?user=NAME

use std::net::SocketAddr;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (_node, router) = example_embed::app().await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    println!("ws://127.0.0.1:8080/connection/websocket?user=NAME  (channels: clock, user:NAME; rpc: echo)");
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
