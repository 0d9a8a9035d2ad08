//! The dead-letter store: events that a fire-and-forget proxy could not deliver after its
//! last attempt — client `send` messages (`client.proxy.send`) and forwarded publications
//! (`channel.proxy.publication_forward`) — kept until `hub-server deadletters replay` delivers
//! them. Each is an [`Entry`] whose [`Kind`] says which backend call replays it.
//!
//! One [`DeadLetters`] API over two backends:
//! * with `engine.type: redis`, a **Redis stream** `<engine.redis.prefix>.dead_letters` on
//!   the first engine address, one stream entry per event (field `entry`: the entry's JSON),
//!   bounded by `XADD ... MAXLEN ~ dead_letter.max_entries` (approximate: Redis trims whole
//!   stream nodes, so the stream may hold somewhat more);
//! * otherwise a bounded **JSON-lines file** (`dead_letter.path`, one entry a line; past
//!   `max_entries` the oldest lines are dropped).
//!
//! Nothing is dropped silently. When Redis does not take an event (unreachable, timeout), it
//! goes to the file instead, logged as an error and counted by
//! `hub_dead_letters_fallback_total`; `list` and `replay` read the stream, then the file.
//! `hub_dead_letters_total` counts stored entries, `hub_dead_letters_dropped_total` the
//! oldest ones dropped by the bound (logged as a warning).

mod file;
mod redis;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::config::{Config, DeadLetter};
use file::FileStore;
use redis::RedisStream;

/// Which backend call delivers an entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A client `send` message, for `SendMessage` (`client.proxy.send`). Entries written
    /// before kinds existed have no `kind` and are sends.
    #[default]
    Send,
    /// A publication, for `ForwardPublication` (`channel.proxy.publication_forward`).
    Publication,
}

impl Kind {
    /// `send` or `publication`, as written in entries.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Send => "send",
            Kind::Publication => "publication",
        }
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// One undelivered event, as stored (one JSON object).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// Which call delivers it (default `send`).
    #[serde(default)]
    pub kind: Kind,
    /// The channel of a publication ("" for sends).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub channel: String,
    /// The sender's (or publishing client's) user id ("" = anonymous or the server API).
    #[serde(default)]
    pub user: String,
    /// The sender's (or publishing client's) client id ("" = the server API).
    #[serde(default)]
    pub client: String,
    /// The payload when it is JSON on one line (kept as sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
    /// The payload in base64 when it is not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub b64data: String,
    /// A publication's offset in its channel's stream (0 without history).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: u64,
    /// A publication's stream epoch ("" without history).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    /// A publication's tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Attempts made so far.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_error: String,
    /// When the client sent it (or the hub published it), unix milliseconds.
    pub timestamp_ms: i64,
    /// When it was dead-lettered (or last replayed without success), unix milliseconds.
    pub failed_at_ms: i64,
}

impl Entry {
    /// A `send` entry for `data`, stored as JSON when it is one line of JSON, else as base64.
    /// Other kinds start from it (`Entry { kind, channel, .., ..Entry::new(..) }`).
    pub fn new(
        user: String,
        client: String,
        data: &[u8],
        attempts: u32,
        last_error: String,
        timestamp_ms: i64,
    ) -> Self {
        let one_line = !data.contains(&b'\n') && !data.contains(&b'\r');
        let json = one_line
            .then(|| serde_json::from_slice::<Box<RawValue>>(data).ok())
            .flatten();
        let b64data = if json.is_none() && !data.is_empty() {
            base64::engine::general_purpose::STANDARD.encode(data)
        } else {
            String::new()
        };
        Entry {
            kind: Kind::Send,
            channel: String::new(),
            user,
            client,
            data: json,
            b64data,
            offset: 0,
            epoch: String::new(),
            tags: BTreeMap::new(),
            attempts,
            last_error,
            timestamp_ms,
            failed_at_ms: now_ms(),
        }
    }

    /// The payload bytes; `None` when the base64 is invalid.
    pub fn payload(&self) -> Option<Bytes> {
        if let Some(d) = &self.data {
            return Some(Bytes::copy_from_slice(d.get().as_bytes()));
        }
        base64::engine::general_purpose::STANDARD
            .decode(&self.b64data)
            .ok()
            .map(Bytes::from)
    }
}

/// Now in unix milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Counts and logs entries the bound dropped from `store`.
fn dropped(n: u64, store: &str) {
    metrics::counter!("hub_dead_letters_dropped_total").increment(n);
    tracing::warn!(
        store,
        dropped = n,
        "dead-letter store full: oldest entries dropped"
    );
}

/// Where an appended entry went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// The Redis stream.
    Redis,
    /// The file (no Redis configured).
    File,
    /// The file, because Redis did not take it (logged, `hub_dead_letters_fallback_total`).
    FileFallback,
}

/// What replaying one entry did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The backend took it: the entry is removed.
    Delivered,
    /// The backend failed (why): the entry is kept with `attempts` counted up.
    Failed(String),
    /// Not tried (no backend for its kind, unreadable payload): the entry is kept as it is.
    NotTried,
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Entries read.
    pub read: usize,
    /// Entries delivered and removed.
    pub delivered: usize,
    /// Entries kept (failed, not tried, or not readable).
    pub kept: usize,
}

/// What to do with one stored entry after trying it.
enum Outcome {
    Delivered,
    Unchanged,
    Updated(String),
}

/// Tries one stored line.
async fn replay_line<F, Fut>(line: &str, deliver: &mut F) -> Result<Outcome, String>
where
    F: FnMut(Entry) -> Fut,
    Fut: Future<Output = Attempt>,
{
    let Ok(mut e) = serde_json::from_str::<Entry>(line) else {
        return Ok(Outcome::Unchanged);
    };
    match deliver(e.clone()).await {
        Attempt::Delivered => Ok(Outcome::Delivered),
        Attempt::NotTried => Ok(Outcome::Unchanged),
        Attempt::Failed(why) => {
            e.attempts = e.attempts.saturating_add(1);
            e.last_error = why;
            e.failed_at_ms = now_ms();
            Ok(Outcome::Updated(
                serde_json::to_string(&e).map_err(|e| e.to_string())?,
            ))
        }
    }
}

/// The dead-letter store: a Redis stream with the file as its fallback, or the file alone.
#[derive(Debug)]
pub struct DeadLetters {
    file: Arc<FileStore>,
    stream: Option<RedisStream>,
}

impl DeadLetters {
    /// The store the config asks for: the Redis stream when `engine.type` is `redis` (on the
    /// first engine address; connected on first use), else the file. Nothing is touched yet.
    pub fn new(config: &Config) -> Result<Self, String> {
        let mut store = DeadLetters::file(&config.dead_letter);
        if config.engine.kind == "redis" {
            let r = &config.engine.redis;
            let urls = r.shard_urls()?;
            let url = urls.first().ok_or("engine.redis.address: no address")?;
            store.stream = Some(RedisStream::new(
                url,
                format!("{}.dead_letters", r.prefix),
                config.dead_letter.max_entries,
                r.io_timeout,
                r.connect_timeout,
            )?);
        }
        Ok(store)
    }

    /// The file store alone.
    pub fn file(config: &DeadLetter) -> Self {
        DeadLetters {
            file: Arc::new(FileStore::new(&config.path, config.max_entries)),
            stream: None,
        }
    }

    /// Where entries go, for messages: the stream (and its fallback file), or the file.
    pub fn describe(&self) -> String {
        match &self.stream {
            Some(s) => format!(
                "{} (fallback file {})",
                s.describe(),
                self.file.path().display()
            ),
            None => self.file.path().display().to_string(),
        }
    }

    /// The Redis stream's key, when the store is a stream.
    pub fn stream_key(&self) -> Option<&str> {
        self.stream.as_ref().map(|s| s.key())
    }

    /// Stores an entry: in the stream, or in the file when there is none or it fails.
    /// Errs only when the file fails too.
    pub async fn append(&self, e: &Entry) -> Result<Stored, String> {
        let line = serde_json::to_string(e).map_err(|e| e.to_string())?;
        let mut stored = Stored::File;
        if let Some(stream) = &self.stream {
            match stream.append(&line).await {
                Ok(dropped_n) => {
                    if dropped_n > 0 {
                        dropped(dropped_n, &stream.describe());
                    }
                    metrics::counter!("hub_dead_letters_total").increment(1);
                    return Ok(Stored::Redis);
                }
                Err(redis_error) => {
                    tracing::error!(%redis_error, file = %self.file.path().display(),
                        "dead-letter stream unavailable: entry written to the fallback file");
                    metrics::counter!("hub_dead_letters_fallback_total").increment(1);
                    stored = Stored::FileFallback;
                }
            }
        }
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || file.append(&line))
            .await
            .map_err(|e| format!("dead-letter file task failed: {e}"))??;
        metrics::counter!("hub_dead_letters_total").increment(1);
        Ok(stored)
    }

    async fn file_lines(&self) -> Result<Vec<String>, String> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || file.lines())
            .await
            .map_err(|e| format!("dead-letter file task failed: {e}"))?
    }

    /// Every stored entry as a JSON line: the stream's, then the file's.
    pub async fn list(&self) -> Result<Vec<String>, String> {
        let mut lines = Vec::new();
        if let Some(stream) = &self.stream {
            lines.extend(stream.entries().await?.into_iter().map(|(_, l)| l));
        }
        lines.extend(self.file_lines().await?);
        Ok(lines)
    }

    /// Hands every stored entry (the stream's, then the file's) to `deliver` once, one at a
    /// time: delivered entries are removed; failed ones are kept with `attempts` counted up
    /// and `last_error` set (in the stream they move to its end); entries that do not parse,
    /// or that `deliver` did not try, are kept as they are. Entries stored meanwhile are
    /// kept and not tried.
    pub async fn replay<F, Fut>(&self, mut deliver: F) -> Result<Replayed, String>
    where
        F: FnMut(Entry) -> Fut,
        Fut: Future<Output = Attempt>,
    {
        let mut r = Replayed::default();
        if let Some(stream) = &self.stream {
            let entries = stream.entries().await?;
            r.read += entries.len();
            for (id, line) in &entries {
                match replay_line(line, &mut deliver).await? {
                    // Removed at once, so an interrupted replay does not deliver it again.
                    Outcome::Delivered => {
                        stream.delete(std::slice::from_ref(id)).await?;
                        r.delivered += 1;
                    }
                    Outcome::Unchanged => r.kept += 1,
                    Outcome::Updated(new) => {
                        stream.replace(id, &new).await?;
                        r.kept += 1;
                    }
                }
            }
        }
        let lines = self.file_lines().await?;
        r.read += lines.len();
        let mut keep = Vec::new();
        for line in &lines {
            match replay_line(line, &mut deliver).await? {
                Outcome::Delivered => r.delivered += 1,
                Outcome::Unchanged => keep.push(line.clone()),
                Outcome::Updated(new) => keep.push(new),
            }
        }
        r.kept += keep.len();
        let file = self.file.clone();
        let read = lines.len();
        tokio::task::spawn_blocking(move || file.finish_replay(read, &keep))
            .await
            .map_err(|e| format!("dead-letter file task failed: {e}"))??;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_as_json_or_base64() {
        let e = Entry::new(
            "u".into(),
            "c".into(),
            br#"{"b":1,"a":2}"#,
            1,
            "x".into(),
            5,
        );
        assert_eq!(e.payload().unwrap(), &br#"{"b":1,"a":2}"#[..]);
        assert!(e.b64data.is_empty());
        for raw in [&b"\xff\x00binary"[..], b"{\n\"a\":1}", b"not json"] {
            let e = Entry::new("u".into(), "c".into(), raw, 1, "x".into(), 5);
            assert!(e.data.is_none());
            let line = serde_json::to_string(&e).unwrap();
            assert!(!line.contains('\n'));
            let back: Entry = serde_json::from_str(&line).unwrap();
            assert_eq!(back.payload().unwrap(), raw);
        }
    }

    #[test]
    fn entries_without_a_kind_are_sends_and_publications_keep_their_channel() {
        let old = r#"{"user":"dan","client":"c1","data":{"k":1},"attempts":5,"last_error":"x","timestamp_ms":1,"failed_at_ms":2}"#;
        let e: Entry = serde_json::from_str(old).unwrap();
        assert_eq!(e.kind, Kind::Send);
        let p = Entry {
            kind: Kind::Publication,
            channel: "news".into(),
            offset: 7,
            epoch: "ep".into(),
            ..Entry::new(String::new(), String::new(), b"{}", 2, "x".into(), 3)
        };
        let line = serde_json::to_string(&p).unwrap();
        assert!(
            line.starts_with(r#"{"kind":"publication","channel":"news""#),
            "{line}"
        );
        let back: Entry = serde_json::from_str(&line).unwrap();
        assert_eq!(
            (
                back.kind,
                back.channel.as_str(),
                back.offset,
                back.epoch.as_str()
            ),
            (Kind::Publication, "news", 7, "ep")
        );
    }

    #[tokio::test]
    async fn replay_removes_the_delivered_and_counts_attempts_on_the_kept() {
        let dir = std::env::temp_dir().join(format!("hub-dl-replay-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = DeadLetters::file(&DeadLetter {
            path: dir.join("dl.jsonl").to_string_lossy().into_owned(),
            max_entries: 10,
        });
        for user in ["ok", "fails", "skipped"] {
            let e = Entry::new(user.into(), "c".into(), b"{}", 1, "x".into(), 1);
            assert_eq!(store.append(&e).await.unwrap(), Stored::File);
        }
        let r = store
            .replay(|e| async move {
                match e.user.as_str() {
                    "ok" => Attempt::Delivered,
                    "fails" => Attempt::Failed("still down".into()),
                    _ => Attempt::NotTried,
                }
            })
            .await
            .unwrap();
        assert_eq!(
            r,
            Replayed {
                read: 3,
                delivered: 1,
                kept: 2
            }
        );
        let left: Vec<Entry> = store
            .list()
            .await
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(left.len(), 2);
        assert_eq!((left[0].user.as_str(), left[0].attempts), ("fails", 2));
        assert_eq!(left[0].last_error, "still down");
        assert_eq!((left[1].user.as_str(), left[1].attempts), ("skipped", 1));
        let _ = std::fs::remove_dir_all(dir);
    }
}
