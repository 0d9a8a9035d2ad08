//! A small client-side WebSocket (RFC 6455) that can receive permessage-deflate messages
//! (RFC 7692): tungstenite refuses frames with RSV1 set, so the load client does the opening
//! handshake and the framing itself.
//!
//! The client offers `permessage-deflate; client_no_context_takeover;
//! server_no_context_takeover` when asked to, and then inflates each compressed message on
//! its own: the inflater belongs to the thread, not the connection, and is reset for every
//! message, so no connection holds a deflate context. Its own frames (connect, subscribe,
//! pongs) go out masked and uncompressed, which the RFC allows.
//!
//! With `--protobuf` the upgrade also offers subprotocol `centrifuge-protobuf`, and fails
//! unless the server answers with it; commands then go out in binary frames.
//!
//! Bytes are read into a per-thread scratch buffer and a connection keeps only what it has
//! not consumed yet, so an idle connection holds no read buffer at all.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use flate2::{Decompress, FlushDecompress, Status};
use sha1::{Digest, Sha1};
use tokio::net::TcpStream;

/// The extension offer sent with `--compression`.
pub(crate) const DEFLATE_OFFER: &str =
    "permessage-deflate; client_no_context_takeover; server_no_context_takeover";

/// The GUID of the `Sec-WebSocket-Accept` computation (RFC 6455 §1.3).
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The tail of every sync-flushed deflate message, left off on the wire (RFC 7692 §7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// The largest message accepted (as inflated, for compressed ones).
pub(crate) const MAX_MESSAGE: usize = 16 << 20;

/// Bytes read from the socket at once, into the per-thread scratch buffer.
const SCRATCH_SIZE: usize = 64 * 1024;

/// A drained receive buffer with more capacity than this is freed rather than kept.
const KEEP_READ: usize = 1024;

/// A flushed send buffer with more capacity than this is freed rather than kept.
const KEEP_WRITE: usize = 256;

/// Frame opcodes.
pub(crate) mod op {
    /// Continuation of a fragmented message.
    pub(crate) const CONTINUATION: u8 = 0x0;
    /// Text message.
    pub(crate) const TEXT: u8 = 0x1;
    /// Binary message.
    pub(crate) const BINARY: u8 = 0x2;
    /// Close.
    pub(crate) const CLOSE: u8 = 0x8;
    /// Ping.
    pub(crate) const PING: u8 = 0x9;
    /// Pong.
    pub(crate) const PONG: u8 = 0xA;
}

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_SIZE].into_boxed_slice());
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// A transport or framing error once the connection is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WsError {
    /// The socket failed.
    Io(String),
    /// The server broke the protocol.
    Protocol(&'static str),
    /// A message over [`MAX_MESSAGE`].
    TooBig,
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::Io(e) => write!(f, "{e}"),
            WsError::Protocol(e) => write!(f, "WebSocket protocol error: {e}"),
            WsError::TooBig => write!(f, "a message over {} MiB", MAX_MESSAGE >> 20),
        }
    }
}

impl From<std::io::Error> for WsError {
    fn from(e: std::io::Error) -> Self {
        WsError::Io(e.to_string())
    }
}

/// Why the opening handshake failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HandshakeError {
    /// The socket failed or closed.
    Io(String),
    /// A status other than 101: `HTTP 404 Not Found`.
    Status(String),
    /// A 101 response that is not a valid WebSocket upgrade.
    Invalid(String),
    /// permessage-deflate was offered and not (acceptably) accepted.
    Compression(String),
    /// A subprotocol was offered and not accepted.
    Subprotocol(String),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Io(e)
            | HandshakeError::Status(e)
            | HandshakeError::Invalid(e)
            | HandshakeError::Compression(e)
            | HandshakeError::Subprotocol(e) => write!(f, "{e}"),
        }
    }
}

impl From<WsError> for HandshakeError {
    fn from(e: WsError) -> Self {
        HandshakeError::Io(e.to_string())
    }
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// A text message (inflated if it was compressed).
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping, with its payload.
    Ping(Vec<u8>),
    /// A pong.
    Pong,
    /// A close frame.
    Close {
        /// The status code, if the frame had one.
        code: Option<u16>,
        /// The reason.
        reason: String,
    },
}

/// `Sec-WebSocket-Accept` for `key`: base64(SHA-1(key + GUID)).
pub(crate) fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(GUID.as_bytes());
    STANDARD.encode(h.finalize())
}

/// Masks (or unmasks) `buf` in place with `mask`.
pub(crate) fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Appends one whole (FIN), uncompressed client frame: masked with `mask`.
pub(crate) fn encode_client_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// Inflates one message compressed on its own (raw deflate, the sync-flush tail left off);
/// fails past `max` bytes.
pub(crate) fn inflate(data: &[u8], max: usize) -> Result<Vec<u8>, WsError> {
    const INVALID: WsError = WsError::Protocol("invalid deflate data in a compressed message");
    INFLATER.with_borrow_mut(|slot| {
        let z = slot.get_or_insert_with(|| Decompress::new(false));
        z.reset(false);
        let mut out: Vec<u8> = Vec::with_capacity(
            data.len()
                .saturating_mul(4)
                .max(64)
                .min(max.saturating_add(1)),
        );
        // The message, then the tail: no copy of the message to append it.
        for input in [data, &TAIL[..]] {
            let mut used = 0usize;
            loop {
                if out.len() == out.capacity() {
                    if out.len() > max {
                        return Err(WsError::TooBig);
                    }
                    out.reserve(
                        (max.saturating_add(1) - out.len())
                            .min(out.capacity())
                            .max(64),
                    );
                }
                let (in0, out0) = (z.total_in(), z.total_out());
                let status = z
                    .decompress_vec(&input[used..], &mut out, FlushDecompress::Sync)
                    .map_err(|_| INVALID)?;
                used += (z.total_in() - in0) as usize;
                let room = out.len() < out.capacity();
                if status == Status::StreamEnd {
                    // A final block: anything after it (the tail) is not part of the data.
                    return if out.len() > max {
                        Err(WsError::TooBig)
                    } else {
                        Ok(out)
                    };
                }
                if used == input.len() && room {
                    break;
                }
                if z.total_in() == in0 && z.total_out() == out0 && room {
                    return Err(INVALID);
                }
            }
        }
        if out.len() > max {
            return Err(WsError::TooBig);
        }
        Ok(out)
    })
}

/// Decodes server frames into messages: unmasked frames, fragmented messages, compressed
/// (RSV1) messages when permessage-deflate was negotiated.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    /// permessage-deflate was negotiated.
    deflate: bool,
    /// The fragmented message being put together.
    message: Vec<u8>,
    /// Its opcode and whether it is compressed, while one is being put together.
    fragmented: Option<(u8, bool)>,
    /// Compressed messages received.
    inflated: u64,
    /// Bytes of the text, binary and continuation frames received, headers included, as on
    /// the wire (compressed, for compressed messages).
    data_bytes: u64,
}

impl Decoder {
    /// A decoder; `deflate`: RSV1 frames are compressed messages.
    pub(crate) fn new(deflate: bool) -> Self {
        Decoder {
            deflate,
            ..Decoder::default()
        }
    }

    /// Decodes the frame at the front of `data`. `Ok(None)`: `data` does not hold a whole
    /// frame yet. `Ok(Some((used, message)))`: the frame took `used` bytes, and completed
    /// `message` (`None` for a fragment of a message not complete yet).
    pub(crate) fn decode(
        &mut self,
        data: &[u8],
    ) -> Result<Option<(usize, Option<Incoming>)>, WsError> {
        if data.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (data[0], data[1]);
        let fin = b0 & 0x80 != 0;
        let rsv1 = b0 & 0x40 != 0;
        let opcode = b0 & 0x0F;
        if b0 & 0x30 != 0 {
            return Err(WsError::Protocol("RSV2 or RSV3 set"));
        }
        if b1 & 0x80 != 0 {
            return Err(WsError::Protocol("a masked frame from the server"));
        }
        let (len, at) = match b1 & 0x7F {
            126 => {
                if data.len() < 4 {
                    return Ok(None);
                }
                (u64::from(u16::from_be_bytes([data[2], data[3]])), 4)
            }
            127 => {
                if data.len() < 10 {
                    return Ok(None);
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&data[2..10]);
                let l = u64::from_be_bytes(b);
                if l >> 63 != 0 {
                    return Err(WsError::Protocol("a frame length with the top bit set"));
                }
                (l, 10)
            }
            n => (u64::from(n), 2),
        };
        match opcode {
            op::PING | op::PONG | op::CLOSE => {
                if !fin {
                    return Err(WsError::Protocol("a fragmented control frame"));
                }
                if len > 125 {
                    return Err(WsError::Protocol("a control frame over 125 bytes"));
                }
                if rsv1 {
                    return Err(WsError::Protocol("a compressed control frame"));
                }
            }
            op::TEXT | op::BINARY | op::CONTINUATION => {
                if rsv1 && !self.deflate {
                    return Err(WsError::Protocol(
                        "a compressed frame (RSV1) but permessage-deflate was not negotiated",
                    ));
                }
                let so_far = if opcode == op::CONTINUATION {
                    if self.fragmented.is_none() {
                        return Err(WsError::Protocol(
                            "a continuation frame outside a fragmented message",
                        ));
                    }
                    if rsv1 {
                        return Err(WsError::Protocol("RSV1 on a continuation frame"));
                    }
                    self.message.len() as u64
                } else {
                    if self.fragmented.is_some() {
                        return Err(WsError::Protocol("a new message inside a fragmented one"));
                    }
                    0
                };
                // Refused from the header, before its bytes are buffered.
                if so_far + len > MAX_MESSAGE as u64 {
                    return Err(WsError::TooBig);
                }
            }
            _ => return Err(WsError::Protocol("an unknown opcode")),
        }
        // At most MAX_MESSAGE here.
        let len = len as usize;
        if data.len() < at + len {
            return Ok(None);
        }
        let payload = &data[at..at + len];
        let used = at + len;
        if opcode & 0x08 == 0 {
            self.data_bytes += used as u64;
        }
        let message = match opcode {
            op::PING => Some(Incoming::Ping(payload.to_vec())),
            op::PONG => Some(Incoming::Pong),
            op::CLOSE => Some(close_frame(payload)?),
            op::CONTINUATION => {
                self.message.extend_from_slice(payload);
                match (fin, self.fragmented) {
                    (true, Some((first_op, compressed))) => {
                        self.fragmented = None;
                        let whole = std::mem::take(&mut self.message);
                        Some(self.finish(first_op, compressed, Cow::Owned(whole))?)
                    }
                    _ => None,
                }
            }
            _ if fin => Some(self.finish(opcode, rsv1, Cow::Borrowed(payload))?),
            _ => {
                self.fragmented = Some((opcode, rsv1));
                self.message.clear();
                self.message.extend_from_slice(payload);
                None
            }
        };
        Ok(Some((used, message)))
    }

    /// A whole text or binary message, inflated if `compressed`.
    fn finish(
        &mut self,
        opcode: u8,
        compressed: bool,
        data: Cow<'_, [u8]>,
    ) -> Result<Incoming, WsError> {
        let data = if compressed {
            self.inflated += 1;
            inflate(&data, MAX_MESSAGE)?
        } else {
            data.into_owned()
        };
        if opcode == op::BINARY {
            return Ok(Incoming::Binary(data));
        }
        String::from_utf8(data)
            .map(Incoming::Text)
            .map_err(|_| WsError::Protocol("invalid UTF-8 in a text message"))
    }
}

/// Reads a close frame's payload: nothing, or a code and a UTF-8 reason.
fn close_frame(payload: &[u8]) -> Result<Incoming, WsError> {
    match payload {
        [] => Ok(Incoming::Close {
            code: None,
            reason: String::new(),
        }),
        [_] => Err(WsError::Protocol("a close frame with a 1-byte payload")),
        [a, b, reason @ ..] => Ok(Incoming::Close {
            code: Some(u16::from_be_bytes([*a, *b])),
            reason: String::from_utf8_lossy(reason).into_owned(),
        }),
    }
}

/// The request line's target and the `Host` header of a `ws://` URL.
fn request_target(url: &str) -> Result<(String, String), HandshakeError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| HandshakeError::Invalid(format!("invalid URL {url:?}: {e}")))?;
    let host = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .ok_or_else(|| HandshakeError::Invalid(format!("URL {url:?} has no host")))?;
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/")
        .to_owned();
    Ok((path, host))
}

/// The upgrade request, offering permessage-deflate if `deflate` and subprotocol `protocol`
/// when given.
pub(crate) fn upgrade_request(
    path: &str,
    host: &str,
    key: &str,
    deflate: bool,
    protocol: Option<&str>,
) -> String {
    let mut r = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    if let Some(p) = protocol {
        r.push_str("Sec-WebSocket-Protocol: ");
        r.push_str(p);
        r.push_str("\r\n");
    }
    if deflate {
        r.push_str("Sec-WebSocket-Extensions: ");
        r.push_str(DEFLATE_OFFER);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r
}

/// Checks the response head (status line and headers, without the blank line) to an upgrade
/// sent with `key`; returns whether permessage-deflate is on (only if `offered`). With
/// `protocol` offered, the server must have chosen it; without, it must choose none.
pub(crate) fn check_response(
    head: &str,
    key: &str,
    offered: bool,
    protocol: Option<&str>,
) -> Result<bool, HandshakeError> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let (version, code, reason) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("").trim(),
    );
    if !version.starts_with("HTTP/") {
        return Err(HandshakeError::Invalid(format!(
            "the server did not answer with HTTP: {status_line:.100?}"
        )));
    }
    if code != "101" {
        return Err(HandshakeError::Status(
            format!("HTTP {code} {reason}").trim_end().to_owned(),
        ));
    }
    let headers: Vec<(String, &str)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim()))
        .collect();
    let all = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .collect()
    };
    if !all("upgrade")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("websocket"))
    {
        return Err(HandshakeError::Invalid(
            "the 101 response has no `Upgrade: websocket`".into(),
        ));
    }
    if !all("connection")
        .iter()
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    {
        return Err(HandshakeError::Invalid(
            "the 101 response has no `Connection: Upgrade`".into(),
        ));
    }
    let expected = accept_key(key);
    match all("sec-websocket-accept")[..] {
        [v] if v == expected => {}
        [] => {
            return Err(HandshakeError::Invalid(
                "the 101 response has no Sec-WebSocket-Accept".into(),
            ))
        }
        _ => {
            return Err(HandshakeError::Invalid(
                "the 101 response's Sec-WebSocket-Accept does not match the key sent".into(),
            ))
        }
    }
    check_subprotocol(&all("sec-websocket-protocol"), protocol)?;
    let extensions = all("sec-websocket-extensions")
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect::<Vec<_>>();
    if extensions.is_empty() {
        if offered {
            return Err(HandshakeError::Compression(
                "the server did not accept permessage-deflate: its 101 response has no \
                 Sec-WebSocket-Extensions header"
                    .into(),
            ));
        }
        return Ok(false);
    }
    if !offered {
        return Err(HandshakeError::Invalid(format!(
            "the server answered with extensions that were not offered: {}",
            extensions.join(", ")
        )));
    }
    match extensions[..] {
        [one] => check_deflate_response(one).map(|()| true),
        _ => Err(HandshakeError::Compression(format!(
            "the server answered with several extensions, only permessage-deflate was offered: {}",
            extensions.join(", ")
        ))),
    }
}

/// Checks the `Sec-WebSocket-Protocol` values of a 101 response against the subprotocol
/// offered, if any (RFC 6455 §4.1: the server picks one of those offered, or none).
fn check_subprotocol(answered: &[&str], offered: Option<&str>) -> Result<(), HandshakeError> {
    let answered: Vec<&str> = answered
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    match (offered, &answered[..]) {
        (None, []) => Ok(()),
        (None, some) => Err(HandshakeError::Invalid(format!(
            "the server chose subprotocol {}, which was not offered",
            some.join(", ")
        ))),
        (Some(p), []) => Err(HandshakeError::Subprotocol(format!(
            "the server did not accept subprotocol {p}: its 101 response has no \
             Sec-WebSocket-Protocol header"
        ))),
        (Some(p), [one]) if *one == p => Ok(()),
        (Some(p), other) => Err(HandshakeError::Subprotocol(format!(
            "the server answered subprotocol {} to an offer of {p} alone",
            other.join(", ")
        ))),
    }
}

/// Checks an accepted permessage-deflate: known parameters, each once, and
/// `server_no_context_takeover` (each message is inflated on its own).
fn check_deflate_response(ext: &str) -> Result<(), HandshakeError> {
    let err = |m: String| Err(HandshakeError::Compression(m));
    let mut parts = ext.split(';').map(str::trim);
    let name = parts.next().unwrap_or("");
    if !name.eq_ignore_ascii_case("permessage-deflate") {
        return err(format!(
            "the server answered with extension {name:?}, which was not offered"
        ));
    }
    let mut seen: Vec<String> = Vec::new();
    for p in parts.filter(|p| !p.is_empty()) {
        let (param, value) = match p.split_once('=') {
            Some((n, v)) => (
                n.trim().to_ascii_lowercase(),
                Some(v.trim().trim_matches('"')),
            ),
            None => (p.to_ascii_lowercase(), None),
        };
        if seen.contains(&param) {
            return err(format!(
                "permessage-deflate parameter {param} repeated in {ext:?}"
            ));
        }
        let ok = match param.as_str() {
            "server_no_context_takeover" | "client_no_context_takeover" => value.is_none(),
            // Any window up to 15 bits fits the 15-bit inflater; the client never compresses.
            "server_max_window_bits" | "client_max_window_bits" => {
                value.is_some_and(|v| v.parse::<u8>().is_ok_and(|b| (8..=15).contains(&b)))
            }
            _ => false,
        };
        if !ok {
            return err(format!(
                "the server's permessage-deflate response has an invalid parameter {p:?}"
            ));
        }
        seen.push(param);
    }
    if !seen.iter().any(|p| p == "server_no_context_takeover") {
        return err(format!(
            "the server accepted permessage-deflate without server_no_context_takeover \
             ({ext:?}); the load client inflates each message on its own"
        ));
    }
    Ok(())
}

/// An open WebSocket connection, client side.
#[derive(Debug)]
pub(crate) struct WebSocket {
    tcp: TcpStream,
    /// Received bytes; `rbuf[rpos..]` is not decoded yet.
    rbuf: Vec<u8>,
    rpos: usize,
    /// Frames to send; `wbuf[wpos..]` is not written yet.
    wbuf: Vec<u8>,
    wpos: usize,
    decoder: Decoder,
    /// A close frame was sent: nothing more goes out.
    close_sent: bool,
}

impl WebSocket {
    /// Does the opening handshake for `url` (`ws://host[:port]/path`) over `tcp`, offering
    /// permessage-deflate if `deflate`, and subprotocol `protocol` (which the server must
    /// then choose) when given.
    pub(crate) async fn connect(
        tcp: TcpStream,
        url: &str,
        deflate: bool,
        protocol: Option<&str>,
    ) -> Result<WebSocket, HandshakeError> {
        let (path, host) = request_target(url)?;
        let key = STANDARD.encode(std::array::from_fn::<u8, 16, _>(|_| fastrand::u8(..)));
        let mut ws = WebSocket {
            tcp,
            rbuf: Vec::new(),
            rpos: 0,
            wbuf: upgrade_request(&path, &host, &key, deflate, protocol).into_bytes(),
            wpos: 0,
            decoder: Decoder::new(false),
            close_sent: false,
        };
        ws.flush().await?;
        let head_len = loop {
            if let Some(i) = ws.rbuf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if ws.rbuf.len() > MAX_HEAD {
                return Err(HandshakeError::Invalid(format!(
                    "the response head is over {} KiB",
                    MAX_HEAD >> 10
                )));
            }
            if !ws.fill().await? {
                return Err(HandshakeError::Io(
                    "the server closed the connection before answering the upgrade".into(),
                ));
            }
        };
        let head = String::from_utf8_lossy(&ws.rbuf[..head_len - 4]);
        let negotiated = check_response(&head, &key, deflate, protocol)?;
        // Bytes after the head are the first frames.
        ws.rpos = head_len;
        ws.release_read();
        ws.decoder = Decoder::new(negotiated);
        Ok(ws)
    }

    /// Whether permessage-deflate was negotiated.
    pub(crate) fn deflate(&self) -> bool {
        self.decoder.deflate
    }

    /// Compressed messages received so far.
    pub(crate) fn inflated(&self) -> u64 {
        self.decoder.inflated
    }

    /// Bytes of the text, binary and continuation frames received so far, headers included,
    /// as on the wire (not inflated); control frames (pings, pongs, close) not counted.
    pub(crate) fn data_bytes(&self) -> u64 {
        self.decoder.data_bytes
    }

    /// The next text, binary or close message. Pings are answered (the pong goes out before
    /// the next read), pongs ignored; a close frame is answered with a close frame.
    /// `Ok(None)`: the server closed TCP without a close frame. Cancel-safe: a message is
    /// either returned or left in the buffer.
    pub(crate) async fn recv(&mut self) -> Result<Option<Incoming>, WsError> {
        loop {
            while let Some((used, message)) = self.decoder.decode(&self.rbuf[self.rpos..])? {
                self.rpos += used;
                match message {
                    None | Some(Incoming::Pong) => {}
                    Some(Incoming::Ping(payload)) => self.queue(op::PONG, &payload),
                    Some(Incoming::Close { code, reason }) => {
                        let echo = code.map(u16::to_be_bytes);
                        self.queue(op::CLOSE, echo.as_ref().map_or(&[][..], |e| &e[..]));
                        self.close_sent = true;
                        // Best effort: the server may be gone already.
                        let _ = self.flush().await;
                        self.release_read();
                        return Ok(Some(Incoming::Close { code, reason }));
                    }
                    Some(m) => {
                        self.release_read();
                        return Ok(Some(m));
                    }
                }
            }
            self.flush().await?;
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    /// Sends a text message (one masked, uncompressed frame).
    pub(crate) async fn send_text(&mut self, text: &str) -> Result<(), WsError> {
        self.queue(op::TEXT, text.as_bytes());
        self.flush().await
    }

    /// Sends a binary message (one masked, uncompressed frame).
    pub(crate) async fn send_binary(&mut self, data: &[u8]) -> Result<(), WsError> {
        self.queue(op::BINARY, data);
        self.flush().await
    }

    /// Sends a close frame (1000) and waits for the server's close frame or for it to close
    /// the TCP connection; bound it with a timeout.
    pub(crate) async fn close(&mut self) -> Result<(), WsError> {
        if !self.close_sent {
            self.queue(op::CLOSE, &1000u16.to_be_bytes());
            self.close_sent = true;
        }
        self.flush().await?;
        loop {
            match self.recv().await? {
                None | Some(Incoming::Close { .. }) => return Ok(()),
                Some(_) => {}
            }
        }
    }

    /// Adds a masked frame to the send buffer (nothing once a close frame went out).
    fn queue(&mut self, opcode: u8, payload: &[u8]) {
        if self.close_sent {
            return;
        }
        let mask = fastrand::u32(..).to_ne_bytes();
        encode_client_frame(&mut self.wbuf, opcode, payload, mask);
    }

    /// Writes the send buffer out. Cancel-safe: progress is recorded after each write.
    async fn flush(&mut self) -> Result<(), WsError> {
        use tokio::io::AsyncWriteExt as _;
        while self.wpos < self.wbuf.len() {
            let n = self.tcp.write(&self.wbuf[self.wpos..]).await?;
            if n == 0 {
                return Err(WsError::Io("the connection closed while writing".into()));
            }
            self.wpos += n;
        }
        self.wpos = 0;
        if self.wbuf.capacity() > KEEP_WRITE {
            self.wbuf = Vec::new();
        } else {
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Reads what the socket has into the receive buffer; `false` at end of stream.
    async fn fill(&mut self) -> Result<bool, WsError> {
        if self.rpos > 0 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        loop {
            self.tcp.readable().await?;
            let read = SCRATCH.with_borrow_mut(|scratch| {
                let n = self.tcp.try_read(scratch)?;
                self.rbuf.extend_from_slice(&scratch[..n]);
                Ok::<_, std::io::Error>(n)
            });
            match read {
                Ok(0) => return Ok(false),
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Frees or empties the receive buffer once everything in it is decoded.
    fn release_read(&mut self) {
        if self.rpos < self.rbuf.len() {
            return;
        }
        self.rpos = 0;
        if self.rbuf.capacity() > KEEP_READ {
            self.rbuf = Vec::new();
        } else {
            self.rbuf.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    /// A server frame (unmasked).
    fn server_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        let len = payload.len();
        if len < 126 {
            out.push(len as u8);
        } else if len <= 0xFFFF {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    /// Compresses one message as a permessage-deflate sender does: raw deflate, sync flush,
    /// the tail removed.
    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut z = Compress::new(Compression::fast(), false);
        let mut out = Vec::with_capacity(data.len() + 64);
        let mut input = data;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(64));
            }
            let before = z.total_in();
            z.compress_vec(input, &mut out, FlushCompress::Sync)
                .unwrap();
            input = &input[(z.total_in() - before) as usize..];
            if input.is_empty() && out.ends_with(&TAIL) {
                break;
            }
        }
        out.truncate(out.len() - TAIL.len());
        out
    }

    /// Decodes every frame of `data`, which must end on a frame boundary.
    fn decode_all(d: &mut Decoder, mut data: &[u8]) -> Result<Vec<Incoming>, WsError> {
        let mut got = Vec::new();
        while !data.is_empty() {
            let (used, m) = d.decode(data)?.expect("a whole frame");
            data = &data[used..];
            got.extend(m);
        }
        Ok(got)
    }

    fn text(s: &str) -> Incoming {
        Incoming::Text(s.into())
    }

    #[test]
    fn the_accept_key_of_rfc_6455() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn client_frames_are_masked_with_the_three_length_forms() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        // RFC 6455 §5.7: a masked "Hello".
        let mut f = Vec::new();
        encode_client_frame(&mut f, op::TEXT, b"Hello", mask);
        assert_eq!(
            f,
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
        for (len, header) in [(125usize, 2usize), (126, 4), (65_535, 4), (65_536, 10)] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut f = Vec::new();
            encode_client_frame(&mut f, op::BINARY, &payload, mask);
            assert_eq!(f.len(), header + 4 + len, "length {len}");
            assert_eq!(f[0], 0x82, "FIN, no RSV, binary");
            assert_eq!(f[1] & 0x80, 0x80, "MASK bit");
            match header {
                2 => assert_eq!(usize::from(f[1] & 0x7F), len),
                4 => {
                    assert_eq!(f[1] & 0x7F, 126);
                    assert_eq!(usize::from(u16::from_be_bytes([f[2], f[3]])), len);
                }
                _ => {
                    assert_eq!(f[1] & 0x7F, 127);
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&f[2..10]);
                    assert_eq!(u64::from_be_bytes(b), len as u64);
                }
            }
            assert_eq!(f[header..header + 4], mask);
            let mut body = f[header + 4..].to_vec();
            assert_ne!(body, payload, "masked on the wire");
            apply_mask(&mut body, mask);
            assert_eq!(body, payload);
        }
    }

    #[test]
    fn server_frames_of_every_length_form_decode_and_wait_for_their_bytes() {
        for len in [0usize, 1, 125, 126, 65_535, 65_536, 200_000] {
            let s: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            let frame = server_frame(0x81, s.as_bytes());
            let mut d = Decoder::new(false);
            // Every strict prefix is incomplete.
            for cut in [0, 1, 2, 3, 9, frame.len() / 2, frame.len() - 1] {
                if cut < frame.len() {
                    assert_eq!(d.decode(&frame[..cut]).unwrap(), None, "{len} cut {cut}");
                }
            }
            // Followed by another frame: only the first is used.
            let mut two = frame.clone();
            two.extend(server_frame(0x8A, b""));
            let (used, m) = d.decode(&two).unwrap().unwrap();
            assert_eq!(used, frame.len());
            assert_eq!(m, Some(Incoming::Text(s)));
            assert_eq!(
                d.decode(&two[used..]).unwrap(),
                Some((2, Some(Incoming::Pong)))
            );
        }
    }

    #[test]
    fn fragmented_messages_with_a_ping_between_fragments() {
        let mut wire = server_frame(0x01, b"hel"); // text, not FIN
        wire.extend(server_frame(0x89, b"p")); // ping between fragments
        wire.extend(server_frame(0x00, b"lo ")); // continuation
        wire.extend(server_frame(0x80, b"world")); // final continuation
        wire.extend(server_frame(0x82, &[1, 2])); // binary
        let mut d = Decoder::new(false);
        assert_eq!(
            decode_all(&mut d, &wire).unwrap(),
            vec![
                Incoming::Ping(b"p".to_vec()),
                text("hello world"),
                Incoming::Binary(vec![1, 2])
            ]
        );
        assert!(d.fragmented.is_none() && d.message.is_empty());
    }

    #[test]
    fn compressed_messages_inflate_each_on_its_own() {
        let a = br#"{"push":{"channel":"fanout","pub":{"data":{"t":1,"seq":0,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}}}"#;
        let b = br#"{"push":{"channel":"fanout","pub":{"data":{"t":2,"seq":1,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}}}"#;
        let (ca, cb) = (deflate(a), deflate(b));
        assert!(ca.len() < a.len());
        let mut wire = server_frame(0xC1, &ca); // FIN + RSV1 + text
        wire.extend(server_frame(0x81, b"{}")); // uncompressed in between
        wire.extend(server_frame(0xC1, &cb));
        // A compressed message in three fragments: RSV1 on the first only.
        let third = cb.len() / 3;
        wire.extend(server_frame(0x41, &cb[..third]));
        wire.extend(server_frame(0x00, &cb[third..2 * third]));
        wire.extend(server_frame(0x80, &cb[2 * third..]));
        // Empty and large messages.
        wire.extend(server_frame(0xC1, &deflate(b"")));
        let big = "y".repeat(300_000);
        wire.extend(server_frame(0xC1, &deflate(big.as_bytes())));
        let mut d = Decoder::new(true);
        let got = decode_all(&mut d, &wire).unwrap();
        let (sa, sb) = (
            String::from_utf8(a.to_vec()).unwrap(),
            String::from_utf8(b.to_vec()).unwrap(),
        );
        assert_eq!(
            got,
            vec![
                Incoming::Text(sa),
                text("{}"),
                Incoming::Text(sb.clone()),
                Incoming::Text(sb),
                text(""),
                Incoming::Text(big),
            ]
        );
        assert_eq!(d.inflated, 5);
    }

    #[test]
    fn every_size_of_publication_round_trips() {
        // Highly compressible payloads of every size up to a few KiB: the output buffer
        // grows several times, and fills up at every offset relative to the input's end.
        let mut d = Decoder::new(true);
        for size in 0..3000usize {
            let msg = format!(
                r#"{{"push":{{"channel":"fanout","pub":{{"data":{{"t":{},"seq":{size},"pad":"{}"}},"offset":{size}}}}}}}"#,
                1_700_000_000_000_000u64 + size as u64 * 7919,
                "x".repeat(size)
            );
            let frame = server_frame(0xC1, &deflate(msg.as_bytes()));
            assert_eq!(
                d.decode(&frame).unwrap(),
                Some((frame.len(), Some(Incoming::Text(msg)))),
                "size {size}"
            );
        }
        for n in [1usize, 63, 64, 65, 255, 256, 257, 4095, 4096, 4097] {
            let noise: String = (0..n).map(|_| fastrand::alphanumeric()).collect();
            assert_eq!(
                inflate(&deflate(noise.as_bytes()), n).unwrap(),
                noise.as_bytes()
            );
        }
    }

    #[test]
    fn a_final_deflate_block_inflates_too() {
        // A sender that finishes the stream (BFINAL) instead of sync-flushing.
        let mut z = Compress::new(Compression::default(), false);
        let mut out = Vec::with_capacity(256);
        z.compress_vec(b"final block", &mut out, FlushCompress::Finish)
            .unwrap();
        assert_eq!(inflate(&out, 100).unwrap(), b"final block");
    }

    #[test]
    fn inflating_refuses_garbage_and_bombs() {
        assert_eq!(
            inflate(&[0xff, 0xff, 0xff, 0xff, 0x00], 1 << 20),
            Err(WsError::Protocol(
                "invalid deflate data in a compressed message"
            ))
        );
        let zeros = deflate(&vec![0u8; 100_000]);
        assert_eq!(inflate(&zeros, 99_999), Err(WsError::TooBig));
        assert_eq!(inflate(&zeros, 100_000).unwrap().len(), 100_000);
    }

    #[test]
    fn protocol_errors() {
        let cases: Vec<(Vec<u8>, bool, &str)> = vec![
            (server_frame(0xC1, b"x"), false, "not negotiated"),
            (server_frame(0xA1, b"x"), true, "RSV2"),
            (
                {
                    let mut f = server_frame(0x81, b"x");
                    f[1] |= 0x80;
                    f.extend([0; 4]);
                    f
                },
                false,
                "masked",
            ),
            (server_frame(0x83, b"x"), false, "unknown opcode"),
            (server_frame(0x09, b""), false, "fragmented control"),
            (server_frame(0x89, &[0; 126]), false, "over 125"),
            (server_frame(0xC9, b""), true, "compressed control"),
            (
                server_frame(0x80, b"x"),
                false,
                "continuation frame outside",
            ),
            (server_frame(0x88, &[3]), false, "1-byte"),
            (server_frame(0x81, &[0xff, 0xfe]), false, "UTF-8"),
            (
                {
                    let mut f = server_frame(0x01, b"a");
                    f.extend(server_frame(0x81, b"b"));
                    f
                },
                false,
                "inside a fragmented",
            ),
            (
                {
                    let mut f = server_frame(0x41, b"a");
                    f.extend(server_frame(0xC0, b"b"));
                    f
                },
                true,
                "RSV1 on a continuation",
            ),
        ];
        for (wire, deflate, want) in cases {
            let mut d = Decoder::new(deflate);
            let e = decode_all(&mut d, &wire).unwrap_err();
            assert!(e.to_string().contains(want), "{e} should say {want:?}");
        }
        // Too big, refused from the header alone.
        let mut d = Decoder::new(false);
        let mut header = vec![0x81, 127];
        header.extend(((MAX_MESSAGE + 1) as u64).to_be_bytes());
        assert_eq!(d.decode(&header), Err(WsError::TooBig));
    }

    #[test]
    fn close_frames_carry_code_and_reason() {
        let mut payload = 3500u16.to_be_bytes().to_vec();
        payload.extend(b"invalid token");
        let mut d = Decoder::new(false);
        assert_eq!(
            decode_all(&mut d, &server_frame(0x88, &payload)).unwrap(),
            vec![Incoming::Close {
                code: Some(3500),
                reason: "invalid token".into()
            }]
        );
        assert_eq!(
            decode_all(&mut d, &server_frame(0x88, b"")).unwrap(),
            vec![Incoming::Close {
                code: None,
                reason: String::new()
            }]
        );
    }

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn response(extra: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo={extra}"
        )
    }

    #[test]
    fn the_upgrade_request_offers_deflate_when_asked() {
        let r = upgrade_request(
            "/connection/websocket?x=1",
            "127.0.0.1:8000",
            KEY,
            true,
            None,
        );
        assert!(r.starts_with("GET /connection/websocket?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"));
        assert!(r.contains("\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
        assert!(r.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        assert!(r.contains(
            "\r\nSec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; \
             server_no_context_takeover\r\n"
        ));
        assert!(r.ends_with("\r\n\r\n"));
        assert!(!upgrade_request("/", "h", KEY, false, None).contains("Extensions"));
        assert_eq!(
            request_target("ws://127.0.0.1:9/a/b?c").unwrap(),
            ("/a/b?c".into(), "127.0.0.1:9".into())
        );
        assert_eq!(
            request_target("ws://localhost").unwrap(),
            ("/".into(), "localhost".into())
        );
    }

    #[test]
    fn responses_are_checked() {
        assert_eq!(check_response(&response(""), KEY, false, None), Ok(false));
        let deflate = "\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover";
        assert_eq!(
            check_response(&response(deflate), KEY, true, None),
            Ok(true)
        );
        assert_eq!(
            check_response(
                &response("\r\nsec-websocket-extensions: permessage-deflate;server_no_context_takeover;server_max_window_bits=10"),
                KEY,
                true,
                None
            ),
            Ok(true)
        );
        let e = check_response(
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0",
            KEY,
            false,
            None,
        );
        assert_eq!(e, Err(HandshakeError::Status("HTTP 404 Not Found".into())));
        let wrong = response("").replace("s3pP", "AAAA");
        assert!(
            matches!(check_response(&wrong, KEY, false, None), Err(HandshakeError::Invalid(e)) if e.contains("Sec-WebSocket-Accept"))
        );
        let no_upgrade = response("").replace("upgrade: WebSocket\r\n", "");
        assert!(
            matches!(check_response(&no_upgrade, KEY, false, None), Err(HandshakeError::Invalid(e)) if e.contains("Upgrade"))
        );
        assert!(matches!(
            check_response("SSH-2.0", KEY, false, None),
            Err(HandshakeError::Invalid(_))
        ));
        // Offered, not accepted: the error names the missing header.
        let Err(HandshakeError::Compression(e)) = check_response(&response(""), KEY, true, None)
        else {
            panic!()
        };
        assert!(e.contains("no Sec-WebSocket-Extensions header"), "{e}");
        // Accepted with context takeover on the server side: not what this client inflates.
        let Err(HandshakeError::Compression(e)) = check_response(
            &response(
                "\r\nSec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover",
            ),
            KEY,
            true,
            None,
        ) else {
            panic!()
        };
        assert!(e.contains("server_no_context_takeover"), "{e}");
        for bad in [
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=16",
            "permessage-deflate; server_no_context_takeover; whatever",
            "x-webkit-deflate-frame",
            "permessage-deflate; server_no_context_takeover, permessage-deflate; server_no_context_takeover",
        ] {
            let r = response(&format!("\r\nSec-WebSocket-Extensions: {bad}"));
            assert!(matches!(check_response(&r, KEY, true, None), Err(HandshakeError::Compression(_))), "{bad}");
        }
        // Not offered, yet answered.
        assert!(matches!(
            check_response(&response(deflate), KEY, false, None),
            Err(HandshakeError::Invalid(_))
        ));
    }

    #[test]
    fn a_subprotocol_offered_must_be_chosen() {
        const PB: &str = "centrifuge-protobuf";
        let r = upgrade_request("/c", "h", KEY, false, Some(PB));
        assert!(
            r.contains("\r\nSec-WebSocket-Protocol: centrifuge-protobuf\r\n"),
            "{r}"
        );
        assert!(!upgrade_request("/c", "h", KEY, false, None).contains("Protocol"));
        let chosen = response("\r\nSec-WebSocket-Protocol: centrifuge-protobuf");
        assert_eq!(check_response(&chosen, KEY, false, Some(PB)), Ok(false));
        // With permessage-deflate as well.
        let both = response(
            "\r\nsec-websocket-protocol: centrifuge-protobuf\r\nSec-WebSocket-Extensions: \
             permessage-deflate; server_no_context_takeover",
        );
        assert_eq!(check_response(&both, KEY, true, Some(PB)), Ok(true));
        // Offered, not chosen: a server of the JSON flavour only.
        let Err(HandshakeError::Subprotocol(e)) =
            check_response(&response(""), KEY, false, Some(PB))
        else {
            panic!()
        };
        assert!(
            e.contains("did not accept subprotocol centrifuge-protobuf")
                && e.contains("no Sec-WebSocket-Protocol header"),
            "{e}"
        );
        let json = response("\r\nSec-WebSocket-Protocol: centrifuge-json");
        let Err(HandshakeError::Subprotocol(e)) = check_response(&json, KEY, false, Some(PB))
        else {
            panic!()
        };
        assert!(e.contains("centrifuge-json"), "{e}");
        // Not offered, yet chosen.
        assert!(matches!(
            check_response(&chosen, KEY, false, None),
            Err(HandshakeError::Invalid(e)) if e.contains("not offered")
        ));
    }

    #[test]
    fn data_frame_bytes_are_counted_with_their_headers() {
        let mut d = Decoder::new(false);
        let mut wire = server_frame(0x82, &[0u8; 200]); // 4-byte header
        wire.extend(server_frame(0x89, b"ping")); // control: not counted
        wire.extend(server_frame(0x01, b"ab")); // a fragmented text message
        wire.extend(server_frame(0x80, b"c"));
        assert_eq!(decode_all(&mut d, &wire).unwrap().len(), 3);
        assert_eq!(d.data_bytes, 204 + 4 + 3);
    }

    /// A fake server on loopback: checks the upgrade, answers with deflate on, sends a ping,
    /// a compressed message split over reads, and a close; the client answers the ping with a
    /// masked pong and echoes the close.
    #[tokio::test]
    async fn a_session_against_a_fake_server() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            let mut b = [0u8; 1024];
            while !req.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut b).await.unwrap();
                assert!(n > 0);
                req.extend_from_slice(&b[..n]);
            }
            let req = String::from_utf8(req).unwrap();
            assert!(req.contains(DEFLATE_OFFER), "{req}");
            let key = req
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap()
                .trim()
                .to_owned();
            assert_eq!(STANDARD.decode(&key).unwrap().len(), 16);
            let mut out = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Extensions: permessage-deflate; \
                 server_no_context_takeover; client_no_context_takeover\r\n\r\n",
                accept_key(&key)
            )
            .into_bytes();
            // A ping right behind the head, in the same write.
            out.extend(server_frame(0x89, b"hb"));
            s.write_all(&out).await.unwrap();
            let big = format!("{{\"pad\":\"{}\"}}", "z".repeat(100_000));
            let frame = server_frame(0xC1, &deflate(big.as_bytes()));
            let (a, b2) = frame.split_at(3);
            s.write_all(a).await.unwrap();
            s.flush().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            s.write_all(b2).await.unwrap();
            // The pong: masked, payload echoed.
            let mut pong = [0u8; 8];
            s.read_exact(&mut pong).await.unwrap();
            assert_eq!(pong[..2], [0x8A, 0x82]);
            let mut p = pong[6..].to_vec();
            apply_mask(&mut p, [pong[2], pong[3], pong[4], pong[5]]);
            assert_eq!(p, b"hb");
            let mut close = 3000u16.to_be_bytes().to_vec();
            close.extend(b"bye");
            s.write_all(&server_frame(0x88, &close)).await.unwrap();
            let mut echo = [0u8; 8];
            s.read_exact(&mut echo).await.unwrap();
            assert_eq!(echo[..2], [0x88, 0x82]);
            let mut c = echo[6..].to_vec();
            apply_mask(&mut c, [echo[2], echo[3], echo[4], echo[5]]);
            assert_eq!(c, 3000u16.to_be_bytes());
            big
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let url = format!("ws://{addr}/connection/websocket");
        let mut ws = WebSocket::connect(tcp, &url, true, None).await.unwrap();
        assert!(ws.deflate());
        let Some(Incoming::Text(got)) = ws.recv().await.unwrap() else {
            panic!()
        };
        assert_eq!(ws.inflated(), 1);
        assert_eq!(
            ws.recv().await.unwrap(),
            Some(Incoming::Close {
                code: Some(3000),
                reason: "bye".into()
            })
        );
        let big = server.await.unwrap();
        assert_eq!(got, big);
        assert!(ws.rbuf.capacity() <= KEEP_READ && ws.wbuf.capacity() <= KEEP_WRITE);
    }

    #[tokio::test]
    async fn a_server_without_deflate_is_named() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            let mut b = [0u8; 1024];
            while !req.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut b).await.unwrap();
                req.extend_from_slice(&b[..n]);
            }
            let req = String::from_utf8(req).unwrap();
            let key = req
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap()
                .trim()
                .to_owned();
            let head = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\n\r\n",
                accept_key(&key)
            );
            s.write_all(head.as_bytes()).await.unwrap();
            let _ = s.read(&mut b).await;
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let e = WebSocket::connect(tcp, &format!("ws://{addr}/"), true, None)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, HandshakeError::Compression(m) if m.contains("Sec-WebSocket-Extensions")),
            "{e}"
        );
    }
}
