//! The client protocol over real sockets: batching and ordering, and bad input. Each bad
//! input gets its documented code (PROTOCOL.md §2.3), nothing panics, and a bystander
//! client on the same node keeps being served.

mod support;

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use support::*;
use tokio_tungstenite::tungstenite::Message;

/// A client subscribed to `channel`, to check that the node still serves others.
async fn bystander(addr: std::net::SocketAddr, channel: &str) -> Ws {
    let mut w = connected(addr, "bystander").await;
    send(
        &mut w,
        &format!(r#"{{"id":2,"subscribe":{{"channel":"{channel}"}}}}"#),
    )
    .await;
    let r = reply(&mut w, 2).await;
    assert!(r.get("error").is_none(), "bystander subscribe failed: {r}");
    w
}

/// Publishes through the API and checks the bystander receives it.
async fn still_served(addr: std::net::SocketAddr, w: &mut Ws, channel: &str, n: u64) {
    let (st, body) = api(
        addr,
        "publish",
        json!({"channel": channel, "data": {"n": n}}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    loop {
        match next(w).await {
            Next::Json(v) => {
                if v.iter().any(|r| r["push"]["pub"]["data"]["n"] == n) {
                    return;
                }
            }
            Next::Closed(c) => panic!("bystander was closed ({c:?})"),
        }
    }
}

async fn expect_close(w: &mut Ws, code: u16) {
    let got = close_code(w).await;
    assert!(is_close(got, code), "expected close {code}, got {got:?}");
}

#[tokio::test]
async fn bad_input_gets_its_code_and_other_clients_are_unaffected() {
    let server = start(config(json!({}))).await;
    let addr = server.addr;
    let mut by = bystander(addr, "watch").await;

    // Malformed JSON → 3501.
    let mut w = connected(addr, "u1").await;
    send(&mut w, "{not json").await;
    expect_close(&mut w, 3501).await;
    still_served(addr, &mut by, "watch", 1).await;

    // A command with an id but no request we know → 3501.
    let mut w = connected(addr, "u2").await;
    send(&mut w, r#"{"id":2,"frobnicate":{}}"#).await;
    expect_close(&mut w, 3501).await;

    // A command before connect → 3501.
    let mut w = ws(addr).await;
    send(&mut w, r#"{"id":1,"subscribe":{"channel":"watch"}}"#).await;
    expect_close(&mut w, 3501).await;

    // An empty channel → 3501.
    let mut w = connected(addr, "u3").await;
    send(&mut w, r#"{"id":2,"subscribe":{"channel":""}}"#).await;
    expect_close(&mut w, 3501).await;

    // A second connect → 3501.
    let mut w = connected(addr, "u4").await;
    send(&mut w, r#"{"id":2,"connect":{}}"#).await;
    expect_close(&mut w, 3501).await;

    // A command without id that is not `send` → 3501.
    let mut w = connected(addr, "u5").await;
    send(&mut w, r#"{"subscribe":{"channel":"watch"}}"#).await;
    expect_close(&mut w, 3501).await;

    // A JSON value that is not an object → 3501.
    let mut w = connected(addr, "u6").await;
    send(&mut w, "[1,2,3]").await;
    expect_close(&mut w, 3501).await;

    // A frame over the 64 KiB message limit → 1009.
    let mut w = connected(addr, "u7").await;
    let big = format!(
        r#"{{"id":2,"publish":{{"channel":"watch","data":"{}"}}}}"#,
        "x".repeat(70_000)
    );
    let _ = w.send(Message::Text(big.into())).await;
    expect_close(&mut w, 1009).await;

    // A binary frame to a JSON client → 3506.
    let mut w = connected(addr, "u8").await;
    w.send(Message::Binary(vec![0x00, 0x01, 0x02].into()))
        .await
        .unwrap();
    expect_close(&mut w, 3506).await;

    // Wrong types in known fields → 3501.
    let mut w = connected(addr, "u9").await;
    send(&mut w, r#"{"id":2,"subscribe":{"channel":42}}"#).await;
    expect_close(&mut w, 3501).await;

    // Invalid token → 3500.
    let mut w = ws(addr).await;
    send(&mut w, r#"{"id":1,"connect":{"token":"a.b.c"}}"#).await;
    expect_close(&mut w, 3500).await;

    // No token and no anonymous access → 3501.
    let mut w = ws(addr).await;
    send(&mut w, r#"{"id":1,"connect":{}}"#).await;
    expect_close(&mut w, 3501).await;

    still_served(addr, &mut by, "watch", 2).await;
    let info = api(addr, "info", json!({})).await.1;
    assert_eq!(info["result"]["nodes"][0]["num_clients"], 1, "{info}");
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_fields_and_nulls_are_ignored() {
    let server = start(config(json!({}))).await;
    let mut w = ws(server.addr).await;
    let t = token(json!({"sub": "u"}));
    send(
        &mut w,
        &format!(
            r#"{{"id":1,"connect":{{"token":"{t}","name":"js","future_field":{{"a":[1]}},"data":null}},"extra":true}}"#
        ),
    )
    .await;
    let r = reply(&mut w, 1).await;
    assert!(r["connect"]["client"].is_string(), "{r}");
    send(
        &mut w,
        r#"{"id":2,"subscribe":{"channel":"news","flag":1,"tf":{"op":"eq"},"delta":"fossil","type":null}}"#,
    )
    .await;
    let r = reply(&mut w, 2).await;
    assert!(r.get("error").is_none(), "{r}");
    assert!(
        r["subscribe"]["id"].is_null(),
        "never sends channel compaction ids"
    );
    assert!(r["subscribe"]["delta"].is_null(), "never negotiates delta");
    server.shutdown().await;
}

#[tokio::test]
async fn commands_of_one_frame_are_handled_in_order() {
    let server = start(config(json!({}))).await;
    let mut w = ws(server.addr).await;
    let t = token(json!({"sub": "u"}));
    send(
        &mut w,
        &format!(
            "{{\"id\":1,\"connect\":{{\"token\":\"{t}\",\"name\":\"js\"}}}}\n{{\"id\":2,\"subscribe\":{{\"channel\":\"a\",\"flag\":1}}}}\n{{\"id\":3,\"subscribe\":{{\"channel\":\"b\"}}}}\n"
        ),
    )
    .await;
    let mut ids = Vec::new();
    while ids.len() < 3 {
        match next(&mut w).await {
            Next::Json(v) => ids.extend(v.iter().filter_map(|r| r["id"].as_u64())),
            Next::Closed(c) => panic!("closed {c:?}"),
        }
    }
    assert_eq!(ids, vec![1, 2, 3]);
    server.shutdown().await;
}

#[tokio::test]
async fn command_replies_and_errors_follow_the_protocol() {
    let server = start(config(json!({}))).await;
    let mut w = connected(server.addr, "u").await;
    // Unsubscribe from a channel never subscribed is still {}.
    send(&mut w, r#"{"id":2,"unsubscribe":{"channel":"never"}}"#).await;
    assert_eq!(reply(&mut w, 2).await, json!({"id":2,"unsubscribe":{}}));
    // Unknown namespace → 102.
    send(&mut w, r#"{"id":3,"subscribe":{"channel":"nope:x"}}"#).await;
    assert_eq!(reply(&mut w, 3).await["error"]["code"], 102);
    // Subscribing twice → 105.
    send(&mut w, r#"{"id":4,"subscribe":{"channel":"news"}}"#).await;
    assert!(reply(&mut w, 4).await.get("subscribe").is_some());
    send(&mut w, r#"{"id":5,"subscribe":{"channel":"news"}}"#).await;
    assert_eq!(reply(&mut w, 5).await["error"]["code"], 105);
    // The v2 ping command is not available → 108.
    send(&mut w, r#"{"id":6,"ping":{}}"#).await;
    assert_eq!(reply(&mut w, 6).await["error"]["code"], 108);
    // Client publish where not allowed → 103.
    send(
        &mut w,
        r#"{"id":7,"publish":{"channel":"news","data":{"a":1}}}"#,
    )
    .await;
    assert_eq!(reply(&mut w, 7).await["error"]["code"], 103);
    // RPC without a handler → 104.
    send(&mut w, r#"{"id":8,"rpc":{"method":"m","data":{}}}"#).await;
    assert_eq!(reply(&mut w, 8).await["error"]["code"], 104);
    // History with since.offset 0 in reverse → 107.
    send(
        &mut w,
        r#"{"id":9,"history":{"channel":"news","limit":1,"reverse":true,"since":{"offset":0,"epoch":""}}}"#,
    )
    .await;
    assert_eq!(reply(&mut w, 9).await["error"]["code"], 107);
    // History top: always publications, epoch and offset.
    send(&mut w, r#"{"id":10,"history":{"channel":"news"}}"#).await;
    let h = reply(&mut w, 10).await;
    assert_eq!(h["history"]["publications"], json!([]), "{h}");
    assert!(h["history"]["epoch"].is_string(), "{h}");
    assert_eq!(h["history"]["offset"], 0, "{h}");
    // Presence stats always carry both counts.
    send(&mut w, r#"{"id":11,"presence_stats":{"channel":"news"}}"#).await;
    assert_eq!(
        reply(&mut w, 11).await,
        json!({"id":11,"presence_stats":{"num_clients":1,"num_users":1}})
    );
    // History off in the namespace → 108.
    send(&mut w, r#"{"id":12,"history":{"channel":"chat:x"}}"#).await;
    assert_eq!(reply(&mut w, 12).await["error"]["code"], 108);
    server.shutdown().await;
}

#[tokio::test]
async fn join_and_leave_are_pushed_in_namespaces_that_want_them() {
    let server = start(config(json!({}))).await;
    let mut a = connected(server.addr, "alice").await;
    send(&mut a, r#"{"id":2,"subscribe":{"channel":"chat:r"}}"#).await;
    reply(&mut a, 2).await;
    let mut b = connected(server.addr, "bob").await;
    send(&mut b, r#"{"id":2,"subscribe":{"channel":"chat:r"}}"#).await;
    reply(&mut b, 2).await;
    let join = loop {
        if let Next::Json(v) = next(&mut a).await {
            if let Some(p) = v.into_iter().find(|r| r["push"]["join"].is_object()) {
                break p;
            }
        }
    };
    assert_eq!(join["push"]["channel"], "chat:r");
    assert_eq!(join["push"]["join"]["info"]["user"], "bob");
    drop(b);
    let leave = loop {
        if let Next::Json(v) = next(&mut a).await {
            if let Some(p) = v.into_iter().find(|r| r["push"]["leave"].is_object()) {
                break p;
            }
        }
    };
    assert_eq!(leave["push"]["leave"]["info"]["user"], "bob");
    server.shutdown().await;
}

#[tokio::test]
async fn a_socket_that_never_connects_is_closed_as_stale() {
    let server = start(config(json!({"client": {"stale_close_delay": "300ms"}}))).await;
    let mut w = ws(server.addr).await;
    expect_close(&mut w, 3502).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_does_not_answer_pings_is_closed_with_no_pong() {
    let server = start(config(json!({}))).await;
    let mut w = connected(server.addr, "silent").await;
    // The test config pings every 1 s with a 800 ms pong timeout; this client never answers.
    let got = tokio::time::timeout(Duration::from_secs(8), close_code(&mut w))
        .await
        .expect("closed in time");
    assert!(is_close(got, 3012), "expected 3012, got {got:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn draining_closes_clients_with_shutdown() {
    let server = start(config(json!({}))).await;
    let mut w = connected(server.addr, "u").await;
    let stop = tokio::spawn(server.shutdown());
    expect_close(&mut w, 3001).await;
    stop.await.unwrap();
}

#[tokio::test]
async fn websocket_ping_frames_are_answered_with_pongs() {
    use futures_util::StreamExt;
    let server = start(config(json!({}))).await;
    let mut w = connected(server.addr, "u").await;
    w.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let pong = loop {
        let m = tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .expect("pong in time")
            .expect("open")
            .unwrap();
        if let Message::Pong(p) = m {
            break p;
        }
    };
    assert_eq!(&pong[..], b"are you there");
    server.shutdown().await;
}

#[tokio::test]
async fn fragmented_client_messages_are_reassembled() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
    let server = start(config(json!({}))).await;
    let mut w = connected(server.addr, "u").await;
    let text = r#"{"id":2,"subscribe":{"channel":"news"}}"#;
    let (a, b) = text.split_at(10);
    let first = Frame::from_payload(
        FrameHeader {
            is_final: false,
            opcode: OpCode::Data(Data::Text),
            ..FrameHeader::default()
        },
        a.as_bytes().to_vec().into(),
    );
    let last = Frame::from_payload(
        FrameHeader {
            is_final: true,
            opcode: OpCode::Data(Data::Continue),
            ..FrameHeader::default()
        },
        b.as_bytes().to_vec().into(),
    );
    w.send(Message::Frame(first)).await.unwrap();
    w.send(Message::Frame(last)).await.unwrap();
    assert!(reply(&mut w, 2).await.get("subscribe").is_some());
    server.shutdown().await;
}
