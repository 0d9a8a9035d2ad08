//! Presence: who is subscribed to a channel, across nodes.
//!
//! Entries expire unless refreshed: every connection refreshes its presence periodically, so a
//! node that dies without cleaning up leaves no ghosts for longer than the TTL.

mod memory;

pub use memory::MemoryPresence;

use std::collections::HashMap;

use async_trait::async_trait;

use crate::error::EngineError;
use crate::protocol::{ClientInfo, PresenceStatsResult};

/// Stores presence per channel.
#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Adds or refreshes a connection's entry.
    async fn add(&self, channel: &str, info: &ClientInfo) -> Result<(), EngineError>;
    /// Removes a connection's entry.
    async fn remove(&self, channel: &str, client_id: &str, user: &str) -> Result<(), EngineError>;
    /// Everyone present: client id → info.
    async fn presence(&self, channel: &str) -> Result<HashMap<String, ClientInfo>, EngineError>;
    /// Counts of connections and distinct users.
    async fn stats(&self, channel: &str) -> Result<PresenceStatsResult, EngineError>;
}
