//! Publishes one message over the gRPC server API with `hub-client`. Start the server with the
//! gRPC API on, then publish:
//!
//! ```sh
//! HUB_GRPC_API_ENABLED=true HUB_GRPC_API_KEY=secret cargo run -p hub-server
//! HUB_GRPC_KEY=secret cargo run -p example-grpc-publish -- news '{"text":"hi"}'
//! ```
//!
//! `HUB_GRPC_ADDR` changes the address (default `http://127.0.0.1:10000`). The API is
//! Centrifugo's, so this program publishes to Centrifugo as well.

use std::process::ExitCode;

use hub_client::HubClient;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(msg) => {
            println!("{msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<String, Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(channel), Some(data)) = (args.next(), args.next()) else {
        return Err("usage: example-grpc-publish CHANNEL JSON_DATA".into());
    };
    let data: serde_json::Value = serde_json::from_str(&data)?;
    let addr =
        std::env::var("HUB_GRPC_ADDR").unwrap_or_else(|_| "http://127.0.0.1:10000".to_string());
    let key = std::env::var("HUB_GRPC_KEY").unwrap_or_default();

    let client = HubClient::connect(&addr, &key).await?;
    let pos = client.publish(&channel, &data).await?;
    Ok(if pos.offset > 0 {
        format!(
            "published to {channel}: offset {} epoch {}",
            pos.offset, pos.epoch
        )
    } else {
        format!("published to {channel}")
    })
}
