//! `fanout`: N subscribers on one channel, publications sent on a fixed schedule through the
//! HTTP server API (`/api/publish`), the gRPC server API or a client connection
//! (`--publish-via`). Each publication's data carries its *scheduled* send time, and each
//! subscriber records `receipt - scheduled`, so a slow server or a late publisher shows up in
//! the latency instead of silently stretching the schedule (no coordinated omission).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::cli::{FanoutArgs, PublishVia};
use crate::conn::{Flavour, PubSink};
use crate::procfs::{self, CpuSnapshot, CpuUsage};
use crate::publisher::PublishPath;
use crate::stats::{self, LatencySummary, Recorder, Timeline};
use crate::workers::{ChannelSpec, Watch};
use crate::{scenario, Outcome};

/// Publish calls waiting or in flight at most; past that, scheduled publications are
/// skipped (and counted) rather than piling up without bound.
pub(crate) const MAX_BACKLOG: usize = 10_000;

/// Other processes may use this much of a core before the figures are called contaminated.
pub(crate) const CONTAMINATION_CORES: f64 = 0.10;

/// The most publications one run may schedule.
const MAX_PUBLICATIONS: f64 = 10_000_000.0;

/// Microseconds since the Unix epoch, from a monotonic clock anchored once: the publisher
/// stamps scheduled times and the subscribers read receipt times from the same clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    base: Instant,
    base_unix_us: u64,
}

impl Clock {
    /// Anchors the clock now.
    pub(crate) fn new() -> Self {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Clock {
            base: Instant::now(),
            base_unix_us: unix,
        }
    }

    /// The time of `at`, in µs since the epoch.
    pub(crate) fn at_us(&self, at: Instant) -> u64 {
        self.base_unix_us + at.saturating_duration_since(self.base).as_micros() as u64
    }

    /// Now, in µs since the epoch.
    pub(crate) fn now_us(&self) -> u64 {
        self.at_us(Instant::now())
    }
}

/// The publication data: `{"t":<scheduled µs>,"seq":<k>,"pad":"xx.."}`, exactly `size`
/// bytes when `size` is larger than the stamp itself.
pub(crate) fn publication_data(t_us: u64, seq: u64, size: usize) -> String {
    let bare = format!(r#"{{"t":{t_us},"seq":{seq},"pad":""}}"#);
    let pad = size.saturating_sub(bare.len());
    let mut s = String::with_capacity(bare.len() + pad);
    s.push_str(&bare[..bare.len() - 2]);
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}");
    s
}

/// The stamp read back from a publication's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub(crate) struct Stamp {
    /// Scheduled send time, µs since the epoch.
    pub(crate) t: u64,
    /// Publication number.
    pub(crate) seq: u64,
}

/// Reads the stamp of a publication's data (the JSON value's text, or the Protobuf bytes,
/// which are the same JSON text); `None` for data that is not ours.
pub(crate) fn read_stamp(data: &[u8]) -> Option<Stamp> {
    serde_json::from_slice(data).ok()
}

/// Records each delivery's latency (and, with a timeline, per second of receipt).
#[derive(Debug)]
pub(crate) struct LatencySink {
    pub(crate) clock: Clock,
    pub(crate) recorder: Recorder,
    pub(crate) deliveries: AtomicU64,
    pub(crate) foreign: AtomicU64,
    pub(crate) last_us: AtomicU64,
    /// Per-second latency buckets (`--report`).
    pub(crate) timeline: Option<Timeline>,
}

impl LatencySink {
    /// A sink reading receipt times from `clock`; `timeline`: keep per-second buckets.
    pub(crate) fn new(clock: Clock, timeline: Option<Timeline>) -> Self {
        LatencySink {
            clock,
            recorder: Recorder::new(16),
            deliveries: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            last_us: AtomicU64::new(0),
            timeline,
        }
    }
}

impl PubSink for LatencySink {
    fn publication(&self, conn: usize, data: &[u8]) {
        let now = self.clock.now_us();
        match read_stamp(data) {
            Some(s) => {
                let latency = now.saturating_sub(s.t);
                self.recorder.record(conn, latency);
                if let Some(t) = &self.timeline {
                    t.record(now, latency);
                }
                self.deliveries.fetch_add(1, Ordering::Relaxed);
                self.last_us.fetch_max(now, Ordering::Relaxed);
            }
            None => {
                self.foreign.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Publish outcomes, shared by the publish tasks.
#[derive(Debug)]
pub(crate) struct PublishLog {
    pub(crate) ok: AtomicU64,
    /// Deliveries the accepted publications should cause (their channels' subscribers).
    pub(crate) expected: AtomicU64,
    pub(crate) failures: Mutex<BTreeMap<String, u64>>,
    pub(crate) first_error: Mutex<Option<String>>,
    /// Scheduled time to the publish task running (µs).
    pub(crate) start_lag: Recorder,
    /// One publish call, waiting for a pooled connection included (µs).
    pub(crate) call_time: Recorder,
}

impl PublishLog {
    /// An empty log.
    pub(crate) fn new() -> Self {
        PublishLog {
            ok: AtomicU64::new(0),
            expected: AtomicU64::new(0),
            failures: Mutex::new(BTreeMap::new()),
            first_error: Mutex::new(None),
            start_lag: Recorder::new(1),
            call_time: Recorder::new(1),
        }
    }

    fn failed(&self, e: &crate::publish::CallError) {
        if let Ok(mut f) = self.failures.lock() {
            *f.entry(e.kind()).or_default() += 1;
        }
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert_with(|| e.to_string());
        }
    }
}

/// Picks publication `k`'s channel: its name, and how many connected subscribers it has (the
/// deliveries it should cause).
pub(crate) type Route = Box<dyn FnMut(u64) -> (String, u64) + Send>;

/// The publisher: a fixed schedule of publish calls.
pub(crate) struct Publisher {
    pub(crate) path: Arc<PublishPath>,
    pub(crate) log: Arc<PublishLog>,
    pub(crate) backlog: Arc<Semaphore>,
    pub(crate) route: Route,
    pub(crate) size: usize,
    pub(crate) period_ns: f64,
    pub(crate) total: u64,
    pub(crate) start: Instant,
    pub(crate) start_us: u64,
}

impl Publisher {
    /// Runs the schedule on the calling (blocking-pool) thread: it sleeps to each scheduled
    /// instant with the OS timer, finer than the runtime's 1 ms timer wheel and not held up
    /// by busy workers, then hands the call to the runtime `rt` without waiting for it.
    /// Returns the calls and the number of publications skipped for want of backlog room.
    pub(crate) fn run(mut self, rt: &tokio::runtime::Handle) -> (JoinSet<()>, u64) {
        let mut calls = JoinSet::new();
        let mut skipped = 0u64;
        for k in 0..self.total {
            let offset = Duration::from_nanos((k as f64 * self.period_ns) as u64);
            let at = self.start + offset;
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            let (channel, receivers) = (self.route)(k);
            let data = publication_data(self.start_us + offset.as_micros() as u64, k, self.size);
            let Ok(permit) = self.backlog.clone().try_acquire_owned() else {
                skipped += 1;
                continue;
            };
            let (path, log) = (self.path.clone(), self.log.clone());
            calls.spawn_on(
                async move {
                    let began = Instant::now();
                    log.start_lag
                        .record(0, micros(began.saturating_duration_since(at)));
                    match path.publish(&channel, data).await {
                        Ok(()) => {
                            log.ok.fetch_add(1, Ordering::Relaxed);
                            log.expected.fetch_add(receivers, Ordering::Relaxed);
                        }
                        Err(e) => log.failed(&e),
                    }
                    log.call_time.record(0, micros(began.elapsed()));
                    drop(permit);
                },
                rt,
            );
            while calls.try_join_next().is_some() {}
        }
        (calls, skipped)
    }
}

/// A duration in whole microseconds.
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The `fanout` summary.
#[derive(Debug, serde::Serialize)]
pub(crate) struct FanoutReport {
    /// "fanout".
    pub(crate) scenario: &'static str,
    /// The WebSocket URL.
    pub(crate) url: String,
    /// The server API URL.
    pub(crate) api_url: String,
    /// The path the publications took (`--publish-via`): "http", "grpc" or "client".
    pub(crate) publish_via: PublishVia,
    /// Its endpoint: the server API's URL, the gRPC address, or the publisher's WebSocket URL.
    pub(crate) publish_url: String,
    /// The channel.
    pub(crate) channel: String,
    /// Subscribers asked for.
    pub(crate) subscribers: u64,
    /// Subscribers connected and subscribed.
    pub(crate) subscribers_connected: u64,
    /// The subscribers' protocol flavour: "json" or "protobuf" (`--protobuf`).
    pub(crate) protocol: Flavour,
    /// permessage-deflate was negotiated on every connected subscriber (`--compression`).
    pub(crate) compression: bool,
    /// Compressed (RSV1) messages the subscribers received, opening replies included.
    pub(crate) compressed_messages: u64,
    /// Subscriber failures by kind.
    pub(crate) subscriber_failures: BTreeMap<String, u64>,
    /// The first subscriber failure in full.
    pub(crate) subscriber_first_error: Option<String>,
    /// Subscribers that ended before the stop, by reason.
    pub(crate) subscribers_dropped: BTreeMap<String, u64>,
    /// Scheduled publications per second.
    pub(crate) rate_per_sec: f64,
    /// Data size of each publication, bytes.
    pub(crate) size_bytes: u64,
    /// Publishing time, seconds.
    pub(crate) duration_secs: f64,
    /// Publications on the schedule.
    pub(crate) publications_scheduled: u64,
    /// Publications the hub accepted.
    pub(crate) publications_sent: u64,
    /// Publish calls that failed.
    pub(crate) publications_failed: u64,
    /// Publish failures by kind.
    pub(crate) publish_failures: BTreeMap<String, u64>,
    /// The first publish failure in full.
    pub(crate) publish_first_error: Option<String>,
    /// Publications skipped because too many calls were waiting.
    pub(crate) publications_skipped: u64,
    /// Scheduled time to the publish call starting (the load client's own lateness).
    pub(crate) publish_start_lag: LatencySummary,
    /// Duration of one publish call, waiting for a pooled connection included.
    pub(crate) publish_call: LatencySummary,
    /// Publications received by subscribers.
    pub(crate) deliveries: u64,
    /// publications_sent × subscribers_connected.
    pub(crate) deliveries_expected: u64,
    /// Publications received that carried no stamp (not ours).
    pub(crate) foreign_publications: u64,
    /// Deliveries per second, from the first scheduled publication to the last delivery.
    pub(crate) deliveries_per_sec: f64,
    /// Scheduled send time to receipt.
    pub(crate) latency: LatencySummary,
    /// Bytes the subscribers received once subscribed: WebSocket data frames (text or
    /// binary), headers included, as on the wire (compressed under --compression); server
    /// pings included, the opening replies and control frames not.
    pub(crate) bytes_received: u64,
    /// bytes_received / deliveries.
    pub(crate) bytes_per_delivery: Option<f64>,
    /// The server processes measured (`--pid`; a cluster's nodes): the server CPU and RSS
    /// figures are sums over them.
    pub(crate) server_pids: Vec<u32>,
    /// CPU use during the measurement window.
    pub(crate) cpu: CpuUsage,
    /// Server CPU per delivery, µs (with --pid; of all its processes).
    pub(crate) server_cpu_us_per_delivery: Option<f64>,
    /// Of which in user space, µs (with --pid; from `utime`, clock-tick resolution).
    pub(crate) server_user_us_per_delivery: Option<f64>,
    /// Of which in the kernel, µs (with --pid; from `stime`, clock-tick resolution).
    pub(crate) server_kernel_us_per_delivery: Option<f64>,
    /// Average server cores busy (with --pid; all its processes together).
    pub(crate) server_cores: Option<f64>,
    /// Average cores busy in this client.
    pub(crate) client_cores: Option<f64>,
    /// Average cores busy in other processes.
    pub(crate) other_cores: Option<f64>,
    /// Warnings about the measurement.
    pub(crate) warnings: Vec<String>,
}

/// Checks the numbers that clap cannot; returns the publications to schedule.
pub(crate) fn schedule_size(rate: f64, duration: Duration) -> Result<u64, String> {
    if !(rate.is_finite() && rate > 0.0 && rate <= 100_000.0) {
        return Err(format!(
            "--rate {rate}: must be more than 0 and at most 100000"
        ));
    }
    let total = (rate * duration.as_secs_f64()).round();
    if total < 1.0 {
        return Err("--rate × --duration schedules no publication".into());
    }
    if total > MAX_PUBLICATIONS {
        return Err(format!(
            "--rate × --duration schedules {total} publications; the limit is {MAX_PUBLICATIONS}"
        ));
    }
    Ok(total as u64)
}

/// Runs the scenario.
pub(crate) async fn run(
    args: FanoutArgs,
    allow_remote: bool,
    progress: bool,
) -> Result<Outcome<FanoutReport>, String> {
    let c = &args.connect;
    let total = schedule_size(args.rate, args.duration)?;
    procfs::check_readable(&c.pid)?;

    let path = Arc::new(PublishPath::open(&args.api, c, &args.channel, allow_remote).await?);

    let (clock, mut held, opened) = scenario::open_subscribers(
        c,
        allow_remote,
        args.subscribers,
        (args.api.files(), "--subscribers"),
        ChannelSpec::Fixed(args.channel.clone()),
        args.output.report.is_some(),
        Watch::bar(progress),
    )
    .await?;

    // The measurement window: from just before the first publication to the last delivery.
    let cpu_before = CpuSnapshot::with_workers(&c.pid, &held.pids());
    let log = Arc::new(PublishLog::new());
    let (start, start_us) = scenario::schedule_start(clock, &mut held);
    let channel = args.channel.clone();
    let receivers = opened.connected;
    let stream = Stream {
        route: Box::new(move |_| (channel.clone(), receivers)),
        rate: args.rate,
        total,
    };
    // Calls still queued get at most the drain time plus one call's limit.
    let (skipped, abandoned) = publish_streams(
        &path,
        &log,
        vec![stream],
        args.publish.size as usize,
        start,
        start_us,
        args.publish.drain + args.api.publish_timeout,
    )
    .await?;
    let sent = log.ok.load(Ordering::Relaxed);
    let expected = sent * opened.connected;
    held.drain(expected, args.publish.drain).await;
    let cpu_after = CpuSnapshot::with_workers(&c.pid, &held.pids());
    let received = held.stop().await;
    let ending = received.ending;

    let deliveries = received.deliveries;
    let last_us = received.last_us;
    let delivery_window = Duration::from_micros(last_us.saturating_sub(start_us));
    let cpu = CpuUsage::between(&cpu_before, &cpu_after);
    let publish_failures = scenario::publish_failures(&log, abandoned);
    let mut warnings = Vec::new();
    if let Some(w) = cpu.contamination_warning(CONTAMINATION_CORES) {
        warnings.push(w);
    }
    if cpu.server_user_secs.is_some() && cpu.clock_ticks_per_sec.is_none() {
        warnings.push(
            "`getconf CLK_TCK` failed: the user/kernel split assumes 100 clock ticks per second"
                .into(),
        );
    }
    warnings.extend(scenario::missing_deliveries(
        deliveries,
        expected,
        args.publish.drain,
    ));
    if skipped > 0 {
        warnings.push(format!(
            "{skipped} publications skipped: over {MAX_BACKLOG} publish calls were waiting"
        ));
    }
    let report = FanoutReport {
        scenario: "fanout",
        url: c.url.clone(),
        api_url: args.api.api_url.clone(),
        publish_via: path.via,
        publish_url: path.url.clone(),
        channel: args.channel.clone(),
        subscribers: args.subscribers,
        subscribers_connected: opened.connected,
        protocol: c.wire().flavour,
        compression: opened.connected > 0 && opened.compressed == opened.connected,
        compressed_messages: ending.compressed_messages,
        subscriber_failures: opened.failures.clone(),
        subscriber_first_error: opened.first_error.clone(),
        subscribers_dropped: ending.dropped,
        rate_per_sec: args.rate,
        size_bytes: args.publish.size,
        duration_secs: args.duration.as_secs_f64(),
        publications_scheduled: total,
        publications_sent: sent,
        publications_failed: publish_failures.values().sum(),
        publish_failures,
        publish_first_error: scenario::publish_first_error(&log),
        publications_skipped: skipped,
        publish_start_lag: LatencySummary::of(&log.start_lag.merged()),
        publish_call: LatencySummary::of(&log.call_time.merged()),
        deliveries,
        deliveries_expected: expected,
        foreign_publications: received.foreign,
        deliveries_per_sec: stats::per_sec(deliveries, delivery_window),
        latency: LatencySummary::of(&received.latency),
        bytes_received: ending.bytes_received,
        bytes_per_delivery: stats::per_item(ending.bytes_received as f64, deliveries),
        server_cpu_us_per_delivery: CpuUsage::us_per_delivery(cpu.server_cpu_secs, deliveries),
        server_user_us_per_delivery: CpuUsage::us_per_delivery(cpu.server_user_secs, deliveries),
        server_kernel_us_per_delivery: CpuUsage::us_per_delivery(
            cpu.server_kernel_secs,
            deliveries,
        ),
        server_cores: cpu.server_cores(),
        client_cores: cpu.client_cores(),
        other_cores: cpu.other_cores(),
        server_pids: c.pid.clone(),
        cpu,
        warnings,
    };
    if let Some(dir) = &args.output.report {
        crate::report::write(
            dir,
            "fanout",
            &report.human(),
            &received.timeline.seconds(),
            &[],
        )?;
    }
    let complete = report.deliveries == report.deliveries_expected
        && report.publications_sent == report.publications_scheduled
        && report.subscribers_connected == report.subscribers
        && report.subscribers_dropped.is_empty();
    Ok(Outcome { report, complete })
}

impl FanoutReport {
    /// The human summary.
    pub(crate) fn human(&self) -> String {
        let mut s = String::new();
        let mut line = |l: String| {
            s.push_str(&l);
            s.push('\n');
        };
        line(format!(
            "fanout: {} subscribers on {:?}, {}/s × {} B for {:.1} s ({}, {})",
            self.subscribers,
            self.channel,
            self.rate_per_sec,
            self.size_bytes,
            self.duration_secs,
            self.url,
            self.protocol.label()
        ));
        line(format!(
            "  subscribers   {} connected, {} failed, {} dropped",
            self.subscribers_connected,
            self.subscriber_failures.values().sum::<u64>(),
            self.subscribers_dropped.values().sum::<u64>()
        ));
        if self.compression {
            line(format!(
                "  compression   permessage-deflate negotiated; {} compressed messages received",
                self.compressed_messages
            ));
        }
        for (kind, n) in self
            .subscriber_failures
            .iter()
            .chain(&self.subscribers_dropped)
        {
            line(format!("    {n} × {kind}"));
        }
        if let Some(e) = &self.subscriber_first_error {
            line(format!("    first error: {e}"));
        }
        line(format!(
            "  publications  {} sent of {} scheduled, {} failed, {} skipped, via {} ({})",
            self.publications_sent,
            self.publications_scheduled,
            self.publications_failed,
            self.publications_skipped,
            self.publish_via.label(),
            self.publish_url
        ));
        for (kind, n) in &self.publish_failures {
            line(format!("    {n} × {kind}"));
        }
        if let Some(e) = &self.publish_first_error {
            line(format!("    first error: {e}"));
        }
        let (lag, call) = (&self.publish_start_lag, &self.publish_call);
        line(format!(
            "  publisher     start lag p50 {:.2} p99 {:.2} max {:.2} ms; call p50 {:.2} p99 {:.2} max {:.2} ms",
            lag.p50_ms, lag.p99_ms, lag.max_ms, call.p50_ms, call.p99_ms, call.max_ms
        ));
        line(format!(
            "  deliveries    {} of {} expected ({:.0}/s){}",
            self.deliveries,
            self.deliveries_expected,
            self.deliveries_per_sec,
            if self.foreign_publications > 0 {
                format!(
                    ", {} foreign publications ignored",
                    self.foreign_publications
                )
            } else {
                String::new()
            }
        ));
        let l = &self.latency;
        line(format!(
            "  latency (ms)  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (scheduled send -> receipt)",
            l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
        ));
        line(format!(
            "  wire          {} B per delivery ({}{}: {} B of WebSocket frames, headers \
             included, received by the subscribers)",
            self.bytes_per_delivery
                .map_or("-".to_owned(), |b| format!("{b:.1}")),
            self.protocol.label(),
            if self.compression {
                " + permessage-deflate"
            } else {
                ""
            },
            self.bytes_received
        ));
        let cores = |c: Option<f64>| c.map_or("-".to_owned(), |c| format!("{c:.2}"));
        if let Some(us) = self.server_cpu_us_per_delivery {
            let split = match (
                self.server_user_us_per_delivery,
                self.server_kernel_us_per_delivery,
            ) {
                (Some(u), Some(k)) => format!("user {u:.1} + kernel {k:.1}; "),
                _ => String::new(),
            };
            line(format!(
                "  server CPU    {:.2} µs per delivery ({split}{} cores busy over {:.1} s; {})",
                us,
                cores(self.server_cores),
                self.cpu.window_secs,
                scenario::pids_label(&self.server_pids)
            ));
        }
        line(format!(
            "  CPU (cores)   server {}  client {}  other {}",
            cores(self.server_cores),
            cores(self.client_cores),
            cores(self.other_cores)
        ));
        for w in &self.warnings {
            line(format!("  warning: {w}"));
        }
        s
    }
}

/// One schedule of publications: where each goes, how often, how many.
pub(crate) struct Stream {
    /// Channel (and receivers) of publication k.
    pub(crate) route: Route,
    /// Publications per second.
    pub(crate) rate: f64,
    /// Publications in all.
    pub(crate) total: u64,
}

/// Runs `streams` at once, each on its own thread from `start` (µs `start_us` on the
/// sinks' clock), then waits at most `wait` for the calls still going. Returns the
/// publications skipped (backlog full) and the calls abandoned at the end.
pub(crate) async fn publish_streams(
    path: &Arc<PublishPath>,
    log: &Arc<PublishLog>,
    streams: Vec<Stream>,
    size: usize,
    start: Instant,
    start_us: u64,
    wait: Duration,
) -> Result<(u64, u64), String> {
    let backlog = Arc::new(Semaphore::new(MAX_BACKLOG));
    let mut runs = Vec::new();
    for s in streams.into_iter().filter(|s| s.total > 0) {
        let publisher = Publisher {
            path: path.clone(),
            log: log.clone(),
            backlog: backlog.clone(),
            route: s.route,
            size,
            period_ns: 1e9 / s.rate,
            total: s.total,
            start,
            start_us,
        };
        let rt = tokio::runtime::Handle::current();
        runs.push(tokio::task::spawn_blocking(move || publisher.run(&rt)));
    }
    let mut skipped = 0;
    let mut all = Vec::new();
    for r in runs {
        let (calls, s) = r.await.map_err(|e| format!("the publisher failed: {e}"))?;
        skipped += s;
        all.push(calls);
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut abandoned = 0u64;
    for mut calls in all {
        loop {
            match tokio::time::timeout_at(deadline, calls.join_next()).await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    abandoned += calls.len() as u64;
                    calls.abort_all();
                    break;
                }
            }
        }
    }
    Ok((skipped, abandoned))
}

/// `--rate`-like options: 0 schedules nothing, anything else is checked by
/// [`schedule_size`].
pub(crate) fn optional_schedule(rate: f64, duration: Duration, flag: &str) -> Result<u64, String> {
    if rate == 0.0 {
        return Ok(0);
    }
    schedule_size(rate, duration).map_err(|e| e.replace("--rate", flag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_has_the_exact_size_and_reads_back() {
        for size in [64usize, 100, 1000, 65_536] {
            let d = publication_data(1_700_000_000_123_456, 42, size);
            assert_eq!(d.len(), size);
            let v: serde_json::Value = serde_json::from_str(&d).unwrap();
            assert_eq!(v["seq"], 42);
            assert_eq!(
                read_stamp(d.as_bytes()),
                Some(Stamp {
                    t: 1_700_000_000_123_456,
                    seq: 42
                })
            );
        }
        // Smaller than the stamp: the stamp alone.
        let d = publication_data(1, 2, 5);
        assert_eq!(d, r#"{"t":1,"seq":2,"pad":""}"#);
    }

    #[test]
    fn foreign_data_has_no_stamp() {
        assert_eq!(read_stamp(br#"{"text":"hi"}"#), None);
        assert_eq!(read_stamp(b"17"), None);
        assert_eq!(read_stamp(b""), None);
        assert_eq!(read_stamp(&[0xff, 0x00]), None);
    }

    #[test]
    fn clock_is_monotonic_and_near_the_wall_clock() {
        let c = Clock::new();
        let a = c.now_us();
        let b = c.now_us();
        assert!(b >= a);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        assert!(wall.abs_diff(b) < 1_000_000);
        let later = Instant::now() + Duration::from_millis(10);
        assert!(c.at_us(later) >= b + 9_000);
    }

    #[test]
    fn schedule_is_bounded() {
        assert_eq!(schedule_size(10.0, Duration::from_secs(10)), Ok(100));
        assert_eq!(schedule_size(0.5, Duration::from_secs(3)), Ok(2));
        assert!(schedule_size(0.0, Duration::from_secs(3)).is_err());
        assert!(schedule_size(f64::NAN, Duration::from_secs(3)).is_err());
        assert!(schedule_size(1e6, Duration::from_secs(3)).is_err());
        assert!(schedule_size(100_000.0, Duration::from_secs(3600)).is_err());
        assert!(schedule_size(1.0, Duration::from_millis(100)).is_err());
    }

    #[test]
    fn the_sink_records_latency_and_ignores_foreign_data() {
        let clock = Clock::new();
        let sink = LatencySink::new(clock, None);
        let t = clock.now_us() - 5_000;
        let data = publication_data(t, 0, 100);
        sink.publication(0, data.as_bytes());
        sink.publication(1, b"{\"x\":1}");
        assert_eq!(sink.deliveries.load(Ordering::Relaxed), 1);
        assert_eq!(sink.foreign.load(Ordering::Relaxed), 1);
        let h = sink.recorder.merged();
        assert!(h.max() >= 5_000 && h.max() < 1_000_000, "{}", h.max());
    }
}
