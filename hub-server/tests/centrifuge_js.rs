//! Runs the acceptance tests in `tests/js` (the real `centrifuge` npm client under Node)
//! against a real hub-server on 127.0.0.1.

mod support;

use std::path::PathBuf;
use std::process::Stdio;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn centrifuge_js_acceptance_suite() {
    run_suite(serde_json::json!({}), false).await;
}

/// The same suite with permessage-deflate on: Node's `ws` offers it, so every exchange is
/// compressed (the messages above `compression_min_size`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn centrifuge_js_acceptance_suite_with_compression() {
    run_suite(
        serde_json::json!({"websocket": {"compression": true, "compression_min_size": 0}}),
        true,
    )
    .await;
}

async fn run_suite(extra: serde_json::Value, compression: bool) {
    let js = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/js");
    assert!(
        js.join("node_modules/centrifuge").exists(),
        "node_modules missing in {}: run `npm ci --prefix tests/js` (scripts/test.sh does)",
        js.display()
    );
    let server = support::start(support::config(extra)).await;
    let addr = server.addr;
    let run = tokio::process::Command::new("node")
        .arg("--test")
        .arg("--test-concurrency=1")
        .arg("acceptance.test.mjs")
        .current_dir(&js)
        .env("HUB_WS_URL", format!("ws://{addr}/connection/websocket"))
        .env("HUB_API_URL", format!("http://{addr}"))
        .env("HUB_API_KEY", support::API_KEY)
        .env("HUB_SECRET", support::SECRET)
        .env("HUB_COMPRESSION", if compression { "1" } else { "0" })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    // A hung client must fail the suite, not stall CI.
    let out = tokio::time::timeout(std::time::Duration::from_secs(240), run)
        .await
        .expect("the acceptance suite did not finish within 240 s")
        .expect("node must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "centrifuge-js acceptance tests failed"
    );
    assert!(stdout.contains("# fail 0"), "node reported failures");
    server.shutdown().await;
}
