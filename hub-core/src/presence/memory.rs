//! In-memory presence with expiry.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::PresenceStore;
use crate::error::EngineError;
use crate::protocol::{ClientInfo, PresenceStatsResult};
use crate::util::{shard_of, SHARDS};

type Entries = HashMap<String, (ClientInfo, Instant)>;

/// In-memory [`PresenceStore`]. Entries not refreshed within the TTL disappear.
pub struct MemoryPresence {
    ttl: Duration,
    shards: Vec<Mutex<HashMap<String, Entries>>>,
}

impl Default for MemoryPresence {
    fn default() -> Self {
        Self::new(Duration::from_secs(60))
    }
}

impl MemoryPresence {
    /// A store whose entries live `ttl` after their last refresh (Centrifugo: 60 s).
    pub fn new(ttl: Duration) -> Self {
        MemoryPresence {
            ttl,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Reads a channel's live entries, dropping expired ones.
    fn with_live<R>(&self, channel: &str, f: impl FnOnce(&Entries) -> R) -> R {
        let mut map = self.shards[shard_of(channel)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let empty = match map.get_mut(channel) {
            Some(entries) => {
                entries.retain(|_, (_, exp)| *exp > now);
                entries.is_empty()
            }
            None => true,
        };
        if empty {
            map.remove(channel);
            return f(&HashMap::new());
        }
        f(&map[channel])
    }
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn add(&self, channel: &str, info: &ClientInfo) -> Result<(), EngineError> {
        let mut map = self.shards[shard_of(channel)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.entry(channel.to_owned()).or_default().insert(
            info.client.clone(),
            (info.clone(), Instant::now() + self.ttl),
        );
        Ok(())
    }

    async fn remove(&self, channel: &str, client_id: &str, _user: &str) -> Result<(), EngineError> {
        let mut map = self.shards[shard_of(channel)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(entries) = map.get_mut(channel) {
            entries.remove(client_id);
            if entries.is_empty() {
                map.remove(channel);
            }
        }
        Ok(())
    }

    async fn presence(&self, channel: &str) -> Result<HashMap<String, ClientInfo>, EngineError> {
        Ok(self.with_live(channel, |e| {
            e.iter()
                .map(|(k, (info, _))| (k.clone(), info.clone()))
                .collect()
        }))
    }

    async fn stats(&self, channel: &str) -> Result<PresenceStatsResult, EngineError> {
        Ok(self.with_live(channel, |e| {
            let users: HashSet<&str> = e.values().map(|(i, _)| i.user.as_str()).collect();
            PresenceStatsResult {
                num_clients: e.len() as u32,
                num_users: users.len() as u32,
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(user: &str, client: &str) -> ClientInfo {
        ClientInfo {
            user: user.into(),
            client: client.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn counts_clients_and_distinct_users() {
        let p = MemoryPresence::default();
        p.add("c", &info("u1", "a")).await.unwrap();
        p.add("c", &info("u1", "b")).await.unwrap();
        p.add("c", &info("u2", "d")).await.unwrap();
        let s = p.stats("c").await.unwrap();
        assert_eq!((s.num_clients, s.num_users), (3, 2));
        p.remove("c", "a", "u1").await.unwrap();
        assert_eq!(p.presence("c").await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn entries_expire_unless_refreshed() {
        let p = MemoryPresence::new(Duration::from_millis(60));
        p.add("c", &info("u1", "a")).await.unwrap();
        p.add("c", &info("u2", "b")).await.unwrap();
        std::thread::sleep(Duration::from_millis(40));
        p.add("c", &info("u2", "b")).await.unwrap();
        std::thread::sleep(Duration::from_millis(40));
        let present = p.presence("c").await.unwrap();
        assert_eq!(present.keys().collect::<Vec<_>>(), vec!["b"]);
    }
}
