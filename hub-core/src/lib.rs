//! # hub-core
//!
//! An embeddable realtime hub. Browsers and apps connect over WebSocket with any Centrifugo
//! client SDK (centrifuge-js, centrifuge-python, ...), subscribe to channels, and receive
//! publications. The embedder decides who may do what through a [`Handler`], closed by
//! default.
//!
//! ```no_run
//! use hub_core::{async_trait, Credentials, Handler, Node, Reject, ConnectingEvent};
//!
//! struct Anyone;
//!
//! #[async_trait]
//! impl Handler for Anyone {
//!     async fn on_connecting(&self, _e: ConnectingEvent) -> Result<Credentials, Reject> {
//!         Ok(Credentials::default()) // anonymous
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let node = Node::builder().handler(Anyone).start().await?;
//! // In an axum or hyper handler: `node.accept_websocket(request, Some(peer_addr))`.
//! # Ok(()) }
//! ```
//!
//! ## Parts
//! - [`Node`]: the handle; publish, history, presence, server-side subscribe, disconnect.
//! - [`Handler`]: the embedder's callbacks (connecting, subscribe, publish, rpc, ...).
//! - [`broker`]: the [`Broker`](broker::Broker) trait and the in-memory broker.
//! - [`presence`]: the [`PresenceStore`](presence::PresenceStore) trait and its in-memory store.
//! - [`protocol`]: the client protocol's types and the sans-IO JSON codec.
//!
//! hub-core emits `tracing` spans and `metrics` counters; it installs no exporter.

pub mod broker;
mod client;
mod error;
mod handler;
mod hub;
mod idmap;
mod limits;
mod node;
mod outbox;
pub mod presence;
pub mod protocol;
mod transport;
mod util;

/// Entry points for the fuzz targets in `hub-core/fuzz` (feature `fuzzing`); not an API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use crate::transport::{deflate, frame};

    /// Decodes client frames as the transport does, inflating compressed messages.
    pub fn websocket_frames(data: &[u8]) {
        let mut d = frame::Decoder::new(65536, true);
        // Feed in two parts to exercise the partial-frame path too.
        let cut = data.first().map_or(0, |b| *b as usize % (data.len() + 1));
        for part in [&data[..cut], &data[cut..]] {
            let r = d.feed(part, |m| {
                if let frame::Incoming::Text {
                    payload,
                    compressed: true,
                } = m
                {
                    let _ = deflate::decompress(&payload, 65536);
                }
            });
            if r.is_err() {
                return;
            }
        }
    }

    /// Decodes a frame of JSON commands and re-encodes what a reply would carry.
    pub fn protocol_json(data: &[u8]) {
        for cmd in crate::protocol::json::decode_commands(data).flatten() {
            let id = cmd.id;
            let _ = format!("{:?}", cmd.into_request());
            let _ = crate::protocol::json::encode_reply(&crate::protocol::Reply::error(
                id,
                &crate::Error::BAD_REQUEST,
            ));
        }
    }
}

pub use async_trait::async_trait;
pub use error::{Disconnect, EngineError, Error, Reject};
pub use handler::{
    ChannelAction, ClientContext, ConnectingEvent, Credentials, Handler, PublishDecision,
    PublishEvent, RefreshDecision, RefuseAll, ServerSubscription, SubscribeEvent, SubscribeOptions,
    TransportInfo,
};
pub use limits::RateLimit;
pub use node::{Node, NodeBuilder, NodeConfig, NodeInfo};
pub use transport::deflate::CompressionConfig;
