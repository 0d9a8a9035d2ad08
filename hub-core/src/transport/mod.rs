//! The WebSocket transport: upgrades an HTTP request (hyper 1 / axum) and runs the
//! connection's task over our own sans-IO framing ([`frame`]) and permessage-deflate
//! ([`deflate`]). No WebSocket library type appears in the public API.
//!
//! Memory is the design constraint: an idle connection holds no read or write buffer.
//! Reads go through a buffer on the stack of one poll; writes build a buffer for one flush
//! and free it.

pub(crate) mod deflate;
pub(crate) mod frame;

use std::collections::VecDeque;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use base64::Engine as _;
use bytes::BytesMut;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tracing::{debug, Instrument};

use self::frame::{Decoder, FrameError, Incoming, OpCode};
use crate::client::Client;
use crate::codec::Codec;
use crate::error::Disconnect;
use crate::handler::TransportInfo;
use crate::node::Node;
use crate::outbox::{ClientShared, Frame};

/// Most replies joined into one frame.
const MAX_MESSAGES_IN_FRAME: usize = 128;

/// Bytes read from the socket in one go (a stack buffer, not held between reads).
const READ_CHUNK: usize = 8192;

/// The close sent for a broken WebSocket framing.
const PROTOCOL_ERROR: Disconnect = Disconnect {
    code: 1002,
    reason: std::borrow::Cow::Borrowed("protocol error"),
};

/// The close sent for a compressed message that does not inflate.
const INVALID_PAYLOAD: Disconnect = Disconnect {
    code: 1007,
    reason: std::borrow::Cow::Borrowed("invalid payload"),
};

/// `Sec-WebSocket-Accept` for a key (RFC 6455 §4.2.2).
fn accept_key(key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key);
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

fn plain(status: StatusCode, text: &str) -> Response<String> {
    let mut r = Response::new(text.to_owned());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Whether `origin` may connect, given the allowed patterns and the request's host.
pub(crate) fn origin_allowed(allowed: &[String], origin: Option<&str>, host: Option<&str>) -> bool {
    let Some(origin) = origin else { return true };
    let origin = origin.to_ascii_lowercase();
    if allowed.is_empty() {
        let origin_host = origin.split("://").nth(1).unwrap_or("");
        return host.is_some_and(|h| h.eq_ignore_ascii_case(origin_host));
    }
    allowed
        .iter()
        .any(|p| glob_match(&p.to_ascii_lowercase(), &origin))
}

/// `*` matches any run of characters.
fn glob_match(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

impl Node {
    /// Upgrades an HTTP request to a WebSocket connection served by this node, and returns
    /// the response to send (101, or a 4xx/5xx with a plain-text reason). Works with any
    /// request body type, so axum and plain hyper handlers can call it; the connection
    /// itself runs on a spawned task.
    pub fn accept_websocket<B>(
        &self,
        mut req: Request<B>,
        remote_addr: Option<SocketAddr>,
    ) -> Response<String> {
        if req.method() != Method::GET {
            return plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "websocket upgrade needs GET",
            );
        }
        let headers = req.headers();
        if !header_has_token(headers, header::CONNECTION, "upgrade")
            || !header_has_token(headers, header::UPGRADE, "websocket")
        {
            return plain(StatusCode::BAD_REQUEST, "not a websocket upgrade request");
        }
        if headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(|v| v.as_bytes())
            != Some(b"13")
        {
            return plain(
                StatusCode::BAD_REQUEST,
                "unsupported websocket version (need 13)",
            );
        }
        let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
            return plain(StatusCode::BAD_REQUEST, "missing sec-websocket-key");
        };
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        if !origin_allowed(&self.config().allowed_origins, origin, host) {
            return plain(StatusCode::FORBIDDEN, "origin not allowed");
        }
        if self.is_shutting_down() {
            let mut r = plain(StatusCode::SERVICE_UNAVAILABLE, "node is shutting down");
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
        let permit = match self.inner.gate.admit(remote_addr.map(|a| a.ip())) {
            Ok(p) => p,
            Err(refusal) => {
                let status =
                    StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                let mut r = plain(status, refusal.reason);
                if let Ok(v) = HeaderValue::from_str(&refusal.retry_after.to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                return r;
            }
        };
        let protocols: Vec<String> = headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(',').map(|p| p.trim().to_owned()))
            .collect();
        let wants_protobuf = req.uri().query().is_some_and(|q| {
            q.split('&')
                .any(|kv| kv == "format=protobuf" || kv == "cf_protocol=protobuf")
        }) || (protocols.iter().any(|p| p == "centrifuge-protobuf")
            && !protocols.iter().any(|p| p == "centrifuge-json"));
        let codec = if wants_protobuf {
            Codec::Protobuf
        } else {
            Codec::Json
        };
        let accept = accept_key(key.as_bytes());
        let deflate = self.config().compression.enabled
            && deflate::accepts_offer(
                headers
                    .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            );
        let info = TransportInfo {
            path: req.uri().path().to_owned(),
            query: req.uri().query().map(str::to_owned),
            headers: req.headers().clone(),
            remote_addr,
        };
        let on_upgrade = hyper::upgrade::on(&mut req);
        let node = self.clone();
        tokio::spawn(async move {
            // The socket holds its place among the node's connections until it closes.
            let _permit = permit;
            match on_upgrade.await {
                Ok(upgraded) => {
                    let io = TokioIo::new(upgraded);
                    serve(node, io, info, deflate, codec).await;
                }
                Err(e) => debug!(error = %e, "websocket upgrade failed"),
            }
        });
        let mut r = Response::new(String::new());
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(v) = HeaderValue::from_str(&accept) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        if deflate {
            h.insert(
                header::SEC_WEBSOCKET_EXTENSIONS,
                HeaderValue::from_static(deflate::RESPONSE),
            );
        }
        // Answer with the subprotocol the client asked for (a browser fails the handshake
        // on an answer it did not offer, and on none when it offered one).
        let chosen = match codec {
            Codec::Protobuf => "centrifuge-protobuf",
            Codec::Json => "centrifuge-json",
        };
        if protocols.iter().any(|p| p == chosen) {
            h.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(chosen),
            );
        }
        r
    }
}

/// Runs one connection until it closes.
async fn serve<S>(node: Node, io: S, info: TransportInfo, deflate: bool, codec: Codec)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let id: Arc<str> = Arc::from(uuid::Uuid::new_v4().to_string());
    let span = tracing::debug_span!("conn", client = %id);
    Connection {
        io,
        decoder: Decoder::new(node.config().max_message_size, deflate),
        deflate,
        codec,
        node,
    }
    .run(id, info)
    .instrument(span)
    .await;
}

/// One WebSocket connection: the socket and the framing state.
struct Connection<S> {
    io: S,
    decoder: Decoder,
    deflate: bool,
    codec: Codec,
    node: Node,
}

/// What a read brought.
enum Read {
    /// Whole messages (possibly none yet).
    Messages(Vec<Incoming>),
    /// The peer closed the socket, or it failed.
    Eof,
}

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Reads what the socket has into the decoder. The read buffer lives on the stack of one
    /// poll only, so a connection waiting for data holds none.
    async fn read(&mut self) -> Result<Read, FrameError> {
        let io = &mut self.io;
        let decoder = &mut self.decoder;
        let received = &self.node.inner.counters.bytes_received;
        poll_fn(|cx| {
            // Uninitialised: a poll that finds no data costs no zeroing.
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut rb = ReadBuf::uninit(&mut buf);
            match Pin::new(&mut *io).poll_read(cx, &mut rb) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(e)) => {
                    debug!(error = %e, "socket read failed");
                    Poll::Ready(Ok(Read::Eof))
                }
                Poll::Ready(Ok(())) if rb.filled().is_empty() => Poll::Ready(Ok(Read::Eof)),
                Poll::Ready(Ok(())) => {
                    received.increment(rb.filled().len() as u64);
                    let mut out = Vec::new();
                    let r = decoder.feed(rb.filled(), |m| out.push(m));
                    Poll::Ready(r.map(|()| Read::Messages(out)))
                }
            }
        })
        .await
    }

    /// Encodes queued replies into one buffer: joined by `\n` into few frames for plain
    /// connections; one frame each for compressed ones, so that a publication compressed
    /// once serves every subscriber.
    fn encode(&self, items: VecDeque<Frame>) -> BytesMut {
        let mut out = BytesMut::new();
        let op = self.codec.opcode();
        let cfg = &self.node.config().compression;
        if self.deflate {
            for item in items {
                if item.data.len() >= cfg.min_size {
                    let z = item
                        .deflated
                        .unwrap_or_else(|| deflate::compress(&item.data, cfg.level));
                    frame::encode(&mut out, op, true, &z);
                } else {
                    frame::encode(&mut out, op, false, &item.data);
                }
            }
            return out;
        }
        let items: Vec<Frame> = items.into();
        for chunk in items.chunks(MAX_MESSAGES_IN_FRAME) {
            if let [one] = chunk {
                frame::encode(&mut out, op, false, &one.data);
            } else {
                let joined = self.codec.join(chunk.iter().map(|f| &f.data));
                frame::encode(&mut out, op, false, &joined);
            }
        }
        out
    }

    async fn write_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await?;
        self.node
            .inner
            .counters
            .bytes_sent
            .increment(bytes.len() as u64);
        Ok(())
    }

    /// Writes queued replies, unless the connection is cut meanwhile: a reader so slow that
    /// its queue overflows (3008) does not hold its task (and memory) for the whole write
    /// timeout.
    async fn write(
        &mut self,
        shared: &ClientShared,
        items: VecDeque<Frame>,
    ) -> Result<(), Disconnect> {
        let n = items.len() as u64;
        let buf = self.encode(items);
        // Fast path: a socket with room takes the whole buffer in one write, with no timer
        // and no allocation beyond the buffer.
        let io = &mut self.io;
        let first = poll_fn(|cx| Poll::Ready(Pin::new(&mut *io).poll_write(cx, &buf))).await;
        let written = match first {
            Poll::Ready(Ok(w)) => w,
            Poll::Ready(Err(_)) => return Err(Disconnect::WRITE_ERROR),
            Poll::Pending => 0,
        };
        // The bytes the socket took now; write_slow counts the rest as write_bytes takes it.
        let counters = &self.node.inner.counters;
        counters.bytes_sent.increment(written as u64);
        if written == buf.len() {
            counters.messages_sent.increment(n);
            return Ok(());
        }
        let r = Box::pin(self.write_slow(shared, &buf[written..])).await;
        if r.is_ok() {
            self.node.inner.counters.messages_sent.increment(n);
        }
        r
    }

    /// The rest of a write the socket could not take at once: with the write timeout, and
    /// abandoned if the reader turns out to be too slow.
    async fn write_slow(&mut self, shared: &ClientShared, buf: &[u8]) -> Result<(), Disconnect> {
        let timeout = self.node.config().write_timeout;
        let write = tokio::time::timeout(timeout, self.write_bytes(buf));
        tokio::pin!(write);
        let mut woken = false;
        let r = loop {
            tokio::select! {
                r = &mut write => break match r {
                    Ok(Ok(())) => Ok(()),
                    _ => Err(Disconnect::WRITE_ERROR),
                },
                _ = shared.notify.notified() => {
                    woken = true;
                    if let Some(d) = shared.closing().filter(|d| *d == Disconnect::SLOW) {
                        break Err(d);
                    }
                }
            }
        };
        if woken {
            // The wake-up was for the main loop (new frames or controls): pass it on.
            shared.notify.notify_one();
        }
        r
    }

    /// Best-effort write of what is still queued, before a close.
    async fn write_remaining(&mut self, shared: &ClientShared) {
        let (items, _, _) = shared.take();
        if !items.is_empty() {
            let _ = self.write(shared, items).await;
        }
    }

    /// Handles whole messages from the client, in order.
    async fn on_messages(
        &mut self,
        client: &mut Client,
        messages: Vec<Incoming>,
    ) -> Result<(), Disconnect> {
        for m in messages {
            let binary = matches!(m, Incoming::Binary { .. });
            match m {
                Incoming::Text {
                    payload,
                    compressed,
                }
                | Incoming::Binary {
                    payload,
                    compressed,
                } => {
                    // Each flavour in its own frame type: text for JSON, binary for
                    // Protobuf (PROTOCOL.md §1.8); the other is refused with 3506.
                    if binary != (self.codec == Codec::Protobuf) {
                        return Err(Disconnect::INAPPROPRIATE_PROTOCOL);
                    }
                    let payload = if compressed {
                        let max = self.node.config().max_message_size;
                        match deflate::decompress(&payload, max) {
                            Ok(p) => p,
                            Err(deflate::InflateError::TooBig) => {
                                return Err(Disconnect::MESSAGE_TOO_BIG)
                            }
                            Err(deflate::InflateError::Invalid) => return Err(INVALID_PAYLOAD),
                        }
                    } else {
                        payload
                    };
                    if !binary && std::str::from_utf8(&payload).is_err() {
                        return Err(Disconnect::BAD_REQUEST);
                    }
                    self.node.inner.counters.messages_received.increment(1);
                    // Boxed: the command futures are large and rare; the task that waits
                    // on an idle socket should not carry their space.
                    Box::pin(client.handle_frame(&payload)).await?;
                }
                Incoming::Ping(p) => {
                    let mut out = BytesMut::new();
                    frame::encode(&mut out, OpCode::Pong, false, &p);
                    let timeout = self.node.config().write_timeout;
                    if !matches!(
                        tokio::time::timeout(timeout, self.write_bytes(&out)).await,
                        Ok(Ok(()))
                    ) {
                        return Err(Disconnect::WRITE_ERROR);
                    }
                }
                Incoming::Pong => {}
                Incoming::Close(_) => return Err(Disconnect::CONNECTION_CLOSED),
            }
        }
        Ok(())
    }

    async fn run(mut self, id: Arc<str>, info: TransportInfo) {
        let node = self.node.clone();
        let cfg = node.config();
        let shared = Arc::new(ClientShared::new(
            id,
            cfg.max_queue_bytes,
            self.deflate,
            self.codec,
        ));
        let mut client = Client::new(node.clone(), shared.clone(), info);
        let mut peer_closed = false;
        let mut write_failed = false;
        // One timer for the connection's life, moved only when its deadline changes (not
        // re-registered on every wake-up).
        let timer =
            tokio::time::sleep_until(tokio::time::Instant::from_std(client.next_deadline()));
        tokio::pin!(timer);
        // Whether the client's deadlines may have moved (not after a plain delivery).
        let mut rearm = false;
        let disconnect = loop {
            if rearm {
                let deadline = tokio::time::Instant::from_std(client.next_deadline());
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
            }
            // Unbiased: under a flood of deliveries the socket's reads (pongs, commands) still
            // get their turn, and a chatty client does not starve its deliveries.
            tokio::select! {
                _ = shared.notify.notified() => {
                    let (items, close, controls) = shared.take();
                    let mut stop = close;
                    rearm = !controls.is_empty();
                    for c in controls {
                        if stop.is_some() { break; }
                        if let Err(d) = Box::pin(client.handle_control(c)).await { stop = Some(d); }
                    }
                    if !items.is_empty() {
                        if let Err(d) = self.write(&shared, items).await {
                            write_failed = true;
                            break d;
                        }
                    }
                    if let Some(d) = stop {
                        // Whatever was queued before the close still goes out.
                        Box::pin(self.write_remaining(&shared)).await;
                        break d;
                    }
                }
                r = self.read() => match r {
                    Ok(Read::Messages(m)) => {
                        rearm = true;
                        if let Err(d) = Box::pin(self.on_messages(&mut client, m)).await {
                            peer_closed = d == Disconnect::CONNECTION_CLOSED;
                            Box::pin(self.write_remaining(&shared)).await;
                            break d;
                        }
                    }
                    Ok(Read::Eof) => {
                        peer_closed = true;
                        write_failed = true;
                        break Disconnect::CONNECTION_CLOSED;
                    }
                    Err(FrameError::TooBig) => break Disconnect::MESSAGE_TOO_BIG,
                    Err(FrameError::Protocol(why)) => {
                        debug!(why, "websocket protocol error");
                        break PROTOCOL_ERROR;
                    }
                },
                _ = &mut timer => {
                    rearm = true;
                    if let Err(d) = Box::pin(client.on_timer()).await {
                        break d;
                    }
                }
            }
        };
        debug!(code = disconnect.code, reason = %disconnect.reason, "closing");
        Box::pin(client.close(&disconnect)).await;
        drop(client);
        if write_failed {
            return;
        }
        // Answer the peer's close, or send ours (with its code and reason).
        let (code, reason) = if peer_closed {
            (1000, "")
        } else {
            (disconnect.code, &*disconnect.reason)
        };
        let close = frame::close_frame(code, reason);
        let _ = Box::pin(tokio::time::timeout(Duration::from_secs(1), async {
            if self.write_bytes(&close).await.is_ok() && !peer_closed {
                // Wait briefly for the peer's close so the handshake completes.
                while let Ok(Read::Messages(m)) = self.read().await {
                    if m.iter().any(|m| matches!(m, Incoming::Close(_))) {
                        break;
                    }
                }
            }
            let _ = self.io.shutdown().await;
        }))
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_default_to_same_host() {
        assert!(origin_allowed(&[], None, Some("a.com")));
        assert!(origin_allowed(&[], Some("https://a.com"), Some("a.com")));
        assert!(!origin_allowed(
            &[],
            Some("https://evil.com"),
            Some("a.com")
        ));
    }

    #[test]
    fn origin_patterns() {
        let allowed = vec![
            "https://*.example.com".to_owned(),
            "http://localhost:3000".to_owned(),
        ];
        assert!(origin_allowed(
            &allowed,
            Some("https://app.example.com"),
            None
        ));
        assert!(origin_allowed(
            &allowed,
            Some("http://localhost:3000"),
            None
        ));
        assert!(!origin_allowed(&allowed, Some("https://example.org"), None));
        assert!(origin_allowed(&["*".to_owned()], Some("https://x.y"), None));
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    /// Density guard: the task an idle connection parks is one allocation of about this
    /// size; the large command futures are boxed only while a command runs.
    #[tokio::test]
    async fn an_idle_connection_task_stays_small() {
        let node = Node::builder().start().await.unwrap();
        let (a, _b) = tokio::io::duplex(64);
        let conn = Connection {
            io: a,
            decoder: Decoder::new(65536, false),
            deflate: false,
            codec: Codec::Json,
            node: node.clone(),
        };
        let fut = conn.run(Arc::from("x"), TransportInfo::default());
        let shared = Arc::new(ClientShared::new("x".into(), 1, false, Codec::Json));
        let client = Client::new(node.clone(), shared, TransportInfo::default());
        eprintln!(
            "connection task future: {} bytes; client state: {} bytes; shared half: {} bytes",
            std::mem::size_of_val(&fut),
            std::mem::size_of_val(&client),
            std::mem::size_of::<ClientShared>()
        );
        assert!(
            std::mem::size_of_val(&fut) <= 1280,
            "{}",
            std::mem::size_of_val(&fut)
        );
        assert!(std::mem::size_of_val(&client) <= 384);
    }
}
