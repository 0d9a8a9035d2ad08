//! The command line: `loadtest [--json] [--allow-remote] <idle|fanout|churn|channels> ...`.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Benchmark client for the hub, speaking the Centrifugo client protocol v2 (JSON, or
/// Protobuf with --protobuf) and the server API. Targets loopback only unless --allow-remote is given.
#[derive(Debug, Parser)]
#[command(name = "loadtest", version)]
pub(crate) struct Cli {
    /// Print a machine-readable JSON summary instead of the human one (no progress bar).
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Allow targets outside the loopback range (127.0.0.0/8, ::1).
    #[arg(long, global = true)]
    pub(crate) allow_remote: bool,
    /// The scenario.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Scenarios.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Open N connections, each connected with a token and subscribed, hold them, and report
    /// the connect rate and the server's memory per connection (also read every N/20
    /// connections, at least 500, while they open), from /proc with --pid, else from each
    /// node's /metrics.
    Idle(IdleArgs),
    /// N subscribers on one channel, a publisher at a fixed rate (through the HTTP or gRPC
    /// server API, or a client connection: --publish-via); report delivery latency (free of
    /// coordinated omission) and server CPU per delivery.
    Fanout(FanoutArgs),
    /// Stable subscribers receive publications at a fixed rate while other connections open
    /// (token + subscribe to the same channel) and close at a given rate; report connect
    /// latency and errors of the churning ones and delivery to the stable ones.
    Churn(ChurnArgs),
    /// Centrifugo's million-connection benchmark, scaled: each connection subscribes to a
    /// personal channel and to the group channel of its group of 10; publications to random
    /// group and personal channels at given rates. Reports deliveries per minute, latency,
    /// server CPU per delivery and RSS per connection.
    Channels(ChannelsArgs),
    /// A worker process of --workers (internal): holds a slice of connections and reports
    /// over stdout as JSON lines.
    #[command(hide = true)]
    Worker {
        /// The worker's spec, JSON.
        spec: String,
    },
}

/// The path a publication takes to the hub (`--publish-via`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PublishVia {
    /// `POST <api-url>/api/publish`, the HTTP server API (`http_api.key`).
    Http,
    /// `Publish` of the gRPC server API at --grpc-url (`grpc_api.enabled`, `grpc_api.key`).
    Grpc,
    /// A `publish` command from one more client connection (user "lt-publisher"); the
    /// channel's namespace must allow it: `allow_publish_for_client`.
    Client,
}

impl PublishVia {
    /// How reports name it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            PublishVia::Http => "HTTP server API",
            PublishVia::Grpc => "gRPC server API",
            PublishVia::Client => "client publish",
        }
    }
}

/// The path the publications take: the HTTP or gRPC server API, or a client connection.
#[derive(Debug, Args)]
pub(crate) struct ApiOpts {
    /// How publications reach the hub. http: POST <api-url>/api/publish. grpc: Publish of the
    /// gRPC server API at --grpc-url (the hub needs grpc_api.enabled; the key goes as metadata
    /// `authorization: apikey KEY`). client: one extra WebSocket connection (token for user
    /// "lt-publisher", signed with --secret, to the first --url) sends `publish` commands;
    /// the channel's namespace must have allow_publish_for_client (allow_publish_for_subscriber
    /// is not enough: the publisher does not subscribe), and the hub's
    /// client.command_rate_limit (100/s by default) must allow the publication rate, its
    /// client.max_message_size (64 KiB) the --size. With grpc and client, one probe
    /// publication ({"loadtest":"probe"}) checks the path before any subscriber opens, so a
    /// wrong key or a refused publish fails the run at once.
    #[arg(long, value_enum, default_value_t = PublishVia::Http)]
    pub(crate) publish_via: PublishVia,
    /// Base URL of the server API (the client posts to <api-url>/api/publish). With several
    /// --url values (a cluster), publications go through this one node; of a
    /// comma-separated list, the first is used.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub(crate) api_url: String,
    /// Address of the gRPC server API (--publish-via grpc; the hub's grpc_api.port).
    #[arg(long, default_value = "http://127.0.0.1:10000")]
    pub(crate) grpc_url: String,
    /// Server API key: http_api.key (sent as X-API-Key) or, with --publish-via grpc,
    /// grpc_api.key. Not needed with --publish-via client.
    #[arg(long)]
    pub(crate) api_key: Option<String>,
    /// Keep-alive HTTP connections (http) or HTTP/2 connections (grpc, calls multiplexed)
    /// for publishing, so that slow calls overlap. With --publish-via client: one connection,
    /// commands pipelined on it.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) publish_connections: u32,
    /// Time limit for one publish call (counted once it has a connection).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) publish_timeout: Duration,
}

impl ApiOpts {
    /// The open files the publisher needs.
    pub(crate) fn files(&self) -> u64 {
        match self.publish_via {
            PublishVia::Http | PublishVia::Grpc => u64::from(self.publish_connections),
            PublishVia::Client => 1,
        }
    }

    /// `--api-key`, required by the server APIs.
    pub(crate) fn key(&self) -> Result<&str, String> {
        self.api_key.as_deref().ok_or_else(|| {
            format!(
                "--api-key is required with --publish-via {}",
                match self.publish_via {
                    PublishVia::Grpc => "grpc (the hub's grpc_api.key)",
                    _ => "http (the hub's http_api.key)",
                }
            )
        })
    }
}

/// Options shared by the scenarios that publish.
#[derive(Debug, Args)]
pub(crate) struct PublishOpts {
    /// Size of each publication's data in bytes (at least 64).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(64..=1_000_000))]
    pub(crate) size: u64,
    /// After the last publication, wait at most this long for deliveries.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub(crate) drain: Duration,
}

/// Where the run's report goes.
#[derive(Debug, Args)]
pub(crate) struct ReportOpts {
    /// Write report.md (summary, command line, machine, date) and SVG plots (latency
    /// percentiles and deliveries per second; for idle, server memory per connection vs
    /// connections) into this directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) report: Option<std::path::PathBuf>,
}

/// `churn` options.
#[derive(Debug, Args)]
pub(crate) struct ChurnArgs {
    /// Connection options.
    #[command(flatten)]
    pub(crate) connect: ConnectOpts,
    /// Server API options.
    #[command(flatten)]
    pub(crate) api: ApiOpts,
    /// Stable subscriber connections, open for the whole run.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub(crate) stable: u64,
    /// Connections opened per second (each connects with a token and subscribes to the
    /// channel, then closes after --lifetime).
    #[arg(long, default_value_t = 10.0)]
    pub(crate) churn: f64,
    /// How long each churning connection stays open once subscribed.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(crate) lifetime: Duration,
    /// The channel everybody subscribes to.
    #[arg(long, default_value = "churn")]
    pub(crate) channel: String,
    /// Publications per second to the channel.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) rate: f64,
    /// How long to publish and churn.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Publication options.
    #[command(flatten)]
    pub(crate) publish: PublishOpts,
    /// Report options.
    #[command(flatten)]
    pub(crate) output: ReportOpts,
}

/// `channels` options.
#[derive(Debug, Args)]
pub(crate) struct ChannelsArgs {
    /// Connection options.
    #[command(flatten)]
    pub(crate) connect: ConnectOpts,
    /// Server API options.
    #[command(flatten)]
    pub(crate) api: ApiOpts,
    /// Connections; connection i subscribes to "personal-<i>" and "group-<i / group-size>".
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub(crate) connections: u64,
    /// Connections per group channel.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub(crate) group_size: u64,
    /// Publications per second to random group channels (0: none).
    #[arg(long, default_value_t = 10.0)]
    pub(crate) group_rate: f64,
    /// Publications per second to random personal channels (0: none).
    #[arg(long, default_value_t = 10.0)]
    pub(crate) personal_rate: f64,
    /// How long to publish.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Publication options.
    #[command(flatten)]
    pub(crate) publish: PublishOpts,
    /// Time to wait after the last connection before measuring the server's memory.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub(crate) settle: Duration,
    /// Report options.
    #[command(flatten)]
    pub(crate) output: ReportOpts,
}

/// Options shared by the scenarios that open connections.
#[derive(Debug, Args)]
pub(crate) struct ConnectOpts {
    /// WebSocket endpoint of the hub; several, comma-separated, for a cluster: connections
    /// spread round-robin over them.
    #[arg(long, default_value = "ws://127.0.0.1:8000/connection/websocket")]
    pub(crate) url: String,
    /// Local source addresses to bind before connecting, comma-separated (e.g.
    /// 127.0.0.1,127.0.0.2): each gives its own ~28k ephemeral ports. Default: the kernel
    /// picks.
    #[arg(long, value_delimiter = ',')]
    pub(crate) source_addrs: Vec<std::net::IpAddr>,
    /// Spread the connections over K worker processes (this binary, each with its own
    /// open-files limit). Default: one process up to 18000 connections, then as many
    /// workers as needed.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub(crate) workers: Option<u32>,
    /// HMAC secret of the connection tokens (client.token.hmac_secret_key); each connection
    /// i gets an HS256 token for user "lt-<i>".
    #[arg(long)]
    pub(crate) secret: String,
    /// Connections opening at once.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) concurrency: u32,
    /// Time limit for one connection to be connected and subscribed.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) connect_timeout: Duration,
    /// No new connection is started after this time from the first.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub(crate) max_connect_time: Duration,
    /// The server's process id, or the ids of a cluster's nodes, comma-separated (e.g.
    /// `--pid $(pgrep -d, -f hub-server)`): report their memory and CPU from /proc, summed
    /// over the processes. Without it, idle reads the memory from each node's /metrics.
    #[arg(long, value_delimiter = ',')]
    pub(crate) pid: Vec<u32>,
    /// Offer permessage-deflate (client_no_context_takeover, server_no_context_takeover) and
    /// fail unless the server accepts it; compressed messages are inflated, each on its own.
    /// This client's own frames go uncompressed.
    #[arg(long)]
    pub(crate) compression: bool,
    /// Speak the Protobuf flavour of the client protocol instead of JSON: offer subprotocol
    /// centrifuge-protobuf and fail unless the server accepts it; commands and replies go in
    /// binary frames, each prefixed by its length as a varint. Publication data arrives as
    /// bytes (the publisher's JSON text). Combines with --compression. The client publisher's
    /// own connection (--publish-via client) stays JSON.
    #[arg(long)]
    pub(crate) protobuf: bool,
}

impl ConnectOpts {
    /// How the connections talk: the flavour, and permessage-deflate.
    pub(crate) fn wire(&self) -> crate::conn::Wire {
        crate::conn::Wire {
            flavour: crate::conn::Flavour::of(self.protobuf),
            compression: self.compression,
        }
    }
}

/// `idle` options.
#[derive(Debug, Args)]
pub(crate) struct IdleArgs {
    /// Connection options.
    #[command(flatten)]
    pub(crate) connect: ConnectOpts,
    /// Connections to open (limited by the open-files limit).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub(crate) connections: u64,
    /// Channel names are "<prefix>-<connection>-<k>".
    #[arg(long, default_value = "idle")]
    pub(crate) channel_prefix: String,
    /// Channels each connection subscribes to.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=128))]
    pub(crate) channels_per_conn: u32,
    /// Time to wait after the last connection before measuring memory.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub(crate) settle: Duration,
    /// Time to hold the connections open after measuring.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) hold: Duration,
    /// Without --pid, the server's memory is `process_resident_memory_bytes` of each node's
    /// Prometheus endpoint (summed over a cluster's nodes): these URLs, comma-separated (one
    /// without a path gets /metrics). Default: http://<host:port of each --url>/metrics,
    /// read if it answers.
    #[arg(long, value_delimiter = ',', conflicts_with = "pid")]
    pub(crate) metrics_url: Vec<String>,
    /// Report options.
    #[command(flatten)]
    pub(crate) output: ReportOpts,
}

/// `fanout` options.
#[derive(Debug, Args)]
pub(crate) struct FanoutArgs {
    /// Connection options.
    #[command(flatten)]
    pub(crate) connect: ConnectOpts,
    /// Subscriber connections, all on one channel.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub(crate) subscribers: u64,
    /// The channel.
    #[arg(long, default_value = "fanout")]
    pub(crate) channel: String,
    /// Publications per second, on a fixed schedule.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) rate: f64,
    /// How long to publish.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Publication options.
    #[command(flatten)]
    pub(crate) publish: PublishOpts,
    /// Server API options.
    #[command(flatten)]
    pub(crate) api: ApiOpts,
    /// Report options.
    #[command(flatten)]
    pub(crate) output: ReportOpts,
}

/// The longest `--duration`, `--hold` and other times accepted.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(3600);

/// Parses `10s`, `500ms`, `2m`, `1.5s`, `1h` or a plain number of seconds, up to one hour.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 10s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "us" | "µs" => n / 1e6,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        u => return Err(format!("unknown unit {u:?} in {s:?} (use ms, s, m or h)")),
    };
    let d = Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))?;
    if d > MAX_DURATION {
        return Err(format!("{s:?} is over the limit of 1h"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("2h").unwrap_err().contains("limit"));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn the_command_line_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let c = Cli::try_parse_from([
            "loadtest",
            "idle",
            "--connections",
            "5",
            "--secret",
            "s",
            "--hold",
            "1s",
            "--json",
            "--compression",
        ])
        .unwrap();
        assert!(c.json);
        let Command::Idle(a) = c.command else {
            panic!()
        };
        assert_eq!(a.connections, 5);
        assert!(a.connect.compression);
        assert!(!a.connect.protobuf);
        assert!(a.connect.pid.is_empty());
        assert_eq!(a.hold, Duration::from_secs(1));
        assert!(
            Cli::try_parse_from(["loadtest", "idle"]).is_err(),
            "--secret is required"
        );
        let c = Cli::try_parse_from([
            "loadtest",
            "channels",
            "--secret",
            "s",
            "--api-key",
            "k",
            "--url",
            "ws://127.0.0.1:1/a,ws://127.0.0.1:2/b",
            "--source-addrs",
            "127.0.0.1,127.0.0.2",
            "--workers",
            "3",
            "--personal-rate",
            "0",
            "--pid",
            "101,102,103",
            "--report",
            "out",
        ])
        .unwrap();
        let Command::Channels(a) = c.command else {
            panic!()
        };
        assert_eq!(a.connect.source_addrs.len(), 2);
        assert_eq!(a.connect.workers, Some(3));
        assert_eq!(a.connect.pid, [101, 102, 103]);
        assert_eq!((a.group_size, a.personal_rate), (10, 0.0));
        assert_eq!(
            a.output.report.as_deref(),
            Some(std::path::Path::new("out"))
        );
        let c = Cli::try_parse_from([
            "loadtest",
            "churn",
            "--secret",
            "s",
            "--api-key",
            "k",
            "--churn",
            "5",
            "--pid",
            "7",
        ])
        .unwrap();
        let Command::Churn(a) = c.command else {
            panic!()
        };
        assert_eq!((a.churn, a.lifetime), (5.0, Duration::from_secs(2)));
        assert_eq!(a.connect.pid, [7]);
        assert!(
            Cli::try_parse_from(["loadtest", "idle", "--secret", "s", "--pid", "1,x"]).is_err()
        );
        assert!(
            Cli::try_parse_from(["loadtest", "idle", "--secret", "s", "--workers", "0"]).is_err()
        );
        assert!(Cli::try_parse_from([
            "loadtest",
            "fanout",
            "--secret",
            "s",
            "--api-key",
            "k",
            "--size",
            "10"
        ])
        .is_err());
    }

    #[test]
    fn every_scenario_takes_protobuf() {
        use crate::conn::{Flavour, Wire};
        for scenario in ["idle", "fanout", "churn", "channels"] {
            let c = Cli::try_parse_from(["loadtest", scenario, "--secret", "s", "--protobuf"])
                .unwrap_or_else(|e| panic!("{scenario}: {e}"));
            let connect = match c.command {
                Command::Idle(a) => a.connect,
                Command::Fanout(a) => a.connect,
                Command::Churn(a) => a.connect,
                Command::Channels(a) => a.connect,
                Command::Worker { .. } => unreachable!(),
            };
            assert_eq!(
                connect.wire(),
                Wire {
                    flavour: Flavour::Protobuf,
                    compression: false
                }
            );
        }
        assert_eq!(
            serde_json::to_value(Flavour::Protobuf).unwrap(),
            serde_json::json!("protobuf")
        );
    }

    #[test]
    fn publications_go_through_http_grpc_or_a_client() {
        let fanout = |extra: &[&str]| {
            let mut args = vec!["loadtest", "fanout", "--secret", "s"];
            args.extend(extra);
            match Cli::try_parse_from(args).map(|c| c.command) {
                Ok(Command::Fanout(a)) => Ok(a),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e),
            }
        };
        let a = fanout(&["--api-key", "k"]).unwrap();
        assert_eq!(a.api.publish_via, PublishVia::Http);
        assert_eq!(a.api.grpc_url, "http://127.0.0.1:10000");
        assert_eq!((a.api.key(), a.api.files()), (Ok("k"), 16));
        let a = fanout(&["--publish-via", "grpc", "--grpc-url", "http://127.0.0.1:9"]).unwrap();
        assert_eq!(a.api.publish_via, PublishVia::Grpc);
        assert_eq!(a.api.grpc_url, "http://127.0.0.1:9");
        let e = a.api.key().unwrap_err();
        assert!(e.contains("--api-key") && e.contains("grpc_api.key"), "{e}");
        let a = fanout(&["--publish-via", "client"]).unwrap();
        assert_eq!((a.api.publish_via, a.api.files()), (PublishVia::Client, 1));
        assert!(fanout(&["--publish-via", "carrier-pigeon"]).is_err());
        assert_eq!(
            serde_json::to_value(PublishVia::Grpc).unwrap(),
            serde_json::json!("grpc")
        );
        // --metrics-url is idle's, and --pid takes its place.
        let c = Cli::try_parse_from([
            "loadtest",
            "idle",
            "--secret",
            "s",
            "--metrics-url",
            "http://127.0.0.1:1/metrics,http://127.0.0.1:2",
        ])
        .unwrap();
        let Command::Idle(a) = c.command else {
            panic!()
        };
        assert_eq!(a.metrics_url.len(), 2);
        assert!(Cli::try_parse_from([
            "loadtest",
            "idle",
            "--secret",
            "s",
            "--pid",
            "1",
            "--metrics-url",
            "http://127.0.0.1:1/metrics",
        ])
        .is_err());
    }
}
