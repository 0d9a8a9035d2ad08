//! The in-memory broker: one node, history kept in process memory.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Broker, BrokerEventHandler, HistoryFilter, HistoryOptions, PublishOptions};
use crate::error::EngineError;
use crate::protocol::{ClientInfo, Publication, StreamPosition};
use crate::util::{new_epoch, shard_of, SHARDS};

#[derive(Debug)]
struct Stream {
    epoch: String,
    top: u64,
    items: VecDeque<Publication>,
    /// Items are dropped after this instant (history TTL).
    items_expire: Instant,
    /// The whole stream (epoch and top) is dropped after this instant (meta TTL).
    meta_expire: Instant,
}

impl Stream {
    fn new(now: Instant, meta_ttl: Duration) -> Self {
        Stream {
            epoch: new_epoch(),
            top: 0,
            items: VecDeque::new(),
            items_expire: now,
            meta_expire: now + meta_ttl,
        }
    }

    fn position(&self) -> StreamPosition {
        StreamPosition {
            offset: self.top,
            epoch: self.epoch.clone(),
        }
    }
}

type Shard = Mutex<HashMap<String, Stream>>;

/// In-memory [`Broker`]: history with size, TTL and meta TTL, epochs that change when a
/// stream restarts. Publishes are serialised per channel (a shard lock), which makes append
/// and delivery atomic per channel.
pub struct MemoryBroker {
    shards: Arc<Vec<Shard>>,
    handler: OnceLock<Arc<dyn BrokerEventHandler>>,
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBroker {
    /// A new, empty broker.
    pub fn new() -> Self {
        MemoryBroker {
            shards: Arc::new((0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect()),
            handler: OnceLock::new(),
        }
    }

    fn shard(&self, channel: &str) -> std::sync::MutexGuard<'_, HashMap<String, Stream>> {
        self.shards[shard_of(channel)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Drops streams whose meta TTL has passed and items whose TTL has passed.
    fn sweep(shards: &[Shard], now: Instant) {
        for shard in shards {
            let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, s| s.meta_expire > now);
            for s in map.values_mut() {
                if s.items_expire <= now {
                    s.items.clear();
                }
            }
        }
    }
}

/// Gets the live stream of a channel, replacing one whose meta has expired.
fn live_stream<'a>(
    map: &'a mut HashMap<String, Stream>,
    channel: &str,
    now: Instant,
    meta_ttl: Duration,
) -> &'a mut Stream {
    if map.get(channel).is_some_and(|s| s.meta_expire <= now) {
        map.remove(channel);
    }
    let s = map
        .entry(channel.to_owned())
        .or_insert_with(|| Stream::new(now, meta_ttl));
    if s.items_expire <= now {
        s.items.clear();
    }
    s
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn run(&self, handler: Arc<dyn BrokerEventHandler>) -> Result<(), EngineError> {
        self.handler
            .set(handler)
            .map_err(|_| EngineError::new("memory broker already running"))?;
        // A sweeper frees expired streams; it stops when the broker is dropped.
        let weak: Weak<Vec<Shard>> = Arc::downgrade(&self.shards);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                let Some(shards) = weak.upgrade() else { break };
                MemoryBroker::sweep(&shards, Instant::now());
            }
        });
        Ok(())
    }

    async fn subscribe(&self, _channel: &str) -> Result<(), EngineError> {
        Ok(())
    }

    async fn unsubscribe(&self, _channel: &str) -> Result<(), EngineError> {
        Ok(())
    }

    async fn publish(
        &self,
        channel: &str,
        mut publication: Publication,
        options: &PublishOptions,
    ) -> Result<StreamPosition, EngineError> {
        let handler = self.handler.get().cloned();
        let history = options.history.filter(HistoryOptions::enabled);
        let mut map = self.shard(channel);
        let position = match history {
            Some(h) => {
                let now = Instant::now();
                let s = live_stream(&mut map, channel, now, h.meta_ttl);
                s.top += 1;
                publication.offset = s.top;
                s.items.push_back(publication.clone());
                while s.items.len() > h.size {
                    s.items.pop_front();
                }
                s.items_expire = now + h.ttl;
                s.meta_expire = now + h.meta_ttl.max(h.ttl);
                s.position()
            }
            None => StreamPosition::default(),
        };
        // Delivered under the shard lock: publications of a channel reach the node in
        // offset order.
        if let Some(h) = handler {
            match options.trace.as_deref() {
                Some(t) => h.handle_traced_publication(channel, publication, position.clone(), t),
                None => h.handle_publication(channel, publication, position.clone()),
            }
        }
        Ok(position)
    }

    async fn publish_join(&self, channel: &str, info: ClientInfo) -> Result<(), EngineError> {
        if let Some(h) = self.handler.get() {
            h.handle_join(channel, info);
        }
        Ok(())
    }

    async fn publish_leave(&self, channel: &str, info: ClientInfo) -> Result<(), EngineError> {
        if let Some(h) = self.handler.get() {
            h.handle_leave(channel, info);
        }
        Ok(())
    }

    async fn history(
        &self,
        channel: &str,
        filter: &HistoryFilter,
    ) -> Result<(Vec<Publication>, StreamPosition), EngineError> {
        let now = Instant::now();
        let mut map = self.shard(channel);
        let s = live_stream(&mut map, channel, now, HistoryOptions::DEFAULT_META_TTL);
        let position = s.position();
        if filter.limit == 0 {
            return Ok((Vec::new(), position));
        }
        let limit = if filter.limit < 0 {
            usize::MAX
        } else {
            filter.limit as usize
        };
        let pubs: Vec<Publication> = if filter.reverse {
            let before = filter.since.unwrap_or(u64::MAX);
            s.items
                .iter()
                .rev()
                .filter(|p| p.offset < before)
                .take(limit)
                .cloned()
                .collect()
        } else {
            let after = filter.since.unwrap_or(0);
            s.items
                .iter()
                .filter(|p| p.offset > after)
                .take(limit)
                .cloned()
                .collect()
        };
        Ok((pubs, position))
    }

    async fn remove_history(&self, channel: &str) -> Result<(), EngineError> {
        self.shard(channel).remove(channel);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn opts(size: usize) -> PublishOptions {
        PublishOptions {
            history: Some(HistoryOptions {
                size,
                ttl: Duration::from_secs(60),
                meta_ttl: Duration::from_secs(3600),
            }),
            ..Default::default()
        }
    }

    fn publication(n: u32) -> Publication {
        Publication {
            data: Bytes::from(format!("{n}")),
            ..Default::default()
        }
    }

    fn filter(since: Option<u64>, limit: i32, reverse: bool) -> HistoryFilter {
        HistoryFilter {
            since,
            limit,
            reverse,
        }
    }

    #[tokio::test]
    async fn offsets_increase_and_history_is_capped_by_size() {
        let b = MemoryBroker::new();
        let mut epoch = String::new();
        for i in 1..=5 {
            let sp = b.publish("c", publication(i), &opts(3)).await.unwrap();
            assert_eq!(sp.offset, i as u64);
            if epoch.is_empty() {
                epoch = sp.epoch.clone();
            }
            assert_eq!(sp.epoch, epoch);
        }
        let (pubs, top) = b.history("c", &filter(None, -1, false)).await.unwrap();
        assert_eq!(
            pubs.iter().map(|p| p.offset).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(top.offset, 5);
    }

    #[tokio::test]
    async fn since_limit_and_reverse_select_the_right_publications() {
        let b = MemoryBroker::new();
        for i in 1..=6 {
            b.publish("c", publication(i), &opts(10)).await.unwrap();
        }
        let offs = |v: Vec<Publication>| v.iter().map(|p| p.offset).collect::<Vec<_>>();
        let (p, _) = b.history("c", &filter(Some(3), -1, false)).await.unwrap();
        assert_eq!(offs(p), vec![4, 5, 6]);
        let (p, _) = b.history("c", &filter(Some(3), 2, false)).await.unwrap();
        assert_eq!(offs(p), vec![4, 5]);
        let (p, _) = b.history("c", &filter(None, 2, true)).await.unwrap();
        assert_eq!(offs(p), vec![6, 5]);
        let (p, _) = b.history("c", &filter(Some(3), -1, true)).await.unwrap();
        assert_eq!(offs(p), vec![2, 1]);
        let (p, top) = b.history("c", &filter(None, 0, false)).await.unwrap();
        assert!(p.is_empty());
        assert_eq!(top.offset, 6);
    }

    #[tokio::test]
    async fn removing_history_starts_a_new_epoch() {
        let b = MemoryBroker::new();
        let first = b.publish("c", publication(1), &opts(10)).await.unwrap();
        b.remove_history("c").await.unwrap();
        let second = b.publish("c", publication(2), &opts(10)).await.unwrap();
        assert_ne!(first.epoch, second.epoch);
        assert_eq!(second.offset, 1);
    }

    #[tokio::test]
    async fn items_expire_after_ttl_but_offsets_survive_until_meta_ttl() {
        let b = MemoryBroker::new();
        let o = PublishOptions {
            history: Some(HistoryOptions {
                size: 10,
                ttl: Duration::from_millis(50),
                meta_ttl: Duration::from_millis(200),
            }),
            ..Default::default()
        };
        let sp = b.publish("c", publication(1), &o).await.unwrap();
        std::thread::sleep(Duration::from_millis(80));
        let (p, top) = b.history("c", &filter(None, -1, false)).await.unwrap();
        assert!(p.is_empty(), "items outlived their ttl");
        assert_eq!(top, sp, "meta must survive the item ttl");
        std::thread::sleep(Duration::from_millis(150));
        let (_, top) = b.history("c", &filter(None, 0, false)).await.unwrap();
        assert_ne!(top.epoch, sp.epoch, "meta outlived its ttl");
        assert_eq!(top.offset, 0);
    }

    #[tokio::test]
    async fn publish_without_history_has_no_offset() {
        let b = MemoryBroker::new();
        let sp = b
            .publish("c", publication(1), &PublishOptions::default())
            .await
            .unwrap();
        assert_eq!(sp, StreamPosition::default());
    }
}
