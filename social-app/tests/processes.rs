//! The production shape: each service and the gateway as its own `social-app` process,
//! talking gRPC with the internal token, publishing through an external `hub-server` (its
//! config: `social-app/hub.json`), no `--dev`. A browser-like client goes live through the
//! hub; the chat saga spans processes (the counters process killed and restarted).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{call, event, ids, live, register};

const SESSION: &str = "test-session-secret-0123456789";
const HUB: &str = "test-hub-secret-0123456789abcdef";
const INTERNAL: &str = "test-internal-token-0123456789";
const API_KEY: &str = "test-api-key-0123456789";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `hub-server`, built beside this test by `cargo test --workspace`.
fn hub_server_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("hub-server");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p hub-server` (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

/// A child process killed on drop.
struct Proc {
    child: Child,
    name: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_port(port: u16, name: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{name} exited: {status}");
        }
        assert!(Instant::now() < deadline, "{name} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn hub(http: u16, grpc: u16) -> Proc {
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("hub.json");
    let mut child = Command::new(hub_server_bin())
        .args(["-c", config.to_str().unwrap()])
        .env("HUB_HTTP_SERVER_PORT", http.to_string())
        .env("HUB_GRPC_API_PORT", grpc.to_string())
        .env("HUB_GRPC_API_KEY", API_KEY)
        .env("HUB_CLIENT_TOKEN_HMAC_SECRET_KEY", HUB)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(grpc, "hub-server", &mut child);
    wait_port(http, "hub-server", &mut child);
    Proc {
        child,
        name: "hub".into(),
    }
}

struct Ports {
    hub_http: u16,
    hub_grpc: u16,
    users: u16,
    posts: u16,
    chats: u16,
    counters: u16,
    gateway: u16,
}

fn social(ports: &Ports, dir: &Path, args: &[&str], listen: u16) -> Proc {
    let addr = |p: u16| format!("http://127.0.0.1:{p}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_social-app"))
        .args(args)
        .args(["--grpc", &format!("127.0.0.1:{listen}")])
        .args(["--data-dir", dir.to_str().unwrap()])
        .args(["--users-addr", &addr(ports.users)])
        .args(["--posts-addr", &addr(ports.posts)])
        .args(["--chats-addr", &addr(ports.chats)])
        .args(["--counters-addr", &addr(ports.counters)])
        .args(["--hub-grpc", &addr(ports.hub_grpc)])
        .args([
            "--hub-ws-url",
            &format!("ws://127.0.0.1:{}/connection/websocket", ports.hub_http),
        ])
        .env("SOCIAL_SESSION_SECRET", SESSION)
        .env("SOCIAL_HUB_SECRET", HUB)
        .env("SOCIAL_INTERNAL_TOKEN", INTERNAL)
        .env("SOCIAL_HUB_API_KEY", API_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // The gateway serves HTTP only: wait for that.
    let port = if args[0] == "gateway" {
        ports.gateway
    } else {
        listen
    };
    wait_port(port, args.join(" ").as_str(), &mut child);
    Proc {
        child,
        name: args.join(" "),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_as_separate_processes_behind_an_external_hub() {
    let ports = Ports {
        hub_http: free_port(),
        hub_grpc: free_port(),
        users: free_port(),
        posts: free_port(),
        chats: free_port(),
        counters: free_port(),
        gateway: free_port(),
    };
    let dir = support::data_dir();
    let _hub = hub(ports.hub_http, ports.hub_grpc);
    let users_metrics = format!("127.0.0.1:{}", free_port());
    let _users = social(
        &ports,
        &dir,
        &["service", "users", "--metrics", &users_metrics],
        ports.users,
    );
    let _posts = social(&ports, &dir, &["service", "posts"], ports.posts);
    let chats_metrics = format!("127.0.0.1:{}", free_port());
    let _chats = social(
        &ports,
        &dir,
        &["service", "chats", "--metrics", &chats_metrics],
        ports.chats,
    );
    let mut counters = social(&ports, &dir, &["service", "counters"], ports.counters);
    let gw_http = format!("127.0.0.1:{}", ports.gateway);
    let _gw = social(&ports, &dir, &["gateway", "--http", &gw_http], free_port());
    let addr: std::net::SocketAddr = gw_http.parse().unwrap();

    // The services refuse calls without the internal token.
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", ports.users))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut raw = social_app::pb::users_client::UsersClient::new(channel);
    let err = raw
        .get_users(social_app::pb::GetUsersRequest { ids: vec![] })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    let anna = register(addr, "Anna", "Remote").await;
    let boris = register(addr, "Boris", "Remote").await;
    anna.befriend(&boris).await;

    // The users process serves its metrics on --metrics: the refused call and the good ones.
    let (st, _, text) =
        support::http(users_metrics.parse().unwrap(), "GET", "/metrics", &[], "").await;
    assert_eq!(st, 200);
    assert!(
        text.contains(r#"social_service_calls_total{service="users",result="unauthenticated"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"social_service_calls_total{service="users",result="ok"}"#),
        "{text}"
    );
    assert!(text.contains("process_resident_memory_bytes "), "{text}");
    // No hub node in a service process: no hub_* metrics.
    assert!(!text.contains("hub_connections"), "{text}");
    let (st, _, _) =
        support::http(users_metrics.parse().unwrap(), "GET", "/healthz", &[], "").await;
    assert_eq!(st, 200);
    let (_, rt) = boris.get("/api/realtime").await;
    assert_eq!(
        rt["url"],
        format!("ws://127.0.0.1:{}/connection/websocket", ports.hub_http).as_str()
    );
    let mut bws = live(&boris).await;

    // hub-server's user-limited channels: nobody else may subscribe.
    let mut ws = support::ws_connect(rt["url"].as_str().unwrap()).await;
    let (_, art) = anna.get("/api/realtime").await;
    support::command(
        &mut ws,
        json!({"id": 1, "connect": {"token": art["token"]}}),
    )
    .await;
    let r = support::command(
        &mut ws,
        json!({"id": 2, "subscribe": {"channel": rt["channel"]}}),
    )
    .await;
    assert_eq!(r["error"]["code"], 103, "{r}");

    // Live post through the external hub, feed across the posts and users processes.
    let (st, p) = anna.post("/api/posts", json!({"text": "over gRPC"})).await;
    assert_eq!(st, 201, "{p}");
    let id = p["post"]["id"].as_str().unwrap().to_string();
    assert_eq!(event(&mut bws, "post").await["post"]["id"], id.as_str());
    assert_eq!(boris.feed().await, vec![id]);

    // The saga across processes.
    let (_, d) = anna
        .post("/api/chats/dialog", json!({"user": boris.id}))
        .await;
    let chat = d["chat"]["id"].as_str().unwrap().to_string();
    let (st, _) = anna
        .post(
            &format!("/api/chats/{chat}/messages"),
            json!({"text": "one"}),
        )
        .await;
    assert_eq!(st, 201);
    let e = event(&mut bws, "message").await;
    assert_eq!(
        (e["message"]["text"].as_str(), e["unread"].as_i64()),
        (Some("one"), Some(1))
    );
    let name = counters.name.clone();
    drop(counters);
    let (st, v) = anna
        .post(
            &format!("/api/chats/{chat}/messages"),
            json!({"text": "lost?"}),
        )
        .await;
    assert_eq!(st, 503, "{name} down: {v}");
    counters = social(&ports, &dir, &["service", "counters"], ports.counters);
    let (st, _) = anna
        .post(
            &format!("/api/chats/{chat}/messages"),
            json!({"text": "two"}),
        )
        .await;
    assert_eq!(st, 201);
    // The chats process counted the compensated send and its calls to the dead counters.
    let (_, _, text) =
        support::http(chats_metrics.parse().unwrap(), "GET", "/metrics", &[], "").await;
    assert!(
        text.contains("social_chat_send_compensations_total 1\n"),
        "{text}"
    );
    assert!(
        text.contains(
            r#"social_rpc_calls_total{service="counters",method="Incr",code="Unavailable"}"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"social_service_calls_total{service="chats",result="ok"}"#),
        "{text}"
    );
    // The gateway serves its own on its HTTP port: the calls it made, the logins.
    let (_, _, text) = support::http(addr, "GET", "/metrics", &[], "").await;
    assert!(
        text.contains(
            r#"social_rpc_calls_total{service="chats",method="Send",code="Unavailable"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"social_http_requests_total{route="/api/chats/{id}/messages",method="POST",status="503"} 1"#),
        "{text}"
    );
    let (_, ms) = boris.get(&format!("/api/chats/{chat}/messages")).await;
    let texts: Vec<&str> = ms["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["one", "two"]);
    let (_, list) = boris.get("/api/chats").await;
    assert_eq!(list["chats"][0]["unread"], 2, "{list}");
    let (_, f) = boris.get("/api/friends").await;
    assert_eq!(ids(&f["friends"]), vec![anna.id.clone()]);
    // Production mode: the session cookie is Secure.
    let (_, head, _) = support::http(
        addr,
        "POST",
        "/api/login",
        &[("content-type", "application/json")],
        &json!({"email": "anna.remote@test.io", "password": "password123"}).to_string(),
    )
    .await;
    assert!(head.contains("secure"), "{head}");
    let _ = call(addr, None, "GET", "/healthz", Value::Null).await;
    drop(counters);
}
