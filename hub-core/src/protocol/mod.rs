//! The Centrifugo client protocol v2: message types and codecs.
//!
//! The types are codec-neutral (payloads are [`Bytes`](bytes::Bytes) that hold JSON text in
//! the JSON flavour, and any bytes in the Protobuf flavour). [`json`] and [`protobuf`] are
//! sans-IO codecs of the same shape: pure functions from frame bytes to [`Command`]s and from
//! [`Reply`]s to bytes, tested without sockets.

mod command;
mod error;
pub mod json;
pub mod protobuf;
mod reply;
mod serde_util;

pub use command::*;
pub use error::{DecodeError, EncodeError};
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
