//! The scenarios against the real `hub-server` binary, run as a user would run them: the
//! counts the load client reports must agree with each other and with the hub's `/metrics`,
//! and mistakes (wrong secret, wrong key, nothing listening, a remote target) must fail with
//! a message that says what to fix.
//!
//! `loadtest` does not depend on the server's crates, so the server binary is found next to
//! the `loadtest` binary (`<target>/<profile>/hub-server`, which `cargo test --workspace`
//! builds), and built with `cargo build -p hub-server` when missing.

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

    /// A counter from `GET /metrics`.
    fn metric(&self, name: &str) -> f64 {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect for /metrics");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .expect("send GET /metrics");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read /metrics");
        text.lines()
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
