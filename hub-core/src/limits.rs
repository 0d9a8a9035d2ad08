//! Protection: rate limits on commands and on new connections, connection caps, and load
//! shedding, so that no client (or crowd of clients) can hurt the others.
//!
//! Token buckets come from `governor` (GCRA). Refusals are part of the protocol: a command
//! over its rate gets error 111 (temporary), repeated abuse closes with 3013; a new
//! connection over a cap gets HTTP 503 (node-wide) or 429 (per address) with `Retry-After`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

/// A token bucket: `per_second` tokens refill each second, at most `burst` are saved up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained rate, per second.
    pub per_second: u32,
    /// Largest burst allowed at once.
    pub burst: u32,
}

impl RateLimit {
    /// A bucket; `None` if `per_second` is 0 (no limit).
    fn quota(&self) -> Option<Quota> {
        let rate = NonZeroU32::new(self.per_second)?;
        let burst = NonZeroU32::new(self.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        Some(Quota::per_second(rate).allow_burst(burst))
    }
}

/// Per-connection command limiter: a bucket and a count of recent refusals.
pub(crate) struct CommandLimiter {
    bucket: DefaultDirectRateLimiter,
    abuse_limit: u32,
    window_start: Instant,
    refused: u32,
}

/// What the limiter says of one command.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the rate.
    Allow,
    /// Over the rate: answer 111.
    Refuse,
    /// Over the rate too often: close with 3013.
    Abuse,
}

/// Refusals are counted over windows of this length.
const ABUSE_WINDOW: Duration = Duration::from_secs(10);

impl CommandLimiter {
    pub(crate) fn new(limit: RateLimit, abuse_limit: u32) -> Option<Self> {
        Some(CommandLimiter {
            bucket: RateLimiter::direct(limit.quota()?),
            abuse_limit,
            window_start: Instant::now(),
            refused: 0,
        })
    }

    pub(crate) fn check(&mut self) -> Verdict {
        if self.bucket.check().is_ok() {
            return Verdict::Allow;
        }
        let now = Instant::now();
        if now.duration_since(self.window_start) > ABUSE_WINDOW {
            self.window_start = now;
            self.refused = 0;
        }
        self.refused += 1;
        if self.abuse_limit > 0 && self.refused >= self.abuse_limit {
            Verdict::Abuse
        } else {
            Verdict::Refuse
        }
    }
}

/// Why a new connection was refused before the upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// 503 (node-wide) or 429 (per address).
    pub(crate) status: u16,
    /// Seconds for `Retry-After`.
    pub(crate) retry_after: u32,
    pub(crate) reason: &'static str,
}

/// Limits applied to new connections: a cap on open sockets, accept rates (node-wide and
/// per address), and overload shedding.
pub(crate) struct AcceptGate {
    max_connections: usize,
    sockets: Arc<AtomicUsize>,
    global: Option<DefaultDirectRateLimiter>,
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    overload_lag: Duration,
    /// The scheduling lag the load monitor last measured, in microseconds.
    lag_us: AtomicU64,
}

/// Holds a place among the node's open sockets; released on drop.
#[derive(Debug)]
pub(crate) struct SocketPermit(Arc<AtomicUsize>);

impl Drop for SocketPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("hub_sockets").decrement(1.0);
    }
}

impl AcceptGate {
    pub(crate) fn new(
        max_connections: usize,
        global: Option<RateLimit>,
        per_ip: Option<RateLimit>,
        overload_lag: Duration,
    ) -> Self {
        AcceptGate {
            max_connections,
            sockets: Arc::new(AtomicUsize::new(0)),
            global: global.and_then(|l| l.quota()).map(RateLimiter::direct),
            per_ip: per_ip.and_then(|l| l.quota()).map(RateLimiter::dashmap),
            overload_lag,
            lag_us: AtomicU64::new(0),
        }
    }

    /// Open sockets (connected or not yet).
    pub(crate) fn sockets(&self) -> usize {
        self.sockets.load(Ordering::Relaxed)
    }

    /// Last measured scheduling lag.
    pub(crate) fn lag(&self) -> Duration {
        Duration::from_micros(self.lag_us.load(Ordering::Relaxed))
    }

    /// Admits a new connection or says why not. Old connections are never touched: under
    /// overload the node sheds new work first.
    pub(crate) fn admit(&self, ip: Option<IpAddr>) -> Result<SocketPermit, Refusal> {
        let refuse = |status, retry_after, reason| {
            metrics::counter!("hub_connections_refused_total", "reason" => reason).increment(1);
            Err(Refusal {
                status,
                retry_after,
                reason,
            })
        };
        if self.max_connections > 0 && self.sockets() >= self.max_connections {
            return refuse(503, 5, "connection limit reached");
        }
        if !self.overload_lag.is_zero() && self.lag() > self.overload_lag {
            return refuse(503, 2, "node overloaded");
        }
        if let (Some(l), Some(ip)) = (&self.per_ip, ip) {
            if l.check_key(&ip).is_err() {
                return refuse(429, 1, "too many connections from this address");
            }
        }
        if let Some(l) = &self.global {
            if l.check().is_err() {
                return refuse(503, 1, "connection rate limit reached");
            }
        }
        self.sockets.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("hub_sockets").increment(1.0);
        Ok(SocketPermit(self.sockets.clone()))
    }

    /// Runs the background work: measuring scheduling lag and forgetting idle addresses.
    /// Stops when the gate is dropped.
    pub(crate) fn spawn_monitor(gate: &Arc<AcceptGate>) {
        const TICK: Duration = Duration::from_millis(100);
        let weak: Weak<AcceptGate> = Arc::downgrade(gate);
        tokio::spawn(async move {
            let mut smoothed = 0.0f64;
            let mut ticks = 0u64;
            loop {
                let start = Instant::now();
                tokio::time::sleep(TICK).await;
                let Some(gate) = weak.upgrade() else { break };
                // How late the runtime woke us: a measure of how busy it is.
                let late = start.elapsed().saturating_sub(TICK).as_micros() as f64;
                smoothed = 0.7 * smoothed + 0.3 * late;
                gate.lag_us.store(smoothed as u64, Ordering::Relaxed);
                ticks += 1;
                if ticks.is_multiple_of(10) {
                    metrics::gauge!("hub_scheduler_lag_seconds").set(smoothed / 1e6);
                }
                if ticks.is_multiple_of(600) {
                    gate.forget_idle_addresses();
                }
            }
        });
    }

    /// Forgets addresses whose buckets are full again (called periodically).
    fn forget_idle_addresses(&self) {
        if let Some(l) = &self.per_ip {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_over_the_rate_are_refused_then_called_abuse() {
        let mut l = CommandLimiter::new(
            RateLimit {
                per_second: 1,
                burst: 3,
            },
            4,
        )
        .unwrap();
        for _ in 0..3 {
            assert_eq!(l.check(), Verdict::Allow);
        }
        for _ in 0..3 {
            assert_eq!(l.check(), Verdict::Refuse);
        }
        assert_eq!(l.check(), Verdict::Abuse);
    }

    #[test]
    fn a_zero_rate_means_no_limit() {
        assert!(CommandLimiter::new(
            RateLimit {
                per_second: 0,
                burst: 0
            },
            1
        )
        .is_none());
    }

    #[test]
    fn the_gate_caps_sockets_and_frees_places_on_drop() {
        let g = AcceptGate::new(2, None, None, Duration::ZERO);
        let a = g.admit(None).unwrap();
        let _b = g.admit(None).unwrap();
        let r = g.admit(None).unwrap_err();
        assert_eq!(r.status, 503);
        drop(a);
        assert!(g.admit(None).is_ok());
    }

    #[test]
    fn the_gate_limits_each_address_separately() {
        let per_ip = RateLimit {
            per_second: 1,
            burst: 2,
        };
        let g = AcceptGate::new(0, None, Some(per_ip), Duration::ZERO);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let _p1 = g.admit(Some(a)).unwrap();
        let _p2 = g.admit(Some(a)).unwrap();
        assert_eq!(g.admit(Some(a)).unwrap_err().status, 429);
        assert!(
            g.admit(Some(b)).is_ok(),
            "another address has its own bucket"
        );
    }

    #[test]
    fn under_overload_new_connections_are_shed() {
        let g = AcceptGate::new(0, None, None, Duration::from_millis(200));
        assert!(g.admit(None).is_ok());
        g.lag_us.store(350_000, Ordering::Relaxed);
        let r = g.admit(None).unwrap_err();
        assert_eq!((r.status, r.reason), (503, "node overloaded"));
        g.lag_us.store(1_000, Ordering::Relaxed);
        assert!(g.admit(None).is_ok());
    }

    #[tokio::test]
    async fn the_monitor_measures_a_blocked_runtime() {
        let g = Arc::new(AcceptGate::new(0, None, None, Duration::from_millis(50)));
        AcceptGate::spawn_monitor(&g);
        tokio::time::sleep(Duration::from_millis(150)).await;
        // Block the (current-thread) runtime: the monitor wakes late.
        std::thread::sleep(Duration::from_millis(400));
        tokio::time::sleep(Duration::from_millis(10)).await;
        tokio::task::yield_now().await;
        let deadline = Instant::now() + Duration::from_secs(2);
        while g.lag() < Duration::from_millis(50) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(g.lag() >= Duration::from_millis(50), "lag {:?}", g.lag());
    }

    #[test]
    fn the_gate_limits_the_node_wide_rate() {
        let global = RateLimit {
            per_second: 1,
            burst: 1,
        };
        let g = AcceptGate::new(0, Some(global), None, Duration::ZERO);
        let _p = g.admit(None).unwrap();
        assert_eq!(g.admit(None).unwrap_err().status, 503);
    }
}
