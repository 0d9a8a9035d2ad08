//! Logs and traces.
//!
//! Logs go to stderr as text or JSON lines (`log.format`); an event logged inside a traced
//! operation carries the operation's span, whose `trace_id` field is the W3C trace id.
//!
//! Traces: the server API (HTTP and gRPC), calls to backends (proxies, sends, publication
//! forwards) and the delivery of a traced publication on each node are spans (target
//! [`TARGET`]). A caller's W3C `traceparent`/`tracestate` (header or gRPC metadata) becomes
//! the parent of the API span; backends get the current span's `traceparent` in their gRPC
//! metadata; a publication made within a sampled trace carries its `traceparent` through the
//! broker (hub-core's `PublishOptions::trace`, Redis included) to every node that delivers
//! it, where a `deliver` span joins the trace. So a publish can be followed from the backend
//! that made it to every node that delivered it.
//!
//! Context is propagated whether or not export is on. With `opentelemetry.enabled`, spans
//! are exported over OTLP/gRPC in batches (the SDK's batch processor; `OTEL_BSP_*` variables
//! tune it); new traces are sampled by `sample_ratio`, and a traced caller's decision is
//! followed. Without it, nothing is recorded for traces the caller did not sample.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

use crate::config::{Log, OpenTelemetry};

/// The `tracing` target of the spans that become OpenTelemetry spans.
pub const TARGET: &str = "hub::trace";

/// The installed logging and tracing; [`Telemetry::shutdown`] exports what is left.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter. Blocks (up to the exporter's
    /// timeout): call it outside async code or through `spawn_blocking`.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "tracing exporter shutdown");
        }
    }
}

/// Installs the global logger and tracer. Call it inside a tokio runtime (the OTLP exporter
/// dials through it) and once per process.
pub fn init(log: &Log, otel: &OpenTelemetry, node_name: &str) -> Result<Telemetry, String> {
    let level = if log.level == "none" {
        "off"
    } else {
        log.level.as_str()
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if log.format == "json" {
        fmt.json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed()
    } else {
        fmt.boxed()
    };
    let provider = provider(otel, node_name)?;
    let tracer = provider.tracer("hub-server");
    // Our spans, and warnings and errors logged inside them, whatever the log level.
    let traced = tracing_subscriber::filter::Targets::new()
        .with_target(TARGET, tracing::Level::TRACE)
        .with_target("hub_server", tracing::Level::WARN)
        .with_target("hub_core", tracing::Level::WARN);
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(traced),
        )
        .try_init()
        .map_err(|e| format!("cannot install the logger: {e}"))?;
    if otel.enabled {
        tracing::info!(
            endpoint = if otel.endpoint.is_empty() {
                "(OTEL_EXPORTER_OTLP_ENDPOINT or http://localhost:4317)"
            } else {
                otel.endpoint.as_str()
            },
            sample_ratio = otel.sample_ratio,
            "exporting traces over OTLP/gRPC"
        );
    }
    Ok(Telemetry { provider })
}

fn provider(otel: &OpenTelemetry, node_name: &str) -> Result<SdkTracerProvider, String> {
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(otel.service_name.clone())
        .with_attribute(KeyValue::new("service.instance.id", node_name.to_owned()))
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    if !otel.enabled {
        // Spans keep their ids (for propagation and logs) but are never recorded unless a
        // caller sampled the trace; no exporter either way.
        return Ok(builder
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)))
            .build());
    }
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    if !otel.endpoint.is_empty() {
        exporter = exporter.with_endpoint(otel.endpoint.clone());
    }
    let exporter = Logged {
        inner: exporter
            .build()
            .map_err(|e| format!("opentelemetry exporter: {e}"))?,
        endpoint: otel.endpoint.clone(),
        failing: AtomicBool::new(false),
    };
    Ok(builder
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            otel.sample_ratio,
        ))))
        .with_batch_exporter(exporter)
        .build())
}

/// The OTLP exporter, telling the logs when exports start failing and when they work again
/// (the SDK itself stays silent), and counting failed batches in
/// `hub_trace_export_failures_total`.
#[derive(Debug)]
struct Logged<E> {
    inner: E,
    endpoint: String,
    failing: AtomicBool,
}

impl<E: SpanExporter> SpanExporter for Logged<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let r = self.inner.export(batch).await;
        match &r {
            Err(e) => {
                metrics::counter!("hub_trace_export_failures_total").increment(1);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(endpoint = %self.endpoint, error = %e, spans, "trace export failing; spans are dropped until it works");
                }
            }
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(endpoint = %self.endpoint, "trace export works again");
                }
            }
        }
        r
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// The context a caller passed as W3C `traceparent` (and `tracestate`), read through `get`;
/// empty when there is none or it is malformed.
pub fn remote_context(get: impl Fn(&str) -> Option<String>) -> Context {
    let mut fields = HashMap::new();
    for key in ["traceparent", "tracestate"] {
        if let Some(v) = get(key) {
            fields.insert(key.to_owned(), v);
        }
    }
    if fields.is_empty() {
        return Context::new();
    }
    TraceContextPropagator::new().extract(&fields)
}

/// The context of an HTTP request's `traceparent` header.
pub fn http_context(headers: &http::HeaderMap) -> Context {
    remote_context(|k| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    })
}

/// The context of a gRPC request's `traceparent` metadata.
pub fn grpc_context(md: &tonic::metadata::MetadataMap) -> Context {
    remote_context(|k| md.get(k).and_then(|v| v.to_str().ok()).map(str::to_owned))
}

/// Makes `parent` the parent of `span` (a span not entered yet) and records the trace id in
/// its `trace_id` field, for the logs. Without a tracing subscriber (an embedder's tests),
/// nothing happens.
pub fn adopt(span: &Span, parent: Context) {
    if span.is_disabled() {
        return;
    }
    let _ = span.set_parent(parent);
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.record("trace_id", tracing::field::display(sc.trace_id()));
    }
}

/// The W3C headers naming `span` as the parent (`traceparent`, and `tracestate` when set);
/// empty when the span has no trace.
pub fn headers_of(span: &Span) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut fields);
    }
    fields
}

/// The current span's `traceparent` when its trace is sampled: what a publication carries to
/// the nodes that deliver it (unsampled traces are not followed across nodes).
pub fn sampled_traceparent() -> Option<String> {
    let span = Span::current();
    if span.is_disabled() {
        return None;
    }
    if !span.context().span().span_context().is_sampled() {
        return None;
    }
    headers_of(&span).remove("traceparent")
}

/// Puts the current span's trace context into a backend call's gRPC metadata.
pub fn inject_grpc(md: &mut tonic::metadata::MetadataMap) {
    let span = Span::current();
    if span.is_disabled() {
        return;
    }
    for (k, v) in headers_of(&span) {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(k.as_bytes()),
            v.parse(),
        ) {
            md.insert(k, v);
        }
    }
}

/// The current span's context, to parent work that outlives it (a background delivery).
pub fn current_context() -> Context {
    let span = Span::current();
    if span.is_disabled() {
        return Context::new();
    }
    span.context()
}

/// The span of one server API call (`transport`: `http` or `grpc`); give it its caller's
/// context with [`adopt`] before running the call in it.
pub fn api_span(method: &str, transport: &'static str) -> Span {
    tracing::info_span!(
        target: TARGET,
        "api",
        otel.name = %format_args!("api {method}"),
        otel.kind = "server",
        method = %method,
        transport,
        trace_id = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        error = tracing::field::Empty,
    )
}

/// Marks a failed API call's span and logs the call at debug level (with its trace id).
pub fn record_outcome(span: &Span, error: Option<&hub_core::Error>) {
    if let Some(e) = error {
        span.record("otel.status_code", "ERROR");
        span.record(
            "error",
            tracing::field::display(format_args!("{} {}", e.code, e.message)),
        );
    }
    span.in_scope(|| tracing::debug!(ok = error.is_none(), "api call"));
}

/// Records a traced publication's fan-out on this node as a `deliver` span in the
/// publisher's trace (`fanout_us`: from arrival to queued for every local subscriber).
pub fn delivered(d: &hub_core::TracedDelivery<'_>) {
    let span = tracing::info_span!(
        target: TARGET,
        parent: None,
        "deliver",
        otel.kind = "consumer",
        channel = %d.channel,
        offset = d.offset,
        recipients = d.recipients,
        fanout_us = u64::try_from(d.received.elapsed().as_micros()).unwrap_or(u64::MAX),
        trace_id = tracing::field::Empty,
    );
    adopt(
        &span,
        remote_context(|k| (k == "traceparent").then(|| d.trace.to_owned())),
    );
    span.in_scope(|| tracing::debug!("publication delivered"));
}
