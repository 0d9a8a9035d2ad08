//! The embedded backend: one [redb](https://docs.rs/redb) database file, durable, nothing to
//! install.
//!
//! [`EmbeddedStore`] implements every store trait. redb is blocking, so each call runs one
//! transaction on Tokio's blocking pool; writes are serialized by redb (one write transaction at
//! a time), which is what makes "check, then insert" atomic here: a duplicate email, a dialog
//! found or created, a message's `seq`.
//!
//! Layout (composite keys join their parts with `\0`; ids never contain it):
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | sequence name | last number given |
//! | `users` | user id | `User` JSON |
//! | `user_emails` | email | user id |
//! | `user_names` | lower-case first or last name `\0` user id | — |
//! | `friends` | user `\0` friend (both directions) | — |
//! | `friend_counts` | user | friends |
//! | `requests` | from `\0` to | request number |
//! | `requests_out` / `requests_in` | from (to) `\0` request number | to (from) |
//! | `posts` | post id | `Post` JSON |
//! | `posts_by` | author `\0` post id | — |
//! | `post_counts` | author | posts |
//! | `feeds` | user `\0` post id | author |
//! | `feed_lens` | user (the feed exists) | items |
//! | `chats` | chat id | `Chat` JSON (with `last_seq`) |
//! | `chat_members` | user `\0` chat id | — |
//! | `dialogs` | lower id `\0` higher id | chat id |
//! | `messages` | chat `\0` seq (16 hex digits) | `Message` JSON |
//! | `counters` | counter `\0` field | value |
//!
//! Ids are 16-hex-digit sequence numbers per kind, so they sort in creation order as strings.
//! A push into a feed that was never built (no `replace` yet) is skipped, as a cache does: the
//! reader gets `None` and rebuilds the whole feed.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table,
    TableDefinition, WriteTransaction,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{
    now_ms, Chat, ChatKind, ChatStore, CounterStore, FeedItem, FeedStore, FriendStore, Id, Message,
    NewUser, Page, Post, PostStore, Profile, Relation, Result, StoreError, User, UserStore,
};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
const USER_EMAILS: TableDefinition<&str, &str> = TableDefinition::new("user_emails");
const USER_NAMES: TableDefinition<&str, ()> = TableDefinition::new("user_names");
const FRIENDS: TableDefinition<&str, ()> = TableDefinition::new("friends");
const FRIEND_COUNTS: TableDefinition<&str, u64> = TableDefinition::new("friend_counts");
const REQUESTS: TableDefinition<&str, u64> = TableDefinition::new("requests");
const REQUESTS_OUT: TableDefinition<&str, &str> = TableDefinition::new("requests_out");
const REQUESTS_IN: TableDefinition<&str, &str> = TableDefinition::new("requests_in");
const POSTS: TableDefinition<&str, &[u8]> = TableDefinition::new("posts");
const POSTS_BY: TableDefinition<&str, ()> = TableDefinition::new("posts_by");
const POST_COUNTS: TableDefinition<&str, u64> = TableDefinition::new("post_counts");
const FEEDS: TableDefinition<&str, &str> = TableDefinition::new("feeds");
const FEED_LENS: TableDefinition<&str, u64> = TableDefinition::new("feed_lens");
const CHATS: TableDefinition<&str, &[u8]> = TableDefinition::new("chats");
const CHAT_MEMBERS: TableDefinition<&str, ()> = TableDefinition::new("chat_members");
const DIALOGS: TableDefinition<&str, &str> = TableDefinition::new("dialogs");
const MESSAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("messages");
const COUNTERS: TableDefinition<&str, i64> = TableDefinition::new("counters");

/// Every store trait over one redb database file.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    /// Bulk loading: commits skip the fsync until [`EmbeddedStore::sync`].
    bulk: bool,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn storage(e: redb::StorageError) -> StoreError {
    match e {
        redb::StorageError::Corrupted(m) => StoreError::Corrupt(m),
        other => unavailable(other),
    }
}

impl From<redb::StorageError> for StoreError {
    fn from(e: redb::StorageError) -> Self {
        storage(e)
    }
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::Corrupted(m) => StoreError::Corrupt(m),
            other => unavailable(other),
        }
    }
}

impl From<redb::DatabaseError> for StoreError {
    fn from(e: redb::DatabaseError) -> Self {
        match e {
            redb::DatabaseError::Storage(s) => storage(s),
            other => unavailable(other),
        }
    }
}

impl From<redb::TransactionError> for StoreError {
    fn from(e: redb::TransactionError) -> Self {
        match e {
            redb::TransactionError::Storage(s) => storage(s),
            other => unavailable(other),
        }
    }
}

impl From<redb::TableError> for StoreError {
    fn from(e: redb::TableError) -> Self {
        match e {
            redb::TableError::Storage(s) => storage(s),
            other => unavailable(other),
        }
    }
}

impl From<redb::CommitError> for StoreError {
    fn from(e: redb::CommitError) -> Self {
        match e {
            redb::CommitError::Storage(s) => storage(s),
            other => unavailable(other),
        }
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| StoreError::Corrupt(format!("cannot encode: {e}")))
}

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// `a\0b`.
fn key2(a: &str, b: &str) -> String {
    format!("{a}\0{b}")
}

/// The second part of `a\0b`.
fn second(key: &str) -> Result<&str> {
    key.rsplit_once('\0')
        .map(|(_, b)| b)
        .ok_or_else(|| StoreError::Corrupt(format!("index key without separator: {key:?}")))
}

/// The bounds of every `a\0...` key.
fn under(a: &str) -> (String, String) {
    (format!("{a}\0"), format!("{a}\u{1}"))
}

/// 16 hex digits, so numbers sort as strings.
fn hex(n: u64) -> String {
    format!("{n:016x}")
}

/// The next number of sequence `name`.
fn next_seq(tx: &WriteTransaction, name: &str) -> Result<u64> {
    let mut meta = tx.open_table(META)?;
    let n = meta.get(name)?.map(|g| g.value()).unwrap_or(0) + 1;
    meta.insert(name, n)?;
    Ok(n)
}

/// Adds `by` to a `u64` count (never below 0, removed at 0); the new value.
fn bump(table: &mut Table<&str, u64>, key: &str, by: i64) -> Result<u64> {
    let old = table.get(key)?.map(|g| g.value()).unwrap_or(0);
    let new = if by >= 0 {
        old.saturating_add(by.unsigned_abs())
    } else {
        old.saturating_sub(by.unsigned_abs())
    };
    if new == 0 {
        table.remove(key)?;
    } else {
        table.insert(key, new)?;
    }
    Ok(new)
}

/// The index keys of a profile's names: lower-case, without `\0`, non-empty, distinct.
fn name_keys(profile: &Profile, id: &str) -> Vec<String> {
    let mut keys = Vec::with_capacity(2);
    for name in [&profile.first_name, &profile.last_name] {
        let name = name.to_lowercase().replace('\0', "");
        if name.is_empty() {
            continue;
        }
        let key = key2(&name, id);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

fn get_json<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    what: &str,
    id: &str,
) -> Result<Option<T>> {
    match table.get(id)? {
        Some(g) => decode(what, g.value()).map(Some),
        None => Ok(None),
    }
}

/// Keys of `table` in `[start, end)`, at most `limit`, in order or reversed.
fn keys_in<V: redb::Value + 'static>(
    table: &impl ReadableTable<&'static str, V>,
    start: Bound<&str>,
    end: Bound<&str>,
    rev: bool,
    limit: usize,
) -> Result<Vec<String>> {
    let range = table.range::<&str>((start, end))?;
    let mut out = Vec::new();
    let mut push = |r: std::result::Result<(redb::AccessGuard<'_, &'static str>, _), _>| {
        let (k, _) = r?;
        out.push(k.value().to_string());
        Ok::<_, StoreError>(())
    };
    if rev {
        for r in range.rev().take(limit) {
            push(r)?;
        }
    } else {
        for r in range.take(limit) {
            push(r)?;
        }
    }
    Ok(out)
}

/// Entries (key, value) of a `&str → &str` table in `[start, end)`, at most `limit`.
fn str_entries_in(
    table: &impl ReadableTable<&'static str, &'static str>,
    start: Bound<&str>,
    end: Bound<&str>,
    rev: bool,
    limit: usize,
) -> Result<Vec<(String, String)>> {
    let range = table.range::<&str>((start, end))?;
    let mut out = Vec::new();
    let it: Box<dyn Iterator<Item = _>> = if rev {
        Box::new(range.rev())
    } else {
        Box::new(range)
    };
    for r in it.take(limit) {
        let (k, v) = r?;
        out.push((k.value().to_string(), v.value().to_string()));
    }
    Ok(out)
}

impl EmbeddedStore {
    /// Opens (or creates) the database file at `path`, creating its parent directories and
    /// every table.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| unavailable(format!("cannot create {}: {e}", dir.display())))?;
        }
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        {
            tx.open_table(META)?;
            tx.open_table(USERS)?;
            tx.open_table(USER_EMAILS)?;
            tx.open_table(USER_NAMES)?;
            tx.open_table(FRIENDS)?;
            tx.open_table(FRIEND_COUNTS)?;
            tx.open_table(REQUESTS)?;
            tx.open_table(REQUESTS_OUT)?;
            tx.open_table(REQUESTS_IN)?;
            tx.open_table(POSTS)?;
            tx.open_table(POSTS_BY)?;
            tx.open_table(POST_COUNTS)?;
            tx.open_table(FEEDS)?;
            tx.open_table(FEED_LENS)?;
            tx.open_table(CHATS)?;
            tx.open_table(CHAT_MEMBERS)?;
            tx.open_table(DIALOGS)?;
            tx.open_table(MESSAGES)?;
            tx.open_table(COUNTERS)?;
        }
        tx.commit()?;
        Ok(EmbeddedStore {
            db: Arc::new(db),
            bulk: false,
        })
    }

    /// Opens the file for a bulk load (the `seed` command): commits are not flushed to disk
    /// one by one, which makes many small writes fast; [`sync`](Self::sync) makes everything
    /// durable at the end. A crash before that loses the load (never earlier data).
    pub fn open_bulk(path: &Path) -> Result<Self> {
        let mut s = Self::open(path)?;
        s.bulk = true;
        Ok(s)
    }

    /// Makes every earlier commit durable (one flushed commit).
    pub fn sync(&self) -> Result<()> {
        let tx = self.db.begin_write()?;
        tx.commit()?;
        Ok(())
    }

    /// Runs `f` in a read transaction on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let tx = db.begin_read()?;
            f(&tx)
        })
        .await
        .map_err(unavailable)?
    }

    /// Runs `f` in a write transaction on the blocking pool; commits when it succeeds, aborts
    /// when it fails.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T> + Send + 'static,
    {
        let db = self.db.clone();
        let bulk = self.bulk;
        tokio::task::spawn_blocking(move || {
            let mut tx = db.begin_write()?;
            if bulk {
                tx.set_durability(redb::Durability::None)
                    .map_err(|e| unavailable(format!("bulk load: {e}")))?;
            }
            match f(&tx) {
                Ok(v) => {
                    tx.commit()?;
                    Ok(v)
                }
                Err(e) => {
                    let _ = tx.abort();
                    Err(e)
                }
            }
        })
        .await
        .map_err(unavailable)?
    }
}

// ---------------------------------------------------------------------------------------------
// Users

#[async_trait]
impl UserStore for EmbeddedStore {
    async fn create_user(&self, user: NewUser) -> Result<User> {
        self.write(move |tx| {
            let mut emails = tx.open_table(USER_EMAILS)?;
            if emails.get(user.email.as_str())?.is_some() {
                return Err(StoreError::Conflict("email already registered".into()));
            }
            let id = hex(next_seq(tx, "users")?);
            let user = User {
                id,
                email: user.email,
                password_hash: user.password_hash,
                profile: user.profile,
                created_at: now_ms(),
            };
            emails.insert(user.email.as_str(), user.id.as_str())?;
            tx.open_table(USERS)?
                .insert(user.id.as_str(), encode(&user)?.as_slice())?;
            let mut names = tx.open_table(USER_NAMES)?;
            for k in name_keys(&user.profile, &user.id) {
                names.insert(k.as_str(), ())?;
            }
            Ok(user)
        })
        .await
    }

    async fn user(&self, id: &str) -> Result<Option<User>> {
        let id = id.to_string();
        self.read(move |tx| get_json(&tx.open_table(USERS)?, "user", &id))
            .await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        let email = email.to_string();
        self.read(move |tx| {
            let id = match tx.open_table(USER_EMAILS)?.get(email.as_str())? {
                Some(g) => g.value().to_string(),
                None => return Ok(None),
            };
            get_json(&tx.open_table(USERS)?, "user", &id)
        })
        .await
    }

    async fn users(&self, ids: &[Id]) -> Result<Vec<User>> {
        let ids = ids.to_vec();
        self.read(move |tx| {
            let users = tx.open_table(USERS)?;
            let mut out = Vec::with_capacity(ids.len());
            for id in &ids {
                if let Some(u) = get_json(&users, "user", id)? {
                    out.push(u);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn update_profile(&self, id: &str, profile: Profile) -> Result<Option<User>> {
        let id = id.to_string();
        self.write(move |tx| {
            let mut users = tx.open_table(USERS)?;
            let Some(mut user) = get_json::<User>(&users, "user", &id)? else {
                return Ok(None);
            };
            let mut names = tx.open_table(USER_NAMES)?;
            for k in name_keys(&user.profile, &user.id) {
                names.remove(k.as_str())?;
            }
            user.profile = profile;
            for k in name_keys(&user.profile, &user.id) {
                names.insert(k.as_str(), ())?;
            }
            users.insert(user.id.as_str(), encode(&user)?.as_slice())?;
            Ok(Some(user))
        })
        .await
    }

    async fn search(&self, prefix: &str, cursor: Option<&str>, limit: usize) -> Result<Page<User>> {
        let prefix = prefix.to_lowercase();
        let cursor = cursor.map(str::to_string);
        if limit == 0 || prefix.is_empty() || prefix.contains('\0') {
            return Ok(Page {
                items: Vec::new(),
                next: None,
            });
        }
        self.read(move |tx| {
            let names = tx.open_table(USER_NAMES)?;
            let users = tx.open_table(USERS)?;
            let start = match &cursor {
                Some(c) => Bound::Excluded(c.as_str()),
                None => Bound::Included(prefix.as_str()),
            };
            let mut items: Vec<User> = Vec::new();
            let mut last_key = String::new();
            let mut next = None;
            for r in names.range::<&str>((start, Bound::Unbounded))? {
                let (k, _) = r?;
                let key = k.value();
                // Keys starting with the prefix are contiguous: past them, nothing matches.
                if !key.starts_with(prefix.as_str()) {
                    break;
                }
                let id = second(key)?;
                let Some(user) = get_json::<User>(&users, "user", id)? else {
                    continue;
                };
                // A user whose both names match is listed under the smaller matching key only.
                let first_match = name_keys(&user.profile, &user.id)
                    .into_iter()
                    .filter(|k| k.starts_with(prefix.as_str()))
                    .min();
                if first_match.as_deref() != Some(key) {
                    continue;
                }
                if items.len() == limit {
                    next = Some(last_key);
                    break;
                }
                items.push(user);
                last_key = key.to_string();
            }
            Ok(Page { items, next })
        })
        .await
    }

    async fn count_users(&self) -> Result<u64> {
        self.read(|tx| Ok(tx.open_table(USERS)?.len()?)).await
    }
}

// ---------------------------------------------------------------------------------------------
// Friends

/// Removes the request `from` → `to` and its indexes; whether there was one.
fn drop_request(tx: &WriteTransaction, from: &str, to: &str) -> Result<bool> {
    let Some(n) = tx
        .open_table(REQUESTS)?
        .remove(key2(from, to).as_str())?
        .map(|g| g.value())
    else {
        return Ok(false);
    };
    tx.open_table(REQUESTS_OUT)?
        .remove(key2(from, &hex(n)).as_str())?;
    tx.open_table(REQUESTS_IN)?
        .remove(key2(to, &hex(n)).as_str())?;
    Ok(true)
}

/// The other ends of `user`'s requests in `table`, oldest first.
fn request_list(
    tx: &ReadTransaction,
    table: TableDefinition<&str, &str>,
    user: &str,
    limit: usize,
) -> Result<Vec<Id>> {
    let (s, e) = under(user);
    let t = tx.open_table(table)?;
    Ok(
        str_entries_in(&t, Bound::Included(&s), Bound::Excluded(&e), false, limit)?
            .into_iter()
            .map(|(_, v)| v)
            .collect(),
    )
}

#[async_trait]
impl FriendStore for EmbeddedStore {
    async fn add_request(&self, from: &str, to: &str) -> Result<()> {
        let (from, to) = (from.to_string(), to.to_string());
        self.write(move |tx| {
            let mut requests = tx.open_table(REQUESTS)?;
            let key = key2(&from, &to);
            if requests.get(key.as_str())?.is_some() {
                return Ok(());
            }
            let n = next_seq(tx, "requests")?;
            requests.insert(key.as_str(), n)?;
            tx.open_table(REQUESTS_OUT)?
                .insert(key2(&from, &hex(n)).as_str(), to.as_str())?;
            tx.open_table(REQUESTS_IN)?
                .insert(key2(&to, &hex(n)).as_str(), from.as_str())?;
            Ok(())
        })
        .await
    }

    async fn remove_request(&self, from: &str, to: &str) -> Result<bool> {
        let (from, to) = (from.to_string(), to.to_string());
        self.write(move |tx| drop_request(tx, &from, &to)).await
    }

    async fn add_friendship(&self, a: &str, b: &str) -> Result<()> {
        let (a, b) = (a.to_string(), b.to_string());
        self.write(move |tx| {
            drop_request(tx, &a, &b)?;
            drop_request(tx, &b, &a)?;
            let mut friends = tx.open_table(FRIENDS)?;
            if friends.get(key2(&a, &b).as_str())?.is_some() {
                return Ok(());
            }
            friends.insert(key2(&a, &b).as_str(), ())?;
            friends.insert(key2(&b, &a).as_str(), ())?;
            let mut counts = tx.open_table(FRIEND_COUNTS)?;
            bump(&mut counts, &a, 1)?;
            if a != b {
                bump(&mut counts, &b, 1)?;
            }
            Ok(())
        })
        .await
    }

    async fn remove_friendship(&self, a: &str, b: &str) -> Result<bool> {
        let (a, b) = (a.to_string(), b.to_string());
        self.write(move |tx| {
            let mut friends = tx.open_table(FRIENDS)?;
            if friends.remove(key2(&a, &b).as_str())?.is_none() {
                return Ok(false);
            }
            friends.remove(key2(&b, &a).as_str())?;
            let mut counts = tx.open_table(FRIEND_COUNTS)?;
            bump(&mut counts, &a, -1)?;
            if a != b {
                bump(&mut counts, &b, -1)?;
            }
            Ok(true)
        })
        .await
    }

    async fn relation(&self, a: &str, b: &str) -> Result<Relation> {
        let (a, b) = (a.to_string(), b.to_string());
        self.read(move |tx| {
            if tx
                .open_table(FRIENDS)?
                .get(key2(&a, &b).as_str())?
                .is_some()
            {
                return Ok(Relation::Friends);
            }
            let requests = tx.open_table(REQUESTS)?;
            if requests.get(key2(&a, &b).as_str())?.is_some() {
                Ok(Relation::RequestSent)
            } else if requests.get(key2(&b, &a).as_str())?.is_some() {
                Ok(Relation::RequestReceived)
            } else {
                Ok(Relation::None)
            }
        })
        .await
    }

    async fn friends(&self, user: &str, cursor: Option<&str>, limit: usize) -> Result<Page<Id>> {
        let user = user.to_string();
        let cursor = cursor.map(str::to_string);
        if limit == 0 {
            return Ok(Page {
                items: Vec::new(),
                next: None,
            });
        }
        self.read(move |tx| {
            let friends = tx.open_table(FRIENDS)?;
            let (s, e) = under(&user);
            let after = cursor.as_deref().map(|c| key2(&user, c));
            let start = match &after {
                Some(k) => Bound::Excluded(k.as_str()),
                None => Bound::Included(s.as_str()),
            };
            let keys = keys_in(&friends, start, Bound::Excluded(&e), false, limit + 1)?;
            let more = keys.len() > limit;
            let items = keys
                .iter()
                .take(limit)
                .map(|k| second(k).map(str::to_string))
                .collect::<Result<Vec<_>>>()?;
            let next = if more { items.last().cloned() } else { None };
            Ok(Page { items, next })
        })
        .await
    }

    async fn friend_count(&self, user: &str) -> Result<u64> {
        let user = user.to_string();
        self.read(move |tx| {
            Ok(tx
                .open_table(FRIEND_COUNTS)?
                .get(user.as_str())?
                .map(|g| g.value())
                .unwrap_or(0))
        })
        .await
    }

    async fn incoming_requests(&self, user: &str, limit: usize) -> Result<Vec<Id>> {
        let user = user.to_string();
        self.read(move |tx| request_list(tx, REQUESTS_IN, &user, limit))
            .await
    }

    async fn outgoing_requests(&self, user: &str, limit: usize) -> Result<Vec<Id>> {
        let user = user.to_string();
        self.read(move |tx| request_list(tx, REQUESTS_OUT, &user, limit))
            .await
    }
}

// ---------------------------------------------------------------------------------------------
// Posts

#[async_trait]
impl PostStore for EmbeddedStore {
    async fn create_post(&self, author: &str, text: &str) -> Result<Post> {
        let (author, text) = (author.to_string(), text.to_string());
        self.write(move |tx| {
            let post = Post {
                id: hex(next_seq(tx, "posts")?),
                author,
                text,
                created_at: now_ms(),
            };
            tx.open_table(POSTS)?
                .insert(post.id.as_str(), encode(&post)?.as_slice())?;
            tx.open_table(POSTS_BY)?
                .insert(key2(&post.author, &post.id).as_str(), ())?;
            bump(&mut tx.open_table(POST_COUNTS)?, &post.author, 1)?;
            Ok(post)
        })
        .await
    }

    async fn posts(&self, ids: &[Id]) -> Result<Vec<Post>> {
        let ids = ids.to_vec();
        self.read(move |tx| {
            let posts = tx.open_table(POSTS)?;
            let mut out = Vec::with_capacity(ids.len());
            for id in &ids {
                if let Some(p) = get_json(&posts, "post", id)? {
                    out.push(p);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn posts_by(
        &self,
        author: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Post>> {
        let author = author.to_string();
        let before = before.map(str::to_string);
        self.read(move |tx| {
            let (s, e) = under(&author);
            let end = before.as_deref().map(|b| key2(&author, b)).unwrap_or(e);
            let keys = keys_in(
                &tx.open_table(POSTS_BY)?,
                Bound::Included(&s),
                Bound::Excluded(&end),
                true,
                limit,
            )?;
            let posts = tx.open_table(POSTS)?;
            let mut out = Vec::with_capacity(keys.len());
            for k in &keys {
                let id = second(k)?;
                let post = get_json(&posts, "post", id)?.ok_or_else(|| {
                    StoreError::Corrupt(format!("post {id} is indexed but absent"))
                })?;
                out.push(post);
            }
            Ok(out)
        })
        .await
    }

    async fn count_posts_by(&self, author: &str) -> Result<u64> {
        let author = author.to_string();
        self.read(move |tx| {
            Ok(tx
                .open_table(POST_COUNTS)?
                .get(author.as_str())?
                .map(|g| g.value())
                .unwrap_or(0))
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// Feeds

/// Adds `items` to `user`'s feed if it exists, then trims it to `cap`.
fn feed_add(tx: &WriteTransaction, user: &str, items: &[FeedItem], cap: usize) -> Result<()> {
    let mut lens = tx.open_table(FEED_LENS)?;
    let Some(mut len) = lens.get(user)?.map(|g| g.value()) else {
        return Ok(());
    };
    let mut feeds = tx.open_table(FEEDS)?;
    for item in items {
        let key = key2(user, &item.post);
        if feeds.get(key.as_str())?.is_none() {
            feeds.insert(key.as_str(), item.author.as_str())?;
            len += 1;
        }
    }
    let cap = u64::try_from(cap).unwrap_or(u64::MAX);
    if len > cap {
        let (s, e) = under(user);
        let excess = usize::try_from(len - cap).unwrap_or(usize::MAX);
        for k in keys_in(
            &feeds,
            Bound::Included(&s),
            Bound::Excluded(&e),
            false,
            excess,
        )? {
            feeds.remove(k.as_str())?;
            len -= 1;
        }
    }
    lens.insert(user, len)?;
    Ok(())
}

#[async_trait]
impl FeedStore for EmbeddedStore {
    async fn push(&self, users: &[Id], item: &FeedItem, cap: usize) -> Result<()> {
        let users = users.to_vec();
        let item = item.clone();
        self.write(move |tx| {
            for user in &users {
                feed_add(tx, user, std::slice::from_ref(&item), cap)?;
            }
            Ok(())
        })
        .await
    }

    async fn push_many(&self, user: &str, items: &[FeedItem], cap: usize) -> Result<()> {
        let user = user.to_string();
        let items = items.to_vec();
        self.write(move |tx| feed_add(tx, &user, &items, cap)).await
    }

    async fn remove_author(&self, user: &str, author: &str) -> Result<()> {
        let (user, author) = (user.to_string(), author.to_string());
        self.write(move |tx| {
            let mut lens = tx.open_table(FEED_LENS)?;
            let Some(mut len) = lens.get(user.as_str())?.map(|g| g.value()) else {
                return Ok(());
            };
            let mut feeds = tx.open_table(FEEDS)?;
            let (s, e) = under(&user);
            let entries = str_entries_in(
                &feeds,
                Bound::Included(&s),
                Bound::Excluded(&e),
                false,
                usize::MAX,
            )?;
            for (k, a) in entries {
                if a == author {
                    feeds.remove(k.as_str())?;
                    len = len.saturating_sub(1);
                }
            }
            lens.insert(user.as_str(), len)?;
            Ok(())
        })
        .await
    }

    async fn feed(
        &self,
        user: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<FeedItem>>> {
        let user = user.to_string();
        let before = before.map(str::to_string);
        self.read(move |tx| {
            if tx.open_table(FEED_LENS)?.get(user.as_str())?.is_none() {
                return Ok(None);
            }
            let (s, e) = under(&user);
            let end = before.as_deref().map(|b| key2(&user, b)).unwrap_or(e);
            let entries = str_entries_in(
                &tx.open_table(FEEDS)?,
                Bound::Included(&s),
                Bound::Excluded(&end),
                true,
                limit,
            )?;
            let items = entries
                .into_iter()
                .map(|(k, author)| {
                    Ok(FeedItem {
                        post: second(&k)?.to_string(),
                        author,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Some(items))
        })
        .await
    }

    async fn replace(&self, user: &str, items: &[FeedItem], cap: usize) -> Result<()> {
        let user = user.to_string();
        let items = items.to_vec();
        self.write(move |tx| {
            {
                let mut feeds = tx.open_table(FEEDS)?;
                let (s, e) = under(&user);
                for k in keys_in(
                    &feeds,
                    Bound::Included(&s),
                    Bound::Excluded(&e),
                    false,
                    usize::MAX,
                )? {
                    feeds.remove(k.as_str())?;
                }
            }
            tx.open_table(FEED_LENS)?.insert(user.as_str(), 0)?;
            feed_add(tx, &user, &items, cap)
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// Chats

/// Stores a new chat and its member index.
fn insert_chat(
    tx: &WriteTransaction,
    kind: ChatKind,
    title: &str,
    members: Vec<Id>,
) -> Result<Chat> {
    let chat = Chat {
        id: hex(next_seq(tx, "chats")?),
        kind,
        title: title.to_string(),
        members,
        created_at: now_ms(),
        last_seq: 0,
    };
    tx.open_table(CHATS)?
        .insert(chat.id.as_str(), encode(&chat)?.as_slice())?;
    let mut index = tx.open_table(CHAT_MEMBERS)?;
    for m in &chat.members {
        index.insert(key2(m, &chat.id).as_str(), ())?;
    }
    Ok(chat)
}

/// Members deduplicated and sorted.
fn member_set(members: &[Id]) -> Vec<Id> {
    let mut m = members.to_vec();
    m.sort();
    m.dedup();
    m
}

#[async_trait]
impl ChatStore for EmbeddedStore {
    async fn find_or_create_dialog(&self, a: &str, b: &str) -> Result<Chat> {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let key = key2(lo, hi);
        let members = member_set(&[a.to_string(), b.to_string()]);
        self.write(move |tx| {
            let mut dialogs = tx.open_table(DIALOGS)?;
            if let Some(id) = dialogs.get(key.as_str())?.map(|g| g.value().to_string()) {
                return get_json(&tx.open_table(CHATS)?, "chat", &id)?.ok_or_else(|| {
                    StoreError::Corrupt(format!("dialog {id} is indexed but absent"))
                });
            }
            let chat = insert_chat(tx, ChatKind::Dialog, "", members)?;
            dialogs.insert(key.as_str(), chat.id.as_str())?;
            Ok(chat)
        })
        .await
    }

    async fn create_group(&self, title: &str, members: &[Id]) -> Result<Chat> {
        let members = member_set(members);
        let title = title.to_string();
        self.write(move |tx| insert_chat(tx, ChatKind::Group, &title, members))
            .await
    }

    async fn chat(&self, id: &str) -> Result<Option<Chat>> {
        let id = id.to_string();
        self.read(move |tx| get_json(&tx.open_table(CHATS)?, "chat", &id))
            .await
    }

    async fn chats_of(&self, user: &str, limit: usize) -> Result<Vec<Chat>> {
        let user = user.to_string();
        self.read(move |tx| {
            let (s, e) = under(&user);
            let keys = keys_in(
                &tx.open_table(CHAT_MEMBERS)?,
                Bound::Included(&s),
                Bound::Excluded(&e),
                true,
                limit,
            )?;
            let chats = tx.open_table(CHATS)?;
            let mut out = Vec::with_capacity(keys.len());
            for k in &keys {
                let id = second(k)?;
                let chat = get_json(&chats, "chat", id)?.ok_or_else(|| {
                    StoreError::Corrupt(format!("chat {id} is indexed but absent"))
                })?;
                out.push(chat);
            }
            Ok(out)
        })
        .await
    }

    async fn add_message(&self, chat: &str, author: &str, text: &str) -> Result<Message> {
        let (chat, author, text) = (chat.to_string(), author.to_string(), text.to_string());
        self.write(move |tx| {
            let mut chats = tx.open_table(CHATS)?;
            let Some(mut record) = get_json::<Chat>(&chats, "chat", &chat)? else {
                return Err(StoreError::Conflict(format!("no such chat: {chat}")));
            };
            record.last_seq += 1;
            chats.insert(record.id.as_str(), encode(&record)?.as_slice())?;
            let message = Message {
                chat,
                seq: record.last_seq,
                author,
                text,
                created_at: now_ms(),
            };
            tx.open_table(MESSAGES)?.insert(
                key2(&message.chat, &hex(message.seq)).as_str(),
                encode(&message)?.as_slice(),
            )?;
            Ok(message)
        })
        .await
    }

    async fn delete_message(&self, chat: &str, seq: u64) -> Result<bool> {
        let key = key2(chat, &hex(seq));
        self.write(move |tx| Ok(tx.open_table(MESSAGES)?.remove(key.as_str())?.is_some()))
            .await
    }

    async fn messages(
        &self,
        chat: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Message>> {
        let chat = chat.to_string();
        self.read(move |tx| {
            let (s, e) = under(&chat);
            let end = before.map(|b| key2(&chat, &hex(b))).unwrap_or(e);
            let table = tx.open_table(MESSAGES)?;
            let mut out = Vec::new();
            for r in table
                .range::<&str>((Bound::Included(s.as_str()), Bound::Excluded(end.as_str())))?
                .rev()
                .take(limit)
            {
                let (_, v) = r?;
                out.push(decode::<Message>("message", v.value())?);
            }
            out.reverse();
            Ok(out)
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// Counters

#[async_trait]
impl CounterStore for EmbeddedStore {
    async fn incr(&self, counter: &str, field: &str, by: i64) -> Result<i64> {
        let key = key2(counter, field);
        self.write(move |tx| {
            let mut counters = tx.open_table(COUNTERS)?;
            let value = counters
                .get(key.as_str())?
                .map(|g| g.value())
                .unwrap_or(0)
                .saturating_add(by);
            if value == 0 {
                counters.remove(key.as_str())?;
            } else {
                counters.insert(key.as_str(), value)?;
            }
            Ok(value)
        })
        .await
    }

    async fn get(&self, counter: &str) -> Result<Vec<(String, i64)>> {
        let counter = counter.to_string();
        self.read(move |tx| {
            let (s, e) = under(&counter);
            let table = tx.open_table(COUNTERS)?;
            let mut out = Vec::new();
            for r in table.range::<&str>(s.as_str()..e.as_str())? {
                let (k, v) = r?;
                let value = v.value();
                if value != 0 {
                    out.push((second(k.value())?.to_string(), value));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn reset(&self, counter: &str, field: &str) -> Result<()> {
        let key = key2(counter, field);
        self.write(move |tx| {
            tx.open_table(COUNTERS)?.remove(key.as_str())?;
            Ok(())
        })
        .await
    }
}
