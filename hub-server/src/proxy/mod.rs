//! The gRPC proxy to backends: the hub hands client events (connect, refresh, subscribe,
//! publish, RPC, sub refresh) to a backend implementing `proto/proxy.proto` (Centrifugo's
//! proxy API), and turns the backend's answer into the client's reply.
//!
//! Every backend endpoint is protected on its own:
//! * each call has a **timeout** (waiting for a free slot included);
//! * a **bulkhead** (a semaphore, `max_concurrency` slots) bounds the calls in flight, so one
//!   slow backend cannot hold every connection task of the node;
//! * a **circuit breaker** ([`breaker`]) stops calling a backend after consecutive failures
//!   and lets one trial call through after the cooldown.
//!
//! A call that does not get an answer (breaker open, no free slot in time, timeout, transport
//! or gRPC status error) answers the client with the temporary error 100, so SDKs retry with
//! backoff. Metrics: `hub_proxy_calls_total{event,result}`, `hub_proxy_breaker_open{endpoint}`,
//! `hub_proxy_call_duration_seconds{event}`.
//!
//! Two proxies are fire and forget instead, retried and dead-lettered
//! ([`fire_and_forget`]): client `send` messages ([`send`]) and forwarded publications
//! ([`forward`]).

pub mod breaker;
pub mod fire_and_forget;
pub mod forward;
pub mod send;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use hub_core::{Disconnect, Error, Reject};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tracing::Instrument as _;

use crate::config::{Config, ProxyEndpoint};
use breaker::Breaker;

/// Types and stubs generated from `proto/proxy.proto` (package
/// `centrifugal.centrifugo.proxy`): the client the hub calls backends with, and the server
/// trait a backend (or a test's fake backend) implements.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod proto {
    tonic::include_proto!("centrifugal.centrifugo.proxy");
}

use proto::centrifugo_proxy_client::CentrifugoProxyClient;

/// The proxy client generic over a tonic channel.
pub type Client = CentrifugoProxyClient<Channel>;

/// The `http://host:port` URI tonic dials for a `grpc://host:port` endpoint.
pub fn grpc_uri(endpoint: &str) -> Result<String, String> {
    let Some(rest) = endpoint.strip_prefix("grpc://") else {
        return Err(format!(
            "{endpoint:?}: only gRPC backends are supported, write grpc://host:port"
        ));
    };
    let uri = format!("http://{rest}");
    let parsed: http::Uri = uri
        .parse()
        .map_err(|e| format!("{endpoint:?}: not an address: {e}"))?;
    if parsed.host().is_none_or(str::is_empty) || parsed.port_u16().is_none() {
        return Err(format!("{endpoint:?}: write grpc://host:port"));
    }
    Ok(uri)
}

/// Why a call got no answer from the backend.
#[derive(Debug)]
pub enum CallError {
    /// The breaker is open: the backend was not called.
    BreakerOpen,
    /// No free slot within the timeout: the backend was not called.
    Busy,
    /// No answer within the timeout.
    Timeout,
    /// A transport error or a gRPC status other than OK.
    Status(tonic::Status),
}

impl CallError {
    fn label(&self) -> &'static str {
        match self {
            CallError::BreakerOpen => "breaker_open",
            CallError::Busy => "bulkhead_full",
            CallError::Timeout => "timeout",
            CallError::Status(_) => "grpc_error",
        }
    }
}

/// One backend endpoint: its client, breaker and bulkhead.
pub struct Backend {
    endpoint: String,
    client: Client,
    timeout: std::time::Duration,
    breaker: Mutex<Breaker>,
    bulkhead: Arc<Semaphore>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Backend {
    /// A backend for `p` (dialled lazily, on the first call). Needs a tokio runtime.
    pub fn new(p: &ProxyEndpoint) -> Result<Self, String> {
        let uri = grpc_uri(&p.endpoint)?;
        let channel = Endpoint::from_shared(uri)
            .map_err(|e| format!("{}: {e}", p.endpoint))?
            .connect_timeout(p.timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        metrics::gauge!("hub_proxy_breaker_open", "endpoint" => p.endpoint.clone()).set(0.0);
        Ok(Backend {
            endpoint: p.endpoint.clone(),
            client: CentrifugoProxyClient::new(channel),
            timeout: p.timeout,
            breaker: Mutex::new(Breaker::new(p.breaker_failures, p.breaker_cooldown)),
            bulkhead: Arc::new(Semaphore::new(p.max_concurrency.max(1))),
        })
    }

    /// The configured endpoint (`grpc://host:port`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn with_breaker<T>(&self, f: impl FnOnce(&mut Breaker) -> T) -> T {
        let mut b = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        let was_open = b.is_open();
        let r = f(&mut b);
        if b.is_open() != was_open {
            let open = b.is_open();
            if open {
                tracing::warn!(endpoint = %self.endpoint, "proxy circuit breaker open");
            } else {
                tracing::info!(endpoint = %self.endpoint, "proxy circuit breaker closed");
            }
            metrics::gauge!("hub_proxy_breaker_open", "endpoint" => self.endpoint.clone())
                .set(if open { 1.0 } else { 0.0 });
        }
        r
    }

    /// Makes one call through the breaker and the bulkhead, within the timeout.
    pub async fn call<T, F, Fut>(&self, event: &'static str, f: F) -> Result<T, CallError>
    where
        F: FnOnce(Client, std::time::Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let start = Instant::now();
        // A child of the API call or delivery that caused it, if any; the backend gets it as
        // its `traceparent` (see [`request`]).
        let span = tracing::info_span!(
            target: crate::telemetry::TARGET,
            "proxy",
            otel.name = %format_args!("proxy {event}"),
            otel.kind = "client",
            event,
            endpoint = %self.endpoint,
            trace_id = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        crate::telemetry::adopt(&span, crate::telemetry::current_context());
        let r = self.call_inner(start, f).instrument(span.clone()).await;
        if r.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        metrics::histogram!("hub_proxy_call_duration_seconds", "event" => event)
            .record(start.elapsed().as_secs_f64());
        let result = match &r {
            Ok(_) => "ok",
            Err(e) => e.label(),
        };
        metrics::counter!("hub_proxy_calls_total", "event" => event, "result" => result)
            .increment(1);
        if let Err(e) = &r {
            tracing::debug!(endpoint = %self.endpoint, event, error = ?e, "proxy call failed");
        }
        r
    }

    async fn call_inner<T, F, Fut>(&self, start: Instant, f: F) -> Result<T, CallError>
    where
        F: FnOnce(Client, std::time::Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = start + self.timeout;
        let Some(admission) = self.with_breaker(|b| b.admit(start)) else {
            return Err(CallError::BreakerOpen);
        };
        let permit =
            match tokio::time::timeout_at(deadline, self.bulkhead.clone().acquire_owned()).await {
                Ok(Ok(p)) => p,
                _ => {
                    self.with_breaker(|b| b.abandon(admission));
                    return Err(CallError::Busy);
                }
            };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            // A slot freed at the deadline: no time left for a call.
            self.with_breaker(|b| b.abandon(admission));
            return Err(CallError::Busy);
        }
        let r = tokio::time::timeout_at(deadline, f(self.client.clone(), left)).await;
        drop(permit);
        match r {
            Ok(Ok(resp)) => {
                self.with_breaker(|b| b.success(admission));
                Ok(resp.into_inner())
            }
            Ok(Err(status)) => {
                self.with_breaker(|b| b.failure(admission, Instant::now()));
                Err(CallError::Status(status))
            }
            Err(_) => {
                self.with_breaker(|b| b.failure(admission, Instant::now()));
                Err(CallError::Timeout)
            }
        }
    }

    /// Whether the breaker refuses calls now.
    pub fn breaker_open(&self) -> bool {
        self.with_breaker(|b| b.is_open())
    }
}

/// A request with the gRPC deadline set to what is left of the call's timeout, and the
/// current trace context (`traceparent`) in its metadata.
pub fn request<T>(msg: T, left: std::time::Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(left);
    crate::telemetry::inject_grpc(r.metadata_mut());
    r
}

/// The configured proxies, one [`Backend`] per distinct endpoint (events that name the same
/// endpoint share its breaker and bulkhead, with the settings of the first in the order
/// connect, refresh, subscribe, publish, sub_refresh, rpc, send, publication_forward).
#[derive(Debug, Default)]
pub struct Proxies {
    /// `client.proxy.connect`, when enabled.
    pub connect: Option<Arc<Backend>>,
    /// `client.proxy.refresh`, when enabled.
    pub refresh: Option<Arc<Backend>>,
    /// `channel.proxy.subscribe`.
    pub subscribe: Option<Arc<Backend>>,
    /// `channel.proxy.publish`.
    pub publish: Option<Arc<Backend>>,
    /// `channel.proxy.sub_refresh`.
    pub sub_refresh: Option<Arc<Backend>>,
    /// `rpc.proxy`.
    pub rpc: Option<Arc<Backend>>,
    /// `client.proxy.send`, when enabled.
    pub send: Option<Arc<Backend>>,
    /// `channel.proxy.publication_forward`.
    pub publication_forward: Option<Arc<Backend>>,
}

impl Proxies {
    /// Every distinct backend with whether its breaker is open now, by endpoint.
    pub fn breaker_states(&self) -> std::collections::BTreeMap<String, bool> {
        [
            &self.connect,
            &self.refresh,
            &self.subscribe,
            &self.publish,
            &self.sub_refresh,
            &self.rpc,
            &self.send,
            &self.publication_forward,
        ]
        .into_iter()
        .flatten()
        .map(|b| (b.endpoint().to_owned(), b.breaker_open()))
        .collect()
    }

    /// Builds the backends the config names. Needs a tokio runtime when any is configured.
    pub fn new(config: &Config) -> Result<Self, String> {
        let mut by_endpoint: HashMap<String, Arc<Backend>> = HashMap::new();
        let mut get = |p: Option<&ProxyEndpoint>| -> Result<Option<Arc<Backend>>, String> {
            let Some(p) = p.filter(|p| p.is_set()) else {
                return Ok(None);
            };
            if let Some(b) = by_endpoint.get(&p.endpoint) {
                return Ok(Some(b.clone()));
            }
            if tokio::runtime::Handle::try_current().is_err() {
                return Err("proxies need a tokio runtime".into());
            }
            let b = Arc::new(Backend::new(p)?);
            by_endpoint.insert(p.endpoint.clone(), b.clone());
            Ok(Some(b))
        };
        let cp = &config.channel.proxy;
        Ok(Proxies {
            connect: get(config.client.proxy.connect.active())?,
            refresh: get(config.client.proxy.refresh.active())?,
            subscribe: get(Some(&cp.subscribe))?,
            publish: get(Some(&cp.publish))?,
            sub_refresh: get(Some(&cp.sub_refresh))?,
            rpc: get(Some(&config.rpc.proxy))?,
            send: get(config.client.proxy.send.active())?,
            publication_forward: get(Some(&cp.publication_forward.proxy))?,
        })
    }
}

/// What the client gets when the backend gave no answer: the temporary internal error.
pub fn unavailable(_: CallError) -> Reject {
    Error::INTERNAL.into()
}

/// A backend's `error` as the client's error reply (code 0 becomes 100).
pub fn error_reject(e: proto::Error) -> Reject {
    if e.code == 0 {
        return Error::INTERNAL.into();
    }
    let message = if e.message.is_empty() {
        "error".to_string()
    } else {
        e.message
    };
    Error {
        code: e.code,
        message: message.into(),
        temporary: e.temporary,
    }
    .into()
}

/// A backend's `disconnect` as a close (code outside 3000–4999 becomes 3004; the reason is
/// cut to fit a close frame).
pub fn disconnect_reject(d: proto::Disconnect) -> Reject {
    let code = u16::try_from(d.code)
        .ok()
        .filter(|c| (3000..=4999).contains(c));
    let Some(code) = code else {
        return Disconnect::new(3004, "internal server error").into();
    };
    let mut reason = d.reason;
    if reason.len() > 120 {
        let mut cut = 120;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    Disconnect::new(code, reason).into()
}

/// The backend's refusal, if its response carries one (`disconnect` wins over `error`).
pub fn refusal(
    error: Option<proto::Error>,
    disconnect: Option<proto::Disconnect>,
) -> Option<Reject> {
    if let Some(d) = disconnect {
        return Some(disconnect_reject(d));
    }
    error.map(error_reject)
}

/// Payload bytes from a `bytes` field or, when that is empty, its base64 twin; `None` when the
/// base64 is invalid.
pub fn payload(raw: Bytes, b64: &str) -> Option<Bytes> {
    if !raw.is_empty() || b64.is_empty() {
        return Some(raw);
    }
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .ok()
        .map(Bytes::from)
}

/// A unix time from the backend: `0` or below = none.
pub fn expire_at(t: i64) -> Option<u64> {
    u64::try_from(t).ok().filter(|t| *t > 0)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    fn backend(max_concurrency: usize, failures: u32) -> Backend {
        Backend::new(&ProxyEndpoint {
            endpoint: "grpc://127.0.0.1:9".into(),
            timeout: Duration::from_secs(1),
            breaker_failures: failures,
            breaker_cooldown: Duration::from_secs(5),
            max_concurrency,
        })
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn the_bulkhead_bounds_calls_in_flight_and_waiters_give_up_at_the_timeout() {
        let b = Arc::new(backend(2, 1000));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let (b, in_flight, max) = (b.clone(), in_flight.clone(), max.clone());
                tokio::spawn(async move {
                    b.call("test", |_, _| async move {
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        max.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        Ok(tonic::Response::new(()))
                    })
                    .await
                })
            })
            .collect();
        let mut ok = 0;
        let mut busy = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => ok += 1,
                Err(CallError::Busy) => busy += 1,
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(max.load(Ordering::SeqCst), 2);
        // 300 ms each, two at a time, within 1 s: three rounds of two; the rest give up.
        assert_eq!((ok, busy), (6, 0));
        let tasks: Vec<_> = (0..3)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move {
                    b.call("test", |_, _| async {
                        tokio::time::sleep(Duration::from_secs(10)).await;
                        Ok(tonic::Response::new(()))
                    })
                    .await
                })
            })
            .collect();
        let results: Vec<_> = futures_util::future::join_all(tasks).await;
        let busy = results
            .iter()
            .filter(|r| matches!(r, Ok(Err(CallError::Busy))))
            .count();
        let timeouts = results
            .iter()
            .filter(|r| matches!(r, Ok(Err(CallError::Timeout))))
            .count();
        assert_eq!((timeouts, busy), (2, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_answers_without_calling() {
        let b = backend(4, 2);
        let calls = AtomicUsize::new(0);
        for _ in 0..5 {
            let _ = b
                .call("test", |_, _| async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err::<tonic::Response<()>, _>(tonic::Status::unavailable("down"))
                })
                .await;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(b.breaker_open());
        tokio::time::sleep(Duration::from_secs(5)).await;
        let r = b
            .call("test", |_, _| async { Ok(tonic::Response::new(7)) })
            .await;
        assert_eq!(r.unwrap(), 7);
        assert!(!b.breaker_open());
    }

    #[test]
    fn endpoints_must_be_grpc_host_port() {
        assert_eq!(
            grpc_uri("grpc://127.0.0.1:9000").unwrap(),
            "http://127.0.0.1:9000"
        );
        assert!(grpc_uri("http://127.0.0.1:9000").is_err());
        assert!(grpc_uri("grpc://127.0.0.1").is_err());
        assert!(grpc_uri("grpc://").is_err());
        assert!(grpc_uri("grpc://a b:1").is_err());
    }

    #[test]
    fn backend_answers_map_to_the_client_protocol() {
        let r = error_reject(proto::Error {
            code: 103,
            message: "no".into(),
            temporary: false,
        });
        assert_eq!(r, Reject::Error(Error::new(103, "no")));
        assert_eq!(
            error_reject(proto::Error::default()),
            Reject::Error(Error::INTERNAL)
        );
        let d = disconnect_reject(proto::Disconnect {
            code: 4001,
            reason: "x".repeat(300),
        });
        let Reject::Disconnect(d) = d else {
            panic!("a disconnect")
        };
        assert_eq!(d.code, 4001);
        assert!(d.reason.len() <= 120);
        let Reject::Disconnect(d) = disconnect_reject(proto::Disconnect {
            code: 70000,
            reason: String::new(),
        }) else {
            panic!("a disconnect")
        };
        assert_eq!(d.code, 3004);
        assert_eq!(
            payload(Bytes::new(), "e30="),
            Some(Bytes::from_static(b"{}"))
        );
        assert_eq!(payload(Bytes::new(), "%%"), None);
        assert_eq!(expire_at(-1), None);
        assert_eq!(expire_at(5), Some(5));
    }
}
