//! The embedder's callbacks. Every decision is **closed by default**: a callback the embedder
//! does not implement refuses.

use std::net::SocketAddr;

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderMap;

use crate::broker::PublishOptions;
use crate::error::{Disconnect, Error, Reject};
use crate::protocol::{Publication, StreamPosition};

/// What the transport knew when the connection was upgraded.
#[derive(Debug, Clone, Default)]
pub struct TransportInfo {
    /// Request path.
    pub path: String,
    /// Raw query string.
    pub query: Option<String>,
    /// Request headers (cookies included).
    pub headers: HeaderMap,
    /// Peer address, when the server knows it.
    pub remote_addr: Option<SocketAddr>,
}

/// An authenticated connection, as callbacks see it.
#[derive(Debug, Clone)]
pub struct ClientContext {
    /// Connection id.
    pub client_id: String,
    /// User id ("" = anonymous).
    pub user: String,
    /// Connection info (raw JSON), from the credentials.
    pub info: Bytes,
}

/// A client asks to connect.
#[derive(Debug, Clone)]
pub struct ConnectingEvent {
    /// The connection id the client will get.
    pub client_id: String,
    /// Transport details (path, query, headers, peer address).
    pub transport: TransportInfo,
    /// The connection token, if the client sent one.
    pub token: String,
    /// Custom connect data (raw JSON).
    pub data: Bytes,
    /// Client name.
    pub name: String,
    /// Client version.
    pub version: String,
}

/// Who the connection is, as decided by [`Handler::on_connecting`].
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// User id ("" = anonymous).
    pub user: String,
    /// Connection info shown to peers (raw JSON).
    pub info: Bytes,
    /// Unix time (seconds) when the connection expires unless refreshed; `None` = never.
    pub expire_at: Option<u64>,
    /// Data sent to the client in the connect result (raw JSON).
    pub data: Bytes,
    /// Server-side subscriptions made at connect.
    pub subscriptions: Vec<ServerSubscription>,
    /// The server renews the connection itself when `expire_at` comes, through
    /// [`Handler::on_server_refresh`], instead of the client sending a new token. The client
    /// is then not told that its connection expires.
    pub server_side_refresh: bool,
}

/// A channel the server subscribes a connection to.
#[derive(Debug, Clone)]
pub struct ServerSubscription {
    /// Channel name.
    pub channel: String,
    /// Its options.
    pub options: SubscribeOptions,
}

/// Per-subscription options, decided by [`Handler::on_subscribe`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Add the connection to the channel's presence.
    pub presence: bool,
    /// Announce this connection's join and leave to the channel.
    pub emit_join_leave: bool,
    /// Deliver join and leave pushes of others to this connection.
    pub push_join_leave: bool,
    /// Recovery of missed publications on resubscribe (needs history).
    pub recover: bool,
    /// Positioning: publications carry offsets and the client tracks the stream position.
    pub position: bool,
    /// Channel info attached to this connection in the channel (raw JSON).
    pub chan_info: Bytes,
    /// Data sent in the subscribe result (raw JSON).
    pub data: Bytes,
    /// Unix time (seconds) when the subscription expires unless refreshed.
    pub expire_at: Option<u64>,
    /// The server renews the subscription itself when `expire_at` comes, through
    /// [`Handler::on_server_sub_refresh`]; the client is not told it expires.
    pub server_side_refresh: bool,
}

/// A client asks to subscribe.
#[derive(Debug, Clone)]
pub struct SubscribeEvent {
    /// Channel.
    pub channel: String,
    /// Subscription token, if sent.
    pub token: String,
    /// Custom data (raw JSON).
    pub data: Bytes,
    /// The client asks for recovery.
    pub recoverable: bool,
    /// The client asks for positioning.
    pub positioned: bool,
    /// The client asks for join/leave pushes.
    pub join_leave: bool,
}

/// A client publishes.
#[derive(Debug, Clone)]
pub struct PublishEvent {
    /// Channel.
    pub channel: String,
    /// Payload (raw JSON).
    pub data: Bytes,
    /// Whether the client is subscribed to the channel.
    pub subscribed: bool,
}

/// How a client publication goes out.
#[derive(Debug, Clone, Default)]
pub struct PublishDecision {
    /// History options for the channel.
    pub options: PublishOptions,
    /// Attach the publisher's info to the publication.
    pub attach_info: bool,
    /// Replace the data (`None` keeps the client's).
    pub data: Option<Bytes>,
}

/// The result of a token refresh.
#[derive(Debug, Clone, Default)]
pub struct RefreshDecision {
    /// New expiry (unix seconds); `None` = never expires.
    pub expire_at: Option<u64>,
    /// New connection info, if it changes.
    pub info: Option<Bytes>,
}

/// A channel request (presence, presence stats, history) that needs permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelAction {
    /// `presence`
    Presence,
    /// `presence_stats`
    PresenceStats,
    /// `history`
    History,
}

/// The embedder's callbacks. Unimplemented ones refuse.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Authenticates a connection. Default: refuse (close 3501, as centrifuge does when no
    /// credentials are found).
    async fn on_connecting(&self, event: ConnectingEvent) -> Result<Credentials, Reject> {
        let _ = event;
        Err(Disconnect::BAD_REQUEST.into())
    }

    /// Decides a subscription. Default: error 103.
    async fn on_subscribe(
        &self,
        client: &ClientContext,
        event: SubscribeEvent,
    ) -> Result<SubscribeOptions, Reject> {
        let _ = (client, event);
        Err(Error::PERMISSION_DENIED.into())
    }

    /// Decides a client publication. Default: error 103.
    async fn on_publish(
        &self,
        client: &ClientContext,
        event: PublishEvent,
    ) -> Result<PublishDecision, Reject> {
        let _ = (client, event);
        Err(Error::PERMISSION_DENIED.into())
    }

    /// Allows presence, presence stats or history for a channel. Default: error 103.
    async fn on_channel_request(
        &self,
        client: &ClientContext,
        channel: &str,
        action: ChannelAction,
        subscribed: bool,
    ) -> Result<(), Reject> {
        let _ = (client, channel, action, subscribed);
        Err(Error::PERMISSION_DENIED.into())
    }

    /// Answers a client RPC. Default: error 104.
    async fn on_rpc(
        &self,
        client: &ClientContext,
        method: &str,
        data: Bytes,
    ) -> Result<Bytes, Reject> {
        let _ = (client, method, data);
        Err(Error::METHOD_NOT_FOUND.into())
    }

    /// A publication published with a trace context
    /// ([`PublishOptions::trace`](crate::broker::PublishOptions::trace)) reached this node and
    /// was handed to its local subscribers: a server records it in its tracing (the node
    /// itself knows nothing of tracing systems). Called on every node that receives the
    /// publication, after the fan-out, on the broker's delivery path: it must not block.
    /// Default: nothing.
    fn on_traced_delivery(&self, delivery: &TracedDelivery<'_>) {
        let _ = delivery;
    }

    /// A client publication that [`Handler::on_publish`] allowed went out: `publication` is
    /// what the broker published on `channel` (its `offset` set when the channel keeps
    /// history), `position` the stream position it got. A notification only: called once per
    /// successful client publish, on the node the client is connected to, before the client
    /// gets its reply, so it must not block (spawn what waits). Publications made with
    /// [`Node::publish`](crate::Node::publish) do not come here: their caller knows the
    /// result. Default: nothing.
    fn on_published(
        &self,
        client: &ClientContext,
        channel: &str,
        publication: &Publication,
        position: &StreamPosition,
    ) {
        let _ = (client, channel, publication, position);
    }

    /// Receives a client `send`. Default: close 3508.
    async fn on_message(&self, client: &ClientContext, data: Bytes) -> Result<(), Reject> {
        let _ = (client, data);
        Err(Disconnect::NOT_AVAILABLE.into())
    }

    /// Renews a connection with a new token. Default: error 108.
    async fn on_refresh(
        &self,
        client: &ClientContext,
        token: &str,
    ) -> Result<RefreshDecision, Reject> {
        let _ = (client, token);
        Err(Error::NOT_AVAILABLE.into())
    }

    /// Renews a connection whose credentials asked for `server_side_refresh`, when its
    /// expiry comes. `expire_at` in the past, or a disconnect, closes it (3005 by default);
    /// an error reply is retried a few seconds later until `expired_close_delay` has passed.
    /// Default: the connection expires (3005).
    async fn on_server_refresh(&self, client: &ClientContext) -> Result<RefreshDecision, Reject> {
        let _ = client;
        Err(Disconnect::EXPIRED.into())
    }

    /// Renews a subscription whose options asked for `server_side_refresh`, when its expiry
    /// comes; returns the new expiry. An expiry in the past, or an error reply after retries
    /// until `expired_close_delay`, ends the subscription (unsubscribe push 2501); a
    /// disconnect closes the connection. Default: the subscription expires.
    async fn on_server_sub_refresh(
        &self,
        client: &ClientContext,
        channel: &str,
    ) -> Result<Option<u64>, Reject> {
        let _ = (client, channel);
        Err(Error::EXPIRED.into())
    }

    /// Renews a subscription with a new token; returns the new expiry. Default: error 108.
    async fn on_sub_refresh(
        &self,
        client: &ClientContext,
        channel: &str,
        token: &str,
    ) -> Result<Option<u64>, Reject> {
        let _ = (client, channel, token);
        Err(Error::NOT_AVAILABLE.into())
    }

    /// A connection closed. A notification only (at-most-once: a crashed node sends none).
    async fn on_disconnect(&self, client: &ClientContext, disconnect: &Disconnect) {
        let _ = (client, disconnect);
    }
}

/// A handler that refuses everything: the closed default.
#[derive(Debug, Default, Clone, Copy)]
pub struct RefuseAll;

impl Handler for RefuseAll {}

/// What [`Handler::on_traced_delivery`] learns about one traced publication's fan-out.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TracedDelivery<'a> {
    /// The channel.
    pub channel: &'a str,
    /// The publisher's W3C `traceparent`, as given to the publish.
    pub trace: &'a str,
    /// The publication's offset (0 without history).
    pub offset: u64,
    /// How many local subscribers it was queued to.
    pub recipients: u64,
    /// When this node received it (the fan-out ran from then until the call).
    pub received: std::time::Instant,
}
