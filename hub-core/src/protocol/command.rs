//! Client → server messages.

use std::collections::HashMap;

use bytes::Bytes;
use serde::Deserialize;

use super::serde_util::{lenient_u64, nullable, raw_json};
use super::StreamPosition;

/// A client command. Exactly one request field is expected; the first one set wins.
/// A command with `id == 0` and no request is a pong.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Command {
    /// Command id, echoed in the reply; 0 for `send` and pongs.
    #[serde(deserialize_with = "nullable")]
    pub id: u32,
    /// `connect` request.
    pub connect: Option<ConnectRequest>,
    /// `subscribe` request.
    pub subscribe: Option<SubscribeRequest>,
    /// `unsubscribe` request.
    pub unsubscribe: Option<UnsubscribeRequest>,
    /// `publish` request.
    pub publish: Option<PublishRequest>,
    /// `presence` request.
    pub presence: Option<ChannelRequest>,
    /// `presence_stats` request.
    pub presence_stats: Option<ChannelRequest>,
    /// `history` request.
    pub history: Option<HistoryRequest>,
    /// `ping` request (unused in v2; answered with error 108).
    pub ping: Option<serde::de::IgnoredAny>,
    /// `send`: an asynchronous message without reply.
    pub send: Option<SendRequest>,
    /// `rpc` request.
    pub rpc: Option<RpcRequest>,
    /// `refresh`: a new connection token.
    pub refresh: Option<RefreshRequest>,
    /// `sub_refresh`: a new subscription token.
    pub sub_refresh: Option<SubRefreshRequest>,
}

/// The request carried by a [`Command`].
#[derive(Debug, Clone)]
pub enum Request {
    /// No request: a pong when `id == 0`.
    None,
    /// `connect`
    Connect(ConnectRequest),
    /// `subscribe`
    Subscribe(SubscribeRequest),
    /// `unsubscribe`
    Unsubscribe(UnsubscribeRequest),
    /// `publish`
    Publish(PublishRequest),
    /// `presence`
    Presence(ChannelRequest),
    /// `presence_stats`
    PresenceStats(ChannelRequest),
    /// `history`
    History(HistoryRequest),
    /// `ping` (unused)
    Ping,
    /// `send`
    Send(SendRequest),
    /// `rpc`
    Rpc(RpcRequest),
    /// `refresh`
    Refresh(RefreshRequest),
    /// `sub_refresh`
    SubRefresh(SubRefreshRequest),
}

impl Command {
    /// Takes the request out of the command (the first field set, in proto order).
    pub fn into_request(self) -> Request {
        if let Some(r) = self.connect {
            Request::Connect(r)
        } else if let Some(r) = self.subscribe {
            Request::Subscribe(r)
        } else if let Some(r) = self.unsubscribe {
            Request::Unsubscribe(r)
        } else if let Some(r) = self.publish {
            Request::Publish(r)
        } else if let Some(r) = self.presence {
            Request::Presence(r)
        } else if let Some(r) = self.presence_stats {
            Request::PresenceStats(r)
        } else if let Some(r) = self.history {
            Request::History(r)
        } else if self.ping.is_some() {
            Request::Ping
        } else if let Some(r) = self.send {
            Request::Send(r)
        } else if let Some(r) = self.rpc {
            Request::Rpc(r)
        } else if let Some(r) = self.refresh {
            Request::Refresh(r)
        } else if let Some(r) = self.sub_refresh {
            Request::SubRefresh(r)
        } else {
            Request::None
        }
    }
}

/// `connect`: authenticate the connection.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ConnectRequest {
    /// Connection token (JWT), empty when the app uses none.
    #[serde(deserialize_with = "nullable")]
    pub token: String,
    /// Custom connect data (raw JSON).
    #[serde(deserialize_with = "raw_json")]
    pub data: Bytes,
    /// Recovery positions of server-side subscriptions.
    #[serde(deserialize_with = "nullable")]
    pub subs: HashMap<String, SubscribeRequest>,
    /// Client name (`"js"` for centrifuge-js).
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    /// Client version set by the app.
    #[serde(deserialize_with = "nullable")]
    pub version: String,
    /// Emulated headers.
    #[serde(deserialize_with = "nullable")]
    pub headers: HashMap<String, String>,
}

/// `subscribe`: join a channel, optionally recovering missed publications.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SubscribeRequest {
    /// Channel name.
    #[serde(deserialize_with = "nullable")]
    pub channel: String,
    /// Subscription token (JWT).
    #[serde(deserialize_with = "nullable")]
    pub token: String,
    /// Recover from `offset`/`epoch`.
    #[serde(deserialize_with = "nullable")]
    pub recover: bool,
    /// Last known epoch.
    #[serde(deserialize_with = "nullable")]
    pub epoch: String,
    /// Last seen offset.
    #[serde(deserialize_with = "lenient_u64")]
    pub offset: u64,
    /// Custom subscribe data (raw JSON).
    #[serde(deserialize_with = "raw_json")]
    pub data: Bytes,
    /// The client asks for positioning.
    #[serde(deserialize_with = "nullable")]
    pub positioned: bool,
    /// The client asks for recovery.
    #[serde(deserialize_with = "nullable")]
    pub recoverable: bool,
    /// The client wants join/leave pushes.
    #[serde(deserialize_with = "nullable")]
    pub join_leave: bool,
    /// Feature bits; bit 2 asks for error 112 when recovery is impossible.
    #[serde(deserialize_with = "nullable")]
    pub flag: i64,
}

impl SubscribeRequest {
    /// Flag bit: answer error 112 instead of `recovered: false`.
    pub const FLAG_REJECT_UNRECOVERED: i64 = 2;
}

/// `unsubscribe`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct UnsubscribeRequest {
    /// Channel name.
    #[serde(deserialize_with = "nullable")]
    pub channel: String,
}

/// `publish` from a client.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PublishRequest {
    /// Channel name.
    #[serde(deserialize_with = "nullable")]
    pub channel: String,
    /// Payload (raw JSON).
    #[serde(deserialize_with = "raw_json")]
    pub data: Bytes,
}

/// A request naming only a channel (`presence`, `presence_stats`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ChannelRequest {
    /// Channel name.
    #[serde(deserialize_with = "nullable")]
    pub channel: String,
}

/// `history`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HistoryRequest {
    /// Channel name.
    #[serde(deserialize_with = "nullable")]
    pub channel: String,
    /// 0 = only the stream top, -1 = all (capped), N = at most N.
    #[serde(deserialize_with = "nullable")]
    pub limit: i32,
    /// Publications after (or, reversed, before) this position.
    pub since: Option<StreamPosition>,
    /// Newest first.
    #[serde(deserialize_with = "nullable")]
    pub reverse: bool,
}

/// `send`: asynchronous message to the server.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SendRequest {
    /// Payload (raw JSON).
    #[serde(deserialize_with = "raw_json")]
    pub data: Bytes,
}

/// `rpc`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RpcRequest {
    /// Payload (raw JSON).
    #[serde(deserialize_with = "raw_json")]
    pub data: Bytes,
    /// Method name.
    #[serde(deserialize_with = "nullable")]
    pub method: String,
}

/// `refresh`: renew the connection with a new token.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RefreshRequest {
    /// New connection token.
    #[serde(deserialize_with = "nullable")]
    pub token: String,
}

/// `sub_refresh`: renew a subscription with a new token.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SubRefreshRequest {
    /// Channel name.
    #[serde(deserialize_with = "nullable")]
    pub channel: String,
    /// New subscription token.
    #[serde(deserialize_with = "nullable")]
    pub token: String,
}
