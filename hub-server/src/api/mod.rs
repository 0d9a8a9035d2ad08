//! The server API: one executor behind every transport (HTTP and gRPC), so a method is
//! written once. Requests and results follow Centrifugo's server API (PROTOCOL.md §5).

pub mod grpc;
pub mod http;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use hub_core::protocol::{ClientInfo, Publication, StreamPosition};
use hub_core::{Disconnect, Error, Node};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::handler::Rules;

/// Compares in constant time.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An `Authorization` value `apikey <key>` (scheme case-insensitive, exactly two fields) that
/// carries `key`; shared by the HTTP and gRPC APIs.
fn apikey_matches(value: &str, key: &[u8]) -> bool {
    let mut parts = value.split_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(scheme), Some(k), None) => {
            scheme.eq_ignore_ascii_case("apikey") && same(k.as_bytes(), key)
        }
        _ => false,
    }
}

/// Raw JSON payload fields (`data`, `info`): any JSON value, kept as text.
type Raw = Option<Box<RawValue>>;

fn raw_bytes(r: &Raw) -> Bytes {
    match r {
        Some(v) if v.get() != "null" => {
            let mut b = v.get().as_bytes().to_vec();
            b.retain(|c| *c != b'\n');
            Bytes::from(b)
        }
        _ => Bytes::new(),
    }
}

fn payload(data: &Raw, b64data: &str) -> Result<Bytes> {
    let d = raw_bytes(data);
    if !d.is_empty() {
        return Ok(d);
    }
    if !b64data.is_empty() {
        return base64::engine::general_purpose::STANDARD
            .decode(b64data)
            .map(Bytes::from)
            .map_err(|_| Error::BAD_REQUEST.with_message("b64data is not valid base64"));
    }
    Err(Error::BAD_REQUEST.with_message("data required"))
}

/// `publish`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PublishRequest {
    /// Channel.
    pub channel: String,
    /// Payload (JSON).
    pub data: Raw,
    /// Payload (base64 binary).
    pub b64data: String,
    /// Do not keep in history.
    pub skip_history: bool,
    /// Tags.
    pub tags: HashMap<String, String>,
}

/// `publish` result.
#[derive(Debug, Default, Serialize)]
pub struct PublishResult {
    /// Offset, when the channel has history.
    #[serde(skip_serializing_if = "is_zero")]
    pub offset: u64,
    /// Epoch, when the channel has history.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub epoch: String,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// `broadcast`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct BroadcastRequest {
    /// Channels.
    pub channels: Vec<String>,
    /// Payload (JSON).
    pub data: Raw,
    /// Payload (base64 binary).
    pub b64data: String,
    /// Do not keep in history.
    pub skip_history: bool,
    /// Tags.
    pub tags: HashMap<String, String>,
}

/// One entry of a `broadcast` result.
#[derive(Debug, Serialize)]
pub struct BroadcastResponse {
    /// Error for this channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
    /// Result for this channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<PublishResult>,
}

/// `broadcast` result.
#[derive(Debug, Serialize)]
pub struct BroadcastResult {
    /// One response per channel, in order.
    pub responses: Vec<BroadcastResponse>,
}

/// `{value: bool}` override.
#[derive(Debug, Default, Deserialize)]
pub struct BoolValue {
    /// The value.
    pub value: bool,
}

/// Overrides of namespace options in a server-side `subscribe`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SubscribeOverride {
    /// Presence.
    pub presence: Option<BoolValue>,
    /// Join/leave.
    pub join_leave: Option<BoolValue>,
    /// Push join/leave.
    pub force_push_join_leave: Option<BoolValue>,
    /// Recovery.
    pub force_recovery: Option<BoolValue>,
    /// Positioning.
    pub force_positioning: Option<BoolValue>,
}

/// `subscribe` (server-side)
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SubscribeRequest {
    /// Channel.
    pub channel: String,
    /// User whose connections subscribe.
    pub user: String,
    /// Only this connection.
    pub client: String,
    /// Expiry (unix seconds).
    pub expire_at: u64,
    /// Channel info (JSON).
    pub info: Raw,
    /// Channel info (base64).
    pub b64info: String,
    /// Data for the subscribe push (JSON).
    pub data: Raw,
    /// Option overrides.
    #[serde(rename = "override")]
    pub override_: Option<SubscribeOverride>,
}

/// `unsubscribe` (server-side)
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct UnsubscribeRequest {
    /// Channel.
    pub channel: String,
    /// User.
    pub user: String,
    /// Only this connection.
    pub client: String,
}

/// Custom disconnect.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DisconnectSpec {
    /// Code.
    pub code: u16,
    /// Reason.
    pub reason: String,
}

/// `disconnect`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DisconnectRequest {
    /// User.
    pub user: String,
    /// Only this connection.
    pub client: String,
    /// Connections to spare.
    pub whitelist: Vec<String>,
    /// Code and reason (default 3503 force disconnect).
    pub disconnect: Option<DisconnectSpec>,
}

/// `refresh`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RefreshRequest {
    /// User.
    pub user: String,
    /// Only this connection.
    pub client: String,
    /// Expire now.
    pub expired: bool,
    /// New expiry (unix seconds).
    pub expire_at: u64,
    /// New connection info.
    pub info: Raw,
}

/// A request naming a channel (`presence`, `presence_stats`, `history_remove`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ChannelRequest {
    /// Channel.
    pub channel: String,
}

/// `history`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct HistoryRequest {
    /// Channel.
    pub channel: String,
    /// 0 = only the top, -1 = all, N = at most N.
    pub limit: i32,
    /// Position to read after.
    pub since: Option<StreamPosition>,
    /// Newest first.
    pub reverse: bool,
}

/// `channels`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ChannelsRequest {
    /// Glob (`*`, `?`); empty = all.
    pub pattern: String,
}

/// An API error (`{"code":..,"message":..}`).
#[derive(Debug, Clone, Serialize)]
pub struct ApiError {
    /// Code.
    pub code: u32,
    /// Message.
    pub message: String,
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError {
            code: e.code,
            message: e.message.into_owned(),
        }
    }
}

/// The methods of the server API.
#[derive(Clone)]
pub struct Executor {
    node: Node,
    rules: Arc<Rules>,
}

type Result<T> = std::result::Result<T, Error>;

fn require(field: &str, v: &str) -> Result<()> {
    if v.is_empty() {
        return Err(Error::BAD_REQUEST.with_message(format!("{field} required")));
    }
    Ok(())
}

fn opt(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// `*` any run, `?` any one character.
fn glob(pattern: &[u8], s: &[u8]) -> bool {
    match (pattern.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&pattern[1..], s) || (!s.is_empty() && glob(pattern, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&pattern[1..], &s[1..]),
        (Some(p), Some(c)) if p == c => glob(&pattern[1..], &s[1..]),
        _ => false,
    }
}

impl Executor {
    /// An executor over a node.
    pub fn new(node: Node, rules: Arc<Rules>) -> Self {
        Executor { node, rules }
    }

    async fn publish_bytes(
        &self,
        channel: &str,
        data: Bytes,
        skip_history: bool,
        tags: HashMap<String, String>,
    ) -> Result<PublishResult> {
        require("channel", channel)?;
        let o = self.rules.channel_options(channel)?;
        let mut options = Rules::publish_options(o);
        if skip_history {
            options.history = None;
        }
        // Within a sampled trace, the nodes that deliver the publication join it.
        options.trace = crate::telemetry::sampled_traceparent().map(Into::into);
        let publication = Publication {
            data,
            tags,
            ..Default::default()
        };
        // Kept only for a forwarding channel (the payload is shared, not copied).
        let forwarded = self.rules.forwards(channel).then(|| publication.clone());
        let sp = self.node.publish(channel, publication, &options).await?;
        if let Some(p) = forwarded {
            self.rules.forward(channel, &p, &sp, None);
        }
        Ok(PublishResult {
            offset: sp.offset,
            epoch: sp.epoch,
        })
    }

    /// `publish`
    pub async fn publish(&self, r: PublishRequest) -> Result<PublishResult> {
        require("channel", &r.channel)?;
        self.rules.channel_options(&r.channel)?;
        let data = payload(&r.data, &r.b64data)?;
        self.publish_bytes(&r.channel, data, r.skip_history, r.tags)
            .await
    }

    /// `broadcast`: the same publication to several channels; one response per channel.
    pub async fn broadcast(&self, r: BroadcastRequest) -> Result<BroadcastResult> {
        if r.channels.is_empty() {
            return Err(Error::BAD_REQUEST.with_message("channels required"));
        }
        let data = payload(&r.data, &r.b64data)?;
        let mut responses = Vec::with_capacity(r.channels.len());
        for channel in &r.channels {
            let res = self
                .publish_bytes(channel, data.clone(), r.skip_history, r.tags.clone())
                .await;
            responses.push(match res {
                Ok(p) => BroadcastResponse {
                    error: None,
                    result: Some(p),
                },
                Err(e) => BroadcastResponse {
                    error: Some(e.into()),
                    result: None,
                },
            });
        }
        Ok(BroadcastResult { responses })
    }

    /// `subscribe`: subscribes a user's connections (on this node) to a channel.
    pub async fn subscribe(&self, r: SubscribeRequest) -> Result<Empty> {
        require("channel", &r.channel)?;
        require("user", &r.user)?;
        let o = self.rules.channel_options(&r.channel)?;
        let mut options = Rules::server_subscribe_options(o);
        if let Some(ov) = &r.override_ {
            if let Some(v) = &ov.presence {
                options.presence = v.value;
            }
            if let Some(v) = &ov.join_leave {
                options.emit_join_leave = v.value;
            }
            if let Some(v) = &ov.force_push_join_leave {
                options.push_join_leave = v.value;
            }
            if let Some(v) = &ov.force_recovery {
                options.recover = v.value && o.history_enabled();
            }
            if let Some(v) = &ov.force_positioning {
                options.position = v.value && o.history_enabled();
            }
        }
        options.chan_info = raw_bytes(&r.info);
        if options.chan_info.is_empty() && !r.b64info.is_empty() {
            options.chan_info = base64::engine::general_purpose::STANDARD
                .decode(&r.b64info)
                .map(Bytes::from)
                .map_err(|_| Error::BAD_REQUEST.with_message("b64info is not valid base64"))?;
        }
        options.data = raw_bytes(&r.data);
        options.expire_at = (r.expire_at > 0).then_some(r.expire_at);
        self.node
            .subscribe_user(&r.user, &r.channel, options, opt(&r.client))
            .await?;
        Ok(Empty {})
    }

    /// `unsubscribe`
    pub async fn unsubscribe(&self, r: UnsubscribeRequest) -> Result<Empty> {
        require("channel", &r.channel)?;
        require("user", &r.user)?;
        self.node
            .unsubscribe_user(&r.user, &r.channel, opt(&r.client))
            .await?;
        Ok(Empty {})
    }

    /// `disconnect`
    pub async fn disconnect(&self, r: DisconnectRequest) -> Result<Empty> {
        require("user", &r.user)?;
        let d = match r.disconnect {
            Some(d) if d.code > 0 => {
                if d.reason.len() > 120 {
                    return Err(Error::BAD_REQUEST.with_message("disconnect reason too long"));
                }
                Disconnect::new(d.code, d.reason)
            }
            _ => Disconnect::FORCE_DISCONNECT,
        };
        self.node
            .disconnect_user(&r.user, d, opt(&r.client), &r.whitelist)
            .await?;
        Ok(Empty {})
    }

    /// `refresh`
    pub async fn refresh(&self, r: RefreshRequest) -> Result<Empty> {
        require("user", &r.user)?;
        let info = raw_bytes(&r.info);
        self.node
            .refresh_user(
                &r.user,
                opt(&r.client),
                r.expired,
                (r.expire_at > 0).then_some(r.expire_at),
                (!info.is_empty()).then_some(info),
            )
            .await?;
        Ok(Empty {})
    }

    /// `presence`
    pub async fn presence(&self, r: ChannelRequest) -> Result<PresenceResult> {
        require("channel", &r.channel)?;
        if !self.rules.channel_options(&r.channel)?.presence {
            return Err(Error::NOT_AVAILABLE);
        }
        Ok(PresenceResult {
            presence: self.node.presence(&r.channel).await?,
        })
    }

    /// `presence_stats`
    pub async fn presence_stats(
        &self,
        r: ChannelRequest,
    ) -> Result<hub_core::protocol::PresenceStatsResult> {
        require("channel", &r.channel)?;
        if !self.rules.channel_options(&r.channel)?.presence {
            return Err(Error::NOT_AVAILABLE);
        }
        self.node.presence_stats(&r.channel).await
    }

    /// `history`
    pub async fn history(&self, r: HistoryRequest) -> Result<hub_core::protocol::HistoryResult> {
        require("channel", &r.channel)?;
        let o = self.rules.channel_options(&r.channel)?;
        if !o.history_enabled() {
            return Err(Error::NOT_AVAILABLE);
        }
        self.node
            .history(&r.channel, r.since, r.limit, r.reverse, o.history_size)
            .await
    }

    /// `history_remove`
    pub async fn history_remove(&self, r: ChannelRequest) -> Result<Empty> {
        require("channel", &r.channel)?;
        self.rules.channel_options(&r.channel)?;
        self.node.remove_history(&r.channel).await?;
        Ok(Empty {})
    }

    /// `channels`: active channels on every node matching a pattern.
    pub async fn channels(&self, r: ChannelsRequest) -> Result<ChannelsResult> {
        let channels = self
            .node
            .cluster_channels()
            .await?
            .into_iter()
            .filter(|(c, _)| r.pattern.is_empty() || glob(r.pattern.as_bytes(), c.as_bytes()))
            .map(|(c, n)| {
                (
                    c,
                    ChannelInfo {
                        num_clients: n as u32,
                    },
                )
            })
            .collect();
        Ok(ChannelsResult { channels })
    }

    /// `info`
    pub async fn info(&self) -> Result<InfoResult> {
        Ok(InfoResult {
            nodes: self.node.cluster_info(),
        })
    }

    /// Runs one method by name with its JSON params; the result as JSON.
    pub async fn call(&self, method: &str, params: &RawValue) -> Result<serde_json::Value> {
        if method == "batch" {
            let r: BatchRequest = serde_json::from_str(params.get())
                .map_err(|e| Error::BAD_REQUEST.with_message(format!("invalid params: {e}")))?;
            return serde_json::to_value(self.batch(r).await?).map_err(|_| Error::INTERNAL);
        }
        self.call_one(method, params).await
    }

    /// Runs one method other than `batch`.
    async fn call_one(&self, method: &str, params: &RawValue) -> Result<serde_json::Value> {
        fn parse<'a, T: Deserialize<'a>>(p: &'a RawValue) -> Result<T> {
            serde_json::from_str(p.get())
                .map_err(|e| Error::BAD_REQUEST.with_message(format!("invalid params: {e}")))
        }
        fn json<T: Serialize>(v: T) -> Result<serde_json::Value> {
            serde_json::to_value(v).map_err(|_| Error::INTERNAL)
        }
        match method {
            "publish" => json(self.publish(parse(params)?).await?),
            "broadcast" => json(self.broadcast(parse(params)?).await?),
            "subscribe" => json(self.subscribe(parse(params)?).await?),
            "unsubscribe" => json(self.unsubscribe(parse(params)?).await?),
            "disconnect" => json(self.disconnect(parse(params)?).await?),
            "refresh" => json(self.refresh(parse(params)?).await?),
            "presence" => json(self.presence(parse(params)?).await?),
            "presence_stats" => json(self.presence_stats(parse(params)?).await?),
            "history" => json(self.history(parse(params)?).await?),
            "history_remove" => json(self.history_remove(parse(params)?).await?),
            "channels" => json(self.channels(parse(params)?).await?),
            "info" => json(self.info().await?),
            _ => Err(Error::METHOD_NOT_FOUND),
        }
    }

    /// `batch`: commands `{"<method>": params}` run in order (or concurrently with
    /// `parallel`); one reply each.
    pub async fn batch(&self, r: BatchRequest) -> Result<BatchResult> {
        let mut calls = Vec::with_capacity(r.commands.len());
        for cmd in &r.commands {
            let mut it = cmd.iter();
            match (it.next(), it.next()) {
                (Some((method, params)), None) if method != "batch" => {
                    calls.push(Some((method.as_str(), &**params)))
                }
                _ => calls.push(None),
            }
        }
        let replies = if r.parallel {
            let futs: Vec<_> = calls.into_iter().map(|c| self.batch_one(c)).collect();
            futures_util::future::join_all(futs).await
        } else {
            let mut out = Vec::new();
            for c in calls {
                out.push(self.batch_one(c).await);
            }
            out
        };
        Ok(BatchResult { replies })
    }

    async fn batch_one(&self, c: Option<(&str, &RawValue)>) -> BTreeMap<String, serde_json::Value> {
        let mut reply = BTreeMap::new();
        let r = match c {
            None => Err(Error::BAD_REQUEST.with_message("a batch command has exactly one method")),
            Some((method, params)) => self.call_one(method, params).await.map(|v| (method, v)),
        };
        match r {
            Ok((method, v)) => {
                reply.insert(method.to_owned(), v);
            }
            Err(e) => {
                reply.insert(
                    "error".to_owned(),
                    serde_json::to_value(ApiError::from(e)).unwrap_or_default(),
                );
            }
        }
        reply
    }
}

/// `{}`
#[derive(Debug, Default, Serialize)]
pub struct Empty {}

/// `presence` result.
#[derive(Debug, Serialize)]
pub struct PresenceResult {
    /// Client id → info.
    pub presence: HashMap<String, ClientInfo>,
}

/// One channel in a `channels` result.
#[derive(Debug, Serialize)]
pub struct ChannelInfo {
    /// Subscribers.
    pub num_clients: u32,
}

/// `channels` result.
#[derive(Debug, Serialize)]
pub struct ChannelsResult {
    /// Channel → info.
    pub channels: BTreeMap<String, ChannelInfo>,
}

/// `info` result.
#[derive(Debug, Serialize)]
pub struct InfoResult {
    /// Nodes.
    pub nodes: Vec<hub_core::NodeInfo>,
}

/// `batch`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct BatchRequest {
    /// Commands, each `{"<method>": params}`.
    pub commands: Vec<BTreeMap<String, Box<RawValue>>>,
    /// Run concurrently.
    pub parallel: bool,
}

/// `batch` result.
#[derive(Debug, Serialize)]
pub struct BatchResult {
    /// Replies, each `{"<method>": result}` or `{"error": ...}`.
    pub replies: Vec<BTreeMap<String, serde_json::Value>>,
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_patterns() {
        assert!(glob(b"chat:*", b"chat:room"));
        assert!(glob(b"*", b""));
        assert!(glob(b"a?c", b"abc"));
        assert!(!glob(b"chat:*", b"news"));
        assert!(glob(b"*:*:x", b"a:b:x"));
    }
}
