//! Fire-and-forget delivery, shared by `client.proxy.send` ([`super::send`]) and
//! `channel.proxy.publication_forward` ([`super::forward`]): nobody waits for the backend.
//!
//! Delivery runs in a background task. A failed attempt (any [`CallError`](super::CallError):
//! gRPC status, timeout, open breaker, full bulkhead) is retried after a backoff with full
//! jitter — a random wait between 0 and `min(max_backoff, initial_backoff * 2^(retry-1))` —
//! up to `max_attempts` attempts. After the last one the event goes to the
//! [dead-letter store](crate::dead_letter), which replays it later through
//! [`Deliverable::from_entry`] and [`Deliverable::attempt`]. At most `max_pending` events are
//! in delivery on a node; past it new events are dead-lettered at once.
//!
//! Nothing is dropped silently: each kind's [`Deliverable::TOTAL_METRIC`] counts every event
//! once, as `delivered`, `dead_lettered`, or `lost` (the dead-letter store could not be
//! written; logged as an error); [`Deliverable::RETRIES_METRIC`] counts retries.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::Instrument as _;

use super::Backend;
use crate::config::RetrySettings;
use crate::dead_letter::{DeadLetters, Entry};

/// An event a backend receives fire and forget.
pub trait Deliverable: Clone + Send + Sync + 'static {
    /// The `event` label of `hub_proxy_calls_total` and logs (`send`, `publication_forward`).
    const EVENT: &'static str;
    /// What many of them are called in messages ("sends").
    const PLURAL: &'static str;
    /// Counts every event once by `result`: `delivered`, `dead_lettered`, `lost`.
    const TOTAL_METRIC: &'static str;
    /// Counts retries.
    const RETRIES_METRIC: &'static str;

    /// Makes one call to the backend (`attempt` = 1 for the first); the error says why it
    /// failed.
    fn attempt(
        &self,
        backend: &Backend,
        attempt: u32,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// The dead-letter entry after `attempts` attempts, the last failing with `why`.
    fn dead_letter(&self, attempts: u32, why: &str) -> Entry;

    /// The event a dead-letter entry of this kind holds; `None` when it cannot be rebuilt
    /// (invalid base64 payload).
    fn from_entry(entry: &Entry) -> Option<Self>;
}

/// The retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts, the first included (at least 1).
    pub max_attempts: u32,
    /// Cap of the first backoff.
    pub initial_backoff: Duration,
    /// Largest backoff.
    pub max_backoff: Duration,
    /// Events in delivery at once; past it new events are dead-lettered at once.
    pub max_pending: usize,
}

impl Retry {
    /// The policy a proxy's retry settings configure.
    pub fn from_config(c: &RetrySettings) -> Self {
        Retry {
            max_attempts: c.max_attempts.max(1),
            initial_backoff: c.initial_backoff,
            max_backoff: c.max_backoff,
            max_pending: c.max_pending.max(1),
        }
    }

    /// The largest wait before retry `n` (1 = the first retry).
    pub fn cap(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// A random wait in `0..=cap(n)` (full jitter).
    pub fn backoff(&self, n: u32) -> Duration {
        let cap = u64::try_from(self.cap(n).as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(fastrand::u64(0..=cap))
    }
}

/// How one event ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered at this attempt.
    Delivered(u32),
    /// Every attempt failed; stored in the dead-letter store.
    DeadLettered,
    /// Every attempt failed and the dead-letter store could not be written (logged).
    Lost,
}

/// Delivers events of one kind in the background: retries, then dead letters.
#[derive(Debug)]
pub struct Sender<E> {
    backend: Arc<Backend>,
    retry: Retry,
    store: Arc<DeadLetters>,
    /// Events whose delivery is still under way, so a shutdown can dead-letter them.
    pending: Arc<Mutex<HashMap<u64, E>>>,
    next_id: Arc<AtomicU64>,
}

impl<E> Clone for Sender<E> {
    fn clone(&self) -> Self {
        Sender {
            backend: self.backend.clone(),
            retry: self.retry,
            store: self.store.clone(),
            pending: self.pending.clone(),
            next_id: self.next_id.clone(),
        }
    }
}

impl<E: Deliverable> Sender<E> {
    /// A sender to `backend` with `retry`, dead-lettering into `store`.
    pub fn new(backend: Arc<Backend>, retry: Retry, store: Arc<DeadLetters>) -> Self {
        Sender {
            backend,
            retry,
            store,
            pending: Arc::default(),
            next_id: Arc::default(),
        }
    }

    /// Starts delivering `e` in a background task and returns at once. Needs a tokio runtime.
    pub fn spawn(&self, e: E) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut pending = self.pending_map();
            if pending.len() >= self.retry.max_pending {
                drop(pending);
                let s = self.clone();
                // Full: no delivery task; the event is kept in the store instead.
                tokio::spawn(async move {
                    let why = format!("too many {} pending delivery on this node", E::PLURAL);
                    s.dead_letter_now(&e, 0, &why).await;
                });
                return;
            }
            pending.insert(id, e.clone());
        }
        let s = self.clone();
        // The delivery joins the trace of what caused it (an API publish, a client send)
        // without holding that span open while it retries.
        let span = tracing::info_span!(
            target: crate::telemetry::TARGET,
            parent: None,
            "deliver_async",
            otel.name = E::EVENT,
            trace_id = tracing::field::Empty,
        );
        crate::telemetry::adopt(&span, crate::telemetry::current_context());
        tokio::spawn(
            async move {
                s.deliver(id, e).await;
            }
            .instrument(span),
        );
    }

    fn pending_map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, E>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes one event to the dead-letter store without trying (again) the backend; false
    /// if the store failed (the event is then lost, logged and counted).
    async fn dead_letter_now(&self, e: &E, attempts: u32, why: &str) -> bool {
        let entry = e.dead_letter(attempts, why);
        match self.store.append(&entry).await {
            Ok(stored) => {
                tracing::warn!(
                    event = E::EVENT, channel = %entry.channel, client = %entry.client,
                    user = %entry.user, attempts, error = why, ?stored,
                    store = %self.store.describe(), "event not delivered: dead-lettered"
                );
                metrics::counter!(E::TOTAL_METRIC, "result" => "dead_lettered").increment(1);
                true
            }
            Err(store_error) => {
                tracing::error!(
                    event = E::EVENT, channel = %entry.channel, client = %entry.client,
                    user = %entry.user, %store_error, error = why,
                    "event not delivered and not dead-lettered: lost"
                );
                metrics::counter!(E::TOTAL_METRIC, "result" => "lost").increment(1);
                false
            }
        }
    }

    /// At shutdown: writes every event still being delivered (waiting for a retry, or in
    /// flight) to the dead-letter store, so none is dropped silently. An event whose delivery
    /// succeeds during this call may be both delivered and dead-lettered (at least once); one
    /// whose last attempt fails is dead-lettered once, by whichever of the two takes it out of
    /// the pending map. Returns how many were written.
    pub async fn flush_pending(&self) -> usize {
        let events: Vec<E> = self.pending_map().drain().map(|(_, e)| e).collect();
        let mut written = 0;
        for e in &events {
            if self
                .dead_letter_now(e, 0, "the hub shut down before delivery")
                .await
            {
                written += 1;
            }
        }
        written
    }

    /// Delivers pending event `id` (`e`) with retries, then takes it out of the pending map;
    /// dead-letters it after the last failed attempt unless a shutdown's
    /// [`flush_pending`](Self::flush_pending) already took (and dead-lettered) it.
    async fn deliver(&self, id: u64, e: E) -> Outcome {
        let mut last_error = String::new();
        for n in 1..=self.retry.max_attempts {
            if n > 1 {
                metrics::counter!(E::RETRIES_METRIC).increment(1);
                tokio::time::sleep(self.retry.backoff(n - 1)).await;
            }
            match e.attempt(&self.backend, n).await {
                Ok(()) => {
                    self.pending_map().remove(&id);
                    metrics::counter!(E::TOTAL_METRIC, "result" => "delivered").increment(1);
                    return Outcome::Delivered(n);
                }
                Err(why) => {
                    tracing::debug!(event = E::EVENT, attempt = n, error = %why, "delivery failed");
                    last_error = why;
                }
            }
        }
        if self.pending_map().remove(&id).is_none() {
            // A shutdown flushed it meanwhile: already in the store.
            return Outcome::DeadLettered;
        }
        if self
            .dead_letter_now(&e, self.retry.max_attempts, &last_error)
            .await
        {
            Outcome::DeadLettered
        } else {
            Outcome::Lost
        }
    }
}

/// Turns a call error into the text kept as `last_error`.
pub fn describe(e: super::CallError) -> String {
    match e {
        super::CallError::Status(s) => format!("{:?}: {}", s.code(), s.message()),
        other => other.label().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_max_with_full_jitter() {
        let r = Retry {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_pending: 10,
        };
        assert_eq!(r.cap(1), Duration::from_millis(100));
        assert_eq!(r.cap(2), Duration::from_millis(200));
        assert_eq!(r.cap(4), Duration::from_millis(800));
        assert_eq!(r.cap(7), Duration::from_secs(5));
        assert_eq!(r.cap(1000), Duration::from_secs(5));
        for n in 1..10 {
            assert!(r.backoff(n) <= r.cap(n));
        }
    }
}
