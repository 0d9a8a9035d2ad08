//! Steps shared by the scenarios: reading the server's memory (of one process, or summed over
//! a cluster's), opening the measured connections, starting the publication schedule and
//! summing up publish failures and warnings.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::ConnectOpts;
use crate::fanout::{Clock, LatencySink, PublishLog};
use crate::procfs::{self, Proc};
use crate::stats::Timeline;
use crate::swarm::Opened;
use crate::workers::{self, ChannelSpec, Held, Watch};

/// The servers' RSS before any connection opens (with --pid; summed over the processes),
/// once every pid is checked: an unreadable process fails, named.
pub(crate) fn server_rss_before(pids: &[u32]) -> Result<Option<u64>, String> {
    procfs::check_readable(pids)?;
    Ok(server_rss(pids))
}

/// The servers' RSS now (with --pid; summed over the processes), bytes.
pub(crate) fn server_rss(pids: &[u32]) -> Option<u64> {
    procfs::sum_over(pids, Proc::rss)
}

/// The servers' RSS (summed) once it stops growing (with --pid): read every 200 ms, for at
/// most 3 s.
pub(crate) async fn settled_server_rss(pids: &[u32]) -> Option<u64> {
    procfs::settled_rss(
        || server_rss(pids),
        Duration::from_millis(200),
        Duration::from_secs(3),
    )
    .await
}

/// How the human summaries name the server processes: `pid 7`, or `pids 7, 8, 9 summed`.
pub(crate) fn pids_label(pids: &[u32]) -> String {
    match pids {
        [pid] => format!("pid {pid}"),
        _ => {
            let list: Vec<String> = pids.iter().map(u32::to_string).collect();
            format!("pids {} summed", list.join(", "))
        }
    }
}

/// Growth from `before` to `after` per connection, bytes (both measured; with several
/// server processes, both are sums).
pub(crate) fn rss_per_connection(
    before: Option<u64>,
    after: Option<u64>,
    connections: u64,
) -> Option<f64> {
    crate::stats::per_item(after? as f64 - before? as f64, connections)
}

/// Opens `n` subscribers as `spec` says, each delivery going to a latency sink on a fresh
/// clock (with a per-second timeline when `timeline` is set, for `--report`). `reserve` is
/// the open files the caller needs beside them, and the flag to name when they do not fit;
/// `watch`, how the opening is followed (a progress bar, the count connected so far).
pub(crate) async fn open_subscribers(
    c: &ConnectOpts,
    allow_remote: bool,
    n: u64,
    reserve: (u64, &str),
    spec: ChannelSpec,
    timeline: bool,
    watch: Watch,
) -> Result<(Clock, Held, Opened), String> {
    let clock = Clock::new();
    let sink = Arc::new(LatencySink::new(clock, timeline.then(Timeline::default)));
    let (held, opened) = workers::open(c, allow_remote, n, reserve, spec, sink, watch).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_or_several_server_processes() {
        assert_eq!(pids_label(&[7]), "pid 7");
        assert_eq!(pids_label(&[101, 102, 103]), "pids 101, 102, 103 summed");
        assert_eq!(server_rss(&[]), None);
        assert!(server_rss(&[std::process::id()]).is_some_and(|r| r > 0));
        assert!(server_rss_before(&[std::process::id(), u32::MAX])
            .unwrap_err()
            .contains(&u32::MAX.to_string()));
        // Growth per connection of the summed RSS: 3 nodes of 10 MiB grew by 1 MiB each,
        // over 3000 connections in all.
        let (before, after) = (30 << 20, 33 << 20);
        assert_eq!(
            rss_per_connection(Some(before), Some(after), 3000),
            Some(1048.576)
        );
        assert_eq!(rss_per_connection(None, Some(after), 3000), None);
    }
}
