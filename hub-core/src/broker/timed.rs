//! Round-trip times of the engine: a [`Broker`] and [`PresenceStore`] wrapper that records
//! how long each call takes (`hub_broker_duration_seconds{op}`) and counts failed calls
//! (`hub_broker_errors_total{op}`), whatever the engine (memory, Redis, an embedder's own).
//! The node wraps whatever it is given, so engines need not measure themselves.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Broker, BrokerEventHandler, HistoryFilter, PublishOptions};
use crate::error::EngineError;
use crate::presence::PresenceStore;
use crate::protocol::{ClientInfo, PresenceStatsResult, Publication, StreamPosition};

/// The `op` label values of `hub_broker_duration_seconds` and `hub_broker_errors_total`, one
/// per engine call (an exporter can register the error counters at zero).
pub const ENGINE_OPS: &[&str] = &[
    "subscribe",
    "unsubscribe",
    "publish",
    "publish_join",
    "publish_leave",
    "history",
    "remove_history",
    "publish_control",
    "presence_add",
    "presence_remove",
    "presence",
    "presence_stats",
];

/// Runs one engine call, recording its duration and whether it failed.
async fn timed<T>(
    op: &'static str,
    call: impl Future<Output = Result<T, EngineError>>,
) -> Result<T, EngineError> {
    let start = Instant::now();
    let r = call.await;
    metrics::histogram!("hub_broker_duration_seconds", "op" => op)
        .record(start.elapsed().as_secs_f64());
    if r.is_err() {
        metrics::counter!("hub_broker_errors_total", "op" => op).increment(1);
    }
    r
}

/// A broker whose calls are timed.
pub(crate) struct TimedBroker(pub(crate) Arc<dyn Broker>);

#[async_trait]
impl Broker for TimedBroker {
    async fn run(&self, handler: Arc<dyn BrokerEventHandler>) -> Result<(), EngineError> {
        self.0.run(handler).await
    }
    async fn subscribe(&self, channel: &str) -> Result<(), EngineError> {
        timed("subscribe", self.0.subscribe(channel)).await
    }
    async fn unsubscribe(&self, channel: &str) -> Result<(), EngineError> {
        timed("unsubscribe", self.0.unsubscribe(channel)).await
    }
    async fn publish(
        &self,
        channel: &str,
        publication: Publication,
        options: &PublishOptions,
    ) -> Result<StreamPosition, EngineError> {
        timed("publish", self.0.publish(channel, publication, options)).await
    }
    async fn publish_join(&self, channel: &str, info: ClientInfo) -> Result<(), EngineError> {
        timed("publish_join", self.0.publish_join(channel, info)).await
    }
    async fn publish_leave(&self, channel: &str, info: ClientInfo) -> Result<(), EngineError> {
        timed("publish_leave", self.0.publish_leave(channel, info)).await
    }
    async fn history(
        &self,
        channel: &str,
        filter: &HistoryFilter,
    ) -> Result<(Vec<Publication>, StreamPosition), EngineError> {
        timed("history", self.0.history(channel, filter)).await
    }
    async fn remove_history(&self, channel: &str) -> Result<(), EngineError> {
        timed("remove_history", self.0.remove_history(channel)).await
    }
    async fn publish_control(&self, data: Bytes) -> Result<(), EngineError> {
        timed("publish_control", self.0.publish_control(data)).await
    }
    fn ready(&self) -> Result<(), EngineError> {
        self.0.ready()
    }
}

/// A presence store whose calls are timed.
pub(crate) struct TimedPresence(pub(crate) Arc<dyn PresenceStore>);

#[async_trait]
impl PresenceStore for TimedPresence {
    async fn add(&self, channel: &str, info: &ClientInfo) -> Result<(), EngineError> {
        timed("presence_add", self.0.add(channel, info)).await
    }
    async fn remove(&self, channel: &str, client_id: &str, user: &str) -> Result<(), EngineError> {
        timed("presence_remove", self.0.remove(channel, client_id, user)).await
    }
    async fn presence(&self, channel: &str) -> Result<HashMap<String, ClientInfo>, EngineError> {
        timed("presence", self.0.presence(channel)).await
    }
    async fn stats(&self, channel: &str) -> Result<PresenceStatsResult, EngineError> {
        timed("presence_stats", self.0.stats(channel)).await
    }
}
