//! The registry of local connections and subscriptions, sharded to avoid one big lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::codec::Codec;
use crate::error::Disconnect;
use crate::idmap::IdMap;
use crate::outbox::{dropped, ClientShared, Control, Frame};
use crate::protocol::{ClientInfo, Publication, Push, PushBody, Reply};
use crate::transport::deflate::{self, CompressionConfig};
use crate::util::{shard_of, SHARDS};

struct Subscriber {
    client: Arc<ClientShared>,
    push_join_leave: bool,
    /// The subscriber tracks the stream position (positioning or recovery on): a gap in
    /// the offsets this node receives makes it resubscribe and recover.
    positioned: bool,
}

/// The local subscribers of a channel and the last stream position this node received.
#[derive(Default)]
struct ChannelSubs {
    subs: IdMap<Subscriber>,
    epoch: String,
    offset: u64,
}

impl ChannelSubs {
    /// Tells positioned subscribers their stream has a gap: they resubscribe and recover.
    fn insufficient(&self, channel: &str) -> usize {
        let mut n = 0;
        for sub in self.subs.values().filter(|s| s.positioned) {
            sub.client.control(Control::InsufficientState {
                channel: channel.to_owned(),
            });
            n += 1;
        }
        n
    }
}

type ChannelShard = HashMap<String, ChannelSubs>;

/// A push encoded lazily, at most once per protocol flavour (`None`: it cannot be encoded
/// in that flavour).
#[derive(Default)]
struct Frames {
    json: Option<Option<Frame>>,
    protobuf: Option<Option<Frame>>,
}

impl Frames {
    fn get(&mut self, codec: Codec, push: &Reply) -> Option<&mut Frame> {
        let slot = match codec {
            Codec::Json => &mut self.json,
            Codec::Protobuf => &mut self.protobuf,
        };
        slot.get_or_insert_with(|| codec.encode_reply(push).ok().map(Frame::from))
            .as_mut()
    }
}
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
        positioned: bool,
    ) -> bool {
        let mut shard = lock(&self.channels[shard_of(channel)]);
        let first = !shard.contains_key(channel);
        let entry = shard.entry(channel.to_owned()).or_default();
        let id = client.id.clone();
        if entry.subs.insert(
            id,
            Subscriber {
                client,
                push_join_leave,
                positioned,
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
        let Some(entry) = shard.get_mut(channel) else {
            return false;
        };
        if entry.subs.remove(client_id) {
            self.num_subs.fetch_sub(1, Ordering::Relaxed);
            metrics::gauge!("hub_subscriptions").decrement(1.0);
        }
        if entry.subs.is_empty() {
            shard.remove(channel);
            return true;
        }
        false
    }

    /// Whether the channel has local subscribers.
    pub(crate) fn has_subscribers(&self, channel: &str) -> bool {
        lock(&self.channels[shard_of(channel)]).contains_key(channel)
    }

    /// Records a stream position read from history when a positioned subscriber joins, so
    /// a publication lost before the node's first live one is still seen as a gap.
    pub(crate) fn note_position(&self, channel: &str, epoch: &str, offset: u64) {
        let mut shard = lock(&self.channels[shard_of(channel)]);
        if let Some(entry) = shard.get_mut(channel) {
            if entry.offset == 0 || (entry.epoch == epoch && entry.offset < offset) {
                entry.epoch = epoch.to_owned();
                entry.offset = offset;
            }
        }
    }

    /// Channels with positioned subscribers and the last position this node received.
    pub(crate) fn positions(&self) -> Vec<(String, String, u64)> {
        self.channels
            .iter()
            .flat_map(|s| {
                lock(s)
                    .iter()
                    .filter(|(_, e)| e.offset > 0 && e.subs.values().any(|s| s.positioned))
                    .map(|(k, e)| (k.clone(), e.epoch.clone(), e.offset))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The last position this node received in a channel.
    pub(crate) fn position(&self, channel: &str) -> Option<(String, u64)> {
        lock(&self.channels[shard_of(channel)])
            .get(channel)
            .map(|e| (e.epoch.clone(), e.offset))
    }

    /// The stream moved past what this node received (a lost publication): positioned
    /// subscribers resubscribe and recover from history, which starts again at `top`.
    pub(crate) fn stream_gap(&self, channel: &str, epoch: &str, offset: u64) -> usize {
        let mut shard = lock(&self.channels[shard_of(channel)]);
        let Some(entry) = shard.get_mut(channel) else {
            return 0;
        };
        entry.epoch = epoch.to_owned();
        entry.offset = offset;
        entry.insufficient(channel)
    }

    /// Delivers a publication to every local subscriber. The push is encoded once and the
    /// bytes are shared. A publication whose offset does not follow the last one this node
    /// received reveals a loss: positioned subscribers are told to resubscribe instead.
    /// Delivers a publication to the channel's local subscribers; returns how many got it.
    pub(crate) fn broadcast_publication(
        &self,
        channel: &str,
        publication: Publication,
        epoch: &str,
    ) -> u64 {
        let offset = publication.offset;
        let push = Reply::push(Push {
            channel: channel.to_owned(),
            body: PushBody::Pub(publication),
        });
        self.broadcast(channel, offset, epoch, &push, false)
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
        self.broadcast(channel, 0, "", &push, true);
    }

    fn broadcast(
        &self,
        channel: &str,
        offset: u64,
        epoch: &str,
        push: &Reply,
        join_leave: bool,
    ) -> u64 {
        let mut shard = lock(&self.channels[shard_of(channel)]);
        let Some(entry) = shard.get_mut(channel) else {
            return 0;
        };
        let mut gap = false;
        if offset > 0 {
            if entry.offset > 0 && entry.epoch == epoch && offset <= entry.offset {
                // Already delivered (a redelivery after a reconnect).
                return 0;
            }
            gap = entry.offset > 0 && (entry.epoch != epoch || offset != entry.offset + 1);
            entry.offset = offset;
            if entry.epoch != epoch {
                entry.epoch = epoch.to_owned();
            }
            if gap {
                let n = entry.insufficient(channel);
                metrics::counter!("hub_stream_gaps_total").increment(1);
                tracing::info!(
                    channel,
                    offset,
                    subscribers = n,
                    "gap in a publication stream"
                );
            }
        }
        let subs = &entry.subs;
        // Encoded at most once per protocol flavour, and compressed at most once per
        // flavour, for every subscriber.
        let mut delivered = 0u64;
        let mut frames = Frames::default();
        let c = &self.compression;
        for sub in subs.values() {
            if (join_leave && !sub.push_join_leave) || (gap && sub.positioned) {
                continue;
            }
            let Some(frame) = frames.get(sub.client.codec, push) else {
                // Binary data cannot reach a JSON client (PROTOCOL.md: close 3506).
                sub.client.close(Disconnect::INAPPROPRIATE_PROTOCOL);
                dropped("unencodable", 1);
                continue;
            };
            if sub.client.deflate && frame.deflated.is_none() && frame.data.len() >= c.min_size {
                frame.deflated = Some(deflate::compress(&frame.data, c.level));
            }
            sub.client.deliver(channel, offset, frame);
            delivered += 1;
        }
        drop(shard);
        metrics::counter!("hub_deliveries_total").increment(delivered);
        delivered
    }

    /// Local channels and their subscriber counts.
    pub(crate) fn channels(&self) -> Vec<(String, usize)> {
        self.channels
            .iter()
            .flat_map(|s| {
                lock(s)
                    .iter()
                    .map(|(k, v)| (k.clone(), v.subs.len()))
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
        Arc::new(ClientShared::new(id.into(), 1 << 20, deflate, Codec::Json))
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
            hub.add_sub("news", s.clone(), false, false);
        }
        let p = Publication {
            data: Bytes::from(format!(r#"{{"text":"{}"}}"#, "hello ".repeat(50))),
            ..Default::default()
        };
        hub.broadcast_publication("news", p, "");
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
        hub.add_sub("news", c.clone(), false, false);
        hub.broadcast_publication(
            "news",
            Publication {
                data: Bytes::from_static(b"{}"),
                ..Default::default()
            },
            "",
        );
        assert!(c.take().0[0].deflated.is_none());
    }

    fn publication(offset: u64) -> Publication {
        Publication {
            data: Bytes::from_static(b"{}"),
            offset,
            ..Default::default()
        }
    }

    #[test]
    fn a_gap_in_offsets_makes_positioned_subscribers_resubscribe() {
        let hub = Hub::new(CompressionConfig::default());
        let positioned = client("p", false);
        let plain = client("q", false);
        hub.add_sub("ch", positioned.clone(), false, true);
        hub.add_sub("ch", plain.clone(), false, false);
        hub.note_position("ch", "e1", 4);
        hub.broadcast_publication("ch", publication(5), "e1");
        // A redelivery is dropped.
        hub.broadcast_publication("ch", publication(5), "e1");
        let (q, _, c) = positioned.take();
        assert_eq!((q.len(), c.len()), (1, 0));
        plain.take();
        // 6 was lost: 7 reveals it.
        hub.broadcast_publication("ch", publication(7), "e1");
        let (q, _, c) = positioned.take();
        assert!(
            q.is_empty(),
            "the positioned subscriber recovers 7 from history"
        );
        assert!(matches!(&c[..], [Control::InsufficientState { channel }] if channel == "ch"));
        let (q, _, c) = plain.take();
        assert_eq!((q.len(), c.len()), (1, 0));
        assert_eq!(hub.position("ch"), Some(("e1".to_owned(), 7)));
        // A new epoch is a gap too.
        hub.broadcast_publication("ch", publication(1), "e2");
        assert_eq!(positioned.take().2.len(), 1);
        assert_eq!(hub.positions(), vec![("ch".into(), "e2".into(), 1)]);
    }

    #[test]
    fn a_publication_is_encoded_once_per_protocol_flavour() {
        let hub = Hub::new(CompressionConfig::default());
        let json = [client("j1", false), client("j2", false)];
        let pb = [
            Arc::new(ClientShared::new(
                "p1".into(),
                1 << 20,
                false,
                Codec::Protobuf,
            )),
            Arc::new(ClientShared::new(
                "p2".into(),
                1 << 20,
                false,
                Codec::Protobuf,
            )),
        ];
        for s in json.iter().chain(pb.iter()) {
            hub.add_sub("ch", s.clone(), false, false);
        }
        hub.broadcast_publication("ch", publication(0), "");
        let first = |c: &Arc<ClientShared>| c.take().0.pop_front().expect("delivered").data;
        let (j1, j2, p1, p2) = (
            first(&json[0]),
            first(&json[1]),
            first(&pb[0]),
            first(&pb[1]),
        );
        assert_eq!(j1.as_ptr(), j2.as_ptr(), "one JSON encoding shared");
        assert_eq!(p1.as_ptr(), p2.as_ptr(), "one Protobuf encoding shared");
        assert!(j1.starts_with(b"{"));
        assert_ne!(p1, j1);
    }

    #[test]
    fn binary_data_closes_json_subscribers_and_reaches_protobuf_ones() {
        let hub = Hub::new(CompressionConfig::default());
        let j = client("j", false);
        let p = Arc::new(ClientShared::new(
            "p".into(),
            1 << 20,
            false,
            Codec::Protobuf,
        ));
        hub.add_sub("ch", j.clone(), false, false);
        hub.add_sub("ch", p.clone(), false, false);
        let binary = Publication {
            data: Bytes::from_static(&[0xff, 0x00, 0x10]),
            ..Default::default()
        };
        hub.broadcast_publication("ch", binary, "");
        let (q, close, _) = j.take();
        assert!(q.is_empty());
        assert_eq!(close, Some(Disconnect::INAPPROPRIATE_PROTOCOL));
        let (q, close, _) = p.take();
        assert_eq!((q.len(), close), (1, None));
    }
}
