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
//! - [`protocol`]: the client protocol's types and its two sans-IO codecs, JSON and Protobuf.
//!
//! hub-core emits `tracing` spans and `metrics` counters; it installs no exporter.

pub mod broker;
mod client;
mod cluster;
mod codec;
mod error;
mod handler;
mod hub;
mod idmap;
mod limits;
mod node;
mod outbox;
pub mod presence;
pub mod protocol;
#[cfg(feature = "redis")]
pub mod redis;
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

    /// Decodes a frame of Protobuf commands and encodes replies that echo what they carry
    /// (payloads, channels, positions); each must come out as exactly one length-prefixed
    /// message.
    pub fn protocol_protobuf(data: &[u8]) {
        use crate::protocol::*;
        for cmd in protobuf::decode_commands(data).flatten() {
            let id = cmd.id;
            let body = match cmd.into_request() {
                Request::Connect(c) => ReplyBody::Connect(ConnectResult {
                    client: c.name,
                    version: c.version,
                    data: c.data,
                    subs: c
                        .subs
                        .into_iter()
                        .map(|(ch, s)| {
                            let r = SubscribeResult {
                                epoch: s.epoch,
                                offset: s.offset,
                                data: s.data,
                                ..Default::default()
                            };
                            (ch, r)
                        })
                        .collect(),
                    ..Default::default()
                }),
                Request::Subscribe(s) => ReplyBody::Subscribe(SubscribeResult {
                    epoch: s.epoch,
                    offset: s.offset,
                    publications: vec![Publication {
                        data: s.data,
                        offset: s.offset,
                        info: Some(ClientInfo {
                            user: s.token,
                            client: s.channel,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                Request::Publish(p) => ReplyBody::Push(Push {
                    channel: p.channel.clone(),
                    body: PushBody::Pub(Publication {
                        data: p.data,
                        tags: [(p.channel, String::new())].into(),
                        ..Default::default()
                    }),
                }),
                Request::Send(s) => ReplyBody::Push(Push {
                    channel: String::new(),
                    body: PushBody::Message { data: s.data },
                }),
                Request::Rpc(r) => ReplyBody::Rpc(RpcResult { data: r.data }),
                Request::History(h) => ReplyBody::History(HistoryResult {
                    publications: Vec::new(),
                    epoch: h.since.map(|p| p.epoch).unwrap_or_default(),
                    offset: h.limit.unsigned_abs().into(),
                }),
                Request::Presence(p) => {
                    let info = ClientInfo {
                        user: p.channel.clone(),
                        ..Default::default()
                    };
                    ReplyBody::Presence(PresenceResult {
                        presence: [(p.channel, info)].into(),
                    })
                }
                other => {
                    let _ = format!("{other:?}");
                    Reply::error(id, &crate::Error::BAD_REQUEST).body
                }
            };
            let bytes = protobuf::encode_reply(&Reply::new(id, body))
                .expect("any reply encodes as Protobuf");
            let mut rest = &bytes[..];
            let len = prost::decode_length_delimiter(&mut rest).expect("a length prefix");
            assert_eq!(len, rest.len(), "the prefix covers exactly one message");
        }
    }
}

pub use async_trait::async_trait;
pub use error::{Disconnect, EngineError, Error, Reject};
pub use handler::{
    ChannelAction, ClientContext, ConnectingEvent, Credentials, Handler, PublishDecision,
    PublishEvent, RefreshDecision, RefuseAll, ServerSubscription, SubscribeEvent, SubscribeOptions,
    TracedDelivery, TransportInfo,
};
pub use limits::RateLimit;
pub use node::{Node, NodeBuilder, NodeConfig, NodeInfo};
pub use transport::deflate::CompressionConfig;
