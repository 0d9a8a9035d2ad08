//! `idle`: N connections, each connected and subscribed, held open. Measures the connect rate
//! and, with `--pid`, the server's memory per connection (RSS) and the kernel's TCP memory.

use std::collections::BTreeMap;

use crate::cli::IdleArgs;
use crate::procfs::{self, Proc, TcpSockstat};
use crate::stats::{self, LatencySummary};
use crate::workers::ChannelSpec;
use crate::{scenario, Outcome};

/// The server's memory before and after.
#[derive(Debug, serde::Serialize)]
pub(crate) struct ServerMemory {
    /// The server's pid.
    pub(crate) pid: u32,
    /// RSS before opening, bytes.
    pub(crate) rss_before_bytes: u64,
    /// RSS once all were connected and settled, bytes.
    pub(crate) rss_after_bytes: u64,
    /// RSS growth per connected connection, bytes.
    pub(crate) rss_per_connection_bytes: Option<f64>,
}

/// The kernel's TCP socket memory before and after (both ends of every loopback
/// connection: the server's and this client's).
#[derive(Debug, serde::Serialize)]
pub(crate) struct SocketMemory {
    /// Before opening.
    pub(crate) before: TcpSockstat,
    /// After settling.
    pub(crate) after: TcpSockstat,
    /// Page size used to turn pages into bytes.
    pub(crate) page_size: u64,
    /// Growth of TCP socket memory per connection (both ends), bytes.
    pub(crate) mem_per_connection_bytes: Option<f64>,
}

/// The `idle` summary.
#[derive(Debug, serde::Serialize)]
pub(crate) struct IdleReport {
    /// "idle".
    pub(crate) scenario: &'static str,
    /// The WebSocket URL.
    pub(crate) url: String,
    /// Connections asked for.
    pub(crate) connections: u64,
    /// Channels per connection.
    pub(crate) channels_per_conn: u32,
    /// Connected and subscribed.
    pub(crate) connected: u64,
    /// permessage-deflate was negotiated on every connected connection (`--compression`).
    pub(crate) compression: bool,
    /// Failed to connect or subscribe.
    pub(crate) failed: u64,
    /// Failures by kind.
    pub(crate) failures: BTreeMap<String, u64>,
    /// The first failure in full.
    pub(crate) first_error: Option<String>,
    /// Not tried because --max-connect-time passed.
    pub(crate) not_attempted: u64,
    /// Time to open them all, seconds.
    pub(crate) connect_secs: f64,
    /// Connections (handshake + connect + subscribe) per second.
    pub(crate) connect_rate_per_sec: f64,
    /// Time for one connection to be connected and subscribed.
    pub(crate) connect_latency: LatencySummary,
    /// SYNs the kernel dropped on full accept queues while connecting (machine-wide
    /// `TcpExt: ListenOverflows`); each shows as a ~1 s connect time. Lower --concurrency or
    /// raise the server's listen backlog.
    pub(crate) listen_overflows: Option<u64>,
    /// Time held open after measuring, seconds.
    pub(crate) hold_secs: f64,
    /// Connections that ended before the stop, by reason.
    pub(crate) dropped: BTreeMap<String, u64>,
    /// Server pings answered.
    pub(crate) pings_answered: u64,
    /// Server memory (with --pid).
    pub(crate) server: Option<ServerMemory>,
    /// Kernel TCP memory.
    pub(crate) sockets: Option<SocketMemory>,
    /// This client's own RSS after settling, bytes.
    pub(crate) client_rss_bytes: Option<u64>,
}

/// Runs the scenario.
pub(crate) async fn run(
    args: IdleArgs,
    allow_remote: bool,
    progress: bool,
) -> Result<Outcome<IdleReport>, String> {
    let c = &args.connect;
    let rss_before = scenario::server_rss_before(c.pid)?;
    let sock_before = procfs::tcp_sockstat();
    let overflows_before = procfs::listen_overflows();

    // Idle connections receive nothing: no timeline.
    let (_, held, opened) = scenario::open_subscribers(
        c,
        allow_remote,
        args.connections,
        (0, "--connections"),
        ChannelSpec::PerConn {
            prefix: args.channel_prefix.clone(),
            per_conn: args.channels_per_conn,
        },
        false,
        progress,
    )
    .await?;
    let listen_overflows = match (overflows_before, procfs::listen_overflows()) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b)),
        _ => None,
    };

    tokio::time::sleep(args.settle).await;
    let rss_after = scenario::settled_server_rss(c.pid).await;
    let sock_after = procfs::tcp_sockstat();
    let client_rss = Proc::OwnProcess.rss();

    tokio::time::sleep(args.hold).await;
    let ending = held.stop().await.ending;

    let n = opened.connected;
    let report = IdleReport {
        scenario: "idle",
        url: c.url.clone(),
        connections: args.connections,
        channels_per_conn: args.channels_per_conn,
        connected: n,
        compression: n > 0 && opened.compressed == n,
        failed: opened.failed(),
        failures: opened.failures.clone(),
        first_error: opened.first_error.clone(),
        not_attempted: opened.not_attempted,
        connect_secs: opened.elapsed.as_secs_f64(),
        connect_rate_per_sec: stats::per_sec(n, opened.elapsed),
        connect_latency: LatencySummary::of(&opened.latency),
        listen_overflows,
        hold_secs: args.hold.as_secs_f64(),
        pings_answered: ending.pings_answered,
        dropped: ending.dropped,
        server: match (c.pid, rss_before, rss_after) {
            (Some(pid), Some(b), Some(a)) => Some(ServerMemory {
                pid,
                rss_before_bytes: b,
                rss_after_bytes: a,
                rss_per_connection_bytes: stats::per_item(a as f64 - b as f64, n),
            }),
            _ => None,
        },
        sockets: match (sock_before, sock_after) {
            (Some(b), Some(a)) => {
                let page = procfs::page_size();
                Some(SocketMemory {
                    before: b,
                    after: a,
                    page_size: page,
                    mem_per_connection_bytes: stats::per_item(
                        (a.mem_pages as f64 - b.mem_pages as f64) * page as f64,
                        n,
                    ),
                })
            }
            _ => None,
        },
        client_rss_bytes: client_rss,
    };
    if let Some(dir) = &args.output.report {
        crate::report::write(dir, "idle", &report.human(), &[])?;
    }
    let complete = report.connected == report.connections && report.dropped.is_empty();
    Ok(Outcome { report, complete })
}

fn kib(bytes: f64) -> f64 {
    bytes / 1024.0
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl IdleReport {
    /// The human summary.
    pub(crate) fn human(&self) -> String {
        let mut s = String::new();
        let mut line = |l: String| {
            s.push_str(&l);
            s.push('\n');
        };
        line(format!(
            "idle: {}{}",
            self.url,
            if self.compression {
                " (permessage-deflate)"
            } else {
                ""
            }
        ));
        line(format!(
            "  connections   {} connected, {} failed{} (of {}; {} channel(s) each)",
            self.connected,
            self.failed,
            if self.not_attempted > 0 {
                format!(
                    ", {} not attempted (--max-connect-time)",
                    self.not_attempted
                )
            } else {
                String::new()
            },
            self.connections,
            self.channels_per_conn
        ));
        for (kind, n) in &self.failures {
            line(format!("    {n} × {kind}"));
        }
        if let Some(e) = &self.first_error {
            line(format!("    first error: {e}"));
        }
        line(format!(
            "  connect rate  {:.0}/s ({} in {:.2} s; handshake + connect + subscribe)",
            self.connect_rate_per_sec, self.connected, self.connect_secs
        ));
        let l = &self.connect_latency;
        line(format!(
            "  connect time  p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            l.p50_ms, l.p99_ms, l.max_ms
        ));
        if let Some(n) = self.listen_overflows.filter(|&n| n > 0) {
            line(format!(
                "  listen queue  {n} connection attempts dropped on a full accept queue (TcpExt \
                 ListenOverflows), each retried after 1 s: lower --concurrency or raise the \
                 server's listen backlog"
            ));
        }
        if let Some(m) = &self.server {
            let per = m.rss_per_connection_bytes.unwrap_or(0.0);
            line(format!(
                "  server RSS    {:.1} MiB -> {:.1} MiB: {:.0} bytes ({:.2} KiB) per connection (pid {})",
                mib(m.rss_before_bytes),
                mib(m.rss_after_bytes),
                per,
                kib(per),
                m.pid
            ));
        }
        if let Some(k) = &self.sockets {
            let per = k.mem_per_connection_bytes.unwrap_or(0.0);
            line(format!(
                "  TCP memory    {} -> {} pages: {:.0} bytes ({:.2} KiB) per connection, both ends (sockstat)",
                k.before.mem_pages,
                k.after.mem_pages,
                per,
                kib(per)
            ));
        }
        if let Some(r) = self.client_rss_bytes {
            line(format!("  client RSS    {:.1} MiB", mib(r)));
        }
        let dropped: u64 = self.dropped.values().sum();
        line(format!(
            "  held          {:.1} s; {} pings answered; {} dropped",
            self.hold_secs, self.pings_answered, dropped
        ));
        for (why, n) in &self.dropped {
            line(format!("    {n} × {why}"));
        }
        s
    }
}
