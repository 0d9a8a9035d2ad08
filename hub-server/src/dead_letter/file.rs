//! The file backend: a bounded JSON-lines file, one [`Entry`](super::Entry) a line.
//!
//! Writers in one process are serialised by a lock; the file is rewritten through a temporary
//! file and a rename, so a reader never sees half of a rewrite. A replay in another process
//! keeps what the server appended meanwhile (see [`FileStore::finish_replay`]). Blocking I/O:
//! [`super::DeadLetters`] calls it off the async workers.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The bounded dead-letter file.
#[derive(Debug)]
pub(super) struct FileStore {
    path: PathBuf,
    max_entries: usize,
    /// Serialises writers; holds the number of lines when known.
    count: Mutex<Option<usize>>,
}

impl FileStore {
    /// The store at `path` (nothing is touched until the first write).
    pub(super) fn new(path: &str, max_entries: usize) -> Self {
        FileStore {
            path: PathBuf::from(path),
            max_entries: max_entries.max(1),
            count: Mutex::new(None),
        }
    }

    /// The file.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The file's non-empty lines (none when it does not exist).
    pub(super) fn lines(&self) -> Result<Vec<String>, String> {
        read_lines(&self.path)
    }

    /// Appends a line, dropping the oldest first when the store is full (counted by
    /// `hub_dead_letters_dropped_total` and logged).
    pub(super) fn append(&self, line: &str) -> Result<(), String> {
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
                super::dropped(drop as u64, &self.path.display().to_string());
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
        Ok(())
    }

    /// Ends a replay that read the first `read` lines: the file becomes `keep` followed by
    /// whatever was appended after those lines in the meantime.
    pub(super) fn finish_replay(&self, read: usize, keep: &[String]) -> Result<(), String> {
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

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hub-dl-{name}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_full_file_drops_the_oldest_first() {
        let dir = tmpdir("full");
        let s = FileStore::new(&dir.join("dl.jsonl").to_string_lossy(), 3);
        for i in 0..5 {
            s.append(&format!("{{\"n\":{i}}}")).unwrap();
        }
        assert_eq!(
            s.lines().unwrap(),
            [r#"{"n":2}"#, r#"{"n":3}"#, r#"{"n":4}"#]
        );
        s.finish_replay(2, &[]).unwrap();
        assert_eq!(s.lines().unwrap(), [r#"{"n":4}"#]);
        let _ = std::fs::remove_dir_all(dir);
    }
}
