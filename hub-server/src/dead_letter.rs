//! The dead-letter store: client `send` events that `client.proxy.send` could not deliver
//! after its last attempt, kept in a bounded local JSON-lines file (`dead_letter.path`, one
//! [`Entry`] a line) until `hub-server deadletters replay` delivers them.
//!
//! The file holds at most `dead_letter.max_entries` entries: past it the oldest are dropped,
//! counted by `hub_dead_letters_dropped_total` and logged as a warning. Every stored entry
//! counts in `hub_dead_letters_total`. A Redis stream (when Redis is configured) is not
//! implemented: the hub has no Redis engine yet.
//!
//! Writers in one process are serialised by a lock; the file is rewritten through a temporary
//! file and a rename, so a reader never sees half of a rewrite. A replay in another process
//! keeps what the server appended meanwhile (see [`DeadLetters::finish_replay`]).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::config::DeadLetter;

/// One undelivered event, as a line of the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// The sender's user id ("" = anonymous).
    pub user: String,
    /// The sender's client id.
    pub client: String,
    /// The payload when it is JSON on one line (kept as sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
    /// The payload in base64 when it is not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub b64data: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_error: String,
    /// When the client sent it, unix milliseconds.
    pub timestamp_ms: i64,
    /// When it was dead-lettered (or last replayed without success), unix milliseconds.
    pub failed_at_ms: i64,
}

impl Entry {
    /// An entry for `data`, stored as JSON when it is one line of JSON, else as base64.
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
            user,
            client,
            data: json,
            b64data,
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

/// The bounded dead-letter file.
#[derive(Debug)]
pub struct DeadLetters {
    path: PathBuf,
    max_entries: usize,
    /// Serialises writers; holds the number of lines when known.
    count: Mutex<Option<usize>>,
}

impl DeadLetters {
    /// The store `dead_letter` configures (nothing is touched until the first write).
    pub fn new(config: &DeadLetter) -> Self {
        DeadLetters {
            path: PathBuf::from(&config.path),
            max_entries: config.max_entries.max(1),
            count: Mutex::new(None),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's non-empty lines (none when it does not exist).
    pub fn lines(&self) -> Result<Vec<String>, String> {
        read_lines(&self.path)
    }

    /// Appends an entry, dropping the oldest first when the store is full. Blocking file I/O.
    pub fn append(&self, e: &Entry) -> Result<(), String> {
        let line = serde_json::to_string(e).map_err(|e| e.to_string())?;
        let mut count = self.count.lock().unwrap_or_else(|p| p.into_inner());
        let n = match *count {
            Some(n) => n,
            None => self.lines()?.len(),
        };
        let n = if n >= self.max_entries {
            let mut lines = self.lines()?;
            let drop = lines.len().saturating_sub(self.max_entries - 1);
            if drop > 0 {
                lines.drain(..drop);
                write_lines(&self.path, &lines)?;
                metrics::counter!("hub_dead_letters_dropped_total").increment(drop as u64);
                tracing::warn!(
                    path = %self.path.display(),
                    dropped = drop,
                    max_entries = self.max_entries,
                    "dead-letter store full: oldest entries dropped"
                );
            }
            lines.len()
        } else {
            n
        };
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| format!("cannot open {}: {e}", self.path.display()))?;
        f.write_all(format!("{line}\n").as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))?;
        *count = Some(n + 1);
        metrics::counter!("hub_dead_letters_total").increment(1);
        Ok(())
    }

    /// Ends a replay that read the first `read` lines: the file becomes `keep` followed by
    /// whatever was appended after those lines in the meantime.
    pub fn finish_replay(&self, read: usize, keep: &[String]) -> Result<(), String> {
        let mut count = self.count.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.lines()?;
        let mut lines = keep.to_vec();
        lines.extend(now.into_iter().skip(read));
        write_lines(&self.path, &lines)?;
        *count = Some(lines.len());
        Ok(())
    }
}

fn read_lines(path: &Path) -> Result<Vec<String>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(String::from)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Replaces the file's content through a temporary file and a rename.
fn write_lines(path: &Path, lines: &[String]) -> Result<(), String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut text = String::new();
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(&tmp, text).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path, max_entries: usize) -> DeadLetters {
        DeadLetters::new(&DeadLetter {
            path: dir.join("dl.jsonl").to_string_lossy().into_owned(),
            max_entries,
        })
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hub-dl-{name}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

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
    fn a_full_store_drops_the_oldest_first() {
        let dir = tmpdir("full");
        let s = store(&dir, 3);
        for i in 0..5 {
            let e = Entry::new(format!("u{i}"), "c".into(), b"{}", 1, "x".into(), i);
            s.append(&e).unwrap();
        }
        let users: Vec<String> = s
            .lines()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str::<Entry>(l).unwrap().user)
            .collect();
        assert_eq!(users, ["u2", "u3", "u4"]);
        s.finish_replay(2, &[]).unwrap();
        assert_eq!(s.lines().unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }
}
