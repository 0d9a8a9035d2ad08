//! The Centrifugo client protocol v2: message types and codecs.
//!
//! The types are codec-neutral (payloads are [`Bytes`](bytes::Bytes) that hold JSON text in
//! the JSON flavour). [`json`] is a sans-IO codec: pure functions from frame bytes to
//! [`Command`]s and from [`Reply`]s to bytes, tested without sockets.

mod command;
pub mod json;
mod reply;
mod serde_util;

pub use command::*;
pub use reply::*;

use serde::{Deserialize, Serialize};

/// A position in a channel's publication stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPosition {
    /// Offset of the last publication (0 = none yet).
    #[serde(default, deserialize_with = "serde_util::lenient_u64")]
    pub offset: u64,
    /// Epoch of the stream; changes whenever the stream restarts.
    #[serde(default, deserialize_with = "serde_util::nullable")]
    pub epoch: String,
}
