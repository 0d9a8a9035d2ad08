//! A CongoDB server (MongoDB wire protocol, in JavaScript) for tests: started by
//! `scripts/congodb-server.mjs` on a free port, killed on drop. Shared by the store's and the
//! app's MongoDB tests.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A CongoDB process, killed on drop.
pub struct Congo {
    child: Child,
    port: u16,
}

impl Congo {
    pub fn start() -> Congo {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(|d| d.join("scripts/congodb-server.mjs"))
            .find(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("scripts/congodb-server.mjs"));
        let port = free_port();
        let mut child = Command::new("node")
            .arg(&script)
            .arg(port.to_string())
            .arg("--exit-with-stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `node {}`: {e}. Install Node.js, then run scripts/congodb.sh",
                    script.display()
                )
            });
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("congodb listening") {
                    let _ = tx.send(());
                }
            }
        });
        let mut congo = Congo { child, port };
        if let Err(why) = rx.recv_timeout(Duration::from_secs(30)) {
            let why = match why {
                mpsc::RecvTimeoutError::Timeout => "it printed nothing within 30 s",
                mpsc::RecvTimeoutError::Disconnected => "it exited",
            };
            let _ = congo.child.kill();
            let _ = congo.child.wait();
            let mut stderr = String::new();
            if let Some(mut e) = congo.child.stderr.take() {
                let _ = e.read_to_string(&mut stderr);
            }
            panic!(
                "CongoDB did not start on port {port} ({why}); run scripts/congodb.sh to \
                 install it (into $CONGODB_DIR or ~/.cache/hub/congodb).\nits stderr:\n{stderr}"
            );
        }
        congo
    }

    pub fn uri(&self) -> String {
        format!(
            "mongodb://127.0.0.1:{}/?directConnection=true&serverSelectionTimeoutMS=10000",
            self.port
        )
    }
}

impl Drop for Congo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}
