//! `churn`: stable subscribers receive publications at a fixed rate (through the HTTP or gRPC
//! server API, or a client connection: `--publish-via`)
//! while other connections open (token + subscribe to the same channel) at a fixed rate and
//! close after `--lifetime`. Reports the churning connections' connect latency and errors,
//! and delivery (count and latency) to the stable ones.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cli::{ChurnArgs, PublishVia};
use crate::conn::{self, ConnError, EndReason, Ignore};
use crate::fanout::{self, PublishLog, Stream, CONTAMINATION_CORES};
use crate::procfs::{self, CpuSnapshot, CpuUsage};
use crate::publisher::PublishPath;
use crate::stats::{self, LatencySummary};
use crate::swarm;
use crate::target::{self, WsTarget};
use crate::workers::{ChannelSpec, Watch};
use crate::{scenario, token, Outcome};

/// The most churning connections one run may open.
const MAX_CHURN: f64 = 1_000_000.0;

/// How one churning connection went.
#[derive(Debug)]
enum Churned {
    /// It could not connect and subscribe.
    Failed(ConnError),
    /// It was connected after `latency`, and then ended for `reason`.
    Done {
        latency: Duration,
        reason: EndReason,
    },
}

/// The `churn` summary.
#[derive(Debug, serde::Serialize)]
pub(crate) struct ChurnReport {
    /// "churn".
    pub(crate) scenario: &'static str,
    /// The WebSocket URL(s).
    pub(crate) url: String,
    /// The connections' protocol flavour: "json" or "protobuf" (`--protobuf`).
    pub(crate) protocol: crate::conn::Flavour,
    /// The server API URL.
    pub(crate) api_url: String,
    /// The path the publications took (`--publish-via`): "http", "grpc" or "client".
    pub(crate) publish_via: PublishVia,
    /// Its endpoint: the server API's URL, the gRPC address, or the publisher's WebSocket URL.
    pub(crate) publish_url: String,
    /// The channel.
    pub(crate) channel: String,
    /// Stable subscribers asked for.
    pub(crate) stable: u64,
    /// Stable subscribers connected and subscribed.
    pub(crate) stable_connected: u64,
    /// Stable subscriber failures by kind.
    pub(crate) stable_failures: BTreeMap<String, u64>,
    /// Stable subscribers that ended before the stop, by reason.
    pub(crate) stable_dropped: BTreeMap<String, u64>,
    /// Churning connections opened per second.
    pub(crate) churn_per_sec: f64,
    /// How long each churning connection stays open, seconds.
    pub(crate) lifetime_secs: f64,
    /// Publishing and churning time, seconds.
    pub(crate) duration_secs: f64,
    /// Churning connections tried.
    pub(crate) churn_attempted: u64,
    /// Of them, connected and subscribed.
    pub(crate) churn_connected: u64,
    /// Of them, failed to connect or subscribe.
    pub(crate) churn_failed: u64,
    /// Connect failures by kind.
    pub(crate) churn_errors: BTreeMap<String, u64>,
    /// The first connect failure in full.
    pub(crate) churn_first_error: Option<String>,
    /// Churning connections the server ended before their lifetime, by reason.
    pub(crate) churn_dropped: BTreeMap<String, u64>,
    /// Churning connections not finished when the run ended.
    pub(crate) churn_unfinished: u64,
    /// Time for a churning connection to be connected and subscribed.
    pub(crate) connect_latency: LatencySummary,
    /// Scheduled publications per second.
    pub(crate) rate_per_sec: f64,
    /// Publications on the schedule.
    pub(crate) publications_scheduled: u64,
    /// Publications the hub accepted.
    pub(crate) publications_sent: u64,
    /// Publish failures by kind (skipped and abandoned calls included).
    pub(crate) publish_failures: BTreeMap<String, u64>,
    /// Publications received by the stable subscribers.
    pub(crate) deliveries: u64,
    /// publications_sent × stable_connected.
    pub(crate) deliveries_expected: u64,
    /// Scheduled send time to receipt, stable subscribers.
    pub(crate) latency: LatencySummary,
    /// The server processes measured (`--pid`; a cluster's nodes): the server CPU and RSS
    /// figures are sums over them.
    pub(crate) server_pids: Vec<u32>,
    /// CPU use during the measurement window.
    pub(crate) cpu: CpuUsage,
    /// Server CPU per delivery to a stable subscriber, µs (with --pid; the churn's cost is
    /// in it).
    pub(crate) server_cpu_us_per_delivery: Option<f64>,
    /// Average server cores busy (with --pid; all its processes together).
    pub(crate) server_cores: Option<f64>,
    /// Average cores busy in this client.
    pub(crate) client_cores: Option<f64>,
    /// Average cores busy in other processes.
    pub(crate) other_cores: Option<f64>,
    /// The server's RSS at the end, churning connections closed, bytes (with --pid; summed
    /// over its processes).
    pub(crate) server_rss_end_bytes: Option<u64>,
    /// Warnings about the measurement.
    pub(crate) warnings: Vec<String>,
}

/// Checks `--churn` × `--duration`; returns the connections to open.
fn churn_count(churn: f64, duration: Duration) -> Result<u64, String> {
    if !(churn.is_finite() && churn > 0.0 && churn <= 10_000.0) {
        return Err(format!(
            "--churn {churn}: must be more than 0 and at most 10000"
        ));
    }
    let total = (churn * duration.as_secs_f64()).round();
    if total < 1.0 {
        return Err("--churn × --duration opens no connection".into());
    }
    if total > MAX_CHURN {
        return Err(format!(
            "--churn × --duration opens {total} connections; the limit is {MAX_CHURN}"
        ));
    }
    Ok(total as u64)
}

/// Churning connections open at once at most: those within their lifetime, plus those
/// still connecting (at most the connect timeout), plus one second of closing.
fn churn_in_flight(churn: f64, lifetime: Duration, connect_timeout: Duration) -> u64 {
    (churn * (lifetime + connect_timeout + Duration::from_secs(1)).as_secs_f64()).ceil() as u64
}

/// Runs the scenario.
pub(crate) async fn run(
    args: ChurnArgs,
    allow_remote: bool,
    progress: bool,
) -> Result<Outcome<ChurnReport>, String> {
    let c = &args.connect;
    let total_pubs = fanout::schedule_size(args.rate, args.duration)?;
    let total_churn = churn_count(args.churn, args.duration)?;
    let targets = Arc::new(target::ws_list(&c.url, allow_remote).await?);
    target::check_sources(&c.source_addrs, allow_remote)?;
    let in_flight = churn_in_flight(args.churn, args.lifetime, c.connect_timeout);
    let stable = usize::try_from(args.stable).map_err(|e| e.to_string())?;
    procfs::check_readable(&c.pid)?;
    let path = Arc::new(PublishPath::open(&args.api, c, &args.channel, allow_remote).await?);

    let sources = Arc::new(c.source_addrs.clone());
    // The churning connections stay in this process, beside the publisher's.
    let (clock, mut held, opened) = scenario::open_subscribers(
        c,
        allow_remote,
        args.stable,
        (
            in_flight + args.api.files(),
            "--stable (plus the churning connections)",
        ),
        ChannelSpec::Fixed(args.channel.clone()),
        args.output.report.is_some(),
        Watch::bar(progress),
    )
    .await?;

    let cpu_before = CpuSnapshot::with_workers(&c.pid, &held.pids());
    let log = Arc::new(PublishLog::new());
    let (start, start_us) = scenario::schedule_start(clock, &mut held);
    let channel = args.channel.clone();
    let receivers = opened.connected;
    let streams = vec![Stream {
        route: Box::new(move |_| (channel.clone(), receivers)),
        rate: args.rate,
        total: total_pubs,
    }];
    // The churn runs beside the publisher, on the same schedule start.
    let churner = tokio::spawn(churn(
        ChurnPlan {
            targets: targets.clone(),
            sources,
            secret: c.secret.clone(),
            channel: args.channel.clone(),
            first: stable,
            total: total_churn,
            period: Duration::from_secs_f64(1.0 / args.churn),
            lifetime: args.lifetime,
            connect_timeout: c.connect_timeout,
            wire: c.wire(),
        },
        tokio::time::Instant::from_std(start),
    ));
    let (skipped, abandoned) = fanout::publish_streams(
        &path,
        &log,
        streams,
        args.publish.size as usize,
        start,
        start_us,
        args.publish.drain + args.api.publish_timeout,
    )
    .await?;
    let sent = log.ok.load(Ordering::Relaxed);
    let expected = log.expected.load(Ordering::Relaxed);
    held.drain(expected, args.publish.drain).await;
    let churned = churner
        .await
        .map_err(|e| format!("the churn task failed: {e}"))?;
    let cpu_after = CpuSnapshot::with_workers(&c.pid, &held.pids());
    let rss_end = scenario::server_rss(&c.pid);
    let received = held.stop().await;
    let ending = received.ending;

    let cpu = CpuUsage::between(&cpu_before, &cpu_after);
    let deliveries = received.deliveries;
    let mut publish_failures = scenario::publish_failures(&log, abandoned);
    if skipped > 0 {
        publish_failures.insert("skipped: backlog full".into(), skipped);
    }
    let mut warnings = Vec::new();
    if let Some(w) = cpu.contamination_warning(CONTAMINATION_CORES) {
        warnings.push(w);
    }
    warnings.extend(scenario::missing_deliveries(
        deliveries,
        expected,
        args.publish.drain,
    ));
    let report = ChurnReport {
        scenario: "churn",
        url: c.url.clone(),
        protocol: c.wire().flavour,
        api_url: args.api.api_url.clone(),
        publish_via: path.via,
        publish_url: path.url.clone(),
        channel: args.channel.clone(),
        stable: args.stable,
        stable_connected: opened.connected,
        stable_failures: opened.failures.clone(),
        stable_dropped: ending.dropped,
        churn_per_sec: args.churn,
        lifetime_secs: args.lifetime.as_secs_f64(),
        duration_secs: args.duration.as_secs_f64(),
        churn_attempted: churned.attempted,
        churn_connected: churned.connected,
        churn_failed: churned.errors.values().sum(),
        churn_errors: churned.errors,
        churn_first_error: churned.first_error,
        churn_dropped: churned.dropped,
        churn_unfinished: churned.unfinished,
        connect_latency: LatencySummary::of(&churned.latency),
        rate_per_sec: args.rate,
        publications_scheduled: total_pubs,
        publications_sent: sent,
        publish_failures,
        deliveries,
        deliveries_expected: expected,
        latency: LatencySummary::of(&received.latency),
        server_cpu_us_per_delivery: CpuUsage::us_per_delivery(cpu.server_cpu_secs, deliveries),
        server_cores: cpu.server_cores(),
        client_cores: cpu.client_cores(),
        other_cores: cpu.other_cores(),
        server_pids: c.pid.clone(),
        cpu,
        server_rss_end_bytes: rss_end,
        warnings,
    };
    if let Some(dir) = &args.output.report {
        crate::report::write(
            dir,
            "churn",
            &report.human(),
            &received.timeline.seconds(),
            &[],
        )?;
    }
    let complete = report.deliveries == report.deliveries_expected
        && report.publications_sent == report.publications_scheduled
        && report.stable_connected == report.stable
        && report.stable_dropped.is_empty()
        && report.churn_connected == report.churn_attempted
        && report.churn_attempted == total_churn
        && report.churn_dropped.is_empty()
        && report.churn_unfinished == 0;
    Ok(Outcome { report, complete })
}

/// What the churn opens.
struct ChurnPlan {
    targets: Arc<Vec<WsTarget>>,
    sources: Arc<Vec<std::net::IpAddr>>,
    secret: String,
    channel: String,
    /// Index of the first churning connection (after the stable ones).
    first: usize,
    total: u64,
    period: Duration,
    lifetime: Duration,
    connect_timeout: Duration,
    wire: conn::Wire,
}

/// The churn, summed up.
#[derive(Debug)]
struct ChurnTally {
    attempted: u64,
    connected: u64,
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
    dropped: BTreeMap<String, u64>,
    unfinished: u64,
    latency: hdrhistogram::Histogram<u64>,
}

/// Opens `plan.total` connections, one every `plan.period` from `start`; each closes after
/// its lifetime. Returns once all have ended (or could not in time).
async fn churn(plan: ChurnPlan, start: tokio::time::Instant) -> ChurnTally {
    let mut tasks: JoinSet<Churned> = JoinSet::new();
    let sink: Arc<Ignore> = Arc::new(Ignore);
    let mut tally = ChurnTally {
        attempted: 0,
        connected: 0,
        errors: BTreeMap::new(),
        first_error: None,
        dropped: BTreeMap::new(),
        unfinished: 0,
        latency: stats::new_histogram(),
    };
    let count = |r: Churned, t: &mut ChurnTally| match r {
        Churned::Failed(e) => {
            *t.errors.entry(e.kind()).or_default() += 1;
            t.first_error.get_or_insert_with(|| e.to_string());
        }
        Churned::Done { latency, reason } => {
            t.connected += 1;
            t.latency.saturating_record(fanout::micros(latency).max(1));
            let why = match reason {
                EndReason::Stopped => return,
                EndReason::Closed(Some(code)) => format!("closed {code}"),
                EndReason::Closed(None) => "closed".into(),
                EndReason::Failed(e) => format!("error: {e}"),
            };
            *t.dropped.entry(why).or_default() += 1;
        }
    };
    for k in 0..plan.total {
        tokio::time::sleep_until(start + plan.period.mul_f64(k as f64)).await;
        while let Some(r) = tasks.try_join_next() {
            if let Ok(r) = r {
                count(r, &mut tally);
            }
        }
        let i = plan.first + k as usize;
        let (target, source) = swarm::route(&plan.targets, &plan.sources, i);
        let target = target.clone();
        let token = token::for_connection(&plan.secret, i);
        let channels = vec![plan.channel.clone()];
        let (wire, timeout, lifetime) = (plan.wire, plan.connect_timeout, plan.lifetime);
        let sink = sink.clone();
        tally.attempted += 1;
        tasks.spawn(async move {
            let t = Instant::now();
            match conn::open(&target, source, &token, &channels, wire, timeout).await {
                Err(e) => Churned::Failed(e),
                Ok(session) => {
                    let latency = t.elapsed();
                    let (stop, stop_rx) = watch::channel(false);
                    let (ended, ()) = tokio::join!(session.run(i, stop_rx, &*sink), async {
                        tokio::time::sleep(lifetime).await;
                        let _ = stop.send(true);
                    });
                    Churned::Done {
                        latency,
                        reason: ended.reason,
                    }
                }
            }
        });
    }
    // Each ends within its connect timeout, its lifetime, and the 2 s close.
    let deadline =
        tokio::time::Instant::now() + plan.connect_timeout + plan.lifetime + Duration::from_secs(3);
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(Ok(r))) => count(r, &mut tally),
            Ok(Some(Err(_))) => {
                *tally.dropped.entry("task failed".into()).or_default() += 1;
            }
            Ok(None) => break,
            Err(_) => {
                tally.unfinished = tasks.len() as u64;
                tasks.abort_all();
                break;
            }
        }
    }
    tally
}

impl ChurnReport {
    /// The human summary.
    pub(crate) fn human(&self) -> String {
        let mut s = String::new();
        let mut line = |l: String| {
            s.push_str(&l);
            s.push('\n');
        };
        line(format!(
            "churn: {} stable on {:?}, {}/s opening for {:.1} s each, {}/s publications for {:.1} s ({}, {})",
            self.stable,
            self.channel,
            self.churn_per_sec,
            self.lifetime_secs,
            self.rate_per_sec,
            self.duration_secs,
            self.url,
            self.protocol.label()
        ));
        line(format!(
            "  stable        {} connected, {} failed, {} dropped",
            self.stable_connected,
            self.stable_failures.values().sum::<u64>(),
            self.stable_dropped.values().sum::<u64>()
        ));
        for (kind, n) in self.stable_failures.iter().chain(&self.stable_dropped) {
            line(format!("    {n} × {kind}"));
        }
        line(format!(
            "  churn         {} opened of {} tried, {} failed, {} dropped early, {} unfinished",
            self.churn_connected,
            self.churn_attempted,
            self.churn_failed,
            self.churn_dropped.values().sum::<u64>(),
            self.churn_unfinished
        ));
        for (kind, n) in self.churn_errors.iter().chain(&self.churn_dropped) {
            line(format!("    {n} × {kind}"));
        }
        if let Some(e) = &self.churn_first_error {
            line(format!("    first error: {e}"));
        }
        let l = &self.connect_latency;
        line(format!(
            "  connect time  p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (handshake + connect + subscribe)",
            l.p50_ms, l.p99_ms, l.max_ms
        ));
        line(format!(
            "  publications  {} sent of {} scheduled, via {} ({})",
            self.publications_sent,
            self.publications_scheduled,
            self.publish_via.label(),
            self.publish_url
        ));
        for (kind, n) in &self.publish_failures {
            line(format!("    {n} × {kind}"));
        }
        line(format!(
            "  deliveries    {} of {} expected (stable subscribers)",
            self.deliveries, self.deliveries_expected
        ));
        let l = &self.latency;
        line(format!(
            "  latency (ms)  p50 {:.2}  p99 {:.2}  max {:.2}  (scheduled send -> receipt)",
            l.p50_ms, l.p99_ms, l.max_ms
        ));
        let cores = |c: Option<f64>| c.map_or("-".to_owned(), |c| format!("{c:.2}"));
        if let Some(us) = self.server_cpu_us_per_delivery {
            line(format!(
                "  server CPU    {us:.2} µs per stable delivery, churn included ({} cores busy; {})",
                cores(self.server_cores),
                scenario::pids_label(&self.server_pids)
            ));
        }
        line(format!(
            "  CPU (cores)   server {}  client {}  other {}",
            cores(self.server_cores),
            cores(self.client_cores),
            cores(self.other_cores)
        ));
        if let Some(r) = self.server_rss_end_bytes {
            line(format!(
                "  server RSS    {:.1} MiB at the end",
                r as f64 / (1024.0 * 1024.0)
            ));
        }
        for w in &self.warnings {
            line(format!("  warning: {w}"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn churn_is_bounded() {
        assert_eq!(churn_count(10.0, Duration::from_secs(3)), Ok(30));
        assert!(churn_count(0.0, Duration::from_secs(3)).is_err());
        assert!(churn_count(f64::INFINITY, Duration::from_secs(3)).is_err());
        assert!(churn_count(0.1, Duration::from_secs(1)).is_err());
        assert!(churn_count(10_000.0, Duration::from_secs(3600)).is_err());
    }

    #[test]
    fn in_flight_counts_lifetime_and_timeouts() {
        assert_eq!(
            churn_in_flight(10.0, Duration::from_secs(2), Duration::from_secs(10)),
            130
        );
        assert_eq!(
            churn_in_flight(0.5, Duration::from_millis(500), Duration::ZERO),
            1
        );
    }
}
