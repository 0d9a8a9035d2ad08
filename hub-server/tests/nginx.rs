//! nginx (Debian's `/usr/sbin/nginx`) running `nginx/hub.conf` in front of two hub-server
//! processes joined by Redis, with the real centrifuge npm client (`tests/js/nginx.test.mjs`)
//! connecting through it. The client's node is killed -9 mid-test: nginx must send the
//! reconnect to the other node, which recovers the missed publications from Redis.
//!
//! The JS test and this file take turns through files in a temporary directory: at each step
//! the JS side writes `<step>` and waits for `<step>.ok`, which this side writes once it has
//! acted.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::process::{free_port, wait_listening, NodeProcess, TempDir};
use support::redis::RedisServer;

/// Where Debian's package puts nginx; `scripts/test.sh` installs it.
const NGINX: &str = "/usr/sbin/nginx";

/// The production config, `nginx/hub.conf`, made runnable on loopback: every upstream's
/// servers become `nodes` (keeping the first server's parameters), each `listen` port a port
/// from `ports` on 127.0.0.1 (IPv6 listens dropped), TLS lines dropped (the test speaks plain
/// HTTP) and logs go to `logs`. Every other directive is kept as written.
fn runnable_config(
    hub_conf: &str,
    nodes: &[SocketAddr],
    ports: &mut impl FnMut(u16) -> u16,
    logs: &Path,
) -> String {
    let mut out = String::new();
    let mut in_server_list = false;
    for line in hub_conf.lines() {
        let t = line.trim_start();
        let indent = &line[..line.len() - t.len()];
        let mut words = t.split_whitespace();
        let (first, second) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let upstream_server = first == "server" && second.starts_with(|c: char| c.is_ascii_digit());
        if upstream_server {
            if !in_server_list {
                let params = t
                    .trim_end_matches(';')
                    .split_whitespace()
                    .skip(2)
                    .collect::<Vec<_>>()
                    .join(" ");
                for n in nodes {
                    out.push_str(&format!("{indent}server {n} {params};\n"));
                }
            }
            in_server_list = true;
            continue;
        }
        in_server_list = false;
        if first.starts_with("ssl_") || (first == "listen" && second.starts_with('[')) {
            continue;
        }
        if first == "listen" {
            let port: u16 = second
                .trim_end_matches(';')
                .parse()
                .expect("hub.conf listens on a bare port");
            out.push_str(&format!("{indent}listen 127.0.0.1:{};\n", ports(port)));
            continue;
        }
        out.push_str(&line.replace("/var/log/nginx/", &format!("{}/", logs.display())));
        out.push('\n');
    }
    out
}

/// nginx in the foreground with a temporary prefix directory.
struct Nginx {
    child: Child,
    /// Where `listen 443` went.
    https_addr: SocketAddr,
    /// Where `listen 80` went.
    http_addr: SocketAddr,
    dir: TempDir,
}

impl Nginx {
    async fn start(nodes: &[SocketAddr]) -> Self {
        assert!(
            Path::new(NGINX).exists(),
            "{NGINX} missing: install Debian's nginx (`apt-get install nginx-light`; scripts/test.sh does)"
        );
        let dir = TempDir::new("nginx");
        let logs = dir.0.join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let hub_conf = std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../nginx/hub.conf"),
        )
        .unwrap();
        let (https_port, http_port) = (free_port(), free_port());
        let conf = runnable_config(
            &hub_conf,
            nodes,
            &mut |p| match p {
                443 => https_port,
                80 => http_port,
                other => panic!("hub.conf listens on an unexpected port {other}"),
            },
            &logs,
        );
        assert!(
            conf.contains("hash $remote_addr consistent") && !conf.contains("10.0.0.11"),
            "{conf}"
        );
        std::fs::write(dir.0.join("hub.conf"), conf).unwrap();
        let d = dir.0.display();
        std::fs::write(
            dir.0.join("nginx.conf"),
            format!(
                "worker_processes 1;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{\n\
                 \x20   client_body_temp_path {d}/body;\n\
                 \x20   proxy_temp_path {d}/proxy;\n\
                 \x20   include {d}/hub.conf;\n\
                 }}\n"
            ),
        )
        .unwrap();
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(&dir.0)
            .arg("-c")
            .arg(dir.0.join("nginx.conf"))
            .arg("-e")
            .arg(logs.join("error.log"))
            .arg("-g")
            .arg(format!(
                "daemon off; pid {d}/nginx.pid; error_log {}/error.log info;",
                logs.display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        let https_addr: SocketAddr = format!("127.0.0.1:{https_port}").parse().unwrap();
        let http_addr: SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
        let mut n = Nginx {
            child,
            https_addr,
            http_addr,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(https_addr).await.is_err() {
            if let Ok(Some(status)) = n.child.try_wait() {
                panic!("nginx exited ({status}):\n{}", n.log("error.log"));
            }
            assert!(Instant::now() < deadline, "nginx not listening");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        wait_listening(n.http_addr, 5, "nginx").await;
        n
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.0.join("logs").join(name)).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGKILL of the master leaves its worker behind; SIGQUIT stops both.
        let _ = Command::new("kill")
            .arg("-QUIT")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the JS side reaches `step` (the file exists) and returns what it wrote;
/// fails early with the JS output if the JS run ends first.
async fn reached(
    sync: &Path,
    step: &str,
    js: &tokio::task::JoinHandle<std::io::Result<std::process::Output>>,
) -> String {
    let path = sync.join(step);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(data) = std::fs::read_to_string(&path) {
            return data;
        }
        assert!(!js.is_finished(), "the JS test ended before step {step}");
        assert!(
            Instant::now() < deadline,
            "the JS test never reached {step}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn go_on(sync: &Path, step: &str) {
    std::fs::write(sync.join(format!("{step}.ok")), "").unwrap();
}

/// The WebSocket handshakes nginx logged (status 101).
fn handshakes(access_log: &str) -> Vec<&str> {
    access_log
        .lines()
        .filter(|l| l.contains("GET /connection/websocket") && l.contains(" 101 "))
        .collect()
}

/// The number of clients on the node at `addr`, from its own entry in its `info`.
async fn own_clients(addr: SocketAddr, name: &str) -> u64 {
    let (_, info) = support::api(addr, "info", json!({})).await;
    info["result"]["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["name"] == name))
        .and_then(|n| n["num_clients"].as_u64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn centrifuge_js_through_nginx_moves_to_another_node_when_its_node_dies_and_recovers() {
    let redis = RedisServer::start();
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let node = |name: &str| {
        support::config(json!({
            "engine": {"type": "redis", "redis": {"address": [redis.url()], "prefix": prefix}},
            "node": {"name": name}
        }))
    };
    let names = ["node-a", "node-b"];
    let mut nodes = [
        NodeProcess::start(&node(names[0])).await,
        NodeProcess::start(&node(names[1])).await,
    ];
    let nginx = Nginx::start(&[nodes[0].addr, nodes[1].addr]).await;

    // Health and readiness pass through; plain HTTP only redirects.
    for path in ["/health", "/ready"] {
        let (st, body) = support::http(nginx.https_addr, "GET", path, &[], "").await;
        assert_eq!(st, 200, "{path}: {body}");
    }
    let (st, head, _) =
        support::http_with_head(nginx.http_addr, "GET", "/connection/websocket", &[], "").await;
    assert_eq!(st, 301, "{head}");
    assert!(head.contains("location: https://"), "{head}");

    let js_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/js");
    assert!(
        js_dir.join("node_modules/centrifuge").exists(),
        "node_modules missing in {}: run `npm ci --prefix tests/js` (scripts/test.sh does)",
        js_dir.display()
    );
    let sync = TempDir::new("nginx-sync");
    let js = tokio::spawn(
        tokio::process::Command::new("node")
            .args(["--test", "--test-concurrency=1", "nginx.test.mjs"])
            .current_dir(&js_dir)
            .env(
                "HUB_WS_URL",
                format!("ws://{}/connection/websocket", nginx.https_addr),
            )
            .env("HUB_API_URL", format!("http://{}", nginx.https_addr))
            .env("HUB_API_KEY", support::API_KEY)
            .env("HUB_SECRET", support::SECRET)
            .env("HUB_SYNC_DIR", &sync.0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output(),
    );

    // Step 1: the client is subscribed (through nginx) and has publication 1.
    let channel = reached(&sync.0, "subscribed", &js).await;
    // Which node did nginx pick? Ask each node directly about itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    let victim = loop {
        let mut on = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            on.push(own_clients(n.addr, names[i]).await);
        }
        match on.as_slice() {
            [1, 0] => break 0,
            [0, 1] => break 1,
            _ => assert!(Instant::now() < deadline, "clients per node: {on:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let survivor = 1 - victim;
    nodes[victim].kill();
    // Published through nginx while the client waits to reconnect: it misses both.
    for n in [2, 3] {
        let (st, r) = support::api(
            nginx.https_addr,
            "publish",
            json!({"channel": channel, "data": {"n": n}}),
        )
        .await;
        assert_eq!(st, 200, "{r}");
        assert_eq!(r["result"]["offset"], n, "{r}");
    }
    go_on(&sync.0, "subscribed");

    // Step 2: the client reconnected through nginx and recovered; it is on the survivor.
    reached(&sync.0, "recovered", &js).await;
    assert_eq!(own_clients(nodes[survivor].addr, names[survivor]).await, 1);
    go_on(&sync.0, "recovered");

    let out = tokio::time::timeout(Duration::from_secs(60), js)
        .await
        .expect("the JS test did not finish")
        .unwrap()
        .expect("node must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "tests/js/nginx.test.mjs failed");
    assert!(stdout.contains("# fail 0"), "node reported failures");

    // nginx logs a WebSocket when it closes: the first when its node died, the second when
    // the client left. Both went through nginx, to the victim and then to the survivor.
    let deadline = Instant::now() + Duration::from_secs(5);
    let access = loop {
        let access = nginx.log("hub.access.log");
        if handshakes(&access).len() == 2 || Instant::now() > deadline {
            break access;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ws = handshakes(&access);
    assert_eq!(ws.len(), 2, "{access}");
    // `upstream=` lists every node tried, the one that answered last: the reconnect may
    // first meet the dead node (502) before nginx marks it failed and moves on.
    let answered_by = |i: usize| format!("{} upstream_status=", nodes[i].addr);
    assert!(ws[0].contains(&answered_by(victim)), "{access}");
    assert!(
        ws[1].contains(&answered_by(survivor)) && ws[1].ends_with("101"),
        "the reconnect went to the live node: {access}"
    );
}
