//! The monitoring files in `monitoring/` are valid (promtool accepts the rules and the scrape
//! config) and refer only to metrics a live hub-server exports after a little traffic, so
//! the dashboard and the alerts never name a metric we do not have.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use support::*;

/// Names the files may use without a live series in this test: exported only when the
/// config has backend proxies (`hub_proxy_*` labelled by endpoint or event) or the Redis
/// engine (`hub_redis_shard_up`, labelled by shard; tests/cluster.rs checks it), or generated
/// by Prometheus itself (`up`). They must still be in [`hub_server::metrics::METRICS`].
const ONLY_IN_SOME_CONFIGS: &[&str] = &[
    "hub_proxy_breaker_open",
    "hub_proxy_calls_total",
    "hub_redis_shard_up",
];

fn monitoring() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../monitoring")
}

/// The metric names (`hub_*`, `process_*`) in a PromQL expression or rules text.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("hub_") || t.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// Every `expr` and templating `query` of the Grafana dashboard.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(monitoring().join("grafana/dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard.json is JSON");
    let mut out = Vec::new();
    let panels = dash["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    for p in panels {
        let targets = p["targets"].as_array().expect("panel targets");
        assert!(!targets.is_empty(), "panel without targets: {}", p["title"]);
        for t in targets {
            out.push(t["expr"].as_str().expect("target expr").to_owned());
        }
    }
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            out.push(v["query"].as_str().unwrap_or_default().to_owned());
        }
    }
    out
}

/// The rules file without its comment lines.
fn alert_rules() -> String {
    std::fs::read_to_string(monitoring().join("alerts.yml"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The sample names of an exposition text.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn promtool_accepts_the_rules_and_the_scrape_config() {
    let dir = monitoring();
    for args in [
        ["check", "rules", "alerts.yml"],
        ["check", "config", "prometheus.yml"],
    ] {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool missing: install the `prometheus` package (scripts/test.sh does)");
        assert!(
            out.status.success(),
            "promtool {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn dashboard_and_alerts_name_only_exported_metrics() {
    let mut wanted = BTreeSet::new();
    for q in dashboard_queries() {
        wanted.extend(metric_names(&q));
    }
    let from_alerts = metric_names(&alert_rules());
    assert!(from_alerts.contains("hub_engine_ready"), "{from_alerts:?}");
    wanted.extend(from_alerts);
    for name in ONLY_IN_SOME_CONFIGS {
        assert!(
            hub_server::metrics::METRICS.iter().any(|m| m.0 == *name),
            "{name} not in METRICS"
        );
    }

    // A little traffic: connect, subscribe, publish, receive, disconnect.
    let server = start(config(json!({}))).await;
    let mut w = connected(server.addr, "alice").await;
    subscribe(&mut w, 2, "news").await;
    let (st, body) = api(
        server.addr,
        "publish",
        json!({"channel": "news", "data": {"text": "hi"}}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    pubs(&mut w, 1).await;
    w.close(None).await.unwrap();
    drop(w);

    // The disconnect is counted once the session has closed.
    let mut text = String::new();
    for _ in 0..50 {
        text = http(server.addr, "GET", "/metrics", &[], "").await.1;
        if text.contains("hub_disconnects_total{") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let have = exported(&text);
    let missing: Vec<_> = wanted
        .iter()
        .filter(|n| !have.contains(*n) && !ONLY_IN_SOME_CONFIGS.contains(&n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "monitoring/ refers to metrics /metrics does not export: {missing:?}\n{text}"
    );
    // Described metrics carry their HELP text; the engine is reported ready.
    assert!(text.contains("# HELP hub_connections "), "{text}");
    assert!(text.contains("hub_engine_ready 1"), "{text}");
    // The traffic above is counted: bytes both ways, the engine's round trips by operation.
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} sample:\n{text}"))
    };
    assert!(value("hub_bytes_received_total") > 0.0, "{text}");
    assert!(value("hub_bytes_sent_total") > 0.0, "{text}");
    for op in ["publish", "subscribe"] {
        assert!(
            text.contains(&format!("hub_broker_duration_seconds_count{{op=\"{op}\"}}")),
            "no round trip of {op}:\n{text}"
        );
    }
    // Latencies are bucketed histograms (histogram_quantile over nodes), not summaries.
    for bucket in [
        r#"hub_broker_duration_seconds_bucket{op="publish",le="0.0001"}"#,
        r#"hub_command_duration_seconds_bucket{method="subscribe",le="+Inf"}"#,
    ] {
        assert!(text.contains(bucket), "no {bucket}:\n{text}");
    }
    assert!(
        !text.contains("quantile=\""),
        "a summary is exported:\n{text}"
    );
    assert_eq!(
        value(r#"hub_messages_dropped_total{reason="slow_consumer"}"#),
        0.0
    );
    server.shutdown().await;
}
