//! Wiring: which stores, which hub, which parts in this process.
//!
//! Start-up runs in phases: check the settings (nothing bound yet), open the stores, bind,
//! serve until the shutdown future completes, then drain. [`start`] returns the bound
//! addresses so tests can run the app on port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use social_store::embedded::EmbeddedStore;
use social_store::mongo::MongoStore;
use social_store::redis::{RedisCounters, RedisFeeds};
use social_store::{ChatStore, CounterStore, FeedStore, FriendStore, PostStore, UserStore};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;

use crate::config::Settings;
use crate::gateway::{self, Gateway};
use crate::pb::chats_server::ChatsServer;
use crate::pb::counters_server::CountersServer;
use crate::pb::posts_server::PostsServer;
use crate::pb::users_server::UsersServer;
use crate::realtime::{HubRules, Realtime};
use crate::rpc::{Check, Clients};
use crate::services::chats::ChatsService;
use crate::services::counters::CountersService;
use crate::services::posts::{FeedSettings, PostsService};
use crate::services::users::UsersService;

/// What runs in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Everything: the gateway and the four services.
    All,
    /// The gateway only (services elsewhere).
    Gateway,
    /// The users service.
    Users,
    /// The posts service.
    Posts,
    /// The chats service.
    Chats,
    /// The counters service.
    Counters,
}

impl Part {
    fn runs(self, other: Part) -> bool {
        self == Part::All || self == other
    }
}

/// A running app.
pub struct Running {
    /// Where the gateway listens, if it runs here.
    pub http: Option<SocketAddr>,
    /// Where the services listen, if any runs here.
    pub grpc: Option<SocketAddr>,
    /// Where `/metrics` is served apart from the gateway (`--metrics`).
    pub metrics: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    node: Option<hub_core::Node>,
    redis: Option<fred::prelude::Client>,
}

impl Running {
    /// Stops serving, waits for the servers to finish (at most 10 s), closes connections.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Some(node) = &self.node {
            node.shutdown(std::time::Duration::from_secs(2)).await;
        }
        for t in self.tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), t).await;
        }
        if let Some(r) = self.redis {
            // Closes this app's connection; the shared Redis keeps running.
            use fred::interfaces::ClientLike as _;
            let _ = r.quit().await;
        }
    }

    /// Waits until `signal` completes, then [`stop`](Self::stop)s.
    pub async fn run_until(self, signal: impl Future<Output = ()>) {
        signal.await;
        tracing::info!("stopping");
        self.stop().await;
    }
}

/// The stores of the parts that run here.
struct Stores {
    users: Option<(Arc<dyn UserStore>, Arc<dyn FriendStore>)>,
    posts: Option<(Arc<dyn PostStore>, Arc<dyn FeedStore>)>,
    chats: Option<Arc<dyn ChatStore>>,
    counters: Option<Arc<dyn CounterStore>>,
    redis: Option<fred::prelude::Client>,
    /// The embedded files opened (to sync after a bulk load).
    embedded: Vec<Arc<EmbeddedStore>>,
}

fn embedded(dir: &Path, name: &str, bulk: bool) -> Result<Arc<EmbeddedStore>, String> {
    let path = dir.join(format!("{name}.redb"));
    let store = if bulk {
        EmbeddedStore::open_bulk(&path)
    } else {
        EmbeddedStore::open(&path)
    };
    store
        .map(Arc::new)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

async fn redis_client(url: &str) -> Result<fred::prelude::Client, String> {
    use fred::prelude::*;
    let config = Config::from_url(url).map_err(|e| format!("--redis {url:?}: {e}"))?;
    let client = Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = std::time::Duration::from_secs(3);
            c.internal_command_timeout = std::time::Duration::from_secs(2);
            // HINCRBY is not idempotent: never resend one after a broken connection.
            c.max_command_attempts = 1;
        })
        // While Redis is down calls fail after 2 s instead of waiting for it.
        .with_performance_config(|p| {
            p.default_command_timeout = std::time::Duration::from_secs(2);
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .build()
        .map_err(|e| format!("--redis {url:?}: {e}"))?;
    client
        .init()
        .await
        .map_err(|e| format!("cannot connect to Redis at {url}: {e}"))?;
    Ok(client)
}

async fn open_stores(part: Part, s: &Settings, bulk: bool) -> Result<Stores, String> {
    let redis = match &s.redis {
        Some(url) => Some(redis_client(url).await?),
        None => None,
    };
    let mut st = Stores {
        users: None,
        posts: None,
        chats: None,
        counters: None,
        redis: redis.clone(),
        embedded: Vec::new(),
    };
    if let Some(uri) = &s.mongo_uri {
        let m = Arc::new(
            MongoStore::connect(uri, &s.mongo_db)
                .await
                .map_err(|e| format!("MongoDB at {uri}: {e}"))?,
        );
        if part.runs(Part::Users) {
            st.users = Some((m.clone(), m.clone()));
        }
        if part.runs(Part::Posts) {
            st.posts = Some((m.clone(), m.clone()));
        }
        if part.runs(Part::Chats) {
            st.chats = Some(m.clone());
        }
        if part.runs(Part::Counters) {
            st.counters = Some(m);
        }
    } else {
        std::fs::create_dir_all(&s.data_dir)
            .map_err(|e| format!("--data-dir {}: {e}", s.data_dir.display()))?;
        if part.runs(Part::Users) {
            let e = embedded(&s.data_dir, "users", bulk)?;
            st.embedded.push(e.clone());
            st.users = Some((e.clone(), e));
        }
        if part.runs(Part::Posts) {
            let e = embedded(&s.data_dir, "posts", bulk)?;
            st.embedded.push(e.clone());
            st.posts = Some((e.clone(), e));
        }
        if part.runs(Part::Chats) {
            let e = embedded(&s.data_dir, "chats", bulk)?;
            st.embedded.push(e.clone());
            st.chats = Some(e);
        }
        if part.runs(Part::Counters) {
            let e = embedded(&s.data_dir, "counters", bulk)?;
            st.embedded.push(e.clone());
            st.counters = Some(e);
        }
    }
    if let Some(r) = &redis {
        // Redis when configured: counters live there, feeds are cached there.
        let prefix = s.redis_prefix.clone();
        if part.runs(Part::Counters) {
            st.counters = Some(Arc::new(RedisCounters::new(r.clone(), prefix.clone())));
        }
        if let Some((posts, _)) = st.posts.take() {
            st.posts = Some((posts, Arc::new(RedisFeeds::new(r.clone(), prefix))));
        }
    }
    Ok(st)
}

/// All stores, for `seed`.
pub struct SeedStores {
    /// Users.
    pub users: Arc<dyn UserStore>,
    /// Friendships.
    pub friends: Arc<dyn FriendStore>,
    /// Posts.
    pub posts: Arc<dyn PostStore>,
    /// Feeds.
    pub feeds: Arc<dyn FeedStore>,
    /// Chats.
    pub chats: Arc<dyn ChatStore>,
    /// The embedded files, opened for a bulk load: [`EmbeddedStore::sync`] them at the end.
    pub embedded: Vec<Arc<EmbeddedStore>>,
}

/// Opens every store `settings` configure (the app must not be running on the same
/// embedded files: redb allows one process per file).
pub async fn open_seed_stores(settings: &Settings) -> Result<SeedStores, String> {
    let st = open_stores(Part::All, settings, true).await?;
    let missing = || "a store did not open".to_string();
    let (users, friends) = st.users.ok_or_else(missing)?;
    let (posts, feeds) = st.posts.ok_or_else(missing)?;
    Ok(SeedStores {
        users,
        friends,
        posts,
        feeds,
        chats: st.chats.ok_or_else(missing)?,
        embedded: st.embedded,
    })
}

/// Starts `part` with `settings`; the gateway (when it runs) listens on `http`.
pub async fn start(part: Part, settings: &Settings, http: &str) -> Result<Running, String> {
    // Phase 1: check everything before binding.
    let secrets = settings.secrets()?;
    crate::metrics::install();
    if part != Part::All && settings.hub_grpc.is_none() {
        return Err(
            "the parts run as separate processes publish through an external hub: set --hub-grpc"
                .into(),
        );
    }
    if settings.hub_grpc.is_some() && part.runs(Part::Gateway) && settings.hub_ws_url.is_none() {
        return Err("--hub-ws-url is required with --hub-grpc (where browsers connect)".into());
    }
    let stores = open_stores(part, settings, false).await?;

    // Phase 2: bind.
    let runs_service = part != Part::Gateway;
    let grpc_listener = if runs_service {
        Some(
            TcpListener::bind(&settings.grpc)
                .await
                .map_err(|e| format!("cannot listen on --grpc {}: {e}", settings.grpc))?,
        )
    } else {
        None
    };
    let grpc = grpc_listener.as_ref().and_then(|l| l.local_addr().ok());
    let http_listener = if part.runs(Part::Gateway) {
        Some(
            TcpListener::bind(http)
                .await
                .map_err(|e| format!("cannot listen on --http {http}: {e}"))?,
        )
    } else {
        None
    };
    let http_addr = http_listener.as_ref().and_then(|l| l.local_addr().ok());
    let metrics_listener = match &settings.metrics {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on --metrics {addr}: {e}"))?,
        ),
        None => None,
    };
    let metrics = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());

    let local = grpc
        .map(|a| a.to_string())
        .unwrap_or_else(|| settings.grpc.clone());
    let clients = Clients::lazy(&settings.addresses(&local), &secrets.internal)?;
    let (realtime, node) = match &settings.hub_grpc {
        Some(addr) => {
            let hub = hub_client::HubClient::connect(addr, &settings.hub_api_key)
                .await
                .map_err(|e| format!("--hub-grpc {addr}: {e}"))?;
            (Realtime::External(hub), None)
        }
        None => {
            let node = hub_core::Node::builder()
                .handler(HubRules::new(&secrets.hub))
                .start()
                .await
                .map_err(|e| format!("cannot start the embedded hub node: {e}"))?;
            (Realtime::Embedded(node.clone()), Some(node))
        }
    };

    // Phase 3: serve.
    let (stop, stopped) = watch::channel(false);
    let signal = move || {
        let mut rx = stopped.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut tasks = Vec::new();
    if let Some(listener) = grpc_listener {
        let check = Check::new(&secrets.internal);
        // A router with no service yet (tonic makes one from the first service added).
        let mut router = tonic::transport::Server::builder()
            .add_optional_service(None::<CountersServer<CountersService>>);
        if let Some((users, friends)) = stores.users {
            let svc = UsersService::new(users, friends, clients.clone(), realtime.clone());
            router = router.add_service(UsersServer::with_interceptor(svc, check.named("users")));
        }
        if let Some((posts, feeds)) = stores.posts {
            let fs = FeedSettings {
                cap: settings.feed_cap.max(1),
                fanout_limit: settings.fanout_limit,
                ..FeedSettings::default()
            };
            let svc = PostsService::new(posts, feeds, clients.clone(), realtime.clone(), fs);
            router = router.add_service(PostsServer::with_interceptor(svc, check.named("posts")));
        }
        if let Some(chats) = stores.chats {
            let svc = ChatsService::new(chats, clients.clone(), realtime.clone());
            router = router.add_service(ChatsServer::with_interceptor(svc, check.named("chats")));
        }
        if let Some(counters) = stores.counters {
            let svc = CountersService::new(counters);
            router = router.add_service(CountersServer::with_interceptor(
                svc,
                check.named("counters"),
            ));
        }
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let sig = signal();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = router.serve_with_incoming_shutdown(incoming, sig).await {
                tracing::error!(error = %e, "gRPC server failed");
            }
        }));
        tracing::info!(addr = ?grpc, ?part, "services listening (gRPC)");
    }
    if let Some(listener) = http_listener {
        let gw = Gateway::new(
            clients.clone(),
            &secrets,
            !settings.dev,
            settings.hub_ws_url.clone(),
            settings.login_per_minute,
        );
        let app =
            gateway::router(gw, node.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let sig = signal();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(sig).await {
                tracing::error!(error = %e, "HTTP server failed");
            }
        }));
        tracing::info!(addr = ?http_addr, "gateway listening (HTTP)");
    }
    if let Some(listener) = metrics_listener {
        let sig = signal();
        tasks.push(tokio::spawn(async move {
            let app = crate::metrics::router();
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(sig).await {
                tracing::error!(error = %e, "metrics server failed");
            }
        }));
        tracing::info!(addr = ?metrics, "metrics listening (HTTP /metrics)");
    }
    Ok(Running {
        http: http_addr,
        grpc,
        metrics,
        stop,
        tasks,
        node,
        redis: stores.redis,
    })
}
