//! The app end to end over its JSON API and the hub: accounts, security rules, friends,
//! feeds (fan-out on write and on read, backfill), chats and unread counts, live events,
//! restarts, and the chat saga with Redis going down.

mod support;

use serde_json::{json, Value};
use support::{call, data_dir, event, ids, live, login, register, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_validated_and_never_show_password_hashes() {
    let dir = data_dir();
    let (app, addr) = start(&dir, &[]).await;
    let anna = register(addr, "Anna", "Smith").await;
    let reg = |body: Value| call(addr, None, "POST", "/api/register", body);

    let (st, v) = reg(
        json!({"email": "anna.smith@test.io", "password": "password123",
        "first_name": "A", "last_name": "S"}),
    )
    .await;
    assert_eq!((st, v["field"].as_str()), (409, Some("email")), "{v}");
    let (st, v) = reg(
        json!({"email": "x@test.io", "password": "short", "first_name": "A", "last_name": "S"}),
    )
    .await;
    assert_eq!((st, v["field"].as_str()), (400, Some("password")), "{v}");
    let (st, v) = reg(json!({"email": "no-at-sign", "password": "password123", "first_name": "A", "last_name": "S"})).await;
    assert_eq!((st, v["field"].as_str()), (400, Some("email")), "{v}");
    let (st, v) = reg(
        json!({"email": "y@test.io", "password": "password123", "first_name": "A",
        "last_name": "S", "birthday": "2001-02-30"}),
    )
    .await;
    assert_eq!((st, v["field"].as_str()), (400, Some("birthday")), "{v}");
    let (st, v) = reg(
        json!({"email": "z@test.io", "password": "password123", "first_name": "",
        "last_name": "S"}),
    )
    .await;
    assert_eq!((st, v["field"].as_str()), (400, Some("first_name")), "{v}");
    let (st, v) = reg(
        json!({"email": "z@test.io", "password": "password123", "first_name": "Z",
        "last_name": "S", "is_admin": true}),
    )
    .await;
    assert_eq!(st, 422, "unknown fields are refused: {v}");
    assert!(v["error"].as_str().unwrap().contains("is_admin"), "{v}");
    let (st, _, body) = support::http(
        addr,
        "POST",
        "/api/register",
        &[("content-type", "application/json")],
        "{not json",
    )
    .await;
    assert_eq!(st, 400, "{body}");
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string());

    // Wrong password and unknown email look the same.
    let (st, v) = call(
        addr,
        None,
        "POST",
        "/api/login",
        json!({"email": "anna.smith@test.io", "password": "wrong-password"}),
    )
    .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (401, Some("wrong email or password"))
    );
    let (st, v) = call(
        addr,
        None,
        "POST",
        "/api/login",
        json!({"email": "nobody@test.io", "password": "wrong-password"}),
    )
    .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (401, Some("wrong email or password"))
    );
    let (st, v) = login(addr, "Anna.Smith@test.io").await;
    assert_eq!(st, 200, "emails are case-insensitive: {v}");

    // Profile, search: no password hash anywhere.
    let (st, v) = anna
        .put(
            "/api/me",
            json!({"first_name": "Anna", "last_name": "Smith", "city": "Oslo",
            "birthday": "1990-05-01", "interests": ["chess", "jazz"]}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["user"]["city"], "Oslo");
    let (_, me) = anna.get("/api/me").await;
    let (_, found) = anna.get("/api/users?q=smi").await;
    for v in [&me, &found] {
        let text = v.to_string();
        assert!(
            !text.contains("argon2") && !text.contains("password"),
            "{text}"
        );
    }
    assert_eq!(ids(&found["users"]), vec![anna.id.clone()]);
    let (st, _) = call(addr, None, "GET", "/api/me", Value::Null).await;
    assert_eq!(st, 401);
    let (st, _) = call(
        addr,
        Some("forged.token.value"),
        "GET",
        "/api/me",
        Value::Null,
    )
    .await;
    assert_eq!(st, 401);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_rate_limited() {
    let dir = data_dir();
    let (app, addr) = start(&dir, &["--login-per-minute", "3"]).await;
    register(addr, "Rate", "Limited").await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let (st, _) = call(
            addr,
            None,
            "POST",
            "/api/login",
            json!({"email": "rate.limited@test.io", "password": "bad-password"}),
        )
        .await;
        statuses.push(st);
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    // Even the right password waits now.
    let (st, v) = login(addr, "rate.limited@test.io").await;
    assert_eq!(st, 429, "{v}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_sessions_need_the_csrf_header_to_change_anything() {
    let dir = data_dir();
    let (app, addr) = start(&dir, &[]).await;
    let (st, head, body) = support::http(addr, "POST", "/api/register",
        &[("content-type", "application/json")],
        &json!({"email": "c@test.io", "password": "password123", "first_name": "C", "last_name": "D"}).to_string()).await;
    assert_eq!(st, 201, "{body}");
    assert!(
        head.contains("set-cookie: session=")
            && head.contains("httponly")
            && head.contains("samesite=lax"),
        "{head}"
    );
    assert!(
        !head.contains("secure"),
        "no Secure cookies in --dev (plain HTTP)"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    let cookie = format!(
        "session={}; csrf={}",
        v["token"].as_str().unwrap(),
        v["csrf"].as_str().unwrap()
    );
    let json_h = ("content-type", "application/json");
    let post = json!({"text": "hello"}).to_string();
    let (st, _, _) = support::http(addr, "GET", "/api/me", &[("cookie", &cookie)], "").await;
    assert_eq!(st, 200, "reading needs no CSRF header");
    let (st, _, b) = support::http(
        addr,
        "POST",
        "/api/posts",
        &[("cookie", &cookie), json_h],
        &post,
    )
    .await;
    assert_eq!(st, 403, "{b}");
    assert!(b.contains("csrf"), "{b}");
    let (st, _, _) = support::http(
        addr,
        "POST",
        "/api/posts",
        &[("cookie", &cookie), json_h, ("x-csrf-token", "guess")],
        &post,
    )
    .await;
    assert_eq!(st, 403);
    let (st, _, b) = support::http(
        addr,
        "POST",
        "/api/posts",
        &[
            ("cookie", &cookie),
            json_h,
            ("x-csrf-token", v["csrf"].as_str().unwrap()),
        ],
        &post,
    )
    .await;
    assert_eq!(st, 201, "{b}");
    // The page: served with a strict CSP.
    let (st, head, page) = support::http(addr, "GET", "/", &[], "").await;
    assert_eq!(st, 200);
    assert!(
        head.contains("content-security-policy: default-src 'self'; script-src 'self'"),
        "{head}"
    );
    assert!(
        page.contains("/static/centrifuge.js"),
        "centrifuge-js is served locally"
    );
    let (st, _, js) = support::http(addr, "GET", "/static/centrifuge.js", &[], "").await;
    assert_eq!(st, 200);
    assert!(js.len() > 1000, "the vendored client");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn friends_and_feeds_with_live_posts() {
    let dir = data_dir();
    let (app, addr) = start(&dir, &[]).await;
    let anna = register(addr, "Anna", "Smith").await;
    let boris = register(addr, "Boris", "Ivanov").await;
    let carl = register(addr, "Carl", "Jones").await;

    // Relation states.
    let rel = |u: &support::User, o: &support::User| {
        let (u, o) = (u.clone(), o.clone());
        async move {
            u.get(&format!("/api/users/{}", o.id)).await.1["relation"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    assert_eq!(rel(&anna, &boris).await, "none");
    assert_eq!(rel(&anna, &anna).await, "self");
    let mut boris_ws = live(&boris).await;
    let (st, v) = anna
        .post(&format!("/api/friends/{}", boris.id), Value::Null)
        .await;
    assert_eq!((st, v["relation"].as_str()), (200, Some("request_sent")));
    let e = event(&mut boris_ws, "friend_request").await;
    assert_eq!(e["from"]["id"], anna.id.as_str());
    assert_eq!(rel(&boris, &anna).await, "request_received");
    let (_, req) = boris.get("/api/friends/requests").await;
    assert_eq!(ids(&req["incoming"]), vec![anna.id.clone()]);
    // Only the asked one can approve.
    let (st, _) = anna
        .post(&format!("/api/friends/{}/approve", boris.id), Value::Null)
        .await;
    assert_eq!(st, 409);
    let (st, _) = anna
        .post(&format!("/api/friends/{}", anna.id), Value::Null)
        .await;
    assert_eq!(st, 400, "no befriending oneself");
    let (st, v) = boris
        .post(&format!("/api/friends/{}/approve", anna.id), Value::Null)
        .await;
    assert_eq!((st, v["relation"].as_str()), (200, Some("friends")));
    assert_eq!(rel(&anna, &boris).await, "friends");
    event(&mut boris_ws, "friend").await;

    // A post reaches the author's own feed and the friend's, live; not a stranger's.
    let (st, p) = anna.post("/api/posts", json!({"text": "first post"})).await;
    assert_eq!(st, 201, "{p}");
    let post = p["post"]["id"].as_str().unwrap().to_string();
    assert_eq!(p["post"]["author"]["first_name"], "Anna");
    let e = event(&mut boris_ws, "post").await;
    assert_eq!(
        (e["post"]["id"].as_str(), e["post"]["text"].as_str()),
        (Some(post.as_str()), Some("first post"))
    );
    assert_eq!(anna.feed().await, vec![post.clone()]);
    assert_eq!(boris.feed().await, vec![post.clone()]);
    assert!(carl.feed().await.is_empty());

    // Friendship later: backfilled. Ordering: newest first; paging with `before`.
    let (st, p2) = anna
        .post("/api/posts", json!({"text": "second post"}))
        .await;
    assert_eq!(st, 201);
    let post2 = p2["post"]["id"].as_str().unwrap().to_string();
    carl.befriend(&anna).await;
    assert_eq!(carl.feed().await, vec![post2.clone(), post.clone()]);
    let (_, page) = carl.get(&format!("/api/feed?limit=1&before={post2}")).await;
    assert_eq!(ids(&page["posts"]), vec![post.clone()]);
    let (_, own) = carl.get(&format!("/api/users/{}/posts", anna.id)).await;
    assert_eq!(ids(&own["posts"]), vec![post2.clone(), post.clone()]);

    // Unfriending takes the posts out of the feed.
    let (st, v) = carl.delete(&format!("/api/friends/{}", anna.id)).await;
    assert_eq!((st, v["relation"].as_str()), (200, Some("none")));
    assert!(carl.feed().await.is_empty());
    let (_, f) = anna.get("/api/friends").await;
    assert_eq!(ids(&f["friends"]), vec![boris.id.clone()]);

    // Bad input.
    let (st, v) = anna.post("/api/posts", json!({"text": "   "})).await;
    assert_eq!((st, v["field"].as_str()), (400, Some("text")));
    let (st, v) = anna
        .post("/api/posts", json!({"text": "x".repeat(5001)}))
        .await;
    assert_eq!((st, v["field"].as_str()), (400, Some("text")));
    let (st, _) = anna.get("/api/feed?limit=1000").await;
    assert_eq!(st, 400);
    let (st, _) = anna.get("/api/users/not-an-id!").await;
    assert_eq!(st, 400);

    // Nobody may subscribe to another user's channel.
    let (_, rt) = carl.get("/api/realtime").await;
    let mut ws = support::ws_connect(&format!("ws://{addr}/connection/websocket")).await;
    support::command(&mut ws, json!({"id": 1, "connect": {"token": rt["token"]}})).await;
    let r = support::command(
        &mut ws,
        json!({"id": 2, "subscribe": {"channel": format!("social:user#{}", anna.id)}}),
    )
    .await;
    assert_eq!(r["error"]["code"], 103, "{r}");
    let mut ws = support::ws_connect(&format!("ws://{addr}/connection/websocket")).await;
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        json!({"id": 1, "connect": {"token": "forged"}})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    use futures_util::StreamExt;
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
        .await
        .unwrap();
    let code = match closed {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f)))) => u16::from(f.code),
        other => panic!("expected a close, got {other:?}"),
    };
    assert_eq!(code, 3500, "invalid token");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authors_with_many_friends_are_fanned_out_on_read() {
    let dir = data_dir();
    let (app, addr) = start(&dir, &["--fanout-limit", "1"]).await;
    let star = register(addr, "Star", "Famous").await;
    let f1 = register(addr, "Fan", "One").await;
    let f2 = register(addr, "Fan", "Two").await;
    f1.befriend(&star).await;
    f2.befriend(&star).await;
    let mut ws = live(&f2).await;
    let (st, p) = star
        .post("/api/posts", json!({"text": "to all my fans"}))
        .await;
    assert_eq!(st, 201);
    let id = p["post"]["id"].as_str().unwrap().to_string();
    // Live anyway, and in every friend's feed though not written to them.
    assert_eq!(event(&mut ws, "post").await["post"]["id"], id.as_str());
    assert_eq!(f1.feed().await, vec![id.clone()]);
    assert_eq!(f2.feed().await, vec![id.clone()]);
    assert_eq!(star.feed().await, vec![id.clone()]);
    let stranger = register(addr, "Not", "Friend").await;
    assert!(stranger.feed().await.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chats_are_members_only_ordered_paged_and_count_unread() {
    let dir = data_dir();
    let (app, addr) = start(&dir, &[]).await;
    let a = register(addr, "Alice", "Chat").await;
    let b = register(addr, "Bob", "Chat").await;
    let eve = register(addr, "Eve", "Outsider").await;

    let (st, d1) = a.post("/api/chats/dialog", json!({"user": b.id})).await;
    assert_eq!(st, 200, "{d1}");
    let (_, d2) = b.post("/api/chats/dialog", json!({"user": a.id})).await;
    let (_, d3) = a.post("/api/chats/dialog", json!({"user": b.id})).await;
    let chat = d1["chat"]["id"].as_str().unwrap().to_string();
    assert_eq!(d2["chat"]["id"], chat.as_str(), "find-or-create finds");
    assert_eq!(d3["chat"]["id"], chat.as_str());
    let (st, _) = a.post("/api/chats/dialog", json!({"user": a.id})).await;
    assert_eq!(st, 400);
    let (st, v) = a
        .post("/api/chats/dialog", json!({"user": "ffffffffffff"}))
        .await;
    assert_eq!(st, 404, "{v}");

    let mut bws = live(&b).await;
    for i in 1..=5 {
        let (st, m) = a
            .post(
                &format!("/api/chats/{chat}/messages"),
                json!({"text": format!("m{i}")}),
            )
            .await;
        assert_eq!((st, m["message"]["seq"].as_u64()), (201, Some(i)), "{m}");
    }
    let e = event(&mut bws, "message").await;
    assert_eq!(
        (
            e["chat"].as_str(),
            e["message"]["text"].as_str(),
            e["unread"].as_i64()
        ),
        (Some(chat.as_str()), Some("m1"), Some(1))
    );
    let (_, list) = b.get("/api/chats").await;
    assert_eq!(list["chats"][0]["unread"], 5, "{list}");
    assert_eq!(list["chats"][0]["members"].as_array().unwrap().len(), 2);

    // Ordered and paged.
    let (_, page) = b.get(&format!("/api/chats/{chat}/messages?limit=2")).await;
    let texts = |v: &Value| {
        v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(texts(&page), ["m4", "m5"]);
    let (_, page) = b
        .get(&format!("/api/chats/{chat}/messages?limit=2&before=4"))
        .await;
    assert_eq!(texts(&page), ["m2", "m3"]);

    // Read: back to 0, live.
    let (st, _) = b
        .post(&format!("/api/chats/{chat}/read"), Value::Null)
        .await;
    assert_eq!(st, 200);
    let (_, list) = b.get("/api/chats").await;
    assert_eq!(list["chats"][0]["unread"], 0);

    // Members only.
    for (st, _) in [
        eve.get(&format!("/api/chats/{chat}/messages")).await,
        eve.post(
            &format!("/api/chats/{chat}/messages"),
            json!({"text": "let me in"}),
        )
        .await,
        eve.get(&format!("/api/chats/{chat}")).await,
        eve.post(&format!("/api/chats/{chat}/read"), Value::Null)
            .await,
    ] {
        assert_eq!(st, 403);
    }
    let (_, list) = eve.get("/api/chats").await;
    assert!(list["chats"].as_array().unwrap().is_empty());

    // Groups.
    let (st, g) = a
        .post(
            "/api/chats/group",
            json!({"title": "Trio", "members": [b.id, eve.id]}),
        )
        .await;
    assert_eq!(st, 201, "{g}");
    let group = g["chat"]["id"].as_str().unwrap().to_string();
    assert_eq!(g["chat"]["members"].as_array().unwrap().len(), 3);
    let (st, _) = eve
        .post(
            &format!("/api/chats/{group}/messages"),
            json!({"text": "hi all"}),
        )
        .await;
    assert_eq!(st, 201);
    let (_, la) = a.get("/api/chats").await;
    let ga = la["chats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == group.as_str())
        .unwrap()
        .clone();
    assert_eq!(ga["unread"], 1);
    let (st, v) = a
        .post("/api/chats/group", json!({"title": "", "members": [b.id]}))
        .await;
    assert_eq!((st, v["field"].as_str()), (400, Some("title")));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_loses_nothing() {
    let dir = data_dir();
    let (app, addr) = start(&dir, &[]).await;
    let a = register(addr, "Durable", "Anna").await;
    let b = register(addr, "Durable", "Boris").await;
    a.befriend(&b).await;
    let (_, p) = a.post("/api/posts", json!({"text": "still here"})).await;
    let (_, d) = a.post("/api/chats/dialog", json!({"user": b.id})).await;
    let chat = d["chat"]["id"].as_str().unwrap().to_string();
    a.post(
        &format!("/api/chats/{chat}/messages"),
        json!({"text": "kept"}),
    )
    .await;
    app.stop().await;

    let (app, addr) = start(&dir, &[]).await;
    let b = support::relogin(addr, "durable.boris@test.io").await;
    assert_eq!(
        b.feed().await,
        vec![p["post"]["id"].as_str().unwrap().to_string()]
    );
    let (_, list) = b.get("/api/chats").await;
    assert_eq!(
        (
            list["chats"][0]["id"].as_str(),
            list["chats"][0]["unread"].as_i64()
        ),
        (Some(chat.as_str()), Some(1))
    );
    let (_, m) = b.get(&format!("/api/chats/{chat}/messages")).await;
    assert_eq!(m["messages"][0]["text"], "kept");
    let (_, f) = b.get("/api/friends").await;
    assert_eq!(ids(&f["friends"]), vec![a.id.clone()]);
    let a = support::relogin(addr, "durable.anna@test.io").await;
    let (_, act) = a.get("/api/me/activity").await;
    assert_eq!(
        act,
        json!({"posts": 1, "messages": 1, "logins": 1}),
        "counted before and after the restart"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_a_message_is_not_half_sent_and_stopping_leaves_redis_running() {
    let mut redis = support::redis::RedisServer::start();
    let url = redis.url();
    let dir = data_dir();
    let (app, addr) = start(&dir, &["--redis", &url, "--redis-prefix", "t1"]).await;
    let a = register(addr, "Saga", "Alice").await;
    let b = register(addr, "Saga", "Bob").await;
    a.befriend(&b).await;
    let (_, d) = a.post("/api/chats/dialog", json!({"user": b.id})).await;
    let chat = d["chat"]["id"].as_str().unwrap().to_string();
    let (st, _) = a
        .post(
            &format!("/api/chats/{chat}/messages"),
            json!({"text": "one"}),
        )
        .await;
    assert_eq!(st, 201);
    // Counters and feeds live in Redis.
    let keys = redis.cli(&["KEYS", "t1*"]).unwrap();
    assert!(keys.contains("unread"), "{keys}");

    redis.kill();
    let (st, v) = a
        .post(
            &format!("/api/chats/{chat}/messages"),
            json!({"text": "lost?"}),
        )
        .await;
    assert_eq!(st, 503, "{v}");
    redis.restart();
    let (st, m) = a
        .post(
            &format!("/api/chats/{chat}/messages"),
            json!({"text": "two"}),
        )
        .await;
    assert_eq!(st, 201, "{m}");
    let (_, ms) = b.get(&format!("/api/chats/{chat}/messages")).await;
    let texts: Vec<&str> = ms["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["one", "two"], "the compensated message is gone");
    // The feed cache was lost with Redis: rebuilt from the posts.
    let (_, p) = a.post("/api/posts", json!({"text": "after restart"})).await;
    assert_eq!(
        b.feed().await,
        vec![p["post"]["id"].as_str().unwrap().to_string()]
    );

    app.stop().await;
    assert_eq!(
        redis.cli(&["PING"]).as_deref().map(str::trim),
        Some("PONG"),
        "the shared Redis outlives the app"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_dev_the_development_secrets_are_refused() {
    use social_app::app::{start, Part};
    use social_app::config::DEV_SECRET;
    let dir = data_dir();
    let d = dir.to_string_lossy().to_string();
    let s = support::settings(&["--data-dir", &d, "--grpc", "127.0.0.1:0"]);
    let err = start(Part::All, &s, "127.0.0.1:0").await.err().unwrap();
    assert!(err.contains("--session-secret"), "{err}");
    let s = support::settings(&[
        "--data-dir",
        &d,
        "--grpc",
        "127.0.0.1:0",
        "--session-secret",
        DEV_SECRET,
        "--hub-secret",
        "a-long-enough-hub-secret",
        "--internal-token",
        "a-long-enough-internal-token",
    ]);
    let err = start(Part::All, &s, "127.0.0.1:0").await.err().unwrap();
    assert!(err.contains("development secret"), "{err}");
    let s = support::settings(&[
        "--data-dir",
        &d,
        "--grpc",
        "127.0.0.1:0",
        "--session-secret",
        "a-long-enough-session-secret",
        "--hub-secret",
        "a-long-enough-hub-secret",
        "--internal-token",
        "a-long-enough-internal-token",
    ]);
    let app = start(Part::All, &s, "127.0.0.1:0").await.unwrap();
    app.stop().await;
}

#[path = "../store/tests/congo/mod.rs"]
mod congo;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_mongodb_the_app_works_and_a_restart_loses_nothing() {
    let server = congo::Congo::start();
    let uri = server.uri();
    let db = format!("social_app_{}", uuid::Uuid::new_v4().simple());
    let dir = data_dir();
    let flags = ["--mongo-uri", uri.as_str(), "--mongo-db", db.as_str()];
    let (app, addr) = start(&dir, &flags).await;
    let a = register(addr, "Mongo", "Anna").await;
    let b = register(addr, "Mongo", "Boris").await;
    a.befriend(&b).await;
    let (st, p) = a
        .post("/api/posts", json!({"text": "stored in MongoDB"}))
        .await;
    assert_eq!(st, 201, "{p}");
    let (_, d) = a.post("/api/chats/dialog", json!({"user": b.id})).await;
    let chat = d["chat"]["id"].as_str().unwrap().to_string();
    let (st, _) = a
        .post(
            &format!("/api/chats/{chat}/messages"),
            json!({"text": "hi"}),
        )
        .await;
    assert_eq!(st, 201);
    app.stop().await;
    // Nothing was written to the embedded store.
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none());

    let (app, addr) = start(&dir, &flags).await;
    let b = support::relogin(addr, "mongo.boris@test.io").await;
    assert_eq!(
        b.feed().await,
        vec![p["post"]["id"].as_str().unwrap().to_string()]
    );
    let (_, list) = b.get("/api/chats").await;
    assert_eq!(list["chats"][0]["unread"], 1, "{list}");
    let (_, d2) = b.post("/api/chats/dialog", json!({"user": a.id})).await;
    assert_eq!(d2["chat"]["id"], chat.as_str());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_users_can_log_in_and_see_feeds_and_chats() {
    use clap::Parser;
    #[derive(Parser)]
    struct Seed {
        #[command(flatten)]
        args: social_app::seed::SeedArgs,
    }
    let dir = data_dir();
    let d = dir.to_string_lossy().to_string();
    let settings = support::settings(&["--data-dir", &d]);
    let args = Seed::parse_from([
        "seed",
        "--users",
        "60",
        "--dialog-percent",
        "100",
        "--seed",
        "7",
    ])
    .args;
    let summary = social_app::seed::run(&settings, &args).await.unwrap();
    assert!(summary.starts_with("seeded 60 users"), "{summary}");

    let (app, addr) = start(&dir, &[]).await;
    let u = support::relogin(addr, "user0-7@example.com").await;
    let (_, f) = u.get("/api/friends").await;
    assert!(!ids(&f["friends"]).is_empty(), "{f}");
    assert!(u.feed().await.len() >= 2, "own posts at least");
    let (_, c) = u.get("/api/chats").await;
    assert!(!c["chats"].as_array().unwrap().is_empty(), "{c}");
    app.stop().await;
}
