//! Small shared helpers.

/// Number of shards in registries and in-memory engines.
pub(crate) const SHARDS: usize = 64;

/// FNV-1a, 64 bits: the hash of registry shards and of Redis engine shards.
pub(crate) fn fnv1a(key: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in key.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The shard of a key (FNV-1a).
pub(crate) fn shard_of(key: &str) -> usize {
    (fnv1a(key) % SHARDS as u64) as usize
}

/// A fresh random stream epoch.
pub(crate) fn new_epoch() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..8)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect()
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
