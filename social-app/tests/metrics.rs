//! `/metrics` of the app (its own test binary: the Prometheus recorder is process-wide, so
//! counts here are not mixed with other tests'). A service process's `--metrics` is checked
//! in `processes.rs`.

mod support;

use serde_json::json;
use support::{call, data_dir, live, register, start};

/// The value of the sample `name{labels}` (labels as rendered), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test]
async fn the_gateway_exports_requests_logins_publishes_and_the_embedded_hub() {
    let dir = data_dir();
    let (running, addr) = start(&dir, &[]).await;
    let a = register(addr, "Ann", "Metric").await;
    let b = register(addr, "Bob", "Metric").await;
    let (st, _) = call(
        addr,
        None,
        "POST",
        "/api/login",
        json!({"email": "ann.metric@test.io", "password": "wrong-password"}),
    )
    .await;
    assert_eq!(st, 401);
    let (st, _) = support::login(addr, "ann.metric@test.io").await;
    assert_eq!(st, 200);
    let _bws = live(&b).await;
    // A post fanned out into one friend's feed.
    a.befriend(&b).await;
    let (st, _) = a.post("/api/posts", json!({"text": "counted"})).await;
    assert_eq!(st, 201);
    // A path no route matches, with a method of the client's invention: neither is a label.
    let (st, _, _) = support::http(addr, "BREW", "/no/such/page-42", &[], "").await;
    assert_eq!(st, 404);
    let (_, d) = a.post("/api/chats/dialog", json!({"user": b.id})).await;
    let chat = d["chat"]["id"].as_str().expect("chat id").to_owned();
    let (st, _) = a
        .post(
            &format!("/api/chats/{chat}/messages"),
            json!({"text": "hi"}),
        )
        .await;
    assert_eq!(st, 201);

    let (st, head, text) = support::http(addr, "GET", "/metrics", &[], "").await;
    assert_eq!(st, 200);
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    // Requests by route template, never by raw path (the chat id is not a label).
    assert_eq!(
        sample(
            &text,
            r#"social_http_requests_total{route="/api/login",method="POST",status="401"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"social_http_requests_total{route="/api/chats/{id}/messages",method="POST",status="201"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        !text.contains(&chat) && !text.contains("page-42") && !text.contains("BREW"),
        "a raw path or method leaked into a label: {text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"social_http_requests_total{route="other",method="other",status="404"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        text.contains("# TYPE social_http_request_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains(
            r#"social_http_request_duration_seconds_bucket{route="/api/login",le="0.1"}"#
        ),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"social_logins_total{result="bad_credentials"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"social_logins_total{result="ok"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"social_logins_total{result="rate_limited"}"#),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "social_chat_send_compensations_total"),
        Some(0.0)
    );
    // The message went live to Bob through the hub.
    assert!(
        sample(&text, r#"social_hub_publishes_total{result="ok"}"#).unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"social_hub_publishes_total{result="failed"}"#),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, r#"social_feed_fanout_writes_total{result="ok"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"social_feed_fanout_writes_total{result="failed"}"#),
        Some(0.0)
    );
    // The calls the gateway and the services made to the services, by method and gRPC code.
    for (series, n) in [
        (
            r#"service="users",method="Login",code="Unauthenticated""#,
            1.0,
        ),
        (r#"service="users",method="Login",code="OK""#, 1.0),
        (r#"service="users",method="Register",code="OK""#, 2.0),
        (r#"service="posts",method="CreatePost",code="OK""#, 1.0),
        (r#"service="chats",method="Send",code="OK""#, 1.0),
    ] {
        assert_eq!(
            sample(&text, &format!("social_rpc_calls_total{{{series}}}")),
            Some(n),
            "{series}\n{text}"
        );
    }
    assert!(
        sample(
            &text,
            r#"social_rpc_calls_total{service="counters",method="Incr",code="OK"}"#
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );
    // Services count the calls they got; the embedded hub node reports its own metrics.
    assert!(
        sample(
            &text,
            r#"social_service_calls_total{service="users",result="ok"}"#
        )
        .unwrap_or(0.0)
            >= 3.0,
        "{text}"
    );
    assert!(
        sample(&text, "hub_connections").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(sample(&text, "process_resident_memory_bytes").unwrap_or(0.0) > 0.0);
    assert!(sample(&text, "process_open_fds").unwrap_or(0.0) > 0.0);
    assert!(sample(&text, "process_max_fds").unwrap_or(0.0) > 0.0);
    assert!(text.contains("# HELP social_logins_total"), "{text}");
    // The social-app panels of the Grafana dashboard name only metrics exported here
    // (hub-server/tests/monitoring.rs checks the hub_* and process_* ones).
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../monitoring/grafana/dashboard.json"),
    )
    .unwrap();
    let named: std::collections::BTreeSet<&str> = dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|t| t.starts_with("social_"))
        .collect();
    assert!(named.len() >= 5, "{named:?}");
    for name in named {
        assert!(
            text.lines()
                .any(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' '])),
            "the dashboard names {name}, /metrics does not export it:\n{text}"
        );
    }
    running.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
