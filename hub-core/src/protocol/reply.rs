//! Server → client messages.

use std::collections::HashMap;

use bytes::Bytes;
use serde::Serialize;

use super::serde_util::{is_zero, write_raw_json};
use crate::error::Error;

/// A reply to a command (`id > 0`), a push (`id == 0`, `body` is [`ReplyBody::Push`]), or a
/// server ping (`id == 0`, [`ReplyBody::Ping`], written as `{}`).
#[derive(Debug, Clone, Serialize)]
pub struct Reply {
    /// Echoes the command id; 0 for pushes and pings.
    #[serde(skip_serializing_if = "is_zero")]
    pub id: u32,
    /// The result, error or push.
    #[serde(flatten)]
    pub body: ReplyBody,
}

/// What a [`Reply`] carries.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyBody {
    /// Error reply.
    Error(ErrorReply),
    /// Asynchronous push.
    Push(Push),
    /// `connect` result.
    Connect(ConnectResult),
    /// `subscribe` result.
    Subscribe(SubscribeResult),
    /// `unsubscribe` result (`{}`).
    Unsubscribe(Empty),
    /// `publish` result (`{}`).
    Publish(Empty),
    /// `presence` result.
    Presence(PresenceResult),
    /// `presence_stats` result.
    PresenceStats(PresenceStatsResult),
    /// `history` result.
    History(HistoryResult),
    /// `rpc` result.
    Rpc(RpcResult),
    /// `refresh` result.
    Refresh(RefreshResult),
    /// `sub_refresh` result.
    SubRefresh(SubRefreshResult),
    /// A server ping: the empty reply `{}`.
    #[serde(skip)]
    Ping,
}

impl Reply {
    /// A reply to command `id`.
    pub fn new(id: u32, body: ReplyBody) -> Self {
        Reply { id, body }
    }

    /// An error reply to command `id`.
    pub fn error(id: u32, e: &Error) -> Self {
        Reply::new(
            id,
            ReplyBody::Error(ErrorReply {
                code: e.code,
                message: e.message.to_string(),
                temporary: e.temporary,
            }),
        )
    }

    /// A push.
    pub fn push(push: Push) -> Self {
        Reply::new(0, ReplyBody::Push(push))
    }
}

/// An empty result, written as `{}`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Empty {}

/// `Reply.error`
#[derive(Debug, Clone, Serialize)]
pub struct ErrorReply {
    /// Error code.
    pub code: u32,
    /// Message.
    pub message: String,
    /// Temporary errors are retried by clients.
    #[serde(skip_serializing_if = "is_zero")]
    pub temporary: bool,
}

/// Information about a connection, as peers see it in presence, join/leave and publications.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClientInfo {
    /// User id ("" for anonymous; always written).
    pub user: String,
    /// Connection id (always written).
    pub client: String,
    /// Connection info from the connect credentials (raw JSON).
    #[serde(
        skip_serializing_if = "Bytes::is_empty",
        serialize_with = "write_raw_json"
    )]
    pub conn_info: Bytes,
    /// Channel info from the subscription (raw JSON).
    #[serde(
        skip_serializing_if = "Bytes::is_empty",
        serialize_with = "write_raw_json"
    )]
    pub chan_info: Bytes,
}

/// A publication in a channel.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Publication {
    /// Payload (raw JSON in the JSON flavour).
    #[serde(serialize_with = "write_raw_json")]
    pub data: Bytes,
    /// Publisher info, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<ClientInfo>,
    /// Offset in the channel stream (0 when the channel keeps no history).
    #[serde(skip_serializing_if = "is_zero")]
    pub offset: u64,
    /// Tags.
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub tags: HashMap<String, String>,
}

/// `Reply.push`
#[derive(Debug, Clone, Serialize)]
pub struct Push {
    /// Channel the push is about ("" for messages and disconnects).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub channel: String,
    /// What is pushed.
    #[serde(flatten)]
    pub body: PushBody,
}

/// The content of a [`Push`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PushBody {
    /// A publication.
    Pub(Publication),
    /// Someone subscribed.
    Join {
        /// Who.
        info: ClientInfo,
    },
    /// Someone unsubscribed.
    Leave {
        /// Who.
        info: ClientInfo,
    },
    /// The server unsubscribed this client from the channel.
    Unsubscribe {
        /// 2000 final, ≥ 2500 resubscribe.
        code: u32,
        /// Reason.
        reason: String,
    },
    /// The server subscribed this client to the channel.
    Subscribe(SubscribePush),
    /// An asynchronous message to the client.
    Message {
        /// Payload.
        #[serde(serialize_with = "write_raw_json")]
        data: Bytes,
    },
    /// Disconnect advice (used by non-WebSocket transports).
    Disconnect {
        /// Code.
        code: u32,
        /// Reason.
        reason: String,
        /// Whether to reconnect.
        reconnect: bool,
    },
}

/// `Push.subscribe`: a server-side subscription made while connected.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SubscribePush {
    /// Recovery is on.
    #[serde(skip_serializing_if = "is_zero")]
    pub recoverable: bool,
    /// Stream epoch.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    /// Stream top offset.
    #[serde(skip_serializing_if = "is_zero")]
    pub offset: u64,
    /// Positioning is on.
    #[serde(skip_serializing_if = "is_zero")]
    pub positioned: bool,
    /// Custom data.
    #[serde(
        skip_serializing_if = "Bytes::is_empty",
        serialize_with = "write_raw_json"
    )]
    pub data: Bytes,
}

/// `connect` result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnectResult {
    /// Connection id.
    pub client: String,
    /// Server version.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// The connection expires; the client refreshes its token before `ttl` runs out.
    #[serde(skip_serializing_if = "is_zero")]
    pub expires: bool,
    /// Seconds until expiry.
    #[serde(skip_serializing_if = "is_zero")]
    pub ttl: u32,
    /// Custom data for the client.
    #[serde(
        skip_serializing_if = "Bytes::is_empty",
        serialize_with = "write_raw_json"
    )]
    pub data: Bytes,
    /// Server-side subscriptions.
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub subs: HashMap<String, SubscribeResult>,
    /// Ping interval, seconds.
    #[serde(skip_serializing_if = "is_zero")]
    pub ping: u32,
    /// The client must answer pings.
    #[serde(skip_serializing_if = "is_zero")]
    pub pong: bool,
}

/// `subscribe` result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SubscribeResult {
    /// The subscription expires; the client sends `sub_refresh` before `ttl` runs out.
    #[serde(skip_serializing_if = "is_zero")]
    pub expires: bool,
    /// Seconds until expiry.
    #[serde(skip_serializing_if = "is_zero")]
    pub ttl: u32,
    /// Recovery is on.
    #[serde(skip_serializing_if = "is_zero")]
    pub recoverable: bool,
    /// Stream epoch.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    /// Recovered publications, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub publications: Vec<Publication>,
    /// All missed publications were recovered.
    #[serde(skip_serializing_if = "is_zero")]
    pub recovered: bool,
    /// Stream offset (the requested one after a successful recovery).
    #[serde(skip_serializing_if = "is_zero")]
    pub offset: u64,
    /// Positioning is on.
    #[serde(skip_serializing_if = "is_zero")]
    pub positioned: bool,
    /// Custom data.
    #[serde(
        skip_serializing_if = "Bytes::is_empty",
        serialize_with = "write_raw_json"
    )]
    pub data: Bytes,
    /// A recovery was attempted.
    #[serde(skip_serializing_if = "is_zero")]
    pub was_recovering: bool,
}

/// `presence` result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PresenceResult {
    /// Client id → info (always written).
    pub presence: HashMap<String, ClientInfo>,
}

/// `presence_stats` result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PresenceStatsResult {
    /// Connections in the channel (always written).
    pub num_clients: u32,
    /// Distinct users in the channel (always written).
    pub num_users: u32,
}

/// `history` result (all fields always written).
#[derive(Debug, Clone, Default, Serialize)]
pub struct HistoryResult {
    /// Publications.
    pub publications: Vec<Publication>,
    /// Stream epoch.
    pub epoch: String,
    /// Stream top offset.
    pub offset: u64,
}

/// `rpc` result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RpcResult {
    /// Payload.
    #[serde(
        skip_serializing_if = "Bytes::is_empty",
        serialize_with = "write_raw_json"
    )]
    pub data: Bytes,
}

/// `refresh` result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RefreshResult {
    /// Connection id (left empty).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub client: String,
    /// Server version (left empty).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// The connection still expires.
    #[serde(skip_serializing_if = "is_zero")]
    pub expires: bool,
    /// Seconds until expiry.
    #[serde(skip_serializing_if = "is_zero")]
    pub ttl: u32,
}

/// `sub_refresh` result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SubRefreshResult {
    /// The subscription still expires.
    #[serde(skip_serializing_if = "is_zero")]
    pub expires: bool,
    /// Seconds until expiry.
    #[serde(skip_serializing_if = "is_zero")]
    pub ttl: u32,
}
