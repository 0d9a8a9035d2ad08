//! Beyond one process's open-files limit: the connections of a scenario spread over worker
//! processes (this binary, run as the hidden `worker` subcommand), and over several local
//! source addresses when one address's ephemeral ports are not enough.
//!
//! The [`plan`] decides how many processes and which source addresses for N connections.
//! The parent keeps the publisher (one schedule) and the measurement; each worker opens its
//! slice of connections, then reports over stdout as JSON lines: [`Msg::Opened`] once its
//! slice is open, [`Msg::Progress`] (deliveries so far) every 100 ms, and [`Msg::Done`]
//! (counts and the latency histogram as `(value, count)` pairs) after the parent writes
//! `stop` to its stdin (or closes it). The parent merges counts and histograms.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::mpsc;

use crate::cli::ConnectOpts;
use crate::conn::PubSink;
use crate::fanout::{Clock, LatencySink};
use crate::stats::{self, Timeline};
use crate::swarm::{self, ChannelsOf, Ending, OnConnected, Opened, Plan, Swarm};
use crate::target::{self, WsTarget};

/// Connections one process holds at most (the hard open-files limit is 20,000 here; the
/// rest is margin for the runtime, the API client and /proc reads).
pub(crate) const PER_PROCESS: u64 = 18_000;

/// Connections from one source address at most. A socket bound to a source address before
/// connecting holds its port for every destination, so this is per address, whatever the
/// number of servers; Linux gives about 28,000 ephemeral ports (32768-60999).
pub(crate) const PER_SOURCE: u64 = 25_000;

/// Worker processes at most.
pub(crate) const MAX_WORKERS: u64 = 64;

/// A worker's share of the connections: global indices `first .. first + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Slice {
    /// The first connection's index.
    pub(crate) first: u64,
    /// How many.
    pub(crate) count: u64,
}

/// Where N connections go: processes and source addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    /// One slice per worker process; empty: all in this process.
    pub(crate) workers: Vec<Slice>,
    /// Source addresses to bind (round-robin, see [`swarm::route`]); empty: the kernel
    /// picks.
    pub(crate) sources: Vec<IpAddr>,
}

/// Plans `n` connections to `targets`: `workers` processes if given (else as few as
/// [`PER_PROCESS`] allows, none when one process is enough), the `sources` given (else,
/// when one address cannot hold the connections to a target, as many loopback addresses
/// 127.0.0.1, 127.0.0.2, ... as [`PER_SOURCE`] needs).
pub(crate) fn plan(
    n: u64,
    targets: &[SocketAddr],
    sources: &[IpAddr],
    workers: Option<u64>,
    flag: &str,
) -> Result<Layout, String> {
    let processes = match workers {
        Some(k) => {
            if k == 0 || k > MAX_WORKERS {
                return Err(format!("--workers {k}: must be 1 to {MAX_WORKERS}"));
            }
            if n.div_ceil(k) > PER_PROCESS {
                return Err(format!(
                    "--workers {k}: {} connections per process, over the {PER_PROCESS} one \
                     process may hold; use --workers {} or more",
                    n.div_ceil(k),
                    n.div_ceil(PER_PROCESS)
                ));
            }
            k
        }
        None => {
            let k = n.div_ceil(PER_PROCESS);
            if k > MAX_WORKERS {
                return Err(format!(
                    "{flag} {n} needs {k} worker processes of at most {PER_PROCESS} connections \
                     (one process's open files), over the limit of {MAX_WORKERS} processes; \
                     the most this machine allows is {flag} {}",
                    MAX_WORKERS * PER_PROCESS
                ));
            }
            if k <= 1 {
                0
            } else {
                k
            }
        }
    };
    let slices = match (n.checked_div(processes), n.checked_rem(processes)) {
        (Some(base), Some(extra)) => {
            let mut first = 0;
            (0..processes)
                .map(|k| {
                    let count = base + u64::from(k < extra);
                    let s = Slice { first, count };
                    first += count;
                    s
                })
                .filter(|s| s.count > 0)
                .collect()
        }
        _ => Vec::new(),
    };
    let sources = if !sources.is_empty() {
        let per = n.div_ceil(sources.len() as u64);
        if per > PER_SOURCE {
            return Err(format!(
                "{n} connections over {} source address(es) is {per} per address, over the \
                 {PER_SOURCE} one address's ports allow: give at least {} --source-addrs",
                sources.len(),
                n.div_ceil(PER_SOURCE)
            ));
        }
        sources.to_vec()
    } else {
        // The kernel picks the port per (source, destination): each target holds up to
        // PER_SOURCE from the one default source.
        let per_target = n.div_ceil(targets.len().max(1) as u64);
        if per_target <= PER_SOURCE {
            Vec::new()
        } else if targets.iter().all(|t| t.ip().is_loopback() && t.is_ipv4()) {
            let count = n.div_ceil(PER_SOURCE);
            if count > 250 {
                return Err(format!("{n} connections need over 250 source addresses"));
            }
            (1..=count as u8)
                .map(|k| IpAddr::V4(Ipv4Addr::new(127, 0, 0, k)))
                .collect()
        } else {
            return Err(format!(
                "{per_target} connections to one server address need more ephemeral ports than \
                 one source address has ({PER_SOURCE}): give --source-addrs"
            ));
        }
    };
    Ok(Layout {
        workers: slices,
        sources,
    })
}

/// The channels each connection subscribes to, in a form a worker can be sent.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) enum ChannelSpec {
    /// Every connection on one channel (fanout, churn).
    Fixed(String),
    /// Connection i on `<prefix>-<i>-<k>` for k < per_conn (idle).
    PerConn {
        /// The prefix.
        prefix: String,
        /// Channels per connection.
        per_conn: u32,
    },
    /// Connection i on `personal-<i>` and `group-<i / group_size>` (channels).
    PersonalGroup {
        /// Connections per group.
        group_size: usize,
    },
}

impl ChannelSpec {
    /// The channels of connection `i`, as a function.
    pub(crate) fn function(&self) -> ChannelsOf {
        match self.clone() {
            ChannelSpec::Fixed(c) => Arc::new(move |_| vec![c.clone()]),
            ChannelSpec::PerConn { prefix, per_conn } => {
                Arc::new(move |i| (0..per_conn).map(|k| format!("{prefix}-{i}-{k}")).collect())
            }
            ChannelSpec::PersonalGroup { group_size } => {
                Arc::new(move |i| crate::channels::channels_of(i, group_size))
            }
        }
    }
}

/// What one worker opens.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct WorkerSpec {
    /// `--url` (comma-separated).
    pub(crate) urls: String,
    /// `--allow-remote`.
    pub(crate) allow_remote: bool,
    /// Source addresses.
    pub(crate) sources: Vec<IpAddr>,
    /// Token secret.
    pub(crate) secret: String,
    /// The slice.
    pub(crate) slice: Slice,
    /// Connections opening at once in this worker.
    pub(crate) concurrency: u32,
    /// Per-connection limit, ms.
    pub(crate) connect_timeout_ms: u64,
    /// No new connection after this, ms.
    pub(crate) max_connect_time_ms: u64,
    /// Offer permessage-deflate.
    pub(crate) compression: bool,
    /// Speak the Protobuf flavour.
    #[serde(default)]
    pub(crate) protobuf: bool,
    /// The channels.
    pub(crate) channels: ChannelSpec,
    /// Keep per-second latency buckets (`--report`).
    #[serde(default)]
    pub(crate) timeline: bool,
    /// Print [`Msg::Connected`] each time this many more are connected while opening (0:
    /// never).
    #[serde(default)]
    pub(crate) connected_every: u64,
}

/// How the opening phase is watched.
#[derive(Clone, Default)]
pub(crate) struct Watch {
    /// A progress bar on stderr (when it is a terminal).
    pub(crate) progress: bool,
    /// Told the count connected so far as it grows: at every connection in this process;
    /// with worker processes, at their [`Msg::Connected`] lines (every 0.5% of a slice)
    /// with the sum over them.
    pub(crate) on_connected: Option<OnConnected>,
}

impl Watch {
    /// A progress bar (when `progress` is set), nothing else.
    pub(crate) fn bar(progress: bool) -> Self {
        Watch {
            progress,
            on_connected: None,
        }
    }
}

/// [`Msg::Connected`] lines per worker slice, at most (when they are asked for).
const CONNECTED_LINES: u64 = 200;

/// A line a worker prints.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Msg {
    /// It could not run (its first connection failed, ...).
    Error(String),
    /// Its slice is open.
    Opened {
        /// Connected and subscribed.
        connected: u64,
        /// With permessage-deflate.
        compressed: u64,
        /// Data frame bytes received while opening.
        #[serde(default)]
        opening_bytes: u64,
        /// Failures by kind.
        failures: BTreeMap<String, u64>,
        /// The first failure.
        first_error: Option<String>,
        /// Not tried (deadline).
        not_attempted: u64,
        /// Opening time, µs.
        elapsed_us: u64,
        /// Connect latency histogram, `(µs, count)` pairs.
        latency: Vec<(u64, u64)>,
        /// Local indices not connected.
        not_connected: Vec<u64>,
    },
    /// Connected so far, while opening (with `connected_every` in the spec).
    Connected {
        /// Connected and subscribed so far, of its slice.
        connected: u64,
    },
    /// Deliveries so far.
    Progress {
        /// Deliveries so far.
        deliveries: u64,
    },
    /// Its connections are closed.
    Done {
        /// Deliveries.
        deliveries: u64,
        /// Publications without our stamp.
        foreign: u64,
        /// Last receipt, µs since the epoch.
        last_us: u64,
        /// Delivery latency histogram, `(µs, count)` pairs.
        latency: Vec<(u64, u64)>,
        /// How the connections ended.
        ending: Ending,
        /// Per-second latency buckets, with `timeline` in the spec.
        #[serde(default)]
        timeline: Vec<(u64, Vec<(u64, u64)>)>,
    },
}

fn emit(m: &Msg) {
    if let Ok(line) = serde_json::to_string(m) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// The hidden `worker` subcommand: runs `spec` (JSON), talking over stdin and stdout.
pub(crate) async fn worker(spec: &str) -> Result<(), String> {
    let spec: WorkerSpec =
        serde_json::from_str(spec).map_err(|e| format!("bad worker spec: {e}"))?;
    let r = worker_run(spec).await;
    if let Err(e) = &r {
        emit(&Msg::Error(e.clone()));
    }
    r
}

async fn worker_run(spec: WorkerSpec) -> Result<(), String> {
    let targets = Arc::new(target::ws_list(&spec.urls, spec.allow_remote).await?);
    target::ensure_open_files(spec.slice.count, 0, "connections per worker")?;
    let sink = Arc::new(LatencySink::new(
        Clock::new(),
        spec.timeline.then(Timeline::default),
    ));
    let plan = Plan {
        targets,
        sources: Arc::new(spec.sources.clone()),
        first: spec.slice.first as usize,
        secret: spec.secret.clone(),
        connections: spec.slice.count as usize,
        concurrency: spec.concurrency.max(1) as usize,
        connect_timeout: Duration::from_millis(spec.connect_timeout_ms),
        max_connect_time: Duration::from_millis(spec.max_connect_time_ms),
        channels: spec.channels.function(),
        sink: sink.clone(),
        wire: crate::conn::Wire {
            flavour: crate::conn::Flavour::of(spec.protobuf),
            compression: spec.compression,
        },
        progress: false,
        on_connected: (spec.connected_every > 0).then(|| {
            let every = spec.connected_every;
            Arc::new(move |connected: u64| {
                if connected.is_multiple_of(every) {
                    emit(&Msg::Connected { connected });
                }
            }) as OnConnected
        }),
    };
    let (swarm, opened) = swarm::open(plan).await.map_err(|e| e.to_string())?;
    emit(&Msg::Opened {
        connected: opened.connected,
        compressed: opened.compressed,
        opening_bytes: opened.opening_bytes,
        failures: opened.failures.clone(),
        first_error: opened.first_error.clone(),
        not_attempted: opened.not_attempted,
        elapsed_us: opened.elapsed.as_micros() as u64,
        latency: stats::encode(&opened.latency),
        not_connected: opened
            .connected_ids
            .iter()
            .enumerate()
            .filter(|(_, c)| !**c)
            .map(|(i, _)| i as u64)
            .collect(),
    });
    // `stop` on stdin, or its end, stops the worker; `origin <µs>` sets the timeline's.
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let for_stdin = sink.clone();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(l) = line else { break };
            let l = l.trim();
            if l == "stop" {
                break;
            }
            if let Some(us) = l.strip_prefix("origin ").and_then(|u| u.parse().ok()) {
                if let Some(t) = &for_stdin.timeline {
                    t.set_origin(us);
                }
            }
        }
        let _ = stop_tx.send(());
    });
    loop {
        tokio::select! {
            _ = &mut stop_rx => break,
            _ = tokio::time::sleep(Duration::from_millis(100)) => emit(&Msg::Progress {
                deliveries: sink.deliveries.load(Ordering::Relaxed),
            }),
        }
    }
    let ending = swarm.stop(Duration::from_secs(10)).await;
    emit(&Msg::Done {
        deliveries: sink.deliveries.load(Ordering::Relaxed),
        foreign: sink.foreign.load(Ordering::Relaxed),
        last_us: sink.last_us.load(Ordering::Relaxed),
        latency: stats::encode(&sink.recorder.merged()),
        ending,
        timeline: sink
            .timeline
            .as_ref()
            .map(Timeline::encode)
            .unwrap_or_default(),
    });
    Ok(())
}

/// Worker processes holding connections.
pub(crate) struct Fleet {
    children: Vec<Child>,
    stdins: Vec<Option<ChildStdin>>,
    progress: Arc<Vec<AtomicU64>>,
    rx: mpsc::UnboundedReceiver<(usize, Option<Msg>)>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for c in &mut self.children {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

/// What the subscribers received, all processes together.
#[derive(Debug)]
pub(crate) struct Received {
    /// How the connections ended.
    pub(crate) ending: Ending,
    /// Deliveries.
    pub(crate) deliveries: u64,
    /// Publications without our stamp.
    pub(crate) foreign: u64,
    /// Last receipt, µs since the epoch.
    pub(crate) last_us: u64,
    /// Delivery latency, µs.
    pub(crate) latency: Histogram<u64>,
    /// Delivery latency per second (empty unless asked for).
    pub(crate) timeline: Timeline,
}

/// Subscribers held here or by workers.
pub(crate) enum Held {
    /// In this process.
    Local {
        /// The connections.
        swarm: Swarm,
        /// Where their publications go.
        sink: Arc<LatencySink>,
    },
    /// In worker processes.
    Fleet(Fleet),
}

impl Held {
    /// Deliveries so far (from the workers' last progress lines).
    pub(crate) fn deliveries(&self) -> u64 {
        match self {
            Held::Local { sink, .. } => sink.deliveries.load(Ordering::Relaxed),
            Held::Fleet(f) => f.progress.iter().map(|p| p.load(Ordering::Relaxed)).sum(),
        }
    }

    /// The worker processes' ids (none when local).
    pub(crate) fn pids(&self) -> Vec<u32> {
        match self {
            Held::Local { .. } => Vec::new(),
            Held::Fleet(f) => f.children.iter().map(Child::id).collect(),
        }
    }

    /// Sets the origin of the per-second timelines (`--report`) here or in the workers.
    pub(crate) fn set_origin(&mut self, origin_us: u64) {
        match self {
            Held::Local { sink, .. } => {
                if let Some(t) = &sink.timeline {
                    t.set_origin(origin_us);
                }
            }
            Held::Fleet(f) => {
                for s in f.stdins.iter_mut().flatten() {
                    let _ = writeln!(s, "origin {origin_us}");
                    let _ = s.flush();
                }
            }
        }
    }

    /// Waits until `expected` deliveries arrived, at most `drain`.
    pub(crate) async fn drain(&self, expected: u64, drain: Duration) {
        let deadline = std::time::Instant::now() + drain;
        while self.deliveries() < expected && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Closes every connection and sums up what they received.
    pub(crate) async fn stop(self) -> Received {
        match self {
            Held::Local { swarm, sink } => {
                let ending = swarm.stop(Duration::from_secs(10)).await;
                let timeline = Timeline::default();
                if let Some(t) = &sink.timeline {
                    timeline.add(&t.encode());
                }
                Received {
                    ending,
                    deliveries: sink.deliveries.load(Ordering::Relaxed),
                    foreign: sink.foreign.load(Ordering::Relaxed),
                    last_us: sink.last_us.load(Ordering::Relaxed),
                    latency: sink.recorder.merged(),
                    timeline,
                }
            }
            Held::Fleet(f) => f.stop().await,
        }
    }
}

/// Opens `n` subscribers as `c` asks: in this process, or over worker processes when the
/// plan says so; their publications go to `sink` (here) or to the workers' own sinks.
pub(crate) async fn open(
    c: &ConnectOpts,
    allow_remote: bool,
    n: u64,
    (extra_files, flag): (u64, &str),
    channels: ChannelSpec,
    sink: Arc<LatencySink>,
    watch: Watch,
) -> Result<(Held, Opened), String> {
    let targets: Vec<WsTarget> = target::ws_list(&c.url, allow_remote).await?;
    target::check_sources(&c.source_addrs, allow_remote)?;
    let addrs: Vec<SocketAddr> = targets.iter().map(|t| t.addr).collect();
    let layout = plan(n, &addrs, &c.source_addrs, c.workers.map(u64::from), flag)?;
    if layout.workers.is_empty() {
        target::ensure_open_files(n, extra_files, flag)?;
        let plan = Plan {
            targets: Arc::new(targets),
            sources: Arc::new(layout.sources),
            first: 0,
            secret: c.secret.clone(),
            connections: usize::try_from(n).map_err(|e| e.to_string())?,
            concurrency: c.concurrency as usize,
            connect_timeout: c.connect_timeout,
            max_connect_time: c.max_connect_time,
            channels: channels.function(),
            sink: sink.clone() as Arc<dyn PubSink>,
            wire: c.wire(),
            progress: watch.progress,
            on_connected: watch.on_connected,
        };
        let (swarm, opened) = swarm::open(plan).await.map_err(|e| e.to_string())?;
        return Ok((Held::Local { swarm, sink }, opened));
    }
    target::ensure_open_files(0, extra_files, flag)?;
    let k = layout.workers.len() as u32;
    let specs = layout
        .workers
        .iter()
        .map(|&slice| WorkerSpec {
            urls: c.url.clone(),
            allow_remote,
            sources: layout.sources.clone(),
            secret: c.secret.clone(),
            slice,
            concurrency: c.concurrency.div_ceil(k),
            connect_timeout_ms: c.connect_timeout.as_millis() as u64,
            max_connect_time_ms: c.max_connect_time.as_millis() as u64,
            compression: c.compression,
            protobuf: c.protobuf,
            channels: channels.clone(),
            timeline: sink.timeline.is_some(),
            connected_every: if watch.on_connected.is_some() {
                (slice.count / CONNECTED_LINES).max(1)
            } else {
                0
            },
        })
        .collect();
    let limit = c.max_connect_time + c.connect_timeout + Duration::from_secs(30);
    Fleet::open(specs, n, limit, watch.on_connected).await
}

impl Fleet {
    /// Starts one worker per spec and waits (at most `limit`) until each has opened its
    /// slice, telling `on_connected` the sum connected so far as they report it; fails with
    /// the first worker error.
    async fn open(
        specs: Vec<WorkerSpec>,
        n: u64,
        limit: Duration,
        on_connected: Option<OnConnected>,
    ) -> Result<(Held, Opened), String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let progress = Arc::new((0..specs.len()).map(|_| AtomicU64::new(0)).collect());
        let mut fleet = Fleet {
            children: Vec::new(),
            stdins: Vec::new(),
            progress,
            rx,
        };
        for (k, spec) in specs.iter().enumerate() {
            let json = serde_json::to_string(spec).map_err(|e| e.to_string())?;
            let mut child = Command::new(&exe)
                .arg("worker")
                .arg(json)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("cannot start worker process {k}: {e}"))?;
            let stdout = child.stdout.take();
            fleet.stdins.push(child.stdin.take());
            fleet.children.push(child);
            let (tx, progress) = (tx.clone(), fleet.progress.clone());
            std::thread::spawn(move || {
                if let Some(out) = stdout {
                    for line in BufReader::new(out).lines() {
                        let Ok(line) = line else { break };
                        match serde_json::from_str::<Msg>(&line) {
                            Ok(Msg::Progress { deliveries }) => {
                                progress[k].store(deliveries, Ordering::Relaxed)
                            }
                            Ok(m) => {
                                if let Msg::Done { deliveries, .. } = &m {
                                    progress[k].store(*deliveries, Ordering::Relaxed);
                                }
                                let _ = tx.send((k, Some(m)));
                            }
                            Err(e) => {
                                let _ = tx.send((
                                    k,
                                    Some(Msg::Error(format!("unreadable line ({e}): {line:.200}"))),
                                ));
                            }
                        }
                    }
                }
                let _ = tx.send((k, None));
            });
        }
        let mut opened = Opened {
            connected: 0,
            compressed: 0,
            opening_bytes: 0,
            failures: BTreeMap::new(),
            first_error: None,
            not_attempted: 0,
            elapsed: Duration::ZERO,
            latency: stats::new_histogram(),
            connected_ids: vec![true; n as usize],
        };
        let deadline = tokio::time::Instant::now() + limit;
        // Connected so far, per worker.
        let mut so_far = vec![0u64; specs.len()];
        let mut tell = |k: usize, connected: u64| {
            if let Some(f) = &on_connected {
                so_far[k] = connected;
                f(so_far.iter().sum());
            }
        };
        let mut waiting = specs.len();
        while waiting > 0 {
            let (k, msg) = match tokio::time::timeout_at(deadline, fleet.rx.recv()).await {
                Ok(Some(m)) => m,
                Ok(None) => return Err("the worker processes ended".into()),
                Err(_) => return Err(format!("worker processes not open within {limit:?}")),
            };
            match msg {
                Some(Msg::Opened {
                    connected,
                    compressed,
                    opening_bytes,
                    failures,
                    first_error,
                    not_attempted,
                    elapsed_us,
                    latency,
                    not_connected,
                }) => {
                    waiting -= 1;
                    tell(k, connected);
                    opened.connected += connected;
                    opened.compressed += compressed;
                    opened.opening_bytes += opening_bytes;
                    for (kind, c) in failures {
                        *opened.failures.entry(kind).or_default() += c;
                    }
                    if opened.first_error.is_none() {
                        opened.first_error = first_error;
                    }
                    opened.not_attempted += not_attempted;
                    opened.elapsed = opened.elapsed.max(Duration::from_micros(elapsed_us));
                    stats::decode_into(&mut opened.latency, &latency);
                    let first = specs[k].slice.first;
                    for i in not_connected {
                        if let Some(c) = opened.connected_ids.get_mut((first + i) as usize) {
                            *c = false;
                        }
                    }
                }
                Some(Msg::Connected { connected }) => tell(k, connected),
                Some(Msg::Error(e)) => return Err(format!("worker {k}: {e}")),
                Some(_) => {}
                None => return Err(format!("worker process {k} ended before opening")),
            }
        }
        Ok((Held::Fleet(fleet), opened))
    }

    /// Tells every worker to stop and merges their final reports.
    async fn stop(mut self) -> Received {
        for s in &mut self.stdins {
            if let Some(mut s) = s.take() {
                let _ = s.write_all(b"stop\n");
            }
        }
        let mut r = Received {
            ending: Ending::default(),
            deliveries: 0,
            foreign: 0,
            last_us: 0,
            latency: stats::new_histogram(),
            timeline: Timeline::default(),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut done = vec![false; self.children.len()];
        while done.iter().any(|d| !d) {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((
                    k,
                    Some(Msg::Done {
                        deliveries,
                        foreign,
                        last_us,
                        latency,
                        ending,
                        timeline,
                    }),
                ))) => {
                    done[k] = true;
                    r.timeline.add(&timeline);
                    r.deliveries += deliveries;
                    r.foreign += foreign;
                    r.last_us = r.last_us.max(last_us);
                    stats::decode_into(&mut r.latency, &latency);
                    r.ending.pings_answered += ending.pings_answered;
                    r.ending.compressed_messages += ending.compressed_messages;
                    r.ending.bytes_received += ending.bytes_received;
                    for (why, n) in ending.dropped {
                        *r.ending.dropped.entry(why).or_default() += n;
                    }
                }
                // Its output ended (after its report, or without one).
                Ok(Some((k, None))) => {
                    if !done[k] {
                        done[k] = true;
                        *r.ending
                            .dropped
                            .entry(format!("worker {k} ended without a report"))
                            .or_default() += 1;
                    }
                }
                Ok(Some((k, Some(Msg::Error(e))))) => {
                    *r.ending
                        .dropped
                        .entry(format!("worker {k}: {e}"))
                        .or_default() += 1;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    let missing = done.iter().filter(|d| !**d).count();
                    *r.ending
                        .dropped
                        .entry("workers not done in 20 s".into())
                        .or_default() += missing as u64;
                    break;
                }
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: usize) -> Vec<SocketAddr> {
        (0..n)
            .map(|k| SocketAddr::from(([127, 0, 0, 1], 8000 + k as u16)))
            .collect()
    }

    #[test]
    fn small_runs_stay_in_one_process() {
        let l = plan(5_000, &addrs(1), &[], None, "-n").unwrap();
        assert!(l.workers.is_empty());
        assert!(l.sources.is_empty());
        assert_eq!(
            plan(18_000, &addrs(1), &[], None, "-n").unwrap().workers,
            vec![]
        );
    }

    #[test]
    fn large_runs_split_evenly_over_processes() {
        let l = plan(100_000, &addrs(6), &[], None, "-n").unwrap();
        assert_eq!(l.workers.len(), 6);
        assert_eq!(l.workers.iter().map(|s| s.count).sum::<u64>(), 100_000);
        assert!(l.workers.iter().all(|s| s.count <= PER_PROCESS));
        // Contiguous, in order.
        let mut next = 0;
        for s in &l.workers {
            assert_eq!(s.first, next);
            next += s.count;
        }
        // Six servers: about 16,667 per (source, server) pair, no extra source needed.
        assert!(l.sources.is_empty());
        let l = plan(18_001, &addrs(1), &[], None, "-n").unwrap();
        assert_eq!(
            l.workers,
            vec![
                Slice {
                    first: 0,
                    count: 9_001
                },
                Slice {
                    first: 9_001,
                    count: 9_000
                }
            ]
        );
    }

    #[test]
    fn explicit_workers_are_checked() {
        let l = plan(10, &addrs(1), &[], Some(3), "-n").unwrap();
        assert_eq!(
            l.workers.iter().map(|s| s.count).collect::<Vec<_>>(),
            [4, 3, 3]
        );
        // More workers than connections: the empty ones are left out.
        assert_eq!(
            plan(2, &addrs(1), &[], Some(4), "-n")
                .unwrap()
                .workers
                .len(),
            2
        );
        let e = plan(
            40_000,
            &addrs(1),
            &["127.0.0.1".parse().unwrap(); 2],
            Some(2),
            "-n",
        )
        .unwrap_err();
        assert!(e.contains("--workers 3"), "{e}");
        assert!(plan(1, &addrs(1), &[], Some(0), "-n").is_err());
        let e = plan(10_000_000, &addrs(1), &[], None, "--connections").unwrap_err();
        assert!(
            e.contains("open files") && e.contains("allows is --connections 1152000"),
            "{e}"
        );
    }

    #[test]
    fn one_server_past_one_sources_ports_gets_more_loopback_sources() {
        let l = plan(60_000, &addrs(1), &[], None, "-n").unwrap();
        assert_eq!(
            l.sources,
            ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
                .map(|a| a.parse::<IpAddr>().unwrap())
                .to_vec()
        );
        assert_eq!(l.workers.len(), 4);
        // A remote server: the addresses must be given.
        let remote = [SocketAddr::from(([192, 0, 2, 1], 8000))];
        let e = plan(60_000, &remote, &[], None, "-n").unwrap_err();
        assert!(e.contains("--source-addrs"), "{e}");
    }

    #[test]
    fn given_sources_must_be_enough() {
        let two: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()];
        assert_eq!(
            plan(50_000, &addrs(1), &two, None, "-n").unwrap().sources,
            two
        );
        let e = plan(50_001, &addrs(1), &two, None, "-n").unwrap_err();
        assert!(e.contains("at least 3 --source-addrs"), "{e}");
    }

    #[test]
    fn routes_give_every_source_and_target_an_equal_share() {
        let targets: Vec<WsTarget> = addrs(3)
            .into_iter()
            .map(|addr| WsTarget {
                url: format!("ws://{addr}/"),
                addr,
            })
            .collect();
        let sources: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()];
        let mut pairs: BTreeMap<(SocketAddr, IpAddr), u32> = BTreeMap::new();
        for i in 0..600 {
            let (t, s) = swarm::route(&targets, &sources, i);
            *pairs.entry((t.addr, s.unwrap())).or_default() += 1;
        }
        assert_eq!(pairs.len(), 6);
        assert!(pairs.values().all(|&n| n == 100), "{pairs:?}");
        assert_eq!(swarm::route(&targets, &[], 4).1, None);
    }

    #[test]
    fn messages_round_trip_as_json_lines() {
        let m = Msg::Progress { deliveries: 7 };
        let line = serde_json::to_string(&m).unwrap();
        assert_eq!(line, r#"{"progress":{"deliveries":7}}"#);
        let spec = WorkerSpec {
            urls: "ws://127.0.0.1:1/x".into(),
            allow_remote: false,
            sources: vec![],
            secret: "s".into(),
            slice: Slice { first: 5, count: 2 },
            concurrency: 1,
            connect_timeout_ms: 1,
            max_connect_time_ms: 1,
            compression: false,
            protobuf: true,
            channels: ChannelSpec::PersonalGroup { group_size: 10 },
            timeline: true,
            connected_every: 3,
        };
        let back: WorkerSpec =
            serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(back.slice, spec.slice);
        assert_eq!((back.channels.function())(12), ["personal-12", "group-1"]);
        assert_eq!(back.connected_every, 3);
        assert!(back.protobuf);
        let line = serde_json::to_string(&Msg::Connected { connected: 9 }).unwrap();
        assert_eq!(line, r#"{"connected":{"connected":9}}"#);
        // A spec from before `connected_every`: no such lines.
        let mut old = serde_json::to_value(&spec).unwrap();
        old.as_object_mut().unwrap().remove("connected_every");
        old.as_object_mut().unwrap().remove("protobuf");
        let back: WorkerSpec = serde_json::from_value(old).unwrap();
        assert_eq!(back.connected_every, 0);
        assert!(!back.protobuf, "JSON by default");
    }
}
