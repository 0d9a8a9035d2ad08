//! The command line, shaped like Centrifugo's: `hub-server -c config.json` runs;
//! `genconfig`, `gentoken`, `checkconfig` help set it up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::{self, Config, Loaded};

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
}

/// Environment variables as a map.
pub fn env_map() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

/// Loads the config and applies the command-line overrides.
pub fn load(cli: &Cli) -> Result<Loaded, String> {
    let mut loaded = config::load(cli.config.as_deref(), &env_map())?;
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
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// `genconfig`: writes a starter config with fresh secrets.
pub fn genconfig(path: &Path) -> Result<String, String> {
    if path.exists() {
        return Err(format!("{} exists; not overwriting it", path.display()));
    }
    let mut c = Config::default();
    c.client.token.hmac_secret_key = secret();
    c.http_api.key = secret();
    c.client.allowed_origins = vec!["http://localhost:8000".into(), "http://127.0.0.1:8000".into()];
    c.channel.without_namespace.allow_subscribe_for_client = true;
    c.channel.without_namespace.presence = true;
    c.channel.without_namespace.history_size = 100;
    c.channel.without_namespace.history_ttl = std::time::Duration::from_secs(300);
    c.channel.without_namespace.force_recovery = true;
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
