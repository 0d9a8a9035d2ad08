//! `channel.proxy.publication_forward` and the dead-letter store: publications of forwarding
//! namespaces reach a fake backend (a tonic server on 127.0.0.1:0) through
//! `ForwardPublication`, from the HTTP and gRPC server APIs and from clients; what the
//! backend refuses is dead-lettered — in the file, or in a Redis stream with the Redis engine
//! (a real `redis-server` per test), falling back to the file while Redis is down — and
//! `deadletters list|replay` (the CLI functions, run directly) read and drain both.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hub_server::config::Config;
use hub_server::dead_letter::{DeadLetters, Entry, Stored};
use hub_server::proxy::proto;
use hub_server::proxy::proto::centrifugo_proxy_server::{CentrifugoProxy, CentrifugoProxyServer};
use serde_json::{json, Value};
use support::redis::RedisServer;
use support::{api, send};
use tonic::{Request, Response, Status};

/// A backend taking `SendMessage` and `ForwardPublication`; it fails every call while `down`.
#[derive(Clone, Default)]
struct Fake(Arc<State>);

#[derive(Default)]
struct State {
    down: std::sync::atomic::AtomicBool,
    calls: AtomicUsize,
    forwarded: Mutex<Vec<proto::ForwardPublicationRequest>>,
    sent: Mutex<Vec<proto::SendMessageRequest>>,
}

impl Fake {
    fn down() -> Self {
        let f = Fake::default();
        f.set_down(true);
        f
    }

    fn set_down(&self, down: bool) {
        self.0.down.store(down, Ordering::SeqCst);
    }

    fn calls(&self) -> usize {
        self.0.calls.load(Ordering::SeqCst)
    }

    fn forwarded(&self) -> Vec<proto::ForwardPublicationRequest> {
        self.0.forwarded.lock().unwrap().clone()
    }

    fn sent(&self) -> Vec<proto::SendMessageRequest> {
        self.0.sent.lock().unwrap().clone()
    }

    fn answer(&self) -> Result<(), Status> {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        if self.0.down.load(Ordering::SeqCst) {
            return Err(Status::unavailable("backend down"));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl CentrifugoProxy for Fake {
    async fn forward_publication(
        &self,
        r: Request<proto::ForwardPublicationRequest>,
    ) -> Result<Response<proto::ForwardPublicationResponse>, Status> {
        self.answer()?;
        self.0.forwarded.lock().unwrap().push(r.into_inner());
        Ok(Response::new(proto::ForwardPublicationResponse {}))
    }

    async fn send_message(
        &self,
        r: Request<proto::SendMessageRequest>,
    ) -> Result<Response<proto::SendMessageResponse>, Status> {
        self.answer()?;
        self.0.sent.lock().unwrap().push(r.into_inner());
        Ok(Response::new(proto::SendMessageResponse {}))
    }
}

async fn serve(fake: Fake) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(CentrifugoProxyServer::new(fake))
            .serve_with_incoming(incoming),
    );
    format!("grpc://{addr}")
}

fn tmp_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hub-fwd-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("dead_letters.jsonl")
}

/// Test-sized retries for a fire-and-forget proxy at `endpoint`.
fn fire_and_forget(endpoint: &str, max_attempts: u32) -> Value {
    json!({
        "endpoint": endpoint, "timeout": "1s", "max_attempts": max_attempts,
        "initial_backoff": "10ms", "max_backoff": "40ms"
    })
}

/// `fwd:*` forwards (with history), `chat:*` does not, channels without namespace (history
/// from the base config) forward when `news_forwards`.
fn config(endpoint: &str, max_attempts: u32, dead_letters: &Path, news_forwards: bool) -> Value {
    json!({
        "channel": {
            "proxy": {"publication_forward": fire_and_forget(endpoint, max_attempts)},
            "without_namespace": {"forward_publications": news_forwards},
            "namespaces": [
                {"name": "fwd", "forward_publications": true, "history_size": 10,
                 "history_ttl": "300s", "allow_subscribe_for_client": true,
                 "allow_publish_for_client": true},
                {"name": "chat", "allow_subscribe_for_client": true,
                 "allow_publish_for_subscriber": true}
            ]
        },
        "dead_letter": {"path": dead_letters.to_string_lossy()},
        // The raw test clients do not answer pings: never ping them during a test.
        "client": {"ping_interval": "25s", "pong_timeout": "8s"}
    })
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..300 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

fn entries(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn json_of(b: &[u8]) -> Value {
    serde_json::from_slice(b).expect("JSON payload")
}

/// Calls an HTTP API method that must succeed; returns its `result`.
async fn api_ok(addr: std::net::SocketAddr, method: &str, body: Value) -> Value {
    let (st, v) = api(addr, method, body).await;
    assert_eq!(st, 200, "{method}: {v}");
    assert!(v.get("error").is_none(), "{method} failed: {v}");
    v["result"].clone()
}

/// Connects `user`; returns the socket and its client id.
async fn connect(addr: std::net::SocketAddr, user: &str) -> (support::Ws, String) {
    let mut ws = support::ws(addr).await;
    let t = support::token(json!({"sub": user}));
    send(
        &mut ws,
        &json!({"id": 1, "connect": {"token": t}}).to_string(),
    )
    .await;
    let r = support::reply(&mut ws, 1).await;
    let client = r["connect"]["client"]
        .as_str()
        .expect("connected")
        .to_string();
    (ws, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_of_forwarding_namespaces_reach_the_backend_once_each() {
    let fake = Fake::default();
    let dl = tmp_file("once");
    let mut cfg = config(&serve(fake.clone()).await, 3, &dl, false);
    cfg["grpc_api"] = json!({"enabled": true, "insecure": true});
    let s = support::start(support::config(cfg)).await;

    // The HTTP API: publish, and broadcast over forwarding and other channels.
    let a = api_ok(
        s.addr,
        "publish",
        json!({"channel": "fwd:a", "data": {"n": 1}}),
    )
    .await;
    assert_eq!(a["offset"], 1);
    let b = api_ok(
        s.addr,
        "broadcast",
        json!({"channels": ["fwd:b", "chat:x", "news", "fwd:c"], "data": {"n": 2}}),
    )
    .await;
    assert!(
        b["responses"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r.get("error").is_none()),
        "{b}"
    );
    api_ok(s.addr, "publish", json!({"channel": "chat:y", "data": {}})).await;

    // The gRPC API.
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", s.grpc_addr.unwrap()))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut grpc =
        hub_server::api::grpc::proto::centrifugo_api_client::CentrifugoApiClient::new(channel);
    let r = grpc
        .publish(hub_server::api::grpc::proto::PublishRequest {
            channel: "fwd:e".into(),
            data: br#"{"n":5}"#.to_vec().into(),
            tags: [("k".to_string(), "v".to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.error.is_none(), "{r:?}");

    // A client: to a forwarding channel, and to one that is not.
    let (mut ws, client_id) = connect(s.addr, "alice").await;
    send(
        &mut ws,
        r#"{"id":2,"publish":{"channel":"fwd:d","data":{"n":4}}}"#,
    )
    .await;
    let r = support::reply(&mut ws, 2).await;
    assert!(r.get("error").is_none(), "{r}");
    support::subscribe(&mut ws, 3, "chat:room").await;
    send(
        &mut ws,
        r#"{"id":4,"publish":{"channel":"chat:room","data":{"n":6}}}"#,
    )
    .await;
    let r = support::reply(&mut ws, 4).await;
    assert!(r.get("error").is_none(), "{r}");

    eventually("five forwarded publications", || {
        fake.forwarded().len() >= 5
    })
    .await;
    // Nothing more comes: no duplicates, and chat/news are not forwarded.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut got = fake.forwarded();
    got.sort_by(|x, y| x.channel.cmp(&y.channel));
    let channels: Vec<&str> = got.iter().map(|p| p.channel.as_str()).collect();
    assert_eq!(channels, ["fwd:a", "fwd:b", "fwd:c", "fwd:d", "fwd:e"]);

    let (pa, pb, pc, pd, pe) = (&got[0], &got[1], &got[2], &got[3], &got[4]);
    assert_eq!(json_of(&pa.data), json!({"n": 1}));
    assert_eq!(
        (pa.offset, pa.epoch.as_str()),
        (1, a["epoch"].as_str().unwrap())
    );
    assert_eq!(
        (pa.user.as_str(), pa.client.as_str(), pa.attempt),
        ("", "", 1)
    );
    assert!(pa.timestamp_ms > 0);
    let b0 = &b["responses"][0]["result"];
    assert_eq!(
        (pb.offset, pb.epoch.as_str()),
        (1, b0["epoch"].as_str().unwrap())
    );
    for p in [pb, pc] {
        assert_eq!(json_of(&p.data), json!({"n": 2}));
        assert_eq!(p.offset, 1);
    }
    assert_eq!(json_of(&pd.data), json!({"n": 4}));
    assert_eq!(
        (pd.user.as_str(), pd.client.as_str()),
        ("alice", client_id.as_str())
    );
    assert_eq!(pd.offset, 1);
    assert!(!pd.epoch.is_empty());
    assert_eq!(json_of(&pe.data), json!({"n": 5}));
    assert_eq!(pe.tags.get("k").map(String::as_str), Some("v"));
    assert_eq!(pe.offset, 1);
    assert!(entries(&dl).is_empty(), "nothing dead-lettered");
    drop(ws);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_publication_is_dead_lettered_and_replay_forwards_it() {
    let fake = Fake::down();
    let dl = tmp_file("dead");
    let endpoint = serve(fake.clone()).await;
    let cfg = support::config(config(&endpoint, 2, &dl, true));
    let s = support::start(cfg.clone()).await;
    let r = api_ok(
        s.addr,
        "publish",
        json!({"channel": "news", "data": {"n": 9}, "tags": {"t": "1"}}),
    )
    .await;
    let epoch = r["epoch"].as_str().unwrap().to_string();
    eventually("a dead letter", || entries(&dl).len() == 1).await;
    assert_eq!(fake.calls(), 2);
    let e = &entries(&dl)[0];
    assert_eq!(e["kind"], "publication");
    assert_eq!(e["channel"], "news");
    assert_eq!(e["data"], json!({"n": 9}));
    assert_eq!(e["offset"], 1);
    assert_eq!(e["epoch"], epoch.as_str());
    assert_eq!(e["tags"], json!({"t": "1"}));
    assert_eq!(e["attempts"], 2);
    assert!(
        e["last_error"].as_str().unwrap().contains("backend down"),
        "{e}"
    );
    let listed = hub_server::cli::deadletters_list(&cfg).await.unwrap();
    assert!(
        listed.contains(r#""kind":"publication","channel":"news""#),
        "{listed}"
    );
    s.shutdown().await;

    // Replay needs the proxy of the entry's kind.
    let mut without = cfg.clone();
    without
        .channel
        .proxy
        .publication_forward
        .proxy
        .endpoint
        .clear();
    let err = hub_server::cli::deadletters_replay(&without)
        .await
        .unwrap_err();
    assert!(
        err.contains("channel.proxy.publication_forward.endpoint"),
        "{err}"
    );
    assert_eq!(entries(&dl).len(), 1);

    // Still failing: kept, attempt counted.
    let out = hub_server::cli::deadletters_replay(&cfg).await.unwrap();
    assert!(out.contains("0 delivered, 1 kept"), "{out}");
    assert_eq!(entries(&dl)[0]["attempts"], 3);

    // Healthy: forwarded through ForwardPublication, and removed.
    fake.set_down(false);
    let out = hub_server::cli::deadletters_replay(&cfg).await.unwrap();
    assert!(out.contains("1 delivered, 0 kept"), "{out}");
    assert!(entries(&dl).is_empty());
    let f = fake.forwarded();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].channel, "news");
    assert_eq!(json_of(&f[0].data), json!({"n": 9}));
    assert_eq!(
        (f[0].offset, f[0].epoch.as_str(), f[0].attempt),
        (1, epoch.as_str(), 4)
    );
    assert_eq!(f[0].tags.get("t").map(String::as_str), Some("1"));
    assert!(fake.sent().is_empty(), "replayed through the right call");
}

/// The config of a node on the Redis engine at `redis`, with both fire-and-forget proxies
/// at `endpoint`.
fn redis_config(redis: &RedisServer, prefix: &str, endpoint: &str, dl: &Path) -> Config {
    let mut c = config(endpoint, 2, dl, true);
    c["client"]["proxy"] = json!({"send": {
        "enabled": true, "endpoint": endpoint, "timeout": "1s", "max_attempts": 2,
        "initial_backoff": "10ms", "max_backoff": "40ms"
    }});
    c["engine"] = json!({"type": "redis", "redis": {
        "address": [redis.url()], "prefix": prefix, "io_timeout": "500ms", "connect_timeout": "500ms"
    }});
    support::config(c)
}

fn xlen(redis: &RedisServer, key: &str) -> usize {
    redis
        .cli(&["XLEN", key])
        .and_then(|o| o.trim().parse().ok())
        .unwrap_or(usize::MAX)
}

fn prefix() -> String {
    format!("hubdl{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_redis_engine_dead_letters_go_to_a_stream_that_replay_drains() {
    let redis = RedisServer::start();
    let prefix = prefix();
    let key = format!("{prefix}.dead_letters");
    let fake = Fake::down();
    let dl = tmp_file("redis");
    let cfg = redis_config(&redis, &prefix, &serve(fake.clone()).await, &dl);
    let s = support::start(cfg.clone()).await;
    let (mut ws, _) = connect(s.addr, "bob").await;
    send(&mut ws, r#"{"send":{"data":{"s":1}}}"#).await;
    api_ok(
        s.addr,
        "publish",
        json!({"channel": "news", "data": {"p": 1}}),
    )
    .await;
    eventually("two entries in the stream", || xlen(&redis, &key) == 2).await;
    assert!(entries(&dl).is_empty(), "nothing in the file");
    let listed = hub_server::cli::deadletters_list(&cfg).await.unwrap();
    let listed: Vec<Entry> = listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 2);
    assert!(listed
        .iter()
        .any(|e| e.user == "bob" && e.channel.is_empty()));
    assert!(listed.iter().any(|e| e.channel == "news" && e.offset == 1));
    // The command itself reads the stream the config names.
    let file = dl.with_file_name("config.json");
    let engine =
        json!({"engine": {"type": "redis", "redis": {"address": redis.url(), "prefix": prefix}}});
    std::fs::write(&file, engine.to_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hub-server"))
        .args(["deadletters", "list", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(
        stdout.contains(r#""kind":"publication","channel":"news""#),
        "{stdout}"
    );
    drop(ws);
    s.shutdown().await;

    // Still failing: both kept in the stream, attempts counted.
    let out = hub_server::cli::deadletters_replay(&cfg).await.unwrap();
    assert!(out.contains("0 delivered, 2 kept"), "{out}");
    assert!(out.contains(&key), "{out}");
    assert_eq!(xlen(&redis, &key), 2);
    let attempts: Vec<u32> = hub_server::cli::deadletters_list(&cfg)
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Entry>(l).unwrap().attempts)
        .collect();
    assert_eq!(attempts, [3, 3]);

    // Healthy: each through its own call, and the stream is empty.
    fake.set_down(false);
    let out = hub_server::cli::deadletters_replay(&cfg).await.unwrap();
    assert!(out.contains("2 delivered, 0 kept"), "{out}");
    assert_eq!(xlen(&redis, &key), 0);
    let (sent, forwarded) = (fake.sent(), fake.forwarded());
    assert_eq!((sent.len(), forwarded.len()), (1, 1));
    assert_eq!((sent[0].user.as_str(), sent[0].attempt), ("bob", 4));
    assert_eq!(json_of(&sent[0].data), json!({"s": 1}));
    assert_eq!(
        (forwarded[0].channel.as_str(), forwarded[0].offset),
        ("news", 1)
    );
    assert_eq!(json_of(&forwarded[0].data), json!({"p": 1}));
    assert!(entries(&dl).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_a_dead_letter_falls_back_to_the_file_and_replay_reads_both() {
    let mut redis = RedisServer::start_persistent();
    let prefix = prefix();
    let key = format!("{prefix}.dead_letters");
    let fake = Fake::down();
    let dl = tmp_file("fallback");
    let cfg = redis_config(&redis, &prefix, &serve(fake.clone()).await, &dl);
    let s = support::start(cfg.clone()).await;
    let (mut ws, _) = connect(s.addr, "carol").await;
    send(&mut ws, r#"{"send":{"data":{"n":1}}}"#).await;
    eventually("an entry in the stream", || xlen(&redis, &key) == 1).await;

    redis.kill();
    send(&mut ws, r#"{"send":{"data":{"n":2}}}"#).await;
    eventually("an entry in the fallback file", || entries(&dl).len() == 1).await;
    let e = &entries(&dl)[0];
    assert_eq!(
        (e["user"].as_str(), &e["data"]),
        (Some("carol"), &json!({"n": 2}))
    );
    assert!(hub_server::cli::deadletters_list(&cfg).await.is_err());
    drop(ws);
    s.shutdown().await;

    // Redis back (with its data): list shows the stream's entry, then the file's.
    redis.restart();
    let listed = hub_server::cli::deadletters_list(&cfg).await.unwrap();
    let data: Vec<Value> = listed
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["data"].clone())
        .collect();
    assert_eq!(data, [json!({"n": 1}), json!({"n": 2})]);
    fake.set_down(false);
    let out = hub_server::cli::deadletters_replay(&cfg).await.unwrap();
    assert!(out.contains("2 delivered, 0 kept"), "{out}");
    assert_eq!(xlen(&redis, &key), 0);
    assert!(entries(&dl).is_empty());
    assert_eq!(fake.sent().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_stream_is_bounded_by_max_entries() {
    let redis = RedisServer::start();
    let prefix = prefix();
    let key = format!("{prefix}.dead_letters");
    let dl = tmp_file("bound");
    let mut cfg = redis_config(&redis, &prefix, "grpc://127.0.0.1:9", &dl);
    cfg.dead_letter.max_entries = 10;
    let store = DeadLetters::new(&cfg).unwrap();
    assert_eq!(store.stream_key(), Some(key.as_str()));
    for n in 0..500 {
        let e = Entry::new(
            "u".into(),
            "c".into(),
            format!("{{\"n\":{n}}}").as_bytes(),
            1,
            "x".into(),
            1,
        );
        assert_eq!(store.append(&e).await.unwrap(), Stored::Redis);
    }
    // `MAXLEN ~` trims whole stream nodes (100 entries by default): about the bound.
    let len = xlen(&redis, &key);
    assert!((10..=110).contains(&len), "{len}");
    let listed = store.list().await.unwrap();
    assert_eq!(listed.len(), len);
    assert!(listed.last().unwrap().contains(r#""n":499"#));
    assert!(entries(&dl).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_each_publication_is_forwarded_once_by_the_node_that_published_it() {
    let redis = RedisServer::start();
    let fake = Fake::default();
    let dl = tmp_file("cluster");
    let cfg = redis_config(&redis, &prefix(), &serve(fake.clone()).await, &dl);
    let a = support::start(cfg.clone()).await;
    let b = support::start(cfg).await;
    // A subscriber on each node, so each publication is delivered on both.
    let (mut on_a, _) = connect(a.addr, "ann").await;
    let (mut on_b, b_client) = connect(b.addr, "ben").await;
    for ws in [&mut on_a, &mut on_b] {
        support::subscribe(ws, 2, "fwd:a").await;
        support::subscribe(ws, 3, "fwd:b").await;
    }
    api_ok(
        a.addr,
        "publish",
        json!({"channel": "fwd:a", "data": {"n": 1}}),
    )
    .await;
    send(
        &mut on_b,
        r#"{"id":4,"publish":{"channel":"fwd:b","data":{"n":2}}}"#,
    )
    .await;
    for ws in [&mut on_a, &mut on_b] {
        let mut got: Vec<(String, Value)> = support::pubs(ws, 2)
            .await
            .into_iter()
            .map(|(ch, p)| (ch, p["data"].clone()))
            .collect();
        got.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            got,
            [
                ("fwd:a".to_owned(), json!({"n": 1})),
                ("fwd:b".to_owned(), json!({"n": 2}))
            ]
        );
    }
    eventually("two forwarded publications", || fake.forwarded().len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut got = fake.forwarded();
    got.sort_by(|x, y| x.channel.cmp(&y.channel));
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        (got[0].channel.as_str(), got[0].client.as_str()),
        ("fwd:a", "")
    );
    assert_eq!(
        (got[1].channel.as_str(), got[1].client.as_str()),
        ("fwd:b", b_client.as_str())
    );
    drop((on_a, on_b));
    a.shutdown().await;
    b.shutdown().await;
}
