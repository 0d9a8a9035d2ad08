//! The README's walkthrough, automated: `examples/node-subscriber` (the real centrifuge npm
//! client) connects with a token, subscribes, and prints what is posted to `/api/publish`.

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn node_subscriber_example_prints_publications_posted_to_the_api() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/node-subscriber");
    assert!(
        dir.join("node_modules/centrifuge").exists(),
        "run `npm ci --prefix examples/node-subscriber` (scripts/test.sh does)"
    );
    let server = support::start(support::config(serde_json::json!({}))).await;
    let addr = server.addr;
    let mut child = tokio::process::Command::new("node")
        .arg("subscribe.mjs")
        .arg("news")
        .current_dir(&dir)
        .env("HUB_URL", format!("ws://{addr}/connection/websocket"))
        .env(
            "HUB_TOKEN",
            support::token(serde_json::json!({"sub": "demo"})),
        )
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node must be installed");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let wait = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push(line.clone());
            if line.starts_with("subscribed to news") {
                let (st, body) = support::api(
                    addr,
                    "publish",
                    serde_json::json!({"channel": "news", "data": {"text": "hi"}}),
                )
                .await;
                assert_eq!(st, 200, "{body}");
            }
            if line.contains(r#"news #1: {"text":"hi"}"#) {
                return;
            }
        }
    };
    let r = tokio::time::timeout(Duration::from_secs(30), wait).await;
    assert!(
        r.is_ok(),
        "the example did not print the publication; it printed: {seen:?}"
    );
    assert!(
        seen.iter().any(|l| l.starts_with("connected as client ")),
        "{seen:?}"
    );
    let _ = child.kill().await;
    server.shutdown().await;
}
