//! Prometheus metrics at `GET /metrics`: the gateway serves them on its HTTP port, a service
//! process on `--metrics <addr>`. One recorder per process, so a process that embeds the hub
//! node also shows the node's `hub_*` metrics (connections, subscriptions, deliveries...).
//!
//! The app's own metrics, all described (`# HELP`), the unlabelled ones present at zero from
//! the start:
//! - `social_http_requests_total{route,method,status}` and
//!   `social_http_request_duration_seconds{route}` (a histogram): gateway requests by route
//!   template (`/api/chats/{id}/messages`), never by raw path;
//! - `social_service_calls_total{service,result}`: gRPC calls a service received (`ok`, or
//!   `unauthenticated` without the internal token);
//! - `social_logins_total{result}`: `ok`, `bad_credentials`, `rate_limited`;
//! - `social_hub_publishes_total{result}`: live events published to the hub, `ok`/`failed`;
//! - `social_chat_send_compensations_total`: chat sends undone by the saga (unread counters
//!   unreachable);
//! - `process_resident_memory_bytes`, `process_cpu_seconds_total`, `process_open_fds` (Linux).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Buckets of `social_http_request_duration_seconds`, in seconds.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

const DESCRIBED: &[(&str, &str)] = &[
    (
        "social_http_requests_total",
        "Gateway HTTP requests, by route template, method and status.",
    ),
    (
        "social_http_request_duration_seconds",
        "Gateway HTTP request duration, by route template.",
    ),
    (
        "social_service_calls_total",
        "gRPC calls a service received, by service and result (ok, unauthenticated).",
    ),
    (
        "social_logins_total",
        "Login attempts, by result (ok, bad_credentials, rate_limited).",
    ),
    (
        "social_hub_publishes_total",
        "Live events published to the hub, by result (ok, failed).",
    ),
    (
        "social_chat_send_compensations_total",
        "Chat messages undone by the send saga (counters unreachable).",
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
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            for &(name, help) in DESCRIBED {
                if name.ends_with("_seconds") {
                    metrics::describe_histogram!(name, help);
                } else {
                    metrics::describe_counter!(name, help);
                }
            }
            metrics::counter!("social_chat_send_compensations_total").increment(0);
            for result in ["ok", "bad_credentials", "rate_limited"] {
                metrics::counter!("social_logins_total", "result" => result).increment(0);
            }
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
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render(),
    )
}

/// Middleware counting gateway requests by route template (unmatched: `other`).
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "other".into());
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::histogram!("social_http_request_duration_seconds", "route" => route.clone())
        .record(start.elapsed().as_secs_f64());
    metrics::counter!("social_http_requests_total", "route" => route, "method" => method, "status" => status)
        .increment(1);
    resp
}

/// Serves `/metrics` and `/healthz` on `addr` (a service process's `--metrics`) until the
/// process ends. Returns the bound address.
pub async fn serve(addr: &str) -> Result<SocketAddr, String> {
    install();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on --metrics {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("--metrics {addr}: {e}"))?;
    let app = Router::new()
        .route("/metrics", get(handler))
        .route("/healthz", get(|| async { "ok" }));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server failed");
        }
    });
    Ok(local)
}

/// `process_*` metrics from `/proc/self` (empty elsewhere).
fn process_metrics() -> String {
    let mut out = String::new();
    if let Some(rss) = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
    {
        out.push_str("# TYPE process_resident_memory_bytes gauge\n");
        out.push_str(&format!("process_resident_memory_bytes {}\n", rss * 4096));
    }
    // utime and stime, fields 14 and 15, after the command name in parentheses.
    if let Some(ticks) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
    {
        out.push_str("# TYPE process_cpu_seconds_total counter\n");
        out.push_str(&format!(
            "process_cpu_seconds_total {}\n",
            ticks as f64 / 100.0
        ));
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        out.push_str("# TYPE process_open_fds gauge\n");
        out.push_str(&format!("process_open_fds {}\n", fds.count()));
    }
    out
}
