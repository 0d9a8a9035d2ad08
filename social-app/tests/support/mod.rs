//! The app in-process on port 0, a raw HTTP/1.1 client, and the hub WebSocket protocol.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use social_app::app::{self, Part, Running};
use social_app::config::Settings;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

#[path = "../../../hub-server/tests/support/raw_http.rs"]
pub mod raw_http;
#[path = "../../../hub-server/tests/support/redis.rs"]
pub mod redis;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    settings: Settings,
}

/// Settings from flags, as the command line gives them.
pub fn settings(flags: &[&str]) -> Settings {
    let mut argv = vec!["social-app"];
    argv.extend_from_slice(flags);
    Args::try_parse_from(argv).expect("valid flags").settings
}

/// A fresh data directory.
pub fn data_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("social-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The whole app on port 0 in `dir` with `--dev` and `extra` flags.
pub async fn start(dir: &std::path::Path, extra: &[&str]) -> (Running, SocketAddr) {
    let d = dir.to_string_lossy().to_string();
    let mut flags = vec!["--dev", "--data-dir", &d, "--grpc", "127.0.0.1:0"];
    flags.extend_from_slice(extra);
    let running = app::start(Part::All, &settings(&flags), "127.0.0.1:0")
        .await
        .expect("app starts");
    let addr = running.http.expect("gateway address");
    (running, addr)
}

/// A raw HTTP/1.1 request: status, lower-cased head, body (30 s: an argon2 hash in a debug
/// build, or a saga's retries against a dead Redis, take seconds).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    raw_http::request(addr, method, path, headers, body, Duration::from_secs(30)).await
}

/// A JSON API call with an optional bearer token: status and JSON (Null when none).
pub async fn call(
    addr: SocketAddr,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut h = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        h.push(("authorization", a));
    }
    let b = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let (st, _, text) = http(addr, method, path, &h, &b).await;
    (st, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A signed-in user.
#[derive(Clone)]
pub struct User {
    pub id: String,
    pub token: String,
    pub addr: SocketAddr,
}

impl User {
    pub async fn get(&self, path: &str) -> (u16, Value) {
        call(self.addr, Some(&self.token), "GET", path, Value::Null).await
    }
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        call(self.addr, Some(&self.token), "POST", path, body).await
    }
    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        call(self.addr, Some(&self.token), "PUT", path, body).await
    }
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        call(self.addr, Some(&self.token), "DELETE", path, Value::Null).await
    }
    /// Asks `other` to be friends and has them approve.
    pub async fn befriend(&self, other: &User) {
        let (st, v) = self
            .post(&format!("/api/friends/{}", other.id), Value::Null)
            .await;
        assert_eq!(
            (st, v["relation"].as_str()),
            (200, Some("request_sent")),
            "{v}"
        );
        let (st, v) = other
            .post(&format!("/api/friends/{}/approve", self.id), Value::Null)
            .await;
        assert_eq!((st, v["relation"].as_str()), (200, Some("friends")), "{v}");
    }
    /// Post ids of the feed, newest first.
    pub async fn feed(&self) -> Vec<String> {
        let (st, v) = self.get("/api/feed?limit=100").await;
        assert_eq!(st, 200, "{v}");
        ids(&v["posts"])
    }
}

/// The `id`s of a JSON array.
pub fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x["id"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Registers `first last` with email `<first>.<last>@test.io`.
pub async fn register(addr: SocketAddr, first: &str, last: &str) -> User {
    let email = format!("{}.{}@test.io", first.to_lowercase(), last.to_lowercase());
    let (st, v) = call(
        addr,
        None,
        "POST",
        "/api/register",
        json!({"email": email, "password": "password123", "first_name": first, "last_name": last}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    User {
        id: v["user"]["id"].as_str().unwrap().to_string(),
        token: v["token"].as_str().unwrap().to_string(),
        addr,
    }
}

/// Logs in again (a new token).
pub async fn login(addr: SocketAddr, email: &str) -> (u16, Value) {
    call(
        addr,
        None,
        "POST",
        "/api/login",
        json!({"email": email, "password": "password123"}),
    )
    .await
}

/// Logs `email` in again and returns the user with the new token.
pub async fn relogin(addr: SocketAddr, email: &str) -> User {
    let (st, v) = login(addr, email).await;
    assert_eq!(st, 200, "{v}");
    User {
        id: v["user"]["id"].as_str().unwrap().to_string(),
        token: v["token"].as_str().unwrap().to_string(),
        addr,
    }
}

pub type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// Opens a WebSocket to a `ws://host:port/path` URL.
pub async fn ws_connect(url: &str) -> Ws {
    let host = url
        .strip_prefix("ws://")
        .and_then(|r| r.split('/').next())
        .expect("a ws:// URL");
    let tcp = TcpStream::connect(host).await.unwrap();
    tokio_tungstenite::client_async(url, tcp).await.unwrap().0
}

/// Connects to the hub the way the page does (`/api/realtime`), and subscribes to the
/// user's channel.
pub async fn live(u: &User) -> Ws {
    let (st, rt) = u.get("/api/realtime").await;
    assert_eq!(st, 200, "{rt}");
    let url = rt["url"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("ws://{}/connection/websocket", u.addr));
    let mut ws = ws_connect(&url).await;
    let r = command(&mut ws, json!({"id": 1, "connect": {"token": rt["token"]}})).await;
    assert!(r["connect"]["client"].is_string(), "{r}");
    let r = command(
        &mut ws,
        json!({"id": 2, "subscribe": {"channel": rt["channel"]}}),
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
    ws
}

/// Sends a command and returns its reply (pushes before it are skipped).
pub async fn command(ws: &mut Ws, cmd: Value) -> Value {
    let id = cmd["id"].as_u64().unwrap();
    ws.send(Message::Text(cmd.to_string().into()))
        .await
        .unwrap();
    loop {
        for r in frames(ws).await {
            if r["id"].as_u64() == Some(id) {
                return r;
            }
        }
    }
}

async fn frames(ws: &mut Ws) -> Vec<Value> {
    let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a frame within 10 s")
        .expect("open")
        .expect("frame");
    match m {
        Message::Text(t) => t
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        _ => Vec::new(),
    }
}

/// The next live event (publication data) of the given `type`, skipping others.
pub async fn event(ws: &mut Ws, kind: &str) -> Value {
    loop {
        for r in frames(ws).await {
            let data = &r["push"]["pub"]["data"];
            if data["type"] == kind {
                return data.clone();
            }
            if r.as_object().is_some_and(|o| o.is_empty()) {
                // A ping: answer it.
                ws.send(Message::Text("{}".into())).await.unwrap();
            }
        }
    }
}
