//! Which flavour of the client protocol a connection speaks: JSON in text frames, or
//! Protobuf in binary frames (PROTOCOL.md §1.8). Chosen once, at the WebSocket upgrade.

use bytes::{Bytes, BytesMut};

use crate::protocol::{json, protobuf, Command, DecodeError, EncodeError, Reply};
use crate::transport::frame::OpCode;

/// A connection's protocol flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Codec {
    /// JSON objects, `\n`-joined, in text frames.
    #[default]
    Json,
    /// Varint-length-prefixed Protobuf messages in binary frames.
    Protobuf,
}

impl Codec {
    /// Encodes one reply, push or ping. JSON fails on a binary payload.
    pub(crate) fn encode_reply(self, reply: &Reply) -> Result<Bytes, EncodeError> {
        match self {
            Codec::Json => json::encode_reply(reply),
            Codec::Protobuf => protobuf::encode_reply(reply),
        }
    }

    /// The commands of one frame, in order.
    pub(crate) fn decode_commands(self, frame: &[u8]) -> Vec<Result<Command, DecodeError>> {
        match self {
            Codec::Json => json::decode_commands(frame).collect(),
            Codec::Protobuf => protobuf::decode_commands(frame).collect(),
        }
    }

    /// Several encoded replies as one frame's payload: `\n`-joined JSON, or concatenated
    /// length-prefixed Protobuf messages.
    pub(crate) fn join<'a>(self, parts: impl IntoIterator<Item = &'a Bytes>) -> Bytes {
        match self {
            Codec::Json => json::join_frame(parts),
            Codec::Protobuf => {
                let mut out = BytesMut::new();
                for p in parts {
                    out.extend_from_slice(p);
                }
                out.freeze()
            }
        }
    }

    /// The WebSocket frame type this flavour travels in.
    pub(crate) fn opcode(self) -> OpCode {
        match self {
            Codec::Json => OpCode::Text,
            Codec::Protobuf => OpCode::Binary,
        }
    }
}
