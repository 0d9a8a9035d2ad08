//! Distributed tracing: a publish is followed from the backend that made it to every node
//! that delivered it. Real hub-server processes on a real `redis-server` export their spans
//! over OTLP/gRPC to a collector run by the test (a tonic `TraceService`); a fake proxy
//! backend records the `traceparent` the hub sends it; the JSON logs carry the trace id.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hub_server::api::grpc::proto as api;
use hub_server::api::grpc::proto::centrifugo_api_client::CentrifugoApiClient;
use hub_server::proxy::proto;
use hub_server::proxy::proto::centrifugo_proxy_server::{CentrifugoProxy, CentrifugoProxyServer};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use serde_json::json;
use support::process::{free_port, NodeProcess};
use support::redis::RedisServer;
use support::{http, API_KEY};
use tonic::{Request, Response, Status};

/// One exported span, flattened.
#[derive(Debug, Clone)]
struct Span {
    /// `service.instance.id` of the exporting process (the node name).
    node: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: HashMap<String, String>,
}

/// An OTLP/gRPC trace collector keeping every span it receives.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Span>>>);

fn text(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .filter_map(|kv| {
            let v = match kv.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(s) => s.clone(),
                AnyValue::IntValue(i) => i.to_string(),
                AnyValue::BoolValue(b) => b.to_string(),
                AnyValue::DoubleValue(d) => d.to_string(),
                _ => return None,
            };
            Some((kv.key.clone(), v))
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        r: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.0.lock().unwrap();
        for rs in r.into_inner().resource_spans {
            let resource = text(&rs.resource.map(|r| r.attributes).unwrap_or_default());
            let node = resource
                .get("service.instance.id")
                .cloned()
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    spans.push(Span {
                        node: node.clone(),
                        name: s.name,
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        attributes: text(&s.attributes),
                    });
                }
            }
        }
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    async fn start() -> (Self, String) {
        let c = Collector::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(c.clone()))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (c, format!("http://{addr}"))
    }

    /// Waits up to 15 s for a span matching `f`.
    async fn wait(&self, what: &str, f: impl Fn(&Span) -> bool) -> Span {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = self.0.lock().unwrap().iter().find(|s| f(s)) {
                return s.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {what} span; got {:#?}",
                self.0.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A forwarded channel and the `traceparent` its call carried.
type Forward = (String, Option<String>);

/// A backend that records the `traceparent` of each `ForwardPublication`.
#[derive(Clone, Default)]
struct Backend(Arc<Mutex<Vec<Forward>>>);

#[tonic::async_trait]
impl CentrifugoProxy for Backend {
    async fn forward_publication(
        &self,
        r: Request<proto::ForwardPublicationRequest>,
    ) -> Result<Response<proto::ForwardPublicationResponse>, Status> {
        let tp = r
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.0.lock().unwrap().push((r.into_inner().channel, tp));
        Ok(Response::new(proto::ForwardPublicationResponse {}))
    }
}

impl Backend {
    async fn start() -> (Self, String) {
        let b = Backend::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(CentrifugoProxyServer::new(b.clone()))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (b, format!("grpc://{addr}"))
    }

    /// Waits up to 10 s for a forward of `channel`; returns its `traceparent`.
    async fn forwarded(&self, channel: &str) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some((_, tp)) = self.0.lock().unwrap().iter().find(|(c, _)| c == channel) {
                return tp.clone();
            }
            assert!(Instant::now() < deadline, "{channel} not forwarded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The trace id of a W3C `traceparent` (`00-<trace>-<span>-<flags>`).
fn trace_of(tp: &str) -> &str {
    tp.split('-').nth(1).unwrap_or("")
}

fn node_config(name: &str, extra: serde_json::Value) -> hub_server::config::Config {
    let mut base = json!({
        "node": {"name": name},
        "log": {"level": "debug", "format": "json"},
        "channel": {
            "namespaces": [{"name": "fwd", "forward_publications": true,
                            "allow_subscribe_for_client": true}]
        },
        // The raw test clients do not answer pings.
        "client": {"ping_interval": "25s", "pong_timeout": "8s"}
    });
    support::merge(&mut base, extra);
    support::config(base)
}

/// `Some(trace)` when a JSON log line of `log` has the message `msg` inside a span whose
/// `trace_id` is `trace`.
fn logged_with_trace(log: &str, msg: &str, trace: &str) -> bool {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|v| v["fields"]["message"] == msg && v["span"]["trace_id"] == trace)
}

#[tokio::test]
async fn a_publish_is_followed_from_the_backend_to_every_node_that_delivered_it() {
    let redis = RedisServer::start();
    let (collector, otlp) = Collector::start().await;
    let (backend, backend_url) = Backend::start().await;
    let grpc_port = free_port();
    let common = json!({
        "engine": {"type": "redis", "redis": {"address": redis.url()}},
        "opentelemetry": {"enabled": true, "endpoint": otlp},
        "channel": {"proxy": {"publication_forward": {"endpoint": backend_url, "timeout": "2s"}}}
    });
    let env = [("OTEL_BSP_SCHEDULE_DELAY", "100")];
    let mut a_cfg = common.clone();
    support::merge(
        &mut a_cfg,
        json!({"grpc_api": {"enabled": true, "port": grpc_port, "key": API_KEY}}),
    );
    let a = NodeProcess::start_logged(&node_config("node-a", a_cfg), &env).await;
    let b = NodeProcess::start_logged(&node_config("node-b", common), &env).await;

    // A subscriber on node B only.
    let mut ws = support::connected(b.addr, "u1").await;
    support::subscribe(&mut ws, 2, "fwd:news").await;

    // A backend publishes through node A's HTTP API inside its own trace.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace}-{caller_span}-01");
    let (status, body) = http(
        a.addr,
        "POST",
        "/api/publish",
        &[("X-API-Key", API_KEY), ("traceparent", &traceparent)],
        r#"{"channel":"fwd:news","data":{"n":1}}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let got = support::pubs(&mut ws, 1).await;
    assert_eq!(got[0].1["data"], json!({"n": 1}));

    // The API call is a child of the caller's span, on node A.
    let api_span = collector
        .wait("api publish", |s| {
            s.name == "api publish" && s.trace_id == trace && s.node == "node-a"
        })
        .await;
    assert_eq!(api_span.parent_span_id, caller_span);
    assert_eq!(
        api_span.attributes.get("transport").map(String::as_str),
        Some("http")
    );
    // Node B delivered it to its one subscriber, in the same trace, under the API span.
    let deliver = collector
        .wait("deliver on node-b", |s| {
            s.name == "deliver" && s.trace_id == trace && s.node == "node-b"
        })
        .await;
    assert_eq!(deliver.parent_span_id, api_span.span_id);
    assert_eq!(
        deliver.attributes.get("recipients").map(String::as_str),
        Some("1")
    );
    assert_eq!(
        deliver.attributes.get("channel").map(String::as_str),
        Some("fwd:news")
    );
    // The forward to the backend carried the trace, and its span is in it.
    let forwarded = backend.forwarded("fwd:news").await.expect("traceparent");
    assert_eq!(trace_of(&forwarded), trace);
    let proxy_span = collector
        .wait("proxy publication_forward", |s| {
            s.name == "proxy publication_forward" && s.trace_id == trace
        })
        .await;
    assert!(
        forwarded.contains(&proxy_span.span_id),
        "{forwarded} vs {proxy_span:?}"
    );
    // Node A has no subscriber of the channel: it delivered nothing, so no deliver span.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!collector
        .0
        .lock()
        .unwrap()
        .iter()
        .any(|s| s.name == "deliver" && s.node == "node-a"));

    // The same through the gRPC API, with the context in the metadata.
    let trace2 = "0af7651916cd43dd8448eb211c80319c";
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = CentrifugoApiClient::new(channel);
    let mut req = Request::new(api::PublishRequest {
        channel: "fwd:news".into(),
        data: br#"{"n":2}"#.to_vec().into(),
        ..Default::default()
    });
    let md = req.metadata_mut();
    md.insert(
        "authorization",
        format!("apikey {API_KEY}").parse().unwrap(),
    );
    md.insert(
        "traceparent",
        format!("00-{trace2}-b7ad6b7169203331-01").parse().unwrap(),
    );
    let r = client.publish(req).await.unwrap().into_inner();
    assert!(r.error.is_none(), "{r:?}");
    assert_eq!(
        support::pubs(&mut ws, 1).await[0].1["data"],
        json!({"n": 2})
    );
    let grpc_span = collector
        .wait("gRPC api publish", |s| {
            s.name == "api publish" && s.trace_id == trace2
        })
        .await;
    assert_eq!(grpc_span.parent_span_id, "b7ad6b7169203331");
    assert_eq!(
        grpc_span.attributes.get("transport").map(String::as_str),
        Some("grpc")
    );
    collector
        .wait("deliver of the gRPC publish", |s| {
            s.name == "deliver" && s.trace_id == trace2 && s.node == "node-b"
        })
        .await;

    // JSON logs: node A's API call and node B's delivery carry the trace id. Both nodes
    // stop cleanly, exporting what they still hold.
    let mut a = a;
    let mut b = b;
    for n in [&mut a, &mut b] {
        let status = n.terminate(20).await.expect("exits after SIGTERM");
        assert!(status.success(), "{status:?}: {}", n.stderr());
    }
    let log_a = a.stderr();
    assert!(logged_with_trace(&log_a, "api call", trace), "{log_a}");
    let log_b = b.stderr();
    assert!(
        logged_with_trace(&log_b, "publication delivered", trace),
        "{log_b}"
    );
    drop(redis);
}

#[tokio::test]
async fn without_export_the_context_still_reaches_backends_and_logs() {
    let (backend, backend_url) = Backend::start().await;
    let config = node_config(
        "solo",
        json!({"channel": {"proxy": {"publication_forward": {"endpoint": backend_url}}}}),
    );
    let node = NodeProcess::start_logged(&config, &[]).await;
    let trace = "11112222333344445555666677778888";
    let (status, body) = http(
        node.addr,
        "POST",
        "/api/publish",
        &[
            ("X-API-Key", API_KEY),
            ("traceparent", &format!("00-{trace}-1111222233334444-01")),
        ],
        r#"{"channel":"fwd:a","data":{}}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let tp = backend.forwarded("fwd:a").await.expect("traceparent");
    assert_eq!(trace_of(&tp), trace);
    assert!(
        tp.ends_with("-01"),
        "the caller's sampling decision is kept: {tp}"
    );
    // A call without context starts an unsampled trace: backends see it as such.
    let (status, _) = http(
        node.addr,
        "POST",
        "/api/publish",
        &[("X-API-Key", API_KEY)],
        r#"{"channel":"fwd:b","data":{}}"#,
    )
    .await;
    assert_eq!(status, 200);
    let tp = backend.forwarded("fwd:b").await.expect("traceparent");
    assert!(tp.ends_with("-00"), "{tp}");
    assert_ne!(trace_of(&tp), trace);
    let mut node = node;
    let status = node.terminate(20).await.expect("exits after SIGTERM");
    let log = node.stderr();
    assert!(status.success(), "{status:?}: {log}");
    assert!(logged_with_trace(&log, "api call", trace), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test]
async fn an_unreachable_collector_is_logged_and_counted_and_the_node_serves_on() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let config = node_config(
        "lonely",
        json!({"opentelemetry": {"enabled": true, "endpoint": dead},
               "log": {"level": "info", "format": "text"},
               "channel": {"namespaces": []}}),
    );
    let node = NodeProcess::start_logged(&config, &[("OTEL_BSP_SCHEDULE_DELAY", "100")]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = http(
            node.addr,
            "POST",
            "/api/publish",
            &[("X-API-Key", API_KEY)],
            r#"{"channel":"news","data":{}}"#,
        )
        .await;
        assert_eq!(status, 200, "publishing works while export fails");
        let (_, metrics) = http(node.addr, "GET", "/metrics", &[], "").await;
        let failures = metrics
            .lines()
            .find_map(|l| l.strip_prefix("hub_trace_export_failures_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if failures > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no export failure counted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = node.stderr();
    assert_eq!(log.matches("trace export failing").count(), 1, "{log}");
}
