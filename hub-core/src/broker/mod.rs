//! Brokers: publish/subscribe between nodes plus channel history.
//!
//! A broker must append to history and publish **atomically per channel** (or serialise
//! publishes per channel), so that offsets are gap-free and recovery is sound.

mod memory;
mod timed;

pub use memory::MemoryBroker;
pub use timed::ENGINE_OPS;
pub(crate) use timed::{TimedBroker, TimedPresence};

use bytes::Bytes;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::EngineError;
use crate::protocol::{ClientInfo, Publication, StreamPosition};

/// How long and how much history a channel keeps. History is on only when both `size` and
/// `ttl` are non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryOptions {
    /// Maximum publications kept.
    pub size: usize,
    /// Publications are kept this long after the last publish.
    pub ttl: Duration,
    /// The stream's epoch and top offset are kept this long after the last publish, so
    /// offsets stay monotonic across idle periods.
    pub meta_ttl: Duration,
}

impl HistoryOptions {
    /// Centrifugo's default meta TTL: 30 days.
    pub const DEFAULT_META_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

    /// Whether history is on.
    pub fn enabled(&self) -> bool {
        self.size > 0 && !self.ttl.is_zero()
    }
}

/// Options of one publish.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// Keep the publication in history, if the channel has history.
    pub history: Option<HistoryOptions>,
    /// A W3C `traceparent` carried with the publication to every node that delivers it (the
    /// node hands it to [`Handler::on_traced_delivery`](crate::Handler::on_traced_delivery)).
    /// Opaque to the hub; `None` (the usual case) costs nothing.
    pub trace: Option<Arc<str>>,
}

/// Which part of a stream to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    /// Publications after (reversed: before) this offset; `None` = from the start (reversed:
    /// from the end).
    pub since: Option<u64>,
    /// 0 = none (only the stream top), negative = all, N = at most N.
    pub limit: i32,
    /// Newest first.
    pub reverse: bool,
}

/// Receives what a broker delivers to this node. The [`Node`](crate::Node) implements it;
/// brokers never see node internals.
pub trait BrokerEventHandler: Send + Sync + 'static {
    /// A publication arrived for `channel`.
    fn handle_publication(&self, channel: &str, publication: Publication, position: StreamPosition);
    /// A publication published with a [`PublishOptions::trace`] arrived for `channel`.
    /// Default: as [`BrokerEventHandler::handle_publication`], the trace dropped.
    fn handle_traced_publication(
        &self,
        channel: &str,
        publication: Publication,
        position: StreamPosition,
        trace: &str,
    ) {
        let _ = trace;
        self.handle_publication(channel, publication, position);
    }
    /// Someone joined `channel`.
    fn handle_join(&self, channel: &str, info: ClientInfo);
    /// Someone left `channel`.
    fn handle_leave(&self, channel: &str, info: ClientInfo);
    /// Whether this node has local subscribers in `channel` (brokers reconcile their
    /// subscriptions with it, so a subscribe racing an unsubscribe ends in the right state).
    fn has_subscribers(&self, channel: &str) -> bool;
    /// A control message from another node.
    fn handle_control(&self, data: Bytes);
    /// Delivery may have lost messages (the broker reconnected, or fell behind): the node
    /// checks the stream positions of its channels.
    fn handle_resync(&self);
}

/// Publish/subscribe plus history with offsets and epochs.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Starts delivering events to `handler`. Called once by the node.
    async fn run(&self, handler: Arc<dyn BrokerEventHandler>) -> Result<(), EngineError>;
    /// A local client subscribes to `channel` (called for every subscription, after the
    /// node registered it). Returns once this node receives the channel's publications.
    async fn subscribe(&self, channel: &str) -> Result<(), EngineError>;
    /// This node's last subscriber left `channel`.
    async fn unsubscribe(&self, channel: &str) -> Result<(), EngineError>;
    /// Publishes, appending to history when `options.history` is on. Returns the position of
    /// the publication (empty when the channel keeps no history).
    async fn publish(
        &self,
        channel: &str,
        publication: Publication,
        options: &PublishOptions,
    ) -> Result<StreamPosition, EngineError>;
    /// Announces a join.
    async fn publish_join(&self, channel: &str, info: ClientInfo) -> Result<(), EngineError>;
    /// Announces a leave.
    async fn publish_leave(&self, channel: &str, info: ClientInfo) -> Result<(), EngineError>;
    /// Reads history. Returns the publications and the current stream top (creating an epoch
    /// when the channel has no stream yet).
    async fn history(
        &self,
        channel: &str,
        filter: &HistoryFilter,
    ) -> Result<(Vec<Publication>, StreamPosition), EngineError>;
    /// Drops the channel's history; the next publish starts a new epoch.
    async fn remove_history(&self, channel: &str) -> Result<(), EngineError>;
    /// Sends a control message to every other node. A single-node broker has no one to
    /// tell.
    async fn publish_control(&self, _data: Bytes) -> Result<(), EngineError> {
        Ok(())
    }
    /// Whether the broker can serve now (a broker whose backend is unreachable is not).
    fn ready(&self) -> Result<(), EngineError> {
        Ok(())
    }
}
