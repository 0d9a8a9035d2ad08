//! `client.proxy.send`: client `send` messages delivered to a fake backend (a tonic server on
//! 127.0.0.1:0 implementing only `SendMessage`) in the background, retried with backoff,
//! dead-lettered to the JSON-lines file after the last attempt, and replayed from it with
//! `deadletters replay` (the CLI function, run directly).

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hub_server::config::Config;
use hub_server::proxy::proto;
use hub_server::proxy::proto::centrifugo_proxy_server::{CentrifugoProxy, CentrifugoProxyServer};
use serde_json::{json, Value};
use support::{connected, send};
use tonic::{Request, Response, Status};

/// A backend that fails the first `fail_first` calls (`usize::MAX` = always), then accepts.
#[derive(Clone, Default)]
struct Fake(Arc<State>);

#[derive(Default)]
struct State {
    fail_first: AtomicUsize,
    calls: AtomicUsize,
    delivered: Mutex<Vec<proto::SendMessageRequest>>,
}

impl Fake {
    fn failing(n: usize) -> Self {
        let f = Fake::default();
        f.0.fail_first.store(n, Ordering::SeqCst);
        f
    }

    fn calls(&self) -> usize {
        self.0.calls.load(Ordering::SeqCst)
    }

    fn delivered(&self) -> Vec<proto::SendMessageRequest> {
        self.0.delivered.lock().unwrap().clone()
    }
}

#[tonic::async_trait]
impl CentrifugoProxy for Fake {
    async fn send_message(
        &self,
        r: Request<proto::SendMessageRequest>,
    ) -> Result<Response<proto::SendMessageResponse>, Status> {
        let n = self.0.calls.fetch_add(1, Ordering::SeqCst);
        if n < self.0.fail_first.load(Ordering::SeqCst) {
            return Err(Status::unavailable("backend down"));
        }
        self.0.delivered.lock().unwrap().push(r.into_inner());
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
    let dir = std::env::temp_dir().join(format!("hub-send-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("dead_letters.jsonl")
}

/// The test config with `client.proxy.send` at `endpoint` and test-sized backoffs.
fn config(endpoint: &str, max_attempts: u32, dead_letters: &Path) -> Config {
    support::config(json!({
        "client": {"proxy": {"send": {
            "enabled": true, "endpoint": endpoint, "timeout": "1s",
            "max_attempts": max_attempts, "initial_backoff": "10ms", "max_backoff": "40ms"
        }}},
        "dead_letter": {"path": dead_letters.to_string_lossy()}
    }))
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_is_delivered_after_retries_without_holding_the_client() {
    let fake = Fake::failing(2);
    let dl = tmp_file("retry");
    let s = support::start(config(&serve(fake.clone()).await, 5, &dl)).await;
    let mut ws = connected(s.addr, "alice").await;
    send(&mut ws, r#"{"send":{"data":{"text":"hello"}}}"#).await;
    // The connection keeps working while delivery retries in the background.
    send(&mut ws, r#"{"id":2,"presence_stats":{"channel":"news"}}"#).await;
    let _ = support::reply(&mut ws, 2).await;
    eventually("delivery", || !fake.delivered().is_empty()).await;
    let d = fake.delivered();
    assert_eq!(d.len(), 1);
    assert_eq!(fake.calls(), 3);
    assert_eq!(d[0].attempt, 3);
    assert_eq!(d[0].user, "alice");
    assert_eq!(
        serde_json::from_slice::<Value>(&d[0].data).unwrap(),
        json!({"text": "hello"})
    );
    assert!(d[0].timestamp_ms > 0);
    assert!(entries(&dl).is_empty(), "nothing dead-lettered");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_always_fails_is_dead_lettered_and_replay_delivers_it() {
    let fake = Fake::failing(usize::MAX);
    let dl = tmp_file("dead");
    let endpoint = serve(fake.clone()).await;
    let cfg = config(&endpoint, 3, &dl);
    let s = support::start(cfg.clone()).await;
    let mut ws = connected(s.addr, "bob").await;
    send(&mut ws, r#"{"send":{"data":{"n":1}}}"#).await;
    eventually("a dead letter", || entries(&dl).len() == 1).await;
    assert_eq!(fake.calls(), 3);
    let e = &entries(&dl)[0];
    assert_eq!(e["user"], "bob");
    assert!(e["client"].as_str().is_some_and(|c| !c.is_empty()));
    assert_eq!(e["data"], json!({"n": 1}));
    assert_eq!(e["attempts"], 3);
    assert!(
        e["last_error"].as_str().unwrap().contains("backend down"),
        "{e}"
    );
    assert!(e["timestamp_ms"].as_i64().unwrap() > 0);
    let listed = hub_server::cli::deadletters_list(&cfg).await.unwrap();
    assert!(listed.contains(r#""user":"bob""#), "{listed}");
    s.shutdown().await;

    // Still failing: replay keeps the entry and counts the attempt.
    let out = hub_server::cli::deadletters_replay(&cfg).await.unwrap();
    assert!(out.contains("0 delivered, 1 kept"), "{out}");
    assert_eq!(entries(&dl)[0]["attempts"], 4);

    // Healthy again: replay delivers it and empties the file.
    fake.0.fail_first.store(0, Ordering::SeqCst);
    let out = hub_server::cli::deadletters_replay(&cfg).await.unwrap();
    assert!(out.contains("1 delivered, 0 kept"), "{out}");
    assert!(entries(&dl).is_empty());
    let d = fake.delivered();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].user, "bob");
    assert_eq!(d[0].attempt, 5);
    assert_eq!(
        serde_json::from_slice::<Value>(&d[0].data).unwrap(),
        json!({"n": 1})
    );
    assert!(hub_server::cli::deadletters_list(&cfg)
        .await
        .unwrap()
        .starts_with("no dead letters"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_send_proxy_a_send_still_closes_with_3508() {
    let s = support::start(support::config(json!({}))).await;
    let mut ws = connected(s.addr, "carol").await;
    send(&mut ws, r#"{"send":{"data":{}}}"#).await;
    let code = support::close_code(&mut ws).await;
    assert!(support::is_close(code, 3508), "{code:?}");
    s.shutdown().await;
}

#[test]
fn the_deadletters_commands_read_the_file_next_to_the_config() {
    let dl = tmp_file("cli");
    let dir = dl.parent().unwrap();
    let config = dir.join("config.json");
    std::fs::write(&config, "{}").unwrap();
    let line = r#"{"user":"dan","client":"c1","data":{"k":1},"attempts":5,"last_error":"x","timestamp_ms":1,"failed_at_ms":2}"#;
    std::fs::write(&dl, format!("{line}\n")).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hub-server"))
            .args(args)
            .arg("-c")
            .arg(&config)
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap()
    };
    let out = run(&["deadletters", "list"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), line);
    let out = run(&["deadletters", "replay"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("client.proxy.send is not enabled"),
        "{out:?}"
    );
    assert_eq!(entries(&dl).len(), 1, "a failed replay keeps the file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_still_retrying_at_shutdown_are_dead_lettered() {
    let fake = Fake::failing(usize::MAX);
    let dl = tmp_file("shutdown");
    let mut cfg = config(&serve(fake.clone()).await, 50, &dl);
    // Long enough backoffs that the event is still waiting when the hub stops.
    cfg.client.proxy.send.retry.initial_backoff = Duration::from_secs(30);
    cfg.client.proxy.send.retry.max_backoff = Duration::from_secs(30);
    let s = support::start(cfg).await;
    let mut ws = connected(s.addr, "carol").await;
    send(&mut ws, r#"{"send":{"data":{"n":7}}}"#).await;
    eventually("a first attempt", || fake.calls() >= 1).await;
    drop(ws);
    s.shutdown().await;
    let e = entries(&dl);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0]["user"], "carol");
    assert!(
        e[0].to_string().contains("shut down before delivery"),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_pending_new_sends_are_dead_lettered_at_once() {
    let fake = Fake::failing(usize::MAX);
    let dl = tmp_file("cap");
    let mut cfg = config(&serve(fake.clone()).await, 50, &dl);
    cfg.client.proxy.send.retry.initial_backoff = Duration::from_secs(30);
    cfg.client.proxy.send.retry.max_backoff = Duration::from_secs(30);
    cfg.client.proxy.send.retry.max_pending = 2;
    let s = support::start(cfg).await;
    let mut ws = connected(s.addr, "dan").await;
    for n in 0..5 {
        send(&mut ws, &format!(r#"{{"send":{{"data":{{"n":{n}}}}}}}"#)).await;
    }
    // Two are retrying in the background; the other three are stored at once.
    eventually("three dead letters", || entries(&dl).len() == 3).await;
    assert!(entries(&dl)
        .iter()
        .all(|e| e.to_string().contains("too many sends pending")));
    drop(ws);
    s.shutdown().await;
    assert_eq!(
        entries(&dl).len(),
        5,
        "the two in delivery are stored at shutdown"
    );
}
