//! The social app's storage: the records, the traits the services store them through, and
//! the backends.
//!
//! Each service owns its data and reaches it only through its trait: users and friendships
//! ([`UserStore`], [`FriendStore`]), posts and home feeds ([`PostStore`], [`FeedStore`]), chats
//! and messages ([`ChatStore`]), generic counters ([`CounterStore`]). The backends:
//!
//! | backend | module | for |
//! |---|---|---|
//! | redb, one file per service | [`embedded`] | the default: durable, nothing to install |
//! | MongoDB, official `mongodb` crate | [`mongo`] | production; indexes created at start |
//! | Redis (`fred`) | [`redis`] | counters and feed caches when Redis is configured |
//!
//! This crate is its own crate so the storage builds and is tested alone (the shared
//! [`contract`] suite runs against every backend) and the services see only traits.
//!
//! Ids are opaque strings that **sort in creation order** within one store (a zero-padded hex
//! sequence in redb, ObjectId hex in MongoDB), so pages can be cut by id.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub mod contract;
pub mod embedded;
pub mod mongo;
pub mod redis;

/// An id: opaque, sorts in creation order within one store.
pub type Id = String;

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule refused the write (the text names it: "email already registered").
    #[error("conflict: {0}")]
    Conflict(String),
    /// The backend cannot be reached or failed; retrying later may work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read back (corrupt or from an incompatible version).
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

/// What store calls return.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The profile fields a user edits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// First name (searchable by prefix).
    pub first_name: String,
    /// Last name (searchable by prefix).
    pub last_name: String,
    /// `YYYY-MM-DD`, or empty.
    pub birthday: String,
    /// City, or empty.
    pub city: String,
    /// Interests, in the user's order.
    pub interests: Vec<String>,
}

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Id.
    pub id: Id,
    /// Login email, stored lower-case; unique.
    pub email: String,
    /// argon2 PHC string. Never leaves the users service.
    pub password_hash: String,
    /// Profile.
    pub profile: Profile,
    /// Registration time, ms since the epoch.
    pub created_at: i64,
}

/// A user to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    /// Login email, lower-case.
    pub email: String,
    /// argon2 PHC string.
    pub password_hash: String,
    /// Profile.
    pub profile: Profile,
}

/// One page of results and the cursor of the next (`None`: this was the last page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// Items.
    pub items: Vec<T>,
    /// Pass to the same call to get the next page.
    pub next: Option<String>,
}

/// Users.
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Creates a user; [`StoreError::Conflict`] when the email is taken.
    async fn create_user(&self, user: NewUser) -> Result<User>;
    /// The user with `id`.
    async fn user(&self, id: &str) -> Result<Option<User>>;
    /// The user whose login email is `email` (lower-case).
    async fn user_by_email(&self, email: &str) -> Result<Option<User>>;
    /// The users among `ids` that exist, in the order of `ids`.
    async fn users(&self, ids: &[Id]) -> Result<Vec<User>>;
    /// Replaces the profile of `id`; the updated user, `None` if there is no such user.
    async fn update_profile(&self, id: &str, profile: Profile) -> Result<Option<User>>;
    /// Users whose first or last name starts with `prefix` (case-insensitive, `prefix` is
    /// given lower-case and non-empty), each once, at most `limit` a page, through an index
    /// (never a scan of all users). `cursor` is the `next` of the previous page.
    async fn search(&self, prefix: &str, cursor: Option<&str>, limit: usize) -> Result<Page<User>>;
    /// Number of users.
    async fn count_users(&self) -> Result<u64>;
}

/// How user `a` relates to user `b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    /// Nothing between them.
    None,
    /// `a` asked `b` to be friends; `b` has not answered.
    RequestSent,
    /// `b` asked `a`; `a` has not answered.
    RequestReceived,
    /// Friends.
    Friends,
}

/// Friend requests and friendships (symmetric).
#[async_trait]
pub trait FriendStore: Send + Sync + 'static {
    /// Records that `from` asks `to` (idempotent).
    async fn add_request(&self, from: &str, to: &str) -> Result<()>;
    /// Removes the request `from` → `to`; false if there was none.
    async fn remove_request(&self, from: &str, to: &str) -> Result<bool>;
    /// Makes `a` and `b` friends and removes requests between them either way (idempotent).
    async fn add_friendship(&self, a: &str, b: &str) -> Result<()>;
    /// Ends the friendship; false if they were not friends.
    async fn remove_friendship(&self, a: &str, b: &str) -> Result<bool>;
    /// How `a` relates to `b`.
    async fn relation(&self, a: &str, b: &str) -> Result<Relation>;
    /// `user`'s friends, ordered by id, `limit` a page.
    async fn friends(&self, user: &str, cursor: Option<&str>, limit: usize) -> Result<Page<Id>>;
    /// How many friends `user` has (kept as a count, not by listing).
    async fn friend_count(&self, user: &str) -> Result<u64>;
    /// Who asked `user` and waits for an answer, at most `limit`, oldest first.
    async fn incoming_requests(&self, user: &str, limit: usize) -> Result<Vec<Id>>;
    /// Whom `user` asked, at most `limit`, oldest first.
    async fn outgoing_requests(&self, user: &str, limit: usize) -> Result<Vec<Id>>;
}

/// A post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Post {
    /// Id (sorts in creation order).
    pub id: Id,
    /// Author's user id.
    pub author: Id,
    /// Text, as written (escaping is the page's job).
    pub text: String,
    /// ms since the epoch.
    pub created_at: i64,
}

/// Posts.
#[async_trait]
pub trait PostStore: Send + Sync + 'static {
    /// Stores a new post.
    async fn create_post(&self, author: &str, text: &str) -> Result<Post>;
    /// The posts among `ids` that exist, in the order of `ids`.
    async fn posts(&self, ids: &[Id]) -> Result<Vec<Post>>;
    /// `author`'s posts, newest first, older than the post `before` when given, at most
    /// `limit`.
    async fn posts_by(&self, author: &str, before: Option<&str>, limit: usize)
        -> Result<Vec<Post>>;
    /// Number of posts by `author`.
    async fn count_posts_by(&self, author: &str) -> Result<u64>;
}

/// One entry of a home feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedItem {
    /// The post.
    pub post: Id,
    /// Its author.
    pub author: Id,
}

/// Bounded per-user home feeds (fan-out on write), newest post first.
#[async_trait]
pub trait FeedStore: Send + Sync + 'static {
    /// Adds `item` to the feed of each of `users` (one batch), keeping each feed ordered by
    /// post id and at most `cap` long (the oldest fall off). Adding an item already present
    /// changes nothing.
    async fn push(&self, users: &[Id], item: &FeedItem, cap: usize) -> Result<()>;
    /// Adds several items to `user`'s feed (backfill when a friendship starts), same rules.
    async fn push_many(&self, user: &str, items: &[FeedItem], cap: usize) -> Result<()>;
    /// Removes `author`'s posts from `user`'s feed (the friendship ended).
    async fn remove_author(&self, user: &str, author: &str) -> Result<()>;
    /// `user`'s feed, newest first, older than post `before` when given, at most `limit`.
    /// `None` when this store holds no feed for `user` at all (a cache that lost it: the
    /// caller rebuilds it); an empty feed that exists is `Some(vec![])`.
    async fn feed(
        &self,
        user: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<FeedItem>>>;
    /// Replaces `user`'s whole feed (a rebuild), marking it as existing even when empty.
    async fn replace(&self, user: &str, items: &[FeedItem], cap: usize) -> Result<()>;
}

/// Kind of chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatKind {
    /// Two users; there is at most one dialog per pair.
    Dialog,
    /// Any number of members.
    Group,
}

/// A chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chat {
    /// Id.
    pub id: Id,
    /// Dialog or group.
    pub kind: ChatKind,
    /// Title (groups; empty for dialogs).
    pub title: String,
    /// Member user ids, sorted.
    pub members: Vec<Id>,
    /// ms since the epoch.
    pub created_at: i64,
    /// Sequence number of the last message (0: none yet).
    pub last_seq: u64,
}

/// A chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The chat (MongoDB shards messages by it).
    pub chat: Id,
    /// Position in the chat: 1, 2, 3... with no two messages alike.
    pub seq: u64,
    /// Author's user id.
    pub author: Id,
    /// Text, as written.
    pub text: String,
    /// ms since the epoch.
    pub created_at: i64,
}

/// Chats and their messages.
#[async_trait]
pub trait ChatStore: Send + Sync + 'static {
    /// The dialog of `a` and `b`, created if there is none; the same chat whoever asks and
    /// however many ask at once.
    async fn find_or_create_dialog(&self, a: &str, b: &str) -> Result<Chat>;
    /// A new group chat with `members` (deduplicated, sorted).
    async fn create_group(&self, title: &str, members: &[Id]) -> Result<Chat>;
    /// The chat `id`.
    async fn chat(&self, id: &str) -> Result<Option<Chat>>;
    /// The chats `user` is a member of, newest first, at most `limit`.
    async fn chats_of(&self, user: &str, limit: usize) -> Result<Vec<Chat>>;
    /// Appends a message, giving it the chat's next `seq` atomically.
    async fn add_message(&self, chat: &str, author: &str, text: &str) -> Result<Message>;
    /// Deletes message `seq` of `chat` (a saga's compensation); false if absent. Its `seq`
    /// is not reused.
    async fn delete_message(&self, chat: &str, seq: u64) -> Result<bool>;
    /// The last `limit` messages with `seq < before` (all when `None`), in `seq` order.
    async fn messages(&self, chat: &str, before: Option<u64>, limit: usize)
        -> Result<Vec<Message>>;
}

/// Named groups of integer counters: `counter` is a group ("unread:<user>"), `field` one
/// counter in it ("<chat id>").
#[async_trait]
pub trait CounterStore: Send + Sync + 'static {
    /// Adds `by` (may be negative) to the field; its new value.
    async fn incr(&self, counter: &str, field: &str, by: i64) -> Result<i64>;
    /// Every non-zero field of the group.
    async fn get(&self, counter: &str) -> Result<Vec<(String, i64)>>;
    /// Removes the field (value 0).
    async fn reset(&self, counter: &str, field: &str) -> Result<()>;
}
