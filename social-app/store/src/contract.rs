//! The contract every backend keeps: test functions that drive a store through its trait and
//! assert the documented behaviour, panicking on the first difference.
//!
//! Each backend's integration tests call these (`tests/embedded.rs`, `tests/redis.rs`,
//! `tests/mongo.rs`). They make their own users, names, ids and counter groups, unique to the
//! call (a fresh tag from the clock and a counter), so they also run against a store that
//! already holds data or that other tests share, one at a time. Ids they make up themselves are
//! 24 hex digits (valid ObjectIds) that sort in the order they were made.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use futures_util::future::join_all;

use crate::{
    now_ms, ChatKind, ChatStore, CounterStore, FeedItem, FeedStore, FriendStore, Id, NewUser, Post,
    PostStore, Profile, Relation, StoreError, UserStore,
};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A made-up id: 24 hex digits, unique, sorting in the order they were made (in this process).
pub fn fresh_id() -> Id {
    static BASE: OnceLock<u64> = OnceLock::new();
    let base = *BASE.get_or_init(|| u64::try_from(now_ms()).unwrap_or(0) << 20);
    format!(
        "{:024x}",
        base.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed))
    )
}

/// A tag of lower-case letters unique to this call, for names, emails and counter groups.
pub fn fresh_tag() -> String {
    let n = u64::try_from(now_ms()).unwrap_or(0) * 1024 + COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut n = n % 26u64.pow(12);
    let mut tag = String::with_capacity(12);
    for _ in 0..12 {
        let letter = u8::try_from(n % 26).unwrap_or(0);
        tag.push(char::from(b'a' + letter));
        n /= 26;
    }
    tag
}

fn new_user(email: &str, first: &str, last: &str) -> NewUser {
    NewUser {
        email: email.to_string(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_string(),
        profile: Profile {
            first_name: first.to_string(),
            last_name: last.to_string(),
            birthday: "1990-01-02".to_string(),
            city: "Lisbon".to_string(),
            interests: vec!["chess".to_string(), "hiking".to_string()],
        },
    }
}

/// Users: create and read back, email conflict (also under concurrent creates), lookups by id
/// and email, `users` in the order asked, profile update, ids in creation order, the count.
pub async fn users(s: &dyn UserStore) {
    let tag = fresh_tag();
    let before = s.count_users().await.expect("count_users");

    let email = format!("{tag}@example.com");
    let nu = new_user(&email, "Ada", "Lovelace");
    let a = s.create_user(nu.clone()).await.expect("create_user");
    assert_eq!(a.email, email);
    assert_eq!(a.password_hash, nu.password_hash);
    assert_eq!(a.profile, nu.profile);
    assert!(a.created_at > 0, "created_at is set");
    assert!(!a.id.is_empty());

    match s.create_user(new_user(&email, "Other", "Person")).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("a second user with the same email must be a conflict: {other:?}"),
    }

    assert_eq!(s.user(&a.id).await.expect("user"), Some(a.clone()));
    assert_eq!(s.user(&fresh_id()).await.expect("user"), None);
    assert_eq!(
        s.user_by_email(&email).await.expect("user_by_email"),
        Some(a.clone())
    );
    assert_eq!(
        s.user_by_email(&format!("{tag}-nobody@example.com"))
            .await
            .expect("user_by_email"),
        None
    );

    let b = s
        .create_user(new_user(&format!("{tag}.b@example.com"), "Bob", "Builder"))
        .await
        .expect("create_user");
    assert!(
        b.id > a.id,
        "ids sort in creation order: {} > {}",
        b.id,
        a.id
    );
    let got = s
        .users(&[b.id.clone(), fresh_id(), a.id.clone()])
        .await
        .expect("users");
    assert_eq!(
        got,
        vec![b.clone(), a.clone()],
        "existing users, in the order asked"
    );
    assert_eq!(s.users(&[]).await.expect("users"), vec![]);

    let profile = Profile {
        first_name: "Augusta".into(),
        last_name: "King".into(),
        birthday: String::new(),
        city: "London".into(),
        interests: vec!["engines".into()],
    };
    let updated = s
        .update_profile(&a.id, profile.clone())
        .await
        .expect("update_profile")
        .expect("the user exists");
    assert_eq!(updated.profile, profile);
    assert_eq!(updated.id, a.id);
    assert_eq!(updated.email, a.email);
    assert_eq!(updated.created_at, a.created_at);
    assert_eq!(s.user(&a.id).await.expect("user"), Some(updated));
    assert_eq!(
        s.update_profile(&fresh_id(), profile)
            .await
            .expect("update_profile"),
        None
    );

    // Ten creates with one email at once: exactly one wins.
    let email = format!("{tag}.race@example.com");
    let results =
        join_all((0..10).map(|i| s.create_user(new_user(&email, "Race", &format!("R{i}"))))).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    let conflicts = results
        .iter()
        .filter(|r| matches!(r, Err(StoreError::Conflict(_))))
        .count();
    assert_eq!(
        (won, conflicts),
        (1, 9),
        "one create wins, the others conflict: {results:?}"
    );

    assert_eq!(s.count_users().await.expect("count_users"), before + 3);
}

/// Collects every page of a search; panics past 100 pages.
async fn search_all(s: &dyn UserStore, prefix: &str, limit: usize) -> Vec<Id> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let page = s
            .search(prefix, cursor.as_deref(), limit)
            .await
            .expect("search");
        assert!(page.items.len() <= limit, "a page holds at most `limit`");
        if page.next.is_some() {
            assert_eq!(page.items.len(), limit, "only a full page has a next one");
        }
        ids.extend(page.items.into_iter().map(|u| u.id));
        match page.next {
            Some(n) => cursor = Some(n),
            None => return ids,
        }
    }
    panic!("search {prefix:?} did not end within 100 pages");
}

/// Search by name prefix: case-insensitive, first or last name, each user once across pages,
/// paged by `limit` with the cursor, no match in the middle of a name, follows profile edits.
pub async fn search(s: &dyn UserStore) {
    let tag = fresh_tag();
    let up = tag.to_uppercase();
    let mk = |n: &str, first: String, last: String| {
        let email = format!("{tag}.{n}@example.com");
        async move {
            s.create_user(new_user(&email, &first, &last))
                .await
                .expect("create_user")
                .id
        }
    };
    let anna = mk("anna", format!("{up}Anna"), format!("{up}Berg")).await;
    let annika = mk("annika", format!("{tag}annika"), "Smith".into()).await;
    let bob = mk("bob", "Bob".into(), format!("{up}ANNSON")).await;
    let both = mk("both", format!("{up}Anne"), format!("{up}Annberg")).await;
    let middle = mk("middle", "Carl".into(), format!("Mid{up}Ann")).await;
    let zed = mk("zed", format!("{up}Zed"), "Other".into()).await;

    let set = |v: &[Id]| v.iter().cloned().collect::<HashSet<_>>();
    let ann = format!("{tag}ann");
    for limit in [1, 2, 3, 10] {
        let got = search_all(s, &ann, limit).await;
        assert_eq!(got.len(), 4, "each match once (limit {limit}): {got:?}");
        assert_eq!(
            set(&got),
            set(&[anna.clone(), annika.clone(), bob.clone(), both.clone()]),
            "limit {limit}"
        );
    }
    let got = search_all(s, &tag, 2).await;
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(
        set(&got),
        set(&[
            anna.clone(),
            annika.clone(),
            bob.clone(),
            both.clone(),
            zed.clone()
        ])
    );
    assert!(!got.contains(&middle), "a name matches at its start only");

    assert_eq!(
        search_all(s, &format!("{tag}b"), 5).await,
        vec![anna.clone()]
    );
    assert_eq!(
        search_all(s, &format!("{tag}zed"), 5).await,
        vec![zed.clone()]
    );
    let none = s.search(&format!("{tag}q"), None, 5).await.expect("search");
    assert!(none.items.is_empty() && none.next.is_none(), "{none:?}");
    let one = s
        .search(&format!("{tag}annson"), None, 5)
        .await
        .expect("search");
    assert_eq!(one.items.len(), 1);
    assert_eq!(one.items[0].id, bob);
    assert_eq!(one.items[0].profile.last_name, format!("{up}ANNSON"));
    assert!(one.next.is_none());

    // A profile edit moves the user in the index.
    let mut profile = s.user(&zed).await.expect("user").expect("exists").profile;
    profile.first_name = format!("{up}Yara");
    s.update_profile(&zed, profile)
        .await
        .expect("update_profile");
    assert!(search_all(s, &format!("{tag}z"), 5).await.is_empty());
    assert_eq!(search_all(s, &format!("{tag}y"), 5).await, vec![zed]);
}

/// Friend requests and friendships: every relation state both ways, idempotent requests,
/// incoming and outgoing lists oldest first, friendship clearing requests, friend pages by id,
/// counts.
pub async fn friends(s: &dyn FriendStore) {
    let a = fresh_id();
    let b = fresh_id();
    let c = fresh_id();
    let d = fresh_id();

    assert_eq!(s.relation(&a, &b).await.expect("relation"), Relation::None);
    s.add_request(&a, &b).await.expect("add_request");
    s.add_request(&a, &b).await.expect("add_request twice");
    assert_eq!(
        s.relation(&a, &b).await.expect("relation"),
        Relation::RequestSent
    );
    assert_eq!(
        s.relation(&b, &a).await.expect("relation"),
        Relation::RequestReceived
    );
    s.add_request(&c, &b).await.expect("add_request");
    s.add_request(&d, &b).await.expect("add_request");
    s.add_request(&a, &c).await.expect("add_request");
    assert_eq!(
        s.incoming_requests(&b, 10).await.expect("incoming"),
        vec![a.clone(), c.clone(), d.clone()],
        "oldest first, each once"
    );
    assert_eq!(
        s.incoming_requests(&b, 2).await.expect("incoming"),
        vec![a.clone(), c.clone()]
    );
    assert_eq!(
        s.outgoing_requests(&a, 10).await.expect("outgoing"),
        vec![b.clone(), c.clone()]
    );
    assert!(s
        .outgoing_requests(&b, 10)
        .await
        .expect("outgoing")
        .is_empty());

    assert!(s.remove_request(&d, &b).await.expect("remove_request"));
    assert!(!s.remove_request(&d, &b).await.expect("remove_request"));
    assert_eq!(s.relation(&d, &b).await.expect("relation"), Relation::None);
    assert_eq!(
        s.incoming_requests(&b, 10).await.expect("incoming"),
        vec![a.clone(), c.clone()]
    );

    // b accepts a: friends, and the request is gone either way.
    s.add_friendship(&b, &a).await.expect("add_friendship");
    s.add_friendship(&a, &b)
        .await
        .expect("add_friendship twice");
    assert_eq!(
        s.relation(&a, &b).await.expect("relation"),
        Relation::Friends
    );
    assert_eq!(
        s.relation(&b, &a).await.expect("relation"),
        Relation::Friends
    );
    assert_eq!(
        s.incoming_requests(&b, 10).await.expect("incoming"),
        vec![c.clone()]
    );
    assert_eq!(
        s.outgoing_requests(&a, 10).await.expect("outgoing"),
        vec![c.clone()]
    );
    assert_eq!(s.friend_count(&a).await.expect("friend_count"), 1);
    assert_eq!(s.friend_count(&b).await.expect("friend_count"), 1);
    assert_eq!(s.friend_count(&d).await.expect("friend_count"), 0);

    // A request the other way is cleared by the friendship too.
    s.add_request(&c, &a).await.expect("add_request");
    s.add_friendship(&a, &c).await.expect("add_friendship");
    assert!(s
        .outgoing_requests(&a, 10)
        .await
        .expect("outgoing")
        .is_empty());
    assert_eq!(
        s.outgoing_requests(&c, 10).await.expect("outgoing"),
        vec![b.clone()],
        "only the requests between the two are cleared"
    );

    // Pages of friends, ordered by id.
    let mut all = vec![b.clone(), c.clone()];
    for _ in 0..5 {
        let f = fresh_id();
        s.add_friendship(&f, &a).await.expect("add_friendship");
        all.push(f);
    }
    all.sort();
    assert_eq!(s.friend_count(&a).await.expect("friend_count"), 7);
    let mut got = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let page = s.friends(&a, cursor.as_deref(), 3).await.expect("friends");
        assert!(page.items.len() <= 3);
        got.extend(page.items);
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(got, all, "every friend once, by id");
    let page = s.friends(&a, None, 10).await.expect("friends");
    assert_eq!(page.items, all);
    assert_eq!(page.next, None);
    assert_eq!(
        s.friends(&b, None, 10).await.expect("friends").items,
        vec![a.clone()]
    );
    assert!(s
        .friends(&d, None, 10)
        .await
        .expect("friends")
        .items
        .is_empty());

    assert!(s
        .remove_friendship(&b, &a)
        .await
        .expect("remove_friendship"));
    assert!(!s
        .remove_friendship(&a, &b)
        .await
        .expect("remove_friendship"));
    assert_eq!(s.relation(&a, &b).await.expect("relation"), Relation::None);
    assert_eq!(s.relation(&b, &a).await.expect("relation"), Relation::None);
    assert_eq!(s.friend_count(&a).await.expect("friend_count"), 6);
    assert_eq!(s.friend_count(&b).await.expect("friend_count"), 0);
    assert!(s
        .friends(&b, None, 10)
        .await
        .expect("friends")
        .items
        .is_empty());
}

/// Posts: create and read back, `posts` in the order asked, an author's posts newest first,
/// paged with `before`, other authors kept apart, counts.
pub async fn posts(s: &dyn PostStore) {
    let author = fresh_id();
    let other = fresh_id();
    let mut made: Vec<Post> = Vec::new();
    for i in 0..7 {
        let p = s
            .create_post(&author, &format!("post <{i}> & more"))
            .await
            .expect("create_post");
        assert_eq!(p.author, author);
        assert_eq!(p.text, format!("post <{i}> & more"), "text as written");
        assert!(p.created_at > 0);
        if let Some(prev) = made.last() {
            assert!(p.id > prev.id, "ids sort in creation order");
        }
        made.push(p);
    }
    let o = s.create_post(&other, "other").await.expect("create_post");

    let got = s
        .posts(&[
            made[2].id.clone(),
            fresh_id(),
            o.id.clone(),
            made[0].id.clone(),
        ])
        .await
        .expect("posts");
    assert_eq!(got, vec![made[2].clone(), o.clone(), made[0].clone()]);

    let newest_first: Vec<_> = made.iter().rev().cloned().collect();
    assert_eq!(
        s.posts_by(&author, None, 100).await.expect("posts_by"),
        newest_first
    );
    let page1 = s.posts_by(&author, None, 3).await.expect("posts_by");
    assert_eq!(page1, newest_first[..3].to_vec());
    let page2 = s
        .posts_by(&author, Some(&page1[2].id), 3)
        .await
        .expect("posts_by");
    assert_eq!(page2, newest_first[3..6].to_vec());
    let page3 = s
        .posts_by(&author, Some(&page2[2].id), 3)
        .await
        .expect("posts_by");
    assert_eq!(page3, newest_first[6..].to_vec());
    assert_eq!(
        s.posts_by(&other, None, 10).await.expect("posts_by"),
        vec![o]
    );
    assert!(s
        .posts_by(&fresh_id(), None, 10)
        .await
        .expect("posts_by")
        .is_empty());

    assert_eq!(s.count_posts_by(&author).await.expect("count_posts_by"), 7);
    assert_eq!(s.count_posts_by(&other).await.expect("count_posts_by"), 1);
    assert_eq!(
        s.count_posts_by(&fresh_id()).await.expect("count_posts_by"),
        0
    );
}

fn item(post: &str, author: &str) -> FeedItem {
    FeedItem {
        post: post.to_string(),
        author: author.to_string(),
    }
}

/// Home feeds: `None` until built, `Some(empty)` after an empty `replace`, pushes kept in post
/// order and bounded to `cap`, duplicates ignored, `push` to several users, `push_many`,
/// paging with `before`, `remove_author`, `replace` dropping what was there.
///
/// Whether a push into a feed that was never built creates it is left to the backend (a cache
/// must not: it would pass a partial feed for a whole one); this suite builds every feed with
/// `replace` before pushing.
pub async fn feeds(s: &dyn FeedStore) {
    let u = fresh_id();
    let v = fresh_id();
    let w = fresh_id();
    let alice = fresh_id();
    let bob = fresh_id();
    let p: Vec<Id> = (0..10).map(|_| fresh_id()).collect();

    assert_eq!(
        s.feed(&u, None, 10).await.expect("feed"),
        None,
        "never built"
    );
    s.replace(&u, &[], 5).await.expect("replace");
    assert_eq!(s.feed(&u, None, 10).await.expect("feed"), Some(vec![]));
    s.replace(&v, &[], 5).await.expect("replace");

    // Out of order, with a duplicate: kept in post order, newest first.
    s.push(&[u.clone(), v.clone()], &item(&p[1], &alice), 5)
        .await
        .expect("push");
    s.push(std::slice::from_ref(&u), &item(&p[0], &bob), 5)
        .await
        .expect("push");
    s.push(std::slice::from_ref(&u), &item(&p[2], &alice), 5)
        .await
        .expect("push");
    s.push(std::slice::from_ref(&u), &item(&p[1], &alice), 5)
        .await
        .expect("push duplicate");
    assert_eq!(
        s.feed(&u, None, 10).await.expect("feed"),
        Some(vec![
            item(&p[2], &alice),
            item(&p[1], &alice),
            item(&p[0], &bob)
        ])
    );
    assert_eq!(
        s.feed(&v, None, 10).await.expect("feed"),
        Some(vec![item(&p[1], &alice)]),
        "push reaches every user given"
    );

    // Bounded to cap: the oldest fall off.
    for post in &p[3..7] {
        s.push(std::slice::from_ref(&u), &item(post, &bob), 5)
            .await
            .expect("push");
    }
    let newest5 = vec![
        item(&p[6], &bob),
        item(&p[5], &bob),
        item(&p[4], &bob),
        item(&p[3], &bob),
        item(&p[2], &alice),
    ];
    assert_eq!(
        s.feed(&u, None, 10).await.expect("feed"),
        Some(newest5.clone())
    );
    // An item older than everything in a full feed falls off at once.
    s.push(std::slice::from_ref(&u), &item(&p[0], &bob), 5)
        .await
        .expect("push");
    assert_eq!(
        s.feed(&u, None, 10).await.expect("feed"),
        Some(newest5.clone())
    );

    // Paging.
    assert_eq!(
        s.feed(&u, None, 2).await.expect("feed"),
        Some(newest5[..2].to_vec())
    );
    assert_eq!(
        s.feed(&u, Some(&p[5]), 2).await.expect("feed"),
        Some(newest5[2..4].to_vec())
    );
    assert_eq!(
        s.feed(&u, Some(&p[3]), 10).await.expect("feed"),
        Some(newest5[4..].to_vec())
    );
    assert_eq!(
        s.feed(&u, Some(&p[2]), 10).await.expect("feed"),
        Some(vec![])
    );

    // push_many: dedupe and cap, same rules.
    s.push_many(
        &u,
        &[
            item(&p[8], &alice),
            item(&p[7], &alice),
            item(&p[8], &alice),
            item(&p[6], &bob),
        ],
        5,
    )
    .await
    .expect("push_many");
    assert_eq!(
        s.feed(&u, None, 10).await.expect("feed"),
        Some(vec![
            item(&p[8], &alice),
            item(&p[7], &alice),
            item(&p[6], &bob),
            item(&p[5], &bob),
            item(&p[4], &bob),
        ])
    );

    // remove_author leaves the others and the feed.
    s.remove_author(&u, &bob).await.expect("remove_author");
    assert_eq!(
        s.feed(&u, None, 10).await.expect("feed"),
        Some(vec![item(&p[8], &alice), item(&p[7], &alice)])
    );
    s.remove_author(&u, &alice).await.expect("remove_author");
    assert_eq!(s.feed(&u, None, 10).await.expect("feed"), Some(vec![]));
    s.remove_author(&w, &alice)
        .await
        .expect("remove_author of no feed");
    assert_eq!(s.feed(&w, None, 10).await.expect("feed"), None);

    // replace drops what was there, keeps the newest `cap`, and marks the feed.
    let items: Vec<FeedItem> = p.iter().map(|post| item(post, &alice)).collect();
    s.replace(&u, &items, 4).await.expect("replace");
    assert_eq!(
        s.feed(&u, None, 10).await.expect("feed"),
        Some(items[6..].iter().rev().cloned().collect())
    );
    s.replace(&v, &[item(&p[0], &bob)], 4)
        .await
        .expect("replace");
    assert_eq!(
        s.feed(&v, None, 10).await.expect("feed"),
        Some(vec![item(&p[0], &bob)])
    );
    s.replace(&v, &[], 4).await.expect("replace");
    assert_eq!(s.feed(&v, None, 10).await.expect("feed"), Some(vec![]));
}

/// Chats: one dialog per pair whoever asks and under 20 concurrent calls, groups with
/// deduplicated sorted members, `chat`, `chats_of` newest first.
pub async fn chats(s: &dyn ChatStore) {
    let a = fresh_id();
    let b = fresh_id();
    let c = fresh_id();

    let d1 = s.find_or_create_dialog(&b, &a).await.expect("dialog");
    assert_eq!(d1.kind, ChatKind::Dialog);
    assert_eq!(d1.members, vec![a.clone(), b.clone()], "sorted");
    assert_eq!(d1.title, "");
    assert_eq!(d1.last_seq, 0);
    assert!(d1.created_at > 0);
    let d2 = s.find_or_create_dialog(&a, &b).await.expect("dialog");
    assert_eq!(d2.id, d1.id, "(a, b) and (b, a) are one dialog");
    assert_eq!(
        s.find_or_create_dialog(&b, &a).await.expect("dialog").id,
        d1.id
    );

    // Twenty at once for a new pair: one chat.
    let x = fresh_id();
    let y = fresh_id();
    let results = join_all((0..20).map(|i| {
        let (p, q) = if i % 2 == 0 { (&x, &y) } else { (&y, &x) };
        s.find_or_create_dialog(p, q)
    }))
    .await;
    let ids: HashSet<Id> = results.into_iter().map(|r| r.expect("dialog").id).collect();
    assert_eq!(ids.len(), 1, "concurrent calls find one dialog: {ids:?}");

    let g = s
        .create_group("Trip", &[c.clone(), a.clone(), c.clone(), b.clone()])
        .await
        .expect("create_group");
    assert_eq!(g.kind, ChatKind::Group);
    assert_eq!(g.title, "Trip");
    let mut sorted = vec![a.clone(), b.clone(), c.clone()];
    sorted.sort();
    assert_eq!(g.members, sorted, "deduplicated, sorted");
    assert_eq!(g.last_seq, 0);
    assert_ne!(g.id, d1.id);

    assert_eq!(s.chat(&g.id).await.expect("chat"), Some(g.clone()));
    assert_eq!(s.chat(&d1.id).await.expect("chat"), Some(d1.clone()));
    assert_eq!(s.chat(&fresh_id()).await.expect("chat"), None);

    let of_a: Vec<Id> = s
        .chats_of(&a, 10)
        .await
        .expect("chats_of")
        .into_iter()
        .map(|ch| ch.id)
        .collect();
    assert_eq!(of_a, vec![g.id.clone(), d1.id.clone()], "newest first");
    let of_a1 = s.chats_of(&a, 1).await.expect("chats_of");
    assert_eq!(of_a1, vec![g.clone()]);
    let of_c: Vec<Id> = s
        .chats_of(&c, 10)
        .await
        .expect("chats_of")
        .into_iter()
        .map(|ch| ch.id)
        .collect();
    assert_eq!(of_c, vec![g.id.clone()]);
    assert!(s
        .chats_of(&fresh_id(), 10)
        .await
        .expect("chats_of")
        .is_empty());
}

/// Messages: seq 1, 2, 3..., `last_seq` kept, 20 concurrent appends get distinct gap-free
/// seqs, chats kept apart, `delete_message` (seq not reused), `messages` with `before` and
/// `limit` in seq order.
pub async fn messages(s: &dyn ChatStore) {
    let a = fresh_id();
    let b = fresh_id();
    let chat = s
        .create_group("Messages", &[a.clone(), b.clone()])
        .await
        .expect("create_group");
    let other = s
        .create_group("Other", std::slice::from_ref(&a))
        .await
        .expect("create_group");

    for i in 1..=3u64 {
        let m = s
            .add_message(&chat.id, &a, &format!("hello <{i}>"))
            .await
            .expect("add_message");
        assert_eq!(m.seq, i);
        assert_eq!(m.chat, chat.id);
        assert_eq!(m.author, a);
        assert_eq!(m.text, format!("hello <{i}>"));
        assert!(m.created_at > 0);
    }
    let o = s
        .add_message(&other.id, &b, "elsewhere")
        .await
        .expect("add_message");
    assert_eq!(o.seq, 1, "each chat counts on its own");
    assert_eq!(
        s.chat(&chat.id)
            .await
            .expect("chat")
            .expect("exists")
            .last_seq,
        3
    );

    let texts: Vec<String> = (0..20).map(|i| format!("burst {i}")).collect();
    let results = join_all(texts.iter().map(|t| s.add_message(&chat.id, &b, t))).await;
    let mut seqs: Vec<u64> = results
        .into_iter()
        .map(|r| r.expect("add_message").seq)
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (4..=23).collect::<Vec<u64>>(), "distinct, no gaps");
    assert_eq!(
        s.chat(&chat.id)
            .await
            .expect("chat")
            .expect("exists")
            .last_seq,
        23
    );

    let all = s.messages(&chat.id, None, 100).await.expect("messages");
    assert_eq!(
        all.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=23).collect::<Vec<u64>>()
    );
    let last5 = s.messages(&chat.id, None, 5).await.expect("messages");
    assert_eq!(
        last5.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![19, 20, 21, 22, 23],
        "the last `limit`, in seq order"
    );
    let before = s.messages(&chat.id, Some(19), 5).await.expect("messages");
    assert_eq!(
        before.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![14, 15, 16, 17, 18]
    );
    let first = s.messages(&chat.id, Some(3), 5).await.expect("messages");
    assert_eq!(first.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(first[0].text, "hello <1>");
    assert!(s
        .messages(&chat.id, Some(1), 5)
        .await
        .expect("messages")
        .is_empty());

    assert!(s.delete_message(&chat.id, 2).await.expect("delete_message"));
    assert!(!s.delete_message(&chat.id, 2).await.expect("delete_message"));
    assert!(!s
        .delete_message(&chat.id, 99)
        .await
        .expect("delete_message"));
    let first = s.messages(&chat.id, Some(4), 5).await.expect("messages");
    assert_eq!(first.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1, 3]);
    let m = s
        .add_message(&chat.id, &a, "after delete")
        .await
        .expect("add_message");
    assert_eq!(m.seq, 24, "a deleted seq is not reused");
    assert_eq!(
        s.messages(&other.id, None, 10).await.expect("messages"),
        vec![o]
    );
    assert!(s
        .messages(&fresh_id(), None, 10)
        .await
        .expect("messages")
        .is_empty());
}

/// Counters: `incr` returns the new value (negative steps too), `get` lists the non-zero
/// fields of one group only, `reset` removes a field, unknown groups are empty.
pub async fn counters(s: &dyn CounterStore) {
    let tag = fresh_tag();
    let g = format!("unread:{tag}");
    let h = format!("unread:{tag}x");

    assert!(s.get(&g).await.expect("get").is_empty());
    assert_eq!(s.incr(&g, "c1", 1).await.expect("incr"), 1);
    assert_eq!(s.incr(&g, "c1", 2).await.expect("incr"), 3);
    assert_eq!(s.incr(&g, "c2", 5).await.expect("incr"), 5);
    assert_eq!(s.incr(&g, "c3", -2).await.expect("incr"), -2);
    assert_eq!(s.incr(&h, "c1", 7).await.expect("incr"), 7);
    let mut got = s.get(&g).await.expect("get");
    got.sort();
    assert_eq!(
        got,
        vec![("c1".into(), 3), ("c2".into(), 5), ("c3".into(), -2)]
    );

    assert_eq!(s.incr(&g, "c2", -5).await.expect("incr"), 0);
    let mut got = s.get(&g).await.expect("get");
    got.sort();
    assert_eq!(
        got,
        vec![("c1".into(), 3), ("c3".into(), -2)],
        "zero fields are left out"
    );

    s.reset(&g, "c1").await.expect("reset");
    s.reset(&g, "nothing")
        .await
        .expect("reset of an absent field");
    assert_eq!(s.get(&g).await.expect("get"), vec![("c3".into(), -2)]);
    assert_eq!(s.incr(&g, "c1", 1).await.expect("incr"), 1, "reset means 0");
    assert_eq!(s.get(&h).await.expect("get"), vec![("c1".into(), 7)]);

    let results = join_all((0..20).map(|_| s.incr(&g, "burst", 1))).await;
    let mut values: Vec<i64> = results.into_iter().map(|r| r.expect("incr")).collect();
    values.sort_unstable();
    assert_eq!(
        values,
        (1..=20).collect::<Vec<i64>>(),
        "increments are atomic"
    );
}

/// Runs every part of the contract against one store that implements all six traits.
pub async fn run_all<S>(s: &S)
where
    S: UserStore + FriendStore + PostStore + FeedStore + ChatStore + CounterStore,
{
    users(s).await;
    search(s).await;
    friends(s).await;
    posts(s).await;
    feeds(s).await;
    chats(s).await;
    messages(s).await;
    counters(s).await;
}
