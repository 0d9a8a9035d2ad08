//! The WebSocket transport: upgrades an HTTP request (hyper 1 / axum) and runs the
//! connection's task. The WebSocket library stays behind this module.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, Instrument};

use crate::client::Client;
use crate::error::Disconnect;
use crate::handler::TransportInfo;
use crate::node::Node;
use crate::outbox::ClientShared;
use crate::protocol::json::join_frame;

/// Most replies joined into one frame.
const MAX_MESSAGES_IN_FRAME: usize = 128;

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
        if wants_protobuf {
            return plain(
                StatusCode::BAD_REQUEST,
                "the protobuf flavour is not supported by this server yet; use JSON",
            );
        }
        let accept = derive_accept_key(key.as_bytes());
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
                    serve(node, io, info).await;
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
        if protocols.iter().any(|p| p == "centrifuge-json") {
            h.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static("centrifuge-json"),
            );
        }
        r
    }
}

fn ws_config(node: &Node) -> WebSocketConfig {
    let max = node.config().max_message_size;
    WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// Runs one connection until it closes.
async fn serve<S>(node: Node, io: S, info: TransportInfo)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config(&node))).await;
    let id: Arc<str> = Arc::from(uuid::Uuid::new_v4().to_string());
    let span = tracing::debug_span!("conn", client = %id);
    run(node, ws, id, info).instrument(span).await;
}

async fn write_frames<S>(
    ws: &mut WebSocketStream<S>,
    items: std::collections::VecDeque<Bytes>,
) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let items: Vec<Bytes> = items.into();
    for chunk in items.chunks(MAX_MESSAGES_IN_FRAME) {
        let frame = if chunk.len() == 1 {
            chunk[0].clone()
        } else {
            join_frame(chunk)
        };
        // Replies are built from JSON text, so they are UTF-8.
        let text = Utf8Bytes::try_from(frame).map_err(|_| WsError::Utf8(String::new()))?;
        ws.feed(Message::Text(text)).await?;
    }
    metrics::counter!("hub_messages_sent_total").increment(items.len() as u64);
    ws.flush().await
}

/// Writes queued frames, unless the connection is cut meanwhile: a reader so slow that its
/// queue overflows (3008) does not hold its task (and its memory) for the whole write
/// timeout.
async fn write_or_abort<S>(
    ws: &mut WebSocketStream<S>,
    shared: &ClientShared,
    items: std::collections::VecDeque<Bytes>,
    timeout: Duration,
) -> Result<(), Disconnect>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let write = tokio::time::timeout(timeout, write_frames(ws, items));
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

async fn run<S>(node: Node, mut ws: WebSocketStream<S>, id: Arc<str>, info: TransportInfo)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let cfg = node.config().clone();
    let shared = Arc::new(ClientShared::new(id, cfg.max_queue_bytes));
    let mut client = Client::new(node.clone(), shared.clone(), info);
    let mut write_failed = false;
    let disconnect = loop {
        let deadline = tokio::time::Instant::from_std(client.next_deadline());
        tokio::select! {
            biased;
            _ = shared.notify.notified() => {
                let (items, close, controls) = shared.take();
                let mut stop = close;
                for c in controls {
                    if stop.is_some() { break; }
                    if let Err(d) = client.handle_control(c).await { stop = Some(d); }
                }
                if !items.is_empty() {
                    if let Err(d) = write_or_abort(&mut ws, &shared, items, cfg.write_timeout).await {
                        write_failed = true;
                        break d;
                    }
                }
                if let Some(d) = stop {
                    // Whatever was queued before the close still goes out.
                    let (items, _, _) = shared.take();
                    if !items.is_empty() {
                        let _ = tokio::time::timeout(cfg.write_timeout, write_frames(&mut ws, items)).await;
                    }
                    break d;
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    metrics::counter!("hub_messages_received_total").increment(1);
                    if let Err(d) = client.handle_frame(t.as_bytes()).await {
                        let (items, _, _) = shared.take();
                        if !items.is_empty() {
                            let _ = tokio::time::timeout(cfg.write_timeout, write_frames(&mut ws, items)).await;
                        }
                        break d;
                    }
                }
                Some(Ok(Message::Binary(_))) => break Disconnect::INAPPROPRIATE_PROTOCOL,
                Some(Ok(Message::Ping(_))) => {
                    // tungstenite queued the pong; send it now.
                    let _ = tokio::time::timeout(cfg.write_timeout, ws.flush()).await;
                }
                Some(Ok(Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => break Disconnect::CONNECTION_CLOSED,
                Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                    break Disconnect::MESSAGE_TOO_BIG
                }
                Some(Err(WsError::Utf8(_))) => break Disconnect::BAD_REQUEST,
                Some(Err(e)) => {
                    debug!(error = %e, "websocket read failed");
                    write_failed = true;
                    break Disconnect::CONNECTION_CLOSED;
                }
            },
            _ = tokio::time::sleep_until(deadline) => {
                if let Err(d) = client.on_timer().await {
                    break d;
                }
            }
        }
    };
    debug!(code = disconnect.code, reason = %disconnect.reason, "closing");
    client.close(&disconnect).await;
    if write_failed || disconnect.code == Disconnect::CONNECTION_CLOSED.code {
        return;
    }
    let frame = CloseFrame {
        code: CloseCode::from(disconnect.code),
        reason: Utf8Bytes::from(disconnect.reason.to_string()),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        if ws.close(Some(frame)).await.is_ok() {
            // Wait briefly for the peer's close so the handshake completes.
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
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
