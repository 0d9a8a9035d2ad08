//! The embedded hub over real sockets: the app's own rules decide, and its publications
//! arrive.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

async fn start() -> SocketAddr {
    let (_node, router) = example_embed::app().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    addr
}

/// Sends one frame and returns the JSON lines of the frames until `until` matches one.
async fn exchange(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    send: &str,
    until: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    if !send.is_empty() {
        ws.send(Message::Text(send.into())).await.unwrap();
    }
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("reply in time")
            .expect("open")
            .unwrap();
        if let Message::Text(t) = m {
            for line in t.split('\n') {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                if until(&v) {
                    return v;
                }
            }
        }
    }
}

#[tokio::test]
async fn the_app_decides_and_its_publications_arrive() {
    let addr = start().await;
    let url = format!("ws://{addr}/connection/websocket?user=ann");
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    let r = exchange(&mut ws, r#"{"id":1,"connect":{}}"#, |v| v["id"] == 1).await;
    assert!(r["connect"]["client"].is_string(), "{r}");
    let r = exchange(
        &mut ws,
        r#"{"id":2,"subscribe":{"channel":"user:bob"}}"#,
        |v| v["id"] == 2,
    )
    .await;
    assert_eq!(r["error"]["code"], 103, "someone else's channel is refused");
    let r = exchange(
        &mut ws,
        r#"{"id":3,"rpc":{"method":"echo","data":{"x":1}}}"#,
        |v| v["id"] == 3,
    )
    .await;
    assert_eq!(r["rpc"]["data"], serde_json::json!({"x": 1}));
    let r = exchange(
        &mut ws,
        r#"{"id":4,"subscribe":{"channel":"clock"}}"#,
        |v| v["id"] == 4,
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
    let tick = exchange(&mut ws, "", |v| v["push"]["channel"] == "clock").await;
    assert!(tick["push"]["pub"]["data"]["unix"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn a_connection_without_a_user_is_refused() {
    let addr = start().await;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let url = format!("ws://{addr}/connection/websocket");
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    ws.send(Message::Text(r#"{"id":1,"connect":{}}"#.into()))
        .await
        .unwrap();
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(f))) => break f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            _ => break None,
        }
    };
    assert_eq!(code, Some(3500));
}
