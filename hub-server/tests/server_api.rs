//! The HTTP server API (PROTOCOL.md §5) against a real hub-server on 127.0.0.1: auth, the
//! HTTP shape, every v1 method, batch and the transport error mode. WebSocket clients are
//! real connections, so pushes and closes are what a client would see.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use support::{
    api, connected, http, http_with_head, next, push, reply, send, subscribe, Next, API_KEY,
};

/// POST `/api/<method>` with extra headers (and no key unless given); status and raw body.
async fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    http(addr, "POST", path, headers, body).await
}

/// POST with the test key and the transport error mode header; status and parsed body.
async fn api_transport(addr: SocketAddr, method: &str, body: Value) -> (u16, Value) {
    let (st, b) = post(
        addr,
        &format!("/api/{method}"),
        &[
            ("X-API-Key", API_KEY),
            ("X-Centrifugo-Error-Mode", "transport"),
        ],
        &body.to_string(),
    )
    .await;
    (st, serde_json::from_str(&b).unwrap_or(Value::Null))
}

/// Calls a method that must succeed; returns its `result`.
async fn ok(addr: SocketAddr, method: &str, body: Value) -> Value {
    let (st, v) = api(addr, method, body).await;
    assert_eq!(st, 200, "{method}: {v}");
    assert!(v.get("error").is_none(), "{method} failed: {v}");
    v.get("result")
        .cloned()
        .unwrap_or_else(|| panic!("{method}: no result in {v}"))
}

/// Calls a method that must fail in the envelope; returns the error code.
async fn err_code(addr: SocketAddr, method: &str, body: Value) -> u64 {
    let (st, v) = api(addr, method, body).await;
    assert_eq!(st, 200, "{method}: errors travel in a 200 envelope: {v}");
    assert!(v.get("result").is_none(), "{method}: {v}");
    assert!(v["error"]["message"].is_string(), "{method}: {v}");
    v["error"]["code"]
        .as_u64()
        .unwrap_or_else(|| panic!("{method}: no error code in {v}"))
}

/// Polls `presence_stats` until it reports `clients` connections (presence updates are async).
async fn await_presence_clients(addr: SocketAddr, channel: &str, clients: u64) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        last = ok(addr, "presence_stats", json!({"channel": channel})).await;
        if last["num_clients"] == clients {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("presence_stats of {channel} never reached {clients} clients: {last}");
}

/// Polls `channels` until `channel` is (or is not) listed.
async fn await_channel(addr: SocketAddr, channel: &str, present: bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        last = ok(addr, "channels", json!({})).await;
        if last["channels"].get(channel).is_some() == present {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("channel {channel} present={present} never seen: {last}");
}

async fn start() -> support::TestServer {
    support::start(support::config(json!({}))).await
}

// ---------------------------------------------------------------------------------------
// Auth and HTTP shape
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_api_key_header_authorizes() {
    let s = start().await;
    let (st, head, body) =
        http_with_head(s.addr, "POST", "/api/info", &[("X-API-Key", API_KEY)], "{}").await;
    assert_eq!(st, 200, "{body}");
    assert!(head.contains("content-type: application/json"), "{head}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["result"]["nodes"].is_array(), "{v}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_apikey_scheme_is_case_insensitive() {
    let s = start().await;
    for scheme in ["apikey", "ApiKey", "APIKEY"] {
        let auth = format!("{scheme} {API_KEY}");
        let (st, body) = post(s.addr, "/api/info", &[("Authorization", &auth)], "{}").await;
        assert_eq!(st, 200, "Authorization: {auth} -> {body}");
        assert!(body.contains("\"result\""), "{body}");
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_query_parameter_authorizes() {
    let s = start().await;
    let (st, body) = post(s.addr, &format!("/api/info?api_key={API_KEY}"), &[], "{}").await;
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("\"result\""), "{body}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_key_is_401_with_empty_body() {
    let s = start().await;
    let wrong_query = "/api/publish?api_key=nope".to_string();
    let bearer = format!("Bearer {API_KEY}");
    let three_fields = format!("apikey {API_KEY} extra");
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("/api/publish", vec![]),
        ("/api/publish", vec![("X-API-Key", "nope")]),
        ("/api/publish", vec![("X-API-Key", "")]),
        ("/api/publish", vec![("Authorization", "apikey nope")]),
        // A right key under another scheme is no key.
        ("/api/publish", vec![("Authorization", bearer.as_str())]),
        (
            "/api/publish",
            vec![("Authorization", three_fields.as_str())],
        ),
        ("/api/publish", vec![("Authorization", API_KEY)]),
        (wrong_query.as_str(), vec![]),
        (wrong_query.as_str(), vec![("X-API-Key", "nope")]),
        ("/api/publish?api_key=", vec![]),
    ];
    for (path, headers) in cases {
        let (st, body) = post(
            s.addr,
            path,
            &headers,
            r#"{"channel":"news","data":{"x":1}}"#,
        )
        .await;
        assert_eq!(st, 401, "{path} {headers:?} -> {body}");
        assert!(body.is_empty(), "401 must have an empty body, got {body:?}");
    }
    // Nothing was published by the refused calls.
    let h = ok(s.addr, "history", json!({"channel": "news", "limit": -1})).await;
    assert_eq!(h["publications"], json!([]), "{h}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_key_sources_are_tried_when_earlier_ones_do_not_authorize() {
    // Centrifugo v6 (`internal/middleware/auth.go`): an empty X-API-Key counts as absent, so
    // Authorization is used; and when the headers do not authorize, ?api_key= still may.
    let s = start().await;
    let auth = format!("apikey {API_KEY}");
    let with_query = format!("/api/info?api_key={API_KEY}");
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "/api/info",
            vec![("X-API-Key", ""), ("Authorization", &auth)],
        ),
        (&with_query, vec![("X-API-Key", "wrong")]),
        (
            &with_query,
            vec![("Authorization", "Bearer some-proxy-token")],
        ),
        (&with_query, vec![("X-API-Key", ""), ("Authorization", "")]),
    ];
    for (path, headers) in cases {
        let (st, body) = post(s.addr, path, &headers, "{}").await;
        assert_eq!(st, 200, "{path} {headers:?} -> {body}");
        assert!(body.contains("\"nodes\""), "{body}");
    }
    // But a wrong X-API-Key is not rescued by a right Authorization header.
    let (st, body) = post(
        s.addr,
        "/api/info",
        &[("X-API-Key", "wrong"), ("Authorization", &auth)],
        "{}",
    )
    .await;
    assert_eq!(st, 401, "{body}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_configured_key_refuses_every_call() {
    let s = support::start(support::config(json!({"http_api": {"key": ""}}))).await;
    for headers in [
        vec![],
        vec![("X-API-Key", "")],
        vec![("Authorization", "apikey ")],
    ] {
        let (st, body) = post(s.addr, "/api/info", &headers, "{}").await;
        assert_eq!(st, 401, "{headers:?} -> {body}");
        assert!(body.is_empty(), "{body:?}");
    }
    let (st, _) = post(s.addr, "/api/info?api_key=", &[], "{}").await;
    assert_eq!(st, 401);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_mode_serves_without_a_key() {
    let s = support::start(support::config(
        json!({"http_api": {"key": "", "insecure": true}}),
    ))
    .await;
    let (st, body) = post(s.addr, "/api/info", &[], "{}").await;
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("\"nodes\""), "{body}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_post_methods_are_405() {
    let s = start().await;
    for method in ["GET", "PUT", "DELETE", "PATCH"] {
        let (st, body) = http(
            s.addr,
            method,
            "/api/publish",
            &[("X-API-Key", API_KEY)],
            "",
        )
        .await;
        assert_eq!(st, 405, "{method} -> {body}");
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_body_is_400_with_a_plain_text_message() {
    let s = start().await;
    for body in [
        "{not json",
        r#"{"channel":"news""#,
        "\"just a string\"",
        "[1,2]",
    ] {
        let (st, head, text) = http_with_head(
            s.addr,
            "POST",
            "/api/publish",
            &[("X-API-Key", API_KEY)],
            body,
        )
        .await;
        assert_eq!(st, 400, "{body:?} -> {text}");
        assert!(!text.trim().is_empty(), "a 400 explains itself");
        assert!(
            serde_json::from_str::<Value>(&text).is_err(),
            "the 400 body is plain text, not JSON: {text}"
        );
        assert!(head.contains("content-type: text/plain"), "{head}");
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_body_counts_as_empty_params() {
    let s = start().await;
    let (st, body) = post(s.addr, "/api/info", &[("X-API-Key", API_KEY)], "").await;
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("\"nodes\""), "{body}");
    // And a method that needs params says so in the envelope, not as a 400.
    let (st, body) = post(s.addr, "/api/publish", &[("X-API-Key", API_KEY)], "").await;
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], 107, "{v}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_method_is_error_104_in_the_envelope() {
    let s = start().await;
    let (st, v) = api(s.addr, "no_such_method", json!({})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["error"]["code"], 104, "{v}");
    assert!(v["error"]["message"].is_string(), "{v}");
    assert!(v.get("result").is_none(), "{v}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrongly_typed_params_are_107() {
    let s = start().await;
    assert_eq!(
        err_code(s.addr, "publish", json!({"channel": 5, "data": {}})).await,
        107
    );
    assert_eq!(
        err_code(
            s.addr,
            "history",
            json!({"channel": "news", "limit": "ten"})
        )
        .await,
        107
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_handler_prefix_moves_the_api() {
    let s = support::start(support::config(
        json!({"http_api": {"handler_prefix": "/server/api"}}),
    ))
    .await;
    let (st, body) = post(s.addr, "/server/api/info", &[("X-API-Key", API_KEY)], "{}").await;
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("\"nodes\""), "{body}");
    let (st, _) = post(s.addr, "/api/info", &[("X-API-Key", API_KEY)], "{}").await;
    assert_eq!(st, 404, "the default prefix is not served any more");
    s.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// publish / broadcast
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_history_channel_returns_offset_and_epoch() {
    let s = start().await;
    let a = ok(
        s.addr,
        "publish",
        json!({"channel": "news", "data": {"n": 1}}),
    )
    .await;
    let b = ok(
        s.addr,
        "publish",
        json!({"channel": "news", "data": {"n": 2}}),
    )
    .await;
    assert_eq!(a["offset"], 1, "{a}");
    assert_eq!(b["offset"], 2, "{b}");
    let epoch = a["epoch"].as_str().expect("epoch is a string");
    assert!(!epoch.is_empty(), "{a}");
    assert_eq!(b["epoch"], epoch, "the epoch stays while the stream lives");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_without_history_returns_empty_result() {
    let s = start().await;
    let (st, v) = api(
        s.addr,
        "publish",
        json!({"channel": "chat:room", "data": {"t": "hi"}}),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(v, json!({"result": {}}));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_with_skip_history_keeps_it_out_of_history() {
    let s = start().await;
    let r = ok(
        s.addr,
        "publish",
        json!({"channel": "news", "data": {"n": 1}, "skip_history": true}),
    )
    .await;
    assert!(r.get("offset").is_none(), "{r}");
    let h = ok(s.addr, "history", json!({"channel": "news", "limit": -1})).await;
    assert_eq!(h["publications"], json!([]), "{h}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_unknown_namespace_is_102() {
    let s = start().await;
    assert_eq!(
        err_code(s.addr, "publish", json!({"channel": "nope:x", "data": {}})).await,
        102
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_with_empty_channel_or_no_data_is_107() {
    let s = start().await;
    assert_eq!(
        err_code(s.addr, "publish", json!({"channel": "", "data": {}})).await,
        107
    );
    assert_eq!(err_code(s.addr, "publish", json!({"data": {}})).await, 107);
    assert_eq!(
        err_code(s.addr, "publish", json!({"channel": "news"})).await,
        107
    );
    assert_eq!(
        err_code(
            s.addr,
            "publish",
            json!({"channel": "news", "b64data": "***"})
        )
        .await,
        107
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reaches_a_websocket_subscriber() {
    let s = start().await;
    let mut w = connected(s.addr, "alice").await;
    subscribe(&mut w, 2, "news").await;
    let r = ok(
        s.addr,
        "publish",
        json!({"channel": "news", "data": {"text": "hi"}, "tags": {"k": "v"}}),
    )
    .await;
    let p = push(&mut w, "news", "pub").await;
    assert_eq!(p["data"], json!({"text": "hi"}), "{p}");
    assert_eq!(p["offset"], r["offset"], "{p}");
    assert_eq!(p["tags"], json!({"k": "v"}), "{p}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_returns_one_response_per_channel_in_order() {
    let s = start().await;
    let r = ok(
        s.addr,
        "broadcast",
        json!({"channels": ["news", "chat:a", "nope:x", "", "news"], "data": {"b": 1}}),
    )
    .await;
    let rs = r["responses"].as_array().expect("responses array");
    assert_eq!(rs.len(), 5, "{r}");
    assert_eq!(rs[0]["result"]["offset"], 1, "{r}");
    assert!(rs[0]["result"]["epoch"].is_string(), "{r}");
    assert!(rs[0].get("error").is_none(), "{r}");
    assert_eq!(rs[1], json!({"result": {}}), "no history in chat:");
    assert_eq!(rs[2]["error"]["code"], 102, "{r}");
    assert!(rs[2].get("result").is_none(), "{r}");
    assert_eq!(rs[3]["error"]["code"], 107, "{r}");
    assert_eq!(rs[4]["result"]["offset"], 2, "{r}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_without_channels_or_data_is_107() {
    let s = start().await;
    assert_eq!(
        err_code(s.addr, "broadcast", json!({"channels": [], "data": {}})).await,
        107
    );
    assert_eq!(
        err_code(s.addr, "broadcast", json!({"channels": ["news"]})).await,
        107
    );
    s.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// history / history_remove
// ---------------------------------------------------------------------------------------

fn offsets(h: &Value) -> Vec<u64> {
    h["publications"]
        .as_array()
        .unwrap_or_else(|| panic!("no publications in {h}"))
        .iter()
        .map(|p| p["offset"].as_u64().unwrap_or(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_honours_limit_since_and_reverse() {
    let s = start().await;
    let mut epoch = String::new();
    for n in 1..=5 {
        let r = ok(
            s.addr,
            "publish",
            json!({"channel": "news", "data": {"n": n}}),
        )
        .await;
        epoch = r["epoch"].as_str().unwrap_or_default().to_owned();
    }
    let all = ok(s.addr, "history", json!({"channel": "news", "limit": -1})).await;
    assert_eq!(offsets(&all), [1, 2, 3, 4, 5], "{all}");
    assert_eq!(all["publications"][2]["data"], json!({"n": 3}), "{all}");
    assert_eq!(all["epoch"], epoch.as_str());
    assert_eq!(all["offset"], 5);

    let top = ok(s.addr, "history", json!({"channel": "news"})).await;
    assert_eq!(
        top["publications"],
        json!([]),
        "limit 0 gives only the top: {top}"
    );
    assert_eq!(top["offset"], 5, "{top}");
    assert_eq!(top["epoch"], epoch.as_str(), "{top}");

    let two = ok(s.addr, "history", json!({"channel": "news", "limit": 2})).await;
    assert_eq!(offsets(&two), [1, 2], "{two}");

    let since = ok(
        s.addr,
        "history",
        json!({"channel": "news", "limit": -1, "since": {"offset": 2, "epoch": epoch}}),
    )
    .await;
    assert_eq!(offsets(&since), [3, 4, 5], "{since}");

    let rev = ok(
        s.addr,
        "history",
        json!({"channel": "news", "limit": 2, "reverse": true}),
    )
    .await;
    assert_eq!(offsets(&rev), [5, 4], "{rev}");

    let rev_since = ok(
        s.addr,
        "history",
        json!({"channel": "news", "limit": -1, "reverse": true, "since": {"offset": 4, "epoch": epoch}}),
    )
    .await;
    assert_eq!(offsets(&rev_since), [3, 2, 1], "{rev_since}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_with_a_wrong_epoch_is_112() {
    let s = start().await;
    ok(
        s.addr,
        "publish",
        json!({"channel": "news", "data": {"n": 1}}),
    )
    .await;
    assert_eq!(
        err_code(
            s.addr,
            "history",
            json!({"channel": "news", "limit": -1, "since": {"offset": 0, "epoch": "not-the-epoch"}}),
        )
        .await,
        112
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_errors_for_bad_channels() {
    let s = start().await;
    assert_eq!(
        err_code(s.addr, "history", json!({"channel": ""})).await,
        107
    );
    assert_eq!(
        err_code(s.addr, "history", json!({"channel": "nope:x"})).await,
        102
    );
    assert_eq!(
        err_code(s.addr, "history", json!({"channel": "chat:room"})).await,
        108,
        "chat: keeps no history"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_remove_drops_the_publications() {
    let s = start().await;
    for n in 1..=3 {
        ok(
            s.addr,
            "publish",
            json!({"channel": "news", "data": {"n": n}}),
        )
        .await;
    }
    let before = ok(s.addr, "history", json!({"channel": "news", "limit": -1})).await;
    assert_eq!(offsets(&before), [1, 2, 3]);
    let r = ok(s.addr, "history_remove", json!({"channel": "news"})).await;
    assert_eq!(r, json!({}));
    let after = ok(s.addr, "history", json!({"channel": "news", "limit": -1})).await;
    assert_eq!(after["publications"], json!([]), "{after}");
    assert_eq!(
        err_code(s.addr, "history_remove", json!({"channel": ""})).await,
        107
    );
    assert_eq!(
        err_code(s.addr, "history_remove", json!({"channel": "nope:x"})).await,
        102
    );
    s.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// presence / presence_stats
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_lists_connected_subscribers() {
    let s = start().await;
    let empty = ok(s.addr, "presence", json!({"channel": "news"})).await;
    assert_eq!(empty, json!({"presence": {}}), "presence is always written");

    let mut a = connected(s.addr, "alice").await;
    let mut b = connected(s.addr, "bob").await;
    subscribe(&mut a, 2, "news").await;
    subscribe(&mut b, 2, "news").await;
    await_presence_clients(s.addr, "news", 2).await;

    let p = ok(s.addr, "presence", json!({"channel": "news"})).await;
    let map = p["presence"].as_object().expect("presence map");
    assert_eq!(map.len(), 2, "{p}");
    let mut users: Vec<&str> = map.values().filter_map(|c| c["user"].as_str()).collect();
    users.sort_unstable();
    assert_eq!(users, ["alice", "bob"], "{p}");
    for (id, info) in map {
        assert_eq!(info["client"], id.as_str(), "keyed by client id: {p}");
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_stats_counts_clients_and_users() {
    let s = start().await;
    let zero = ok(s.addr, "presence_stats", json!({"channel": "news"})).await;
    assert_eq!(zero, json!({"num_clients": 0, "num_users": 0}));

    let mut a1 = connected(s.addr, "alice").await;
    let mut a2 = connected(s.addr, "alice").await;
    let mut b = connected(s.addr, "bob").await;
    for w in [&mut a1, &mut a2, &mut b] {
        subscribe(w, 2, "news").await;
    }
    let st = await_presence_clients(s.addr, "news", 3).await;
    assert_eq!(st["num_users"], 2, "{st}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_errors_for_bad_channels() {
    let s = support::start(support::config(json!({
        "channel": {"namespaces": [
            {"name": "chat", "allow_subscribe_for_client": true, "presence": true},
            {"name": "quiet", "allow_subscribe_for_client": true}
        ]}
    })))
    .await;
    for method in ["presence", "presence_stats"] {
        assert_eq!(err_code(s.addr, method, json!({"channel": ""})).await, 107);
        assert_eq!(
            err_code(s.addr, method, json!({"channel": "nope:x"})).await,
            102
        );
        assert_eq!(
            err_code(s.addr, method, json!({"channel": "quiet:x"})).await,
            108,
            "{method} on a namespace without presence"
        );
    }
    s.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// disconnect / unsubscribe / subscribe (server-side)
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_closes_the_users_socket_with_the_given_code() {
    let s = start().await;
    let mut a = connected(s.addr, "alice").await;
    let r = ok(
        s.addr,
        "disconnect",
        json!({"user": "alice", "disconnect": {"code": 4123, "reason": "go away"}}),
    )
    .await;
    assert_eq!(r, json!({}));
    let code = support::close_code(&mut a).await;
    assert!(support::is_close(code, 4123), "close code {code:?}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_without_code_is_3503_force_disconnect() {
    let s = start().await;
    let mut a = connected(s.addr, "alice").await;
    ok(s.addr, "disconnect", json!({"user": "alice"})).await;
    let code = support::close_code(&mut a).await;
    assert!(support::is_close(code, 3503), "close code {code:?}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_spares_other_users_and_the_whitelist() {
    let s = start().await;
    let mut a1 = connected(s.addr, "alice").await;
    let mut a2 = connected(s.addr, "alice").await;
    let mut b = connected(s.addr, "bob").await;
    // Learn a2's client id from presence.
    subscribe(&mut a2, 2, "news").await;
    await_presence_clients(s.addr, "news", 1).await;
    let p = ok(s.addr, "presence", json!({"channel": "news"})).await;
    let spared = p["presence"]
        .as_object()
        .and_then(|m| m.keys().next().cloned())
        .expect("a2's client id");
    ok(
        s.addr,
        "disconnect",
        json!({"user": "alice", "whitelist": [spared], "disconnect": {"code": 4000, "reason": "x"}}),
    )
    .await;
    let code = support::close_code(&mut a1).await;
    assert!(support::is_close(code, 4000), "close code {code:?}");
    // a2 and bob are still connected: they answer commands (`reply` panics on a close).
    for w in [&mut a2, &mut b] {
        send(w, r#"{"id":9,"rpc":{"method":"ping"}}"#).await;
        let r = reply(w, 9).await;
        assert_eq!(r["error"]["code"], 104, "the default rpc handler: {r}");
    }
    let mut clients = Value::Null;
    for _ in 0..100 {
        clients = ok(s.addr, "info", json!({})).await["nodes"][0]["num_clients"].clone();
        if clients == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(clients, 2, "only a1 went away");
    assert_eq!(
        err_code(s.addr, "disconnect", json!({})).await,
        107,
        "user required"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_sends_an_unsubscribe_push_with_code_2000() {
    let s = start().await;
    let mut a = connected(s.addr, "alice").await;
    subscribe(&mut a, 2, "news").await;
    await_presence_clients(s.addr, "news", 1).await;
    let r = ok(
        s.addr,
        "unsubscribe",
        json!({"channel": "news", "user": "alice"}),
    )
    .await;
    assert_eq!(r, json!({}));
    let u = push(&mut a, "news", "unsubscribe").await;
    assert_eq!(u["code"], 2000, "{u}");
    await_presence_clients(s.addr, "news", 0).await;
    // No more publications reach the client: the next thing it sees is its own reply.
    ok(
        s.addr,
        "publish",
        json!({"channel": "news", "data": {"late": true}}),
    )
    .await;
    send(&mut a, r#"{"id":7,"rpc":{"method":"x"}}"#).await;
    loop {
        match next(&mut a).await {
            Next::Json(v) => {
                assert!(
                    v.iter().all(|m| m["push"].get("pub").is_none()),
                    "publication after unsubscribe: {v:?}"
                );
                if v.iter().any(|m| m["id"] == 7) {
                    break;
                }
            }
            Next::Closed(c) => panic!("closed {c:?}"),
        }
    }
    assert_eq!(
        err_code(s.addr, "unsubscribe", json!({"channel": "news"})).await,
        107,
        "user required"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_sends_a_subscribe_push_and_then_publications() {
    let s = start().await;
    let mut a = connected(s.addr, "alice").await;
    let r = ok(
        s.addr,
        "subscribe",
        json!({"channel": "chat:room", "user": "alice", "data": {"welcome": true}}),
    )
    .await;
    assert_eq!(r, json!({}));
    let sp = push(&mut a, "chat:room", "subscribe").await;
    assert_eq!(sp["data"], json!({"welcome": true}), "{sp}");
    await_channel(s.addr, "chat:room", true).await;
    ok(
        s.addr,
        "publish",
        json!({"channel": "chat:room", "data": {"m": 1}}),
    )
    .await;
    let p = push(&mut a, "chat:room", "pub").await;
    assert_eq!(p["data"], json!({"m": 1}), "{p}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_to_a_history_channel_is_recoverable() {
    let s = start().await;
    ok(
        s.addr,
        "publish",
        json!({"channel": "news", "data": {"n": 1}}),
    )
    .await;
    let mut a = connected(s.addr, "alice").await;
    ok(
        s.addr,
        "subscribe",
        json!({"channel": "news", "user": "alice"}),
    )
    .await;
    let sp = push(&mut a, "news", "subscribe").await;
    assert_eq!(sp["recoverable"], true, "{sp}");
    assert_eq!(sp["offset"], 1, "{sp}");
    assert!(sp["epoch"].is_string(), "{sp}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_errors() {
    let s = start().await;
    assert_eq!(
        err_code(s.addr, "subscribe", json!({"channel": "news"})).await,
        107,
        "user required"
    );
    assert_eq!(
        err_code(s.addr, "subscribe", json!({"user": "alice"})).await,
        107,
        "channel required"
    );
    assert_eq!(
        err_code(
            s.addr,
            "subscribe",
            json!({"channel": "nope:x", "user": "alice"})
        )
        .await,
        102
    );
    s.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// channels / info
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_lists_active_channels_and_filters_by_pattern() {
    let s = start().await;
    let none = ok(s.addr, "channels", json!({})).await;
    assert_eq!(none, json!({"channels": {}}));

    let mut a = connected(s.addr, "alice").await;
    let mut b = connected(s.addr, "bob").await;
    subscribe(&mut a, 2, "news").await;
    subscribe(&mut b, 2, "news").await;
    subscribe(&mut a, 3, "chat:one").await;
    subscribe(&mut b, 3, "chat:two").await;
    await_channel(s.addr, "chat:two", true).await;

    let all = ok(s.addr, "channels", json!({})).await;
    assert_eq!(
        all,
        json!({"channels": {
            "news": {"num_clients": 2},
            "chat:one": {"num_clients": 1},
            "chat:two": {"num_clients": 1}
        }})
    );
    let chat = ok(s.addr, "channels", json!({"pattern": "chat:*"})).await;
    assert_eq!(
        chat,
        json!({"channels": {"chat:one": {"num_clients": 1}, "chat:two": {"num_clients": 1}}})
    );
    let one = ok(s.addr, "channels", json!({"pattern": "chat:?ne"})).await;
    assert_eq!(one, json!({"channels": {"chat:one": {"num_clients": 1}}}));
    let exact = ok(s.addr, "channels", json!({"pattern": "news"})).await;
    assert_eq!(exact, json!({"channels": {"news": {"num_clients": 2}}}));
    let nothing = ok(s.addr, "channels", json!({"pattern": "x*"})).await;
    assert_eq!(nothing, json!({"channels": {}}));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_reports_this_node() {
    let s = start().await;
    let mut a = connected(s.addr, "alice").await;
    let _b = connected(s.addr, "bob").await;
    subscribe(&mut a, 2, "news").await;
    let info = ok(s.addr, "info", json!({})).await;
    let nodes = info["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 1, "{info}");
    let n = &nodes[0];
    assert!(n["uid"].as_str().is_some_and(|u| !u.is_empty()), "{n}");
    assert!(n["name"].is_string(), "{n}");
    assert!(n["version"].is_string(), "{n}");
    assert_eq!(n["num_clients"], 2, "{n}");
    assert_eq!(n["num_users"], 2, "{n}");
    assert_eq!(n["num_channels"], 1, "{n}");
    assert_eq!(n["num_subs"], 1, "{n}");
    assert!(n["uptime"].is_u64(), "{n}");
    s.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// batch
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_replies_in_order_with_one_error_among_them() {
    let s = start().await;
    let r = ok(
        s.addr,
        "batch",
        json!({"commands": [
            {"publish": {"channel": "news", "data": {"n": 1}}},
            {"publish": {"channel": "nope:x", "data": {"n": 2}}},
            {"publish": {"channel": "chat:room", "data": {"n": 3}}},
            {"history": {"channel": "news", "limit": -1}},
            {"presence_stats": {"channel": "news"}}
        ]}),
    )
    .await;
    let replies = r["replies"].as_array().expect("replies");
    assert_eq!(replies.len(), 5, "{r}");
    assert_eq!(replies[0]["publish"]["offset"], 1, "{r}");
    assert_eq!(replies[1]["error"]["code"], 102, "{r}");
    assert!(replies[1].get("publish").is_none(), "{r}");
    assert_eq!(replies[2], json!({"publish": {}}), "{r}");
    assert_eq!(offsets(&replies[3]["history"]), [1], "{r}");
    assert_eq!(
        replies[4],
        json!({"presence_stats": {"num_clients": 0, "num_users": 0}}),
        "{r}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_parallel_still_replies_in_command_order() {
    let s = start().await;
    let commands: Vec<Value> = (0..10)
        .map(|i| json!({"publish": {"channel": format!("ch{i}"), "data": {"i": i}}}))
        .chain([
            json!({"nope": {}}),
            json!({"info": {}, "publish": {}}),
            json!({"batch": {}}),
        ])
        .collect();
    let r = ok(
        s.addr,
        "batch",
        json!({"commands": commands, "parallel": true}),
    )
    .await;
    let replies = r["replies"].as_array().expect("replies");
    assert_eq!(replies.len(), 13, "{r}");
    for rep in &replies[..10] {
        assert_eq!(rep["publish"]["offset"], 1, "each channel is fresh: {r}");
    }
    assert_eq!(replies[10]["error"]["code"], 104, "unknown method: {r}");
    assert_eq!(
        replies[11]["error"]["code"], 107,
        "two methods in one command: {r}"
    );
    assert!(
        replies[12].get("error").is_some(),
        "nested batch refused: {r}"
    );
    s.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Transport error mode
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_error_mode_header_maps_codes_to_http_statuses() {
    let s = start().await;
    let (st, v) = api_transport(s.addr, "publish", json!({"channel": "nope:x", "data": {}})).await;
    assert_eq!(st, 404, "{v}");
    assert_eq!(v["code"], 102, "{v}");
    assert!(v["message"].is_string(), "{v}");
    assert!(v.get("error").is_none(), "no envelope: {v}");

    let cases = [
        ("no_such_method", json!({}), 404, 104),
        ("publish", json!({"channel": "", "data": {}}), 400, 107),
        ("history", json!({"channel": "chat:x"}), 400, 108),
        (
            "history",
            json!({"channel": "news", "since": {"offset": 0, "epoch": "bad"}}),
            416,
            112,
        ),
    ];
    for (method, body, status, code) in cases {
        let (st, v) = api_transport(s.addr, method, body).await;
        assert_eq!(st, status, "{method}: {v}");
        assert_eq!(v["code"], code, "{method}: {v}");
    }

    // Success is unchanged.
    let (st, v) = api_transport(s.addr, "publish", json!({"channel": "news", "data": {}})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["result"]["offset"], 1, "{v}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_error_mode_from_config() {
    let s = support::start(support::config(
        json!({"http_api": {"error_mode": "transport"}}),
    ))
    .await;
    let (st, v) = api(s.addr, "publish", json!({"channel": "nope:x", "data": {}})).await;
    assert_eq!(st, 404, "{v}");
    assert_eq!(v, json!({"code": 102, "message": v["message"].clone()}));
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    // Errors inside a batch stay in the replies.
    let (st, v) = api(
        s.addr,
        "batch",
        json!({"commands": [{"publish": {"channel": "nope:x", "data": {}}}]}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["result"]["replies"][0]["error"]["code"], 102, "{v}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_error_mode_keeps_errors_in_a_200_envelope() {
    let s = start().await;
    let (st, v) = api(s.addr, "publish", json!({"channel": "nope:x", "data": {}})).await;
    assert_eq!(st, 200);
    assert_eq!(v["error"]["code"], 102, "{v}");
    // Any other header value does not switch the mode.
    let (st, b) = post(
        s.addr,
        "/api/publish",
        &[
            ("X-API-Key", API_KEY),
            ("X-Centrifugo-Error-Mode", "envelope"),
        ],
        r#"{"channel":"nope:x","data":{}}"#,
    )
    .await;
    assert_eq!(st, 200, "{b}");
    s.shutdown().await;
}
