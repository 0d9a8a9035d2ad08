//! The counter and feed contract against [`RedisCounters`] and [`RedisFeeds`] on a real
//! `redis-server` this test starts on a free port (and kills on drop), plus a lost feed and a
//! check that the server outlives the stores.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fred::prelude::{Builder, ClientLike, Config};
use social_store::redis::{RedisCounters, RedisFeeds};
use social_store::{contract, CounterStore, FeedItem, FeedStore};

/// A `redis-server` keeping nothing on disk, killed on drop.
struct RedisServer {
    port: u16,
    child: Child,
}

impl RedisServer {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        let server = RedisServer { port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.cli(&["PING"]).is_none_or(|o| o.trim() != "PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// Runs `redis-cli` against this server; its output, or `None` when it failed.
    fn cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (out.status.success() && !text.contains("Could not connect")).then_some(text)
    }

    async fn client(&self) -> fred::prelude::Client {
        let config = Config::from_url(&format!("redis://127.0.0.1:{}", self.port)).unwrap();
        let client = Builder::from_config(config).build().unwrap();
        client.init().await.unwrap();
        client
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn counters() {
    let redis = RedisServer::start();
    let store = RedisCounters::new(redis.client().await, "test:");
    contract::counters(&store).await;
}

#[tokio::test]
async fn feeds() {
    let redis = RedisServer::start();
    let store = RedisFeeds::new(redis.client().await, "test:");
    contract::feeds(&store).await;
}

#[tokio::test]
async fn a_lost_feed_reads_as_none_until_rebuilt() {
    let redis = RedisServer::start();
    let store = RedisFeeds::new(redis.client().await, "test:");
    let item = |post: &str| FeedItem {
        post: post.to_string(),
        author: "a".to_string(),
    };
    store.replace("u", &[item("p1")], 10).await.unwrap();
    assert_eq!(
        store.feed("u", None, 10).await.unwrap(),
        Some(vec![item("p1")])
    );
    // Redis lost it (evicted, restarted without persistence).
    assert_eq!(
        redis
            .cli(&["DEL", &store.key("u")])
            .map(|o| o.trim().to_string()),
        Some("1".to_string())
    );
    assert_eq!(store.feed("u", None, 10).await.unwrap(), None);
    // A push does not resurrect part of it: it stays `None` until the caller rebuilds.
    store
        .push(&["u".to_string()], &item("p2"), 10)
        .await
        .unwrap();
    store.push_many("u", &[item("p3")], 10).await.unwrap();
    assert_eq!(store.feed("u", None, 10).await.unwrap(), None);
    store
        .replace("u", &[item("p1"), item("p2"), item("p3")], 10)
        .await
        .unwrap();
    assert_eq!(
        store.feed("u", None, 10).await.unwrap(),
        Some(vec![item("p3"), item("p2"), item("p1")])
    );
}

#[tokio::test]
async fn prefixes_keep_stores_apart_and_the_server_outlives_them() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let one = RedisCounters::new(client.clone(), "one:");
    let two = RedisCounters::new(client.clone(), "two:");
    one.incr("g", "f", 3).await.unwrap();
    two.incr("g", "f", 5).await.unwrap();
    assert_eq!(one.get("g").await.unwrap(), vec![("f".to_string(), 3)]);
    assert_eq!(two.get("g").await.unwrap(), vec![("f".to_string(), 5)]);
    assert_eq!(
        redis
            .cli(&["HGET", "one:counter:g", "f"])
            .map(|o| o.trim().to_string()),
        Some("3".to_string())
    );
    let feeds = RedisFeeds::new(client.clone(), "one:");
    feeds.replace("u", &[], 5).await.unwrap();

    drop(one);
    drop(two);
    drop(feeds);
    client.quit().await.unwrap();
    drop(client);
    tokio::time::sleep(Duration::from_millis(100)).await;

    assert_eq!(
        redis.cli(&["PING"]).map(|o| o.trim().to_string()),
        Some("PONG".to_string()),
        "the server is still up"
    );
    assert_eq!(
        redis.cli(&["DBSIZE"]).map(|o| o.trim().to_string()),
        Some("3".to_string()),
        "and keeps its data"
    );
}

#[tokio::test]
async fn an_unreachable_redis_is_unavailable() {
    let redis = RedisServer::start();
    let config = Config::from_url(&format!("redis://127.0.0.1:{}", redis.port)).unwrap();
    let client = Builder::from_config(config)
        .with_connection_config(|c| c.max_command_attempts = 1)
        .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(1))
        .build()
        .unwrap();
    client.init().await.unwrap();
    let store = RedisCounters::new(client.clone(), "x:");
    assert_eq!(store.incr("g", "f", 1).await.unwrap(), 1);
    drop(redis);
    let r = tokio::time::timeout(Duration::from_secs(10), store.incr("g", "f", 1))
        .await
        .expect("the command timeout ends the call");
    match r {
        Err(social_store::StoreError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), client.quit()).await;
}
