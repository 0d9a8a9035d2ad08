//! Publishes one message over the gRPC server API. Start the server with the gRPC API on, then
//! publish:
//!
//! ```sh
//! HUB_GRPC_API_ENABLED=true HUB_GRPC_API_KEY=secret cargo run -p hub-server
//! HUB_GRPC_KEY=secret cargo run -p example-grpc-publish -- news '{"text":"hi"}'
//! ```
//!
//! `HUB_GRPC_ADDR` changes the address (default `http://127.0.0.1:10000`). The client is
//! generated from `hub-server/proto/api.proto`, which is Centrifugo's definition, so this
//! program publishes to Centrifugo as well.

use std::process::ExitCode;

use tonic::transport::Channel;

#[allow(missing_docs, unreachable_pub, dead_code, clippy::all)]
mod api {
    tonic::include_proto!("centrifugal.centrifugo.api");
}

use api::centrifugo_api_client::CentrifugoApiClient;

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

async fn run() -> Result<String, String> {
    let mut args = std::env::args().skip(1);
    let (Some(channel), Some(data)) = (args.next(), args.next()) else {
        return Err("usage: example-grpc-publish CHANNEL JSON_DATA".into());
    };
    let addr =
        std::env::var("HUB_GRPC_ADDR").unwrap_or_else(|_| "http://127.0.0.1:10000".to_string());
    let key = std::env::var("HUB_GRPC_KEY").unwrap_or_default();

    let conn = Channel::from_shared(addr.clone())
        .map_err(|e| format!("invalid HUB_GRPC_ADDR {addr:?}: {e}"))?
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let mut client = CentrifugoApiClient::new(conn);

    let mut request = tonic::Request::new(api::PublishRequest {
        channel: channel.clone(),
        data: data.into_bytes(),
        ..Default::default()
    });
    let auth = format!("apikey {key}")
        .parse()
        .map_err(|_| "HUB_GRPC_KEY is not a valid metadata value".to_string())?;
    request.metadata_mut().insert("authorization", auth);

    let reply = client
        .publish(request)
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    match (reply.error, reply.result) {
        (Some(e), _) => Err(format!("API error {}: {}", e.code, e.message)),
        (None, Some(r)) if r.offset > 0 => Ok(format!(
            "published to {channel}: offset {} epoch {}",
            r.offset, r.epoch
        )),
        (None, _) => Ok(format!("published to {channel}")),
    }
}
