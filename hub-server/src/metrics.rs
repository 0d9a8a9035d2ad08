//! The Prometheus exporter: installs a global recorder once and renders `/metrics`, followed by
//! the standard process metrics (`process_resident_memory_bytes`, `process_cpu_seconds_total`,
//! `process_open_fds`, `process_max_fds`), read from `/proc/self` at each scrape. Where
//! `/proc/self` cannot be read (not Linux), they are left out.
//!
//! Every `hub_*` metric is described (HELP text) when the recorder is installed, and the
//! unlabelled ones (and the labelled ones whose labels are a short fixed set) are registered
//! at zero then, so `/metrics` shows them before their first event and `rate()` starts from
//! 0. The dashboard and alerts in `monitoring/` refer only to these names (a test checks it).

use std::fmt::Write as _;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Buckets (seconds) of every `hub_*` histogram: all are latencies (commands, engine round
/// trips, backend calls), from 100 µs (a memory-engine publish) to 10 s (a proxy timeout).
/// Bucketed, `histogram_quantile` aggregates them across nodes, which summaries cannot.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Clock ticks per second of the CPU times in `/proc/PID/stat` (`USER_HZ`). The kernel exports
/// them in USER_HZ, which is 100 on every mainstream architecture (Prometheus's Go client
/// assumes the same); reading `sysconf(_SC_CLK_TCK)` would need `unsafe` or a dependency.
const USER_HZ: f64 = 100.0;

/// The process-wide handle (installed on first use; `None` if another recorder was set).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Prefix("hub_".into()), LATENCY_BUCKETS)
                .expect("LATENCY_BUCKETS is not empty")
                .build_recorder();
            let handle = recorder.handle();
            let handle = metrics::set_global_recorder(recorder).ok().map(|_| handle);
            if let Some(h) = &handle {
                describe();
                // Histogram samples wait in memory until folded into their buckets: fold
                // them every 5 s, so a node nobody scrapes does not grow (the exporter leaves
                // this to the caller when it is not installed as its own HTTP server).
                let upkeep = h.clone();
                let _ = std::thread::Builder::new()
                    .name("metrics-upkeep".into())
                    .spawn(move || loop {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        upkeep.run_upkeep();
                    });
            }
            handle
        })
        .as_ref()
}

/// A metric's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution (exported as a histogram: `_bucket{le}` over [`LATENCY_BUCKETS`],
    /// `_sum`, `_count`).
    Histogram,
}

/// Every `hub_*` metric: name, kind, labels, HELP text. A metric without labels (or with a
/// fixed set of label values, see [`describe`]) is present from startup.
pub const METRICS: &[(&str, Kind, &[&str], &str)] = &[
    ("hub_connections", Kind::Gauge, &[], "Connected (authenticated) clients on this node."),
    ("hub_sockets", Kind::Gauge, &[], "Open WebSocket sockets, connected or not yet."),
    ("hub_connection_limit", Kind::Gauge, &[], "The configured client.connection_limit (0 = only the open-files limit)."),
    ("hub_subscriptions", Kind::Gauge, &[], "Channel subscriptions on this node."),
    ("hub_connects_total", Kind::Counter, &[], "Clients that completed connect."),
    ("hub_connections_refused_total", Kind::Counter, &["reason"], "WebSocket upgrades refused (limit, overload, rate)."),
    ("hub_disconnects_total", Kind::Counter, &["code"], "Client sessions closed, by disconnect code."),
    ("hub_commands_total", Kind::Counter, &["method"], "Client commands handled, by method."),
    ("hub_command_duration_seconds", Kind::Histogram, &["method"], "Time to handle a client command."),
    ("hub_commands_rate_limited_total", Kind::Counter, &[], "Client commands refused by the per-connection rate limit."),
    ("hub_messages_received_total", Kind::Counter, &[], "WebSocket messages received from clients."),
    ("hub_messages_sent_total", Kind::Counter, &[], "WebSocket messages sent to clients."),
    ("hub_bytes_received_total", Kind::Counter, &[], "WebSocket bytes read from client sockets (frame headers included)."),
    ("hub_bytes_sent_total", Kind::Counter, &[], "WebSocket bytes written to client sockets (frame headers included)."),
    ("hub_messages_dropped_total", Kind::Counter, &["reason"], "Replies and pushes that never reached their client: closing (connection already closing), slow_consumer (discarded with a 3008 client's queue), unencodable (binary data for a JSON client)."),
    ("hub_publications_total", Kind::Counter, &[], "Publications made on this node."),
    ("hub_deliveries_total", Kind::Counter, &[], "Publications enqueued to local subscribers (one per subscriber)."),
    ("hub_slow_consumers_total", Kind::Counter, &[], "Clients cut because their outgoing queue overflowed (3008)."),
    ("hub_stream_gaps_total", Kind::Counter, &[], "Gaps detected in a channel stream (missed publications)."),
    ("hub_recoveries_total", Kind::Counter, &["recovered"], "Subscriptions asking for recovery, by outcome."),
    ("hub_scheduler_lag_seconds", Kind::Gauge, &[], "How late the runtime wakes a 100 ms timer (smoothed)."),
    ("hub_broker_duration_seconds", Kind::Histogram, &["op"], "Round trip of one engine call (broker and presence: publish, history, subscribe, presence_add...)."),
    ("hub_broker_errors_total", Kind::Counter, &["op"], "Engine calls that failed, by operation."),
    ("hub_engine_ready", Kind::Gauge, &[], "1 when the engine (broker) is reachable and the node not draining, else 0; checked at each scrape and /ready."),
    ("hub_redis_shard_up", Kind::Gauge, &["shard"], "1 while a Redis shard (its index in engine.redis.address) is reachable with its circuit breaker closed, else 0 (redis engine); checked at each scrape and /ready."),
    ("hub_redis_reconnects_total", Kind::Counter, &[], "Redis PUB/SUB reconnections (redis engine)."),
    ("hub_redis_breaker_opened_total", Kind::Counter, &[], "Times a Redis shard's circuit opened after an I/O error (redis engine)."),
    ("hub_redis_subscribe_errors_total", Kind::Counter, &[], "Failed Redis channel subscriptions (redis engine)."),
    ("hub_redis_messages_lost_total", Kind::Counter, &[], "Redis PUB/SUB messages lost (redis engine)."),
    ("hub_api_calls_total", Kind::Counter, &["method", "transport"], "Server API calls, by method and transport."),
    ("hub_proxy_calls_total", Kind::Counter, &["event", "result"], "Calls to backend proxies, by event and result."),
    ("hub_proxy_call_duration_seconds", Kind::Histogram, &["event"], "Duration of backend proxy calls."),
    ("hub_proxy_breaker_open", Kind::Gauge, &["endpoint"], "1 while a backend proxy's circuit breaker is open."),
    ("hub_proxy_send_total", Kind::Counter, &["result"], "Client sends forwarded to the backend, by result."),
    ("hub_proxy_send_retries_total", Kind::Counter, &[], "Retries of client sends to the backend."),
    ("hub_proxy_publication_forward_total", Kind::Counter, &["result"], "Publications forwarded to the backend, by result."),
    ("hub_proxy_publication_forward_retries_total", Kind::Counter, &[], "Retries of publication forwards."),
    ("hub_dead_letters_total", Kind::Counter, &[], "Events written to the dead-letter store."),
    ("hub_dead_letters_fallback_total", Kind::Counter, &[], "Dead letters written to the fallback file."),
    ("hub_dead_letters_dropped_total", Kind::Counter, &[], "Dead letters dropped (store full or failing)."),
    ("hub_trace_export_failures_total", Kind::Counter, &[], "Span batches the OTLP exporter failed to send (opentelemetry.enabled)."),
];

/// Describes every metric of [`METRICS`] and registers at zero those without labels, and
/// the labelled ones whose values are a fixed set (refusal reasons, recovery outcomes).
fn describe() {
    for &(name, kind, labels, help) in METRICS {
        match kind {
            Kind::Counter => {
                metrics::describe_counter!(name, help);
                if labels.is_empty() {
                    metrics::counter!(name).increment(0);
                }
            }
            Kind::Gauge => {
                metrics::describe_gauge!(name, help);
                if labels.is_empty() {
                    metrics::gauge!(name).increment(0.0);
                }
            }
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
    for reason in [
        "connection limit reached",
        "node overloaded",
        "too many connections from this address",
        "connection rate limit reached",
    ] {
        metrics::counter!("hub_connections_refused_total", "reason" => reason).increment(0);
    }
    for reason in ["closing", "slow_consumer", "unencodable"] {
        metrics::counter!("hub_messages_dropped_total", "reason" => reason).increment(0);
    }
    for &op in hub_core::broker::ENGINE_OPS {
        metrics::counter!("hub_broker_errors_total", "op" => op).increment(0);
    }
    for recovered in ["yes", "no"] {
        metrics::counter!("hub_recoveries_total", "recovered" => recovered).increment(0);
    }
}

/// The text exposition: the recorded metrics, then the process metrics.
pub fn render() -> String {
    let mut text = handle().map(|h| h.render()).unwrap_or_default();
    text.push_str(&process_metrics(&ProcessStats::read_self()));
    text
}

/// This process as `/proc/self` shows it; each figure is `None` when it cannot be read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    /// Resident memory, bytes (`VmRSS` of `/proc/self/status`).
    pub resident_memory_bytes: Option<u64>,
    /// User and system CPU time of all threads, seconds (`utime + stime` of
    /// `/proc/self/stat`).
    pub cpu_seconds: Option<f64>,
    /// Open file descriptors (entries of `/proc/self/fd`).
    pub open_fds: Option<u64>,
    /// The soft limit of open file descriptors (`Max open files` of `/proc/self/limits`).
    pub max_fds: Option<u64>,
}

impl ProcessStats {
    /// Reads `/proc/self` now.
    pub fn read_self() -> Self {
        let read = |f: &str| std::fs::read_to_string(format!("/proc/self/{f}")).ok();
        ProcessStats {
            resident_memory_bytes: read("status").as_deref().and_then(parse_vm_rss),
            cpu_seconds: read("stat").as_deref().and_then(parse_stat_cpu_seconds),
            // The directory handle of the listing is one of the entries: not counted.
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| (d.count() as u64).saturating_sub(1)),
            max_fds: read("limits").as_deref().and_then(parse_max_open_files),
        }
    }
}

/// `VmRSS` of a `/proc/PID/status` text, in bytes.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let rest = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let mut it = rest.split_whitespace();
    let n: u64 = it.next()?.parse().ok()?;
    match it.next() {
        Some("kB") | None => Some(n * 1024),
        Some(_) => None,
    }
}

/// `utime + stime` of a `/proc/PID/stat` text, in seconds. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat_cpu_seconds(stat: &str) -> Option<f64> {
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// The soft limit of the `Max open files` line of a `/proc/PID/limits` text (`None` when
/// unlimited).
fn parse_max_open_files(limits: &str) -> Option<u64> {
    let rest = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The exposition of `stats`: one gauge or counter per figure read, in Prometheus's standard
/// names.
pub fn process_metrics(stats: &ProcessStats) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: Option<String>| {
        if let Some(v) = value {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n\n"
            );
        }
    };
    metric(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        stats.resident_memory_bytes.map(|v| v.to_string()),
    );
    metric(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        stats.cpu_seconds.map(|v| v.to_string()),
    );
    metric(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        stats.open_fds.map(|v| v.to_string()),
    );
    metric(
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors.",
        stats.max_fds.map(|v| v.to_string()),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the unlabelled sample `name` in an exposition text.
    fn sample(text: &str, name: &str) -> Option<f64> {
        text.lines().find_map(|l| {
            let (n, v) = l.split_once(' ')?;
            (n == name).then(|| v.parse().ok())?
        })
    }

    #[test]
    fn proc_files_parse() {
        let status = "Name:\thub-server\nVmSize:\t  123400 kB\nVmRSS:\t   18432 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(18432 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        // A command name with spaces and a ')' inside; utime 100, stime 23 ticks.
        let stat = "42 (a b) c) R 1 42 42 0 -1 0 0 0 0 0 100 23 0 0 20 0 4 0 1 2 3";
        assert_eq!(parse_stat_cpu_seconds(stat), Some(1.23));
        assert_eq!(parse_stat_cpu_seconds("42 (x) R 1"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            20000                524288               files     \n";
        assert_eq!(parse_max_open_files(limits), Some(20000));
        assert_eq!(
            parse_max_open_files("Max open files unlimited unlimited files\n"),
            None
        );
    }

    #[test]
    fn only_the_figures_read_are_exported() {
        let text = process_metrics(&ProcessStats {
            resident_memory_bytes: Some(4096),
            cpu_seconds: Some(1.5),
            open_fds: None,
            max_fds: Some(1024),
        });
        assert!(
            text.contains(
                "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 4096\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\n"
            ),
            "{text}"
        );
        assert_eq!(sample(&text, "process_max_fds"), Some(1024.0));
        assert!(!text.contains("process_open_fds"), "{text}");
        assert_eq!(process_metrics(&ProcessStats::default()), "");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_exposition_has_this_process_figures() {
        handle();
        metrics::counter!("hub_metrics_test_total").increment(1);
        let text = render();
        let rss = sample(&text, "process_resident_memory_bytes").expect("rss in /metrics");
        assert!(rss > 0.0, "{text}");
        assert!(sample(&text, "process_cpu_seconds_total").is_some_and(|c| c >= 0.0));
        let open = sample(&text, "process_open_fds").expect("open fds");
        let max = sample(&text, "process_max_fds").expect("max fds");
        assert!(open >= 3.0 && open <= max, "{text}");
        assert!(text.contains("hub_metrics_test_total 1"), "{text}");
    }
}
