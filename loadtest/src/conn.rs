//! One client-protocol connection: TCP, WebSocket handshake (offering permessage-deflate with
//! `--compression`), `connect` and `subscribe` sent in one frame (as centrifuge-js does), then
//! a receive loop that answers server pings (`{}` with `{}`) and hands each publication's
//! `data` to a [`PubSink`].

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

use crate::target::WsTarget;
use crate::ws::{HandshakeError, Incoming, WebSocket, WsError};

/// Why a connection could not be opened (connected and subscribed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConnError {
    /// Nothing listens at the address.
    Refused {
        /// The address dialled.
        addr: SocketAddr,
        /// The URL it came from.
        url: String,
    },
    /// Another TCP-level error.
    Io(String),
    /// The server answered the upgrade with something other than 101.
    Handshake {
        /// The URL.
        url: String,
        /// What went wrong (`HTTP 404 Not Found`, ...).
        detail: String,
    },
    /// `--compression` was given and the server did not accept permessage-deflate.
    NoCompression {
        /// The URL.
        url: String,
        /// What the response lacked.
        detail: String,
    },
    /// The server closed with 3500 "invalid token".
    TokenRejected,
    /// The server closed the connection during `stage` with a close frame (or none).
    Closed {
        /// Where in the opening sequence.
        stage: &'static str,
        /// The close code, if a close frame came.
        code: Option<u16>,
        /// The close reason.
        reason: String,
    },
    /// The connect command got an error reply.
    ConnectError {
        /// Error code.
        code: u32,
        /// Error message.
        message: String,
    },
    /// A subscribe command got an error reply.
    SubscribeError {
        /// The channel.
        channel: String,
        /// Error code.
        code: u32,
        /// Error message.
        message: String,
    },
    /// The server sent something the protocol does not allow.
    Protocol(String),
    /// No answer within the connect timeout.
    Timeout {
        /// Where in the opening sequence.
        stage: &'static str,
        /// The timeout.
        after: Duration,
    },
}

impl ConnError {
    /// A short label to group failures by in a report.
    pub(crate) fn kind(&self) -> String {
        match self {
            ConnError::Refused { .. } => "connection refused".into(),
            ConnError::Io(_) => "io error".into(),
            ConnError::Handshake { detail, .. } => format!("handshake: {detail}"),
            ConnError::NoCompression { .. } => "permessage-deflate not accepted".into(),
            ConnError::TokenRejected => "token rejected (3500)".into(),
            ConnError::Closed { stage, code, .. } => match code {
                Some(c) => format!("closed with {c} during {stage}"),
                None => format!("closed during {stage}"),
            },
            ConnError::ConnectError { code, .. } => format!("connect error {code}"),
            ConnError::SubscribeError { code, .. } => format!("subscribe error {code}"),
            ConnError::Protocol(_) => "protocol error".into(),
            ConnError::Timeout { stage, .. } => format!("timeout during {stage}"),
        }
    }
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Refused { addr, url } => write!(
                f,
                "connection refused by {addr}: is the hub running at {url}?"
            ),
            ConnError::Io(e) => write!(f, "connection failed: {e}"),
            ConnError::Handshake { url, detail } => {
                write!(f, "WebSocket handshake with {url} failed: {detail}")
            }
            ConnError::NoCompression { url, detail } => write!(
                f,
                "--compression: {detail} ({url}); enable it in the server's config: \
                 \"websocket\": {{\"compression\": true}}"
            ),
            ConnError::TokenRejected => write!(
                f,
                "token rejected: check --secret (the server closed with 3500 invalid token)"
            ),
            ConnError::Closed {
                stage,
                code: Some(code),
                reason,
            } => write!(
                f,
                "the server closed the connection during {stage} with {code} {reason:?}"
            ),
            ConnError::Closed { stage, .. } => {
                write!(f, "the server closed the connection during {stage}")
            }
            ConnError::ConnectError { code, message } => {
                write!(f, "connect refused: error {code} {message:?}")?;
                if matches!(code, 101 | 109) {
                    write!(f, "; token rejected: check --secret")?;
                }
                Ok(())
            }
            ConnError::SubscribeError {
                channel,
                code,
                message,
            } => {
                write!(
                    f,
                    "subscribe to {channel:?} refused: error {code} {message:?}"
                )?;
                if matches!(code, 102 | 103) {
                    write!(
                        f,
                        "; does the server's channel config allow clients to subscribe \
                         (allow_subscribe_for_client)?"
                    )?;
                }
                Ok(())
            }
            ConnError::Protocol(e) => write!(f, "protocol error: {e}"),
            ConnError::Timeout { stage, after } => {
                write!(f, "no answer during {stage} within {after:?}")
            }
        }
    }
}

/// Where publications go.
pub(crate) trait PubSink: Send + Sync + 'static {
    /// Publication `data` received by connection `conn`.
    fn publication(&self, conn: usize, data: &RawValue);
}

/// A sink that ignores publications.
#[derive(Debug)]
pub(crate) struct Ignore;

impl PubSink for Ignore {
    fn publication(&self, _conn: usize, _data: &RawValue) {}
}

/// The parts of a server reply the load client reads.
#[derive(Debug, Deserialize)]
struct Reply<'a> {
    #[serde(default)]
    id: u32,
    #[serde(default)]
    error: Option<ReplyError>,
    #[serde(default, borrow)]
    push: Option<Push<'a>>,
    #[serde(default)]
    connect: Option<IgnoredAny>,
    #[serde(default)]
    subscribe: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
struct ReplyError {
    #[serde(default)]
    code: u32,
    #[serde(default)]
    message: String,
}

#[derive(Debug, Deserialize)]
struct Push<'a> {
    #[serde(default, borrow, rename = "pub")]
    publication: Option<Publication<'a>>,
    #[serde(default)]
    disconnect: Option<Disconnect>,
}

#[derive(Debug, Deserialize)]
struct Publication<'a> {
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
struct Disconnect {
    #[serde(default)]
    code: u16,
    #[serde(default)]
    reason: String,
}

/// One line of a frame, read.
#[derive(Debug)]
enum Line<'a> {
    /// A server ping (`{}`): answer `{}`.
    Ping,
    /// A reply, a push, or a ping in another spelling.
    Reply(Reply<'a>),
}

/// Splits a text frame into its JSON objects (one per `\n`-separated line).
fn lines(text: &str) -> impl Iterator<Item = Result<Line<'_>, ConnError>> {
    text.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            if l == "{}" {
                return Ok(Line::Ping);
            }
            let r: Reply<'_> = serde_json::from_str(l).map_err(|e| {
                ConnError::Protocol(format!("the server sent invalid JSON ({e}): {l:.200}"))
            })?;
            if r.id == 0 && r.push.is_none() && r.error.is_none() {
                return Ok(Line::Ping);
            }
            Ok(Line::Reply(r))
        })
}

/// The frame that connects and subscribes: `connect` with id 1, then `subscribe` with ids
/// 2, 3, ... one per channel, `\n`-separated.
pub(crate) fn opening_frame(token: &str, channels: &[String]) -> String {
    let mut frame =
        serde_json::json!({"id": 1, "connect": {"token": token, "name": "loadtest"}}).to_string();
    for (i, ch) in channels.iter().enumerate() {
        frame.push('\n');
        frame.push_str(&serde_json::json!({"id": i + 2, "subscribe": {"channel": ch}}).to_string());
    }
    frame
}

/// An open, subscribed connection.
#[derive(Debug)]
pub(crate) struct Session {
    ws: WebSocket,
}

/// How a session's receive loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EndReason {
    /// Asked to stop.
    Stopped,
    /// The server closed it (close frame code, or none).
    Closed(Option<u16>),
    /// A transport or protocol error.
    Failed(String),
}

/// The end of a session.
#[derive(Debug, Clone)]
pub(crate) struct Ended {
    /// Why.
    pub(crate) reason: EndReason,
    /// Server pings answered.
    pub(crate) pings: u64,
    /// Compressed (RSV1) messages received, opening replies included.
    pub(crate) inflated: u64,
}

/// Opens a connection to `target`, offering permessage-deflate if `compression` (and failing
/// if the server does not accept it): connect with `token`, subscribe to `channels`, all
/// within `limit`.
pub(crate) async fn open(
    target: &WsTarget,
    source: Option<IpAddr>,
    token: &str,
    channels: &[String],
    compression: bool,
    limit: Duration,
) -> Result<Session, ConnError> {
    let mut stage = "TCP connect";
    let steps = open_steps(target, source, token, channels, compression, &mut stage);
    match tokio::time::timeout(limit, steps).await {
        Ok(r) => r,
        Err(_) => Err(ConnError::Timeout {
            stage,
            after: limit,
        }),
    }
}

/// A TCP connection to `to`, from `source` (any port) when given.
async fn dial(to: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(ip) = source else {
        return TcpStream::connect(to).await;
    };
    let socket = match ip {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(to).await
}

async fn open_steps(
    target: &WsTarget,
    source: Option<IpAddr>,
    token: &str,
    channels: &[String],
    compression: bool,
    stage: &mut &'static str,
) -> Result<Session, ConnError> {
    let tcp = dial(target.addr, source).await.map_err(|e| {
        // Out of ephemeral ports: connect says EADDRNOTAVAIL, bind to port 0 EADDRINUSE.
        if matches!(
            e.kind(),
            std::io::ErrorKind::AddrNotAvailable | std::io::ErrorKind::AddrInUse
        ) {
            ConnError::Io(format!(
                "{} ({}): no free local port{}: {e}; spread over more --source-addrs",
                target.url,
                target.addr,
                source.map(|s| format!(" on {s}")).unwrap_or_default()
            ))
        } else if e.kind() == std::io::ErrorKind::ConnectionRefused {
            ConnError::Refused {
                addr: target.addr,
                url: target.url.clone(),
            }
        } else {
            ConnError::Io(format!("{} ({}): {e}", target.url, target.addr))
        }
    })?;
    let _ = tcp.set_nodelay(true);
    *stage = "WebSocket handshake";
    let mut ws = WebSocket::connect(tcp, &target.url, compression)
        .await
        .map_err(|e| match e {
            HandshakeError::Compression(detail) => ConnError::NoCompression {
                url: target.url.clone(),
                detail,
            },
            e => ConnError::Handshake {
                url: target.url.clone(),
                detail: e.to_string(),
            },
        })?;
    *stage = "connect";
    ws.send_text(&opening_frame(token, channels))
        .await
        .map_err(ws_error)?;
    // Replies 1 (connect) and 2.. (subscribes) may come in any frames, between pings.
    let mut waiting = channels.len() + 1;
    while waiting > 0 {
        let text = match ws.recv().await {
            Ok(Some(Incoming::Text(t))) => t,
            Ok(Some(Incoming::Close { code, reason })) => {
                if code == Some(3500) {
                    return Err(ConnError::TokenRejected);
                }
                return Err(ConnError::Closed {
                    stage,
                    code,
                    reason,
                });
            }
            Ok(Some(Incoming::Binary(_))) => {
                return Err(ConnError::Protocol(
                    "binary frame from the server; the JSON protocol uses text frames".into(),
                ))
            }
            Ok(Some(Incoming::Ping(_) | Incoming::Pong)) => continue,
            Err(WsError::Io(e)) => {
                return Err(ConnError::Closed {
                    stage,
                    code: None,
                    reason: e,
                })
            }
            Err(e) => return Err(ws_error(e)),
            Ok(None) => {
                return Err(ConnError::Closed {
                    stage,
                    code: None,
                    reason: String::new(),
                })
            }
        };
        let mut ping = false;
        for line in lines(&text) {
            let r = match line? {
                Line::Ping => {
                    ping = true;
                    continue;
                }
                Line::Reply(r) => r,
            };
            if let Some(d) = r.push.as_ref().and_then(|p| p.disconnect.as_ref()) {
                if d.code == 3500 {
                    return Err(ConnError::TokenRejected);
                }
                return Err(ConnError::Closed {
                    stage,
                    code: Some(d.code),
                    reason: d.reason.clone(),
                });
            }
            match r.id {
                0 => {} // a push before we are subscribed: not ours to count
                1 => {
                    if let Some(e) = r.error {
                        return Err(ConnError::ConnectError {
                            code: e.code,
                            message: e.message,
                        });
                    }
                    if r.connect.is_none() {
                        return Err(ConnError::Protocol(
                            "the reply to connect has no connect result".into(),
                        ));
                    }
                    waiting -= 1;
                    *stage = "subscribe";
                }
                id => {
                    let Some(channel) = channels.get(id as usize - 2) else {
                        return Err(ConnError::Protocol(format!(
                            "a reply with id {id}, which no command had"
                        )));
                    };
                    if let Some(e) = r.error {
                        return Err(ConnError::SubscribeError {
                            channel: channel.clone(),
                            code: e.code,
                            message: e.message,
                        });
                    }
                    if r.subscribe.is_none() {
                        return Err(ConnError::Protocol(format!(
                            "the reply to subscribe {channel:?} has no subscribe result"
                        )));
                    }
                    waiting -= 1;
                }
            }
        }
        if ping {
            ws.send_text("{}").await.map_err(ws_error)?;
        }
    }
    Ok(Session { ws })
}

/// A transport or framing error as a connection error.
fn ws_error(e: WsError) -> ConnError {
    match e {
        WsError::Io(e) => ConnError::Io(e),
        e => ConnError::Protocol(e.to_string()),
    }
}

impl Session {
    /// Receives until `stop` turns true or the connection ends: answers pings, passes each
    /// publication's data to `sink` as connection `conn`.
    pub(crate) async fn run(
        mut self,
        conn: usize,
        mut stop: watch::Receiver<bool>,
        sink: &dyn PubSink,
    ) -> Ended {
        let mut pings = 0u64;
        let reason = loop {
            let msg = tokio::select! {
                _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close()).await;
                    break EndReason::Stopped;
                }
                m = self.ws.recv() => m,
            };
            let text = match msg {
                Ok(Some(Incoming::Text(t))) => t,
                Ok(Some(Incoming::Close { code, .. })) => break EndReason::Closed(code),
                Ok(Some(Incoming::Binary(_))) => {
                    break EndReason::Failed("binary frame from the server".into())
                }
                Ok(Some(Incoming::Ping(_) | Incoming::Pong)) => continue,
                Err(e) => break EndReason::Failed(e.to_string()),
                Ok(None) => break EndReason::Closed(None),
            };
            let mut ping = false;
            let mut failed = None;
            for line in lines(&text) {
                match line {
                    Ok(Line::Ping) => ping = true,
                    Ok(Line::Reply(r)) => {
                        let Some(push) = r.push else { continue };
                        if let Some(d) = push.disconnect {
                            failed = Some(EndReason::Closed(Some(d.code)));
                            break;
                        }
                        if let Some(data) = push.publication.and_then(|p| p.data) {
                            sink.publication(conn, data);
                        }
                    }
                    Err(e) => {
                        failed = Some(EndReason::Failed(e.to_string()));
                        break;
                    }
                }
            }
            if let Some(end) = failed {
                break end;
            }
            if ping {
                pings += 1;
                if let Err(e) = self.ws.send_text("{}").await {
                    break EndReason::Failed(e.to_string());
                }
            }
        };
        Ended {
            reason,
            pings,
            inflated: self.ws.inflated(),
        }
    }

    /// Whether permessage-deflate was negotiated.
    pub(crate) fn compressed(&self) -> bool {
        self.ws.deflate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Vec<Line<'_>> {
        lines(text).collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn opening_frame_batches_connect_and_subscribes() {
        let f = opening_frame("tok", &["a".into(), "b\"c".into()]);
        let objs: Vec<serde_json::Value> = f
            .split('\n')
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            objs,
            vec![
                serde_json::json!({"id": 1, "connect": {"token": "tok", "name": "loadtest"}}),
                serde_json::json!({"id": 2, "subscribe": {"channel": "a"}}),
                serde_json::json!({"id": 3, "subscribe": {"channel": "b\"c"}}),
            ]
        );
    }

    #[test]
    fn pings_replies_and_publications_in_one_frame() {
        let text = "{}\n{\"id\":1,\"connect\":{\"client\":\"c\",\"ping\":25,\"pong\":true}}\n\
                    {\"push\":{\"channel\":\"x\",\"pub\":{\"data\":{\"t\":5,\"seq\":1},\"offset\":3}}}\n";
        let l = read(text);
        assert_eq!(l.len(), 3);
        assert!(matches!(l[0], Line::Ping));
        let Line::Reply(r) = &l[1] else { panic!() };
        assert_eq!(r.id, 1);
        assert!(r.connect.is_some());
        let Line::Reply(r) = &l[2] else { panic!() };
        let data = r
            .push
            .as_ref()
            .unwrap()
            .publication
            .as_ref()
            .unwrap()
            .data
            .unwrap();
        assert_eq!(data.get(), "{\"t\":5,\"seq\":1}");
    }

    #[test]
    fn a_reply_with_neither_id_nor_push_is_a_ping() {
        assert!(matches!(read("{ }")[..], [Line::Ping]));
        assert!(matches!(read("{\"unknown\":1}")[..], [Line::Ping]));
    }

    #[test]
    fn error_replies_and_bad_json() {
        let l = read("{\"id\":2,\"error\":{\"code\":103,\"message\":\"permission denied\"}}");
        let Line::Reply(r) = &l[0] else { panic!() };
        assert_eq!(r.error.as_ref().unwrap().code, 103);
        let e = lines("{nope").next().unwrap().unwrap_err();
        assert!(matches!(e, ConnError::Protocol(_)), "{e}");
    }

    #[test]
    fn errors_read_clearly() {
        assert_eq!(
            ConnError::TokenRejected.to_string(),
            "token rejected: check --secret (the server closed with 3500 invalid token)"
        );
        let e = ConnError::Refused {
            addr: "127.0.0.1:1".parse().unwrap(),
            url: "ws://127.0.0.1:1/connection/websocket".into(),
        };
        assert!(e.to_string().contains("connection refused"), "{e}");
        assert!(
            e.to_string()
                .contains("ws://127.0.0.1:1/connection/websocket"),
            "{e}"
        );
        let e = ConnError::ConnectError {
            code: 101,
            message: "unauthorized".into(),
        };
        assert!(e.to_string().contains("check --secret"), "{e}");
        let e = ConnError::NoCompression {
            url: "ws://127.0.0.1:1/x".into(),
            detail: "the server did not accept permessage-deflate: its 101 response has no \
                     Sec-WebSocket-Extensions header"
                .into(),
        };
        let m = e.to_string();
        assert!(
            m.starts_with("--compression: the server did not accept permessage-deflate")
                && m.contains("Sec-WebSocket-Extensions")
                && m.contains(r#""websocket": {"compression": true}"#),
            "{m}"
        );
    }
}
