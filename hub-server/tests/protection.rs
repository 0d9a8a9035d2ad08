//! Protection over real sockets: no client can hurt the others. Floods are refused (111)
//! and then cut (3013), slow readers are cut (3008) while fast ones get everything, and
//! every limit answers with its documented code.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use hub_core::broker::PublishOptions;
use hub_core::protocol::Publication;
use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

async fn expect_close(w: &mut Ws, code: u16) {
    let got = close_code(w).await;
    assert!(is_close(got, code), "expected close {code}, got {got:?}");
}

/// A raw upgrade request; returns the status line's code and the head.
async fn upgrade_status(addr: SocketAddr) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /connection/websocket HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head)
}

#[tokio::test]
async fn a_flood_is_refused_with_111_then_cut_with_3013_while_others_are_served() {
    let server = start(config(json!({"client": {
        "command_rate_limit": 10, "command_rate_burst": 10, "command_abuse_limit": 20
    }})))
    .await;
    let addr = server.addr;
    let mut by = connected(addr, "bystander").await;
    send(&mut by, r#"{"id":2,"subscribe":{"channel":"watch"}}"#).await;
    reply(&mut by, 2).await;

    let mut w = connected(addr, "flooder").await;
    let frame: Vec<String> = (2..200)
        .map(|id| format!(r#"{{"id":{id},"presence_stats":{{"channel":"watch"}}}}"#))
        .collect();
    send(&mut w, &frame.join("\n")).await;
    let (mut ok, mut limited) = (0, 0);
    let code = loop {
        match next(&mut w).await {
            Next::Json(v) => {
                for r in v {
                    if r["error"]["code"] == 111 {
                        assert_eq!(r["error"]["temporary"], true, "{r}");
                        limited += 1;
                    } else if r["id"].as_u64().is_some() {
                        ok += 1;
                    }
                }
            }
            Next::Closed(c) => break c,
        }
    };
    assert!(is_close(code, 3013), "flooder closed with {code:?}");
    assert!(
        (9..=11).contains(&ok),
        "about a burst of commands served: {ok}"
    );
    assert_eq!(limited, 19, "refusals before the cut");

    // The bystander is still served.
    api(
        addr,
        "publish",
        json!({"channel": "watch", "data": {"n": 1}}),
    )
    .await;
    loop {
        match next(&mut by).await {
            Next::Json(v) if v.iter().any(|r| r["push"]["pub"]["data"]["n"] == 1) => break,
            Next::Json(_) => {}
            Next::Closed(c) => panic!("bystander closed {c:?}"),
        }
    }
    server.shutdown().await;
}

/// A client whose socket reads nothing after subscribing.
async fn stalled_subscriber(addr: SocketAddr, channel: &str) -> Ws {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(addr).await.unwrap();
    let (mut w, _) =
        tokio_tungstenite::client_async(format!("ws://{addr}/connection/websocket"), stream)
            .await
            .unwrap();
    let t = token(json!({"sub": "slow"}));
    send(
        &mut w,
        &format!(r#"{{"id":1,"connect":{{"token":"{t}"}}}}"#),
    )
    .await;
    reply(&mut w, 1).await;
    send(
        &mut w,
        &format!(r#"{{"id":2,"subscribe":{{"channel":"{channel}"}}}}"#),
    )
    .await;
    reply(&mut w, 2).await;
    w
}

#[tokio::test]
async fn a_slow_reader_is_cut_with_3008_while_a_fast_one_gets_everything() {
    let server = start(config(json!({"client": {"queue_max_size": 262144}}))).await;
    let addr = server.addr;
    let _slow = stalled_subscriber(addr, "firehose").await;
    let mut fast = connected(addr, "fast").await;
    send(&mut fast, r#"{"id":2,"subscribe":{"channel":"firehose"}}"#).await;
    reply(&mut fast, 2).await;
    assert_eq!(server.node.num_clients(), 2);

    const N: usize = 4000;
    let reader = tokio::spawn(async move {
        let mut seen = Vec::with_capacity(N);
        while seen.len() < N {
            let m = tokio::time::timeout(Duration::from_secs(20), fast.next())
                .await
                .expect("fast reader starved")
                .expect("fast reader closed")
                .unwrap();
            if let Message::Text(t) = m {
                for line in t.split('\n') {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    if let Some(n) = v["push"]["pub"]["data"]["n"].as_u64() {
                        seen.push(n as usize);
                    }
                }
            }
        }
        (seen, fast)
    });
    let pad = "x".repeat(2000);
    for n in 0..N {
        let data = json!({"n": n, "pad": pad}).to_string();
        let p = Publication {
            data: data.into(),
            ..Default::default()
        };
        server
            .node
            .publish("firehose", p, &PublishOptions::default())
            .await
            .unwrap();
        if n % 20 == 19 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let (seen, _fast) = reader.await.unwrap();
    assert_eq!(
        seen,
        (0..N).collect::<Vec<_>>(),
        "fast reader got all, in order"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.node.num_clients() > 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.node.num_clients(), 1, "the slow reader was cut");
    let (_, metrics) = http(addr, "GET", "/metrics", &[], "").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("hub_disconnects_total{code=\"3008\"}")),
        "a 3008 disconnect was counted"
    );
    let discarded: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hub_messages_dropped_total{reason=\"slow_consumer\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(
        discarded > 0.0,
        "the cut reader's queue was counted as dropped"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_user_over_the_connection_limit_is_closed_with_3504() {
    let server = start(config(json!({"client": {"user_connection_limit": 2}}))).await;
    let _a = connected(server.addr, "alice").await;
    let _b = connected(server.addr, "alice").await;
    let _other = connected(server.addr, "bob").await;
    let mut c = ws(server.addr).await;
    let t = token(json!({"sub": "alice"}));
    send(
        &mut c,
        &format!(r#"{{"id":1,"connect":{{"token":"{t}"}}}}"#),
    )
    .await;
    expect_close(&mut c, 3504).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_connection_over_the_channel_limit_is_closed_with_3505() {
    let server = start(config(json!({"client": {"channel_limit": 2}}))).await;
    let mut w = connected(server.addr, "u").await;
    for (id, ch) in [(2, "a"), (3, "b")] {
        send(
            &mut w,
            &format!(r#"{{"id":{id},"subscribe":{{"channel":"{ch}"}}}}"#),
        )
        .await;
        assert!(reply(&mut w, id).await.get("subscribe").is_some());
    }
    send(&mut w, r#"{"id":4,"subscribe":{"channel":"c"}}"#).await;
    expect_close(&mut w, 3505).await;
    server.shutdown().await;
}

#[tokio::test]
async fn over_the_node_connection_limit_upgrades_get_503_and_existing_clients_go_on() {
    let server = start(config(json!({"client": {"connection_limit": 2}}))).await;
    let addr = server.addr;
    let mut a = connected(addr, "a").await;
    let _b = connected(addr, "b").await;
    let (code, head) = upgrade_status(addr).await;
    assert_eq!(code, 503, "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
    // The existing connection still works.
    send(&mut a, r#"{"id":2,"subscribe":{"channel":"x"}}"#).await;
    assert!(reply(&mut a, 2).await.get("subscribe").is_some());
    // A place frees up when a client leaves.
    drop(a);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.node.num_sockets() > 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _c = connected(addr, "c").await;
    server.shutdown().await;
}

#[tokio::test]
async fn too_many_new_connections_from_one_address_get_429() {
    let server = start(config(
        json!({"client": {"connection_rate_limit_per_ip": 3}}),
    ))
    .await;
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(upgrade_status(server.addr).await.0);
    }
    assert_eq!(&codes[..3], &[101, 101, 101], "{codes:?}");
    assert!(codes[3..].contains(&429), "{codes:?}");
    server.shutdown().await;
}
