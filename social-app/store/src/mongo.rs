//! The MongoDB backend (official `mongodb` crate, v3): every store trait over one database.
//!
//! [`MongoStore::connect`] creates the indexes it needs ([`MongoStore::ensure_indexes`]) before
//! it returns, so a fresh database is ready at once and every query below runs through an
//! index. No call needs a transaction (nor a replica set): each is one atomic single-document
//! write, or a short sequence of them that is safe to repeat.
//!
//! | collection | document | indexes |
//! |---|---|---|
//! | `users` | `{_id: ObjectId, email, password_hash, profile, created_at, search: [first, last]}` (`search`: the names lower-case) | `email` unique; `{search: 1, _id: 1}` (multikey) |
//! | `friendships` | `{user, friend}`, one per direction | `{user: 1, friend: 1}` unique |
//! | `friend_counts` | `{user, count}` | `user` unique |
//! | `requests` | `{_id, from, to, created_at}` | `{from: 1, to: 1}` unique; `{to: 1, _id: 1}`; `{from: 1, _id: 1}` |
//! | `posts` | `{_id: ObjectId, author, text, created_at}` | `{author: 1, _id: -1}` |
//! | `feeds` | `{user, items: [{post, author}]}`, newest first, at most `cap` items | `user` unique |
//! | `chats` | `{_id: ObjectId, key, kind, title, members, created_at, last_seq}` | `key` unique; `{members: 1, _id: -1}` (multikey) |
//! | `messages` | `{_id, chat, seq, author, text, created_at}` | `{chat: 1, seq: 1}` unique |
//! | `counters` | `{counter, field, value}` | `{counter: 1, field: 1}` unique |
//!
//! Ids of users, posts and chats are ObjectId hex strings, so they sort in creation order (within
//! one process; ObjectIds made in the same second by different processes interleave).
//!
//! **Atomicity without transactions.**
//! - *Unique email, one dialog per pair*: an upsert on the unique key (`email`; the chat's `key`,
//!   `d:<len a>:<a><b>` for a dialog of the sorted pair) with `$setOnInsert` of a fresh
//!   ObjectId `_id`, returning the document after: whoever gets back their own `_id` created
//!   it, everyone else gets the same existing document (for an email: a
//!   [`StoreError::Conflict`]). Among concurrent upserts on real MongoDB one inserts and the
//!   unique index refuses the others' inserts; the server retries those as updates itself
//!   (recent versions) and this store runs an upsert again when a duplicate-key error still
//!   surfaces, so all callers end on one document. Correctness never rests on that error
//!   alone: a server that does not enforce unique indexes (the CongoDB test server) runs each
//!   command atomically, so its upserts also end on one document. Chat ids stay creation-ordered
//!   ObjectIds (no id derived from a hash of the pair).
//! - *Message `seq`*: `findOneAndUpdate` `$inc` of the chat's `last_seq` (returning the new
//!   value), then the insert of the message with it; a `seq` is never handed out twice, and
//!   one lost between the two steps (a crash) is a gap, never a duplicate.
//! - *Friendships*: each direction is an upsert; the count of a side changes only when its
//!   upsert inserted (or its delete deleted), so concurrent or repeated calls count once.
//! - *Counters*: `$inc` with upsert on a document per (counter, field), returning the value
//!   after.
//! - *Feeds*: one document per user, created by `replace` only; a push into a feed that was
//!   never built is skipped, as a cache does (the reader gets `None` and rebuilds it). A push is
//!   one `update` with `$push` `$each`/`$sort`/`$slice` (ordered by post id, cut to `cap`),
//!   filtered on the post not being there yet, over every listed feed at once.
//!
//! **Sharding.** Messages are the collection that grows without bound; shard it by chat so a
//! chat's history lives on one shard and `messages(chat, before)` is one targeted range read:
//! shard key `{chat: 1, seq: 1}`, which is also the unique index (a unique index must be
//! prefixed by the shard key). `{chat: "hashed"}` spreads new chats more evenly (chat ids grow
//! monotonically) but then `seq` uniqueness rests on the single `findOneAndUpdate` alone.
//! `feeds` (by `user`) and `counters` (by `counter`) shard the same way if they need to.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{self, doc, oid::ObjectId, Bson, Document};
use mongodb::error::{Error as MongoError, ErrorKind, WriteFailure};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::results::UpdateResult;
use mongodb::{Client, Collection, Database, IndexModel};

use crate::{
    now_ms, Chat, ChatKind, ChatStore, CounterStore, FeedItem, FeedStore, FriendStore, Id, Message,
    NewUser, Page, Post, PostStore, Profile, Relation, Result, StoreError, User, UserStore,
};

/// MongoDB error code of a duplicate key.
const DUPLICATE_KEY: i32 = 11000;

/// How many times an upsert that lost a race on a unique index is run again.
const UPSERT_TRIES: u32 = 3;

/// Every store trait over one MongoDB database. Cheap to clone (the client is shared).
#[derive(Clone, Debug)]
pub struct MongoStore {
    db: Database,
}

impl MongoStore {
    /// Connects to `uri` (a `mongodb://` connection string), uses `database`, and creates the
    /// indexes ([`MongoStore::ensure_indexes`]); fails with [`StoreError::Unavailable`] when
    /// the server cannot be reached (after the driver's server selection timeout, 30 s unless
    /// the URI sets `serverSelectionTimeoutMS`).
    pub async fn connect(uri: &str, database: &str) -> Result<Self> {
        let client = Client::with_uri_str(uri).await.map_err(driver)?;
        let store = MongoStore {
            db: client.database(database),
        };
        store.ensure_indexes().await?;
        Ok(store)
    }

    /// The database this store uses.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Creates every index the stores query through (idempotent: an index that exists with the
    /// same definition is left alone).
    pub async fn ensure_indexes(&self) -> Result<()> {
        let unique = |keys: Document, name: &str| {
            IndexModel::builder()
                .keys(keys)
                .options(
                    IndexOptions::builder()
                        .name(name.to_owned())
                        .unique(true)
                        .build(),
                )
                .build()
        };
        let plain = |keys: Document, name: &str| {
            IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().name(name.to_owned()).build())
                .build()
        };
        let all: [(&str, Vec<IndexModel>); 9] = [
            (
                USERS,
                vec![
                    unique(doc! { "email": 1 }, "email_unique"),
                    plain(doc! { "search": 1, "_id": 1 }, "search_id"),
                ],
            ),
            (
                FRIENDSHIPS,
                vec![unique(
                    doc! { "user": 1, "friend": 1 },
                    "user_friend_unique",
                )],
            ),
            (
                FRIEND_COUNTS,
                vec![unique(doc! { "user": 1 }, "user_unique")],
            ),
            (
                REQUESTS,
                vec![
                    unique(doc! { "from": 1, "to": 1 }, "from_to_unique"),
                    plain(doc! { "to": 1, "_id": 1 }, "to_id"),
                    plain(doc! { "from": 1, "_id": 1 }, "from_id"),
                ],
            ),
            (
                POSTS,
                vec![plain(doc! { "author": 1, "_id": -1 }, "author_id")],
            ),
            (FEEDS, vec![unique(doc! { "user": 1 }, "user_unique")]),
            (
                CHATS,
                vec![
                    unique(doc! { "key": 1 }, "key_unique"),
                    plain(doc! { "members": 1, "_id": -1 }, "members_id"),
                ],
            ),
            (
                MESSAGES,
                vec![unique(doc! { "chat": 1, "seq": 1 }, "chat_seq_unique")],
            ),
            (
                COUNTERS,
                vec![unique(
                    doc! { "counter": 1, "field": 1 },
                    "counter_field_unique",
                )],
            ),
        ];
        for (name, indexes) in all {
            self.coll(name)
                .create_indexes(indexes)
                .await
                .map_err(driver)?;
        }
        Ok(())
    }

    fn coll(&self, name: &str) -> Collection<Document> {
        self.db.collection(name)
    }

    /// `update_one` with upsert. An upsert that loses an insert race on a unique index fails
    /// with a duplicate key on servers that do not retry it themselves; run again, it matches
    /// the document the winner inserted.
    async fn upsert_one(
        &self,
        coll: &str,
        filter: Document,
        update: Document,
    ) -> Result<UpdateResult> {
        let mut tries = 0;
        loop {
            let result = self
                .coll(coll)
                .update_one(filter.clone(), update.clone())
                .upsert(true)
                .await;
            match result {
                Err(e) if is_duplicate_key(&e) && tries < UPSERT_TRIES => tries += 1,
                other => return other.map_err(driver),
            }
        }
    }

    /// `findOneAndUpdate` with upsert, returning the document after; retried like
    /// [`MongoStore::upsert_one`]. The error is the driver's, for the caller to map.
    async fn upsert_and_get(
        &self,
        coll: &str,
        filter: Document,
        update: Document,
    ) -> std::result::Result<Document, MongoError> {
        let mut tries = 0;
        loop {
            let result = self
                .coll(coll)
                .find_one_and_update(filter.clone(), update.clone())
                .upsert(true)
                .return_document(ReturnDocument::After)
                .await;
            match result {
                Err(e) if is_duplicate_key(&e) && tries < UPSERT_TRIES => tries += 1,
                Err(e) => return Err(e),
                Ok(Some(d)) => return Ok(d),
                Ok(None) => {
                    return Err(MongoError::custom(
                        "an upsert returning the document after returned none",
                    ))
                }
            }
        }
    }
}

const USERS: &str = "users";
const FRIENDSHIPS: &str = "friendships";
const FRIEND_COUNTS: &str = "friend_counts";
const REQUESTS: &str = "requests";
const POSTS: &str = "posts";
const FEEDS: &str = "feeds";
const CHATS: &str = "chats";
const MESSAGES: &str = "messages";
const COUNTERS: &str = "counters";

// ---- errors and decoding ----

/// A driver error: the server could not be reached or refused the command.
fn driver(e: MongoError) -> StoreError {
    match *e.kind {
        ErrorKind::BsonDeserialization(_) => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Unavailable(e.to_string()),
    }
}

fn is_duplicate_key(e: &MongoError) -> bool {
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        _ => false,
    }
}

fn corrupt(what: &str, field: &str) -> StoreError {
    StoreError::Corrupt(format!(
        "{what}: field `{field}` missing or of the wrong type"
    ))
}

fn get_str(d: &Document, what: &str, field: &str) -> Result<String> {
    d.get_str(field)
        .map(str::to_owned)
        .map_err(|_| corrupt(what, field))
}

/// An integer field. Accepts every BSON number type that holds an integer: a server may store
/// an `Int64` back as `Int32` or `Double` (the JavaScript test server does).
fn get_i64(d: &Document, what: &str, field: &str) -> Result<i64> {
    match d.get(field) {
        Some(Bson::Int64(v)) => Ok(*v),
        Some(Bson::Int32(v)) => Ok(i64::from(*v)),
        Some(Bson::Double(v))
            if v.fract() == 0.0
                && *v >= -9_007_199_254_740_992.0
                && *v <= 9_007_199_254_740_992.0 =>
        {
            Ok(*v as i64) // exact: an integral double within ±2^53
        }
        _ => Err(corrupt(what, field)),
    }
}

fn get_u64(d: &Document, what: &str, field: &str) -> Result<u64> {
    u64::try_from(get_i64(d, what, field)?).map_err(|_| corrupt(what, field))
}

fn get_oid_hex(d: &Document, what: &str) -> Result<String> {
    d.get_object_id("_id")
        .map(|o| o.to_hex())
        .map_err(|_| corrupt(what, "_id"))
}

/// `id` as an ObjectId; `None` when it is not one (so no such record exists).
fn oid(id: &str) -> Option<ObjectId> {
    ObjectId::parse_str(id).ok()
}

/// A `usize` limit as the driver's `i64` (0 is handled by the callers: it means "no limit" to
/// MongoDB).
fn limit_i64(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn seq_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

async fn collect(cursor: mongodb::Cursor<Document>) -> Result<Vec<Document>> {
    cursor.try_collect().await.map_err(driver)
}

// ---- users ----

fn search_keys(profile: &Profile) -> Vec<String> {
    let mut keys = vec![
        profile.first_name.to_lowercase(),
        profile.last_name.to_lowercase(),
    ];
    keys.retain(|k| !k.is_empty());
    keys.dedup();
    keys
}

fn profile_bson(profile: &Profile) -> Result<Bson> {
    bson::to_bson(profile).map_err(|e| StoreError::Corrupt(format!("profile: {e}")))
}

fn decode_user(d: &Document) -> Result<User> {
    let profile = d
        .get_document("profile")
        .map_err(|_| corrupt("user", "profile"))?;
    let profile: Profile = bson::from_document(profile.clone())
        .map_err(|e| StoreError::Corrupt(format!("user profile: {e}")))?;
    Ok(User {
        id: get_oid_hex(d, "user")?,
        email: get_str(d, "user", "email")?,
        password_hash: get_str(d, "user", "password_hash")?,
        profile,
        created_at: get_i64(d, "user", "created_at")?,
    })
}

/// A regular expression matching strings that start with `prefix` literally: ASCII punctuation
/// is escaped (valid in both PCRE and JavaScript regexes), everything else is itself.
fn prefix_regex(prefix: &str) -> bson::Regex {
    let mut pattern = String::with_capacity(prefix.len() + 8);
    pattern.push('^');
    for c in prefix.chars() {
        if c.is_ascii_punctuation() {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    bson::Regex {
        pattern,
        options: String::new(),
    }
}

#[async_trait]
impl UserStore for MongoStore {
    async fn create_user(&self, user: NewUser) -> Result<User> {
        let id = ObjectId::new();
        let created_at = now_ms();
        // Upsert on the email: creates the user unless the email is taken, in one atomic
        // command (see the module doc); `_id` tells who created it.
        let update = doc! { "$setOnInsert": {
            "_id": id,
            "password_hash": &user.password_hash,
            "profile": profile_bson(&user.profile)?,
            "created_at": created_at,
            "search": search_keys(&user.profile),
        } };
        let doc = match self
            .upsert_and_get(USERS, doc! { "email": &user.email }, update)
            .await
        {
            Ok(doc) => doc,
            Err(e) if is_duplicate_key(&e) => {
                return Err(StoreError::Conflict("email already registered".into()))
            }
            Err(e) => return Err(driver(e)),
        };
        if doc.get_object_id("_id").ok() != Some(id) {
            return Err(StoreError::Conflict("email already registered".into()));
        }
        decode_user(&doc)
    }

    async fn user(&self, id: &str) -> Result<Option<User>> {
        let Some(id) = oid(id) else { return Ok(None) };
        let found = self
            .coll(USERS)
            .find_one(doc! { "_id": id })
            .await
            .map_err(driver)?;
        found.as_ref().map(decode_user).transpose()
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        let found = self
            .coll(USERS)
            .find_one(doc! { "email": email })
            .await
            .map_err(driver)?;
        found.as_ref().map(decode_user).transpose()
    }

    async fn users(&self, ids: &[Id]) -> Result<Vec<User>> {
        let oids: Vec<ObjectId> = ids.iter().filter_map(|id| oid(id)).collect();
        if oids.is_empty() {
            return Ok(Vec::new());
        }
        let cursor = self
            .coll(USERS)
            .find(doc! { "_id": { "$in": oids } })
            .await
            .map_err(driver)?;
        let mut by_id = HashMap::new();
        for d in collect(cursor).await? {
            let user = decode_user(&d)?;
            by_id.insert(user.id.clone(), user);
        }
        Ok(ids.iter().filter_map(|id| by_id.get(id).cloned()).collect())
    }

    async fn update_profile(&self, id: &str, profile: Profile) -> Result<Option<User>> {
        let Some(id) = oid(id) else { return Ok(None) };
        let update = doc! { "$set": {
            "profile": profile_bson(&profile)?,
            "search": search_keys(&profile),
        } };
        let found = self
            .coll(USERS)
            .find_one_and_update(doc! { "_id": id }, update)
            .return_document(ReturnDocument::After)
            .await
            .map_err(driver)?;
        found.as_ref().map(decode_user).transpose()
    }

    async fn search(&self, prefix: &str, cursor: Option<&str>, limit: usize) -> Result<Page<User>> {
        let empty = Page {
            items: Vec::new(),
            next: None,
        };
        if limit == 0 {
            return Ok(empty);
        }
        // An anchored, case-sensitive regex on the multikey `search` array: matches when one
        // of the lower-case names starts with `prefix`, and runs as a range of the index.
        let mut filter = doc! { "search": { "$regex": prefix_regex(prefix) } };
        if let Some(cursor) = cursor {
            let Some(after) = oid(cursor) else {
                return Ok(empty);
            };
            filter.insert("_id", doc! { "$gt": after });
        }
        let cursor = self
            .coll(USERS)
            .find(filter)
            .sort(doc! { "_id": 1 })
            .limit(limit_i64(limit.saturating_add(1)))
            .await
            .map_err(driver)?;
        let mut items = collect(cursor)
            .await?
            .iter()
            .map(decode_user)
            .collect::<Result<Vec<_>>>()?;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|u| u.id.clone())
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn count_users(&self) -> Result<u64> {
        self.coll(USERS)
            .count_documents(doc! {})
            .await
            .map_err(driver)
    }
}

// ---- friends ----

impl MongoStore {
    /// Adds `by` to `user`'s friend count.
    async fn add_friend_count(&self, user: &str, by: i64) -> Result<()> {
        self.upsert_one(
            FRIEND_COUNTS,
            doc! { "user": user },
            doc! { "$inc": { "count": by } },
        )
        .await?;
        Ok(())
    }

    async fn ids_of_requests(
        &self,
        filter: Document,
        field: &str,
        limit: usize,
    ) -> Result<Vec<Id>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let cursor = self
            .coll(REQUESTS)
            .find(filter)
            .sort(doc! { "_id": 1 })
            .limit(limit_i64(limit))
            .await
            .map_err(driver)?;
        collect(cursor)
            .await?
            .iter()
            .map(|d| get_str(d, "friend request", field))
            .collect()
    }
}

#[async_trait]
impl FriendStore for MongoStore {
    async fn add_request(&self, from: &str, to: &str) -> Result<()> {
        // The first request keeps its `_id` (its place in the order) and time.
        self.upsert_one(
            REQUESTS,
            doc! { "from": from, "to": to },
            doc! { "$setOnInsert": { "_id": ObjectId::new(), "created_at": now_ms() } },
        )
        .await?;
        Ok(())
    }

    async fn remove_request(&self, from: &str, to: &str) -> Result<bool> {
        let deleted = self
            .coll(REQUESTS)
            .delete_one(doc! { "from": from, "to": to })
            .await
            .map_err(driver)?;
        Ok(deleted.deleted_count > 0)
    }

    async fn add_friendship(&self, a: &str, b: &str) -> Result<()> {
        for (user, friend) in [(a, b), (b, a)] {
            let result = self
                .upsert_one(
                    FRIENDSHIPS,
                    doc! { "user": user, "friend": friend },
                    doc! { "$setOnInsert": { "created_at": now_ms() } },
                )
                .await?;
            if result.upserted_id.is_some() {
                self.add_friend_count(user, 1).await?;
            }
        }
        self.coll(REQUESTS)
            .delete_many(doc! { "$or": [
                { "from": a, "to": b },
                { "from": b, "to": a },
            ] })
            .await
            .map_err(driver)?;
        Ok(())
    }

    async fn remove_friendship(&self, a: &str, b: &str) -> Result<bool> {
        let mut removed = false;
        for (user, friend) in [(a, b), (b, a)] {
            let deleted = self
                .coll(FRIENDSHIPS)
                .delete_one(doc! { "user": user, "friend": friend })
                .await
                .map_err(driver)?;
            if deleted.deleted_count > 0 {
                removed = true;
                self.add_friend_count(user, -1).await?;
            }
            if a == b {
                break;
            }
        }
        Ok(removed)
    }

    async fn relation(&self, a: &str, b: &str) -> Result<Relation> {
        let friends = self
            .coll(FRIENDSHIPS)
            .find_one(doc! { "user": a, "friend": b })
            .projection(doc! { "_id": 1 })
            .await
            .map_err(driver)?;
        if friends.is_some() {
            return Ok(Relation::Friends);
        }
        let requests = self
            .coll(REQUESTS)
            .find(doc! { "$or": [
                { "from": a, "to": b },
                { "from": b, "to": a },
            ] })
            .await
            .map_err(driver)?;
        let requests = collect(requests).await?;
        let sent = requests
            .iter()
            .any(|d| d.get_str("from").ok() == Some(a) && d.get_str("to").ok() == Some(b));
        let received = requests
            .iter()
            .any(|d| d.get_str("from").ok() == Some(b) && d.get_str("to").ok() == Some(a));
        Ok(if sent {
            Relation::RequestSent
        } else if received {
            Relation::RequestReceived
        } else {
            Relation::None
        })
    }

    async fn friends(&self, user: &str, cursor: Option<&str>, limit: usize) -> Result<Page<Id>> {
        if limit == 0 {
            return Ok(Page {
                items: Vec::new(),
                next: None,
            });
        }
        let mut filter = doc! { "user": user };
        if let Some(after) = cursor {
            filter.insert("friend", doc! { "$gt": after });
        }
        let found = self
            .coll(FRIENDSHIPS)
            .find(filter)
            .sort(doc! { "friend": 1 })
            .limit(limit_i64(limit.saturating_add(1)))
            .await
            .map_err(driver)?;
        let mut items = collect(found)
            .await?
            .iter()
            .map(|d| get_str(d, "friendship", "friend"))
            .collect::<Result<Vec<_>>>()?;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().cloned()
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn friend_count(&self, user: &str) -> Result<u64> {
        let found = self
            .coll(FRIEND_COUNTS)
            .find_one(doc! { "user": user })
            .await
            .map_err(driver)?;
        match found {
            None => Ok(0),
            Some(d) => Ok(u64::try_from(get_i64(&d, "friend count", "count")?).unwrap_or(0)),
        }
    }

    async fn incoming_requests(&self, user: &str, limit: usize) -> Result<Vec<Id>> {
        self.ids_of_requests(doc! { "to": user }, "from", limit)
            .await
    }

    async fn outgoing_requests(&self, user: &str, limit: usize) -> Result<Vec<Id>> {
        self.ids_of_requests(doc! { "from": user }, "to", limit)
            .await
    }
}

// ---- posts ----

fn decode_post(d: &Document) -> Result<Post> {
    Ok(Post {
        id: get_oid_hex(d, "post")?,
        author: get_str(d, "post", "author")?,
        text: get_str(d, "post", "text")?,
        created_at: get_i64(d, "post", "created_at")?,
    })
}

#[async_trait]
impl PostStore for MongoStore {
    async fn create_post(&self, author: &str, text: &str) -> Result<Post> {
        let post = Post {
            id: String::new(),
            author: author.to_owned(),
            text: text.to_owned(),
            created_at: now_ms(),
        };
        let id = ObjectId::new();
        self.coll(POSTS)
            .insert_one(doc! {
                "_id": id,
                "author": &post.author,
                "text": &post.text,
                "created_at": post.created_at,
            })
            .await
            .map_err(driver)?;
        Ok(Post {
            id: id.to_hex(),
            ..post
        })
    }

    async fn posts(&self, ids: &[Id]) -> Result<Vec<Post>> {
        let oids: Vec<ObjectId> = ids.iter().filter_map(|id| oid(id)).collect();
        if oids.is_empty() {
            return Ok(Vec::new());
        }
        let cursor = self
            .coll(POSTS)
            .find(doc! { "_id": { "$in": oids } })
            .await
            .map_err(driver)?;
        let mut by_id = HashMap::new();
        for d in collect(cursor).await? {
            let post = decode_post(&d)?;
            by_id.insert(post.id.clone(), post);
        }
        Ok(ids.iter().filter_map(|id| by_id.get(id).cloned()).collect())
    }

    async fn posts_by(
        &self,
        author: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Post>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut filter = doc! { "author": author };
        if let Some(before) = before {
            // Not an ObjectId: no post of this store, so none is older than it.
            let Some(before) = oid(before) else {
                return Ok(Vec::new());
            };
            filter.insert("_id", doc! { "$lt": before });
        }
        let cursor = self
            .coll(POSTS)
            .find(filter)
            .sort(doc! { "_id": -1 })
            .limit(limit_i64(limit))
            .await
            .map_err(driver)?;
        collect(cursor).await?.iter().map(decode_post).collect()
    }

    async fn count_posts_by(&self, author: &str) -> Result<u64> {
        self.coll(POSTS)
            .count_documents(doc! { "author": author })
            .await
            .map_err(driver)
    }
}

// ---- feeds ----

fn item_doc(item: &FeedItem) -> Document {
    doc! { "post": &item.post, "author": &item.author }
}

/// `items` newest first (by post id, descending), each post once, at most `cap`.
fn normalize(items: impl IntoIterator<Item = FeedItem>, cap: usize) -> Vec<FeedItem> {
    let mut items: Vec<FeedItem> = items.into_iter().collect();
    items.sort_by(|x, y| y.post.cmp(&x.post));
    let mut seen = HashSet::new();
    items.retain(|i| seen.insert(i.post.clone()));
    items.truncate(cap);
    items
}

/// `$slice` takes an `Int32`; a cap beyond it cannot matter.
fn cap_i32(cap: usize) -> i32 {
    i32::try_from(cap).unwrap_or(i32::MAX)
}

#[async_trait]
impl FeedStore for MongoStore {
    async fn push(&self, users: &[Id], item: &FeedItem, cap: usize) -> Result<()> {
        if users.is_empty() {
            return Ok(());
        }
        // One update for every feed that lacks the post: insert, re-sort, cut to `cap`.
        self.coll(FEEDS)
            .update_many(
                doc! { "user": { "$in": users }, "items.post": { "$ne": &item.post } },
                doc! { "$push": { "items": {
                    "$each": [item_doc(item)],
                    "$sort": { "post": -1 },
                    "$slice": cap_i32(cap),
                } } },
            )
            .await
            .map_err(driver)?;
        Ok(())
    }

    async fn push_many(&self, user: &str, items: &[FeedItem], cap: usize) -> Result<()> {
        let items = normalize(items.iter().cloned(), usize::MAX);
        if !items.is_empty() {
            // `$addToSet` skips the items already there; a second update restores the order
            // and the cap (a reader between the two sorts and cuts for itself).
            let docs: Vec<Document> = items.iter().map(item_doc).collect();
            self.coll(FEEDS)
                .update_one(
                    doc! { "user": user },
                    doc! { "$addToSet": { "items": { "$each": docs } } },
                )
                .await
                .map_err(driver)?;
        }
        self.coll(FEEDS)
            .update_one(
                doc! { "user": user },
                doc! { "$push": { "items": {
                    "$each": [],
                    "$sort": { "post": -1 },
                    "$slice": cap_i32(cap),
                } } },
            )
            .await
            .map_err(driver)?;
        Ok(())
    }

    async fn remove_author(&self, user: &str, author: &str) -> Result<()> {
        self.coll(FEEDS)
            .update_one(
                doc! { "user": user },
                doc! { "$pull": { "items": { "author": author } } },
            )
            .await
            .map_err(driver)?;
        Ok(())
    }

    async fn feed(
        &self,
        user: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<FeedItem>>> {
        let Some(d) = self
            .coll(FEEDS)
            .find_one(doc! { "user": user })
            .await
            .map_err(driver)?
        else {
            return Ok(None);
        };
        let raw = d.get_array("items").map_err(|_| corrupt("feed", "items"))?;
        let mut items = Vec::with_capacity(raw.len());
        for entry in raw {
            let entry = entry
                .as_document()
                .ok_or_else(|| corrupt("feed", "items"))?;
            items.push(FeedItem {
                post: get_str(entry, "feed item", "post")?,
                author: get_str(entry, "feed item", "author")?,
            });
        }
        let items = normalize(items, usize::MAX)
            .into_iter()
            .filter(|i| before.is_none_or(|b| i.post.as_str() < b))
            .take(limit)
            .collect();
        Ok(Some(items))
    }

    async fn replace(&self, user: &str, items: &[FeedItem], cap: usize) -> Result<()> {
        let items: Vec<Document> = normalize(items.iter().cloned(), cap)
            .iter()
            .map(item_doc)
            .collect();
        self.upsert_one(
            FEEDS,
            doc! { "user": user },
            doc! { "$set": { "items": items } },
        )
        .await?;
        Ok(())
    }
}

// ---- chats ----

fn decode_chat(d: &Document) -> Result<Chat> {
    let kind = match d.get_str("kind") {
        Ok("dialog") => ChatKind::Dialog,
        Ok("group") => ChatKind::Group,
        _ => return Err(corrupt("chat", "kind")),
    };
    let members = d
        .get_array("members")
        .map_err(|_| corrupt("chat", "members"))?
        .iter()
        .map(|m| {
            m.as_str()
                .map(str::to_owned)
                .ok_or_else(|| corrupt("chat", "members"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Chat {
        id: get_oid_hex(d, "chat")?,
        kind,
        title: get_str(d, "chat", "title")?,
        members,
        created_at: get_i64(d, "chat", "created_at")?,
        last_seq: get_u64(d, "chat", "last_seq")?,
    })
}

fn decode_message(d: &Document) -> Result<Message> {
    Ok(Message {
        chat: get_str(d, "message", "chat")?,
        seq: get_u64(d, "message", "seq")?,
        author: get_str(d, "message", "author")?,
        text: get_str(d, "message", "text")?,
        created_at: get_i64(d, "message", "created_at")?,
    })
}

/// The unique key of the dialog of the sorted pair `lo` ≤ `hi` (length-prefixed, so no two
/// pairs share it).
fn dialog_key(lo: &str, hi: &str) -> String {
    format!("d:{}:{lo}{hi}", lo.len())
}

#[async_trait]
impl ChatStore for MongoStore {
    async fn find_or_create_dialog(&self, a: &str, b: &str) -> Result<Chat> {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let mut members = vec![lo.to_owned(), hi.to_owned()];
        members.dedup();
        let d = self
            .upsert_and_get(
                CHATS,
                doc! { "key": dialog_key(lo, hi) },
                doc! { "$setOnInsert": {
                    "_id": ObjectId::new(),
                    "kind": "dialog",
                    "title": "",
                    "members": members,
                    "created_at": now_ms(),
                    "last_seq": 0_i64,
                } },
            )
            .await
            .map_err(driver)?;
        decode_chat(&d)
    }

    async fn create_group(&self, title: &str, members: &[Id]) -> Result<Chat> {
        let mut members = members.to_vec();
        members.sort();
        members.dedup();
        let id = ObjectId::new();
        let chat = Chat {
            id: id.to_hex(),
            kind: ChatKind::Group,
            title: title.to_owned(),
            members,
            created_at: now_ms(),
            last_seq: 0,
        };
        self.coll(CHATS)
            .insert_one(doc! {
                "_id": id,
                "key": format!("g:{}", chat.id),
                "kind": "group",
                "title": &chat.title,
                "members": &chat.members,
                "created_at": chat.created_at,
                "last_seq": 0_i64,
            })
            .await
            .map_err(driver)?;
        Ok(chat)
    }

    async fn chat(&self, id: &str) -> Result<Option<Chat>> {
        let Some(id) = oid(id) else { return Ok(None) };
        let found = self
            .coll(CHATS)
            .find_one(doc! { "_id": id })
            .await
            .map_err(driver)?;
        found.as_ref().map(decode_chat).transpose()
    }

    async fn chats_of(&self, user: &str, limit: usize) -> Result<Vec<Chat>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let cursor = self
            .coll(CHATS)
            .find(doc! { "members": user })
            .sort(doc! { "_id": -1 })
            .limit(limit_i64(limit))
            .await
            .map_err(driver)?;
        collect(cursor).await?.iter().map(decode_chat).collect()
    }

    async fn add_message(&self, chat: &str, author: &str, text: &str) -> Result<Message> {
        let no_chat = || StoreError::Conflict(format!("no chat {chat}"));
        let chat_id = oid(chat).ok_or_else(no_chat)?;
        let updated = self
            .coll(CHATS)
            .find_one_and_update(
                doc! { "_id": chat_id },
                doc! { "$inc": { "last_seq": 1_i64 } },
            )
            .projection(doc! { "last_seq": 1 })
            .return_document(ReturnDocument::After)
            .await
            .map_err(driver)?
            .ok_or_else(no_chat)?;
        let message = Message {
            chat: chat.to_owned(),
            seq: get_u64(&updated, "chat", "last_seq")?,
            author: author.to_owned(),
            text: text.to_owned(),
            created_at: now_ms(),
        };
        self.coll(MESSAGES)
            .insert_one(doc! {
                "_id": ObjectId::new(),
                "chat": &message.chat,
                "seq": seq_i64(message.seq),
                "author": &message.author,
                "text": &message.text,
                "created_at": message.created_at,
            })
            .await
            .map_err(driver)?;
        Ok(message)
    }

    async fn delete_message(&self, chat: &str, seq: u64) -> Result<bool> {
        let deleted = self
            .coll(MESSAGES)
            .delete_one(doc! { "chat": chat, "seq": seq_i64(seq) })
            .await
            .map_err(driver)?;
        Ok(deleted.deleted_count > 0)
    }

    async fn messages(
        &self,
        chat: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Message>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut filter = doc! { "chat": chat };
        if let Some(before) = before {
            filter.insert("seq", doc! { "$lt": seq_i64(before) });
        }
        let cursor = self
            .coll(MESSAGES)
            .find(filter)
            .sort(doc! { "seq": -1 })
            .limit(limit_i64(limit))
            .await
            .map_err(driver)?;
        let mut messages = collect(cursor)
            .await?
            .iter()
            .map(decode_message)
            .collect::<Result<Vec<_>>>()?;
        messages.reverse();
        Ok(messages)
    }
}

// ---- counters ----

#[async_trait]
impl CounterStore for MongoStore {
    async fn incr(&self, counter: &str, field: &str, by: i64) -> Result<i64> {
        let updated = self
            .upsert_and_get(
                COUNTERS,
                doc! { "counter": counter, "field": field },
                doc! { "$inc": { "value": by } },
            )
            .await
            .map_err(driver)?;
        get_i64(&updated, "counter", "value")
    }

    async fn get(&self, counter: &str) -> Result<Vec<(String, i64)>> {
        let cursor = self
            .coll(COUNTERS)
            .find(doc! { "counter": counter, "value": { "$ne": 0 } })
            .sort(doc! { "field": 1 })
            .await
            .map_err(driver)?;
        collect(cursor)
            .await?
            .iter()
            .map(|d| {
                Ok((
                    get_str(d, "counter", "field")?,
                    get_i64(d, "counter", "value")?,
                ))
            })
            .filter(|r| !matches!(r, Ok((_, 0))))
            .collect()
    }

    async fn reset(&self, counter: &str, field: &str) -> Result<()> {
        self.coll(COUNTERS)
            .delete_one(doc! { "counter": counter, "field": field })
            .await
            .map_err(driver)?;
        Ok(())
    }
}
