//! The gRPC proxy to backends (`proto/proxy.proto`) against a real hub-server and a fake
//! backend (a tonic server on 127.0.0.1:0 implementing the generated `CentrifugoProxy`):
//! connect, subscribe, publish and RPC decided by the backend, and the resilience around a
//! failing one (timeout, circuit breaker, bulkhead). Clients are raw WebSocket connections.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hub_server::proxy::proto;
use hub_server::proxy::proto::centrifugo_proxy_server::{CentrifugoProxy, CentrifugoProxyServer};
use serde_json::{json, Value};
use support::{api, connected, next, reply, send, Next, Ws};
use tonic::{Request, Response, Status};

const HEALTHY: u8 = 0;
const UNAVAILABLE: u8 = 1;
const HANG: u8 = 2;

/// The fake backend's switches and counters.
#[derive(Default)]
struct State {
    mode: AtomicU8,
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

#[derive(Clone, Default)]
struct Fake(Arc<State>);

struct InFlight(Arc<State>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Fake {
    /// Counts the call, then fails or hangs as the mode says.
    async fn enter(&self) -> Result<InFlight, Status> {
        let s = &self.0;
        s.calls.fetch_add(1, Ordering::SeqCst);
        let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        s.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let guard = InFlight(s.clone());
        match s.mode.load(Ordering::SeqCst) {
            UNAVAILABLE => Err(Status::unavailable("backend down")),
            HANG => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(guard)
            }
            _ => Ok(guard),
        }
    }

    fn calls(&self) -> usize {
        self.0.calls.load(Ordering::SeqCst)
    }

    fn set_mode(&self, mode: u8) {
        self.0.mode.store(mode, Ordering::SeqCst);
    }
}

fn refuse(code: u32, message: &str) -> Option<proto::Error> {
    Some(proto::Error {
        code,
        message: message.into(),
        temporary: false,
    })
}

#[tonic::async_trait]
impl CentrifugoProxy for Fake {
    async fn connect(
        &self,
        r: Request<proto::ConnectRequest>,
    ) -> Result<Response<proto::ConnectResponse>, Status> {
        let _g = self.enter().await?;
        let r = r.into_inner();
        assert_eq!(r.transport, "websocket");
        Ok(Response::new(proto::ConnectResponse {
            result: Some(proto::ConnectResult {
                user: "alice".into(),
                info: br#"{"name":"Alice"}"#.to_vec().into(),
                data: br#"{"welcome":"alice"}"#.to_vec().into(),
                channels: vec!["news".into()],
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn subscribe(
        &self,
        r: Request<proto::SubscribeRequest>,
    ) -> Result<Response<proto::SubscribeResponse>, Status> {
        let _g = self.enter().await?;
        let r = r.into_inner();
        let mut resp = proto::SubscribeResponse::default();
        if r.channel.ends_with("denied") {
            resp.error = refuse(103, "permission denied");
        } else if r.channel.ends_with("kick") {
            resp.disconnect = Some(proto::Disconnect {
                code: 4403,
                reason: "go away".into(),
            });
        } else {
            resp.result = Some(proto::SubscribeResult {
                data: format!(r#"{{"for":"{}"}}"#, r.user).into_bytes().into(),
                ..Default::default()
            });
        }
        Ok(Response::new(resp))
    }

    async fn publish(
        &self,
        r: Request<proto::PublishRequest>,
    ) -> Result<Response<proto::PublishResponse>, Status> {
        let _g = self.enter().await?;
        let r = r.into_inner();
        let mut resp = proto::PublishResponse::default();
        if r.channel.ends_with("readonly") {
            resp.error = refuse(103, "permission denied");
        } else {
            let text: Value = serde_json::from_slice(&r.data).unwrap_or(Value::Null);
            let rewritten =
                json!({"text": text["text"].as_str().unwrap_or("").to_uppercase(), "by": r.user});
            resp.result = Some(proto::PublishResult {
                data: rewritten.to_string().into_bytes().into(),
                ..Default::default()
            });
        }
        Ok(Response::new(resp))
    }

    async fn refresh(
        &self,
        r: Request<proto::RefreshRequest>,
    ) -> Result<Response<proto::RefreshResponse>, Status> {
        let _g = self.enter().await?;
        let r = r.into_inner();
        Ok(Response::new(proto::RefreshResponse {
            result: Some(proto::RefreshResult {
                expired: r.user != "alice",
                expire_at: support::unix_now() as i64 + 3600,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn sub_refresh(
        &self,
        r: Request<proto::SubRefreshRequest>,
    ) -> Result<Response<proto::SubRefreshResponse>, Status> {
        let _g = self.enter().await?;
        let r = r.into_inner();
        Ok(Response::new(proto::SubRefreshResponse {
            result: Some(proto::SubRefreshResult {
                expired: !r.channel.ends_with("room"),
                expire_at: support::unix_now() as i64 + 600,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn rpc(
        &self,
        r: Request<proto::RpcRequest>,
    ) -> Result<Response<proto::RpcResponse>, Status> {
        let _g = self.enter().await?;
        let r = r.into_inner();
        let data: Value = serde_json::from_slice(&r.data).unwrap_or(Value::Null);
        Ok(Response::new(proto::RpcResponse {
            result: Some(proto::RpcResult {
                data: json!({"method": r.method, "user": r.user, "echo": data})
                    .to_string()
                    .into_bytes()
                    .into(),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }
}

/// Serves `fake` on 127.0.0.1:0; returns its `grpc://` endpoint.
/// Serves a fake backend on 127.0.0.1:0; returns its `grpc://` endpoint.
async fn serve(backend: impl CentrifugoProxy) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(CentrifugoProxyServer::new(backend))
            .serve_with_incoming(incoming),
    );
    format!("grpc://{addr}")
}

/// A proxy section with test-sized timeout and breaker.
fn endpoint(url: &str, extra: Value) -> Value {
    let mut v = json!({"endpoint": url, "timeout": "300ms", "breaker_failures": 3, "breaker_cooldown": "700ms"});
    if let (Some(m), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in e {
            m.insert(k.clone(), x.clone());
        }
    }
    v
}

/// A server whose every proxy goes to `url`; namespace `proxied` uses the subscribe and
/// publish proxies, RPC methods without namespace go to the RPC proxy.
async fn start(url: &str, extra: Value) -> support::TestServer {
    let p = endpoint(url, extra);
    let mut connect = p.clone();
    connect["enabled"] = json!(true);
    let config = support::config(json!({
        // Raw test clients do not answer pings.
        "client": {"proxy": {"connect": connect, "refresh": connect}, "ping_interval": "0s"},
        "channel": {
            "proxy": {"subscribe": p, "publish": p, "sub_refresh": p},
            "namespaces": [
                {"name": "chat", "allow_subscribe_for_client": true, "allow_publish_for_subscriber": true},
                {"name": "proxied", "subscribe_proxy_enabled": true, "publish_proxy_enabled": true,
                 "sub_refresh_proxy_enabled": true, "presence": true}
            ]
        },
        "rpc": {"proxy": p, "without_namespace": {"proxy_enabled": true}}
    }));
    config.validate().expect("valid config");
    support::start(config).await
}

async fn rpc(w: &mut Ws, id: u64, method: &str, data: Value) -> Value {
    send(
        w,
        &json!({"id": id, "rpc": {"method": method, "data": data}}).to_string(),
    )
    .await;
    reply(w, id).await
}

fn assert_temporary_internal(r: &Value) {
    assert_eq!(r["error"]["code"], 100, "{r}");
    assert_eq!(r["error"]["temporary"], true, "{r}");
}

/// Reads until a publication push on `channel` arrives; returns its data.
async fn publication(w: &mut Ws, channel: &str) -> Value {
    loop {
        match next(w).await {
            Next::Json(v) => {
                for m in v {
                    if m["push"]["channel"] == channel && m["push"]["pub"].is_object() {
                        return m["push"]["pub"]["data"].clone();
                    }
                }
            }
            Next::Closed(c) => panic!("closed ({c:?}) while waiting for a publication"),
        }
    }
}

#[tokio::test]
async fn the_backend_authenticates_decides_subscriptions_answers_rpcs_and_rewrites_publications() {
    let fake = Fake::default();
    let url = serve(fake.clone()).await;
    let s = start(&url, json!({})).await;

    // Connect without a token: the backend says who this is.
    let mut w = support::ws(s.addr).await;
    send(&mut w, r#"{"id":1,"connect":{"name":"test"}}"#).await;
    let r = reply(&mut w, 1).await;
    assert!(r["connect"]["client"].is_string(), "{r}");
    assert_eq!(r["connect"]["data"], json!({"welcome": "alice"}), "{r}");
    assert!(
        r["connect"]["subs"]["news"].is_object(),
        "server-side subscription from the backend: {r}"
    );

    // Subscribe: the backend allows one channel and refuses another.
    send(&mut w, r#"{"id":2,"subscribe":{"channel":"proxied:room"}}"#).await;
    let r = reply(&mut w, 2).await;
    assert_eq!(r["subscribe"]["data"], json!({"for": "alice"}), "{r}");
    send(
        &mut w,
        r#"{"id":3,"subscribe":{"channel":"proxied:denied"}}"#,
    )
    .await;
    let r = reply(&mut w, 3).await;
    assert_eq!(r["error"]["code"], 103, "{r}");

    // The connection is alice's, with the backend's info.
    let mut users = Value::Null;
    for _ in 0..100 {
        let (_, p) = api(s.addr, "presence", json!({"channel": "proxied:room"})).await;
        users = p["result"]["presence"].clone();
        if users.as_object().is_some_and(|m| !m.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let entry = users
        .as_object()
        .and_then(|m| m.values().next())
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(entry["user"], "alice", "{users}");
    assert_eq!(entry["conn_info"], json!({"name": "Alice"}), "{users}");

    // RPC: the backend's data comes back.
    let r = rpc(&mut w, 4, "echo", json!({"x": 1})).await;
    assert_eq!(
        r["rpc"]["data"],
        json!({"method": "echo", "user": "alice", "echo": {"x": 1}}),
        "{r}"
    );
    // A method in a namespace without proxy keeps the old answer.
    let r = rpc(&mut w, 5, "other:echo", json!({})).await;
    assert_eq!(r["error"]["code"], 104, "{r}");

    // Publish: the backend rewrites the data, or refuses. Bob (JWT) watches the channel.
    let mut bob = connected(s.addr, "bob").await;
    send(
        &mut bob,
        r#"{"id":2,"subscribe":{"channel":"proxied:room"}}"#,
    )
    .await;
    let r = reply(&mut bob, 2).await;
    assert_eq!(r["subscribe"]["data"], json!({"for": "bob"}), "{r}");
    send(
        &mut w,
        r#"{"id":6,"publish":{"channel":"proxied:room","data":{"text":"hi"}}}"#,
    )
    .await;
    let r = reply(&mut w, 6).await;
    assert!(r.get("error").is_none(), "{r}");
    assert_eq!(
        publication(&mut bob, "proxied:room").await,
        json!({"text": "HI", "by": "alice"})
    );
    send(
        &mut w,
        r#"{"id":7,"publish":{"channel":"proxied:readonly","data":{}}}"#,
    )
    .await;
    let r = reply(&mut w, 7).await;
    assert_eq!(r["error"]["code"], 103, "{r}");

    // Refresh and sub_refresh: the backend sets the new expiry.
    send(&mut w, r#"{"id":9,"refresh":{"token":"unused"}}"#).await;
    let r = reply(&mut w, 9).await;
    assert_eq!(r["refresh"]["expires"], true, "{r}");
    assert!(
        r["refresh"]["ttl"].as_u64().is_some_and(|t| t > 3500),
        "{r}"
    );
    send(
        &mut w,
        r#"{"id":10,"sub_refresh":{"channel":"proxied:room","token":"unused"}}"#,
    )
    .await;
    let r = reply(&mut w, 10).await;
    assert!(
        r["sub_refresh"]["ttl"].as_u64().is_some_and(|t| t > 500),
        "{r}"
    );

    // A backend's disconnect closes the connection with its code.
    send(&mut w, r#"{"id":8,"subscribe":{"channel":"proxied:kick"}}"#).await;
    let code = support::close_code(&mut w).await;
    assert!(support::is_close(code, 4403), "{code:?}");

    // A client with a token still connects by JWT, without the backend.
    let before = fake.calls();
    let mut b = connected(s.addr, "bob").await;
    assert_eq!(
        fake.calls(),
        before,
        "a token connect does not call the backend"
    );
    send(&mut b, r#"{"id":2,"subscribe":{"channel":"chat:x"}}"#).await;
    assert!(reply(&mut b, 2).await.get("error").is_none());
    s.shutdown().await;
}

/// Calls `rpc` on `w` and asserts the temporary internal error; returns how long it took.
async fn failing_rpc(w: &mut Ws, id: u64) -> Duration {
    let t = Instant::now();
    let r = rpc(w, id, "echo", json!({})).await;
    assert_temporary_internal(&r);
    t.elapsed()
}

async fn breaker_opens_then_recovers(mode: u8) {
    let fake = Fake::default();
    let url = serve(fake.clone()).await;
    let s = start(&url, json!({})).await;
    let mut w = connected(s.addr, "bob").await;
    assert!(rpc(&mut w, 2, "echo", json!({})).await["rpc"].is_object());
    assert_eq!(fake.calls(), 1);

    fake.set_mode(mode);
    for id in 3..6 {
        failing_rpc(&mut w, id).await;
    }
    assert_eq!(fake.calls(), 4, "three failed calls reached the backend");

    // Open: clients get the temporary error at once, the backend sees nothing.
    for id in 6..16 {
        let took = failing_rpc(&mut w, id).await;
        assert!(
            took < Duration::from_millis(200),
            "refused quickly: {took:?}"
        );
    }
    assert_eq!(fake.calls(), 4, "an open breaker stops the calls");
    let (_, metrics) = support::http(s.addr, "GET", "/metrics", &[], "").await;
    assert!(
        metrics.contains(&format!("hub_proxy_breaker_open{{endpoint=\"{url}\"}} 1")),
        "{metrics}"
    );
    assert!(metrics.contains("hub_proxy_calls_total"), "{metrics}");

    // The node stays healthy: a client on channels without proxy is served.
    let mut other = connected(s.addr, "carol").await;
    send(&mut other, r#"{"id":2,"subscribe":{"channel":"chat:x"}}"#).await;
    assert!(reply(&mut other, 2).await.get("error").is_none());
    let (st, _) = support::http(s.addr, "GET", "/health", &[], "").await;
    assert_eq!(st, 200);
    // Readiness reports the backend but stays 200: backends are shared by every node.
    let (st, body) = support::http(s.addr, "GET", "/ready", &[], "").await;
    assert_eq!(st, 200, "{body}");
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["backends"][&url], "breaker_open", "{body}");
    assert_eq!(ready["engine"], "ok", "{body}");

    // After the cooldown one trial goes through; while the backend still fails, it opens again.
    tokio::time::sleep(Duration::from_millis(800)).await;
    failing_rpc(&mut w, 20).await;
    assert_eq!(fake.calls(), 5, "one trial call");
    failing_rpc(&mut w, 21).await;
    assert_eq!(fake.calls(), 5, "open again after the failed trial");

    // Healthy again: the next trial closes the breaker and calls flow.
    fake.set_mode(HEALTHY);
    tokio::time::sleep(Duration::from_millis(800)).await;
    for id in 30..33 {
        let r = rpc(&mut w, id, "echo", json!({"n": id})).await;
        assert_eq!(r["rpc"]["data"]["echo"], json!({"n": id}), "{r}");
    }
    assert_eq!(fake.calls(), 8);
    let (_, metrics) = support::http(s.addr, "GET", "/metrics", &[], "").await;
    assert!(
        metrics.contains(&format!("hub_proxy_breaker_open{{endpoint=\"{url}\"}} 0")),
        "{metrics}"
    );
    let (_, body) = support::http(s.addr, "GET", "/ready", &[], "").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["backends"][&url],
        "ok"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn with_ready_requires_backends_an_open_breaker_makes_the_node_unready() {
    // Nothing listens there.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("grpc://{}", l.local_addr().unwrap())
    };
    let config = support::config(json!({
        "client": {"ping_interval": "0s"},
        "rpc": {"proxy": endpoint(&dead, json!({"breaker_failures": 1, "breaker_cooldown": "60s"})),
                "without_namespace": {"proxy_enabled": true}},
        "health": {"ready_requires_backends": true}
    }));
    let s = support::start(config).await;
    let (st, body) = support::http(s.addr, "GET", "/ready", &[], "").await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"status": "ok", "engine": "ok", "backends": {dead.clone(): "ok"}})
    );
    let mut w = connected(s.addr, "bob").await;
    failing_rpc(&mut w, 2).await;
    let (st, body) = support::http(s.addr, "GET", "/ready", &[], "").await;
    assert_eq!(st, 503, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"status": "unavailable", "engine": "ok", "backends": {dead: "breaker_open"}})
    );
    s.shutdown().await;
}

#[tokio::test]
async fn an_unavailable_backend_opens_the_breaker_and_recovers_after_the_cooldown() {
    breaker_opens_then_recovers(UNAVAILABLE).await;
}

#[tokio::test]
async fn a_hanging_backend_times_out_opens_the_breaker_and_recovers() {
    breaker_opens_then_recovers(HANG).await;
}

#[tokio::test]
async fn a_slow_backend_cannot_hold_the_node() {
    let fake = Fake::default();
    let url = serve(fake.clone()).await;
    let s = start(
        &url,
        json!({"max_concurrency": 2, "breaker_failures": 1000, "timeout": "500ms"}),
    )
    .await;
    fake.set_mode(HANG);
    let mut clients = Vec::new();
    for i in 0..6 {
        clients.push(connected(s.addr, &format!("u{i}")).await);
    }
    let t = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut w| {
            tokio::spawn(async move {
                let r = rpc(&mut w, 2, "echo", json!({})).await;
                assert_temporary_internal(&r);
            })
        })
        .collect();
    // While they wait, clients on channels without proxy are served at once.
    let mut other = connected(s.addr, "carol").await;
    let t_other = Instant::now();
    send(&mut other, r#"{"id":2,"subscribe":{"channel":"chat:x"}}"#).await;
    assert!(reply(&mut other, 2).await.get("error").is_none());
    assert!(t_other.elapsed() < Duration::from_millis(300));
    for t in tasks {
        t.await.unwrap();
    }
    // Every call ends within about the timeout (a slot freed at the deadline may let a waiter
    // start a call with the little time it has left), never with the backend's 30 s.
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // The exact bound is checked without sockets in `proxy::tests`; the backend may see a
    // cancelled call end a moment after the hub freed its slot.
    let max = fake.0.max_in_flight.load(Ordering::SeqCst);
    assert!((2..6).contains(&max), "max in flight {max}");
    s.shutdown().await;
}

#[tokio::test]
async fn proxy_config_is_checked() {
    let bad = |extra: Value| support::config(extra).validate().unwrap_err();
    let e = bad(json!({"rpc": {"proxy": {"endpoint": "http://127.0.0.1:1"}}}));
    assert!(e.contains("rpc.proxy.endpoint"), "{e}");
    let e = bad(json!({"client": {"proxy": {"connect": {"enabled": true}}}}));
    assert!(e.contains("client.proxy.connect"), "{e}");
    let e =
        bad(json!({"channel": {"namespaces": [{"name": "p", "subscribe_proxy_enabled": true}]}}));
    assert!(e.contains("subscribe_proxy_enabled"), "{e}");
}

/// A backend whose connections live one or two seconds and are renewed by the refresh proxy.
#[derive(Clone, Default)]
struct ShortLived {
    refreshes: Arc<AtomicUsize>,
    expire_on_refresh: bool,
}

#[tonic::async_trait]
impl CentrifugoProxy for ShortLived {
    async fn connect(
        &self,
        _r: Request<proto::ConnectRequest>,
    ) -> Result<Response<proto::ConnectResponse>, Status> {
        Ok(Response::new(proto::ConnectResponse {
            result: Some(proto::ConnectResult {
                user: "dave".into(),
                // Whole seconds: +2 keeps at least one second of life whatever the boundary.
                expire_at: support::unix_now() as i64 + 2,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn refresh(
        &self,
        r: Request<proto::RefreshRequest>,
    ) -> Result<Response<proto::RefreshResponse>, Status> {
        assert_eq!(r.into_inner().user, "dave");
        self.refreshes.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(proto::RefreshResponse {
            result: Some(proto::RefreshResult {
                expired: self.expire_on_refresh,
                expire_at: support::unix_now() as i64 + 2,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }
}

async fn start_short_lived(backend: ShortLived) -> support::TestServer {
    let mut p = endpoint(&serve(backend).await, json!({}));
    p["enabled"] = json!(true);
    let config = support::config(json!({
        "client": {"proxy": {"connect": p, "refresh": p}, "ping_interval": "0s"}
    }));
    support::start(config).await
}

#[tokio::test]
async fn connections_made_by_the_connect_proxy_are_renewed_by_the_refresh_proxy() {
    let backend = ShortLived::default();
    let server = start_short_lived(backend.clone()).await;
    let mut w = support::ws(server.addr).await;
    send(&mut w, r#"{"id":1,"connect":{}}"#).await;
    let r = support::reply(&mut w, 1).await;
    assert!(r["connect"]["client"].is_string(), "{r}");
    assert!(
        r["connect"].get("expires").is_none(),
        "the client is not asked to refresh: {r}"
    );
    tokio::time::sleep(Duration::from_millis(5000)).await;
    assert!(
        backend.refreshes.load(Ordering::SeqCst) >= 2,
        "the hub renewed the connection through the backend"
    );
    // Still open: a command gets its reply.
    send(&mut w, r#"{"id":2,"presence_stats":{"channel":"x"}}"#).await;
    let _ = support::reply(&mut w, 2).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_connection_the_refresh_proxy_calls_expired_is_closed_with_3005() {
    let backend = ShortLived {
        expire_on_refresh: true,
        ..Default::default()
    };
    let server = start_short_lived(backend.clone()).await;
    let mut w = support::ws(server.addr).await;
    send(&mut w, r#"{"id":1,"connect":{}}"#).await;
    let _ = support::reply(&mut w, 1).await;
    let code = tokio::time::timeout(Duration::from_secs(5), support::close_code(&mut w))
        .await
        .expect("closed in time");
    assert!(support::is_close(code, 3005), "closed with {code:?}");
    assert_eq!(backend.refreshes.load(Ordering::SeqCst), 1);
    server.shutdown().await;
}

/// A backend whose subscriptions live one or two seconds and are renewed by the sub_refresh
/// proxy (or declared expired).
#[derive(Clone, Default)]
struct ShortSubs {
    sub_refreshes: Arc<AtomicUsize>,
    expire_on_refresh: bool,
}

#[tonic::async_trait]
impl CentrifugoProxy for ShortSubs {
    async fn connect(
        &self,
        _r: Request<proto::ConnectRequest>,
    ) -> Result<Response<proto::ConnectResponse>, Status> {
        Ok(Response::new(proto::ConnectResponse {
            result: Some(proto::ConnectResult {
                user: "erin".into(),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn subscribe(
        &self,
        _r: Request<proto::SubscribeRequest>,
    ) -> Result<Response<proto::SubscribeResponse>, Status> {
        Ok(Response::new(proto::SubscribeResponse {
            result: Some(proto::SubscribeResult {
                expire_at: support::unix_now() as i64 + 2,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn sub_refresh(
        &self,
        r: Request<proto::SubRefreshRequest>,
    ) -> Result<Response<proto::SubRefreshResponse>, Status> {
        assert_eq!(r.into_inner().channel, "proxied:room");
        self.sub_refreshes.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(proto::SubRefreshResponse {
            result: Some(proto::SubRefreshResult {
                expired: self.expire_on_refresh,
                expire_at: support::unix_now() as i64 + 2,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }
}

async fn start_short_subs(backend: ShortSubs) -> support::TestServer {
    let p = endpoint(&serve(backend).await, json!({}));
    let mut connect = p.clone();
    connect["enabled"] = json!(true);
    let config = support::config(json!({
        "client": {"proxy": {"connect": connect}, "ping_interval": "0s"},
        "channel": {
            "proxy": {"subscribe": p, "sub_refresh": p},
            "namespaces": [{"name": "proxied", "subscribe_proxy_enabled": true, "sub_refresh_proxy_enabled": true}]
        }
    }));
    support::start(config).await
}

async fn subscribed_erin(server: &support::TestServer) -> Ws {
    let mut w = support::ws(server.addr).await;
    send(&mut w, r#"{"id":1,"connect":{}}"#).await;
    let _ = support::reply(&mut w, 1).await;
    send(&mut w, r#"{"id":2,"subscribe":{"channel":"proxied:room"}}"#).await;
    let r = support::reply(&mut w, 2).await;
    assert!(r["subscribe"].is_object(), "{r}");
    assert!(
        r["subscribe"].get("expires").is_none(),
        "the client is not asked to refresh: {r}"
    );
    w
}

#[tokio::test]
async fn subscriptions_made_by_the_subscribe_proxy_are_renewed_by_the_sub_refresh_proxy() {
    let backend = ShortSubs::default();
    let server = start_short_subs(backend.clone()).await;
    let mut w = subscribed_erin(&server).await;
    tokio::time::sleep(Duration::from_millis(5000)).await;
    assert!(backend.sub_refreshes.load(Ordering::SeqCst) >= 2);
    // Still subscribed (the node lists the channel) and still connected.
    let (_, v) = api(server.addr, "channels", json!({})).await;
    assert!(v["result"]["channels"]["proxied:room"].is_object(), "{v}");
    send(&mut w, r#"{"id":3,"presence_stats":{"channel":"x"}}"#).await;
    let _ = support::reply(&mut w, 3).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_subscription_the_sub_refresh_proxy_calls_expired_ends_with_2501() {
    let backend = ShortSubs {
        expire_on_refresh: true,
        ..Default::default()
    };
    let server = start_short_subs(backend.clone()).await;
    let mut w = subscribed_erin(&server).await;
    let unsub = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Next::Json(v) = next(&mut w).await {
                if let Some(p) = v.into_iter().find(|r| r["push"]["unsubscribe"].is_object()) {
                    break p;
                }
            }
        }
    })
    .await
    .expect("unsubscribe push in time");
    assert_eq!(unsub["push"]["channel"], "proxied:room");
    assert_eq!(unsub["push"]["unsubscribe"]["code"], 2501);
    assert_eq!(backend.sub_refreshes.load(Ordering::SeqCst), 1);
    server.shutdown().await;
}
