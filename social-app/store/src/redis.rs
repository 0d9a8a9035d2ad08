//! Redis backends (`fred`): counters in hashes and home feeds as a cache.
//!
//! Both take a [`Client`] the caller has connected and a key prefix (`"social:"`, say), and
//! touch only their own keys: `{prefix}counter:{counter}` and `{prefix}feed:{user}`. Every
//! change is one command or one Lua script on one key, so both work on a Redis Cluster too.
//! Nothing here ever sends SHUTDOWN, FLUSHALL, FLUSHDB or CONFIG: the Redis may be shared, and
//! stopping the app must never hurt it. A fred error becomes [`StoreError::Unavailable`].

use std::collections::HashMap;

use async_trait::async_trait;
use fred::prelude::{Client, HashesInterface, LuaInterface, Value};
use futures_util::future::try_join_all;

use crate::{CounterStore, FeedItem, FeedStore, Id, Result, StoreError};

fn unavailable(e: fred::error::Error) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// Adds to a hash field and removes the field when it comes to 0, atomically.
const INCR: &str = r"
local v = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if v == 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return v
";

/// [`CounterStore`] over Redis hashes: one hash per counter group, one field per counter.
#[derive(Clone)]
pub struct RedisCounters {
    client: Client,
    prefix: String,
}

impl std::fmt::Debug for RedisCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCounters")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisCounters {
    /// Counters in `client`'s Redis, under keys `{prefix}counter:{counter}`.
    pub fn new(client: Client, prefix: impl Into<String>) -> Self {
        RedisCounters {
            client,
            prefix: prefix.into(),
        }
    }

    fn key(&self, counter: &str) -> String {
        format!("{}counter:{counter}", self.prefix)
    }
}

#[async_trait]
impl CounterStore for RedisCounters {
    async fn incr(&self, counter: &str, field: &str, by: i64) -> Result<i64> {
        self.client
            .eval::<i64, _, _, _>(
                INCR,
                vec![self.key(counter)],
                vec![field.to_string(), by.to_string()],
            )
            .await
            .map_err(unavailable)
    }

    async fn get(&self, counter: &str) -> Result<Vec<(String, i64)>> {
        let all: HashMap<String, i64> = self
            .client
            .hgetall(self.key(counter))
            .await
            .map_err(unavailable)?;
        let mut out: Vec<(String, i64)> = all.into_iter().filter(|(_, v)| *v != 0).collect();
        out.sort();
        Ok(out)
    }

    async fn reset(&self, counter: &str, field: &str) -> Result<()> {
        self.client
            .hdel::<i64, _, _>(self.key(counter), field)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

// A feed is a sorted set whose members all have score 0, so they sort by value: the empty
// string (the marker: the feed exists, maybe empty; always rank 0), then
// `{post id}\x1f{author}`, in post id order. Post ids sort in creation order, so the newest
// are last and trimming removes ranks 1.. from the front.

/// Adds members (ARGV[2..]) to an existing feed and trims it to ARGV[1] items.
const FEED_ADD: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 0, ARGV[i]) end
redis.call('ZREMRANGEBYRANK', KEYS[1], 1, -(tonumber(ARGV[1]) + 1))
return 1
";

/// Replaces the feed by the marker and members ARGV[2..], trimmed to ARGV[1] items.
const FEED_REPLACE: &str = r"
redis.call('DEL', KEYS[1])
redis.call('ZADD', KEYS[1], 0, '')
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 0, ARGV[i]) end
redis.call('ZREMRANGEBYRANK', KEYS[1], 1, -(tonumber(ARGV[1]) + 1))
return 1
";

/// Removes the members whose author is ARGV[1].
const FEED_REMOVE_AUTHOR: &str = r"
local n = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 1, -1)) do
  local i = string.find(m, '\31', 1, true)
  if i and string.sub(m, i + 1) == ARGV[1] then
    redis.call('ZREM', KEYS[1], m)
    n = n + 1
  end
end
return n
";

/// `{0}` when the feed does not exist, else `{1, member...}`: members below the bound ARGV[1],
/// newest first, at most ARGV[2].
const FEED_READ: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local out = {1}
for _, m in ipairs(redis.call('ZREVRANGEBYLEX', KEYS[1], ARGV[1], '(', 'LIMIT', 0, ARGV[2])) do
  out[#out + 1] = m
end
return out
";

const SEP: char = '\u{1f}';

fn member(item: &FeedItem) -> String {
    format!("{}{SEP}{}", item.post, item.author)
}

/// [`FeedStore`] as a cache in Redis: one sorted set per user, bounded to `cap`, with a marker
/// so a feed that was never built (or was lost: evicted, Redis restarted) reads as `None` and
/// the caller rebuilds it with [`FeedStore::replace`]. Pushes into a feed that does not exist
/// are skipped, so a partial feed never passes for a whole one.
#[derive(Clone)]
pub struct RedisFeeds {
    client: Client,
    prefix: String,
}

impl std::fmt::Debug for RedisFeeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisFeeds")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisFeeds {
    /// Feeds in `client`'s Redis, under keys `{prefix}feed:{user}`.
    pub fn new(client: Client, prefix: impl Into<String>) -> Self {
        RedisFeeds {
            client,
            prefix: prefix.into(),
        }
    }

    /// The key of `user`'s feed.
    pub fn key(&self, user: &str) -> String {
        format!("{}feed:{user}", self.prefix)
    }

    async fn add(&self, user: &str, items: &[FeedItem], cap: usize) -> Result<()> {
        let mut args = Vec::with_capacity(items.len() + 1);
        args.push(cap.to_string());
        args.extend(items.iter().map(member));
        self.client
            .eval::<i64, _, _, _>(FEED_ADD, vec![self.key(user)], args)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl FeedStore for RedisFeeds {
    async fn push(&self, users: &[Id], item: &FeedItem, cap: usize) -> Result<()> {
        // One script per user (each on its own key, so a cluster can route it); fred sends
        // them together.
        try_join_all(
            users
                .iter()
                .map(|u| self.add(u, std::slice::from_ref(item), cap)),
        )
        .await?;
        Ok(())
    }

    async fn push_many(&self, user: &str, items: &[FeedItem], cap: usize) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        self.add(user, items, cap).await
    }

    async fn remove_author(&self, user: &str, author: &str) -> Result<()> {
        self.client
            .eval::<i64, _, _, _>(FEED_REMOVE_AUTHOR, vec![self.key(user)], vec![author])
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn feed(
        &self,
        user: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<FeedItem>>> {
        let max = before.map_or_else(|| "+".to_string(), |b| format!("({b}"));
        let reply: Value = self
            .client
            .eval(
                FEED_READ,
                vec![self.key(user)],
                vec![max, limit.to_string()],
            )
            .await
            .map_err(unavailable)?;
        let Value::Array(values) = reply else {
            return Err(StoreError::Corrupt(format!(
                "feed of {user}: unexpected reply {reply:?}"
            )));
        };
        let mut values = values.into_iter();
        match values.next() {
            Some(Value::Integer(1)) => {}
            Some(Value::Integer(0)) => return Ok(None),
            other => {
                return Err(StoreError::Corrupt(format!(
                    "feed of {user}: unexpected reply {other:?}"
                )))
            }
        }
        let mut items = Vec::with_capacity(values.len());
        for v in values.take(limit) {
            let m = v
                .as_string()
                .ok_or_else(|| StoreError::Corrupt(format!("feed of {user}: member {v:?}")))?;
            let (post, author) = m
                .split_once(SEP)
                .ok_or_else(|| StoreError::Corrupt(format!("feed of {user}: member {m:?}")))?;
            items.push(FeedItem {
                post: post.to_string(),
                author: author.to_string(),
            });
        }
        Ok(Some(items))
    }

    async fn replace(&self, user: &str, items: &[FeedItem], cap: usize) -> Result<()> {
        // Only the newest `cap` can stay: send no more than those.
        let mut members: Vec<(&str, String)> =
            items.iter().map(|i| (i.post.as_str(), member(i))).collect();
        members.sort();
        members.dedup_by(|a, b| a.0 == b.0);
        let skip = members.len().saturating_sub(cap);
        let mut args = Vec::with_capacity(members.len() - skip + 1);
        args.push(cap.to_string());
        args.extend(members.into_iter().skip(skip).map(|(_, m)| m));
        self.client
            .eval::<i64, _, _, _>(FEED_REPLACE, vec![self.key(user)], args)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
