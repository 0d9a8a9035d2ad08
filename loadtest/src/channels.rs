//! `channels`: the shape of Centrifugo's published million-connection benchmark, scaled.
//! Connection i subscribes to its personal channel `personal-<i>` and to its group's
//! channel `group-<i / group-size>`; publications go to random group channels at
//! `--group-rate` and to random personal channels at `--personal-rate`, one publish call each
//! (`POST /api/publish`, a gRPC `Publish` or a client `publish` command, `--publish-via`; not
//! `/api/batch`: one call per publication keeps each publication's scheduled time, and its
//! success, its own).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::{ChannelsArgs, PublishVia};
use crate::fanout::{self, PublishLog, Stream, CONTAMINATION_CORES};
use crate::procfs::{CpuSnapshot, CpuUsage};
use crate::publisher::PublishPath;
use crate::stats::{self, LatencySummary};
use crate::workers::{ChannelSpec, Watch};
use crate::{scenario, Outcome};

/// The channels of connection `i`: its personal channel and its group's.
pub(crate) fn channels_of(i: usize, group_size: usize) -> Vec<String> {
    vec![
        format!("personal-{i}"),
        format!("group-{}", i / group_size.max(1)),
    ]
}

/// Connected subscribers per group channel, from which connections are connected.
pub(crate) fn group_counts(connected: &[bool], group_size: usize) -> Vec<u64> {
    let g = group_size.max(1);
    let mut counts = vec![0u64; connected.len().div_ceil(g)];
    for (i, &c) in connected.iter().enumerate() {
        counts[i / g] += u64::from(c);
    }
    counts
}

/// The `channels` summary.
#[derive(Debug, serde::Serialize)]
pub(crate) struct ChannelsReport {
    /// "channels".
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
    /// Connections asked for.
    pub(crate) connections: u64,
    /// Connected and subscribed to both channels.
    pub(crate) connected: u64,
    /// Failures by kind.
    pub(crate) failures: BTreeMap<String, u64>,
    /// The first failure in full.
    pub(crate) first_error: Option<String>,
    /// Connections that ended before the stop, by reason.
    pub(crate) dropped: BTreeMap<String, u64>,
    /// Connections per group channel.
    pub(crate) group_size: u64,
    /// Group channels.
    pub(crate) groups: u64,
    /// Publications per second to group channels.
    pub(crate) group_rate_per_sec: f64,
    /// Publications per second to personal channels.
    pub(crate) personal_rate_per_sec: f64,
    /// Data size of each publication, bytes.
    pub(crate) size_bytes: u64,
    /// Publishing time, seconds.
    pub(crate) duration_secs: f64,
    /// The method called per publication (`publish`, on every path).
    pub(crate) api_method: &'static str,
    /// Publications on the schedules.
    pub(crate) publications_scheduled: u64,
    /// Publications the hub accepted.
    pub(crate) publications_sent: u64,
    /// Publish failures by kind (skipped and abandoned calls included).
    pub(crate) publish_failures: BTreeMap<String, u64>,
    /// The first publish failure in full.
    pub(crate) publish_first_error: Option<String>,
    /// Publications received.
    pub(crate) deliveries: u64,
    /// Sum over accepted publications of their channel's connected subscribers.
    pub(crate) deliveries_expected: u64,
    /// Deliveries per second, from the first scheduled publication to the last delivery.
    pub(crate) deliveries_per_sec: f64,
    /// The same, per minute (the unit of Centrifugo's published figures).
    pub(crate) deliveries_per_minute: f64,
    /// Scheduled send time to receipt.
    pub(crate) latency: LatencySummary,
    /// Time for a connection to be connected and subscribed.
    pub(crate) connect_latency: LatencySummary,
    /// The server processes measured (`--pid`; a cluster's nodes): the server CPU and RSS
    /// figures are sums over them.
    pub(crate) server_pids: Vec<u32>,
    /// CPU use during the measurement window.
    pub(crate) cpu: CpuUsage,
    /// Server CPU per delivery, µs (with --pid; of all its processes).
    pub(crate) server_cpu_us_per_delivery: Option<f64>,
    /// Average server cores busy (with --pid; all its processes together).
    pub(crate) server_cores: Option<f64>,
    /// Average cores busy in this client.
    pub(crate) client_cores: Option<f64>,
    /// Average cores busy in other processes.
    pub(crate) other_cores: Option<f64>,
    /// Server RSS before opening, bytes (with --pid; summed over its processes).
    pub(crate) server_rss_before_bytes: Option<u64>,
    /// Server RSS once all were connected and settled, bytes (with --pid; summed).
    pub(crate) server_rss_connected_bytes: Option<u64>,
    /// RSS growth per connected connection, bytes (with --pid; of the sums).
    pub(crate) server_rss_per_connection_bytes: Option<f64>,
    /// Warnings about the measurement.
    pub(crate) warnings: Vec<String>,
}

/// Runs the scenario.
pub(crate) async fn run(
    args: ChannelsArgs,
    allow_remote: bool,
    progress: bool,
) -> Result<Outcome<ChannelsReport>, String> {
    let c = &args.connect;
    let group_total = fanout::optional_schedule(args.group_rate, args.duration, "--group-rate")?;
    let personal_total =
        fanout::optional_schedule(args.personal_rate, args.duration, "--personal-rate")?;
    if group_total + personal_total == 0 {
        return Err("--group-rate and --personal-rate are both 0: nothing to publish".into());
    }
    let n = usize::try_from(args.connections).map_err(|e| e.to_string())?;
    let group_size = usize::try_from(args.group_size).map_err(|e| e.to_string())?;
    let rss_before = scenario::server_rss_before(&c.pid)?;
    let path = Arc::new(PublishPath::open(&args.api, c, "group-0", allow_remote).await?);

    let (clock, mut held, opened) = scenario::open_subscribers(
        c,
        allow_remote,
        args.connections,
        (args.api.files(), "--connections"),
        ChannelSpec::PersonalGroup { group_size },
        args.output.report.is_some(),
        Watch::bar(progress),
    )
    .await?;
    tokio::time::sleep(args.settle).await;
    let rss_connected = scenario::settled_server_rss(&c.pid).await;

    let cpu_before = CpuSnapshot::with_workers(&c.pid, &held.pids());
    let log = Arc::new(PublishLog::new());
    let (start, start_us) = scenario::schedule_start(clock, &mut held);
    let groups = group_counts(&opened.connected_ids, group_size);
    let personal: Vec<bool> = opened.connected_ids.clone();
    debug_assert_eq!(personal.len(), n);
    let mut group_rng = fastrand::Rng::new();
    let mut personal_rng = fastrand::Rng::new();
    let group_count = groups.len();
    let streams = vec![
        Stream {
            route: Box::new(move |_| {
                let g = group_rng.usize(..group_count);
                (format!("group-{g}"), groups[g])
            }),
            rate: args.group_rate,
            total: group_total,
        },
        Stream {
            route: Box::new(move |_| {
                let i = personal_rng.usize(..personal.len());
                (format!("personal-{i}"), u64::from(personal[i]))
            }),
            rate: args.personal_rate,
            total: personal_total,
        },
    ];
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
    let cpu_after = CpuSnapshot::with_workers(&c.pid, &held.pids());
    let received = held.stop().await;
    let ending = received.ending;

    let cpu = CpuUsage::between(&cpu_before, &cpu_after);
    let deliveries = received.deliveries;
    let last_us = received.last_us;
    let window = Duration::from_micros(last_us.saturating_sub(start_us));
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
    let per_sec = stats::per_sec(deliveries, window);
    let report = ChannelsReport {
        scenario: "channels",
        url: c.url.clone(),
        protocol: c.wire().flavour,
        api_url: args.api.api_url.clone(),
        publish_via: path.via,
        publish_url: path.url.clone(),
        connections: args.connections,
        connected: opened.connected,
        failures: opened.failures.clone(),
        first_error: opened.first_error.clone(),
        dropped: ending.dropped,
        group_size: args.group_size,
        groups: group_count as u64,
        group_rate_per_sec: args.group_rate,
        personal_rate_per_sec: args.personal_rate,
        size_bytes: args.publish.size,
        duration_secs: args.duration.as_secs_f64(),
        api_method: "publish",
        publications_scheduled: group_total + personal_total,
        publications_sent: sent,
        publish_failures,
        publish_first_error: scenario::publish_first_error(&log),
        deliveries,
        deliveries_expected: expected,
        deliveries_per_sec: per_sec,
        deliveries_per_minute: per_sec * 60.0,
        latency: LatencySummary::of(&received.latency),
        connect_latency: LatencySummary::of(&opened.latency),
        server_cpu_us_per_delivery: CpuUsage::us_per_delivery(cpu.server_cpu_secs, deliveries),
        server_cores: cpu.server_cores(),
        client_cores: cpu.client_cores(),
        other_cores: cpu.other_cores(),
        server_pids: c.pid.clone(),
        cpu,
        server_rss_before_bytes: rss_before,
        server_rss_connected_bytes: rss_connected,
        server_rss_per_connection_bytes: scenario::rss_per_connection(
            rss_before,
            rss_connected,
            opened.connected,
        ),
        warnings,
    };
    if let Some(dir) = &args.output.report {
        crate::report::write(
            dir,
            "channels",
            &report.human(),
            &received.timeline.seconds(),
            &[],
        )?;
    }
    let complete = report.deliveries == report.deliveries_expected
        && report.publications_sent == report.publications_scheduled
        && report.connected == report.connections
        && report.dropped.is_empty();
    Ok(Outcome { report, complete })
}

impl ChannelsReport {
    /// The human summary.
    pub(crate) fn human(&self) -> String {
        let mut s = String::new();
        let mut line = |l: String| {
            s.push_str(&l);
            s.push('\n');
        };
        line(format!(
            "channels: {} connections (personal + group of {}; {} groups), {}/s to groups + {}/s \
             to personal channels × {} B for {:.1} s ({}, {})",
            self.connections,
            self.group_size,
            self.groups,
            self.group_rate_per_sec,
            self.personal_rate_per_sec,
            self.size_bytes,
            self.duration_secs,
            self.url,
            self.protocol.label()
        ));
        line(format!(
            "  connections   {} connected, {} failed, {} dropped",
            self.connected,
            self.failures.values().sum::<u64>(),
            self.dropped.values().sum::<u64>()
        ));
        for (kind, n) in self.failures.iter().chain(&self.dropped) {
            line(format!("    {n} × {kind}"));
        }
        if let Some(e) = &self.first_error {
            line(format!("    first error: {e}"));
        }
        line(format!(
            "  publications  {} sent of {} scheduled (one {} call each), via {} ({})",
            self.publications_sent,
            self.publications_scheduled,
            self.api_method,
            self.publish_via.label(),
            self.publish_url
        ));
        for (kind, n) in &self.publish_failures {
            line(format!("    {n} × {kind}"));
        }
        if let Some(e) = &self.publish_first_error {
            line(format!("    first error: {e}"));
        }
        line(format!(
            "  deliveries    {} of {} expected ({:.0}/s, {:.0}/min)",
            self.deliveries,
            self.deliveries_expected,
            self.deliveries_per_sec,
            self.deliveries_per_minute
        ));
        let l = &self.latency;
        line(format!(
            "  latency (ms)  p50 {:.2}  p99 {:.2}  max {:.2}  (scheduled send -> receipt)",
            l.p50_ms, l.p99_ms, l.max_ms
        ));
        let cores = |c: Option<f64>| c.map_or("-".to_owned(), |c| format!("{c:.2}"));
        if let Some(us) = self.server_cpu_us_per_delivery {
            line(format!(
                "  server CPU    {us:.2} µs per delivery ({} cores busy; {})",
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
        if let Some(per) = self.server_rss_per_connection_bytes {
            line(format!(
                "  server RSS    {per:.0} bytes per connection (two subscriptions each)"
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
    fn each_connection_has_a_personal_and_a_group_channel() {
        assert_eq!(channels_of(0, 10), ["personal-0", "group-0"]);
        assert_eq!(channels_of(9, 10), ["personal-9", "group-0"]);
        assert_eq!(channels_of(10, 10), ["personal-10", "group-1"]);
        assert_eq!(channels_of(7, 0), ["personal-7", "group-7"]);
    }

    #[test]
    fn groups_count_only_connected_members() {
        let mut c = vec![true; 25];
        c[3] = false;
        c[24] = false;
        assert_eq!(group_counts(&c, 10), vec![9, 10, 4]);
        assert_eq!(group_counts(&[], 10), Vec::<u64>::new());
    }
}
