//! The [`Node`]: the root handle an embedder holds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::Notify;

use crate::broker::{
    Broker, BrokerEventHandler, HistoryFilter, MemoryBroker, PublishOptions, TimedBroker,
    TimedPresence,
};
use crate::cluster::{self, Cluster, Envelope, Msg};
use crate::error::{Disconnect, EngineError, Error};
use crate::handler::{Handler, RefuseAll, SubscribeOptions};
use crate::hub::Hub;
use crate::limits::{AcceptGate, RateLimit};
use crate::outbox::Control;
use crate::presence::{MemoryPresence, PresenceStore};
use crate::protocol::{
    ClientInfo, HistoryResult, PresenceStatsResult, Publication, StreamPosition,
};
use crate::transport::deflate::CompressionConfig;

/// Node settings. Every default is Centrifugo's unless said otherwise.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NodeConfig {
    /// Node name shown in `info` (default: "hub").
    pub name: String,
    /// Version sent in connect results (default: this crate's version).
    pub version: String,
    /// Server ping interval (default 25 s). Must be greater than `pong_timeout`.
    pub ping_interval: Duration,
    /// Time a client has to answer a ping (default 8 s); then close 3012.
    pub pong_timeout: Duration,
    /// Time a client has to send `connect` after the socket opens (default 10 s); then 3502.
    pub stale_close_delay: Duration,
    /// Grace period after a connection expires before it is closed with 3005 (default 25 s).
    pub expired_close_delay: Duration,
    /// How often each connection refreshes its presence entries (default 25 s).
    pub presence_update_interval: Duration,
    /// Bytes a connection may have queued before it is closed as slow, 3008 (default 1 MiB).
    pub max_queue_bytes: usize,
    /// Largest incoming message (default 65536 bytes); larger closes with 1009.
    pub max_message_size: usize,
    /// Most publications a recovery returns (default 300).
    pub recovery_max_publication_limit: usize,
    /// Most publications a client history call returns (default 300).
    pub history_max_publication_limit: usize,
    /// Time allowed for one socket write (default 5 s); then close 3009.
    pub write_timeout: Duration,
    /// Longest channel name (default 255).
    pub channel_max_length: usize,
    /// Origins allowed to open a WebSocket (`*` = any, `https://*.example.com` patterns).
    /// Empty: only requests without `Origin` or with an origin whose host is the request's.
    pub allowed_origins: Vec<String>,
    /// Commands one connection may send (default 100/s, bursts of 200; pongs are free).
    /// Over it a command gets error 111; `None` = no limit.
    pub command_rate_limit: Option<RateLimit>,
    /// Refusals within 10 s after which a connection is closed with 3013 (default 50).
    pub command_abuse_limit: u32,
    /// Most open sockets on this node (default 0 = no cap besides the open-files limit).
    /// Above it new upgrades get HTTP 503 with `Retry-After`; existing connections go on.
    pub connection_limit: usize,
    /// New connections per second on this node (default `None` = no limit); over it, 503.
    pub connection_rate_limit: Option<RateLimit>,
    /// New connections per second from one IP address (default `None`); over it, 429.
    pub connection_rate_limit_per_ip: Option<RateLimit>,
    /// Most connections of one user on this node (default 0 = no limit); over it, 3504.
    pub user_connection_limit: usize,
    /// Most channels one connection may subscribe to (default 128); over it, 3505.
    pub channel_limit: usize,
    /// Scheduling lag above which new connections are shed with 503 while existing ones
    /// keep being served (default 500 ms; zero turns shedding off).
    pub overload_lag: Duration,
    /// permessage-deflate (default off).
    pub compression: CompressionConfig,
    /// How often the node compares the stream position of channels with positioned
    /// subscribers against the broker's stream top, to catch a lost publication when no
    /// later one reveals the gap (default 40 s; zero turns the check off). The check also
    /// runs whenever the broker reconnects.
    pub position_check_interval: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: "hub".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(8),
            stale_close_delay: Duration::from_secs(10),
            expired_close_delay: Duration::from_secs(25),
            presence_update_interval: Duration::from_secs(25),
            max_queue_bytes: 1 << 20,
            max_message_size: 65536,
            recovery_max_publication_limit: 300,
            history_max_publication_limit: 300,
            write_timeout: Duration::from_secs(5),
            channel_max_length: 255,
            allowed_origins: Vec::new(),
            command_rate_limit: Some(RateLimit {
                per_second: 100,
                burst: 200,
            }),
            command_abuse_limit: 50,
            connection_limit: 0,
            connection_rate_limit: None,
            connection_rate_limit_per_ip: None,
            user_connection_limit: 0,
            channel_limit: 128,
            overload_lag: Duration::from_millis(500),
            compression: CompressionConfig::default(),
            position_check_interval: Duration::from_secs(40),
        }
    }
}

/// Statistics of one node, as the server API's `info` shows them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    /// Unique id of this node run.
    pub uid: String,
    /// Node name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Local connections.
    pub num_clients: u32,
    /// Distinct local users.
    pub num_users: u32,
    /// Local channels with subscribers.
    pub num_channels: u32,
    /// Local subscriptions.
    pub num_subs: u32,
    /// Seconds since start.
    pub uptime: u32,
}

/// Metric handles used on hot paths, registered once when the node starts (so install a
/// `metrics` recorder before starting the node).
pub(crate) struct Counters {
    pub(crate) messages_sent: metrics::Counter,
    pub(crate) messages_received: metrics::Counter,
    /// WebSocket bytes written to client sockets (frame headers included).
    pub(crate) bytes_sent: metrics::Counter,
    /// WebSocket bytes read from client sockets (frame headers included).
    pub(crate) bytes_received: metrics::Counter,
}

pub(crate) struct NodeInner {
    pub(crate) counters: Counters,
    pub(crate) config: NodeConfig,
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) presence: Arc<dyn PresenceStore>,
    pub(crate) hub: Hub,
    pub(crate) gate: Arc<AcceptGate>,
    cluster: Cluster,
    resync: Notify,
    uid: String,
    started: Instant,
    shutting_down: AtomicBool,
}

/// The hub node: clients connect to it, subscribe, and receive what is published.
///
/// Cloning is cheap (a handle).
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<NodeInner>,
}

/// Builds a [`Node`].
pub struct NodeBuilder {
    config: NodeConfig,
    handler: Arc<dyn Handler>,
    broker: Option<Arc<dyn Broker>>,
    presence: Option<Arc<dyn PresenceStore>>,
}

impl Default for NodeBuilder {
    fn default() -> Self {
        NodeBuilder {
            config: NodeConfig::default(),
            handler: Arc::new(RefuseAll),
            broker: None,
            presence: None,
        }
    }
}

impl NodeBuilder {
    /// Node settings.
    pub fn config(mut self, config: NodeConfig) -> Self {
        self.config = config;
        self
    }

    /// The embedder's callbacks (default: refuse everything).
    pub fn handler(mut self, handler: impl Handler) -> Self {
        self.handler = Arc::new(handler);
        self
    }

    /// The broker (default: [`MemoryBroker`]).
    pub fn broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.broker = Some(broker);
        self
    }

    /// The presence store (default: [`MemoryPresence`]).
    pub fn presence(mut self, presence: Arc<dyn PresenceStore>) -> Self {
        self.presence = Some(presence);
        self
    }

    /// Starts the node: the broker begins delivering to it. Needs a tokio runtime. Install
    /// a `metrics` recorder first if you want the node's metrics.
    pub async fn start(self) -> Result<Node, EngineError> {
        // Whatever the engine, its round trips are timed (hub_broker_duration_seconds).
        let broker: Arc<dyn Broker> = Arc::new(TimedBroker(
            self.broker.unwrap_or_else(|| Arc::new(MemoryBroker::new())),
        ));
        let presence: Arc<dyn PresenceStore> = Arc::new(TimedPresence(
            self.presence
                .unwrap_or_else(|| Arc::new(MemoryPresence::default())),
        ));
        let gate = Arc::new(AcceptGate::new(
            self.config.connection_limit,
            self.config.connection_rate_limit,
            self.config.connection_rate_limit_per_ip,
            self.config.overload_lag,
        ));
        AcceptGate::spawn_monitor(&gate);
        let hub = Hub::new(self.config.compression);
        let counters = Counters {
            messages_sent: metrics::counter!("hub_messages_sent_total"),
            messages_received: metrics::counter!("hub_messages_received_total"),
            bytes_sent: metrics::counter!("hub_bytes_sent_total"),
            bytes_received: metrics::counter!("hub_bytes_received_total"),
        };
        let inner = Arc::new(NodeInner {
            counters,
            config: self.config,
            gate,
            handler: self.handler,
            broker: broker.clone(),
            presence,
            hub,
            cluster: Cluster::default(),
            resync: Notify::new(),
            uid: uuid::Uuid::new_v4().to_string(),
            started: Instant::now(),
            shutting_down: AtomicBool::new(false),
        });
        broker
            .run(Arc::new(NodeEvents(Arc::downgrade(&inner))))
            .await?;
        spawn_announcer(Arc::downgrade(&inner));
        spawn_position_checker(Arc::downgrade(&inner));
        Ok(Node { inner })
    }
}

/// Announces this node to the others every few seconds (a no-op on a single node).
fn spawn_announcer(weak: Weak<NodeInner>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(cluster::ANNOUNCE_INTERVAL);
        loop {
            tick.tick().await;
            let Some(inner) = weak.upgrade() else { break };
            let node = Node { inner };
            let info = node.info();
            node.send_control(Msg::Node { info }).await.ok();
        }
    });
}

/// Checks stream positions periodically and whenever the broker asks for a resync.
fn spawn_position_checker(weak: Weak<NodeInner>) {
    tokio::spawn(async move {
        loop {
            let Some(inner) = weak.upgrade() else { break };
            let every = inner.config.position_check_interval;
            let wait = async {
                if every.is_zero() {
                    std::future::pending::<()>().await
                } else {
                    tokio::time::sleep(every).await
                }
            };
            let node = Node { inner };
            tokio::select! {
                _ = wait => {}
                _ = node.inner.resync.notified() => {}
            }
            node.check_positions().await;
        }
    });
}

/// What brokers deliver, forwarded to the node's hub.
struct NodeEvents(Weak<NodeInner>);

impl BrokerEventHandler for NodeEvents {
    fn handle_publication(
        &self,
        channel: &str,
        publication: Publication,
        position: StreamPosition,
    ) {
        if let Some(n) = self.0.upgrade() {
            n.hub
                .broadcast_publication(channel, publication, &position.epoch);
        }
    }

    fn handle_traced_publication(
        &self,
        channel: &str,
        publication: Publication,
        position: StreamPosition,
        trace: &str,
    ) {
        let Some(n) = self.0.upgrade() else {
            return;
        };
        let received = Instant::now();
        let offset = publication.offset;
        let recipients = n
            .hub
            .broadcast_publication(channel, publication, &position.epoch);
        n.handler
            .on_traced_delivery(&crate::handler::TracedDelivery {
                channel,
                trace,
                offset,
                recipients,
                received,
            });
    }

    fn has_subscribers(&self, channel: &str) -> bool {
        self.0
            .upgrade()
            .is_some_and(|n| n.hub.has_subscribers(channel))
    }

    fn handle_control(&self, data: Bytes) {
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        let env: Envelope = match serde_json::from_slice(&data) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable control message");
                return;
            }
        };
        if env.from == inner.uid {
            return;
        }
        Node { inner }.apply_control(env.from, env.msg);
    }

    fn handle_resync(&self) {
        if let Some(n) = self.0.upgrade() {
            n.resync.notify_one();
        }
    }

    fn handle_join(&self, channel: &str, info: ClientInfo) {
        if let Some(n) = self.0.upgrade() {
            n.hub.broadcast_join_leave(channel, info, true);
        }
    }

    fn handle_leave(&self, channel: &str, info: ClientInfo) {
        if let Some(n) = self.0.upgrade() {
            n.hub.broadcast_join_leave(channel, info, false);
        }
    }
}

fn engine(e: EngineError) -> Error {
    tracing::warn!(error = %e, "engine call failed");
    e.into()
}

impl Node {
    /// A builder with the defaults: in-memory broker and presence, a handler that refuses.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// Node settings.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// Publishes to a channel; returns the publication's stream position (empty without
    /// history).
    pub async fn publish(
        &self,
        channel: &str,
        publication: Publication,
        options: &PublishOptions,
    ) -> Result<StreamPosition, Error> {
        metrics::counter!("hub_publications_total").increment(1);
        self.inner
            .broker
            .publish(channel, publication, options)
            .await
            .map_err(engine)
    }

    /// Reads history with the protocol's semantics: `limit` 0 = only the top, negative = all
    /// up to `max_limit`; `since` with another epoch → error 112; `reverse` with a `since` of
    /// offset 0 → error 107.
    pub async fn history(
        &self,
        channel: &str,
        since: Option<StreamPosition>,
        limit: i32,
        reverse: bool,
        max_limit: usize,
    ) -> Result<HistoryResult, Error> {
        if reverse && since.as_ref().is_some_and(|s| s.offset == 0) {
            return Err(Error::BAD_REQUEST);
        }
        let cap = i32::try_from(max_limit).unwrap_or(i32::MAX);
        let limit = if limit < 0 || limit > cap { cap } else { limit };
        let filter = HistoryFilter {
            since: since.as_ref().map(|s| s.offset),
            limit,
            reverse,
        };
        let (publications, top) = self
            .inner
            .broker
            .history(channel, &filter)
            .await
            .map_err(engine)?;
        if let Some(s) = &since {
            if !s.epoch.is_empty() && s.epoch != top.epoch {
                return Err(Error::UNRECOVERABLE_POSITION);
            }
        }
        Ok(HistoryResult {
            publications,
            epoch: top.epoch,
            offset: top.offset,
        })
    }

    /// Drops a channel's history.
    pub async fn remove_history(&self, channel: &str) -> Result<(), Error> {
        self.inner
            .broker
            .remove_history(channel)
            .await
            .map_err(engine)
    }

    /// Who is present in a channel.
    pub async fn presence(&self, channel: &str) -> Result<HashMap<String, ClientInfo>, Error> {
        self.inner.presence.presence(channel).await.map_err(engine)
    }

    /// Presence counts of a channel.
    pub async fn presence_stats(&self, channel: &str) -> Result<PresenceStatsResult, Error> {
        self.inner.presence.stats(channel).await.map_err(engine)
    }

    fn targets(&self, user: &str, client: Option<&str>) -> Vec<Arc<crate::outbox::ClientShared>> {
        let mut v = self.inner.hub.user_clients(user);
        if let Some(c) = client.filter(|c| !c.is_empty()) {
            v.retain(|s| &*s.id == c);
        }
        v
    }

    async fn send_control(&self, msg: Msg) -> Result<(), Error> {
        let env = Envelope {
            from: self.inner.uid.clone(),
            msg,
        };
        self.inner
            .broker
            .publish_control(env.encode())
            .await
            .map_err(engine)
    }

    /// Acts on a control message from another node.
    fn apply_control(&self, from: String, msg: Msg) {
        match msg {
            Msg::Node { info } => self.inner.cluster.seen(info),
            Msg::Subscribe {
                user,
                channel,
                client,
                options,
            } => self.local_subscribe(&user, &channel, options.into(), client.as_deref()),
            Msg::Unsubscribe {
                user,
                channel,
                client,
            } => self.local_unsubscribe(&user, &channel, client.as_deref()),
            Msg::Disconnect {
                user,
                client,
                whitelist,
                code,
                reason,
            } => self.local_disconnect(
                &user,
                Disconnect::new(code, reason),
                client.as_deref(),
                &whitelist,
            ),
            Msg::Refresh {
                user,
                client,
                expired,
                expire_at,
                info,
            } => self.local_refresh(
                &user,
                client.as_deref(),
                expired,
                expire_at,
                info.map(Bytes::from),
            ),
            Msg::SurveyChannels { id } => {
                let node = self.clone();
                tokio::spawn(async move {
                    let channels = node.channels();
                    node.send_control(Msg::SurveyReply {
                        id,
                        to: from,
                        channels,
                    })
                    .await
                    .ok();
                });
            }
            Msg::SurveyReply { id, to, channels } => {
                if to == self.inner.uid {
                    self.inner.cluster.answer(id, channels);
                }
            }
        }
    }

    fn local_subscribe(
        &self,
        user: &str,
        channel: &str,
        options: SubscribeOptions,
        client: Option<&str>,
    ) {
        for c in self.targets(user, client) {
            c.control(Control::Subscribe {
                channel: channel.to_owned(),
                options: options.clone(),
            });
        }
    }

    fn local_unsubscribe(&self, user: &str, channel: &str, client: Option<&str>) {
        for c in self.targets(user, client) {
            c.control(Control::Unsubscribe {
                channel: channel.to_owned(),
            });
        }
    }

    fn local_disconnect(
        &self,
        user: &str,
        disconnect: Disconnect,
        client: Option<&str>,
        whitelist: &[String],
    ) {
        for c in self.targets(user, client) {
            if !whitelist.iter().any(|w| **w == *c.id) {
                c.control(Control::Disconnect(disconnect.clone()));
            }
        }
    }

    fn local_refresh(
        &self,
        user: &str,
        client: Option<&str>,
        expired: bool,
        expire_at: Option<u64>,
        info: Option<Bytes>,
    ) {
        for c in self.targets(user, client) {
            c.control(Control::Refresh {
                expired,
                expire_at,
                info: info.clone(),
            });
        }
    }

    /// Subscribes a user's connections to a channel, on every node (all of them, or one
    /// `client`). They receive a `subscribe` push. Fails only when other nodes could not be
    /// told (this node's connections are subscribed anyway).
    pub async fn subscribe_user(
        &self,
        user: &str,
        channel: &str,
        options: SubscribeOptions,
        client: Option<&str>,
    ) -> Result<(), Error> {
        let wire = cluster::WireSubscribeOptions::from(&options);
        self.local_subscribe(user, channel, options, client);
        self.send_control(Msg::Subscribe {
            user: user.to_owned(),
            channel: channel.to_owned(),
            client: client.map(str::to_owned),
            options: wire,
        })
        .await
    }

    /// Unsubscribes a user's connections from a channel on every node (push code 2000).
    pub async fn unsubscribe_user(
        &self,
        user: &str,
        channel: &str,
        client: Option<&str>,
    ) -> Result<(), Error> {
        self.local_unsubscribe(user, channel, client);
        self.send_control(Msg::Unsubscribe {
            user: user.to_owned(),
            channel: channel.to_owned(),
            client: client.map(str::to_owned),
        })
        .await
    }

    /// Disconnects a user's connections on every node, sparing those in `whitelist`.
    pub async fn disconnect_user(
        &self,
        user: &str,
        disconnect: Disconnect,
        client: Option<&str>,
        whitelist: &[String],
    ) -> Result<(), Error> {
        self.local_disconnect(user, disconnect.clone(), client, whitelist);
        self.send_control(Msg::Disconnect {
            user: user.to_owned(),
            client: client.map(str::to_owned),
            whitelist: whitelist.to_vec(),
            code: disconnect.code,
            reason: disconnect.reason.into_owned(),
        })
        .await
    }

    /// Refreshes a user's connections on every node: a new expiry, new info, or expired now.
    pub async fn refresh_user(
        &self,
        user: &str,
        client: Option<&str>,
        expired: bool,
        expire_at: Option<u64>,
        info: Option<Bytes>,
    ) -> Result<(), Error> {
        let text = info
            .as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned());
        self.local_refresh(user, client, expired, expire_at, info);
        self.send_control(Msg::Refresh {
            user: user.to_owned(),
            client: client.map(str::to_owned),
            expired,
            expire_at,
            info: text,
        })
        .await
    }

    /// Statistics of every live node: this one first, then the others that announced
    /// themselves within the last 10 s.
    pub fn cluster_info(&self) -> Vec<NodeInfo> {
        let mut v = vec![self.info()];
        v.extend(self.inner.cluster.peers());
        v
    }

    /// Channels with subscribers on any node, with their total number of subscribers. Asks
    /// every live node and waits up to 3 s for their answers.
    pub async fn cluster_channels(&self) -> Result<Vec<(String, usize)>, Error> {
        let peers = self.inner.cluster.peers().len();
        let mut all: HashMap<String, usize> = self.channels().into_iter().collect();
        if peers > 0 {
            let (id, mut rx) = self.inner.cluster.open_survey();
            let sent = self.send_control(Msg::SurveyChannels { id }).await;
            if sent.is_ok() {
                let deadline = tokio::time::Instant::now() + cluster::SURVEY_TIMEOUT;
                let mut got = 0;
                while got < peers {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(chs)) => {
                            got += 1;
                            for (ch, n) in chs {
                                *all.entry(ch).or_default() += n;
                            }
                        }
                        _ => break,
                    }
                }
                if got < peers {
                    tracing::warn!(answered = got, peers, "channels survey timed out");
                }
            }
            self.inner.cluster.close_survey(id);
            sent?;
        }
        let mut v: Vec<(String, usize)> = all.into_iter().collect();
        v.sort();
        Ok(v)
    }

    /// Compares the stream position of every channel with positioned subscribers against
    /// the broker's stream top. A channel behind the top (after a second look, so a
    /// publication still in flight is not mistaken for a loss) has lost a publication: its
    /// positioned subscribers resubscribe and recover.
    async fn check_positions(&self) {
        let positions = self.inner.hub.positions();
        if positions.is_empty() {
            return;
        }
        let broker = &self.inner.broker;
        let top_only = HistoryFilter {
            since: None,
            limit: 0,
            reverse: false,
        };
        let suspects: Vec<(String, StreamPosition)> =
            futures_util::stream::iter(positions.into_iter().map(|(ch, epoch, offset)| {
                let top_only = &top_only;
                async move {
                    let (_, top) = broker.history(&ch, top_only).await.ok()?;
                    (top.epoch != epoch || top.offset > offset).then_some((ch, top))
                }
            }))
            .buffer_unordered(32)
            .filter_map(|x| async move { x })
            .collect()
            .await;
        if suspects.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (ch, top) in suspects {
            let Some((epoch, offset)) = self.inner.hub.position(&ch) else {
                continue;
            };
            if epoch == top.epoch && offset >= top.offset {
                continue;
            }
            let n = self.inner.hub.stream_gap(&ch, &top.epoch, top.offset);
            metrics::counter!("hub_stream_gaps_total").increment(1);
            tracing::info!(channel = %ch, subscribers = n, "position check found a gap");
        }
    }

    /// Whether the engine can serve (its backend reachable).
    pub fn ready(&self) -> Result<(), EngineError> {
        self.inner.broker.ready()
    }

    /// Local channels with their number of subscribers.
    pub fn channels(&self) -> Vec<(String, usize)> {
        self.inner.hub.channels()
    }

    /// This node's statistics.
    pub fn info(&self) -> NodeInfo {
        let hub = &self.inner.hub;
        NodeInfo {
            uid: self.inner.uid.clone(),
            name: self.inner.config.name.clone(),
            version: self.inner.config.version.clone(),
            num_clients: hub.num_clients() as u32,
            num_users: hub.num_users() as u32,
            num_channels: hub.num_channels() as u32,
            num_subs: hub.num_subs() as u32,
            uptime: self.inner.started.elapsed().as_secs() as u32,
        }
    }

    /// Number of connections on this node.
    pub fn num_clients(&self) -> usize {
        self.inner.hub.num_clients()
    }

    /// Open WebSocket sockets on this node, including those not yet past `connect`.
    pub fn num_sockets(&self) -> usize {
        self.inner.gate.sockets()
    }

    /// The runtime's scheduling lag as last measured (a load indicator; above
    /// [`NodeConfig::overload_lag`] new connections are shed).
    pub fn scheduling_lag(&self) -> Duration {
        self.inner.gate.lag()
    }

    /// Whether [`shutdown`](Self::shutdown) has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Relaxed)
    }

    /// Stops accepting connections and closes every client with 3001 ("shutdown"), spread
    /// evenly over `window` so they do not all reconnect at once. Returns when all are gone
    /// or `window` plus 5 s have passed.
    pub async fn shutdown(&self, window: Duration) {
        self.inner.shutting_down.store(true, Ordering::Relaxed);
        let clients = self.inner.hub.all_clients();
        let n = clients.len().max(1) as u32;
        let step = window / n;
        for c in clients {
            c.control(Control::Disconnect(Disconnect::SHUTDOWN));
            if !step.is_zero() {
                tokio::time::sleep(step).await;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.num_clients() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::TracedDelivery;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Traces(Mutex<Vec<(String, String, u64)>>);

    impl Handler for Arc<Traces> {
        fn on_traced_delivery(&self, d: &TracedDelivery<'_>) {
            self.0
                .lock()
                .unwrap()
                .push((d.channel.to_owned(), d.trace.to_owned(), d.offset));
        }
    }

    #[tokio::test]
    async fn a_publication_s_trace_reaches_the_handler_of_the_delivering_node() {
        let traces = Arc::new(Traces::default());
        let node = Node::builder()
            .handler(traces.clone())
            .start()
            .await
            .unwrap();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let history = Some(crate::broker::HistoryOptions {
            size: 10,
            ttl: Duration::from_secs(60),
            meta_ttl: Duration::from_secs(600),
        });
        let publication = || Publication {
            data: Bytes::from_static(b"{}"),
            ..Default::default()
        };
        let traced = PublishOptions {
            history,
            trace: Some(tp.into()),
        };
        node.publish("ch", publication(), &traced).await.unwrap();
        // Without a trace: no call.
        let plain = PublishOptions {
            history,
            trace: None,
        };
        node.publish("ch", publication(), &plain).await.unwrap();
        node.publish("ch", publication(), &traced).await.unwrap();
        assert_eq!(
            *traces.0.lock().unwrap(),
            vec![
                ("ch".to_owned(), tp.to_owned(), 1),
                ("ch".to_owned(), tp.to_owned(), 3)
            ]
        );
    }
}
