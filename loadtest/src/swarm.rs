//! Many connections: the first opened alone (a probe, so a wrong URL or secret fails at once
//! with a clear message), the rest with bounded concurrency and a deadline, each held by its
//! own task until told to stop.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use crate::conn::{self, ConnError, EndReason, Ended, PubSink, Wire};
use crate::stats;
use crate::target::WsTarget;
use crate::token;

/// The channels connection `i` subscribes to.
pub(crate) type ChannelsOf = Arc<dyn Fn(usize) -> Vec<String> + Send + Sync>;

/// Told the number connected and subscribed so far, each time one more is (called from the
/// opening loop, one call at a time: keep it cheap).
pub(crate) type OnConnected = Arc<dyn Fn(u64) + Send + Sync>;

/// What to open.
pub(crate) struct Plan {
    /// Where: connection `i` goes to `targets[i % len]` (round-robin over the URLs).
    pub(crate) targets: Arc<Vec<WsTarget>>,
    /// Local source addresses to bind before connecting: connection `i` uses
    /// `sources[(i / targets.len()) % len]`; none: the kernel picks.
    pub(crate) sources: Arc<Vec<IpAddr>>,
    /// The global index of the first connection (tokens name user `lt-<index>`; a worker
    /// process holds a slice starting here).
    pub(crate) first: usize,
    /// HMAC secret for the connection tokens.
    pub(crate) secret: String,
    /// How many connections.
    pub(crate) connections: usize,
    /// How many opening at once.
    pub(crate) concurrency: usize,
    /// Limit for one connection to be connected and subscribed.
    pub(crate) connect_timeout: Duration,
    /// No new connection is started after this much time.
    pub(crate) max_connect_time: Duration,
    /// Channels per connection.
    pub(crate) channels: ChannelsOf,
    /// The protocol flavour, and permessage-deflate (connections whose server does not
    /// accept what is offered fail).
    pub(crate) wire: Wire,
    /// Where publications go.
    pub(crate) sink: Arc<dyn PubSink>,
    /// Show a progress bar on stderr (when it is a terminal).
    pub(crate) progress: bool,
    /// Told the count connected so far as it grows.
    pub(crate) on_connected: Option<OnConnected>,
}

/// The opening phase, summed up.
#[derive(Debug)]
pub(crate) struct Opened {
    /// Connections connected and subscribed.
    pub(crate) connected: u64,
    /// Of them, connections with permessage-deflate negotiated.
    pub(crate) compressed: u64,
    /// Data frame bytes (headers included) the connected ones received while opening: the
    /// replies to connect and subscribe.
    pub(crate) opening_bytes: u64,
    /// Connections that failed, by kind of failure.
    pub(crate) failures: BTreeMap<String, u64>,
    /// The first failure in full.
    pub(crate) first_error: Option<String>,
    /// Connections never tried because the deadline passed.
    pub(crate) not_attempted: u64,
    /// Time from the first attempt to the last answer.
    pub(crate) elapsed: Duration,
    /// Time to connect and subscribe, per successful connection (µs).
    pub(crate) latency: Histogram<u64>,
    /// Which connections (by local index) are connected and subscribed.
    pub(crate) connected_ids: Vec<bool>,
}

impl Opened {
    /// Connections that failed.
    pub(crate) fn failed(&self) -> u64 {
        self.failures.values().sum()
    }
}

/// How the held connections ended.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Ending {
    /// Ended by the server or by an error before the stop, by close code or error.
    pub(crate) dropped: BTreeMap<String, u64>,
    /// Server pings answered, over all connections.
    pub(crate) pings_answered: u64,
    /// Compressed messages received, over all connections.
    pub(crate) compressed_messages: u64,
    /// Data frame bytes (WebSocket headers included, as on the wire) received once
    /// subscribed, until told to stop, over all connections.
    #[serde(default)]
    pub(crate) bytes_received: u64,
}

/// Open connections, held by their tasks.
pub(crate) struct Swarm {
    stop: watch::Sender<bool>,
    tasks: JoinSet<Option<Ended>>,
}

/// Opens the connections of `plan`. Fails only when the first one does, with its error.
pub(crate) async fn open(plan: Plan) -> Result<(Swarm, Opened), ConnError> {
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut latency = stats::new_histogram();
    let started = Instant::now();

    // The probe: connection 0, alone.
    let t0 = Instant::now();
    let first = plan.first;
    let token0 = token::for_connection(&plan.secret, first);
    let (target0, source0) = route(&plan.targets, &plan.sources, first);
    let session = conn::open(
        target0,
        source0,
        &token0,
        &(plan.channels)(first),
        plan.wire,
        plan.connect_timeout,
    )
    .await?;
    let compressed0 = session.compressed();
    let opening0 = session.opening_bytes();
    latency.saturating_record(micros(t0.elapsed()));
    {
        let sink = plan.sink.clone();
        let rx = stop_rx.clone();
        tasks.spawn(async move { Some(session.run(first, rx, &*sink).await) });
    }

    let on_connected = plan.on_connected.clone();
    if let Some(f) = &on_connected {
        f(1);
    }
    let bar = progress_bar(plan.connections as u64, plan.progress);
    bar.inc(1);
    let mut opened = Opened {
        connected: 1,
        compressed: u64::from(compressed0),
        opening_bytes: opening0,
        failures: BTreeMap::new(),
        first_error: None,
        not_attempted: 0,
        elapsed: Duration::ZERO,
        latency,
        connected_ids: vec![false; plan.connections],
    };
    opened.connected_ids[0] = true;
    let sem = Arc::new(Semaphore::new(plan.concurrency.max(1)));
    // Each answer: the time to open, whether permessage-deflate is on and the bytes received
    // while opening, or the error.
    let (tx, mut rx) =
        mpsc::unbounded_channel::<(usize, Result<(Duration, bool, u64), ConnError>)>();
    let deadline = tokio::time::Instant::from_std(started + plan.max_connect_time);
    let mut attempted = 1usize;
    let mut answered = 1usize;
    let record = |(i, r): (usize, Result<(Duration, bool, u64), ConnError>), o: &mut Opened| match r
    {
        Ok((d, compressed, bytes)) => {
            o.connected += 1;
            o.connected_ids[i] = true;
            o.compressed += u64::from(compressed);
            o.opening_bytes += bytes;
            o.latency.saturating_record(micros(d));
            if let Some(f) = &on_connected {
                f(o.connected);
            }
        }
        Err(e) => {
            *o.failures.entry(e.kind()).or_default() += 1;
            if o.first_error.is_none() {
                o.first_error = Some(e.to_string());
            }
        }
    };
    while attempted < plan.connections {
        // Wait for a free slot, taking in answers meanwhile.
        let permit = loop {
            tokio::select! {
                biased;
                Some(r) = rx.recv() => {
                    answered += 1;
                    record(r, &mut opened);
                    bar.inc(1);
                }
                p = sem.clone().acquire_owned() => break p.ok(),
                _ = tokio::time::sleep_until(deadline) => break None,
            }
        };
        let Some(permit) = permit else { break };
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        let local = attempted;
        let i = first + local;
        attempted += 1;
        let (targets, sources) = (plan.targets.clone(), plan.sources.clone());
        let token = token::for_connection(&plan.secret, i);
        let channels = (plan.channels)(i);
        let timeout = plan.connect_timeout;
        let wire = plan.wire;
        let sink = plan.sink.clone();
        let tx = tx.clone();
        let rx_stop = stop_rx.clone();
        tasks.spawn(async move {
            let t = Instant::now();
            let (target, source) = route(&targets, &sources, i);
            let r = conn::open(target, source, &token, &channels, wire, timeout).await;
            drop(permit);
            match r {
                Ok(session) => {
                    let opened = (t.elapsed(), session.compressed(), session.opening_bytes());
                    let _ = tx.send((local, Ok(opened)));
                    Some(session.run(i, rx_stop, &*sink).await)
                }
                Err(e) => {
                    let _ = tx.send((local, Err(e)));
                    None
                }
            }
        });
    }
    opened.not_attempted = (plan.connections - attempted) as u64;
    // Every attempt answers within its connect timeout.
    let last = tokio::time::Instant::now() + plan.connect_timeout + Duration::from_secs(1);
    while answered < attempted {
        match tokio::time::timeout_at(last, rx.recv()).await {
            Ok(Some(r)) => {
                answered += 1;
                record(r, &mut opened);
                bar.inc(1);
            }
            Ok(None) | Err(_) => break,
        }
    }
    opened.elapsed = started.elapsed();
    bar.finish_and_clear();
    Ok((Swarm { stop, tasks }, opened))
}

impl Swarm {
    /// Tells every connection to close, waits up to `grace` for them, and sums up how they
    /// ended.
    pub(crate) async fn stop(mut self, grace: Duration) -> Ending {
        let _ = self.stop.send(true);
        let mut closed = Ending::default();
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(Some(Ok(None))) => {}
                Ok(Some(Ok(Some(ended)))) => {
                    closed.pings_answered += ended.pings;
                    closed.compressed_messages += ended.inflated;
                    closed.bytes_received += ended.bytes;
                    match ended.reason {
                        EndReason::Stopped => {}
                        EndReason::Closed(Some(code)) => {
                            *closed.dropped.entry(format!("closed {code}")).or_default() += 1
                        }
                        EndReason::Closed(None) => {
                            *closed.dropped.entry("closed".into()).or_default() += 1
                        }
                        EndReason::Failed(e) => {
                            *closed.dropped.entry(format!("error: {e}")).or_default() += 1
                        }
                    }
                }
                Ok(Some(Err(_))) => {
                    *closed.dropped.entry("task failed".into()).or_default() += 1;
                }
                Ok(None) => break,
                Err(_) => {
                    self.tasks.abort_all();
                    break;
                }
            }
        }
        closed
    }
}

/// The target and source address of connection `i`: targets round-robin, and each source
/// address takes a turn after a full round of targets, so that every (source, target) pair
/// gets an equal share.
pub(crate) fn route<'a>(
    targets: &'a [WsTarget],
    sources: &[IpAddr],
    i: usize,
) -> (&'a WsTarget, Option<IpAddr>) {
    let n = targets.len().max(1);
    let source = (!sources.is_empty()).then(|| sources[(i / n) % sources.len()]);
    (&targets[i % n], source)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

fn progress_bar(len: u64, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("connecting {bar:40} {pos}/{len} ({elapsed})") {
        bar.set_style(style);
    }
    bar
}
