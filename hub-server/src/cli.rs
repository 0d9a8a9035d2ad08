//! The command line, shaped like Centrifugo's: `hub-server -c config.json` runs;
//! `genconfig`, `gentoken`, `checkconfig` help set it up; `deadletters` lists and replays
//! events the fire-and-forget proxies could not deliver.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::{self, Config, Loaded};
use crate::dead_letter::{Attempt, DeadLetters, Entry, Kind};
use crate::proxy::fire_and_forget::Deliverable;
use crate::proxy::forward::PublicationEvent;
use crate::proxy::send::SendEvent;
use crate::proxy::Backend;

/// Realtime WebSocket hub speaking the Centrifugo client protocol v2.
#[derive(Debug, Parser)]
#[command(name = "hub-server", version)]
pub struct Cli {
    /// Config file (.json, .toml, .yaml).
    #[arg(short = 'c', long = "config", global = true)]
    pub config: Option<PathBuf>,
    /// Address to bind (overrides http_server.address).
    #[arg(long)]
    pub address: Option<String>,
    /// Port (overrides http_server.port).
    #[arg(short = 'p', long)]
    pub port: Option<u16>,
    /// Log level: trace, debug, info, warn, error, none (overrides log.level).
    #[arg(long)]
    pub log_level: Option<String>,
    /// Log format: text or json (overrides log.format).
    #[arg(long)]
    pub log_format: Option<String>,
    /// A subcommand; none runs the server.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a config file with fresh secrets (refuses to overwrite).
    Genconfig,
    /// Print a connection token for a user, signed with client.token.hmac_secret_key.
    Gentoken {
        /// User id.
        #[arg(short = 'u', long)]
        user: String,
        /// Lifetime in seconds (0 = no expiry).
        #[arg(short = 't', long, default_value_t = 604800)]
        ttl: u64,
        /// Print only the token.
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Check a config file and report problems and unknown keys.
    Checkconfig,
    /// Events that client.proxy.send or channel.proxy.publication_forward could not deliver
    /// (the Redis stream with the Redis engine, else dead_letter.path).
    Deadletters {
        /// What to do with them.
        #[command(subcommand)]
        action: DeadLetterAction,
    },
}

/// `deadletters` subcommands.
#[derive(Debug, Clone, Copy, Subcommand)]
pub enum DeadLetterAction {
    /// Print the entries, one JSON object a line.
    List,
    /// Send each entry once to the proxy of its kind; remove the delivered ones, keep failures.
    Replay,
}

/// Environment variables as a map.
pub fn env_map() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

/// The config file read when `-c` is not given and the file exists (as Centrifugo does).
pub const DEFAULT_CONFIG_FILE: &str = "config.json";

/// The config file in force: `-c`, else `./config.json` if it exists, else none.
pub fn config_path(cli: &Cli) -> Option<PathBuf> {
    cli.config.clone().or_else(|| {
        let p = PathBuf::from(DEFAULT_CONFIG_FILE);
        p.exists().then_some(p)
    })
}

/// Loads the config and applies the command-line overrides.
pub fn load(cli: &Cli) -> Result<Loaded, String> {
    let mut loaded = config::load(config_path(cli).as_deref(), &env_map())?;
    let c = &mut loaded.config;
    if let Some(a) = &cli.address {
        c.http_server.address = a.clone();
    }
    if let Some(p) = cli.port {
        c.http_server.port = p;
    }
    if let Some(l) = &cli.log_level {
        c.log.level = l.clone();
    }
    if let Some(f) = &cli.log_format {
        c.log.format = f.clone();
    }
    Ok(loaded)
}

fn secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Origins of the local pages: the server itself and the browser example (port 3000).
fn local_origins() -> Vec<String> {
    [
        "http://localhost:8000",
        "http://127.0.0.1:8000",
        "http://localhost:3000",
        "http://127.0.0.1:3000",
    ]
    .map(String::from)
    .to_vec()
}

/// Starter channel options: authenticated clients subscribe to channels without namespace,
/// with presence, 100 publications of history for 300 s, and recovery.
fn starter_channel_options(o: &mut config::ChannelOptions) {
    o.allow_subscribe_for_client = true;
    o.presence = true;
    o.allow_presence_for_subscriber = true;
    o.history_size = 100;
    o.history_ttl = std::time::Duration::from_secs(300);
    o.allow_history_for_subscriber = true;
    o.force_recovery = true;
}

/// What [`dev_defaults`] filled in, to show the user once.
#[derive(Debug, Default)]
pub struct DevSettings {
    /// A generated HMAC secret for connection tokens, if one was generated.
    pub hmac_secret_key: Option<String>,
    /// A generated API key, if one was generated.
    pub api_key: Option<String>,
}

/// Makes a config-less start a working development node: a generated token secret and API
/// key (only where none is set, e.g. by environment) for this run, the starter channel
/// options when channels were left at their defaults, and local origins.
pub fn dev_defaults(c: &mut Config) -> DevSettings {
    let mut dev = DevSettings::default();
    if !c.client.token.has_keys() {
        c.client.token.hmac_secret_key = secret();
        dev.hmac_secret_key = Some(c.client.token.hmac_secret_key.clone());
    }
    if c.http_api.key.is_empty() && !c.http_api.insecure {
        c.http_api.key = secret();
        dev.api_key = Some(c.http_api.key.clone());
    }
    if c.channel.without_namespace == config::ChannelOptions::default() {
        starter_channel_options(&mut c.channel.without_namespace);
    }
    if c.client.allowed_origins.is_empty() {
        c.client.allowed_origins = local_origins();
    }
    dev
}

/// `genconfig`: writes a starter config with fresh secrets.
pub fn genconfig(path: &Path) -> Result<String, String> {
    if path.exists() {
        return Err(format!("{} exists; not overwriting it", path.display()));
    }
    let mut c = Config::default();
    c.client.token.hmac_secret_key = secret();
    c.http_api.key = secret();
    c.client.allowed_origins = local_origins();
    starter_channel_options(&mut c.channel.without_namespace);
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("json");
    let text = match ext {
        "toml" => toml::to_string_pretty(&c).map_err(|e| e.to_string())?,
        "yaml" | "yml" => serde_norway::to_string(&c).map_err(|e| e.to_string())?,
        _ => serde_json::to_string_pretty(&c).map_err(|e| e.to_string())?,
    };
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(format!("wrote {}", path.display()))
}

/// `gentoken`: an HS256 connection token.
pub fn gentoken(config: &Config, user: &str, ttl: u64) -> Result<String, String> {
    let key = &config.client.token.hmac_secret_key;
    if key.is_empty() {
        return Err("client.token.hmac_secret_key is not set in the config".into());
    }
    let mut claims = serde_json::json!({ "sub": user });
    if ttl > 0 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        claims["exp"] = (now + ttl).into();
    }
    crate::auth::make_hs256(key, &claims)
}

/// `deadletters list`: the dead-letter entries (the Redis stream's, then the file's), one JSON
/// line each.
pub async fn deadletters_list(config: &Config) -> Result<String, String> {
    let store = crate::dead_letter::DeadLetters::new(config)?;
    let lines = store.list().await?;
    if lines.is_empty() {
        return Ok(format!("no dead letters in {}", store.describe()));
    }
    Ok(lines.join("\n"))
}

/// Replays one entry through `backend` as an `E`, when there is a backend for its kind.
async fn redeliver<E: Deliverable>(backend: Option<&Backend>, e: &Entry) -> Attempt {
    let (Some(backend), Some(event)) = (backend, E::from_entry(e)) else {
        return Attempt::NotTried;
    };
    match event.attempt(backend, e.attempts.saturating_add(1)).await {
        Ok(()) => Attempt::Delivered,
        Err(why) => Attempt::Failed(why),
    }
}

/// `deadletters replay`: sends each entry once (through the proxy's timeout and breaker) to
/// the call of its kind — `send` entries to `client.proxy.send`, `publication` entries to
/// `channel.proxy.publication_forward` — removes the delivered ones and keeps the others
/// (attempts counted up, last error updated) and entries that do not parse. Entries the
/// server stores meanwhile are kept. Fails before sending anything when the store holds an
/// entry whose proxy the config does not enable.
pub async fn deadletters_replay(config: &Config) -> Result<String, String> {
    let store = DeadLetters::new(config)?;
    let mut kinds: BTreeMap<&'static str, usize> = BTreeMap::new();
    for line in store.list().await? {
        if let Ok(e) = serde_json::from_str::<Entry>(&line) {
            *kinds.entry(e.kind.as_str()).or_default() += 1;
        }
    }
    let send = config.client.proxy.send.active();
    let forward = Some(&config.channel.proxy.publication_forward.proxy).filter(|p| p.is_set());
    for (kind, key, proxy) in [
        (Kind::Send, "client.proxy.send is not enabled", send),
        (
            Kind::Publication,
            "channel.proxy.publication_forward.endpoint is not set",
            forward,
        ),
    ] {
        let n = kinds.get(kind.as_str()).copied().unwrap_or(0);
        if n > 0 && proxy.is_none() {
            return Err(format!(
                "{key} in the config: it is needed to replay {n} {} dead letters",
                kind.as_str()
            ));
        }
    }
    let send = send.map(Backend::new).transpose()?;
    let forward = forward.map(Backend::new).transpose()?;
    let (send, forward) = (send.as_ref(), forward.as_ref());
    let r = store
        .replay(|e| async move {
            match e.kind {
                Kind::Send => redeliver::<SendEvent>(send, &e).await,
                Kind::Publication => redeliver::<PublicationEvent>(forward, &e).await,
            }
        })
        .await?;
    Ok(format!(
        "replayed {} dead letters from {}: {} delivered, {} kept",
        r.read,
        store.describe(),
        r.delivered,
        r.kept
    ))
}
