//! `idle`: N connections, each connected and subscribed, held open. Measures the connect rate,
//! the server's memory per connection (RSS, summed over the processes of a cluster: before,
//! after, and read at steps of the count connected while opening) and the kernel's TCP
//! memory. The server's RSS comes from `/proc` with `--pid`, else from each node's `/metrics`
//! (`process_resident_memory_bytes`), so a server in a container or elsewhere is measured too.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use crate::cli::IdleArgs;
use crate::procfs::{self, Proc, TcpSockstat};
use crate::report::{Plot, Section};
use crate::server_metrics::{self, Endpoint};
use crate::stats::{self, LatencySummary};
use crate::swarm::OnConnected;
use crate::workers::{ChannelSpec, Watch};
use crate::{scenario, Outcome};

/// One point of the memory curve: the servers' RSS (summed) when `connections` were
/// connected and subscribed.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub(crate) struct RssSample {
    /// Connected and subscribed when it was read.
    pub(crate) connections: u64,
    /// RSS then, bytes (summed over the processes).
    pub(crate) rss_bytes: u64,
    /// `(rss_bytes - rss_before_bytes) / connections`.
    pub(crate) bytes_per_connection: f64,
}

/// Connections between two readings of the curve: N/20, and at least 500 (closer readings
/// would mostly show the allocator's steps).
pub(crate) fn sample_step(connections: u64) -> u64 {
    connections.div_ceil(20).max(500)
}

/// The curve of `readings` (connections, RSS in bytes) over the RSS `before` opening; a
/// reading at 0 connections has no per-connection figure and is left out.
pub(crate) fn rss_curve(before: u64, readings: &[(u64, u64)]) -> Vec<RssSample> {
    readings
        .iter()
        .filter(|r| r.0 > 0)
        .map(|&(connections, rss_bytes)| RssSample {
            connections,
            rss_bytes,
            bytes_per_connection: (rss_bytes as f64 - before as f64) / connections as f64,
        })
        .collect()
}

/// Reads the servers' RSS while connections open: each time the count connected reaches the
/// next multiple of `step`, and once more when opening is over (a few dozen reads of
/// `/proc/PID/status` in all).
pub(crate) struct RssSampler {
    read: Box<dyn Fn() -> Option<u64> + Send + Sync>,
    step: u64,
    /// The readings `(connections, rss)`, and the count of the next one.
    state: Mutex<(Vec<(u64, u64)>, u64)>,
}

impl RssSampler {
    /// A sampler reading with `read` every `step` connections.
    pub(crate) fn new(step: u64, read: impl Fn() -> Option<u64> + Send + Sync + 'static) -> Self {
        let step = step.max(1);
        RssSampler {
            read: Box::new(read),
            step,
            state: Mutex::new((Vec::new(), step)),
        }
    }

    /// `connected` are connected now: a reading if that reaches the next step (one reading
    /// when a jump passes several).
    pub(crate) fn connected(&self, connected: u64) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (readings, next) = &mut *state;
        if connected < *next {
            return;
        }
        *next = (connected / self.step + 1) * self.step;
        if let Some(rss) = (self.read)() {
            readings.push((connected, rss));
        }
    }

    /// Opening is over with `connected` connected: a last reading unless there is one at that
    /// count already. Returns the readings.
    pub(crate) fn finish(&self, connected: u64) -> Vec<(u64, u64)> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let readings = &mut state.0;
        if connected > 0 && readings.last().is_none_or(|r| r.0 < connected) {
            if let Some(rss) = (self.read)() {
                readings.push((connected, rss));
            }
        }
        std::mem::take(readings)
    }
}

/// Where the servers' memory was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum MemorySource {
    /// `/proc/PID/status` `VmRSS` of the `--pid` processes.
    Proc,
    /// `process_resident_memory_bytes` of each node's `/metrics`.
    Metrics,
}

/// How the servers' memory is read: from `/proc` of the `--pid` processes, or from the nodes'
/// `/metrics`.
#[derive(Debug)]
enum MemoryReader {
    Proc(Vec<u32>),
    Metrics(Vec<Endpoint>),
}

impl MemoryReader {
    /// The RSS now, bytes (summed over the processes or nodes); `None` if one could not be
    /// read.
    fn read(&self) -> Option<u64> {
        match self {
            MemoryReader::Proc(pids) => scenario::server_rss(pids),
            MemoryReader::Metrics(endpoints) => server_metrics::rss_sum(endpoints).ok(),
        }
    }
}

/// The reader of the servers' memory and its first reading: `/proc` with `--pid`; else the
/// nodes' `/metrics` (`--metrics-url`, or derived from `--url`). An unreadable `--pid` or
/// `--metrics-url` fails the run; a derived `/metrics` that does not answer leaves the memory
/// out, and the reason is returned instead.
async fn memory_reader(
    args: &IdleArgs,
    allow_remote: bool,
) -> Result<Result<(MemoryReader, u64), String>, String> {
    let c = &args.connect;
    if !c.pid.is_empty() {
        let before = scenario::server_rss_before(&c.pid)?
            .ok_or_else(|| "--pid: cannot read the memory of the processes".to_owned())?;
        return Ok(Ok((MemoryReader::Proc(c.pid.clone()), before)));
    }
    let endpoints = server_metrics::endpoints(&args.metrics_url, &c.url, allow_remote).await?;
    match server_metrics::rss_sum(&endpoints) {
        Ok(before) => Ok(Ok((MemoryReader::Metrics(endpoints), before))),
        Err(e) if !args.metrics_url.is_empty() => Err(format!("--metrics-url: {e}")),
        Err(e) => Ok(Err(format!(
            "no --pid, and the server's /metrics could not be read ({e})"
        ))),
    }
}

/// The server's memory before and after; with several processes (a cluster), their sums.
#[derive(Debug, serde::Serialize)]
pub(crate) struct ServerMemory {
    /// Where it was read: "proc" (`--pid`) or "metrics" (each node's `/metrics`).
    pub(crate) source: MemorySource,
    /// The server's pid, when there is one process (as in reports before `pids`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pid: Option<u32>,
    /// The server processes measured (`--pid`; empty when read from `/metrics`).
    pub(crate) pids: Vec<u32>,
    /// The nodes' Prometheus endpoints read (without `--pid`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) metrics_urls: Vec<String>,
    /// RSS before opening, bytes (summed over the processes).
    pub(crate) rss_before_bytes: u64,
    /// RSS once all were connected and settled, bytes (summed over the processes).
    pub(crate) rss_after_bytes: u64,
    /// RSS growth per connected connection, bytes (of the sums).
    pub(crate) rss_per_connection_bytes: Option<f64>,
    /// Connections between the readings of `rss_samples`.
    pub(crate) rss_sample_step: u64,
    /// RSS (summed) read while the connections opened: each time the count connected
    /// reached a multiple of `rss_sample_step`, and once all were open (before `--settle`).
    pub(crate) rss_samples: Vec<RssSample>,
}

impl ServerMemory {
    /// How the summaries name where the memory was read: `pid 7`, `pids 7, 8 summed`,
    /// `/metrics of http://127.0.0.1:8000/metrics`, or several URLs summed.
    pub(crate) fn label(&self) -> String {
        match (self.source, &self.metrics_urls[..]) {
            (MemorySource::Proc, _) => scenario::pids_label(&self.pids),
            (MemorySource::Metrics, [url]) => format!("{} of {url}", server_metrics::RSS_METRIC),
            (MemorySource::Metrics, urls) => {
                format!(
                    "{} of {} summed",
                    server_metrics::RSS_METRIC,
                    urls.join(", ")
                )
            }
        }
    }
}

/// The kernel's TCP socket memory before and after (both ends of every loopback
/// connection: the server's and this client's).
#[derive(Debug, serde::Serialize)]
pub(crate) struct SocketMemory {
    /// Before opening.
    pub(crate) before: TcpSockstat,
    /// After settling.
    pub(crate) after: TcpSockstat,
    /// Page size used to turn pages into bytes.
    pub(crate) page_size: u64,
    /// Growth of TCP socket memory per connection (both ends), bytes.
    pub(crate) mem_per_connection_bytes: Option<f64>,
}

/// The `idle` summary.
#[derive(Debug, serde::Serialize)]
pub(crate) struct IdleReport {
    /// "idle".
    pub(crate) scenario: &'static str,
    /// The WebSocket URL.
    pub(crate) url: String,
    /// Connections asked for.
    pub(crate) connections: u64,
    /// Channels per connection.
    pub(crate) channels_per_conn: u32,
    /// Connected and subscribed.
    pub(crate) connected: u64,
    /// The protocol flavour: "json" or "protobuf" (`--protobuf`).
    pub(crate) protocol: crate::conn::Flavour,
    /// permessage-deflate was negotiated on every connected connection (`--compression`).
    pub(crate) compression: bool,
    /// Failed to connect or subscribe.
    pub(crate) failed: u64,
    /// Failures by kind.
    pub(crate) failures: BTreeMap<String, u64>,
    /// The first failure in full.
    pub(crate) first_error: Option<String>,
    /// Not tried because --max-connect-time passed.
    pub(crate) not_attempted: u64,
    /// Time to open them all, seconds.
    pub(crate) connect_secs: f64,
    /// Connections (handshake + connect + subscribe) per second.
    pub(crate) connect_rate_per_sec: f64,
    /// Time for one connection to be connected and subscribed.
    pub(crate) connect_latency: LatencySummary,
    /// SYNs the kernel dropped on full accept queues while connecting (machine-wide
    /// `TcpExt: ListenOverflows`); each shows as a ~1 s connect time. Lower --concurrency or
    /// raise the server's listen backlog.
    pub(crate) listen_overflows: Option<u64>,
    /// Time held open after measuring, seconds.
    pub(crate) hold_secs: f64,
    /// Connections that ended before the stop, by reason.
    pub(crate) dropped: BTreeMap<String, u64>,
    /// Server pings answered.
    pub(crate) pings_answered: u64,
    /// Bytes received while opening, per connected connection: the WebSocket data frames
    /// (headers included, as on the wire) of the replies to connect and subscribe (and any
    /// server ping among them); the HTTP upgrade response not included.
    pub(crate) opening_bytes_per_connection: Option<f64>,
    /// Bytes of WebSocket data frames received once subscribed, until the stop, over all
    /// connections (server pings: idle connections receive nothing else).
    pub(crate) held_bytes_received: u64,
    /// Server memory (summed over its processes or nodes), from /proc with --pid, else from
    /// each node's /metrics.
    pub(crate) server: Option<ServerMemory>,
    /// Why the server's memory is missing, when it is.
    pub(crate) server_memory_error: Option<String>,
    /// Kernel TCP memory.
    pub(crate) sockets: Option<SocketMemory>,
    /// This client's own RSS after settling, bytes.
    pub(crate) client_rss_bytes: Option<u64>,
}

/// Runs the scenario.
pub(crate) async fn run(
    args: IdleArgs,
    allow_remote: bool,
    progress: bool,
) -> Result<Outcome<IdleReport>, String> {
    let c = &args.connect;
    let (reader, rss_before, memory_error) = match memory_reader(&args, allow_remote).await? {
        Ok((reader, before)) => (Some(Arc::new(reader)), Some(before), None),
        Err(why) => (None, None, Some(why)),
    };
    let sock_before = procfs::tcp_sockstat();
    let overflows_before = procfs::listen_overflows();
    let step = sample_step(args.connections);
    let sampler = reader
        .clone()
        .map(|reader| Arc::new(RssSampler::new(step, move || reader.read())));
    let watch = Watch {
        progress,
        on_connected: sampler
            .clone()
            .map(|s| Arc::new(move |n| s.connected(n)) as OnConnected),
    };

    // Idle connections receive nothing: no timeline.
    let (_, held, opened) = scenario::open_subscribers(
        c,
        allow_remote,
        args.connections,
        (0, "--connections"),
        ChannelSpec::PerConn {
            prefix: args.channel_prefix.clone(),
            per_conn: args.channels_per_conn,
        },
        false,
        watch,
    )
    .await?;
    let readings = sampler
        .map(|s| s.finish(opened.connected))
        .unwrap_or_default();
    let listen_overflows = match (overflows_before, procfs::listen_overflows()) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b)),
        _ => None,
    };

    tokio::time::sleep(args.settle).await;
    let rss_after = match &reader {
        Some(r) => {
            procfs::settled_rss(
                || r.read(),
                std::time::Duration::from_millis(200),
                std::time::Duration::from_secs(3),
            )
            .await
        }
        None => None,
    };
    let sock_after = procfs::tcp_sockstat();
    let client_rss = Proc::OwnProcess.rss();

    tokio::time::sleep(args.hold).await;
    let ending = held.stop().await.ending;

    let n = opened.connected;
    let report = IdleReport {
        scenario: "idle",
        url: c.url.clone(),
        connections: args.connections,
        channels_per_conn: args.channels_per_conn,
        connected: n,
        protocol: c.wire().flavour,
        compression: n > 0 && opened.compressed == n,
        failed: opened.failed(),
        failures: opened.failures.clone(),
        first_error: opened.first_error.clone(),
        not_attempted: opened.not_attempted,
        connect_secs: opened.elapsed.as_secs_f64(),
        connect_rate_per_sec: stats::per_sec(n, opened.elapsed),
        connect_latency: LatencySummary::of(&opened.latency),
        listen_overflows,
        hold_secs: args.hold.as_secs_f64(),
        pings_answered: ending.pings_answered,
        opening_bytes_per_connection: stats::per_item(opened.opening_bytes as f64, n),
        held_bytes_received: ending.bytes_received,
        dropped: ending.dropped,
        server_memory_error: match (&memory_error, &reader, rss_after) {
            (Some(e), _, _) => Some(e.clone()),
            (None, Some(_), None) => Some("the server's memory could not be read after".into()),
            _ => None,
        },
        server: match (rss_before, rss_after, reader.as_deref()) {
            (Some(b), Some(a), Some(reader)) => Some(ServerMemory {
                source: match reader {
                    MemoryReader::Proc(_) => MemorySource::Proc,
                    MemoryReader::Metrics(_) => MemorySource::Metrics,
                },
                pid: match c.pid[..] {
                    [pid] => Some(pid),
                    _ => None,
                },
                pids: c.pid.clone(),
                metrics_urls: match reader {
                    MemoryReader::Proc(_) => Vec::new(),
                    MemoryReader::Metrics(e) => e.iter().map(|e| e.url.clone()).collect(),
                },
                rss_before_bytes: b,
                rss_after_bytes: a,
                rss_per_connection_bytes: scenario::rss_per_connection(rss_before, rss_after, n),
                rss_sample_step: step,
                rss_samples: rss_curve(b, &readings),
            }),
            _ => None,
        },
        sockets: match (sock_before, sock_after) {
            (Some(b), Some(a)) => {
                let page = procfs::page_size();
                Some(SocketMemory {
                    before: b,
                    after: a,
                    page_size: page,
                    mem_per_connection_bytes: stats::per_item(
                        (a.mem_pages as f64 - b.mem_pages as f64) * page as f64,
                        n,
                    ),
                })
            }
            _ => None,
        },
        client_rss_bytes: client_rss,
    };
    if let Some(dir) = &args.output.report {
        crate::report::write(
            dir,
            "idle",
            &report.human(),
            &[],
            &[report.memory_section()],
        )?;
    }
    let complete = report.connected == report.connections && report.dropped.is_empty();
    Ok(Outcome { report, complete })
}

fn kib(bytes: f64) -> f64 {
    bytes / 1024.0
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl IdleReport {
    /// The human summary.
    pub(crate) fn human(&self) -> String {
        let mut s = String::new();
        let mut line = |l: String| {
            s.push_str(&l);
            s.push('\n');
        };
        line(format!(
            "idle: {} ({}{})",
            self.url,
            self.protocol.label(),
            if self.compression {
                ", permessage-deflate"
            } else {
                ""
            }
        ));
        line(format!(
            "  connections   {} connected, {} failed{} (of {}; {} channel(s) each)",
            self.connected,
            self.failed,
            if self.not_attempted > 0 {
                format!(
                    ", {} not attempted (--max-connect-time)",
                    self.not_attempted
                )
            } else {
                String::new()
            },
            self.connections,
            self.channels_per_conn
        ));
        for (kind, n) in &self.failures {
            line(format!("    {n} × {kind}"));
        }
        if let Some(e) = &self.first_error {
            line(format!("    first error: {e}"));
        }
        line(format!(
            "  connect rate  {:.0}/s ({} in {:.2} s; handshake + connect + subscribe)",
            self.connect_rate_per_sec, self.connected, self.connect_secs
        ));
        let l = &self.connect_latency;
        line(format!(
            "  connect time  p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            l.p50_ms, l.p99_ms, l.max_ms
        ));
        if let Some(n) = self.listen_overflows.filter(|&n| n > 0) {
            line(format!(
                "  listen queue  {n} connection attempts dropped on a full accept queue (TcpExt \
                 ListenOverflows), each retried after 1 s: lower --concurrency or raise the \
                 server's listen backlog"
            ));
        }
        if let Some(m) = &self.server {
            let per = m.rss_per_connection_bytes.unwrap_or(0.0);
            line(format!(
                "  server RSS    {:.1} MiB -> {:.1} MiB: {:.0} bytes ({:.2} KiB) per connection ({})",
                mib(m.rss_before_bytes),
                mib(m.rss_after_bytes),
                per,
                kib(per),
                m.label()
            ));
            if let (Some(first), Some(last)) = (m.rss_samples.first(), m.rss_samples.last()) {
                line(format!(
                    "  RSS curve     {} reading(s) while connecting, every {}: {:.0} bytes per \
                     connection at {}, {:.0} at {}",
                    m.rss_samples.len(),
                    m.rss_sample_step,
                    first.bytes_per_connection,
                    first.connections,
                    last.bytes_per_connection,
                    last.connections
                ));
            }
        }
        if let Some(e) = &self.server_memory_error {
            line(format!("  server RSS    not read: {e}"));
        }
        if let Some(k) = &self.sockets {
            let per = k.mem_per_connection_bytes.unwrap_or(0.0);
            line(format!(
                "  TCP memory    {} -> {} pages: {:.0} bytes ({:.2} KiB) per connection, both ends (sockstat)",
                k.before.mem_pages,
                k.after.mem_pages,
                per,
                kib(per)
            ));
        }
        if let Some(r) = self.client_rss_bytes {
            line(format!("  client RSS    {:.1} MiB", mib(r)));
        }
        if let Some(b) = self.opening_bytes_per_connection {
            line(format!(
                "  wire          {b:.1} B per connection received while opening (connect and \
                 subscribe replies in WebSocket frames, headers included; {}), {} B while held",
                self.protocol.label(),
                self.held_bytes_received
            ));
        }
        let dropped: u64 = self.dropped.values().sum();
        line(format!(
            "  held          {:.1} s; {} pings answered; {} dropped",
            self.hold_secs, self.pings_answered, dropped
        ));
        for (why, n) in &self.dropped {
            line(format!("    {n} × {why}"));
        }
        s
    }

    /// The report's section on memory per connection: the plot of the readings taken while
    /// connecting, and their table; without memory readings, why there is none.
    pub(crate) fn memory_section(&self) -> Section {
        let heading = "Server memory per connection";
        let Some(m) = &self.server else {
            let why = self
                .server_memory_error
                .as_deref()
                .unwrap_or("it could not be read");
            return Section {
                heading,
                plot: None,
                text: format!(
                    "The server's memory was not read ({why}), so there is no plot of memory \
                     per connection.\n"
                ),
            };
        };
        if m.rss_samples.is_empty() {
            return Section {
                heading,
                plot: None,
                text: "No readings while connecting (nothing connected, or the server \
                       processes could not be read): no plot.\n"
                    .into(),
            };
        }
        let mut text = format!(
            "Server RSS ({}) read each time {} more connections were open, and once all were; \
             bytes per connection = (RSS - {:.1} MiB before opening) / connections open. After \
             --settle: {:.0} bytes per connection (the summary).\n\n\
             | connections | server RSS MiB | bytes per connection |\n|---:|---:|---:|\n",
            m.label(),
            m.rss_sample_step,
            mib(m.rss_before_bytes),
            m.rss_per_connection_bytes.unwrap_or(0.0)
        );
        for p in &m.rss_samples {
            let _ = writeln!(
                text,
                "| {} | {:.1} | {:.0} |",
                p.connections,
                mib(p.rss_bytes),
                p.bytes_per_connection
            );
        }
        Section {
            heading,
            plot: Some(Plot {
                file: "memory.svg",
                alt: "server memory per connection vs connections",
                svg: crate::report::memory_chart(&m.rss_samples),
            }),
            text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn steps_are_a_twentieth_and_at_least_500() {
        assert_eq!(sample_step(1), 500);
        assert_eq!(sample_step(10_000), 500);
        assert_eq!(sample_step(10_001), 501);
        assert_eq!(sample_step(100_000), 5_000);
        assert_eq!(sample_step(1_000_000), 50_000);
    }

    #[test]
    fn the_curve_is_growth_per_connection() {
        let before = 10 << 20;
        let curve = rss_curve(
            before,
            &[
                (0, before),
                (500, before + 2_000_000),
                (1000, before + 3_000_000),
                (1200, before - 1200),
            ],
        );
        assert_eq!(
            curve,
            [
                RssSample {
                    connections: 500,
                    rss_bytes: before + 2_000_000,
                    bytes_per_connection: 4000.0
                },
                RssSample {
                    connections: 1000,
                    rss_bytes: before + 3_000_000,
                    bytes_per_connection: 3000.0
                },
                // Below the start: negative, not wrapped around.
                RssSample {
                    connections: 1200,
                    rss_bytes: before - 1200,
                    bytes_per_connection: -1.0
                },
            ]
        );
    }

    /// A sampler whose "RSS" is 1000 bytes per read so far, counting its reads.
    fn counting(step: u64) -> (RssSampler, Arc<AtomicU64>) {
        let reads = Arc::new(AtomicU64::new(0));
        let r = reads.clone();
        let sampler = RssSampler::new(step, move || {
            Some(1000 * (r.fetch_add(1, Ordering::Relaxed) + 1))
        });
        (sampler, reads)
    }

    #[test]
    fn readings_at_each_step_and_at_the_end() {
        let (s, reads) = counting(500);
        for n in 1..=1700 {
            s.connected(n);
        }
        assert_eq!(reads.load(Ordering::Relaxed), 3);
        assert_eq!(
            s.finish(1700),
            [(500, 1000), (1000, 2000), (1500, 3000), (1700, 4000)]
        );
        // Ending on a step: no second reading there.
        let (s, reads) = counting(500);
        for n in 1..=1000 {
            s.connected(n);
        }
        assert_eq!(s.finish(1000), [(500, 1000), (1000, 2000)]);
        assert_eq!(reads.load(Ordering::Relaxed), 2);
        // Fewer than a step: the one reading at the end.
        let (s, _) = counting(500);
        (1..=200).for_each(|n| s.connected(n));
        assert_eq!(s.finish(200), [(200, 1000)]);
        // Nothing connected: nothing read.
        let (s, reads) = counting(500);
        assert!(s.finish(0).is_empty());
        assert_eq!(reads.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn jumps_take_one_reading() {
        // Worker processes report in jumps: one reading where the sum lands.
        let (s, _) = counting(500);
        for n in [120, 480, 1230, 1240, 1490, 1510, 2000] {
            s.connected(n);
        }
        assert_eq!(s.finish(2000), [(1230, 1000), (1510, 2000), (2000, 3000)]);
        // An unreadable process: no reading, and the next step is still waited for.
        let s = RssSampler::new(500, || None);
        (1..=1000).for_each(|n| s.connected(n));
        assert!(s.finish(1000).is_empty());
    }

    fn report(server: Option<ServerMemory>) -> IdleReport {
        IdleReport {
            scenario: "idle",
            url: "ws://127.0.0.1:1/connection/websocket".into(),
            connections: 1000,
            channels_per_conn: 1,
            connected: 1000,
            protocol: crate::conn::Flavour::Json,
            compression: false,
            failed: 0,
            failures: BTreeMap::new(),
            first_error: None,
            not_attempted: 0,
            connect_secs: 1.0,
            connect_rate_per_sec: 1000.0,
            connect_latency: LatencySummary::default(),
            listen_overflows: None,
            hold_secs: 0.0,
            dropped: BTreeMap::new(),
            pings_answered: 0,
            opening_bytes_per_connection: Some(120.0),
            held_bytes_received: 0,
            server,
            server_memory_error: None,
            sockets: None,
            client_rss_bytes: None,
        }
    }

    #[test]
    fn the_memory_section_plots_the_samples_or_says_why_not() {
        let before = 10 << 20;
        let server = ServerMemory {
            source: MemorySource::Proc,
            pid: None,
            pids: vec![7, 8],
            metrics_urls: Vec::new(),
            rss_before_bytes: before,
            rss_after_bytes: before + 3_900_000,
            rss_per_connection_bytes: Some(3900.0),
            rss_sample_step: 500,
            rss_samples: rss_curve(
                before,
                &[(500, before + 2_000_000), (1000, before + 3_000_000)],
            ),
        };
        let r = report(Some(server));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["server"]["rss_samples"][1],
            serde_json::json!({
                "connections": 1000,
                "rss_bytes": before + 3_000_000,
                "bytes_per_connection": 3000.0
            })
        );
        assert_eq!(json["server"]["rss_sample_step"], 500);
        assert_eq!(json["server"]["source"], "proc");
        assert!(json["server"].get("metrics_urls").is_none());
        assert!(
            r.human()
                .contains("RSS curve     2 reading(s) while connecting, every 500: 4000 bytes per connection at 500, 3000 at 1000"),
            "{}",
            r.human()
        );
        let s = r.memory_section();
        let plot = s.plot.unwrap();
        assert_eq!(plot.file, "memory.svg");
        assert!(plot.svg.contains("data-name=\"KiB/connection\""));
        assert!(s.text.contains("(pids 7, 8 summed)"), "{}", s.text);
        assert!(
            s.text
                .contains("| 500 | 11.9 | 4000 |\n| 1000 | 12.9 | 3000 |\n"),
            "{}",
            s.text
        );

        let mut r = report(None);
        r.server_memory_error =
            Some("no --pid, and the server's /metrics could not be read".into());
        assert!(!r.human().contains("RSS curve"));
        assert!(
            r.human()
                .contains("server RSS    not read: no --pid, and the server's /metrics"),
            "{}",
            r.human()
        );
        let s = r.memory_section();
        assert!(
            s.plot.is_none()
                && s.text.starts_with(
                    "The server's memory was not read (no --pid, and the server's /metrics"
                ),
            "{}",
            s.text
        );
    }

    #[test]
    fn memory_read_from_metrics_is_named_by_its_urls() {
        let mut m = ServerMemory {
            source: MemorySource::Metrics,
            pid: None,
            pids: Vec::new(),
            metrics_urls: vec!["http://127.0.0.1:8000/metrics".into()],
            rss_before_bytes: 10 << 20,
            rss_after_bytes: 11 << 20,
            rss_per_connection_bytes: Some(1048.576),
            rss_sample_step: 500,
            rss_samples: Vec::new(),
        };
        assert_eq!(
            m.label(),
            "process_resident_memory_bytes of http://127.0.0.1:8000/metrics"
        );
        m.metrics_urls.push("http://127.0.0.1:8001/metrics".into());
        assert!(m
            .label()
            .ends_with(", http://127.0.0.1:8001/metrics summed"));
        let json = serde_json::to_value(report(Some(m))).unwrap();
        assert_eq!(json["server"]["source"], "metrics");
        assert_eq!(
            json["server"]["metrics_urls"][1],
            "http://127.0.0.1:8001/metrics"
        );
        assert!(json["server_memory_error"].is_null());
    }
}
