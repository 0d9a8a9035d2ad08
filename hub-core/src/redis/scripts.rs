//! The Lua scripts that make each engine operation one atomic round trip.
//!
//! Keys of one channel share the hash tag `{channel}`, so every script touches one Redis
//! Cluster slot.

use sha1::{Digest, Sha1};

/// A script and its SHA-1 (for `EVALSHA`).
pub(crate) struct Script {
    pub(crate) lua: &'static str,
    pub(crate) sha: String,
}

impl Script {
    fn new(lua: &'static str) -> Self {
        let sha = Sha1::digest(lua.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Script { lua, sha }
    }
}

/// Appends to the stream and publishes, atomically: offsets are gap-free across nodes.
///
/// KEYS: stream, meta. ARGV: body, history size, history TTL (s), PUB/SUB channel ("" = do
/// not publish), meta TTL (s, 0 = none), a new epoch (used if the stream has none), the
/// publish command (`publish`, or `spublish` for sharded PUB/SUB in a Redis Cluster).
/// Returns `{offset, epoch}`.
const PUBLISH: &str = r#"
local epoch = redis.call("hget", KEYS[2], "e")
if epoch == false then
  epoch = ARGV[6]
  redis.call("hset", KEYS[2], "e", epoch)
  redis.call("del", KEYS[1])
end
local offset = redis.call("hincrby", KEYS[2], "s", 1)
if ARGV[5] ~= "0" then redis.call("expire", KEYS[2], ARGV[5]) end
redis.call("xadd", KEYS[1], "MAXLEN", ARGV[2], offset, "d", ARGV[1])
redis.call("expire", KEYS[1], ARGV[3])
if ARGV[4] ~= "" then
  redis.call(ARGV[7], ARGV[4], "__p1:" .. offset .. ":" .. epoch .. "__" .. ARGV[1])
end
return {offset, epoch}
"#;

/// Reads a stream: its top and epoch (creating the epoch when the stream has none), and the
/// entries after `since` (before it, when reversed).
///
/// KEYS: stream, meta. ARGV: limit (-1 = all, 0 = none), since ("" = from the start/end),
/// reverse ("1"/"0"), meta TTL (s, 0 = none), a new epoch. Returns `{top, epoch, entries}`.
const HISTORY: &str = r#"
local epoch = redis.call("hget", KEYS[2], "e")
if epoch == false then
  epoch = ARGV[5]
  redis.call("hset", KEYS[2], "e", epoch)
  if ARGV[4] ~= "0" then redis.call("expire", KEYS[2], ARGV[4]) end
  redis.call("del", KEYS[1])
end
local top = redis.call("hget", KEYS[2], "s")
if top == false then top = "0" end
if ARGV[1] == "0" then return {top, epoch, {}} end
local entries
if ARGV[3] == "1" then
  local hi = "+"
  if ARGV[2] ~= "" then hi = "(" .. ARGV[2] end
  if ARGV[1] == "-1" then
    entries = redis.call("xrevrange", KEYS[1], hi, "-")
  else
    entries = redis.call("xrevrange", KEYS[1], hi, "-", "COUNT", ARGV[1])
  end
else
  local lo = "-"
  if ARGV[2] ~= "" then lo = "(" .. ARGV[2] end
  if ARGV[1] == "-1" then
    entries = redis.call("xrange", KEYS[1], lo, "+")
  else
    entries = redis.call("xrange", KEYS[1], lo, "+", "COUNT", ARGV[1])
  end
end
return {top, epoch, entries}
"#;

/// Adds or refreshes a presence entry.
///
/// KEYS: expiry zset, data hash. ARGV: TTL (s), expiry (unix s), client id, info.
const PRESENCE_ADD: &str = r#"
redis.call("zadd", KEYS[1], ARGV[2], ARGV[3])
redis.call("hset", KEYS[2], ARGV[3], ARGV[4])
redis.call("expire", KEYS[1], ARGV[1])
redis.call("expire", KEYS[2], ARGV[1])
return 1
"#;

/// Removes a presence entry. KEYS: expiry zset, data hash. ARGV: client id.
const PRESENCE_REMOVE: &str = r#"
redis.call("zrem", KEYS[1], ARGV[1])
redis.call("hdel", KEYS[2], ARGV[1])
return 1
"#;

/// Drops expired presence entries and returns the rest as a flat `hgetall` list.
/// KEYS: expiry zset, data hash. ARGV: now (unix s).
const PRESENCE_GET: &str = r#"
local expired = redis.call("zrangebyscore", KEYS[1], "0", ARGV[1])
if #expired > 0 then
  for i = 1, #expired do redis.call("hdel", KEYS[2], expired[i]) end
  redis.call("zremrangebyscore", KEYS[1], "0", ARGV[1])
end
return redis.call("hgetall", KEYS[2])
"#;

/// All scripts, hashed once.
pub(crate) struct Scripts {
    pub(crate) publish: Script,
    pub(crate) history: Script,
    pub(crate) presence_add: Script,
    pub(crate) presence_remove: Script,
    pub(crate) presence_get: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            publish: Script::new(PUBLISH),
            history: Script::new(HISTORY),
            presence_add: Script::new(PRESENCE_ADD),
            presence_remove: Script::new(PRESENCE_REMOVE),
            presence_get: Script::new(PRESENCE_GET),
        }
    }
}
