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
        Self::spawn(config, false, &[]).await
    }

    /// As [`NodeProcess::start`], keeping the config's `log` section and writing stderr to a
    /// file ([`NodeProcess::stderr`]), with extra environment variables.
    pub async fn start_logged(config: &Config, env: &[(&str, &str)]) -> Self {
        Self::spawn(config, true, env).await
    }

    async fn spawn(config: &Config, logged: bool, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut value = serde_json::to_value(config).unwrap();
        value["http_server"]["port"] = serde_json::json!(port);
        if !logged {
            value["log"] = serde_json::json!({"level": "warn"});
        }
        let dir = TempDir::new("node");
        let path = dir.0.join("config.json");
        std::fs::write(&path, serde_json::to_vec(&value).unwrap()).unwrap();
        let stderr = if logged {
            Stdio::from(std::fs::File::create(dir.0.join("stderr.log")).unwrap())
        } else {
            Stdio::null()
        };
        let child = Command::new(env!("CARGO_BIN_EXE_hub-server"))
            .arg("-c")
            .arg(&path)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut node = NodeProcess {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Ok(Some(status)) = node.child.try_wait() {
                panic!("node process exited ({status}): {}", node.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "node process not listening on {addr} within 20 s: {}",
                node.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        node
    }

    /// What a [`NodeProcess::start_logged`] process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self._dir.0.join("stderr.log")).unwrap_or_default()
    }

    /// Stops the process with SIGTERM (drain, exporters flushed) and waits up to `secs` for
    /// it to exit; `None` if it did not (it is killed then).
    pub async fn terminate(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill();
        None
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
