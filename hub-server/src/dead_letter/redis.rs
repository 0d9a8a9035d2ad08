//! The Redis backend: a stream `<engine.redis.prefix>.dead_letters` on the first engine
//! address, one stream entry per event with one field, `entry`, holding the
//! [`Entry`](super::Entry)'s JSON.
//!
//! Appends run a small script, so the bound and the drop count are one atomic step:
//! `XADD key MAXLEN ~ max_entries * entry <json>` between two `XLEN`s. `~` lets Redis trim
//! only whole stream nodes (100 entries by default), so the stream may hold somewhat more
//! than `max_entries`; what it trims is counted exactly.
//!
//! The client connects on first use, so a node whose store is never used holds no
//! connection. After a failed append the stream is skipped for a second
//! ([`FAIL_FAST`]), so a burst of dead letters while Redis is down does not wait one
//! timeout each before falling back to the file.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::{ClientLike, LuaInterface, StreamsInterface};
use fred::types::config::{Config, ConnectionConfig, PerformanceConfig, ReconnectPolicy};
use fred::types::Builder;
use tokio::sync::OnceCell;
use tokio::time::Instant;

/// How long appends skip Redis after one failed.
pub(super) const FAIL_FAST: Duration = Duration::from_secs(1);

/// Appends and returns how many old entries the bound trimmed.
const APPEND: &str = r"
local before = redis.call('XLEN', KEYS[1])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'entry', ARGV[2])
return before + 1 - redis.call('XLEN', KEYS[1])
";

/// Entries read per `XRANGE`.
const PAGE: u64 = 500;

/// The dead-letter stream.
#[derive(Debug)]
pub(super) struct RedisStream {
    url: String,
    key: String,
    max_entries: usize,
    io_timeout: Duration,
    connect_timeout: Duration,
    client: OnceCell<Client>,
    /// Appends skip Redis until then.
    skip_until: Mutex<Option<Instant>>,
}

/// One stream entry: its id and the `entry` field.
pub(super) type StreamEntry = (String, String);

impl RedisStream {
    /// The stream `key` on the server at `url` (not connected yet).
    pub(super) fn new(
        url: &str,
        key: String,
        max_entries: usize,
        io_timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Self, String> {
        Config::from_url(url).map_err(|e| format!("engine.redis.address {url:?}: {e}"))?;
        Ok(RedisStream {
            url: url.to_string(),
            key,
            max_entries: max_entries.max(1),
            io_timeout,
            connect_timeout,
            client: OnceCell::new(),
            skip_until: Mutex::new(None),
        })
    }

    /// The stream's key.
    pub(super) fn key(&self) -> &str {
        &self.key
    }

    /// Where the stream is, for messages: `key at url` (without a password).
    pub(super) fn describe(&self) -> String {
        let url = match (self.url.split_once("://"), self.url.rsplit_once('@')) {
            (Some((scheme, _)), Some((_, host))) => format!("{scheme}://{host}"),
            _ => self.url.clone(),
        };
        format!("redis stream {} at {url}", self.key)
    }

    async fn client(&self) -> Result<&Client, String> {
        self.client
            .get_or_try_init(|| async {
                let config = Config::from_url(&self.url).map_err(|e| e.to_string())?;
                let mut policy = ReconnectPolicy::new_exponential(0, 100, 5_000, 2);
                policy.set_jitter(200);
                let (connect_timeout, io_timeout) = (self.connect_timeout, self.io_timeout);
                let client = Builder::from_config(config)
                    .set_policy(policy)
                    .with_connection_config(|c: &mut ConnectionConfig| {
                        c.connection_timeout = connect_timeout;
                        c.internal_command_timeout = io_timeout;
                        // An append is not idempotent: never resend one after a broken
                        // connection (it falls back to the file instead).
                        c.max_command_attempts = 1;
                    })
                    .with_performance_config(|p: &mut PerformanceConfig| {
                        p.default_command_timeout = io_timeout;
                    })
                    .build()
                    .map_err(|e| e.to_string())?;
                match tokio::time::timeout(connect_timeout * 2, client.init()).await {
                    Ok(Ok(_)) => Ok(client),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => {
                        // Stop its connection task; a later call builds a new client.
                        let _ = tokio::time::timeout(connect_timeout, client.quit()).await;
                        Err(format!("no connection within {:?}", connect_timeout * 2))
                    }
                }
            })
            .await
            .map_err(|e| format!("{}: {e}", self.describe()))
    }

    /// Runs `op` within the I/O timeout.
    async fn io<T>(
        &self,
        what: &str,
        op: impl std::future::Future<Output = Result<T, fred::error::Error>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.io_timeout, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("{}: {what}: {e}", self.describe())),
            Err(_) => Err(format!(
                "{}: {what}: no answer within {:?}",
                self.describe(),
                self.io_timeout
            )),
        }
    }

    /// Appends one entry's JSON; returns how many old entries the bound trimmed. Fails at once
    /// while a recent failure makes appends skip Redis.
    pub(super) async fn append(&self, json: &str) -> Result<u64, String> {
        let now = Instant::now();
        {
            let skip = self.skip_until.lock().unwrap_or_else(|p| p.into_inner());
            if skip.is_some_and(|until| now < until) {
                return Err(format!(
                    "{}: skipped for {FAIL_FAST:?} after a failure",
                    self.describe()
                ));
            }
        }
        let r = async {
            let client = self.client().await?;
            // Never hand fred a command while it is reconnecting: it would queue it and send
            // it after the reconnect, when the entry has already gone to the file.
            if !client.is_connected() {
                return Err(format!("{}: not connected", self.describe()));
            }
            let args = vec![self.max_entries.to_string(), json.to_string()];
            self.io(
                "append",
                client.eval::<i64, _, _, _>(APPEND, vec![self.key.clone()], args),
            )
            .await
        }
        .await;
        let mut skip = self.skip_until.lock().unwrap_or_else(|p| p.into_inner());
        match r {
            Ok(dropped) => {
                *skip = None;
                Ok(u64::try_from(dropped).unwrap_or(0))
            }
            Err(e) => {
                *skip = Some(Instant::now() + FAIL_FAST);
                Err(e)
            }
        }
    }

    /// Every entry, oldest first, up to the newest one when the call started (entries
    /// appended meanwhile are left for the next read).
    pub(super) async fn entries(&self) -> Result<Vec<StreamEntry>, String> {
        let client = self.client().await?;
        let newest: Vec<(String, HashMap<String, String>)> = self
            .io(
                "read",
                client.xrevrange_values(self.key.as_str(), "+", "-", Some(1)),
            )
            .await?;
        let Some((end, _)) = newest.into_iter().next() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut start = "-".to_string();
        loop {
            let page: Vec<(String, HashMap<String, String>)> = self
                .io(
                    "read",
                    client.xrange_values(
                        self.key.as_str(),
                        start.as_str(),
                        end.as_str(),
                        Some(PAGE),
                    ),
                )
                .await?;
            let full = page.len() as u64 == PAGE;
            for (id, mut fields) in page {
                start = format!("({id}");
                // An entry without the field is kept as its fields' JSON (it will not parse
                // as an entry, so replay leaves it alone).
                let line = fields
                    .remove("entry")
                    .unwrap_or_else(|| serde_json::to_string(&fields).unwrap_or_default());
                out.push((id, line));
            }
            if !full {
                return Ok(out);
            }
        }
    }

    /// Removes delivered entries.
    pub(super) async fn delete(&self, ids: &[String]) -> Result<(), String> {
        if ids.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        for chunk in ids.chunks(PAGE as usize) {
            self.io(
                "delete",
                client.xdel::<i64, _, _>(self.key.as_str(), chunk.to_vec()),
            )
            .await?;
        }
        Ok(())
    }

    /// Replaces an entry with an updated one (appended anew, then the old one removed: a
    /// failure in between leaves both, never neither).
    pub(super) async fn replace(&self, id: &str, json: &str) -> Result<(), String> {
        let client = self.client().await?;
        let args = vec![self.max_entries.to_string(), json.to_string()];
        let dropped = self
            .io(
                "append",
                client.eval::<i64, _, _, _>(APPEND, vec![self.key.clone()], args),
            )
            .await?;
        if dropped > 0 {
            super::dropped(dropped as u64, &self.describe());
        }
        self.delete(&[id.to_string()]).await
    }
}
