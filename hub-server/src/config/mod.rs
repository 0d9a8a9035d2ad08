//! Configuration: Centrifugo v6's layout and names wherever the concept is the same, so a
//! Centrifugo config for the supported options works unchanged.
//!
//! Sources, later ones winning: defaults, the config file (JSON, TOML or YAML by extension),
//! environment variables (`HUB_` or `CENTRIFUGO_` + the key path in upper case joined by `_`,
//! e.g. `HUB_HTTP_SERVER_PORT=9000`), command-line flags.

mod load;
mod proxy;

pub use load::{load, Loaded};
pub use proxy::*;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::serde_go;

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// HTTP server (WebSocket, API, health, metrics).
    pub http_server: HttpServer,
    /// Logging.
    pub log: Log,
    /// Client connections.
    pub client: Client,
    /// Channels and namespaces.
    pub channel: Channel,
    /// HTTP server API.
    pub http_api: HttpApi,
    /// gRPC server API.
    pub grpc_api: GrpcApi,
    /// Graceful shutdown.
    pub shutdown: Shutdown,
    /// WebSocket transport options.
    pub websocket: Websocket,
    /// Client RPC: which methods go to the RPC proxy.
    pub rpc: Rpc,
    /// Where events that `client.proxy.send` or `channel.proxy.publication_forward` could
    /// not deliver are kept.
    pub dead_letter: DeadLetter,
    /// Broker and presence: in memory (one node) or Redis (a cluster of nodes).
    pub engine: Engine,
    /// This node.
    pub node: NodeSection,
    /// Distributed tracing export (OpenTelemetry over OTLP/gRPC).
    pub opentelemetry: OpenTelemetry,
    /// `/health` and `/ready`.
    pub health: Health,
}

/// `health`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Health {
    /// `/ready` answers 503 also while a backend proxy's circuit breaker is open (default
    /// false: backends are reported in the body only).
    pub ready_requires_backends: bool,
}

/// `opentelemetry`: trace export. Trace context (W3C `traceparent`) is read from the server
/// API calls and passed on to backends and to the nodes that deliver a publication whether
/// or not export is on; `enabled` decides whether this node exports its spans.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct OpenTelemetry {
    /// Export spans over OTLP/gRPC (default false).
    pub enabled: bool,
    /// The collector's OTLP/gRPC address (default "": `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, else `http://localhost:4317`).
    pub endpoint: String,
    /// `service.name` of the spans (default `hub-server`; `service.instance.id` is
    /// `node.name`).
    pub service_name: String,
    /// Share of new traces recorded, 0 to 1 (default 1); a call that carries a trace context
    /// follows the caller's decision.
    pub sample_ratio: f64,
}

impl Default for OpenTelemetry {
    fn default() -> Self {
        OpenTelemetry {
            enabled: false,
            endpoint: String::new(),
            service_name: "hub-server".into(),
            sample_ratio: 1.0,
        }
    }
}

/// `node`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeSection {
    /// Name shown in `info` (default: host name and HTTP port, `host_8000`).
    pub name: String,
}

/// One address or a list of them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Addresses {
    /// `"redis://..."`
    One(String),
    /// `["redis://...", ...]`
    Many(Vec<String>),
}

impl Default for Addresses {
    fn default() -> Self {
        Addresses::Many(Vec::new())
    }
}

impl Addresses {
    /// The addresses, empty ones left out.
    pub fn list(&self) -> Vec<String> {
        match self {
            Addresses::One(a) => vec![a.clone()],
            Addresses::Many(v) => v.clone(),
        }
        .into_iter()
        .map(|a| a.trim().to_owned())
        .filter(|a| !a.is_empty())
        .collect()
    }
}

/// `engine`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Engine {
    /// `memory` (default: one node) or `redis`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Redis settings, used when `type` is `redis`.
    pub redis: RedisEngine,
    /// How long a presence entry lives in Redis unless its connection refreshes it
    /// (default `60s`).
    #[serde(with = "serde_go")]
    pub presence_ttl: Duration,
}

impl Default for Engine {
    fn default() -> Self {
        Engine {
            kind: "memory".into(),
            redis: RedisEngine::default(),
            presence_ttl: Duration::from_secs(60),
        }
    }
}

/// `engine.redis`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisEngine {
    /// Redis servers, `redis://[user:password@]host:port[/db]`; several shard channels by
    /// consistent hashing (default `redis://127.0.0.1:6379` when no cluster is given).
    pub address: Addresses,
    /// Redis Cluster seed nodes, `host:port` (several seeds of one cluster comma-separated
    /// in one entry; several entries are several clusters sharded like `address`).
    pub cluster_address: Addresses,
    /// Prefix of keys and channels (default `centrifugo`).
    pub prefix: String,
    /// Timeout of one Redis call (default `4s`).
    #[serde(with = "serde_go")]
    pub io_timeout: Duration,
    /// Timeout of connecting (default `1s`).
    #[serde(with = "serde_go")]
    pub connect_timeout: Duration,
}

impl Default for RedisEngine {
    fn default() -> Self {
        RedisEngine {
            address: Addresses::default(),
            cluster_address: Addresses::default(),
            prefix: "centrifugo".into(),
            io_timeout: Duration::from_secs(4),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

impl RedisEngine {
    /// The shard addresses in the form the engine takes: `redis://` URLs as given, cluster
    /// seeds as `redis-cluster://first?node=second&node=third`.
    pub fn shard_urls(&self) -> Result<Vec<String>, String> {
        let mut urls = self.address.list();
        for entry in self.cluster_address.list() {
            let seeds: Vec<&str> = entry
                .split(',')
                .map(|s| s.trim())
                .map(|s| {
                    s.trim_start_matches("redis-cluster://")
                        .trim_start_matches("redis://")
                })
                .filter(|s| !s.is_empty())
                .collect();
            let Some((first, rest)) = seeds.split_first() else {
                continue;
            };
            let mut url = format!("redis-cluster://{first}");
            for (i, s) in rest.iter().enumerate() {
                url.push(if i == 0 { '?' } else { '&' });
                url.push_str("node=");
                url.push_str(s);
            }
            urls.push(url);
        }
        if urls.is_empty() {
            urls.push("redis://127.0.0.1:6379".into());
        }
        for u in &urls {
            if !(u.starts_with("redis://")
                || u.starts_with("rediss://")
                || u.starts_with("redis-cluster://"))
            {
                return Err(format!(
                    "engine.redis.address: {u:?} is not a redis:// address"
                ));
            }
        }
        Ok(urls)
    }
}

/// `websocket`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Websocket {
    /// Negotiate permessage-deflate with clients that offer it (default false).
    pub compression: bool,
    /// Messages shorter than this many bytes go uncompressed (default 128).
    pub compression_min_size: usize,
    /// Deflate level, 1 (fastest) to 9 (smallest) (default 1).
    pub compression_level: u32,
}

impl Default for Websocket {
    fn default() -> Self {
        let c = hub_core::CompressionConfig::default();
        Websocket {
            compression: c.enabled,
            compression_min_size: c.min_size,
            compression_level: c.level,
        }
    }
}

/// `http_server`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpServer {
    /// Address to bind (default `127.0.0.1`; `0.0.0.0` for all interfaces).
    pub address: String,
    /// Port (default 8000).
    pub port: u16,
    /// HTTPS/WSS on the same port, terminated by the server itself (default off).
    pub tls: Tls,
}

impl Default for HttpServer {
    fn default() -> Self {
        HttpServer {
            address: "127.0.0.1".into(),
            port: 8000,
            tls: Tls::default(),
        }
    }
}

/// `http_server.tls` and `grpc_api.tls` (Centrifugo v6's names): a certificate chain and its
/// private key, as inline PEM or as files, read once at start. Inline PEM wins over a file
/// when both are set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Tls {
    /// Serve TLS (default false).
    pub enabled: bool,
    /// The certificate chain as PEM text (leaf first).
    pub server_cert_pem: String,
    /// The private key as PEM text (PKCS#8, PKCS#1 or SEC1).
    pub server_key_pem: String,
    /// A file holding the certificate chain (PEM).
    pub server_cert_pem_file: String,
    /// A file holding the private key (PEM).
    pub server_key_pem_file: String,
}

/// `log`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Log {
    /// `trace`, `debug`, `info` (default), `warn`, `error`, `none`.
    pub level: String,
    /// `text` (default) or `json`.
    pub format: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

/// Token verification keys.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenConfig {
    /// HMAC secret for HS256/384/512.
    pub hmac_secret_key: String,
    /// RSA public key (PEM) for RS256/384/512.
    pub rsa_public_key: String,
    /// Expected `aud`, if set.
    pub audience: String,
    /// Expected `iss`, if set.
    pub issuer: String,
}

impl TokenConfig {
    /// Whether any key is configured.
    pub fn has_keys(&self) -> bool {
        !self.hmac_secret_key.is_empty() || !self.rsa_public_key.is_empty()
    }
}

/// `client.subscription_token`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SubscriptionTokenConfig {
    /// Use separate keys for subscription tokens (otherwise the connection token's).
    pub enabled: bool,
    /// The keys.
    #[serde(flatten)]
    pub token: TokenConfig,
}

/// `client`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Client {
    /// Connection token keys.
    pub token: TokenConfig,
    /// Subscription token keys.
    pub subscription_token: SubscriptionTokenConfig,
    /// Origins allowed to connect from browsers (`*` patterns). Empty = same host only.
    pub allowed_origins: Vec<String>,
    /// Connect without a token as anonymous user "".
    pub allow_anonymous_connect_without_token: bool,
    /// Server ping interval (default `25s`).
    #[serde(with = "serde_go")]
    pub ping_interval: Duration,
    /// Pong timeout (default `8s`).
    #[serde(with = "serde_go")]
    pub pong_timeout: Duration,
    /// Time to send `connect` after opening the socket (default `10s`).
    #[serde(with = "serde_go")]
    pub stale_close_delay: Duration,
    /// Grace after expiry before closing with 3005 (default `25s`).
    #[serde(with = "serde_go")]
    pub expired_close_delay: Duration,
    /// Presence refresh interval (default `25s`).
    #[serde(with = "serde_go")]
    pub presence_update_interval: Duration,
    /// Bytes queued per connection before it is closed as slow (default 1048576).
    pub queue_max_size: usize,
    /// Largest client message in bytes (default 65536).
    pub max_message_size: usize,
    /// Most publications a client history call returns (default 300).
    pub history_max_publication_limit: usize,
    /// Most publications a recovery returns (default 300).
    pub recovery_max_publication_limit: usize,
    /// Commands per second one connection may send (default 100; 0 = no limit). Over it a
    /// command gets error 111.
    pub command_rate_limit: u32,
    /// Burst of commands allowed at once (default 200).
    pub command_rate_burst: u32,
    /// Refused commands within 10 s after which the connection is closed with 3013
    /// (default 50; 0 = never).
    pub command_abuse_limit: u32,
    /// Most open WebSocket connections on this node (default 0 = only the open-files limit).
    /// Over it new connections get HTTP 503 with `Retry-After`.
    pub connection_limit: usize,
    /// New connections per second on this node (default 0 = no limit); over it, 503.
    pub connection_rate_limit: u32,
    /// New connections per second from one IP address (default 0 = no limit); over it, 429.
    pub connection_rate_limit_per_ip: u32,
    /// Most connections of one user on this node (default 0 = no limit); over it, 3504.
    pub user_connection_limit: usize,
    /// Most channels one connection may subscribe to (default 128); over it, 3505.
    pub channel_limit: usize,
    /// Scheduling lag above which new connections are shed with 503 (default `500ms`;
    /// `0s` turns shedding off).
    #[serde(with = "serde_go")]
    pub overload_lag: Duration,
    /// How often stream positions of positioned channels are checked against the
    /// broker, to catch a publication lost on its way (default `40s`; `0s` = never).
    #[serde(with = "serde_go")]
    pub channel_position_check_delay: Duration,
    /// Connect and refresh proxies.
    pub proxy: ClientProxies,
}

impl Default for Client {
    fn default() -> Self {
        let n = hub_core::NodeConfig::default();
        Client {
            token: TokenConfig::default(),
            subscription_token: SubscriptionTokenConfig::default(),
            allowed_origins: Vec::new(),
            allow_anonymous_connect_without_token: false,
            ping_interval: n.ping_interval,
            pong_timeout: n.pong_timeout,
            stale_close_delay: n.stale_close_delay,
            expired_close_delay: n.expired_close_delay,
            presence_update_interval: n.presence_update_interval,
            queue_max_size: n.max_queue_bytes,
            max_message_size: n.max_message_size,
            history_max_publication_limit: n.history_max_publication_limit,
            recovery_max_publication_limit: n.recovery_max_publication_limit,
            command_rate_limit: n.command_rate_limit.map_or(0, |l| l.per_second),
            command_rate_burst: n.command_rate_limit.map_or(0, |l| l.burst),
            command_abuse_limit: n.command_abuse_limit,
            connection_limit: n.connection_limit,
            connection_rate_limit: 0,
            connection_rate_limit_per_ip: 0,
            user_connection_limit: n.user_connection_limit,
            channel_limit: n.channel_limit,
            overload_lag: n.overload_lag,
            channel_position_check_delay: n.position_check_interval,
            proxy: ClientProxies::default(),
        }
    }
}

/// Options of a namespace (or of channels without namespace).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelOptions {
    /// Keep presence.
    pub presence: bool,
    /// Announce joins and leaves.
    pub join_leave: bool,
    /// Push joins and leaves to every subscriber (otherwise only to those who ask).
    pub force_push_join_leave: bool,
    /// Publications kept in history (history is on when both size and TTL are set).
    pub history_size: usize,
    /// How long history is kept after the last publish.
    #[serde(with = "serde_go")]
    pub history_ttl: Duration,
    /// How long stream meta (epoch, top offset) lives; 0 = 30 days.
    #[serde(with = "serde_go")]
    pub history_meta_ttl: Duration,
    /// Positioning for every subscriber.
    pub force_positioning: bool,
    /// Positioning when the client asks.
    pub allow_positioning: bool,
    /// Recovery for every subscriber.
    pub force_recovery: bool,
    /// Recovery when the client asks.
    pub allow_recovery: bool,
    /// Authenticated clients may subscribe without a token.
    pub allow_subscribe_for_client: bool,
    /// Anonymous clients may subscribe without a token (with `allow_subscribe_for_client`).
    pub allow_subscribe_for_anonymous: bool,
    /// Subscribers may publish.
    pub allow_publish_for_subscriber: bool,
    /// Authenticated clients may publish.
    pub allow_publish_for_client: bool,
    /// Anonymous clients may publish (with one of the above).
    pub allow_publish_for_anonymous: bool,
    /// Subscribers may read history.
    pub allow_history_for_subscriber: bool,
    /// Authenticated clients may read history.
    pub allow_history_for_client: bool,
    /// Anonymous clients may read history (with one of the above).
    pub allow_history_for_anonymous: bool,
    /// Subscribers may read presence.
    pub allow_presence_for_subscriber: bool,
    /// Authenticated clients may read presence.
    pub allow_presence_for_client: bool,
    /// Anonymous clients may read presence (with one of the above).
    pub allow_presence_for_anonymous: bool,
    /// Channels `name#user1,user2` may be subscribed by the listed users without a token.
    pub allow_user_limited_channels: bool,
    /// Subscriptions without a token are decided by `channel.proxy.subscribe`.
    pub subscribe_proxy_enabled: bool,
    /// Client publications are decided by `channel.proxy.publish`.
    pub publish_proxy_enabled: bool,
    /// Subscription refreshes are decided by `channel.proxy.sub_refresh`.
    pub sub_refresh_proxy_enabled: bool,
    /// Every publication (server API and client) is forwarded to
    /// `channel.proxy.publication_forward`, fire and forget.
    pub forward_publications: bool,
}

impl ChannelOptions {
    /// Whether history is on.
    pub fn history_enabled(&self) -> bool {
        self.history_size > 0 && !self.history_ttl.is_zero()
    }

    /// The meta TTL in force.
    pub fn meta_ttl(&self) -> Duration {
        if self.history_meta_ttl.is_zero() {
            hub_core::broker::HistoryOptions::DEFAULT_META_TTL
        } else {
            self.history_meta_ttl
        }
    }
}

/// A named namespace: channels `name:...`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Namespace {
    /// Namespace name (letters, digits, `_`, `-`, `.`).
    pub name: String,
    /// Its options.
    #[serde(flatten)]
    pub options: ChannelOptions,
}

/// `channel`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Channel {
    /// Options of channels without a namespace.
    pub without_namespace: ChannelOptions,
    /// Namespaces.
    pub namespaces: Vec<Namespace>,
    /// Longest channel name (default 255).
    pub max_length: usize,
    /// Separates namespace and name (default `:`).
    pub namespace_boundary: String,
    /// Separates a user-limited channel's name from its users (default `#`).
    pub user_boundary: String,
    /// Separates users in a user-limited channel (default `,`).
    pub user_separator: String,
    /// Subscribe, publish and sub_refresh proxies.
    pub proxy: ChannelProxies,
}

impl Default for Channel {
    fn default() -> Self {
        Channel {
            without_namespace: ChannelOptions::default(),
            namespaces: Vec::new(),
            max_length: 255,
            namespace_boundary: ":".into(),
            user_boundary: "#".into(),
            user_separator: ",".into(),
            proxy: ChannelProxies::default(),
        }
    }
}

impl Channel {
    /// The options of a channel's namespace; `None` for an unknown namespace.
    pub fn options_for(&self, channel: &str) -> Option<&ChannelOptions> {
        match channel.split_once(self.namespace_boundary.as_str()) {
            Some((ns, _)) if !ns.is_empty() => self
                .namespaces
                .iter()
                .find(|n| n.name == ns)
                .map(|n| &n.options),
            _ => Some(&self.without_namespace),
        }
    }
}

/// `http_api`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpApi {
    /// API key. Empty refuses every API call unless `insecure`.
    pub key: String,
    /// Serve the API without a key (development only).
    pub insecure: bool,
    /// Path prefix (default `/api`).
    pub handler_prefix: String,
    /// `transport`: errors as HTTP status codes instead of 200 with an `error` field.
    pub error_mode: String,
}

impl Default for HttpApi {
    fn default() -> Self {
        HttpApi {
            key: String::new(),
            insecure: false,
            handler_prefix: "/api".into(),
            error_mode: String::new(),
        }
    }
}

/// `grpc_api`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct GrpcApi {
    /// Serve the gRPC API (default false).
    pub enabled: bool,
    /// Interface to listen on (default "" = the same as `http_server.address`).
    pub address: String,
    /// Port (default 10000).
    pub port: u16,
    /// API key (metadata `authorization: apikey <key>`). Empty refuses every call unless
    /// `insecure`.
    pub key: String,
    /// Serve the gRPC API without a key (development only; default false).
    pub insecure: bool,
    /// TLS for the gRPC API (its own certificate and key; default off).
    pub tls: Tls,
}

impl Default for GrpcApi {
    fn default() -> Self {
        GrpcApi {
            enabled: false,
            address: String::new(),
            port: 10000,
            key: String::new(),
            insecure: false,
            tls: Tls::default(),
        }
    }
}

/// `shutdown`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Shutdown {
    /// Clients are closed with 3001 spread over this window (default `5s`).
    #[serde(with = "serde_go")]
    pub drain_window: Duration,
    /// The process exits after at most this long (default `30s`).
    #[serde(with = "serde_go")]
    pub timeout: Duration,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            drain_window: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
        }
    }
}
