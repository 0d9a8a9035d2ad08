//! The registry of local connections and subscriptions, sharded to avoid one big lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::Disconnect;
use crate::idmap::IdMap;
use crate::outbox::{ClientShared, Frame};
use crate::protocol::json::encode_reply;
use crate::protocol::{ClientInfo, Publication, Push, PushBody, Reply};
use crate::transport::deflate::{self, CompressionConfig};
use crate::util::{shard_of, SHARDS};

struct Subscriber {
    client: Arc<ClientShared>,
    push_join_leave: bool,
}

type ChannelShard = HashMap<String, IdMap<Subscriber>>;
type UserShard = HashMap<String, IdMap<Arc<ClientShared>>>;

pub(crate) struct Hub {
    channels: Vec<Mutex<ChannelShard>>,
    users: Vec<Mutex<UserShard>>,
    num_clients: AtomicUsize,
    num_subs: AtomicUsize,
    compression: CompressionConfig,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    pub(crate) fn new(compression: CompressionConfig) -> Self {
        Hub {
            compression,
            channels: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            users: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            num_clients: AtomicUsize::new(0),
            num_subs: AtomicUsize::new(0),
        }
    }

    pub(crate) fn add_client(&self, user: &str, client: Arc<ClientShared>) {
        lock(&self.users[shard_of(user)])
            .entry(user.to_owned())
            .or_default()
            .insert(client.id.clone(), client);
        self.num_clients.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("hub_connections").increment(1.0);
    }

    pub(crate) fn remove_client(&self, user: &str, client_id: &str) {
        let mut shard = lock(&self.users[shard_of(user)]);
        if let Some(clients) = shard.get_mut(user) {
            if clients.remove(client_id) {
                self.num_clients.fetch_sub(1, Ordering::Relaxed);
                metrics::gauge!("hub_connections").decrement(1.0);
            }
            if clients.is_empty() {
                shard.remove(user);
            }
        }
    }

    /// How many connections a user has on this node.
    pub(crate) fn user_connection_count(&self, user: &str) -> usize {
        lock(&self.users[shard_of(user)])
            .get(user)
            .map_or(0, IdMap::len)
    }

    /// The connections of a user on this node.
    pub(crate) fn user_clients(&self, user: &str) -> Vec<Arc<ClientShared>> {
        lock(&self.users[shard_of(user)])
            .get(user)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every connection on this node.
    pub(crate) fn all_clients(&self) -> Vec<Arc<ClientShared>> {
        self.users
            .iter()
            .flat_map(|s| {
                lock(s)
                    .values()
                    .flat_map(|m| m.values().cloned())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Adds a subscriber; true if it is the channel's first on this node.
    pub(crate) fn add_sub(
        &self,
        channel: &str,
        client: Arc<ClientShared>,
        push_join_leave: bool,
    ) -> bool {
        let mut shard = lock(&self.channels[shard_of(channel)]);
        let first = !shard.contains_key(channel);
        let subs = shard.entry(channel.to_owned()).or_default();
        let id = client.id.clone();
        if subs.insert(
            id,
            Subscriber {
                client,
                push_join_leave,
            },
        ) {
            self.num_subs.fetch_add(1, Ordering::Relaxed);
            metrics::gauge!("hub_subscriptions").increment(1.0);
        }
        first
    }

    /// Removes a subscriber; true if the channel has no more subscribers on this node.
    pub(crate) fn remove_sub(&self, channel: &str, client_id: &str) -> bool {
        let mut shard = lock(&self.channels[shard_of(channel)]);
        let Some(subs) = shard.get_mut(channel) else {
            return false;
        };
        if subs.remove(client_id) {
            self.num_subs.fetch_sub(1, Ordering::Relaxed);
            metrics::gauge!("hub_subscriptions").decrement(1.0);
        }
        if subs.is_empty() {
            shard.remove(channel);
            return true;
        }
        false
    }

    /// Delivers a publication to every local subscriber. The push is encoded once and the
    /// bytes are shared.
    pub(crate) fn broadcast_publication(&self, channel: &str, publication: Publication) {
        let offset = publication.offset;
        let push = Reply::push(Push {
            channel: channel.to_owned(),
            body: PushBody::Pub(publication),
        });
        self.broadcast(channel, offset, &push, false);
    }

    /// Delivers a join or leave push to the subscribers that asked for them.
    pub(crate) fn broadcast_join_leave(&self, channel: &str, info: ClientInfo, join: bool) {
        let body = if join {
            PushBody::Join { info }
        } else {
            PushBody::Leave { info }
        };
        let push = Reply::push(Push {
            channel: channel.to_owned(),
            body,
        });
        self.broadcast(channel, 0, &push, true);
    }

    fn broadcast(&self, channel: &str, offset: u64, push: &Reply, join_leave: bool) {
        let shard = lock(&self.channels[shard_of(channel)]);
        let Some(subs) = shard.get(channel) else {
            return;
        };
        // Encoded once, and compressed at most once, for every subscriber.
        let mut delivered = 0u64;
        match encode_reply(push) {
            Ok(data) => {
                let mut frame = Frame::from(data);
                let c = &self.compression;
                for sub in subs.values() {
                    if join_leave && !sub.push_join_leave {
                        continue;
                    }
                    if sub.client.deflate
                        && frame.deflated.is_none()
                        && frame.data.len() >= c.min_size
                    {
                        frame.deflated = Some(deflate::compress(&frame.data, c.level));
                    }
                    sub.client.deliver(channel, offset, &frame);
                    delivered += 1;
                }
            }
            // Binary data cannot reach a JSON client.
            Err(_) => {
                for sub in subs.values() {
                    sub.client.close(Disconnect::INAPPROPRIATE_PROTOCOL);
                }
            }
        }
        drop(shard);
        metrics::counter!("hub_deliveries_total").increment(delivered);
    }

    /// Local channels and their subscriber counts.
    pub(crate) fn channels(&self) -> Vec<(String, usize)> {
        self.channels
            .iter()
            .flat_map(|s| {
                lock(s)
                    .iter()
                    .map(|(k, v)| (k.clone(), v.len()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    pub(crate) fn num_clients(&self) -> usize {
        self.num_clients.load(Ordering::Relaxed)
    }

    pub(crate) fn num_subs(&self) -> usize {
        self.num_subs.load(Ordering::Relaxed)
    }

    pub(crate) fn num_users(&self) -> usize {
        self.users.iter().map(|s| lock(s).len()).sum()
    }

    pub(crate) fn num_channels(&self) -> usize {
        self.channels.iter().map(|s| lock(s).len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn client(id: &str, deflate: bool) -> Arc<ClientShared> {
        Arc::new(ClientShared::new(id.into(), 1 << 20, deflate))
    }

    #[test]
    fn a_publication_is_encoded_and_compressed_once_for_all_subscribers() {
        let hub = Hub::new(CompressionConfig {
            enabled: true,
            min_size: 16,
            level: 1,
        });
        let subs = [
            client("a", true),
            client("b", false),
            client("c", true),
            client("d", true),
        ];
        for s in &subs {
            hub.add_sub("news", s.clone(), false);
        }
        let p = Publication {
            data: Bytes::from(format!(r#"{{"text":"{}"}}"#, "hello ".repeat(50))),
            ..Default::default()
        };
        hub.broadcast_publication("news", p);
        let frames: Vec<Frame> = subs
            .iter()
            .map(|s| s.take().0.pop_front().expect("delivered"))
            .collect();
        // One encoding shared by all.
        let data_ptr = frames[0].data.as_ptr();
        assert!(frames.iter().all(|f| f.data.as_ptr() == data_ptr));
        // One compression shared by the deflate subscribers.
        let z: Vec<*const u8> = [0, 2, 3]
            .iter()
            .map(|&i| frames[i].deflated.as_ref().expect("compressed").as_ptr())
            .collect();
        assert!(z.iter().all(|p| *p == z[0]), "compressed once, shared");
        let inflated = deflate::decompress(frames[2].deflated.as_ref().unwrap(), 1 << 20).unwrap();
        assert_eq!(inflated, frames[2].data.to_vec());
    }

    #[test]
    fn small_publications_are_not_compressed() {
        let hub = Hub::new(CompressionConfig {
            enabled: true,
            min_size: 1000,
            level: 1,
        });
        let c = client("a", true);
        hub.add_sub("news", c.clone(), false);
        hub.broadcast_publication(
            "news",
            Publication {
                data: Bytes::from_static(b"{}"),
                ..Default::default()
            },
        );
        assert!(c.take().0[0].deflated.is_none());
    }
}
