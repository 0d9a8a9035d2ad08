//! Runs the server: bind, serve (HTTP, and the gRPC API when enabled), wait for a shutdown
//! signal, drain.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::serve::ListenerExt;
use axum::Router;
use futures_util::FutureExt as _;
use hub_core::Node;
use tokio::net::TcpListener;

use crate::api::http::ApiState;
use crate::api::Executor;
use crate::config::Config;
use crate::handler::{Rules, ServerHandler};

/// A started node and its router, before serving.
pub struct App {
    /// The hub node.
    pub node: Node,
    /// The HTTP routes.
    pub router: Router,
    /// The configuration.
    pub config: Config,
    /// The server API executor (behind the HTTP routes and the gRPC service).
    pub executor: Executor,
    /// The rules (auth, permissions, proxies) the node's handler applies.
    pub rules: Arc<Rules>,
    /// The TLS config of the HTTP server when `http_server.tls.enabled` (certificate and
    /// key read at build).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The gRPC API's TLS config when `grpc_api.enabled` and `grpc_api.tls.enabled`.
    pub grpc_tls: Option<tonic::transport::ServerTlsConfig>,
}

impl App {
    /// The gRPC server API over this app's executor, with `grpc_api.key`/`insecure`.
    pub fn grpc_service(&self) -> crate::api::grpc::Service {
        crate::api::grpc::service(
            self.executor.clone(),
            &self.config.grpc_api.key,
            self.config.grpc_api.insecure,
        )
    }
}

/// Builds the node and the routes from a config (nothing bound yet).
pub async fn build(config: Config) -> Result<App, String> {
    // Before the node and the proxies start: they register their metric handles then.
    crate::metrics::handle();
    let rules = Rules::new(config.clone())?;
    // Before anything starts: a bad certificate or key fails the start with its name.
    let tls = if config.http_server.tls.enabled {
        Some(crate::tls::server_config(
            "http_server.tls",
            &config.http_server.tls,
        )?)
    } else {
        None
    };
    let grpc_tls = if config.grpc_api.enabled && config.grpc_api.tls.enabled {
        Some(crate::tls::grpc_server_config(
            "grpc_api.tls",
            &config.grpc_api.tls,
        )?)
    } else {
        None
    };
    let mut builder = Node::builder()
        .config(config.node_config())
        .handler(ServerHandler(rules.clone()));
    if config.engine.kind == "redis" {
        let r = &config.engine.redis;
        let mut rc = hub_core::redis::RedisConfig::default();
        rc.addresses = r.shard_urls()?;
        rc.prefix = r.prefix.clone();
        rc.io_timeout = r.io_timeout;
        rc.connect_timeout = r.connect_timeout;
        rc.presence_ttl = config.engine.presence_ttl;
        let engine = hub_core::redis::RedisEngine::connect(rc)
            .await
            .map_err(|e| format!("cannot connect the redis engine: {e}"))?;
        tracing::info!(shards = r.shard_urls()?.len(), "redis engine connected");
        builder = builder.broker(engine.clone()).presence(engine);
    }
    let node = builder
        .start()
        .await
        .map_err(|e| format!("cannot start node: {e}"))?;
    metrics::gauge!("hub_connection_limit").set(config.client.connection_limit as f64);
    let _ = engine_ready(&node);
    let executor = Executor::new(node.clone(), rules.clone());
    let api = ApiState {
        executor: executor.clone(),
        key: config.http_api.key.clone(),
        insecure: config.http_api.insecure,
        transport_errors: config.http_api.error_mode == "transport",
    };
    let prefix = config.http_api.handler_prefix.trim_end_matches('/');
    let api_router = Router::new()
        .route(
            &format!("{prefix}/{{method}}"),
            post(crate::api::http::handle),
        )
        .with_state(api);
    let router = Router::new()
        .route("/connection/websocket", any(websocket))
        .route("/health", get(health))
        .route(
            "/ready",
            get(ready).with_state(Readiness {
                node: node.clone(),
                rules: rules.clone(),
                require_backends: config.health.ready_requires_backends,
            }),
        )
        .route("/metrics", get(metrics))
        .with_state(node.clone())
        .merge(api_router);
    Ok(App {
        node,
        router,
        config,
        executor,
        rules,
        tls,
        grpc_tls,
    })
}

async fn websocket(
    State(node): State<Node>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    node.accept_websocket(req, Some(addr)).into_response()
}

async fn health() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        "{}",
    )
}

/// Whether the node serves (engine reachable, not draining); sets `hub_engine_ready`.
fn engine_ready(node: &Node) -> Result<(), String> {
    let r = if node.is_shutting_down() {
        Err("draining".to_string())
    } else {
        node.ready().map_err(|e| format!("engine not ready: {e}"))
    };
    metrics::gauge!("hub_engine_ready").set(if r.is_ok() { 1.0 } else { 0.0 });
    r
}

/// What `/ready` looks at.
#[derive(Clone)]
struct Readiness {
    node: Node,
    rules: Arc<Rules>,
    require_backends: bool,
}

/// `/ready`: 200 when the node serves, else 503; the body tells the engine's and each
/// backend's state, `{"status":"ok","engine":"ok","backends":{"grpc://b:9000":"ok"}}`
/// (a backend is `"breaker_open"` while its circuit breaker refuses calls). Backends make
/// the node unready only with `health.ready_requires_backends`: they are usually shared by
/// every node, so taking all nodes out of the balancer would turn the SDKs' retried error
/// 100 into a refused connection.
async fn ready(State(r): State<Readiness>) -> Response {
    let engine = engine_ready(&r.node);
    let backends = r.rules.proxies.breaker_states();
    let backends_down = backends.values().any(|open| *open);
    let ok = engine.is_ok() && !(r.require_backends && backends_down);
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "unavailable" },
        "engine": match &engine {
            Ok(()) => "ok".to_string(),
            Err(e) => e.clone(),
        },
        "backends": backends
            .into_iter()
            .map(|(endpoint, open)| (endpoint, if open { "breaker_open" } else { "ok" }))
            .collect::<std::collections::BTreeMap<_, _>>(),
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn metrics(State(node): State<Node>) -> impl IntoResponse {
    // The check reads connection flags per shard, no I/O: cheap enough for every scrape.
    let _ = engine_ready(&node);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::metrics::render(),
    )
}

/// Serves `app` on `listener` (over TLS when `http_server.tls.enabled`) until `shutdown`
/// completes, then drains: clients are closed with 3001 spread over the drain window, and
/// the call returns within the shutdown timeout.
pub async fn serve(
    app: App,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let node = app.node.clone();
    let rules = app.rules.clone();
    let window = app.config.shutdown.drain_window;
    let timeout = app.config.shutdown.timeout;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let drained = Arc::new(tokio::sync::Notify::new());
    let drained2 = drained.clone();
    let drain_node = node.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!(
            clients = drain_node.num_clients(),
            "shutting down: draining clients"
        );
        let _ = stop_tx.send(());
        let _ = tokio::time::timeout(timeout, drain_node.shutdown(window)).await;
        drained2.notify_one();
    });
    let stop = async move {
        let _ = stop_rx.await;
    };
    match app.tls {
        Some(tls) => {
            // The TLS listener sets TCP_NODELAY itself; the empty tap gives it axum's
            // `ConnectInfo<SocketAddr>`, which axum implements for `TapIo` listeners only.
            let listener = crate::tls::TlsListener::new(listener, tls)?.tap_io(|_| {});
            serve_http(listener, app.router, stop).await?
        }
        None => {
            // Small frames must not wait for the peer's delayed ACK (Nagle).
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            serve_http(listener, app.router, stop).await?
        }
    }
    // Upgraded connections are not tracked by the HTTP server: wait for the drain.
    let _ = tokio::time::timeout(timeout, drained.notified()).await;
    // Client sends and forwarded publications still waiting for their backend go to the
    // dead-letter store.
    if let Some(sender) = &rules.sender {
        let n = sender.flush_pending().await;
        if n > 0 {
            tracing::warn!(events = n, "sends pending at shutdown were dead-lettered");
        }
    }
    if let Some(forwarder) = &rules.forwarder {
        let n = forwarder.flush_pending().await;
        if n > 0 {
            tracing::warn!(
                events = n,
                "publication forwards pending at shutdown were dead-lettered"
            );
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Serves `router` on `listener` until `stop` completes (then lets requests in flight finish).
async fn serve_http<L>(
    listener: L,
    router: Router,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    for<'a> SocketAddr: axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stop)
    .await
}

/// Serves the gRPC server API `service` (see [`App::grpc_service`]) on `listener`, over TLS
/// when `tls` is given (see [`App::grpc_tls`]), until `shutdown` completes; then stops
/// accepting and lets calls in flight finish.
pub async fn serve_grpc(
    service: crate::api::grpc::Service,
    listener: TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls).map_err(std::io::Error::other)?;
    }
    server
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(std::io::Error::other)
}

/// [`serve`] on `listener` and, when `grpc_listener` is given, [`serve_grpc`] on it, both
/// stopped by the one `shutdown`. The gRPC server gets the shutdown timeout to finish its
/// calls. `main` binds `grpc_listener` when `grpc_api.enabled`.
pub async fn serve_all(
    app: App,
    listener: TcpListener,
    grpc_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Some(grpc_listener) = grpc_listener else {
        return serve(app, listener, shutdown).await;
    };
    let timeout = app.config.shutdown.timeout;
    let shutdown = shutdown.boxed().shared();
    let mut grpc = tokio::spawn(serve_grpc(
        app.grpc_service(),
        grpc_listener,
        app.grpc_tls.clone(),
        shutdown.clone(),
    ));
    let http = serve(app, listener, shutdown);
    tokio::pin!(http);
    // A gRPC server that fails while HTTP runs is logged; HTTP keeps serving.
    let http_result = tokio::select! {
        r = &mut http => r,
        g = &mut grpc => {
            match g {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "gRPC API server failed"),
                Err(e) => tracing::error!(error = %e, "gRPC API server task failed"),
            }
            return http.await;
        }
    };
    match tokio::time::timeout(timeout, &mut grpc).await {
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "gRPC API server failed"),
        Ok(_) => {}
        Err(_) => {
            tracing::warn!("gRPC API calls still running at the shutdown timeout: cut");
            grpc.abort();
        }
    }
    http_result
}

/// Binds a listener with a deep accept queue (the kernel caps it at `net.core.somaxconn`),
/// so a burst of connections is not dropped and retried a second later.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(65535)
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
