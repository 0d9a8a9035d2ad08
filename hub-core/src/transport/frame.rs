//! WebSocket framing (RFC 6455), server side, sans-IO: bytes in, messages out; messages in,
//! bytes out. No socket, no timer, no allocation held between messages, so an idle
//! connection costs nothing here.
//!
//! Only what a server needs: client frames must be masked; fragmented messages are
//! reassembled; control frames may interleave; RSV1 marks a permessage-deflate message when
//! that extension was negotiated (RFC 7692), and is a protocol error otherwise.

use bytes::{BufMut, Bytes, BytesMut};

/// Frame opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    fn from_u8(b: u8) -> Option<OpCode> {
        Some(match b {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    fn to_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A whole message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// A text message. `compressed`: its payload is still deflated (RSV1 was set).
    Text { payload: Vec<u8>, compressed: bool },
    /// A binary message (the Protobuf flavour). `compressed` as for text.
    Binary { payload: Vec<u8>, compressed: bool },
    /// A ping with its payload (to echo in a pong).
    Ping(Vec<u8>),
    /// A pong.
    Pong,
    /// A close frame with its code, if any.
    Close(Option<u16>),
}

/// Why the client's bytes are not acceptable. Each maps to a close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// A framing rule was broken (1002).
    Protocol(&'static str),
    /// The message is larger than allowed (1009).
    TooBig,
}

/// The incremental decoder of client frames.
pub(crate) struct Decoder {
    /// Bytes received but not yet a whole frame.
    pending: Vec<u8>,
    /// The data message being reassembled from fragments.
    message: Vec<u8>,
    /// The opcode and compression of the message being reassembled.
    message_kind: Option<(OpCode, bool)>,
    max_message: usize,
    deflate: bool,
}

impl Decoder {
    /// `max_message`: the largest message accepted; `deflate`: RSV1 may be set.
    pub(crate) fn new(max_message: usize, deflate: bool) -> Self {
        Decoder {
            pending: Vec::new(),
            message: Vec::new(),
            message_kind: None,
            max_message,
            deflate,
        }
    }

    /// Whether the decoder holds no partial data.
    #[cfg(test)]
    pub(crate) fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.message.is_empty() && self.message_kind.is_none()
    }

    /// Bytes held (for memory accounting in tests).
    #[cfg(test)]
    pub(crate) fn held_capacity(&self) -> usize {
        self.pending.capacity() + self.message.capacity()
    }

    /// Feeds received bytes; calls `on_message` for each whole message, in order. Stops at
    /// the first error (the connection must then be closed).
    pub(crate) fn feed(
        &mut self,
        mut data: &[u8],
        mut on_message: impl FnMut(Incoming),
    ) -> Result<(), FrameError> {
        // Fast path: nothing pending, parse straight from the input.
        if self.pending.is_empty() {
            while let Some(used) = self.parse_one(data, &mut on_message)? {
                data = &data[used..];
            }
            if !data.is_empty() {
                self.pending.extend_from_slice(data);
            }
            return Ok(());
        }
        self.pending.extend_from_slice(data);
        let pending = std::mem::take(&mut self.pending);
        let mut rest = &pending[..];
        let r = loop {
            match self.parse_one(rest, &mut on_message) {
                Ok(Some(used)) => rest = &rest[used..],
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        if !rest.is_empty() {
            self.pending = rest.to_vec();
        }
        r
    }

    /// Parses one frame from the front of `data`; returns the bytes used, or `None` if
    /// `data` does not hold a whole frame yet.
    fn parse_one(
        &mut self,
        data: &[u8],
        on_message: &mut impl FnMut(Incoming),
    ) -> Result<Option<usize>, FrameError> {
        if data.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (data[0], data[1]);
        let fin = b0 & 0x80 != 0;
        let rsv1 = b0 & 0x40 != 0;
        if b0 & 0x30 != 0 {
            return Err(FrameError::Protocol("reserved bits set"));
        }
        let op = OpCode::from_u8(b0 & 0x0F).ok_or(FrameError::Protocol("unknown opcode"))?;
        if b1 & 0x80 == 0 {
            return Err(FrameError::Protocol("client frame not masked"));
        }
        let (len, mut at) = match b1 & 0x7F {
            126 => {
                if data.len() < 4 {
                    return Ok(None);
                }
                (u16::from_be_bytes([data[2], data[3]]) as u64, 4)
            }
            127 => {
                if data.len() < 10 {
                    return Ok(None);
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&data[2..10]);
                let l = u64::from_be_bytes(b);
                if l >> 63 != 0 {
                    return Err(FrameError::Protocol("invalid length"));
                }
                (l, 10)
            }
            n => (n as u64, 2),
        };
        if op.is_control() {
            if !fin {
                return Err(FrameError::Protocol("fragmented control frame"));
            }
            if len > 125 {
                return Err(FrameError::Protocol("control frame too long"));
            }
            if rsv1 {
                return Err(FrameError::Protocol("compressed control frame"));
            }
        }
        // Refuse oversized messages from the header, before buffering their bytes.
        let so_far = if op == OpCode::Continuation {
            self.message.len() as u64
        } else {
            0
        };
        if !op.is_control() && so_far + len > self.max_message as u64 {
            return Err(FrameError::TooBig);
        }
        if data.len() < at + 4 {
            return Ok(None);
        }
        let mask = [data[at], data[at + 1], data[at + 2], data[at + 3]];
        at += 4;
        let len = len as usize;
        if data.len() < at + len {
            return Ok(None);
        }
        let payload = &data[at..at + len];
        let used = at + len;
        match op {
            OpCode::Ping => on_message(Incoming::Ping(unmasked(payload, mask))),
            OpCode::Pong => on_message(Incoming::Pong),
            OpCode::Close => {
                let p = unmasked(payload, mask);
                let code = (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
                if p.len() == 1 {
                    return Err(FrameError::Protocol("invalid close payload"));
                }
                on_message(Incoming::Close(code));
            }
            OpCode::Text | OpCode::Binary => {
                if self.message_kind.is_some() {
                    return Err(FrameError::Protocol("new message inside a fragmented one"));
                }
                if rsv1 && !self.deflate {
                    return Err(FrameError::Protocol("compressed frame without deflate"));
                }
                if fin {
                    on_message(message(op, unmasked(payload, mask), rsv1));
                } else {
                    self.message_kind = Some((op, rsv1));
                    self.message.clear();
                    append_unmasked(&mut self.message, payload, mask);
                }
            }
            OpCode::Continuation => {
                let Some((kind, compressed)) = self.message_kind else {
                    return Err(FrameError::Protocol("continuation without a message"));
                };
                if rsv1 {
                    return Err(FrameError::Protocol("RSV1 on a continuation frame"));
                }
                append_unmasked(&mut self.message, payload, mask);
                if fin {
                    self.message_kind = None;
                    let whole = std::mem::take(&mut self.message);
                    on_message(message(kind, whole, compressed));
                }
            }
        }
        Ok(Some(used))
    }
}

fn message(op: OpCode, payload: Vec<u8>, compressed: bool) -> Incoming {
    match op {
        OpCode::Text => Incoming::Text {
            payload,
            compressed,
        },
        _ => Incoming::Binary {
            payload,
            compressed,
        },
    }
}

fn unmasked(payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len());
    append_unmasked(&mut v, payload, mask);
    v
}

fn append_unmasked(out: &mut Vec<u8>, payload: &[u8], mask: [u8; 4]) {
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

/// Appends a server frame (never masked, never fragmented) to `out`.
pub(crate) fn encode(out: &mut BytesMut, op: OpCode, compressed: bool, payload: &[u8]) {
    let mut b0 = 0x80 | op.to_u8();
    if compressed {
        b0 |= 0x40;
    }
    out.reserve(payload.len() + 10);
    out.put_u8(b0);
    match payload.len() {
        n if n < 126 => out.put_u8(n as u8),
        n if n <= u16::MAX as usize => {
            out.put_u8(126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(127);
            out.put_u64(n as u64);
        }
    }
    out.extend_from_slice(payload);
}

/// A close frame with a code and a reason (cut to fit the 125-byte control frame limit on
/// a character boundary).
pub(crate) fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut r = reason;
    while r.len() > 123 {
        let mut cut = 123;
        while !r.is_char_boundary(cut) {
            cut -= 1;
        }
        r = &r[..cut];
    }
    let mut payload = Vec::with_capacity(2 + r.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(r.as_bytes());
    let mut out = BytesMut::new();
    encode(&mut out, OpCode::Close, false, &payload);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x11, 0x22, 0x33, 0x44];
        let mut v = vec![b0];
        match payload.len() {
            n if n < 126 => v.push(0x80 | n as u8),
            n if n <= 65535 => {
                v.push(0x80 | 126);
                v.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                v.push(0x80 | 127);
                v.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        v.extend_from_slice(&mask);
        v.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        v
    }

    fn decode_all(d: &mut Decoder, bytes: &[u8]) -> Result<Vec<Incoming>, FrameError> {
        let mut out = Vec::new();
        d.feed(bytes, |m| out.push(m))?;
        Ok(out)
    }

    fn text(s: &str) -> Incoming {
        Incoming::Text {
            payload: s.as_bytes().to_vec(),
            compressed: false,
        }
    }

    #[test]
    fn decodes_a_masked_text_frame() {
        let mut d = Decoder::new(1024, false);
        let got = decode_all(&mut d, &client_frame(0x81, b"{\"id\":1}")).unwrap();
        assert_eq!(got, vec![text("{\"id\":1}")]);
        assert!(d.is_idle());
        assert_eq!(d.held_capacity(), 0, "nothing held once the message is out");
    }

    #[test]
    fn decodes_frames_split_at_every_byte() {
        let mut bytes = client_frame(0x81, &vec![b'a'; 300]);
        bytes.extend(client_frame(0x89, b"hi"));
        bytes.extend(client_frame(0x81, b"z"));
        let mut d = Decoder::new(1024, false);
        let mut got = Vec::new();
        for b in &bytes {
            got.extend(decode_all(&mut d, std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(
            got,
            vec![
                text(&"a".repeat(300)),
                Incoming::Ping(b"hi".to_vec()),
                text("z")
            ]
        );
        assert!(d.is_idle());
        assert_eq!(d.held_capacity(), 0);
    }

    #[test]
    fn reassembles_fragments_with_interleaved_control_frames() {
        let mut bytes = client_frame(0x01, b"hel");
        bytes.extend(client_frame(0x89, b""));
        bytes.extend(client_frame(0x00, b"lo "));
        bytes.extend(client_frame(0x80, b"world"));
        let mut d = Decoder::new(1024, false);
        let got = decode_all(&mut d, &bytes).unwrap();
        assert_eq!(got, vec![Incoming::Ping(vec![]), text("hello world")]);
    }

    #[test]
    fn refuses_what_the_rfc_forbids() {
        let cases: Vec<(Vec<u8>, FrameError)> = vec![
            (
                vec![0x81, 0x02, b'h', b'i'],
                FrameError::Protocol("client frame not masked"),
            ),
            (
                client_frame(0xA1, b"x"),
                FrameError::Protocol("reserved bits set"),
            ),
            (
                client_frame(0x83, b"x"),
                FrameError::Protocol("unknown opcode"),
            ),
            (
                client_frame(0x09, b"x"),
                FrameError::Protocol("fragmented control frame"),
            ),
            (
                client_frame(0x89, &[0; 126]),
                FrameError::Protocol("control frame too long"),
            ),
            (
                client_frame(0x80, b"x"),
                FrameError::Protocol("continuation without a message"),
            ),
            (
                client_frame(0xC1, b"x"),
                FrameError::Protocol("compressed frame without deflate"),
            ),
            (
                client_frame(0x88, &[3]),
                FrameError::Protocol("invalid close payload"),
            ),
        ];
        for (bytes, want) in cases {
            let mut d = Decoder::new(1024, false);
            assert_eq!(decode_all(&mut d, &bytes), Err(want), "{bytes:02x?}");
        }
        let mut d = Decoder::new(1024, false);
        let mut two = client_frame(0x01, b"a");
        two.extend(client_frame(0x01, b"b"));
        assert!(
            decode_all(&mut d, &two).is_err(),
            "a new message inside a fragmented one"
        );
    }

    #[test]
    fn refuses_oversized_messages_from_the_header() {
        let mut d = Decoder::new(100, false);
        // Only the header of a 1 MiB frame: refused before its payload arrives.
        let header = &client_frame(0x81, &vec![0; 1 << 20])[..14];
        assert_eq!(decode_all(&mut d, header), Err(FrameError::TooBig));
        // Fragments adding up past the limit.
        let mut d = Decoder::new(100, false);
        let mut bytes = client_frame(0x01, &[b'a'; 60]);
        bytes.extend(client_frame(0x80, &[b'a'; 60]));
        assert_eq!(decode_all(&mut d, &bytes), Err(FrameError::TooBig));
    }

    #[test]
    fn close_and_compressed_frames() {
        let mut d = Decoder::new(1024, true);
        let mut bytes = client_frame(0xC1, b"zz");
        bytes.extend(client_frame(0x88, &[0x03, 0xE8, b'b', b'y', b'e']));
        let got = decode_all(&mut d, &bytes).unwrap();
        assert_eq!(
            got,
            vec![
                Incoming::Text {
                    payload: b"zz".to_vec(),
                    compressed: true
                },
                Incoming::Close(Some(1000))
            ]
        );
    }

    #[test]
    fn encodes_each_length_form() {
        for (n, header) in [(5usize, 2usize), (200, 4), (70_000, 10)] {
            let mut out = BytesMut::new();
            encode(&mut out, OpCode::Text, false, &vec![b'x'; n]);
            assert_eq!(out.len(), n + header);
            assert_eq!(out[0], 0x81);
        }
        let mut out = BytesMut::new();
        encode(&mut out, OpCode::Text, true, b"abc");
        assert_eq!(&out[..2], &[0xC1, 3]);
    }

    #[test]
    fn close_frames_carry_code_and_a_reason_that_fits() {
        let f = close_frame(3001, "shutdown");
        assert_eq!(
            &f[..],
            &[0x88, 10, 0x0B, 0xB9, b's', b'h', b'u', b't', b'd', b'o', b'w', b'n']
        );
        let long = close_frame(3500, &"é".repeat(100));
        assert!(long.len() <= 2 + 125);
        assert!(std::str::from_utf8(&long[4..]).is_ok());
    }

    #[test]
    fn random_and_mutated_input_never_panics() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut valid = client_frame(0x81, br#"{"id":1,"connect":{}}"#);
        valid.extend(client_frame(0x01, b"frag"));
        valid.extend(client_frame(0x80, b"ment"));
        valid.extend(client_frame(0xC1, &[0x4b, 0x4c, 0x4a, 0x06, 0x00]));
        for i in 0..5000 {
            let input: Vec<u8> = if i % 2 == 0 {
                (0..rng.usize(0..300)).map(|_| rng.u8(..)).collect()
            } else {
                let mut v = valid.clone();
                for _ in 0..rng.usize(1..6) {
                    let at = rng.usize(..v.len());
                    v[at] = rng.u8(..);
                }
                v
            };
            let mut d = Decoder::new(1024, true);
            let cut = rng.usize(..=input.len());
            let mut out = Vec::new();
            if d.feed(&input[..cut], |m| out.push(m)).is_ok() {
                let _ = d.feed(&input[cut..], |m| out.push(m));
            }
            for m in out {
                if let Incoming::Text {
                    payload,
                    compressed: true,
                } = m
                {
                    let _ = super::super::deflate::decompress(&payload, 1024);
                }
            }
        }
    }
}
