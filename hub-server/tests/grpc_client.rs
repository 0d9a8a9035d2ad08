//! The `hub-client` crate against a real hub-server with the gRPC API on: a publish reaches a
//! WebSocket subscriber and history returns it, a wrong key is `Unauthenticated`, an unknown
//! namespace is API error 102, and the thin wrappers (broadcast, presence stats, unsubscribe,
//! disconnect) do what the server API does.

mod support;

use hub_client::{ClientError, HubClient};
use serde_json::json;
use support::{connected, push, subscribe};

const GRPC_KEY: &str = "grpc-client-test-key";

async fn start() -> support::TestServer {
    support::start(support::config(
        json!({"grpc_api": {"enabled": true, "key": GRPC_KEY}}),
    ))
    .await
}

fn addr(s: &support::TestServer) -> String {
    format!("http://{}", s.grpc_addr.expect("the gRPC API is enabled"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reaches_a_websocket_subscriber_and_history_returns_it() {
    let s = start().await;
    let mut ws = connected(s.addr, "alice").await;
    subscribe(&mut ws, 2, "news").await;
    let c = HubClient::connect(&addr(&s), GRPC_KEY).await.unwrap();
    let pos = c.publish("news", &json!({"text": "hi"})).await.unwrap();
    assert_eq!(pos.offset, 1);
    assert!(!pos.epoch.is_empty());
    let p = push(&mut ws, "news", "pub").await;
    assert_eq!(p["data"], json!({"text": "hi"}));

    let h = c.history("news", 10).await.unwrap();
    assert_eq!(h.position, pos);
    assert_eq!(h.publications.len(), 1);
    assert_eq!(h.publications[0].offset, 1);
    assert_eq!(h.publications[0].json().unwrap(), json!({"text": "hi"}));

    let stats = c.presence_stats("news").await.unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (1, 1));

    let all = c
        .broadcast(&["news", "nope:x"], &json!({"n": 2}))
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].as_ref().unwrap().offset, 2);
    assert!(
        matches!(&all[1], Err(ClientError::Api { code: 102, .. })),
        "{all:?}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_unauthenticated() {
    let s = start().await;
    let c = HubClient::connect(&addr(&s), "wrong").await.unwrap();
    let e = c.publish("news", &json!({})).await.unwrap_err();
    assert_eq!(e, ClientError::Unauthenticated);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_namespace_is_api_error_102() {
    let s = start().await;
    let c = HubClient::connect(&addr(&s), GRPC_KEY).await.unwrap();
    let e = c.publish("nope:x", &json!({})).await.unwrap_err();
    assert!(matches!(e, ClientError::Api { code: 102, .. }), "{e:?}");
    let e = c.history("nope:x", 10).await.unwrap_err();
    assert!(matches!(e, ClientError::Api { code: 102, .. }), "{e:?}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_and_disconnect_reach_the_user() {
    let s = start().await;
    let mut ws = connected(s.addr, "bob").await;
    subscribe(&mut ws, 2, "news").await;
    let c = HubClient::connect(&addr(&s), GRPC_KEY).await.unwrap();
    c.unsubscribe("bob", "news").await.unwrap();
    push(&mut ws, "news", "unsubscribe").await;
    c.disconnect_user("bob", 4000, "bye").await.unwrap();
    let code = support::close_code(&mut ws).await;
    assert!(support::is_close(code, 4000), "{code:?}");
    s.shutdown().await;
}
