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

/// `examples/browser` in headless Chromium: the page connects with the token in its URL,
/// subscribes, and shows publications posted to the API, as text (markup escaped).
#[tokio::test]
async fn browser_example_shows_publications_in_chromium() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/browser");
    assert!(
        dir.join("node_modules/centrifuge/dist/centrifuge.js")
            .exists(),
        "run `npm ci --prefix examples/browser` (scripts/test.sh does)"
    );
    let server = support::start(support::config(serde_json::json!({}))).await;
    let addr = server.addr;
    // The page's static server, on a free port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut page = tokio::process::Command::new("node")
        .arg("serve.mjs")
        .current_dir(&dir)
        .env("PORT", port.to_string())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node must be installed");
    let mut lines = BufReader::new(page.stdout.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("the page server started")
        .unwrap();
    // Publish while the browser loads and subscribes.
    let publisher = tokio::spawn(async move {
        for n in 0..1000 {
            let data = serde_json::json!({"text": format!("<b>browser-{n}</b>")});
            support::api(
                addr,
                "publish",
                serde_json::json!({"channel": "news", "data": data}),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let token = support::token(serde_json::json!({"sub": "browser"}));
    let url = format!(
        "http://127.0.0.1:{port}/?token={token}&channel=news&url=ws://{addr}/connection/websocket"
    );
    // Headless Chromium dumps the page once its virtual-time budget is spent, which on a busy
    // machine can come before the first publication: load it again (at most 3 times) until
    // one is shown.
    let mut dom = String::new();
    for _ in 0..3 {
        let profile = std::env::temp_dir().join(format!("hub-chromium-{}", uuid::Uuid::new_v4()));
        let run = tokio::process::Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--virtual-time-budget=6000",
                "--dump-dom",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(&url)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(90), run)
            .await
            .expect("chromium finished")
            .expect("chromium must be installed (scripts/test.sh installs Debian's chromium)");
        let _ = std::fs::remove_dir_all(&profile);
        dom = String::from_utf8_lossy(&out.stdout).into_owned();
        if dom.contains("browser-") {
            break;
        }
    }
    publisher.abort();
    assert!(
        dom.contains("subscribed to news"),
        "page did not subscribe:\n{dom}"
    );
    assert!(dom.contains("browser-"), "no publication shown:\n{dom}");
    assert!(
        dom.contains("&lt;b&gt;browser-") && !dom.contains("<b>browser-"),
        "publication markup must be shown as text:\n{dom}"
    );
    let _ = page.kill().await;
    server.shutdown().await;
}
