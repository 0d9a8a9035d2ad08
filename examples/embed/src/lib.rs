//! hub-core embedded in an axum app.
//!
//! ```text
//! cargo run -p example-embed            # then: node examples/node-subscriber/... or a browser
//! ```
//!
//! The app decides everything through a [`Handler`]: here a connection is accepted when its
//! `?user=NAME` query names someone (a real app would check a session cookie, which
//! [`ConnectingEvent::transport`] carries), anyone may subscribe to `clock` and to their
//! own `user:NAME` channel and no other, and the RPC `echo` answers with what it got. The
//! app publishes the time to `clock` every second. Nothing here knows of config files, JWT
//! or HTTP APIs: hub-core leaves those to the embedder.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use bytes::Bytes;
use hub_core::broker::PublishOptions;
use hub_core::protocol::Publication;
use hub_core::{
    async_trait, ClientContext, ConnectingEvent, Credentials, Disconnect, Error, Handler, Node,
    Reject, SubscribeEvent, SubscribeOptions,
};

/// The app's rules.
pub struct App;

#[async_trait]
impl Handler for App {
    async fn on_connecting(&self, e: ConnectingEvent) -> Result<Credentials, Reject> {
        let user = e
            .transport
            .query
            .as_deref()
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("user="))
            .filter(|u| !u.is_empty() && u.chars().all(|c| c.is_ascii_alphanumeric()))
            .ok_or(Disconnect::INVALID_TOKEN)?;
        Ok(Credentials {
            user: user.to_owned(),
            ..Default::default()
        })
    }

    async fn on_subscribe(
        &self,
        client: &ClientContext,
        e: SubscribeEvent,
    ) -> Result<SubscribeOptions, Reject> {
        let own = format!("user:{}", client.user);
        if e.channel == "clock" || e.channel == own {
            Ok(SubscribeOptions::default())
        } else {
            Err(Error::PERMISSION_DENIED.into())
        }
    }

    async fn on_rpc(&self, _c: &ClientContext, method: &str, data: Bytes) -> Result<Bytes, Reject> {
        match method {
            "echo" => Ok(data),
            _ => Err(Error::METHOD_NOT_FOUND.into()),
        }
    }
}

/// Starts the node and the app's publisher; returns the router to serve.
pub async fn app() -> Result<(Node, Router), hub_core::EngineError> {
    let node = Node::builder().handler(App).start().await?;
    let clock = node.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let data = serde_json::json!({ "unix": now }).to_string();
            let p = Publication {
                data: data.into(),
                ..Default::default()
            };
            if clock
                .publish("clock", p, &PublishOptions::default())
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let router = Router::new()
        .route("/connection/websocket", any(websocket))
        .with_state(node.clone());
    Ok((node, router))
}

async fn websocket(
    State(node): State<Node>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    node.accept_websocket(req, Some(addr)).into_response()
}
