//! A hub-server *process* (not an in-process server), so a test can kill it -9 like a crashed
//! machine, or put a real proxy in front of it.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hub_server::config::Config;

pub struct NodeProcess {
    child: Child,
    pub addr: SocketAddr,
    _dir: TempDir,
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("hub-{what}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free port on 127.0.0.1 (bound then released: good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `addr` until it accepts TCP connections, for up to `secs`.
pub async fn wait_listening(addr: SocketAddr, secs: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} not listening on {addr} within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl NodeProcess {
    /// Starts `hub-server -c <config>` on a free port of 127.0.0.1 and waits until it listens.
    pub async fn start(config: &Config) -> Self {
        let port = free_port();
        let mut value = serde_json::to_value(config).unwrap();
        value["http_server"]["port"] = serde_json::json!(port);
        value["log"] = serde_json::json!({"level": "warn"});
        let dir = TempDir::new("node");
        let path = dir.0.join("config.json");
        std::fs::write(&path, serde_json::to_vec(&value).unwrap()).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hub-server"))
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_listening(addr, 20, "node process").await;
        NodeProcess {
            child,
            addr,
            _dir: dir,
        }
    }

    /// Kills the process with SIGKILL (no drain, no goodbye to the cluster) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
