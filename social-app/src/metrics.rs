//! Prometheus metrics at `GET /metrics`: the gateway serves them on its HTTP port, a service
//! process on `--metrics <addr>`. One recorder per process, so a process that embeds the hub
//! node also shows the node's `hub_*` metrics (connections, subscriptions, deliveries...,
//! without HELP text: hub-server describes them, hub-core does not).
//!
//! The app's own metrics, all described (`# HELP`), the unlabelled ones and those with a
//! short fixed set of labels present at zero from the start:
//! - `social_http_requests_total{route,method,status}` and
//!   `social_http_request_duration_seconds{route}` (a histogram with buckets, so quantiles
//!   can be computed across instances): gateway requests by route template
//!   (`/api/chats/{id}/messages`), never by raw path; a path no route matches is `other`;
//! - `social_rpc_calls_total{service,method,code}`: gRPC calls this process made to a service
//!   (`users`, `posts`, `chats`, `counters`), by method and gRPC code (`OK`, `NotFound`,
//!   `Unavailable` when the service cannot be reached...);
//! - `social_service_calls_total{service,result}`: gRPC calls a service received (`ok`, or
//!   `unauthenticated` without the internal token);
//! - `social_logins_total{result}`: `ok`, `bad_credentials`, `rate_limited`;
//! - `social_hub_publishes_total{result}`: live events published to the hub, `ok`/`failed`;
//! - `social_feed_fanout_writes_total{result}`: friends' feeds a new post was written into by
//!   fan-out on write, `ok`/`failed`;
//! - `social_chat_send_compensations_total`: chat sends undone by the saga (unread counters
//!   unreachable);
//! - `process_resident_memory_bytes`, `process_cpu_seconds_total`, `process_open_fds`,
//!   `process_max_fds` (from `/proc/self`, left out where it cannot be read).

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Buckets of `social_http_request_duration_seconds`, in seconds.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// How often histogram samples are folded into their buckets and summaries between scrapes
/// (without it they pile up in memory while nobody scrapes).
const UPKEEP: Duration = Duration::from_secs(5);

/// Clock ticks per second of the CPU times in `/proc/self/stat` (`USER_HZ`, 100 on every
/// mainstream architecture).
const USER_HZ: f64 = 100.0;

/// A label and its values present from the start (none: the series appear with their first
/// event).
type Preset = Option<(&'static str, &'static [&'static str])>;

/// The `social_*` metrics: name, HELP text, preset label values (`None`: no labels).
const DESCRIBED: &[(&str, &str, Preset)] = &[
    (
        "social_http_requests_total",
        "Gateway HTTP requests, by route template, method and status.",
        Some(("route", &[])),
    ),
    (
        "social_http_request_duration_seconds",
        "Gateway HTTP request duration, by route template.",
        Some(("route", &[])),
    ),
    (
        "social_rpc_calls_total",
        "gRPC calls made to the services, by service, method and gRPC code.",
        Some(("service", &[])),
    ),
    (
        "social_service_calls_total",
        "gRPC calls a service received, by service and result (ok, unauthenticated).",
        Some(("service", &[])),
    ),
    (
        "social_logins_total",
        "Login attempts, by result (ok, bad_credentials, rate_limited).",
        Some(("result", &["ok", "bad_credentials", "rate_limited"])),
    ),
    (
        "social_hub_publishes_total",
        "Live events published to the hub (one per user channel), by result (ok, failed).",
        Some(("result", &["ok", "failed"])),
    ),
    (
        "social_feed_fanout_writes_total",
        "Friends' feeds written by the fan-out on write of new posts, by result (ok, failed).",
        Some(("result", &["ok", "failed"])),
    ),
    (
        "social_chat_send_compensations_total",
        "Chat messages undone by the send saga (unread counters unreachable).",
        None,
    ),
];

/// Installs the process's recorder (once); `None` if another recorder was installed first.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("social_http_request_duration_seconds".into()),
                    DURATION_BUCKETS,
                )
                .ok()?
                // The embedded hub's latencies (hub_command_duration_seconds...) bucketed too, as
                // hub-server buckets them, so the dashboard's histogram_quantile queries work.
                .set_buckets_for_metric(Matcher::Prefix("hub_".into()), DURATION_BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            for &(name, help, labels) in DESCRIBED {
                if name.ends_with("_seconds") {
                    metrics::describe_histogram!(name, help);
                } else {
                    metrics::describe_counter!(name, help);
                }
                match labels {
                    None => metrics::counter!(name).increment(0),
                    Some((label, values)) => {
                        for &v in values {
                            metrics::counter!(name, label => v).increment(0);
                        }
                    }
                }
            }
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP);
                    upkeep.run_upkeep();
                });
            Some(handle)
        })
        .as_ref()
}

/// The Prometheus text: the recorder's metrics, then the process's.
pub fn render() -> String {
    let mut out = install().map(|h| h.render()).unwrap_or_default();
    out.push_str(&process_metrics());
    out
}

/// `GET /metrics`.
pub async fn handler() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(),
    )
}

/// `/metrics` and `/healthz` alone: what a service process serves on `--metrics`.
pub fn router() -> Router {
    Router::new()
        .route("/metrics", get(handler))
        .route("/healthz", get(|| async { "ok" }))
}

/// Middleware counting gateway requests by route template (`other` when no route matched)
/// and by method (`other` for methods outside the standard ones), so that no label takes
/// values from what clients send.
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "other".into());
    let method = match *req.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let start = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::histogram!("social_http_request_duration_seconds", "route" => route.clone())
        .record(start.elapsed().as_secs_f64());
    metrics::counter!("social_http_requests_total", "route" => route, "method" => method, "status" => status)
        .increment(1);
    resp
}

/// `process_*` metrics from `/proc/self` (each left out when it cannot be read).
fn process_metrics() -> String {
    let read = |f: &str| std::fs::read_to_string(format!("/proc/self/{f}")).ok();
    let rss = read("status").and_then(|s| {
        let kb: u64 = s
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kb * 1024)
    });
    // utime and stime (fields 14 and 15), counted after the command name's last ')'.
    let cpu = read("stat").and_then(|s| {
        let f: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        Some(ticks as f64 / USER_HZ)
    });
    // The listing's own handle is one of the entries: not counted.
    let open = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| (d.count() as u64).saturating_sub(1));
    let max = read("limits").and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Max open files"))?
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
    });
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
        rss.map(|v| v.to_string()),
    );
    metric(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        cpu.map(|v| v.to_string()),
    );
    metric(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        open.map(|v| v.to_string()),
    );
    metric(
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors.",
        max.map(|v| v.to_string()),
    );
    out
}
