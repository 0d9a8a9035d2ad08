//! The Redis engine: a [`Broker`] and [`PresenceStore`] shared by any number of nodes.
//!
//! - **Publish** is one Lua script per channel: stream meta (epoch, top offset), `XADD` with
//!   `MAXLEN`, expiry and `PUBLISH`, atomically, so offsets are gap-free across nodes.
//! - **Subscriptions**: a node subscribes to a channel's Redis PUB/SUB channel only while
//!   it has local subscribers. Requests are batched (one `SUBSCRIBE` for many channels) and
//!   reconciled with the node's registry, so a subscribe racing an unsubscribe ends right.
//!   Messages are decoded once and fanned out locally.
//! - **Presence**: a hash of entries plus a sorted set of expiry times per channel;
//!   connections refresh their entries, so a dead node's entries expire.
//! - **Control**: a `<prefix>.control` channel carries the node's control messages.
//! - **Shards**: several independent Redis servers, a channel's shard chosen by jump
//!   consistent hashing of its name (FNV-1a), as Centrifugo does. An address with the
//!   `redis-cluster://` scheme is a Redis Cluster; keys are hash-tagged `{channel}` and
//!   channel messages use sharded PUB/SUB (`SPUBLISH`/`SSUBSCRIBE`), so a message travels
//!   only to the nodes serving its slot.
//! - **Faults**: connections come back with exponential backoff and jitter; PUB/SUB is
//!   resubscribed and the node then checks stream positions (a publication lost meanwhile
//!   makes positioned subscribers recover). While a server is unreachable its calls fail
//!   fast with an "unavailable" error instead of queueing, and [`Broker::ready`] says so.

mod scripts;
mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientLike, EventInterface, KeysInterface, LuaInterface, PubsubInterface};
use fred::types::config::{Config, ConnectionConfig, PerformanceConfig, ReconnectPolicy};
use fred::types::{Builder, Value};
use tokio::sync::{broadcast::error::RecvError, mpsc, oneshot};

use crate::broker::{Broker, BrokerEventHandler, HistoryFilter, HistoryOptions, PublishOptions};
use crate::error::EngineError;
use crate::presence::PresenceStore;
use crate::protocol::{ClientInfo, PresenceStatsResult, Publication, StreamPosition};
use crate::util::{fnv1a, new_epoch, unix_now};

use scripts::{Script, Scripts};
use wire::Event;

/// Redis engine settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    /// Shard addresses, `redis://[user:password@]host:port[/db]`; a `redis-cluster://`
    /// address is a Redis Cluster (its seed node). Default: `redis://127.0.0.1:6379`.
    pub addresses: Vec<String>,
    /// Prefix of every key and channel (default "centrifugo", as Centrifugo).
    pub prefix: String,
    /// How long a presence entry lives unless refreshed (default 60 s).
    pub presence_ttl: Duration,
    /// Timeout of one Redis call (default 4 s, as Centrifugo's `redis_io_timeout`).
    pub io_timeout: Duration,
    /// Timeout of the first connection (default 5 s).
    pub connect_timeout: Duration,
    /// Meta TTL used when a read creates a stream's epoch (default 30 days).
    pub history_meta_ttl: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            addresses: vec!["redis://127.0.0.1:6379".into()],
            prefix: "centrifugo".into(),
            presence_ttl: Duration::from_secs(60),
            io_timeout: Duration::from_secs(4),
            connect_timeout: Duration::from_secs(5),
            history_meta_ttl: HistoryOptions::DEFAULT_META_TTL,
        }
    }
}

/// A subscription change for the shard's subscriber task.
enum SubOp {
    Subscribe(String, oneshot::Sender<Result<(), EngineError>>),
    Unsubscribe(String),
}

/// One Redis server (or cluster): a command client and a PUB/SUB client.
struct Shard {
    address: String,
    commands: Client,
    pubsub: SubscriberClient,
    ops: mpsc::UnboundedSender<SubOp>,
    /// A Redis Cluster: channel messages use sharded PUB/SUB (`SPUBLISH`/`SSUBSCRIBE`, Redis
    /// 7), so each goes only to the nodes of its slot instead of the whole cluster.
    sharded: bool,
    /// The circuit breaker: after an I/O error or a timeout, calls fail fast until this
    /// instant (ms since `started`), then one goes through to probe.
    open_until: AtomicU64,
    started: Instant,
}

/// How long the circuit stays open after a failed call.
const BREAKER_OPEN: Duration = Duration::from_secs(1);

impl Shard {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The server looks reachable: both connections up and the circuit closed.
    fn up(&self) -> bool {
        self.commands.is_connected()
            && self.pubsub.is_connected()
            && self.open_until.load(Ordering::Relaxed) <= self.now_ms()
    }

    /// Fails fast while the server is unreachable (the circuit is open until fred's
    /// reconnect, with backoff, succeeds).
    fn check(&self) -> Result<&Client, EngineError> {
        if self.up() {
            Ok(&self.commands)
        } else {
            Err(EngineError::unavailable(format!(
                "redis {} unreachable",
                self.address
            )))
        }
    }

    /// Publishes a message on a channel's PUB/SUB channel (sharded in a cluster).
    async fn publish_message(&self, name: String, payload: Bytes) -> Result<(), EngineError> {
        let client = self.check()?;
        let sent = if self.sharded {
            client
                .spublish::<(), _, _>(name, Value::Bytes(payload))
                .await
        } else {
            client
                .publish::<(), _, _>(name, Value::Bytes(payload))
                .await
        };
        sent.map_err(|e| self.failed(e))
    }

    /// Maps a failed call; I/O errors and timeouts open the circuit for a while.
    fn failed(&self, e: fred::error::Error) -> EngineError {
        use fred::error::ErrorKind;
        if matches!(
            e.kind(),
            ErrorKind::IO | ErrorKind::Timeout | ErrorKind::Canceled
        ) {
            let until = self.now_ms() + BREAKER_OPEN.as_millis() as u64;
            self.open_until.store(until, Ordering::Relaxed);
            metrics::counter!("hub_redis_breaker_opened_total").increment(1);
        }
        redis_err(&self.address, e)
    }
}

/// The Redis [`Broker`] and [`PresenceStore`]. Give the same `Arc` to
/// [`NodeBuilder::broker`](crate::NodeBuilder::broker) and
/// [`NodeBuilder::presence`](crate::NodeBuilder::presence).
pub struct RedisEngine {
    shards: Vec<Arc<Shard>>,
    config: RedisConfig,
    scripts: Arc<Scripts>,
    handler: Arc<OnceLock<Arc<dyn BrokerEventHandler>>>,
    pending: std::sync::Mutex<Vec<mpsc::UnboundedReceiver<SubOp>>>,
}

fn redis_err(address: &str, e: fred::error::Error) -> EngineError {
    EngineError::new(format!("redis {address}: {e}"))
}

/// Jump consistent hash (Lamping and Veach) of a 64-bit key over `buckets`.
fn jump_hash(mut key: u64, buckets: usize) -> usize {
    let (mut b, mut j) = (-1i64, 0i64);
    while j < buckets as i64 {
        b = j;
        key = key.wrapping_mul(2862933555777941757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as usize
}

fn secs(d: Duration) -> u64 {
    // Rounded up: a TTL below a second still keeps the data for a second.
    d.as_millis().div_ceil(1000) as u64
}

fn bytes_of(v: &Value) -> Option<Bytes> {
    match v {
        Value::Bytes(b) => Some(b.clone()),
        Value::String(s) => Some(s.inner().clone()),
        Value::Integer(i) => Some(Bytes::from(i.to_string())),
        _ => None,
    }
}

fn u64_of(v: &Value) -> Option<u64> {
    match v {
        Value::Integer(i) => u64::try_from(*i).ok(),
        other => std::str::from_utf8(&bytes_of(other)?).ok()?.parse().ok(),
    }
}

fn string_of(v: &Value) -> Option<String> {
    String::from_utf8(bytes_of(v)?.to_vec()).ok()
}

impl RedisEngine {
    /// Connects to every shard. Fails, naming the address, when one cannot be reached.
    pub async fn connect(config: RedisConfig) -> Result<Arc<Self>, EngineError> {
        if config.addresses.is_empty() {
            return Err(EngineError::new("redis: no address configured"));
        }
        let mut shards = Vec::new();
        let mut pending = Vec::new();
        for address in &config.addresses {
            let fred_config = Config::from_url(address)
                .map_err(|e| EngineError::new(format!("redis address {address:?}: {e}")))?;
            let fred_sharded = fred_config.server.is_clustered();
            let mut policy = ReconnectPolicy::new_exponential(0, 100, 5_000, 2);
            policy.set_jitter(200);
            let mut builder = Builder::from_config(fred_config);
            builder
                .set_policy(policy)
                .with_connection_config(|c: &mut ConnectionConfig| {
                    c.connection_timeout = config.connect_timeout;
                    c.internal_command_timeout = config.io_timeout;
                    // A publish is not idempotent: never resend one after a broken
                    // connection (the caller sees the error and may retry).
                    c.max_command_attempts = 1;
                })
                .with_performance_config(|p: &mut PerformanceConfig| {
                    p.default_command_timeout = config.io_timeout;
                    // Messages the PUB/SUB reader has not taken yet; beyond, they are lost
                    // and the position check recovers.
                    p.broadcast_channel_capacity = 16_384;
                });
            let commands = builder.build().map_err(|e| redis_err(address, e))?;
            let pubsub = builder
                .build_subscriber_client()
                .map_err(|e| redis_err(address, e))?;
            let connect = async {
                commands.init().await?;
                pubsub.init().await?;
                Ok::<_, fred::error::Error>(())
            };
            match tokio::time::timeout(config.connect_timeout * 2, connect).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(redis_err(address, e)),
                Err(_) => {
                    return Err(EngineError::new(format!(
                        "redis {address}: no connection within {:?}",
                        config.connect_timeout * 2
                    )))
                }
            }
            let (tx, rx) = mpsc::unbounded_channel();
            pending.push(rx);
            shards.push(Arc::new(Shard {
                address: address.clone(),
                commands,
                pubsub,
                ops: tx,
                sharded: fred_sharded,
                open_until: AtomicU64::new(0),
                started: Instant::now(),
            }));
        }
        Ok(Arc::new(RedisEngine {
            shards,
            config,
            scripts: Arc::new(Scripts::new()),
            handler: Arc::new(OnceLock::new()),
            pending: std::sync::Mutex::new(pending),
        }))
    }

    fn shard(&self, channel: &str) -> &Arc<Shard> {
        &self.shards[jump_hash(fnv1a(channel), self.shards.len())]
    }

    fn key(&self, kind: &str, channel: &str) -> String {
        format!("{}.{kind}.{{{channel}}}", self.config.prefix)
    }

    fn pubsub_channel(prefix: &str, channel: &str) -> String {
        format!("{prefix}.client.{{{channel}}}")
    }

    fn control_channel(&self) -> String {
        format!("{}.control", self.config.prefix)
    }

    /// Runs a script, loading it when the server does not know it (after a restart).
    async fn eval(
        shard: &Shard,
        script: &Script,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<Value, EngineError> {
        let client = shard.check()?;
        match client
            .evalsha::<Value, _, _, _>(script.sha.clone(), keys.clone(), args.clone())
            .await
        {
            Err(e) if e.details().contains("NOSCRIPT") => client
                .eval::<Value, _, _, _>(script.lua, keys, args)
                .await
                .map_err(|e| shard.failed(e)),
            other => other.map_err(|e| shard.failed(e)),
        }
    }
}

/// Applies batched subscription changes of one shard, reconciled with the node's registry.
async fn subscriber_task(
    shard: Arc<Shard>,
    mut rx: mpsc::UnboundedReceiver<SubOp>,
    handler: Arc<dyn BrokerEventHandler>,
    prefix: String,
) {
    let mut subscribed: HashSet<String> = HashSet::new();
    while let Some(first) = rx.recv().await {
        let mut ops = vec![first];
        while ops.len() < 512 {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let mut waiters: Vec<(String, oneshot::Sender<Result<(), EngineError>>)> = Vec::new();
        let mut touched: Vec<String> = Vec::new();
        for op in ops {
            match op {
                SubOp::Subscribe(ch, tx) => {
                    touched.push(ch.clone());
                    waiters.push((ch, tx));
                }
                SubOp::Unsubscribe(ch) => touched.push(ch),
            }
        }
        touched.sort();
        touched.dedup();
        let (mut add, mut remove) = (Vec::new(), Vec::new());
        for ch in touched {
            match (handler.has_subscribers(&ch), subscribed.contains(&ch)) {
                (true, false) => add.push(ch),
                (false, true) => remove.push(ch),
                _ => {}
            }
        }
        let result = if add.is_empty() {
            Ok(())
        } else if !shard.pubsub.is_connected() {
            Err(EngineError::unavailable(format!(
                "redis {} unreachable",
                shard.address
            )))
        } else {
            let names: Vec<String> = add
                .iter()
                .map(|c| RedisEngine::pubsub_channel(&prefix, c))
                .collect();
            let done = if shard.sharded {
                shard.pubsub.ssubscribe(names).await
            } else {
                shard.pubsub.subscribe(names).await
            };
            done.map_err(|e| redis_err(&shard.address, e))
        };
        if result.is_ok() {
            subscribed.extend(add.iter().cloned());
        } else {
            metrics::counter!("hub_redis_subscribe_errors_total").increment(1);
        }
        for (ch, tx) in waiters {
            let r = if add.contains(&ch) {
                result.clone()
            } else {
                Ok(())
            };
            let _ = tx.send(r);
        }
        if !remove.is_empty() {
            for ch in &remove {
                subscribed.remove(ch);
            }
            let names: Vec<String> = remove
                .iter()
                .map(|c| RedisEngine::pubsub_channel(&prefix, c))
                .collect();
            let done = if shard.sharded {
                shard.pubsub.sunsubscribe(names).await
            } else {
                shard.pubsub.unsubscribe(names).await
            };
            if let Err(e) = done {
                tracing::debug!(error = %e, "redis unsubscribe failed");
            }
        }
    }
}

/// Reads a shard's PUB/SUB messages and hands them to the node.
async fn reader_task(shard: Arc<Shard>, handler: Arc<dyn BrokerEventHandler>, prefix: String) {
    let control = format!("{prefix}.control");
    let client_prefix = format!("{prefix}.client.{{");
    let mut rx = shard.pubsub.message_rx();
    loop {
        let msg = match rx.recv().await {
            Ok(m) => m,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(lost = n, "redis PUB/SUB reader fell behind");
                metrics::counter!("hub_redis_messages_lost_total").increment(n);
                handler.handle_resync();
                continue;
            }
            Err(RecvError::Closed) => break,
        };
        let Some(payload) = bytes_of(&msg.value) else {
            continue;
        };
        let name: &str = &msg.channel;
        if name == control {
            handler.handle_control(payload);
            continue;
        }
        let Some(channel) = name
            .strip_prefix(client_prefix.as_str())
            .and_then(|c| c.strip_suffix('}'))
        else {
            continue;
        };
        match wire::decode_event(&payload) {
            Ok(Event::Publication {
                publication,
                epoch,
                trace,
            }) => {
                let position = StreamPosition {
                    offset: publication.offset,
                    epoch,
                };
                match trace {
                    Some(t) => {
                        handler.handle_traced_publication(channel, publication, position, &t)
                    }
                    None => handler.handle_publication(channel, publication, position),
                }
            }
            Ok(Event::Join(info)) => handler.handle_join(channel, info),
            Ok(Event::Leave(info)) => handler.handle_leave(channel, info),
            Err(e) => tracing::warn!(channel, error = ?e, "undecodable redis message"),
        }
    }
}

/// After a PUB/SUB reconnect: subscribe again to every channel, then have the node check
/// its stream positions (publications sent while disconnected were missed).
async fn reconnect_task(shard: Arc<Shard>, handler: Arc<dyn BrokerEventHandler>) {
    let mut rx = shard.pubsub.reconnect_rx();
    loop {
        match rx.recv().await {
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => break,
        }
        metrics::counter!("hub_redis_reconnects_total").increment(1);
        tracing::info!(address = %shard.address, "redis PUB/SUB reconnected; resubscribing");
        let mut delay = Duration::from_millis(100);
        while let Err(e) = shard.pubsub.resubscribe_all().await {
            tracing::warn!(error = %e, "redis resubscribe failed; retrying");
            tokio::time::sleep(delay + Duration::from_millis(fastrand::u64(..100))).await;
            delay = (delay * 2).min(Duration::from_secs(5));
            if !shard.pubsub.is_connected() {
                break;
            }
        }
        handler.handle_resync();
    }
}

#[async_trait]
impl Broker for RedisEngine {
    async fn run(&self, handler: Arc<dyn BrokerEventHandler>) -> Result<(), EngineError> {
        self.handler
            .set(handler.clone())
            .map_err(|_| EngineError::new("redis engine already running"))?;
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        for (shard, rx) in self.shards.iter().zip(pending) {
            let prefix = self.config.prefix.clone();
            tokio::spawn(subscriber_task(
                shard.clone(),
                rx,
                handler.clone(),
                prefix.clone(),
            ));
            tokio::spawn(reader_task(shard.clone(), handler.clone(), prefix));
            tokio::spawn(reconnect_task(shard.clone(), handler.clone()));
        }
        self.shards[0]
            .pubsub
            .subscribe(self.control_channel())
            .await
            .map_err(|e| redis_err(&self.shards[0].address, e))?;
        Ok(())
    }

    async fn subscribe(&self, channel: &str) -> Result<(), EngineError> {
        let (tx, rx) = oneshot::channel();
        self.shard(channel)
            .ops
            .send(SubOp::Subscribe(channel.to_owned(), tx))
            .map_err(|_| EngineError::new("redis engine stopped"))?;
        rx.await
            .map_err(|_| EngineError::new("redis engine stopped"))?
    }

    async fn unsubscribe(&self, channel: &str) -> Result<(), EngineError> {
        self.shard(channel)
            .ops
            .send(SubOp::Unsubscribe(channel.to_owned()))
            .map_err(|_| EngineError::new("redis engine stopped"))
    }

    async fn publish(
        &self,
        channel: &str,
        publication: Publication,
        options: &PublishOptions,
    ) -> Result<StreamPosition, EngineError> {
        let shard = self.shard(channel);
        let body = wire::encode_publication(&publication, options.trace.as_deref())
            .map_err(|e| EngineError::new(e.0))?;
        let pubsub = Self::pubsub_channel(&self.config.prefix, channel);
        match options.history.filter(HistoryOptions::enabled) {
            Some(h) => {
                let v = Self::eval(
                    shard,
                    &self.scripts.publish,
                    vec![self.key("stream", channel), self.key("meta", channel)],
                    vec![
                        Value::Bytes(body),
                        Value::Integer(h.size as i64),
                        Value::Integer(secs(h.ttl) as i64),
                        Value::from(pubsub),
                        Value::Integer(secs(h.meta_ttl.max(h.ttl)) as i64),
                        Value::from(new_epoch()),
                        Value::from(if shard.sharded { "spublish" } else { "publish" }),
                    ],
                )
                .await?;
                let Value::Array(parts) = v else {
                    return Err(EngineError::new("redis publish: unexpected reply"));
                };
                let offset = parts.first().and_then(u64_of);
                let epoch = parts.get(1).and_then(string_of);
                match (offset, epoch) {
                    (Some(offset), Some(epoch)) => Ok(StreamPosition { offset, epoch }),
                    _ => Err(EngineError::new("redis publish: unexpected reply")),
                }
            }
            None => {
                shard
                    .publish_message(pubsub, wire::unpositioned(&body))
                    .await?;
                Ok(StreamPosition::default())
            }
        }
    }

    async fn publish_join(&self, channel: &str, info: ClientInfo) -> Result<(), EngineError> {
        self.shard(channel)
            .publish_message(
                Self::pubsub_channel(&self.config.prefix, channel),
                wire::join_leave(&info, true),
            )
            .await
    }

    async fn publish_leave(&self, channel: &str, info: ClientInfo) -> Result<(), EngineError> {
        self.shard(channel)
            .publish_message(
                Self::pubsub_channel(&self.config.prefix, channel),
                wire::join_leave(&info, false),
            )
            .await
    }

    async fn history(
        &self,
        channel: &str,
        filter: &HistoryFilter,
    ) -> Result<(Vec<Publication>, StreamPosition), EngineError> {
        let shard = self.shard(channel);
        let limit = if filter.limit < 0 {
            -1
        } else {
            filter.limit as i64
        };
        let v = Self::eval(
            shard,
            &self.scripts.history,
            vec![self.key("stream", channel), self.key("meta", channel)],
            vec![
                Value::Integer(limit),
                Value::from(filter.since.map(|s| s.to_string()).unwrap_or_default()),
                Value::from(if filter.reverse { "1" } else { "0" }),
                Value::Integer(secs(self.config.history_meta_ttl) as i64),
                Value::from(new_epoch()),
            ],
        )
        .await?;
        let bad = || EngineError::new("redis history: unexpected reply");
        let Value::Array(mut parts) = v else {
            return Err(bad());
        };
        if parts.len() != 3 {
            return Err(bad());
        }
        let entries = parts.pop().ok_or_else(bad)?;
        let epoch = parts.get(1).and_then(string_of).ok_or_else(bad)?;
        let offset = parts.first().and_then(u64_of).ok_or_else(bad)?;
        let mut publications = Vec::new();
        if let Value::Array(entries) = entries {
            for entry in entries {
                // [id, [field, value, ...]]
                let Value::Array(mut e) = entry else {
                    return Err(bad());
                };
                let fields = e.pop().ok_or_else(bad)?;
                let id = e.first().and_then(string_of).ok_or_else(bad)?;
                let off: u64 = id
                    .split('-')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(bad)?;
                let Value::Array(fields) = fields else {
                    return Err(bad());
                };
                let body = fields.get(1).and_then(bytes_of).ok_or_else(bad)?;
                let p = wire::decode_publication(&body, off)
                    .map_err(|e| EngineError::new(format!("redis history entry: {}", e.0)))?;
                publications.push(p);
            }
        }
        Ok((publications, StreamPosition { offset, epoch }))
    }

    async fn remove_history(&self, channel: &str) -> Result<(), EngineError> {
        let shard = self.shard(channel);
        let client = shard.check()?;
        // Two keys of one hash slot: one DEL.
        client
            .del::<(), _>(vec![self.key("stream", channel), self.key("meta", channel)])
            .await
            .map_err(|e| shard.failed(e))
    }

    async fn publish_control(&self, data: Bytes) -> Result<(), EngineError> {
        let shard = &self.shards[0];
        let client = shard.check()?;
        client
            .publish::<(), _, _>(self.control_channel(), Value::Bytes(data))
            .await
            .map_err(|e| shard.failed(e))
    }

    /// Every shard reachable; also reports each shard's state as the gauge
    /// `hub_redis_shard_up{shard}` (the shard's index in the configured addresses; 0 while its
    /// connections are down or its circuit breaker is open).
    fn ready(&self) -> Result<(), EngineError> {
        let mut first_down = None;
        for (i, s) in self.shards.iter().enumerate() {
            let up = s.up();
            let value = if up { 1.0 } else { 0.0 };
            metrics::gauge!("hub_redis_shard_up", "shard" => i.to_string()).set(value);
            if !up && first_down.is_none() {
                first_down = Some(&s.address);
            }
        }
        match first_down {
            Some(address) => Err(EngineError::unavailable(format!(
                "redis {address} unreachable"
            ))),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl PresenceStore for RedisEngine {
    async fn add(&self, channel: &str, info: &ClientInfo) -> Result<(), EngineError> {
        let ttl = secs(self.config.presence_ttl);
        Self::eval(
            self.shard(channel),
            &self.scripts.presence_add,
            vec![
                self.key("presence.expire", channel),
                self.key("presence.data", channel),
            ],
            vec![
                Value::Integer(ttl as i64),
                Value::Integer((unix_now() + ttl) as i64),
                Value::from(info.client.clone()),
                Value::Bytes(wire::encode_info(info)),
            ],
        )
        .await
        .map(|_| ())
    }

    async fn remove(&self, channel: &str, client_id: &str, _user: &str) -> Result<(), EngineError> {
        Self::eval(
            self.shard(channel),
            &self.scripts.presence_remove,
            vec![
                self.key("presence.expire", channel),
                self.key("presence.data", channel),
            ],
            vec![Value::from(client_id.to_owned())],
        )
        .await
        .map(|_| ())
    }

    async fn presence(&self, channel: &str) -> Result<HashMap<String, ClientInfo>, EngineError> {
        let v = Self::eval(
            self.shard(channel),
            &self.scripts.presence_get,
            vec![
                self.key("presence.expire", channel),
                self.key("presence.data", channel),
            ],
            vec![Value::Integer(unix_now() as i64)],
        )
        .await?;
        let mut out = HashMap::new();
        let flat = match v {
            Value::Array(a) => a,
            Value::Map(m) => m
                .inner()
                .into_iter()
                .flat_map(|(k, v)| [Value::from(k), v])
                .collect(),
            _ => Vec::new(),
        };
        for pair in flat.chunks(2) {
            let [k, v] = pair else { continue };
            let (Some(id), Some(data)) = (string_of(k), bytes_of(v)) else {
                continue;
            };
            match wire::decode_info(&data) {
                Ok(info) => {
                    out.insert(id, info);
                }
                Err(e) => tracing::warn!(channel, error = ?e, "undecodable presence entry"),
            }
        }
        Ok(out)
    }

    async fn stats(&self, channel: &str) -> Result<PresenceStatsResult, EngineError> {
        let p = self.presence(channel).await?;
        let users: HashSet<&str> = p.values().map(|i| i.user.as_str()).collect();
        Ok(PresenceStatsResult {
            num_clients: p.len() as u32,
            num_users: users.len() as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jump_hash_is_stable_and_spreads() {
        // A channel keeps its shard as long as the number of shards stays the same, and
        // few channels move when a shard is added.
        let mut counts = [0usize; 3];
        let mut moved = 0;
        for i in 0..3000 {
            let k = fnv1a(&format!("channel-{i}"));
            let a = jump_hash(k, 3);
            assert_eq!(a, jump_hash(k, 3));
            counts[a] += 1;
            if jump_hash(k, 4) != a {
                moved += 1;
            }
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        assert!((600..900).contains(&moved), "{moved} of 3000 moved");
        assert_eq!(jump_hash(12345, 1), 0);
    }

    #[test]
    fn ttls_round_up_to_whole_seconds() {
        assert_eq!(secs(Duration::from_millis(1)), 1);
        assert_eq!(secs(Duration::from_secs(60)), 60);
    }
}
