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

/// The suite on the Redis engine: history, recovery, presence and join/leave go through a
/// real redis-server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn centrifuge_js_acceptance_suite_on_the_redis_engine() {
    let redis = support::redis::RedisServer::start();
    run_suite(
        serde_json::json!({"engine": {"type": "redis", "redis": {"address": redis.url()}}}),
        false,
    )
    .await;
}

/// Two nodes joined by Redis: `tests/js/cluster.test.mjs` subscribes on one and publishes
/// through the other, and moves a client between them with recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn centrifuge_js_across_two_nodes() {
    let redis = support::redis::RedisServer::start();
    let extra =
        || serde_json::json!({"engine": {"type": "redis", "redis": {"address": redis.url()}}});
    let a = support::start(support::config(extra())).await;
    let b = support::start(support::config(extra())).await;
    let env = [
        (
            "HUB_WS_URL_B",
            format!("ws://{}/connection/websocket", b.addr),
        ),
        ("HUB_API_URL_B", format!("http://{}", b.addr)),
    ];
    run_node_tests("cluster.test.mjs", a.addr, false, &env).await;
    a.shutdown().await;
    b.shutdown().await;
}

/// The Protobuf build of centrifuge-js (`centrifuge/build/protobuf`): the acceptance
/// sequence with byte payloads, JSON and Protobuf subscribers of one channel, binary data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn centrifuge_js_protobuf() {
    let server = support::start(support::config(serde_json::json!({}))).await;
    run_node_tests("protobuf.test.mjs", server.addr, false, &[]).await;
    server.shutdown().await;
}

async fn run_suite(extra: serde_json::Value, compression: bool) {
    let server = support::start(support::config(extra)).await;
    run_node_tests("acceptance.test.mjs", server.addr, compression, &[]).await;
    server.shutdown().await;
}

/// Runs one `node --test` file of `tests/js` against the server at `addr`.
async fn run_node_tests(
    file: &str,
    addr: std::net::SocketAddr,
    compression: bool,
    extra_env: &[(&str, String)],
) {
    let js = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/js");
    assert!(
        js.join("node_modules/centrifuge").exists(),
        "node_modules missing in {}: run `npm ci --prefix tests/js` (scripts/test.sh does)",
        js.display()
    );
    let run = tokio::process::Command::new("node")
        .arg("--test")
        .arg("--test-concurrency=1")
        .arg(file)
        .current_dir(&js)
        .env("HUB_WS_URL", format!("ws://{addr}/connection/websocket"))
        .env("HUB_API_URL", format!("http://{addr}"))
        .env("HUB_API_KEY", support::API_KEY)
        .env("HUB_SECRET", support::SECRET)
        .env("HUB_COMPRESSION", if compression { "1" } else { "0" })
        .envs(extra_env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    // A hung client must fail the suite, not stall CI.
    let out = tokio::time::timeout(std::time::Duration::from_secs(240), run)
        .await
        .expect("the node tests did not finish within 240 s")
        .expect("node must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(out.status.success(), "centrifuge-js tests in {file} failed");
    assert!(stdout.contains("# fail 0"), "node reported failures");
}
