//! The scenarios against the real `hub-server` binary, run as a user would run them: the
//! counts the load client reports must agree with each other and with the hub's `/metrics`,
//! and mistakes (wrong secret, wrong key, nothing listening, a remote target) must fail with
//! a message that says what to fix.
//!
//! `loadtest` does not depend on the server's crates, so the server binary is found next to
//! the `loadtest` binary (`<target>/<profile>/hub-server`, which `cargo test --workspace`
//! builds), and built with `cargo build -p hub-server` when missing. The cluster test runs a
//! real `redis-server` (which `scripts/test.sh` installs).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const SECRET: &str = "loadtest-secret";
const API_KEY: &str = "loadtest-api-key";

/// The `hub-server` binary of the same target dir and profile, built if missing.
fn hub_server_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let loadtest = PathBuf::from(env!("CARGO_BIN_EXE_loadtest"));
        let profile_dir = loadtest.parent().expect("binary has a parent dir");
        let bin = profile_dir.join("hub-server");
        if !bin.exists() {
            let target_dir = profile_dir.parent().expect("profile dir has a parent");
            let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            cmd.args(["build", "-p", "hub-server", "--target-dir"])
                .arg(target_dir)
                .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("run cargo build -p hub-server");
            assert!(status.success(), "cargo build -p hub-server failed");
        }
        assert!(bin.exists(), "no hub-server binary at {}", bin.display());
        bin
    })
}

/// A free loopback port (bound, then released for the server to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// A hub-server process with a temporary config; killed on drop.
struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Server {
    fn start() -> Server {
        Server::start_with(serde_json::json!({}))
    }

    /// A server whose config has the top-level sections of `extra` added.
    fn start_with(extra: serde_json::Value) -> Server {
        let dir = std::env::temp_dir().join(format!(
            "loadtest-scenarios-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut config = serde_json::json!({
            "client": {
                "token": {"hmac_secret_key": SECRET},
                "ping_interval": "25s"
            },
            "http_api": {"key": API_KEY},
            "channel": {"without_namespace": {"allow_subscribe_for_client": true}},
            "log": {"level": "warn"}
        });
        if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        let path = dir.join("config.json");
        std::fs::write(&path, config.to_string()).expect("write config");
        // The port may be taken between our release and the server's bind: try a few.
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(hub_server_binary())
                .arg("-c")
                .arg(&path)
                .arg("--port")
                .arg(port.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start hub-server");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // exited: port taken, most likely
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Server { child, port, dir };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("hub-server did not start");
    }

    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/connection/websocket", self.port)
    }

    fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// The command line of `scenario` against this server: `--url` (unless `extra` has its
    /// own) and `--secret`, for the scenarios that publish `--api-url` and `--api-key`, then
    /// `extra`.
    fn command(&self, scenario: &str, extra: &[&str]) -> Vec<String> {
        let mut args = vec![scenario.to_owned()];
        if !extra.contains(&"--url") {
            args.extend(["--url".to_owned(), self.ws_url()]);
        }
        if scenario != "idle" {
            args.extend(["--api-url".to_owned(), self.api_url()]);
            args.extend(["--api-key".to_owned(), API_KEY.to_owned()]);
        }
        args.extend(["--secret".to_owned(), SECRET.to_owned()]);
        args.extend(extra.iter().map(|&a| a.to_owned()));
        args
    }

    /// Runs [`Server::command`] with `--json --pid <server>`; returns the JSON report.
    fn run_json(&self, scenario: &str, extra: &[&str]) -> serde_json::Value {
        let mut args = self.command(scenario, extra);
        args.extend(["--json".to_owned(), "--pid".to_owned(), self.pid()]);
        json(&loadtest(&args))
    }

    /// [`Server::run_json`], also returning how much `hub_deliveries_total` grew meanwhile.
    fn run_counting(&self, scenario: &str, extra: &[&str]) -> (serde_json::Value, f64) {
        let before = self.metric("hub_deliveries_total");
        let report = self.run_json(scenario, extra);
        (report, self.metric("hub_deliveries_total") - before)
    }

    /// The whole response (status line, headers, body) to `GET path`.
    fn get(&self, path: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))
            .unwrap_or_else(|e| panic!("connect for {path}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .unwrap_or_else(|e| panic!("send GET {path}: {e}"));
        let mut text = String::new();
        s.read_to_string(&mut text)
            .unwrap_or_else(|e| panic!("read {path}: {e}"));
        text
    }

    /// Waits (at most 10 s) until `GET /ready` answers 200: with the Redis engine, once the
    /// node is connected to Redis.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self.get("/ready");
            if r.starts_with("HTTP/1.1 200") {
                return;
            }
            assert!(Instant::now() < deadline, "node not ready: {r}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A counter from `GET /metrics`.
    fn metric(&self, name: &str) -> f64 {
        self.get("/metrics")
            .lines()
            .find_map(|l| {
                let (n, v) = l.split_once(' ')?;
                (n == name).then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `redis-server` on a free loopback port that keeps nothing on disk; killed on drop.
struct Redis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    fn start() -> Redis {
        let dir = std::env::temp_dir().join(format!(
            "loadtest-redis-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        // The port may be taken between our release and Redis's bind: try a few.
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server (scripts/test.sh installs it)");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // exited: port taken, most likely
                }
                let pong = Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "ping"])
                    .stderr(Stdio::null())
                    .output()
                    .expect("run redis-cli");
                if String::from_utf8_lossy(&pong.stdout).trim() == "PONG" {
                    return Redis { child, port, dir };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not start");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the `loadtest` binary with `args`.
fn loadtest<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run loadtest")
}

/// Exit status and output of a run, for failure messages.
fn describe(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The JSON report of a successful run.
fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", describe(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", describe(o)))
}

/// The message of a run that could not run (exit status 1).
fn stderr_of(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "{}", describe(o));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `report[key]` is a number above 0.
fn assert_positive(report: &serde_json::Value, key: &str) {
    assert!(report[key].as_f64().unwrap() > 0.0, "{key}: {report:#}");
}

/// Every one of `deliveries` was expected and has a latency, and the hub counted at least
/// as many (`hub_grew`: growth of `hub_deliveries_total`).
fn assert_all_delivered(report: &serde_json::Value, deliveries: u64, hub_grew: f64) {
    assert_eq!(report["deliveries"], deliveries, "{report:#}");
    assert_eq!(report["deliveries_expected"], deliveries, "{report:#}");
    assert_eq!(report["latency"]["count"], deliveries, "{report:#}");
    assert!(
        hub_grew >= deliveries as f64,
        "hub_deliveries_total grew by {hub_grew} but the client received {deliveries}"
    );
}

#[test]
fn idle_and_fanout_report_consistent_counts() {
    let server = Server::start();

    let idle = server.run_json(
        "idle",
        &["--connections", "200", "--hold", "1s", "--settle", "200ms"],
    );
    assert_eq!(idle["connected"], 200, "{idle:#}");
    assert_eq!(idle["compression"], false, "{idle:#}");
    assert_eq!(idle["failed"], 0, "{idle:#}");
    assert_positive(&idle, "connect_rate_per_sec");
    assert!(
        idle["server"]["rss_after_bytes"].as_u64().unwrap() > 0,
        "{idle:#}"
    );
    assert!(
        idle["sockets"]["after"]["inuse"].as_u64().is_some(),
        "{idle:#}"
    );
    // Fewer connections than one step of the memory curve: one reading, once all were open.
    let memory = &idle["server"];
    assert_eq!(memory["rss_sample_step"], 500, "{idle:#}");
    let samples = memory["rss_samples"].as_array().unwrap();
    assert_eq!(samples.len(), 1, "{idle:#}");
    assert_sample(
        &samples[0],
        200,
        memory["rss_before_bytes"].as_u64().unwrap(),
    );

    let (fanout, hub_grew) = server.run_counting(
        "fanout",
        &["--subscribers", "100", "--rate", "20", "--duration", "3s"],
    );
    assert_eq!(fanout["subscribers_connected"], 100, "{fanout:#}");
    assert_eq!(fanout["compression"], false, "{fanout:#}");
    assert_eq!(fanout["compressed_messages"], 0, "{fanout:#}");
    assert_eq!(fanout["publications_scheduled"], 60, "{fanout:#}");
    assert_eq!(fanout["publications_sent"], 60, "{fanout:#}");
    assert_all_delivered(&fanout, 60 * 100, hub_grew);
    assert!(
        fanout["latency"]["max_ms"].as_f64().unwrap() > 0.0,
        "{fanout:#}"
    );
    assert_positive(&fanout, "server_cpu_us_per_delivery");
}

#[test]
fn fanout_with_compression_inflates_every_delivery() {
    let server = Server::start_with(serde_json::json!({
        "websocket": {"compression": true, "compression_min_size": 0, "compression_level": 1}
    }));
    let fanout = server.run_json(
        "fanout",
        &[
            "--subscribers",
            "50",
            "--rate",
            "20",
            "--size",
            "500",
            "--duration",
            "2s",
            "--compression",
        ],
    );
    assert_eq!(fanout["compression"], true, "{fanout:#}");
    assert_eq!(fanout["subscribers_connected"], 50, "{fanout:#}");
    assert_eq!(fanout["publications_sent"], 40, "{fanout:#}");
    assert_eq!(fanout["deliveries"], 40 * 50, "{fanout:#}");
    assert_eq!(fanout["deliveries_expected"], 40 * 50, "{fanout:#}");
    // With a minimum size of 0 every message is compressed: the publications, and the
    // connect and subscribe replies.
    assert!(
        fanout["compressed_messages"].as_u64().unwrap() >= 40 * 50,
        "{fanout:#}"
    );
    let total = fanout["server_cpu_us_per_delivery"].as_f64().unwrap();
    let user = fanout["server_user_us_per_delivery"].as_f64().unwrap();
    let kernel = fanout["server_kernel_us_per_delivery"].as_f64().unwrap();
    assert!(total > 0.0 && user >= 0.0 && kernel >= 0.0, "{fanout:#}");

    // The human summary says so too.
    let pid = server.pid();
    let o = loadtest(&server.command(
        "fanout",
        &[
            "--subscribers",
            "5",
            "--rate",
            "10",
            "--duration",
            "500ms",
            "--compression",
            "--pid",
            &pid,
        ],
    ));
    assert!(o.status.success(), "{}", describe(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("permessage-deflate negotiated"), "{text}");
    assert!(
        text.contains("(user ") && text.contains(" + kernel "),
        "{text}"
    );
    assert!(text.contains(&format!("; pid {pid})")), "{text}");

    // Without --compression the same server sends plain frames.
    let idle = json(&loadtest(&server.command(
        "idle",
        &[
            "--connections",
            "5",
            "--hold",
            "0s",
            "--settle",
            "0s",
            "--json",
        ],
    )));
    assert_eq!(idle["connected"], 5, "{idle:#}");
    assert_eq!(idle["compression"], false, "{idle:#}");
    // Without --pid: the server's memory comes from its /metrics.
    assert_eq!(idle["server"]["source"], "metrics", "{idle:#}");
}

#[test]
fn fanout_with_protobuf_delivers_everything_in_fewer_bytes() {
    let server = Server::start();
    // The same run shape in each flavour.
    let shape = [
        "--subscribers",
        "50",
        "--rate",
        "20",
        "--size",
        "100",
        "--duration",
        "2s",
    ];
    let (json_run, json_grew) = server.run_counting("fanout", &shape);
    let (protobuf, hub_grew) =
        server.run_counting("fanout", &[&shape[..], &["--protobuf"]].concat());
    for (run, grew, flavour) in [
        (&json_run, json_grew, "json"),
        (&protobuf, hub_grew, "protobuf"),
    ] {
        assert_eq!(run["protocol"], flavour, "{run:#}");
        assert_eq!(run["subscribers_connected"], 50, "{run:#}");
        assert_eq!(run["publications_sent"], 40, "{run:#}");
        assert!(
            run["subscribers_dropped"].as_object().unwrap().is_empty(),
            "{run:#}"
        );
        assert_eq!(run["foreign_publications"], 0, "{run:#}");
        assert_all_delivered(run, 40 * 50, grew);
        // Only these subscribers on this server: the hub counted exactly these deliveries.
        assert_eq!(grew, (40 * 50) as f64, "{run:#}");
        // Each delivery carries the 100 bytes of data, and some framing.
        let per = run["bytes_per_delivery"].as_f64().unwrap();
        assert!(per > 100.0 && per < 400.0, "{run:#}");
        assert_eq!(
            run["bytes_per_delivery"].as_f64().unwrap(),
            run["bytes_received"].as_f64().unwrap() / (40.0 * 50.0),
            "{run:#}"
        );
    }
    let (json_per, protobuf_per) = (
        json_run["bytes_per_delivery"].as_f64().unwrap(),
        protobuf["bytes_per_delivery"].as_f64().unwrap(),
    );
    assert!(
        protobuf_per < json_per,
        "Protobuf {protobuf_per} B per delivery, JSON {json_per}"
    );

    // The human summary names the flavour and the bytes per delivery; worker processes
    // speak it too, and their bytes add up.
    let o = loadtest(&server.command(
        "fanout",
        &[
            "--subscribers",
            "6",
            "--rate",
            "10",
            "--duration",
            "500ms",
            "--workers",
            "2",
            "--protobuf",
        ],
    ));
    assert!(o.status.success(), "{}", describe(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("deliveries    30 of 30 expected"), "{text}");
    assert!(
        text.contains(" B per delivery (Protobuf: ") && text.contains(" B of WebSocket frames"),
        "{text}"
    );

    // idle: the opening replies are smaller too.
    let idle = |extra: &[&str]| {
        let args = [
            &["--connections", "20", "--hold", "0s", "--settle", "0s"][..],
            extra,
        ]
        .concat();
        server.run_json("idle", &args)
    };
    let (json_idle, protobuf_idle) = (idle(&[]), idle(&["--protobuf"]));
    assert_eq!(protobuf_idle["protocol"], "protobuf", "{protobuf_idle:#}");
    assert_eq!(protobuf_idle["connected"], 20, "{protobuf_idle:#}");
    let opening = |r: &serde_json::Value| r["opening_bytes_per_connection"].as_f64().unwrap();
    assert!(opening(&protobuf_idle) > 0.0, "{protobuf_idle:#}");
    assert!(
        opening(&protobuf_idle) < opening(&json_idle),
        "{protobuf_idle:#}\n{json_idle:#}"
    );
}

/// A server with the gRPC server API on (key [`API_KEY`]), and its gRPC URL.
fn start_with_grpc() -> (Server, String) {
    let grpc_port = free_port();
    let server = Server::start_with(serde_json::json!({
        "grpc_api": {"enabled": true, "port": grpc_port, "key": API_KEY}
    }));
    // Bound right after the HTTP port, before serving.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", grpc_port)).is_err() {
        assert!(Instant::now() < deadline, "no gRPC API on port {grpc_port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, format!("http://127.0.0.1:{grpc_port}"))
}

#[test]
fn fanout_publishes_through_the_grpc_api() {
    let (server, grpc_url) = start_with_grpc();
    let args = |duration| {
        [
            "--subscribers",
            "50",
            "--rate",
            "20",
            "--duration",
            duration,
            "--publish-via",
            "grpc",
            "--grpc-url",
            &grpc_url,
        ]
    };
    let (fanout, hub_grew) = server.run_counting("fanout", &args("2s"));
    assert_eq!(fanout["publish_via"], "grpc", "{fanout:#}");
    assert_eq!(fanout["publish_url"], grpc_url, "{fanout:#}");
    assert_eq!(fanout["subscribers_connected"], 50, "{fanout:#}");
    assert_eq!(fanout["publications_sent"], 40, "{fanout:#}");
    assert_eq!(fanout["publications_failed"], 0, "{fanout:#}");
    assert_all_delivered(&fanout, 40 * 50, hub_grew);

    let o = loadtest(&server.command("fanout", &args("500ms")));
    assert!(o.status.success(), "{}", describe(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&format!("via gRPC server API ({grpc_url})")),
        "{text}"
    );
}

#[test]
fn fanout_and_channels_publish_through_a_client_connection() {
    let server = Server::start_with(serde_json::json!({
        "channel": {"without_namespace": {
            "allow_subscribe_for_client": true,
            "allow_publish_for_client": true
        }}
    }));
    let (fanout, hub_grew) = server.run_counting(
        "fanout",
        &[
            "--subscribers",
            "50",
            "--rate",
            "20",
            "--duration",
            "2s",
            "--publish-via",
            "client",
        ],
    );
    assert_eq!(fanout["publish_via"], "client", "{fanout:#}");
    assert_eq!(fanout["publish_url"], server.ws_url(), "{fanout:#}");
    assert_eq!(fanout["publications_sent"], 40, "{fanout:#}");
    assert_eq!(fanout["publications_failed"], 0, "{fanout:#}");
    assert_eq!(fanout["foreign_publications"], 0, "{fanout:#}");
    assert_all_delivered(&fanout, 40 * 50, hub_grew);

    // The channels scenario shares the publisher: random personal and group channels.
    let (ch, hub_grew) = server.run_counting(
        "channels",
        &[
            "--connections",
            "100",
            "--group-rate",
            "10",
            "--personal-rate",
            "10",
            "--duration",
            "1s",
            "--settle",
            "0s",
            "--publish-via",
            "client",
        ],
    );
    assert_eq!(ch["publish_via"], "client", "{ch:#}");
    assert_eq!(ch["publications_sent"], 20, "{ch:#}");
    assert_all_delivered(&ch, 10 * 10 + 10, hub_grew);
}

#[test]
fn publish_paths_that_cannot_work_are_explained() {
    // Client publishes are off by default: the probe publication fails the run at once.
    let (server, grpc_url) = start_with_grpc();
    let e = stderr_of(&loadtest(&server.command(
        "fanout",
        &[
            "--subscribers",
            "1",
            "--duration",
            "1s",
            "--publish-via",
            "client",
        ],
    )));
    assert!(
        e.contains("client publish check")
            && e.contains("error 103")
            && e.contains("\"allow_publish_for_client\": true"),
        "{e}"
    );

    // A wrong key over gRPC.
    let o = loadtest(&[
        "fanout",
        "--url",
        &server.ws_url(),
        "--secret",
        SECRET,
        "--publish-via",
        "grpc",
        "--grpc-url",
        &grpc_url,
        "--api-key",
        "wrong",
        "--subscribers",
        "1",
        "--duration",
        "1s",
    ]);
    let e = stderr_of(&o);
    assert!(
        e.contains("API key rejected (gRPC UNAUTHENTICATED)") && e.contains("--api-key"),
        "{e}"
    );

    // No gRPC API where --grpc-url points.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let e = stderr_of(&loadtest(&server.command(
        "fanout",
        &[
            "--subscribers",
            "1",
            "--duration",
            "1s",
            "--publish-via",
            "grpc",
            "--grpc-url",
            &closed,
        ],
    )));
    assert!(e.contains(&closed) && e.contains("grpc_api"), "{e}");
}

/// A reading of the memory curve at `connections`, consistent with `rss_before`.
fn assert_sample(sample: &serde_json::Value, connections: u64, rss_before: u64) {
    assert_eq!(sample["connections"], connections, "{sample}");
    let rss = sample["rss_bytes"].as_u64().unwrap();
    assert!(rss > 0, "{sample}");
    let per = sample["bytes_per_connection"].as_f64().unwrap();
    let expect = (rss as f64 - rss_before as f64) / connections as f64;
    assert!((per - expect).abs() < 1e-6, "{sample}: expected {expect}");
}

#[test]
fn idle_reads_server_memory_as_connections_open() {
    let server = Server::start();
    let report = server.dir.join("report");
    // Over worker processes, which report their counts while opening.
    let idle = server.run_json(
        "idle",
        &[
            "--connections",
            "1200",
            "--workers",
            "2",
            "--hold",
            "0s",
            "--settle",
            "100ms",
            "--report",
            report.to_str().unwrap(),
        ],
    );
    assert_eq!(idle["connected"], 1200, "{idle:#}");
    let memory = &idle["server"];
    let before = memory["rss_before_bytes"].as_u64().unwrap();
    let samples = memory["rss_samples"].as_array().unwrap();
    // Past 500, past 1000 (the workers' counts come a few at a time), and at 1200.
    assert_eq!(samples.len(), 3, "{idle:#}");
    let counts: Vec<u64> = samples
        .iter()
        .map(|s| s["connections"].as_u64().unwrap())
        .collect();
    assert!(
        (500..520).contains(&counts[0]) && (1000..1020).contains(&counts[1]),
        "{counts:?}"
    );
    assert_eq!(counts[2], 1200, "{idle:#}");
    for (s, &n) in samples.iter().zip(&counts) {
        assert_sample(s, n, before);
    }

    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(
        md.contains("![server memory per connection vs connections](memory.svg)"),
        "{md}"
    );
    assert!(md.contains("| 1200 | "), "{md}");
    let svg = std::fs::read_to_string(report.join("memory.svg")).unwrap();
    assert!(
        svg.contains("Server memory per connection vs connections") && svg.ends_with("</svg>\n")
    );
    assert_eq!(svg.matches("<circle class=\"point\"").count(), 3, "{svg}");

    // Without --pid the memory comes from the hub's /metrics, plotted just the same; the
    // report names the source.
    let report = server.dir.join("report-no-pid");
    let o = loadtest(&server.command(
        "idle",
        &[
            "--connections",
            "5",
            "--hold",
            "0s",
            "--settle",
            "0s",
            "--report",
            report.to_str().unwrap(),
        ],
    ));
    assert!(o.status.success(), "{}", describe(&o));
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    let source = format!(
        "process_resident_memory_bytes of {}/metrics",
        server.api_url()
    );
    assert!(
        md.contains(&format!("Server RSS ({source}) read each time")),
        "{md}"
    );
    assert!(report.join("memory.svg").exists());
}

#[test]
fn idle_without_pid_reads_server_memory_from_metrics() {
    let server = Server::start();
    let idle = json(&loadtest(&server.command(
        "idle",
        &[
            "--connections",
            "200",
            "--hold",
            "0s",
            "--settle",
            "200ms",
            "--json",
        ],
    )));
    assert_eq!(idle["connected"], 200, "{idle:#}");
    let memory = &idle["server"];
    assert_eq!(memory["source"], "metrics", "{idle:#}");
    assert_eq!(memory["pids"], serde_json::json!([]), "{idle:#}");
    let url = format!("{}/metrics", server.api_url());
    assert_eq!(memory["metrics_urls"], serde_json::json!([url]), "{idle:#}");
    assert!(idle["server_memory_error"].is_null(), "{idle:#}");
    let (before, after) = (
        memory["rss_before_bytes"].as_u64().unwrap(),
        memory["rss_after_bytes"].as_u64().unwrap(),
    );
    assert!(before > 0 && after > 0, "{idle:#}");
    assert!(
        memory["rss_per_connection_bytes"].as_f64().is_some(),
        "{idle:#}"
    );
    // The hub's own figure and the kernel's agree (the same VmRSS, a moment apart).
    let now = vm_rss(&server.pid()) as f64;
    assert!(
        (after as f64 - now).abs() < now * 0.5,
        "{after} from /metrics, {now} from /proc: {idle:#}"
    );
    let samples = memory["rss_samples"].as_array().unwrap();
    assert_eq!(samples.len(), 1, "{idle:#}");
    assert_sample(&samples[0], 200, before);

    // The human summary names the source.
    let o = loadtest(&server.command(
        "idle",
        &["--connections", "5", "--hold", "0s", "--settle", "0s"],
    ));
    assert!(o.status.success(), "{}", describe(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&format!(
            "per connection (process_resident_memory_bytes of {url})"
        )),
        "{text}"
    );

    // A --metrics-url that does not answer fails the run, named.
    let closed = format!("http://127.0.0.1:{}/metrics", free_port());
    let e = stderr_of(&loadtest(&server.command(
        "idle",
        &[
            "--connections",
            "5",
            "--hold",
            "0s",
            "--metrics-url",
            &closed,
        ],
    )));
    assert!(e.contains(&format!("--metrics-url: GET {closed}")), "{e}");
}

#[test]
fn mistakes_are_explained() {
    let server = Server::start();
    let url = server.ws_url();

    let o = loadtest(&[
        "idle",
        "--url",
        &url,
        "--connections",
        "3",
        "--secret",
        "wrong",
        "--hold",
        "0s",
    ]);
    let e = stderr_of(&o);
    assert!(e.contains("token rejected: check --secret"), "{e}");

    // --compression against a server without it: the missing header is named.
    let o = loadtest(&server.command(
        "idle",
        &["--connections", "3", "--hold", "0s", "--compression"],
    ));
    let e = stderr_of(&o);
    assert!(
        e.contains("--compression") && e.contains("no Sec-WebSocket-Extensions header"),
        "{e}"
    );

    let o = loadtest(&[
        "fanout",
        "--url",
        &url,
        "--api-url",
        &server.api_url(),
        "--api-key",
        "wrong",
        "--secret",
        SECRET,
        "--subscribers",
        "1",
        "--duration",
        "1s",
    ]);
    let e = stderr_of(&o);
    assert!(
        e.contains("API key rejected") && e.contains("--api-key"),
        "{e}"
    );

    // Nothing listens on a port just released.
    let closed = format!("ws://127.0.0.1:{}/connection/websocket", free_port());
    let o = loadtest(&[
        "idle",
        "--url",
        &closed,
        "--connections",
        "3",
        "--secret",
        SECRET,
    ]);
    let e = stderr_of(&o);
    assert!(
        e.contains("connection refused") && e.contains(&closed),
        "{e}"
    );
}

#[test]
fn preflight_checks_send_no_traffic() {
    // A documentation address (TEST-NET-1): refused before any connection is tried.
    let o = loadtest(&[
        "idle",
        "--url",
        "ws://192.0.2.1:8000/connection/websocket",
        "--secret",
        "s",
    ]);
    let e = stderr_of(&o);
    assert!(e.contains("--allow-remote"), "{e}");

    let o = loadtest(&["idle", "--connections", "10000000", "--secret", "s"]);
    let e = stderr_of(&o);
    assert!(
        e.contains("open files") && e.contains("the most this machine allows is --connections"),
        "{e}"
    );
}

#[test]
fn churn_reports_connects_and_stable_deliveries() {
    let server = Server::start();
    let (churn, hub_grew) = server.run_counting(
        "churn",
        &[
            "--stable",
            "50",
            "--churn",
            "20",
            "--lifetime",
            "1s",
            "--rate",
            "20",
            "--duration",
            "2s",
        ],
    );
    assert_eq!(churn["stable_connected"], 50, "{churn:#}");
    assert_eq!(churn["churn_attempted"], 40, "{churn:#}");
    assert_eq!(churn["churn_connected"], 40, "{churn:#}");
    assert_eq!(churn["churn_failed"], 0, "{churn:#}");
    assert_eq!(churn["connect_latency"]["count"], 40, "{churn:#}");
    assert_eq!(churn["publications_sent"], 40, "{churn:#}");
    // The churning connections receive too, so the hub counts more than the stable ones.
    assert_all_delivered(&churn, 40 * 50, hub_grew);
    assert!(
        churn["server_rss_end_bytes"].as_u64().unwrap() > 0,
        "{churn:#}"
    );
}

#[test]
fn channels_report_personal_and_group_deliveries() {
    let server = Server::start();
    let (ch, hub_grew) = server.run_counting(
        "channels",
        &[
            "--connections",
            "200",
            "--group-rate",
            "20",
            "--personal-rate",
            "20",
            "--duration",
            "2s",
            "--settle",
            "100ms",
        ],
    );
    assert_eq!(ch["connected"], 200, "{ch:#}");
    assert_eq!(ch["groups"], 20, "{ch:#}");
    assert_eq!(ch["publications_scheduled"], 80, "{ch:#}");
    assert_eq!(ch["publications_sent"], 80, "{ch:#}");
    // 40 to groups of 10, 40 to personal channels of 1.
    assert_all_delivered(&ch, 40 * 10 + 40, hub_grew);
    assert_positive(&ch, "deliveries_per_minute");
    assert_positive(&ch, "server_cpu_us_per_delivery");
    assert!(
        ch["server_rss_per_connection_bytes"].as_f64().is_some(),
        "{ch:#}"
    );
}

#[test]
fn workers_source_addresses_and_several_urls_add_up() {
    let server = Server::start();
    // The same node twice stands for a cluster: connections alternate between the URLs.
    let urls = format!("{0},{0}", server.ws_url());
    let report = server.dir.join("report");
    let (ch, hub_grew) = server.run_counting(
        "channels",
        &[
            "--url",
            &urls,
            "--connections",
            "120",
            "--workers",
            "2",
            "--source-addrs",
            "127.0.0.1,127.0.0.2",
            "--group-rate",
            "20",
            "--personal-rate",
            "20",
            "--duration",
            "1s",
            "--settle",
            "0s",
            "--report",
            report.to_str().unwrap(),
        ],
    );
    assert_eq!(ch["connected"], 120, "{ch:#}");
    assert_eq!(ch["publications_sent"], 40, "{ch:#}");
    let deliveries = 20 * 10 + 20;
    assert_all_delivered(&ch, deliveries, hub_grew);
    assert_eq!(ch["dropped"], serde_json::json!({}), "{ch:#}");
    // The workers' per-second timelines merge into the report's table.
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(md.contains("# loadtest channels"), "{md}");
    let per_second: u64 = md
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| second"))
        .map(|l| l.split('|').nth(2).unwrap().trim().parse::<u64>().unwrap())
        .sum();
    assert_eq!(per_second, deliveries, "{md}");
    let svg = std::fs::read_to_string(report.join("latency.svg")).unwrap();
    assert!(svg.contains("data-name=\"p99\"") && svg.ends_with("</svg>\n"));
}

/// `VmRSS` of a process, bytes.
fn vm_rss(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS");
    kib * 1024
}

#[test]
fn several_pids_are_named_and_summed() {
    // Two separate nodes: idle publishes nothing, so they need no broker.
    let (a, b) = (Server::start(), Server::start());
    let urls = format!("{},{}", a.ws_url(), b.ws_url());
    let pids = format!("{},{}", a.pid(), b.pid());
    let idle_args = |pids: &str, json: bool| {
        let mut args = a.command(
            "idle",
            &[
                "--url",
                &urls,
                "--connections",
                "20",
                "--hold",
                "0s",
                "--settle",
                "100ms",
                "--pid",
                pids,
            ],
        );
        if json {
            args.push("--json".to_owned());
        }
        args
    };

    let idle = json(&loadtest(&idle_args(&pids, true)));
    assert_eq!(idle["connected"], 20, "{idle:#}");
    let server = &idle["server"];
    let (pa, pb): (u32, u32) = (a.pid().parse().unwrap(), b.pid().parse().unwrap());
    assert_eq!(server["pids"], serde_json::json!([pa, pb]), "{idle:#}");
    assert!(server.get("pid").is_none(), "{idle:#}");
    // The sum of two alike nodes is more than either.
    let after = server["rss_after_bytes"].as_u64().unwrap();
    assert!(after > vm_rss(&a.pid()).max(vm_rss(&b.pid())), "{idle:#}");
    // The curve's reading is of the sum too.
    let sample = &server["rss_samples"][0];
    assert_sample(sample, 20, server["rss_before_bytes"].as_u64().unwrap());
    assert!(
        sample["rss_bytes"].as_u64().unwrap() > vm_rss(&a.pid()).max(vm_rss(&b.pid())),
        "{idle:#}"
    );

    let o = loadtest(&idle_args(&pids, false));
    assert!(o.status.success(), "{}", describe(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&format!("(pids {pa}, {pb} summed)")),
        "{text}"
    );

    // One pid at fault fails the run before it starts, named.
    let e = stderr_of(&loadtest(&idle_args(&format!("{pa},4294967295"), false)));
    assert!(e.contains("--pid 4294967295: no such process"), "{e}");
    let e = stderr_of(&loadtest(&idle_args(&format!("{pa},{pb},{pa}"), false)));
    assert!(e.contains(&format!("--pid {pa} is given twice")), "{e}");
}

#[test]
fn a_redis_cluster_delivers_to_subscribers_on_every_node() {
    let redis = Redis::start();
    // Both nodes on the same Redis, under a prefix of their own.
    let engine = serde_json::json!({
        "engine": {
            "type": "redis",
            "redis": {
                "address": [redis.url()],
                "prefix": format!("loadtest-{}-{}", std::process::id(), fastrand::u64(..))
            }
        }
    });
    let (a, b) = (
        Server::start_with(engine.clone()),
        Server::start_with(engine),
    );
    a.wait_ready();
    b.wait_ready();
    let urls = format!("{},{}", a.ws_url(), b.ws_url());
    let pids = format!("{},{}", a.pid(), b.pid());
    // Subscribers alternate between the nodes; publications go through node a's API only.
    let mut args = a.command(
        "fanout",
        &[
            "--url",
            &urls,
            "--subscribers",
            "300",
            "--rate",
            "2",
            "--duration",
            "2s",
            "--pid",
            &pids,
        ],
    );
    args.push("--json".to_owned());
    let (a_before, b_before) = (
        a.metric("hub_deliveries_total"),
        b.metric("hub_deliveries_total"),
    );
    let fanout = json(&loadtest(&args));

    assert_eq!(fanout["subscribers_connected"], 300, "{fanout:#}");
    assert_eq!(
        fanout["subscriber_failures"],
        serde_json::json!({}),
        "{fanout:#}"
    );
    assert_eq!(
        fanout["subscribers_dropped"],
        serde_json::json!({}),
        "{fanout:#}"
    );
    assert_eq!(fanout["publications_scheduled"], 4, "{fanout:#}");
    assert_eq!(fanout["publications_sent"], 4, "{fanout:#}");
    assert_eq!(fanout["publications_failed"], 0, "{fanout:#}");
    assert_eq!(fanout["publications_skipped"], 0, "{fanout:#}");
    assert_eq!(fanout["foreign_publications"], 0, "{fanout:#}");
    assert_eq!(fanout["deliveries"], 4 * 300, "{fanout:#}");
    assert_eq!(fanout["deliveries_expected"], 4 * 300, "{fanout:#}");
    assert_eq!(fanout["latency"]["count"], 4 * 300, "{fanout:#}");
    let (pa, pb): (u32, u32) = (a.pid().parse().unwrap(), b.pid().parse().unwrap());
    assert_eq!(
        fanout["server_pids"],
        serde_json::json!([pa, pb]),
        "{fanout:#}"
    );
    // Each node wrote to its own half of the subscribers: node b's through Redis.
    for (node, before) in [(&a, a_before), (&b, b_before)] {
        let grew = node.metric("hub_deliveries_total") - before;
        assert!(grew >= 4.0 * 150.0, "a node delivered {grew}: {fanout:#}");
    }
}
