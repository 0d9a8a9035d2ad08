//! The contract suite against [`EmbeddedStore`] (redb) in a temporary directory, and a reopen
//! that must see everything.

use std::path::PathBuf;

use social_store::embedded::EmbeddedStore;
use social_store::{
    contract, ChatStore, CounterStore, FeedItem, FeedStore, FriendStore, NewUser, PostStore,
    Profile, Relation, UserStore,
};

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "social-store-{name}-{}-{}",
            std::process::id(),
            contract::fresh_tag()
        ));
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open(dir: &TempDir) -> EmbeddedStore {
    EmbeddedStore::open(&dir.0.join("nested").join("social.redb")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users() {
    let dir = TempDir::new("users");
    contract::users(&open(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search() {
    let dir = TempDir::new("search");
    contract::search(&open(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn friends() {
    let dir = TempDir::new("friends");
    contract::friends(&open(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts() {
    let dir = TempDir::new("posts");
    contract::posts(&open(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds() {
    let dir = TempDir::new("feeds");
    contract::feeds(&open(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chats() {
    let dir = TempDir::new("chats");
    contract::chats(&open(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages() {
    let dir = TempDir::new("messages");
    contract::messages(&open(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters() {
    let dir = TempDir::new("counters");
    contract::counters(&open(&dir)).await;
}

/// The whole suite twice on one store: everything it makes is its own, so a store that already
/// holds data passes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_twice_on_one_store() {
    let dir = TempDir::new("all");
    let store = open(&dir);
    contract::run_all(&store).await;
    contract::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopen_sees_everything() {
    let dir = TempDir::new("reopen");
    let s = open(&dir);
    let ann = s
        .create_user(NewUser {
            email: "ann@example.com".into(),
            password_hash: "hash".into(),
            profile: Profile {
                first_name: "Ann".into(),
                last_name: "Lee".into(),
                ..Profile::default()
            },
        })
        .await
        .unwrap();
    let bob = s
        .create_user(NewUser {
            email: "bob@example.com".into(),
            password_hash: "hash".into(),
            profile: Profile::default(),
        })
        .await
        .unwrap();
    s.add_friendship(&ann.id, &bob.id).await.unwrap();
    s.add_request(&bob.id, "someone").await.unwrap();
    let post = s.create_post(&ann.id, "hello").await.unwrap();
    let item = FeedItem {
        post: post.id.clone(),
        author: ann.id.clone(),
    };
    s.replace(&bob.id, &[], 10).await.unwrap();
    s.push(std::slice::from_ref(&bob.id), &item, 10)
        .await
        .unwrap();
    let dialog = s.find_or_create_dialog(&ann.id, &bob.id).await.unwrap();
    let m1 = s.add_message(&dialog.id, &ann.id, "hi").await.unwrap();
    s.incr("unread:bob", &dialog.id, 1).await.unwrap();
    drop(s);

    let s = open(&dir);
    assert_eq!(s.user(&ann.id).await.unwrap(), Some(ann.clone()));
    assert_eq!(
        s.user_by_email("bob@example.com").await.unwrap(),
        Some(bob.clone())
    );
    assert_eq!(
        s.search("le", None, 10).await.unwrap().items,
        vec![ann.clone()]
    );
    assert_eq!(s.count_users().await.unwrap(), 2);
    assert_eq!(
        s.relation(&bob.id, &ann.id).await.unwrap(),
        Relation::Friends
    );
    assert_eq!(s.friend_count(&ann.id).await.unwrap(), 1);
    assert_eq!(
        s.outgoing_requests(&bob.id, 10).await.unwrap(),
        vec!["someone".to_string()]
    );
    assert_eq!(
        s.posts_by(&ann.id, None, 10).await.unwrap(),
        vec![post.clone()]
    );
    assert_eq!(s.count_posts_by(&ann.id).await.unwrap(), 1);
    assert_eq!(s.feed(&bob.id, None, 10).await.unwrap(), Some(vec![item]));
    assert_eq!(s.feed(&ann.id, None, 10).await.unwrap(), None);
    assert_eq!(
        s.find_or_create_dialog(&bob.id, &ann.id).await.unwrap().id,
        dialog.id
    );
    assert_eq!(s.messages(&dialog.id, None, 10).await.unwrap(), vec![m1]);
    assert_eq!(
        s.get("unread:bob").await.unwrap(),
        vec![(dialog.id.clone(), 1)]
    );

    // Sequences go on where they were: no id or seq is given twice.
    let m2 = s.add_message(&dialog.id, &bob.id, "hey").await.unwrap();
    assert_eq!(m2.seq, 2);
    let post2 = s.create_post(&ann.id, "again").await.unwrap();
    assert!(post2.id > post.id);
    let cy = s
        .create_user(NewUser {
            email: "cy@example.com".into(),
            password_hash: "hash".into(),
            profile: Profile::default(),
        })
        .await
        .unwrap();
    assert!(cy.id > bob.id);
    assert!(s.chat(&dialog.id).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_sixteen_hex_digits() {
    let dir = TempDir::new("ids");
    let s = open(&dir);
    let p = s.create_post("a", "x").await.unwrap();
    assert_eq!(p.id, "0000000000000001");
    let g = s
        .create_group("g", &["b".into(), "a".into()])
        .await
        .unwrap();
    assert_eq!(g.id, "0000000000000001");
}
