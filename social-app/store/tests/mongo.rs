//! The MongoDB backend against CongoDB, a MongoDB-wire-compatible in-memory server written in
//! JavaScript (real MongoDB is not installable everywhere). `scripts/congodb.sh` installs it
//! (`scripts/test.sh` does); each test starts its own server on a free port with
//! `scripts/congodb-server.mjs`, stops it when done, and uses a fresh database.
//!
//! Nothing is skipped: without node or CongoDB the tests fail and say what to run.

use mongodb::bson::{doc, oid::ObjectId};
use social_store::contract;
use social_store::mongo::MongoStore;
use social_store::{
    ChatStore, CounterStore, FeedItem, FeedStore, NewUser, PostStore, Profile, StoreError,
    UserStore,
};

mod congo;
use congo::{free_port, Congo};

/// A store on a database no other test uses.
async fn store(congo: &Congo) -> (MongoStore, String) {
    let db = format!("social_{}", contract::fresh_tag());
    let store = MongoStore::connect(&congo.uri(), &db)
        .await
        .unwrap_or_else(|e| panic!("connect to CongoDB at {}: {e}", congo.uri()));
    (store, db)
}

/// One test per part of the shared contract, each on its own server and database.
macro_rules! contract_tests {
    ($($part:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $part() {
            let congo = Congo::start();
            let (store, _) = store(&congo).await;
            contract::$part(&store).await;
        }
    )*};
}

contract_tests!(users, search, friends, posts, feeds, chats, messages, counters);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_on_one_database() {
    let congo = Congo::start();
    let (store, _) = store(&congo).await;
    contract::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_exist_after_connect() {
    let congo = Congo::start();
    let (store, _) = store(&congo).await;
    // Idempotent: creating them again changes nothing.
    store.ensure_indexes().await.expect("ensure_indexes again");
    let expected: &[(&str, &[&str])] = &[
        ("users", &["email_unique", "search_id"]),
        ("friendships", &["user_friend_unique"]),
        ("friend_counts", &["user_unique"]),
        ("requests", &["from_to_unique", "to_id", "from_id"]),
        ("posts", &["author_id"]),
        ("feeds", &["user_unique"]),
        ("chats", &["key_unique", "members_id"]),
        ("messages", &["chat_seq_unique"]),
        ("counters", &["counter_field_unique"]),
    ];
    for (collection, names) in expected {
        let mut got = store
            .database()
            .collection::<mongodb::bson::Document>(collection)
            .list_index_names()
            .await
            .unwrap_or_else(|e| panic!("list_indexes {collection}: {e}"));
        got.sort();
        for name in *names {
            assert!(
                got.iter().any(|g| g == name),
                "{collection} lacks index {name}: {got:?}"
            );
        }
        // Not `_id_` plus duplicates made by the second ensure_indexes.
        assert_eq!(got.len(), names.len() + 1, "{collection}: {got:?}");
    }
    let users = store
        .database()
        .collection::<mongodb::bson::Document>("users");
    let mut specs = users.list_indexes().await.expect("list_indexes");
    let mut email_unique = false;
    while specs.advance().await.expect("next index") {
        let model = specs.deserialize_current().expect("index model");
        if model.keys == doc! { "email": 1 } {
            email_unique = model.options.and_then(|o| o.unique) == Some(true);
        }
    }
    assert!(email_unique, "users.email is a unique index");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_store_sees_the_first_ones_data() {
    let congo = Congo::start();
    let (first, db) = store(&congo).await;
    let second = MongoStore::connect(&congo.uri(), &db)
        .await
        .expect("connect the second store");

    let email = format!("{}@example.com", contract::fresh_tag());
    let user = first
        .create_user(NewUser {
            email: email.clone(),
            password_hash: "hash".into(),
            profile: Profile {
                first_name: "Grace".into(),
                last_name: "Hopper".into(),
                ..Profile::default()
            },
        })
        .await
        .expect("create_user");
    assert_eq!(
        second.user_by_email(&email).await.expect("user_by_email"),
        Some(user.clone())
    );
    assert!(matches!(
        second
            .create_user(NewUser {
                email: email.clone(),
                password_hash: "other".into(),
                profile: Profile::default(),
            })
            .await,
        Err(StoreError::Conflict(_))
    ));
    let post = first
        .create_post(&user.id, "hello")
        .await
        .expect("create_post");
    assert_eq!(
        second.posts_by(&user.id, None, 10).await.expect("posts_by"),
        vec![post.clone()]
    );
    first.incr("unread:x", "c", 2).await.expect("incr");
    assert_eq!(second.incr("unread:x", "c", 1).await.expect("incr"), 3);
    let chat = first
        .find_or_create_dialog(&user.id, "someone")
        .await
        .expect("dialog");
    assert_eq!(
        second
            .find_or_create_dialog("someone", &user.id)
            .await
            .expect("dialog")
            .id,
        chat.id
    );
    second
        .add_message(&chat.id, &user.id, "hi")
        .await
        .expect("add_message");
    assert_eq!(
        first
            .messages(&chat.id, None, 10)
            .await
            .expect("messages")
            .len(),
        1
    );
    first
        .replace(
            &user.id,
            &[FeedItem {
                post: post.id.clone(),
                author: user.id.clone(),
            }],
            10,
        )
        .await
        .expect("replace");
    assert_eq!(
        second
            .feed(&user.id, None, 10)
            .await
            .expect("feed")
            .map(|f| f.len()),
        Some(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_does_not_decode_is_corrupt() {
    let congo = Congo::start();
    let (store, _) = store(&congo).await;
    let id = ObjectId::new();
    store
        .database()
        .collection::<mongodb::bson::Document>("users")
        .insert_one(doc! { "_id": id, "email": "broken@example.com", "profile": "not a document" })
        .await
        .expect("insert");
    match store.user(&id.to_hex()).await {
        Err(StoreError::Corrupt(_)) => {}
        other => panic!("a user that does not decode must be Corrupt: {other:?}"),
    }
    store
        .database()
        .collection::<mongodb::bson::Document>("chats")
        .insert_one(doc! { "_id": ObjectId::new(), "members": ["u"], "kind": "dialog" })
        .await
        .expect("insert");
    match store.chats_of("u", 10).await {
        Err(StoreError::Corrupt(_)) => {}
        other => panic!("a chat that does not decode must be Corrupt: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_unavailable() {
    let uri = format!(
        "mongodb://127.0.0.1:{}/?directConnection=true&serverSelectionTimeoutMS=500",
        free_port()
    );
    match MongoStore::connect(&uri, "social_nowhere").await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!(
            "connecting to nothing must be Unavailable: {:?}",
            other.map(|_| ())
        ),
    }
}
