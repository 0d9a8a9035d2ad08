//! Steps shared by the scenarios: reading the server's memory, opening the measured
//! connections, starting the publication schedule and summing up publish failures and
//! warnings.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::ConnectOpts;
use crate::fanout::{Clock, LatencySink, PublishLog};
use crate::procfs::{self, Proc};
use crate::stats::Timeline;
use crate::swarm::Opened;
use crate::workers::{self, ChannelSpec, Held};

/// The server's RSS before any connection opens (with --pid); an unreadable process fails.
pub(crate) fn server_rss_before(pid: Option<u32>) -> Result<Option<u64>, String> {
    match pid {
        Some(p) => Ok(Some(
            Proc::Pid(p).rss().ok_or_else(|| procfs::unreadable(p))?,
        )),
        None => Ok(None),
    }
}

/// The server's RSS once it stops growing (with --pid): read every 200 ms, for at most 3 s.
pub(crate) async fn settled_server_rss(pid: Option<u32>) -> Option<u64> {
    procfs::settled_rss(
        Proc::Pid(pid?),
        Duration::from_millis(200),
        Duration::from_secs(3),
    )
    .await
}

/// Growth from `before` to `after` per connection, bytes (both measured).
pub(crate) fn rss_per_connection(
    before: Option<u64>,
    after: Option<u64>,
    connections: u64,
) -> Option<f64> {
    crate::stats::per_item(after? as f64 - before? as f64, connections)
}

/// Opens `n` subscribers as `spec` says, each delivery going to a latency sink on a fresh
/// clock (with a per-second timeline when `timeline` is set, for `--report`). `reserve` is
/// the open files the caller needs beside them, and the flag to name when they do not fit.
pub(crate) async fn open_subscribers(
    c: &ConnectOpts,
    allow_remote: bool,
    n: u64,
    reserve: (u64, &str),
    spec: ChannelSpec,
    timeline: bool,
    progress: bool,
) -> Result<(Clock, Held, Opened), String> {
    let clock = Clock::new();
    let sink = Arc::new(LatencySink::new(clock, timeline.then(Timeline::default)));
    let (held, opened) = workers::open(c, allow_remote, n, reserve, spec, sink, progress).await?;
    Ok((clock, held, opened))
}

/// When the first publication goes: 100 ms from now, long enough for the delayed ACKs of
/// the subscribe replies (up to 40 ms on Linux) to pass, so that a server without
/// TCP_NODELAY does not hold it back behind them and the figures show the steady state.
/// Returns the instant and its µs on `clock`, which also becomes the timeline's origin.
pub(crate) fn schedule_start(clock: Clock, held: &mut Held) -> (Instant, u64) {
    let start = Instant::now() + Duration::from_millis(100);
    let start_us = clock.at_us(start);
    held.set_origin(start_us);
    (start, start_us)
}

/// The publish failures of `log` by kind, with the calls abandoned at the end added.
pub(crate) fn publish_failures(log: &PublishLog, abandoned: u64) -> BTreeMap<String, u64> {
    let mut failures = log.failures.lock().map(|f| f.clone()).unwrap_or_default();
    if abandoned > 0 {
        failures.insert("abandoned at the end".into(), abandoned);
    }
    failures
}

/// The first publish failure of `log` in full.
pub(crate) fn publish_first_error(log: &PublishLog) -> Option<String> {
    log.first_error.lock().ok().and_then(|f| f.clone())
}

/// A warning when fewer than `expected` deliveries arrived within `--drain`.
pub(crate) fn missing_deliveries(
    deliveries: u64,
    expected: u64,
    drain: Duration,
) -> Option<String> {
    (deliveries < expected).then(|| {
        format!(
            "{} deliveries missing after waiting --drain {:?}",
            expected - deliveries,
            drain
        )
    })
}
