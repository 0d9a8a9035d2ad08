//! permessage-deflate (RFC 7692) without per-connection state.
//!
//! The server always answers `server_no_context_takeover; client_no_context_takeover`: every
//! message is compressed on its own, in both directions. So a publication is compressed
//! **once** and the same bytes serve every subscriber, and no connection holds a deflate
//! context (tens of KiB) while idle: compressors and decompressors are per thread, reset for
//! each message.

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The response to an accepted offer.
pub(crate) const RESPONSE: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// Compression settings of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressionConfig {
    /// Negotiate permessage-deflate with clients that offer it (default false).
    pub enabled: bool,
    /// Messages shorter than this are sent uncompressed (default 128 bytes).
    pub min_size: usize,
    /// Deflate level 1 (fastest) to 9 (smallest) (default 1).
    pub level: u32,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            enabled: false,
            min_size: 128,
            level: 1,
        }
    }
}

/// Whether the `Sec-WebSocket-Extensions` values hold a permessage-deflate offer we can
/// accept: one whose parameters are known, not repeated, and allow a 15-bit server window.
pub(crate) fn accepts_offer<'a>(header_values: impl IntoIterator<Item = &'a str>) -> bool {
    header_values
        .into_iter()
        .flat_map(|v| v.split(','))
        .any(acceptable)
}

fn acceptable(offer: &str) -> bool {
    let mut parts = offer.split(';').map(str::trim);
    if !parts
        .next()
        .is_some_and(|n| n.eq_ignore_ascii_case("permessage-deflate"))
    {
        return false;
    }
    let mut seen: Vec<String> = Vec::new();
    for p in parts.filter(|p| !p.is_empty()) {
        let (name, value) = match p.split_once('=') {
            Some((n, v)) => (
                n.trim().to_ascii_lowercase(),
                Some(v.trim().trim_matches('"')),
            ),
            None => (p.to_ascii_lowercase(), None),
        };
        if seen.contains(&name) {
            return false;
        }
        let ok = match name.as_str() {
            "server_no_context_takeover" | "client_no_context_takeover" => value.is_none(),
            // We compress with a 15-bit window: a client asking for less is declined.
            "server_max_window_bits" => value == Some("15"),
            // Any client window fits our 15-bit inflater.
            "client_max_window_bits" => {
                value.is_none_or(|v| v.parse::<u8>().is_ok_and(|b| (8..=15).contains(&b)))
            }
            _ => false,
        };
        if !ok {
            return false;
        }
        seen.push(name);
    }
    true
}

thread_local! {
    static COMPRESSORS: RefCell<Vec<(u32, Compress)>> = const { RefCell::new(Vec::new()) };
    static DECOMPRESSOR: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// The deflate tail every sync-flushed message ends with, left off on the wire.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Compresses one message on its own (no context carried over).
pub(crate) fn compress(data: &[u8], level: u32) -> Bytes {
    COMPRESSORS.with(|c| {
        let mut list = c.borrow_mut();
        let idx = match list.iter().position(|(l, _)| *l == level) {
            Some(i) => i,
            None => {
                list.push((level, Compress::new(Compression::new(level.min(9)), false)));
                list.len() - 1
            }
        };
        let z = &mut list[idx].1;
        z.reset();
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        let mut input = data;
        loop {
            let before_in = z.total_in();
            let flush = FlushCompress::Sync;
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(64));
            }
            // compress_vec never fails on valid input; an error would be a bug in flate2.
            let _ = z.compress_vec(input, &mut out, flush);
            input = &input[(z.total_in() - before_in) as usize..];
            if input.is_empty() && out.ends_with(&TAIL) {
                break;
            }
        }
        out.truncate(out.len() - TAIL.len());
        Bytes::from(out)
    })
}

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InflateError {
    /// Not valid deflate data (close 1007).
    Invalid,
    /// Inflates past the message size limit (close 1009).
    TooBig,
}

/// Inflates one client message (the client keeps no context between messages).
pub(crate) fn decompress(data: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    let mut input = Vec::with_capacity(data.len() + TAIL.len());
    input.extend_from_slice(data);
    input.extend_from_slice(&TAIL);
    DECOMPRESSOR.with(|d| {
        let mut slot = d.borrow_mut();
        let z = slot.get_or_insert_with(|| Decompress::new(false));
        z.reset(false);
        let mut out: Vec<u8> =
            Vec::with_capacity((data.len() * 4).max(64).min(max.saturating_add(1)));
        let mut used = 0usize;
        loop {
            if out.len() == out.capacity() {
                if out.len() > max {
                    return Err(InflateError::TooBig);
                }
                out.reserve(
                    (max.saturating_add(1) - out.len())
                        .min(out.capacity().max(64))
                        .max(1),
                );
            }
            let (in0, out0) = (z.total_in(), z.total_out());
            let status = z
                .decompress_vec(&input[used..], &mut out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Invalid)?;
            used += (z.total_in() - in0) as usize;
            let room = out.len() < out.capacity();
            if status == Status::StreamEnd || (used == input.len() && room) {
                break;
            }
            if z.total_in() == in0 && z.total_out() == out0 && room {
                return Err(InflateError::Invalid);
            }
        }
        if out.len() > max {
            return Err(InflateError::TooBig);
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_offers_browsers_and_node_send() {
        assert!(accepts_offer([
            "permessage-deflate; client_max_window_bits"
        ]));
        assert!(accepts_offer(["permessage-deflate"]));
        assert!(accepts_offer([
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=15"
        ]));
        assert!(accepts_offer([
            "x-webkit-deflate-frame, permessage-deflate"
        ]));
    }

    #[test]
    fn declines_what_it_cannot_honour() {
        assert!(!accepts_offer([
            "permessage-deflate; server_max_window_bits=10"
        ]));
        assert!(!accepts_offer(["permessage-deflate; unknown_param"]));
        assert!(!accepts_offer([
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover"
        ]));
        assert!(!accepts_offer([
            "permessage-deflate; client_max_window_bits=7"
        ]));
        assert!(!accepts_offer(["x-webkit-deflate-frame"]));
        assert!(!accepts_offer(Vec::<&str>::new()));
    }

    #[test]
    fn round_trips_and_compresses_each_message_alone() {
        let msg = br#"{"push":{"channel":"news","pub":{"data":{"text":"hello hello hello hello hello"}}}}"#;
        let a = compress(msg, 1);
        let b = compress(msg, 1);
        assert_eq!(a, b, "no context carried over: same input, same bytes");
        assert!(a.len() < msg.len());
        assert_eq!(decompress(&a, 1 << 20).unwrap(), msg.to_vec());
        let big = vec![b'x'; 200_000];
        assert_eq!(decompress(&compress(&big, 6), 1 << 20).unwrap(), big);
        assert_eq!(decompress(&compress(b"", 1), 10).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn inflating_refuses_garbage_and_bombs() {
        assert_eq!(
            decompress(&[0xff, 0xff, 0xff, 0xff, 0x00], 1 << 20),
            Err(InflateError::Invalid)
        );
        let bomb = compress(&vec![0u8; 1 << 20], 9);
        assert!(bomb.len() < 4096);
        assert_eq!(decompress(&bomb, 65536), Err(InflateError::TooBig));
    }
}
