//! `client.proxy.send`: client `send` messages go to the backend's `SendMessage` (a hub
//! extension of `proto/proxy.proto`; Centrifugo's proxy API has no call for `send`), fire and
//! forget.
//!
//! The client is not held up: delivery runs in a background task. A failed attempt (any
//! [`CallError`](super::CallError): gRPC status, timeout, open breaker, full bulkhead) is
//! retried after a backoff with full jitter — a random wait between 0 and
//! `min(max_backoff, initial_backoff * 2^(retry-1))` — up to `max_attempts` attempts. After
//! the last one the event goes to the [`dead-letter store`](crate::dead_letter).
//!
//! Nothing is dropped silently: `hub_proxy_send_total{result}` counts every event once, as
//! `delivered`, `dead_lettered`, or `lost` (the dead-letter store could not be written; logged
//! as an error); `hub_proxy_send_retries_total` counts retries.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::{proto, request, Backend};
use crate::config::SendProxy;
use crate::dead_letter::{DeadLetters, Entry};

/// A client's `send` message.
#[derive(Debug, Clone)]
pub struct SendEvent {
    /// The sender's user id.
    pub user: String,
    /// The sender's client id.
    pub client: String,
    /// The payload.
    pub data: Bytes,
    /// When the client sent it, unix milliseconds.
    pub timestamp_ms: i64,
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
    /// The policy `client.proxy.send` configures.
    pub fn from_config(c: &SendProxy) -> Self {
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

/// Makes one `SendMessage` call; the error says why it failed.
pub async fn attempt(backend: &Backend, e: &SendEvent, attempt: u32) -> Result<(), String> {
    let req = proto::SendMessageRequest {
        client: e.client.clone(),
        transport: "websocket".into(),
        protocol: "json".into(),
        encoding: "json".into(),
        user: e.user.clone(),
        data: e.data.clone(),
        attempt,
        timestamp_ms: e.timestamp_ms,
        ..Default::default()
    };
    backend
        .call("send", |mut c, left| async move {
            c.send_message(request(req, left)).await
        })
        .await
        .map(|_| ())
        .map_err(|e| match e {
            super::CallError::Status(s) => format!("{:?}: {}", s.code(), s.message()),
            other => other.label().to_string(),
        })
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

/// Delivers `send` events in the background: retries, then dead letters.
#[derive(Debug, Clone)]
pub struct Sender {
    backend: Arc<Backend>,
    retry: Retry,
    store: Arc<DeadLetters>,
    /// Events whose delivery is still under way, so a shutdown can dead-letter them.
    pending: Arc<Mutex<HashMap<u64, SendEvent>>>,
    next_id: Arc<AtomicU64>,
}

impl Sender {
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

    /// Starts delivering `e` in a background task and returns at once.
    pub fn spawn(&self, e: SendEvent) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut pending = self.pending_map();
            if pending.len() >= self.retry.max_pending {
                drop(pending);
                let s = self.clone();
                // Full: no new delivery task; the event is kept in the store instead.
                tokio::task::spawn_blocking(move || {
                    s.dead_letter_now(&e, 0, "too many sends pending delivery on this node");
                });
                return;
            }
            pending.insert(id, e.clone());
        }
        let s = self.clone();
        tokio::spawn(async move {
            s.deliver(e).await;
            s.pending_map().remove(&id);
        });
    }

    fn pending_map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, SendEvent>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes one event to the dead-letter store without trying (again) the backend; false
    /// if the store failed (the event is then lost, logged and counted).
    fn dead_letter_now(&self, e: &SendEvent, attempts: u32, why: &str) -> bool {
        let entry = Entry::new(
            e.user.clone(),
            e.client.clone(),
            &e.data,
            attempts,
            why.to_string(),
            e.timestamp_ms,
        );
        match self.store.append(&entry) {
            Ok(()) => {
                tracing::warn!(
                    client = %e.client, user = %e.user, attempts, error = why,
                    path = %self.store.path().display(), "send not delivered: dead-lettered"
                );
                metrics::counter!("hub_proxy_send_total", "result" => "dead_lettered").increment(1);
                true
            }
            Err(store_error) => {
                tracing::error!(client = %e.client, user = %e.user, %store_error, error = why,
                    "send not delivered and not dead-lettered: event lost");
                metrics::counter!("hub_proxy_send_total", "result" => "lost").increment(1);
                false
            }
        }
    }

    /// At shutdown: writes every event still being delivered (waiting for a retry, or in
    /// flight) to the dead-letter store, so none is dropped silently. An event whose delivery
    /// completes during this call may be both delivered and dead-lettered (at least once).
    /// Returns how many were written.
    pub fn flush_pending(&self) -> usize {
        let events: Vec<SendEvent> = self.pending_map().drain().map(|(_, e)| e).collect();
        events
            .iter()
            .filter(|e| self.dead_letter_now(e, 0, "the hub shut down before delivery"))
            .count()
    }

    /// Delivers `e` with retries; dead-letters it after the last attempt.
    pub async fn deliver(&self, e: SendEvent) -> Outcome {
        let mut last_error = String::new();
        for n in 1..=self.retry.max_attempts {
            if n > 1 {
                metrics::counter!("hub_proxy_send_retries_total").increment(1);
                tokio::time::sleep(self.retry.backoff(n - 1)).await;
            }
            match attempt(&self.backend, &e, n).await {
                Ok(()) => {
                    metrics::counter!("hub_proxy_send_total", "result" => "delivered").increment(1);
                    return Outcome::Delivered(n);
                }
                Err(why) => {
                    tracing::debug!(client = %e.client, attempt = n, error = %why, "send delivery failed");
                    last_error = why;
                }
            }
        }
        // The store is a file: write it off the async workers.
        let s = self.clone();
        let attempts = self.retry.max_attempts;
        let written =
            tokio::task::spawn_blocking(move || s.dead_letter_now(&e, attempts, &last_error))
                .await
                .unwrap_or_else(|j| {
                    tracing::error!(error = %j, "dead-letter task failed: event lost");
                    metrics::counter!("hub_proxy_send_total", "result" => "lost").increment(1);
                    false
                });
        if written {
            Outcome::DeadLettered
        } else {
            Outcome::Lost
        }
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
