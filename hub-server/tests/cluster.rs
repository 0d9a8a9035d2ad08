//! Several hub nodes joined by real `redis-server` processes: delivery, history, presence
//! and server API commands across nodes, and the faults a cluster must survive (Redis
//! restarts and outages, a node killed -9, lost PUB/SUB messages, offline users).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::process::NodeProcess;
use support::redis::RedisServer;
use support::{api, connected, push, reply, send, subscribe, Next};

/// A test config on the Redis engine; pings are slow so raw test clients need not answer.
fn cfg(redis: &RedisServer, prefix: &str, extra: Value) -> hub_server::config::Config {
    let mut base = json!({
        "engine": {
            "type": "redis",
            "redis": {"address": [redis.url()], "prefix": prefix},
            "presence_ttl": "2s"
        },
        "client": {
            "ping_interval": "25s",
            "pong_timeout": "8s",
            "presence_update_interval": "500ms",
            "channel_position_check_delay": "1s"
        },
        "channel": {
            "namespaces": [
                {"name": "chat", "allow_subscribe_for_client": true, "join_leave": true,
                 "force_push_join_leave": true, "presence": true},
                {"name": "inbox", "allow_subscribe_for_client": true, "history_size": 5,
                 "history_ttl": "720h", "force_recovery": true}
            ]
        }
    });
    support::merge(&mut base, extra);
    support::config(base)
}

fn prefix() -> String {
    format!("t{}", uuid::Uuid::new_v4().simple())
}

async fn publish(addr: SocketAddr, channel: &str, text: &str) -> Value {
    let (st, r) = api(
        addr,
        "publish",
        json!({"channel": channel, "data": {"text": text}}),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    assert!(r.get("error").is_none(), "publish failed: {r}");
    r["result"].clone()
}

/// Polls `f` every 100 ms until it is true or `secs` pass.
async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within {secs} s");
}

async fn ready(addr: SocketAddr) -> u16 {
    support::http(addr, "GET", "/ready", &[], "").await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_presence_history_and_joins_cross_nodes() {
    let redis = RedisServer::start();
    let p = prefix();
    let a = support::start(cfg(&redis, &p, json!({}))).await;
    let b = support::start(cfg(&redis, &p, json!({}))).await;

    let mut c = connected(a.addr, "u1").await;
    let sub = subscribe(&mut c, 2, "news").await;
    let epoch = sub["subscribe"]["epoch"].as_str().unwrap().to_owned();
    assert!(!epoch.is_empty());

    let res = publish(b.addr, "news", "hi").await;
    assert_eq!(res["offset"], 1);
    assert_eq!(
        res["epoch"],
        epoch.as_str(),
        "one stream, whichever node reads it"
    );
    let p1 = push(&mut c, "news", "pub").await;
    assert_eq!(p1["data"]["text"], "hi");
    assert_eq!(p1["offset"], 1);

    // History and presence answer from any node.
    let (_, h) = api(a.addr, "history", json!({"channel": "news", "limit": -1})).await;
    assert_eq!(h["result"]["publications"][0]["data"]["text"], "hi");
    assert_eq!(h["result"]["epoch"], epoch.as_str());
    let (_, pr) = api(b.addr, "presence", json!({"channel": "news"})).await;
    let entries = pr["result"]["presence"].as_object().unwrap();
    assert_eq!(entries.len(), 1, "{pr}");
    assert_eq!(entries.values().next().unwrap()["user"], "u1");
    let (_, st) = api(b.addr, "presence_stats", json!({"channel": "news"})).await;
    assert_eq!(st["result"]["num_clients"], 1);
    assert_eq!(st["result"]["num_users"], 1);

    // Joins and leaves reach subscribers on the other node.
    let mut d = connected(b.addr, "u2").await;
    subscribe(&mut d, 2, "chat:room").await;
    subscribe(&mut c, 3, "chat:room").await;
    // d first hears its own join, then u1's from node A.
    loop {
        let join = push(&mut d, "chat:room", "join").await;
        if join["info"]["user"] == "u1" {
            break;
        }
        assert_eq!(join["info"]["user"], "u2");
    }
    send(&mut c, r#"{"id":4,"unsubscribe":{"channel":"chat:room"}}"#).await;
    reply(&mut c, 4).await;
    let leave = push(&mut d, "chat:room", "leave").await;
    assert_eq!(leave["info"]["user"], "u1");
    // A node keeps its Redis subscription only while it has subscribers: A left, B stays.
    let numsub = || {
        redis
            .cli(&["PUBSUB", "NUMSUB", &format!("{p}.client.{{chat:room}}")])
            .unwrap()
            .lines()
            .nth(1)
            .unwrap_or("")
            .trim()
            .to_owned()
    };
    eventually(5, "node A unsubscribes from Redis", || {
        let n = numsub();
        async move { n == "1" }
    })
    .await;

    // Many publications from both nodes arrive in offset order, none missing.
    for i in 0..50 {
        let via = if i % 2 == 0 { a.addr } else { b.addr };
        publish(via, "news", &format!("m{i}")).await;
    }
    let mut seen = Vec::new();
    while seen.len() < 50 {
        match support::next(&mut c).await {
            Next::Json(v) => {
                for m in v {
                    if m["push"]["channel"] == "news" {
                        seen.push(m["push"].clone());
                    }
                }
            }
            Next::Closed(code) => panic!("closed ({code:?}) after {seen:?}"),
        }
    }
    for (i, p) in seen.iter().enumerate() {
        assert_eq!(p["pub"]["offset"], i as u64 + 2, "{seen:?}");
        assert_eq!(p["pub"]["data"]["text"], format!("m{i}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_api_commands_act_on_every_node() {
    let redis = RedisServer::start();
    let p = prefix();
    let a = support::start(cfg(&redis, &p, json!({}))).await;
    let b = support::start(cfg(&redis, &p, json!({}))).await;
    let mut c = connected(a.addr, "alice").await;
    subscribe(&mut c, 2, "news").await;

    // Nodes announce themselves: `info` on either lists both.
    eventually(10, "both nodes in info", || async {
        let (_, i) = api(b.addr, "info", json!({})).await;
        i["result"]["nodes"]
            .as_array()
            .is_some_and(|n| n.len() == 2)
    })
    .await;
    let (_, i) = api(b.addr, "info", json!({})).await;
    let clients: u64 = i["result"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["num_clients"].as_u64().unwrap())
        .sum();
    assert_eq!(clients, 1);

    // `channels` gathers from every node.
    let (_, ch) = api(b.addr, "channels", json!({})).await;
    assert_eq!(ch["result"]["channels"]["news"]["num_clients"], 1, "{ch}");

    // subscribe / unsubscribe / disconnect through node B act on alice's connection on A.
    let (st, r) = api(
        b.addr,
        "subscribe",
        json!({"user": "alice", "channel": "extra"}),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    push(&mut c, "extra", "subscribe").await;
    api(
        b.addr,
        "unsubscribe",
        json!({"user": "alice", "channel": "news"}),
    )
    .await;
    let u = push(&mut c, "news", "unsubscribe").await;
    assert_eq!(u["code"], 2000);
    api(
        b.addr,
        "disconnect",
        json!({"user": "alice", "disconnect": {"code": 4501, "reason": "bye"}}),
    )
    .await;
    assert!(support::is_close(support::close_code(&mut c).await, 4501));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_publication_makes_the_subscriber_resubscribe_and_recover() {
    let redis = RedisServer::start();
    let p = prefix();
    let a = support::start(cfg(&redis, &p, json!({}))).await;
    let mut c = connected(a.addr, "u1").await;
    let sub = subscribe(&mut c, 2, "news").await;
    let epoch = sub["subscribe"]["epoch"].as_str().unwrap().to_owned();
    publish(a.addr, "news", "one").await;
    assert_eq!(push(&mut c, "news", "pub").await["offset"], 1);

    // Offset 2 goes into the stream but its PUB/SUB message is lost.
    let lose = |n: u64| {
        let meta = format!("{p}.meta.{{news}}");
        let stream = format!("{p}.stream.{{news}}");
        assert_eq!(
            redis.cli(&["HINCRBY", &meta, "s", "1"]).unwrap().trim(),
            n.to_string()
        );
        redis
            .cli(&[
                "XADD",
                &stream,
                &n.to_string(),
                "d",
                &format!(r#"{{"d":{{"text":"lost{n}"}}}}"#),
            ])
            .unwrap();
    };
    lose(2);
    // Offset 3 reveals the gap: no publication 3, an unsubscribe push with 2500 instead.
    publish(a.addr, "news", "three").await;
    let u = push(&mut c, "news", "unsubscribe").await;
    assert_eq!(u["code"], 2500, "{u}");
    // The client resubscribes with recovery (as centrifuge-js does) and gets both.
    send(
        &mut c,
        &json!({"id": 3, "subscribe": {"channel": "news", "recover": true, "offset": 1, "epoch": epoch}})
            .to_string(),
    )
    .await;
    let r = reply(&mut c, 3).await;
    let s = &r["subscribe"];
    assert_eq!(s["recovered"], true, "{r}");
    let texts: Vec<&str> = s["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["data"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["lost2", "three"]);

    // A loss with no later publication is found by the periodic position check.
    lose(4);
    let u = push(&mut c, "news", "unsubscribe").await;
    assert_eq!(u["code"], 2500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_fast_keeps_connections_and_heals() {
    let mut redis = RedisServer::start_persistent();
    let p = prefix();
    let a = support::start(cfg(&redis, &p, json!({}))).await;
    let b = support::start(cfg(&redis, &p, json!({}))).await;
    let mut c = connected(a.addr, "u1").await;
    let sub = subscribe(&mut c, 2, "news").await;
    let epoch = sub["subscribe"]["epoch"].as_str().unwrap().to_owned();
    publish(b.addr, "news", "before").await;
    assert_eq!(push(&mut c, "news", "pub").await["offset"], 1);
    assert_eq!(ready(a.addr).await, 200);

    redis.kill();
    for node in [a.addr, b.addr] {
        eventually(10, "/ready reports the outage", || async {
            ready(node).await == 503
        })
        .await;
    }
    // Publishing fails fast with a temporary error, on every node.
    for node in [a.addr, b.addr] {
        let t = Instant::now();
        let (st, r) = api(node, "publish", json!({"channel": "news", "data": {}})).await;
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "took {:?}",
            t.elapsed()
        );
        assert_eq!(st, 200);
        assert_eq!(r["error"]["code"], 100, "{r}");
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap()
                .contains("unavailable"),
            "{r}"
        );
    }
    // Connections stay up meanwhile (no close arrives within 2 s).
    let quiet = tokio::time::timeout(Duration::from_secs(2), support::next(&mut c)).await;
    assert!(
        quiet.is_err(),
        "the client heard something during the outage"
    );
    assert_eq!(a.node.num_clients(), 1);

    // Redis comes back (with its data): nodes reconnect and resubscribe on their own.
    redis.restart();
    for node in [a.addr, b.addr] {
        eventually(20, "/ready after Redis returns", || async {
            ready(node).await == 200
        })
        .await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let res = loop {
        let (_, r) = api(
            b.addr,
            "publish",
            json!({"channel": "news", "data": {"text": "after"}}),
        )
        .await;
        if r.get("error").is_none() {
            break r;
        }
        assert!(Instant::now() < deadline, "publish still failing: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(res["result"]["offset"], 2);
    assert_eq!(
        res["result"]["epoch"],
        epoch.as_str(),
        "the stream survived the restart"
    );
    let p2 = push(&mut c, "news", "pub").await;
    assert_eq!(p2["data"]["text"], "after");
    assert_eq!(p2["offset"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_clients_recover_on_another_and_its_presence_expires() {
    let redis = RedisServer::start();
    let p = prefix();
    let config = cfg(&redis, &p, json!({}));
    let mut a = NodeProcess::start(&config).await;
    let b = support::start(config).await;

    let mut c = connected(a.addr, "u1").await;
    let sub = subscribe(&mut c, 2, "news").await;
    let epoch = sub["subscribe"]["epoch"].as_str().unwrap().to_owned();
    publish(b.addr, "news", "one").await;
    assert_eq!(push(&mut c, "news", "pub").await["offset"], 1);
    let (_, pr) = api(b.addr, "presence", json!({"channel": "news"})).await;
    assert_eq!(pr["result"]["presence"].as_object().unwrap().len(), 1);

    a.kill();
    assert!(matches!(support::next(&mut c).await, Next::Closed(_)));
    publish(b.addr, "news", "two").await;
    publish(b.addr, "news", "three").await;

    // The client reconnects to node B and recovers what it missed.
    let mut c2 = connected(b.addr, "u1").await;
    send(
        &mut c2,
        &json!({"id": 2, "subscribe": {"channel": "news", "recover": true, "offset": 1, "epoch": epoch}})
            .to_string(),
    )
    .await;
    let r = reply(&mut c2, 2).await;
    assert_eq!(r["subscribe"]["recovered"], true, "{r}");
    let offsets: Vec<u64> = r["subscribe"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [2, 3]);

    // The dead node's presence entry expires (TTL 2 s); the live one stays.
    eventually(10, "dead node's presence expires", || async {
        let (_, pr) = api(b.addr, "presence", json!({"channel": "news"})).await;
        pr["result"]["presence"]
            .as_object()
            .is_some_and(|m| m.len() == 1)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, pr) = api(b.addr, "presence", json!({"channel": "news"})).await;
    assert_eq!(
        pr["result"]["presence"].as_object().unwrap().len(),
        1,
        "the live connection refreshes its entry: {pr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_user_recovers_everything_across_node_and_redis_restarts() {
    let mut redis = RedisServer::start_persistent();
    let p = prefix();
    let a = support::start(cfg(&redis, &p, json!({}))).await;
    let mut c = connected(a.addr, "alice").await;
    let sub = subscribe(&mut c, 2, "inbox:alice").await;
    let epoch = sub["subscribe"]["epoch"].as_str().unwrap().to_owned();
    drop(c);
    for i in 1..=3 {
        publish(a.addr, "inbox:alice", &format!("m{i}")).await;
    }
    // The node and Redis both restart while alice is away.
    a.shutdown().await;
    redis.restart();
    let a = support::start(cfg(&redis, &p, json!({}))).await;

    let resubscribe = |id: u64, offset: u64| {
        json!({"id": id, "subscribe": {"channel": "inbox:alice", "recover": true, "offset": offset, "epoch": epoch}})
            .to_string()
    };
    let mut c = connected(a.addr, "alice").await;
    send(&mut c, &resubscribe(2, 0)).await;
    let r = reply(&mut c, 2).await;
    assert_eq!(r["subscribe"]["recovered"], true, "{r}");
    let texts: Vec<&str> = r["subscribe"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["data"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["m1", "m2", "m3"]);
    drop(c);

    // Beyond the namespace's history size (5) the client is told it did not recover.
    for i in 4..=9 {
        publish(a.addr, "inbox:alice", &format!("m{i}")).await;
    }
    let mut c = connected(a.addr, "alice").await;
    send(&mut c, &resubscribe(2, 3)).await;
    let r = reply(&mut c, 2).await;
    // (`recovered: false` is the field left out.)
    assert!(r["subscribe"].get("recovered").is_none(), "{r}");
    assert_eq!(r["subscribe"]["was_recovering"], true);
    assert!(r["subscribe"].get("publications").is_none(), "{r}");
    assert_eq!(r["subscribe"]["offset"], 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_at_start_is_a_clear_error() {
    let redis = RedisServer::start();
    let port = redis.port;
    drop(redis);
    let config = support::config(json!({
        "engine": {"type": "redis", "redis": {"address": format!("redis://127.0.0.1:{port}")}}
    }));
    let err = match hub_server::server::build(config).await {
        Ok(_) => panic!("a node started without its Redis"),
        Err(e) => e,
    };
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
}

/// Subscribes to `channels` on node `sub_at`, publishes each through `pub_at` and checks
/// every subscriber gets its publication with offset 1, then recovers it after a reconnect.
async fn cross_node_round(sub_at: SocketAddr, pub_at: SocketAddr, channels: &[String]) {
    let mut c = connected(sub_at, "u1").await;
    let mut epochs = Vec::new();
    for (i, ch) in channels.iter().enumerate() {
        let s = subscribe(&mut c, 10 + i as u64, ch).await;
        epochs.push(s["subscribe"]["epoch"].as_str().unwrap().to_owned());
    }
    for ch in channels {
        assert_eq!(publish(pub_at, ch, ch).await["offset"], 1);
    }
    // Channels on different Redis servers need not arrive in publish order.
    let mut missing: std::collections::HashSet<&str> =
        channels.iter().map(String::as_str).collect();
    while !missing.is_empty() {
        match support::next(&mut c).await {
            Next::Json(v) => {
                for m in v {
                    let p = &m["push"];
                    if let (Some(ch), Some(publication)) = (p["channel"].as_str(), p.get("pub")) {
                        assert_eq!(publication["data"]["text"], ch);
                        assert!(missing.remove(ch), "{ch} delivered twice");
                    }
                }
            }
            Next::Closed(code) => panic!("closed ({code:?})"),
        }
    }
    drop(c);
    let mut c = connected(sub_at, "u1").await;
    for (i, ch) in channels.iter().enumerate() {
        send(
            &mut c,
            &json!({"id": 100 + i, "subscribe": {"channel": ch, "recover": true, "offset": 0, "epoch": epochs[i]}})
                .to_string(),
        )
        .await;
        let r = reply(&mut c, 100 + i as u64).await;
        assert_eq!(r["subscribe"]["recovered"], true, "{r}");
        assert_eq!(
            r["subscribe"]["publications"][0]["data"]["text"],
            ch.as_str()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_are_sharded_over_several_redis_servers() {
    let r1 = RedisServer::start();
    let mut r2 = RedisServer::start();
    let p = prefix();
    let shards = json!({"engine": {"redis": {"address": [r1.url(), r2.url()]}}});
    let a = support::start(cfg(&r1, &p, shards.clone())).await;
    let b = support::start(cfg(&r1, &p, shards)).await;
    let channels: Vec<String> = (0..20).map(|i| format!("shard-{i}")).collect();
    cross_node_round(a.addr, b.addr, &channels).await;
    // Both servers hold streams: channels are spread by consistent hashing.
    let count = |r: &RedisServer| -> usize {
        r.cli(&["KEYS", &format!("{p}.meta.*")])
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
    };
    let (n1, n2) = (count(&r1), count(&r2));
    assert_eq!(n1 + n2, 20);
    assert!(n1 >= 3 && n2 >= 3, "uneven spread: {n1} and {n2}");

    // One shard down: its channels fail fast, the other shard's keep working.
    r2.kill();
    eventually(10, "/ready reports the lost shard", || async {
        ready(a.addr).await == 503
    })
    .await;
    // /metrics tells which shard is down (only this test has a second shard; the other tests
    // of this process share the recorder and shard 0's series).
    let metrics = support::http(a.addr, "GET", "/metrics", &[], "").await.1;
    assert!(
        metrics.contains("hub_redis_shard_up{shard=\"1\"} 0"),
        "{metrics}"
    );
    let (mut ok, mut failed) = (0, 0);
    for ch in &channels {
        let (_, r) = api(b.addr, "publish", json!({"channel": ch, "data": {}})).await;
        if r.get("error").is_none() {
            ok += 1;
        } else {
            assert_eq!(r["error"]["code"], 100);
            failed += 1;
        }
    }
    assert_eq!((ok, failed), (n1, n2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_work_over_a_redis_cluster() {
    let cluster = support::redis::RedisCluster::start();
    let p = prefix();
    let extra = json!({"engine": {"redis": {"address": [], "cluster_address": [cluster.seeds()]}}});
    // `cfg` wants a standalone server for its default address; the cluster replaces it.
    let placeholder = RedisServer::start();
    let a = support::start(cfg(&placeholder, &p, extra.clone())).await;
    let b = support::start(cfg(&placeholder, &p, extra)).await;
    let channels: Vec<String> = (0..12).map(|i| format!("cl-{i}")).collect();
    cross_node_round(a.addr, b.addr, &channels).await;
    // Hash-tagged keys spread over the masters; the placeholder server holds nothing.
    let counts = cluster.key_counts();
    assert_eq!(counts.iter().filter(|&&n| n > 0).count(), 3, "{counts:?}");
    assert_eq!(placeholder.cli(&["DBSIZE"]).unwrap().trim(), "0");
    // Presence works from the other node.
    let mut c = connected(a.addr, "u9").await;
    subscribe(&mut c, 2, "cl-presence").await;
    let (_, pr) = api(b.addr, "presence", json!({"channel": "cl-presence"})).await;
    assert_eq!(
        pr["result"]["presence"].as_object().unwrap().len(),
        1,
        "{pr}"
    );
    // Channel messages use sharded PUB/SUB: the channel is a shard channel on its master.
    let shard_channels = cluster.cli_all(&["PUBSUB", "SHARDCHANNELS", "*cl-presence*"]);
    assert_eq!(
        shard_channels
            .iter()
            .filter(|o| o.contains("cl-presence"))
            .count(),
        1,
        "{shard_channels:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_lost_its_data_makes_recovering_clients_reload_never_a_silent_gap() {
    // No persistence: the restart loses every stream.
    let mut redis = RedisServer::start();
    let p = prefix();
    let a = support::start(cfg(&redis, &p, json!({}))).await;
    let mut c = connected(a.addr, "u1").await;
    let sub = subscribe(&mut c, 2, "news").await;
    let epoch = sub["subscribe"]["epoch"].as_str().unwrap().to_owned();
    publish(a.addr, "news", "one").await;
    assert_eq!(push(&mut c, "news", "pub").await["offset"], 1);

    redis.restart();
    // After resubscribing, the node's position check sees a new epoch: the subscriber is
    // told its state is gone (2500) instead of silently continuing in a new stream.
    let u = push(&mut c, "news", "unsubscribe").await;
    assert_eq!(u["code"], 2500, "{u}");
    send(
        &mut c,
        &json!({"id": 3, "subscribe": {"channel": "news", "recover": true, "offset": 1, "epoch": epoch}})
            .to_string(),
    )
    .await;
    let r = reply(&mut c, 3).await;
    let s = &r["subscribe"];
    assert_eq!(s["was_recovering"], true, "{r}");
    assert!(s.get("recovered").is_none(), "must not claim recovery: {r}");
    assert_ne!(s["epoch"], epoch.as_str(), "a new stream");
    // Publications of the new stream arrive as usual.
    publish(a.addr, "news", "two").await;
    let p2 = push(&mut c, "news", "pub").await;
    assert_eq!(
        (p2["offset"].as_u64(), p2["data"]["text"].as_str()),
        (Some(1), Some("two"))
    );
}
