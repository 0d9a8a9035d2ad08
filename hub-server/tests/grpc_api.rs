//! The gRPC server API (PROTOCOL.md §5.3) against a real hub-server on 127.0.0.1, through a
//! tonic client generated from our `proto/api.proto`: auth, envelopes, the transport error
//! mode, and results that match the HTTP API's for the same calls. WebSocket clients are real
//! connections, so pushes and closes are what a client would see.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use hub_server::api::grpc::proto;
use hub_server::api::grpc::proto::centrifugo_api_client::CentrifugoApiClient;
use serde_json::{json, Value};
use support::{api, connected, push, subscribe};
use tonic::transport::Channel;
use tonic::{Code, Request};

const GRPC_KEY: &str = "grpc-test-key";

type Client = CentrifugoApiClient<Channel>;

/// A server with the gRPC API on (key [`GRPC_KEY`]), merged with `extra`.
async fn start_with(extra: Value) -> support::TestServer {
    let mut base = json!({"grpc_api": {"enabled": true, "key": GRPC_KEY}});
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    support::start(support::config(base)).await
}

async fn start() -> support::TestServer {
    start_with(json!({})).await
}

async fn client(addr: Option<SocketAddr>) -> Client {
    let addr = addr.expect("the gRPC API is enabled");
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to the gRPC API");
    CentrifugoApiClient::new(channel)
}

/// A request with metadata `authorization: apikey <key>`.
fn with_key<T>(msg: T, key: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("apikey {key}").parse().unwrap());
    r
}

/// A request with the test key.
fn req<T>(msg: T) -> Request<T> {
    with_key(msg, GRPC_KEY)
}

/// A request with the test key and `x-centrifugo-error-mode: transport`.
fn req_transport<T>(msg: T) -> Request<T> {
    let mut r = req(msg);
    r.metadata_mut()
        .insert("x-centrifugo-error-mode", "transport".parse().unwrap());
    r
}

/// Calls an HTTP API method that must succeed; returns its `result`.
async fn http_ok(addr: SocketAddr, method: &str, body: Value) -> Value {
    let (st, v) = api(addr, method, body).await;
    assert_eq!(st, 200, "{method}: {v}");
    assert!(v.get("error").is_none(), "{method} failed: {v}");
    v["result"].clone()
}

fn json_of(b: &[u8]) -> Value {
    serde_json::from_slice(b).expect("payload bytes are JSON")
}

fn publish(channel: &str, data: &str) -> proto::PublishRequest {
    proto::PublishRequest {
        channel: channel.into(),
        data: data.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------
// auth
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_key_is_unauthenticated() {
    let s = start().await;
    let mut c = client(s.grpc_addr).await;
    let info = || proto::InfoRequest {};
    let missing = c.info(Request::new(info())).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated, "{missing:?}");
    let wrong = c.info(with_key(info(), "nope")).await.unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong:?}");
    let mut bad_scheme = Request::new(info());
    bad_scheme.metadata_mut().insert(
        "authorization",
        format!("Bearer {GRPC_KEY}").parse().unwrap(),
    );
    let e = c.info(bad_scheme).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    // The scheme is case-insensitive, as over HTTP.
    let mut upper = Request::new(info());
    upper.metadata_mut().insert(
        "authorization",
        format!("APIKEY {GRPC_KEY}").parse().unwrap(),
    );
    c.info(upper).await.expect("APIKEY scheme authorizes");
    // The HTTP API's key is not the gRPC API's key.
    let e = c
        .info(with_key(info(), support::API_KEY))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_key_refuses_every_call_unless_insecure() {
    let s = start_with(json!({"grpc_api": {"enabled": true, "key": ""}})).await;
    let mut c = client(s.grpc_addr).await;
    let e = c
        .info(with_key(proto::InfoRequest {}, ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = c
        .info(Request::new(proto::InfoRequest {}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    s.shutdown().await;

    let s = start_with(json!({"grpc_api": {"enabled": true, "key": "", "insecure": true}})).await;
    let mut c = client(s.grpc_addr).await;
    let r = c.info(Request::new(proto::InfoRequest {})).await.unwrap();
    assert_eq!(r.into_inner().result.unwrap().nodes.len(), 1);
    s.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// publish, broadcast, history
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reaches_a_websocket_subscriber_and_history_matches_http() {
    let s = start().await;
    let mut c = client(s.grpc_addr).await;
    let mut w = connected(s.addr, "alice").await;
    subscribe(&mut w, 2, "news").await;

    let mut p = publish("news", r#"{"text":"hi"}"#);
    p.tags.insert("k".into(), "v".into());
    let r = c.publish(req(p)).await.unwrap().into_inner();
    assert!(r.error.is_none(), "{r:?}");
    let first = r.result.expect("result");
    assert_eq!(first.offset, 1);
    assert!(!first.epoch.is_empty());
    let pushed = push(&mut w, "news", "pub").await;
    assert_eq!(pushed["data"], json!({"text": "hi"}), "{pushed}");
    assert_eq!(pushed["offset"], 1, "{pushed}");
    assert_eq!(pushed["tags"], json!({"k": "v"}), "{pushed}");

    // The same call over HTTP continues the same stream.
    let h = http_ok(
        s.addr,
        "publish",
        json!({"channel": "news", "data": {"text": "again"}}),
    )
    .await;
    assert_eq!(h["offset"], 2, "{h}");
    assert_eq!(h["epoch"], first.epoch.as_str(), "{h}");

    let g = c
        .history(req(proto::HistoryRequest {
            channel: "news".into(),
            limit: -1,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(g.error.is_none(), "{g:?}");
    let g = g.result.expect("result");
    let h = http_ok(s.addr, "history", json!({"channel": "news", "limit": -1})).await;
    assert_eq!(h["epoch"], g.epoch.as_str(), "{h}");
    assert_eq!(h["offset"], g.offset, "{h}");
    let hp = h["publications"].as_array().expect("publications");
    assert_eq!(hp.len(), 2, "{h}");
    assert_eq!(g.publications.len(), 2, "{g:?}");
    for (gp, hp) in g.publications.iter().zip(hp) {
        assert_eq!(json_of(&gp.data), hp["data"], "{h}");
        assert_eq!(gp.offset, hp["offset"], "{h}");
    }
    assert_eq!(
        g.publications[0].tags.get("k").map(String::as_str),
        Some("v")
    );

    // `since` and `reverse` pass through.
    let since = c
        .history(req(proto::HistoryRequest {
            channel: "news".into(),
            limit: -1,
            since: Some(proto::StreamPosition {
                offset: 1,
                epoch: g.epoch.clone(),
            }),
            reverse: false,
        }))
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(since.publications.len(), 1);
    assert_eq!(
        json_of(&since.publications[0].data),
        json!({"text": "again"})
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_returns_one_response_per_channel_like_http() {
    let s = start().await;
    let mut c = client(s.grpc_addr).await;
    let channels = ["news", "chat:a", "nope:x", ""];
    let r = c
        .broadcast(req(proto::BroadcastRequest {
            channels: channels.iter().map(|c| c.to_string()).collect(),
            data: br#"{"b":1}"#.to_vec().into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(r.error.is_none(), "{r:?}");
    let g = r.result.expect("result").responses;
    let h = http_ok(
        s.addr,
        "broadcast",
        json!({"channels": channels, "data": {"b": 1}}),
    )
    .await;
    let h = h["responses"].as_array().expect("responses").clone();
    assert_eq!(g.len(), 4);
    assert_eq!(h.len(), 4);
    // gRPC went first: HTTP's offsets are one higher on the history channel.
    assert_eq!(g[0].result.as_ref().unwrap().offset, 1);
    assert_eq!(h[0]["result"]["offset"], 2);
    assert_eq!(
        g[1].result.as_ref().unwrap().offset,
        0,
        "no history in chat:"
    );
    assert_eq!(h[1], json!({"result": {}}));
    for i in [2, 3] {
        let e = g[i].error.as_ref().expect("error");
        assert_eq!(e.code, h[i]["error"]["code"], "{:?} vs {}", g[i], h[i]);
        assert_eq!(
            e.message, h[i]["error"]["message"],
            "{:?} vs {}",
            g[i], h[i]
        );
        assert!(g[i].result.is_none());
    }
    assert_eq!(g[2].error.as_ref().unwrap().code, 102);
    assert_eq!(g[3].error.as_ref().unwrap().code, 107);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publication_data_that_is_not_json_is_107() {
    let s = start().await;
    let mut c = client(s.grpc_addr).await;
    let r = c
        .publish(req(publish("news", "\u{1}binary, not JSON")))
        .await
        .unwrap()
        .into_inner();
    let e = r.error.expect("error");
    assert_eq!(e.code, 107, "{e:?}");
    assert!(e.message.contains("not valid JSON"), "{e:?}");
    assert!(r.result.is_none());
    // Transport mode: INVALID_ARGUMENT with the same message.
    let st = c
        .publish(req_transport(publish("news", "{broken")))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
    assert!(st.message().contains("not valid JSON"), "{st:?}");
    // No data at all: 107 like HTTP.
    let r = c
        .publish(req(publish("news", "")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.error.expect("error").code, 107);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_namespace_is_102_in_the_response_and_not_found_in_transport_mode() {
    let s = start().await;
    let mut c = client(s.grpc_addr).await;
    let r = c
        .publish(req(publish("nope:x", "{}")))
        .await
        .unwrap()
        .into_inner();
    let e = r.error.expect("error in the response, status OK");
    let (_, h) = api(s.addr, "publish", json!({"channel": "nope:x", "data": {}})).await;
    assert_eq!(e.code, 102);
    assert_eq!(e.code, h["error"]["code"], "{h}");
    assert_eq!(e.message, h["error"]["message"], "{h}");
    let st = c
        .publish(req_transport(publish("nope:x", "{}")))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::NotFound, "{st:?}");
    assert_eq!(st.message(), e.message);
    // 108 (not available: the chat namespace keeps no history) → INVALID_ARGUMENT.
    let st = c
        .history(req_transport(proto::HistoryRequest {
            channel: "chat:a".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
    s.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// presence, channels, info
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_presence_stats_match_http() {
    let s = start().await;
    let mut c = client(s.grpc_addr).await;
    let mut w = connected(s.addr, "alice").await;
    subscribe(&mut w, 2, "news").await;
    let mut stats = None;
    for _ in 0..100 {
        let r = c
            .presence_stats(req(proto::PresenceStatsRequest {
                channel: "news".into(),
            }))
            .await
            .unwrap()
            .into_inner()
            .result
            .expect("result");
        if r.num_clients == 1 {
            stats = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = stats.expect("presence reached one client");
    assert_eq!(stats.num_users, 1);
    let h = http_ok(s.addr, "presence_stats", json!({"channel": "news"})).await;
    assert_eq!(h, json!({"num_clients": 1, "num_users": 1}));

    let g = c
        .presence(req(proto::PresenceRequest {
            channel: "news".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .result
        .expect("result")
        .presence;
    let h = http_ok(s.addr, "presence", json!({"channel": "news"})).await;
    let h = h["presence"].as_object().expect("presence map").clone();
    assert_eq!(g.len(), 1);
    assert_eq!(h.len(), 1);
    let (id, info) = g.iter().next().unwrap();
    assert_eq!(h[id]["user"], info.user.as_str());
    assert_eq!(h[id]["client"], info.client.as_str());
    assert_eq!(info.user, "alice");
    assert_eq!(&info.client, id);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_and_info_match_http() {
    let s = start().await;
    let mut c = client(s.grpc_addr).await;
    let mut w = connected(s.addr, "alice").await;
    subscribe(&mut w, 2, "news").await;
    let g = c
        .channels(req(proto::ChannelsRequest {
            pattern: "n*".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .result
        .expect("result")
        .channels;
    let h = http_ok(s.addr, "channels", json!({"pattern": "n*"})).await;
    assert_eq!(g.get("news").map(|i| i.num_clients), Some(1), "{g:?}");
    assert_eq!(h["channels"]["news"]["num_clients"], 1, "{h}");
    assert_eq!(g.len(), h["channels"].as_object().unwrap().len());

    let g = c
        .info(req(proto::InfoRequest {}))
        .await
        .unwrap()
        .into_inner()
        .result
        .expect("result");
    let h = http_ok(s.addr, "info", json!({})).await;
    let hn = &h["nodes"][0];
    assert_eq!(g.nodes.len(), 1);
    let n = &g.nodes[0];
    assert_eq!(hn["uid"], n.uid.as_str());
    assert_eq!(hn["name"], n.name.as_str());
    assert_eq!(hn["version"], n.version.as_str());
    assert_eq!(hn["num_clients"], n.num_clients);
    assert_eq!(hn["num_users"], n.num_users);
    assert_eq!(hn["num_channels"], n.num_channels);
    assert_eq!(n.num_clients, 1);
    s.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// disconnect, subscribe, unsubscribe (server-side)
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_closes_the_users_socket_with_the_given_code() {
    let s = start().await;
    let mut c = client(s.grpc_addr).await;
    let mut a = connected(s.addr, "alice").await;
    let r = c
        .disconnect(req(proto::DisconnectRequest {
            user: "alice".into(),
            disconnect: Some(proto::Disconnect {
                code: 4123,
                reason: "go away".into(),
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(r.error.is_none(), "{r:?}");
    assert!(r.result.is_some());
    let code = support::close_code(&mut a).await;
    assert!(support::is_close(code, 4123), "close code {code:?}");

    // Without a code: 3503 force disconnect, as over HTTP.
    let mut b = connected(s.addr, "bob").await;
    c.disconnect(req(proto::DisconnectRequest {
        user: "bob".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    let code = support::close_code(&mut b).await;
    assert!(support::is_close(code, 3503), "close code {code:?}");

    // A code that does not fit a close code is a bad request, not a panic.
    let r = c
        .disconnect(req(proto::DisconnectRequest {
            user: "bob".into(),
            disconnect: Some(proto::Disconnect {
                code: 70000,
                reason: String::new(),
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.error.expect("error").code, 107);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_subscribe_and_unsubscribe_push_to_the_user() {
    let s = start().await;
    let mut c = client(s.grpc_addr).await;
    let mut a = connected(s.addr, "alice").await;
    let r = c
        .subscribe(req(proto::SubscribeRequest {
            channel: "news".into(),
            user: "alice".into(),
            data: br#"{"welcome":true}"#.to_vec().into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(r.error.is_none(), "{r:?}");
    let p = push(&mut a, "news", "subscribe").await;
    assert_eq!(p["data"], json!({"welcome": true}), "{p}");

    let r = c
        .unsubscribe(req(proto::UnsubscribeRequest {
            channel: "news".into(),
            user: "alice".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(r.error.is_none(), "{r:?}");
    let p = push(&mut a, "news", "unsubscribe").await;
    assert_eq!(p["code"], 2000, "{p}");

    // Info that is not JSON is refused before anything happens.
    let r = c
        .subscribe(req(proto::SubscribeRequest {
            channel: "news".into(),
            user: "alice".into(),
            info: b"\xff".to_vec().into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.error.expect("error").code, 107);
    s.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// batch, refresh, history_remove, unimplemented
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_runs_each_command_and_reports_errors_per_command() {
    let s = start().await;
    let mut c = client(s.grpc_addr).await;
    for parallel in [false, true] {
        let commands = vec![
            proto::Command {
                publish: Some(publish("news", r#"{"n":1}"#)),
                ..Default::default()
            },
            proto::Command {
                publish: Some(publish("nope:x", "{}")),
                ..Default::default()
            },
            proto::Command {
                presence_stats: Some(proto::PresenceStatsRequest {
                    channel: "news".into(),
                }),
                ..Default::default()
            },
            proto::Command::default(),
            proto::Command {
                get_user_status: Some(proto::GetUserStatusRequest::default()),
                ..Default::default()
            },
            proto::Command {
                info: Some(proto::InfoRequest {}),
                channels: Some(proto::ChannelsRequest::default()),
                ..Default::default()
            },
        ];
        let r = c
            .batch(req(proto::BatchRequest { commands, parallel }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.replies.len(), 6, "{r:?}");
        let p = r.replies[0].publish.as_ref().expect("publish reply");
        assert!(p.offset >= 1);
        assert!(r.replies[0].error.is_none());
        assert_eq!(r.replies[1].error.as_ref().unwrap().code, 102);
        assert!(r.replies[2].presence_stats.is_some());
        assert_eq!(r.replies[3].error.as_ref().unwrap().code, 104);
        assert_eq!(r.replies[4].error.as_ref().unwrap().code, 104);
        assert_eq!(r.replies[5].error.as_ref().unwrap().code, 107);
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_and_history_remove_answer_empty_results() {
    let s = start().await;
    let mut c = client(s.grpc_addr).await;
    c.publish(req(publish("news", "{}"))).await.unwrap();
    let r = c
        .history_remove(req(proto::HistoryRemoveRequest {
            channel: "news".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(r.error.is_none() && r.result.is_some(), "{r:?}");
    let h = http_ok(s.addr, "history", json!({"channel": "news", "limit": -1})).await;
    assert_eq!(h["publications"], json!([]), "{h}");

    let r = c
        .refresh(req(proto::RefreshRequest {
            user: "alice".into(),
            expire_at: 4_000_000_000,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(r.error.is_none() && r.result.is_some(), "{r:?}");
    let r = c
        .refresh(req(proto::RefreshRequest {
            user: "alice".into(),
            expire_at: -1,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.error.expect("negative expire_at").code, 107);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpcs_we_do_not_serve_answer_unimplemented() {
    let s = start().await;
    let mut c = client(s.grpc_addr).await;
    let e = c
        .get_user_status(req(proto::GetUserStatusRequest {
            users: vec!["alice".into()],
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
    let e = c.rpc(req(proto::RpcRequest::default())).await.unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
    // The key check still comes first.
    let e = c
        .connections(Request::new(proto::ConnectionsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    s.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// serving
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_port_is_served_only_when_enabled_and_stops_with_the_server() {
    let off = support::start(support::config(json!({}))).await;
    assert!(off.grpc_addr.is_none());
    off.shutdown().await;

    let s = start().await;
    let addr = s.grpc_addr.unwrap();
    let mut c = client(Some(addr)).await;
    c.info(req(proto::InfoRequest {})).await.unwrap();
    drop(c);
    s.shutdown().await;
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "gRPC port still open after shutdown");
}
