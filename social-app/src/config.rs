//! Settings, from flags or `SOCIAL_*` environment variables, checked before anything binds.
//!
//! Secrets (`--session-secret`, `--hub-secret`, `--internal-token`) have no default outside
//! development: without `--dev` the app refuses to start when one is missing or equals the
//! development value. With `--dev` missing secrets take the development value (logged).

use std::path::PathBuf;

use clap::Args;

/// The development value of every secret; refused without `--dev`.
pub const DEV_SECRET: &str = "dev-only-secret-do-not-use-in-production";

/// Settings shared by every part.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// A development run: missing secrets take a public development value, cookies are not
    /// `Secure` (plain HTTP).
    #[arg(long, global = true, env = "SOCIAL_DEV")]
    pub dev: bool,
    /// Signs session tokens (HS256).
    #[arg(
        long,
        global = true,
        env = "SOCIAL_SESSION_SECRET",
        hide_env_values = true
    )]
    pub session_secret: Option<String>,
    /// The hub's HMAC secret: signs connection tokens (`client.token.hmac_secret_key` of an
    /// external hub-server; the embedded node checks it itself).
    #[arg(long, global = true, env = "SOCIAL_HUB_SECRET", hide_env_values = true)]
    pub hub_secret: Option<String>,
    /// Sent by the gateway and the services with every internal gRPC call, and required by
    /// the services.
    #[arg(
        long,
        global = true,
        env = "SOCIAL_INTERNAL_TOKEN",
        hide_env_values = true
    )]
    pub internal_token: Option<String>,
    /// Where the embedded store keeps its files (one redb file per service).
    #[arg(long, global = true, env = "SOCIAL_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// MongoDB instead of the embedded store (`mongodb://host:27017`).
    #[arg(long, global = true, env = "SOCIAL_MONGO_URI")]
    pub mongo_uri: Option<String>,
    /// MongoDB database.
    #[arg(long, global = true, env = "SOCIAL_MONGO_DB", default_value = "social")]
    pub mongo_db: String,
    /// Redis for counters and feed caches (`redis://127.0.0.1:6379`).
    #[arg(long, global = true, env = "SOCIAL_REDIS")]
    pub redis: Option<String>,
    /// Prefix of every Redis key the app writes.
    #[arg(
        long,
        global = true,
        env = "SOCIAL_REDIS_PREFIX",
        default_value = "social"
    )]
    pub redis_prefix: String,
    /// An external hub's gRPC server API (`http://127.0.0.1:10000`) instead of the embedded
    /// node.
    #[arg(long, global = true, env = "SOCIAL_HUB_GRPC")]
    pub hub_grpc: Option<String>,
    /// The external hub's API key.
    #[arg(
        long,
        global = true,
        env = "SOCIAL_HUB_API_KEY",
        hide_env_values = true,
        default_value = ""
    )]
    pub hub_api_key: String,
    /// The WebSocket URL browsers connect to when the hub is external
    /// (`ws://127.0.0.1:8000/connection/websocket`); embedded: the gateway's own.
    #[arg(long, global = true, env = "SOCIAL_HUB_WS_URL")]
    pub hub_ws_url: Option<String>,
    /// The services' addresses when they run elsewhere; default: this process's `--grpc`.
    #[arg(long, global = true, env = "SOCIAL_USERS_ADDR")]
    pub users_addr: Option<String>,
    /// See `--users-addr`.
    #[arg(long, global = true, env = "SOCIAL_POSTS_ADDR")]
    pub posts_addr: Option<String>,
    /// See `--users-addr`.
    #[arg(long, global = true, env = "SOCIAL_CHATS_ADDR")]
    pub chats_addr: Option<String>,
    /// See `--users-addr`.
    #[arg(long, global = true, env = "SOCIAL_COUNTERS_ADDR")]
    pub counters_addr: Option<String>,
    /// Serve Prometheus `/metrics` (and `/healthz`) on this address, e.g. `127.0.0.1:9464`:
    /// for service processes, which have no HTTP port (the gateway, and `serve`, always serve
    /// `/metrics` on the gateway's port). Unset: a service process serves no metrics.
    #[arg(long, global = true, env = "SOCIAL_METRICS")]
    pub metrics: Option<String>,
    /// Where the gRPC services listen.
    #[arg(
        long,
        global = true,
        env = "SOCIAL_GRPC",
        default_value = "127.0.0.1:9100"
    )]
    pub grpc: String,
    /// Longest home feed kept per user.
    #[arg(long, global = true, env = "SOCIAL_FEED_CAP", default_value_t = 500)]
    pub feed_cap: usize,
    /// Authors with more friends than this are fanned out on read.
    #[arg(
        long,
        global = true,
        env = "SOCIAL_FANOUT_LIMIT",
        default_value_t = 1000
    )]
    pub fanout_limit: u64,
    /// Login attempts allowed per minute per email and per client address.
    #[arg(
        long,
        global = true,
        env = "SOCIAL_LOGIN_PER_MINUTE",
        default_value_t = 10
    )]
    pub login_per_minute: u32,
}

/// The secrets, checked.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// Session tokens.
    pub session: String,
    /// Connection tokens.
    pub hub: String,
    /// Internal calls.
    pub internal: String,
}

impl Settings {
    /// The secrets, or an error naming the first missing or development one (outside
    /// `--dev`).
    pub fn secrets(&self) -> Result<Secrets, String> {
        let pick = |name: &str, v: &Option<String>| -> Result<String, String> {
            match v.as_deref() {
                Some("") => Err(format!("--{name} is empty")),
                Some(s) if s == DEV_SECRET && !self.dev => Err(format!(
                    "--{name} is the development secret: refused outside --dev"
                )),
                Some(s) if s.len() < 16 && !self.dev => {
                    Err(format!("--{name} is too short: at least 16 characters"))
                }
                Some(s) => Ok(s.to_string()),
                None if self.dev => {
                    tracing::warn!("--{name} not set: using the development secret (--dev)");
                    Ok(DEV_SECRET.to_string())
                }
                None => Err(format!(
                    "--{name} (or SOCIAL_{}) is required outside --dev",
                    name.to_uppercase().replace('-', "_")
                )),
            }
        };
        Ok(Secrets {
            session: pick("session-secret", &self.session_secret)?,
            hub: pick("hub-secret", &self.hub_secret)?,
            internal: pick("internal-token", &self.internal_token)?,
        })
    }

    /// The services' addresses: the given ones, the rest at `--grpc` (this process).
    pub fn addresses(&self, local: &str) -> crate::rpc::Addresses {
        let or = |a: &Option<String>| a.clone().unwrap_or_else(|| format!("http://{local}"));
        crate::rpc::Addresses {
            users: or(&self.users_addr),
            posts: or(&self.posts_addr),
            chats: or(&self.chats_addr),
            counters: or(&self.counters_addr),
        }
    }
}
