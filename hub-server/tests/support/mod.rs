//! Test support: a real server on 127.0.0.1:0, raw HTTP, WebSocket clients, tokens.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod process;
pub mod raw_http;
pub mod redis;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hub_server::config::Config;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub const SECRET: &str = "test-secret";
pub const API_KEY: &str = "test-api-key";

pub struct TestServer {
    pub addr: SocketAddr,
    /// The gRPC API's address, when the config enables it (`grpc_api.enabled`).
    pub grpc_addr: Option<SocketAddr>,
    pub node: hub_core::Node,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub done: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// Asks the server to shut down (drain) and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(20), &mut self.done).await;
    }
}

/// The base config of the tests, merged with `extra`.
pub fn config(extra: serde_json::Value) -> Config {
    let mut base = serde_json::json!({
        "client": {
            "token": {"hmac_secret_key": SECRET},
            "allowed_origins": ["*"],
            "ping_interval": "1s",
            "pong_timeout": "800ms",
            "expired_close_delay": "1s",
            "overload_lag": "0s"
        },
        "http_api": {"key": API_KEY},
        "channel": {
            "without_namespace": {
                "allow_subscribe_for_client": true,
                "presence": true,
                "allow_presence_for_subscriber": true,
                "history_size": 100,
                "history_ttl": "300s",
                "force_recovery": true,
                "allow_history_for_subscriber": true
            },
            "namespaces": [
                {"name": "chat", "allow_subscribe_for_client": true, "allow_publish_for_subscriber": true,
                 "join_leave": true, "force_push_join_leave": true, "presence": true}
            ]
        },
        "shutdown": {"drain_window": "200ms", "timeout": "10s"}
    });
    merge(&mut base, extra);
    serde_json::from_value(base).expect("test config")
}

/// Merges `over` into `base`: objects key by key, anything else replaced.
pub fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

pub async fn start(config: Config) -> TestServer {
    let app = hub_server::server::build(config).await.expect("build");
    let node = app.node.clone();
    let listener = hub_server::server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let grpc_listener = app
        .config
        .grpc_api
        .enabled
        .then(|| hub_server::server::bind("127.0.0.1:0".parse().unwrap()).unwrap());
    let grpc_addr = grpc_listener.as_ref().map(|l| l.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        hub_server::server::serve_all(app, listener, grpc_listener, async move {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    TestServer {
        addr,
        grpc_addr,
        node,
        stop: Some(tx),
        done,
    }
}

pub fn token(claims: serde_json::Value) -> String {
    hub_server::auth::make_hs256(SECRET, &claims).unwrap()
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A raw HTTP/1.1 request; returns status and body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let (status, _, body) = http_with_head(addr, method, path, headers, body).await;
    (status, body)
}

/// A raw HTTP/1.1 request; returns status, the lower-cased head and the (de-chunked) body.
pub async fn http_with_head(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    raw_http::request(addr, method, path, headers, body, Duration::from_secs(10)).await
}

/// POST to the server API with the test key; returns status and parsed JSON (or Null).
pub async fn api(
    addr: SocketAddr,
    method: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let (st, b) = http(
        addr,
        "POST",
        &format!("/api/{method}"),
        &[("X-API-Key", API_KEY)],
        &body.to_string(),
    )
    .await;
    (
        st,
        serde_json::from_str(&b).unwrap_or(serde_json::Value::Null),
    )
}

pub type Ws = WebSocketStream<TcpStream>;

pub async fn ws(addr: SocketAddr) -> Ws {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (ws, _) =
        tokio_tungstenite::client_async(format!("ws://{addr}/connection/websocket"), stream)
            .await
            .unwrap();
    ws
}

pub async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.into())).await.unwrap();
}

/// The next text frame's JSON objects (pings `{}` skipped), or the close code.
pub enum Next {
    Json(Vec<serde_json::Value>),
    Closed(Option<u16>),
}

pub async fn next(ws: &mut Ws) -> Next {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no frame in time");
        match m {
            Some(Ok(Message::Text(t))) => {
                let v: Vec<serde_json::Value> = t
                    .split('\n')
                    .map(|l| serde_json::from_str(l).expect("server sent invalid JSON"))
                    .filter(|v: &serde_json::Value| v.as_object().is_some_and(|o| !o.is_empty()))
                    .collect();
                if v.is_empty() {
                    continue;
                }
                return Next::Json(v);
            }
            Some(Ok(Message::Close(f))) => return Next::Closed(f.map(|f| u16::from(f.code))),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Next::Closed(None),
        }
    }
}

/// Reads until the server closes; returns the close code.
pub async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        if let Next::Closed(c) = next(ws).await {
            return c;
        }
    }
}

/// Reads replies until one with `id` arrives; returns it.
pub async fn reply(ws: &mut Ws, id: u64) -> serde_json::Value {
    loop {
        match next(ws).await {
            Next::Json(v) => {
                if let Some(r) = v.into_iter().find(|r| r["id"] == id) {
                    return r;
                }
            }
            Next::Closed(c) => panic!("closed ({c:?}) while waiting for reply {id}"),
        }
    }
}

/// Connects with a token for `user`; returns the socket after the connect reply.
pub async fn connected(addr: SocketAddr, user: &str) -> Ws {
    let mut w = ws(addr).await;
    let t = token(serde_json::json!({"sub": user}));
    send(
        &mut w,
        &format!(r#"{{"id":1,"connect":{{"token":"{t}"}}}}"#),
    )
    .await;
    let r = reply(&mut w, 1).await;
    assert!(r["connect"]["client"].is_string(), "connect failed: {r}");
    w
}

pub fn is_close(code: Option<u16>, expected: u16) -> bool {
    code == Some(expected) || code.map(CloseCode::from) == Some(CloseCode::from(expected))
}

/// Subscribes a connected client to `channel` and waits for the reply, which must succeed.
pub async fn subscribe(ws: &mut Ws, id: u64, channel: &str) -> serde_json::Value {
    send(
        ws,
        &serde_json::json!({"id": id, "subscribe": {"channel": channel}}).to_string(),
    )
    .await;
    let r = reply(ws, id).await;
    assert!(r.get("error").is_none(), "subscribe {channel} failed: {r}");
    r
}

/// Reads `count` publication pushes, whatever their channels (several may come in one
/// frame, which [`push`] would partly skip); returns (channel, publication) in arrival order.
pub async fn pubs(ws: &mut Ws, count: usize) -> Vec<(String, serde_json::Value)> {
    let mut got = Vec::new();
    while got.len() < count {
        match next(ws).await {
            Next::Json(v) => {
                for m in v {
                    let p = &m["push"];
                    if let (Some(ch), Some(publication)) = (p["channel"].as_str(), p.get("pub")) {
                        got.push((ch.to_owned(), publication.clone()));
                    }
                }
            }
            Next::Closed(c) => panic!("closed ({c:?}) after {got:?}"),
        }
    }
    got
}

/// Reads until a push of `kind` on `channel` arrives; returns the push body. Other messages,
/// including those in the same frame, are skipped.
pub async fn push(ws: &mut Ws, channel: &str, kind: &str) -> serde_json::Value {
    loop {
        match next(ws).await {
            Next::Json(v) => {
                for m in v {
                    let p = &m["push"];
                    if p["channel"] == channel && p.get(kind).is_some() {
                        return p[kind].clone();
                    }
                }
            }
            Next::Closed(c) => panic!("closed ({c:?}) while waiting for {kind} on {channel}"),
        }
    }
}
