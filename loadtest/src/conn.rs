//! One client-protocol connection: TCP, WebSocket handshake (offering permessage-deflate with
//! `--compression`, subprotocol `centrifuge-protobuf` with `--protobuf`), `connect` and
//! `subscribe` sent in one frame (as centrifuge-js does), then a receive loop that answers
//! server pings (`{}` with `{}`; in the Protobuf flavour, an empty Reply with an empty
//! Command) and hands each publication's `data` to a [`PubSink`] as bytes (the JSON value's
//! text, or the Protobuf `bytes` field).

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

use crate::proto;
use crate::target::WsTarget;
use crate::ws::{HandshakeError, Incoming, WebSocket, WsError};

/// The subprotocol that asks for the Protobuf flavour.
pub(crate) const PROTOBUF_SUBPROTOCOL: &str = "centrifuge-protobuf";

/// The flavour of the client protocol a connection speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Flavour {
    /// JSON commands and replies, `\n`-separated, in text frames.
    #[default]
    Json,
    /// Protobuf Commands and Replies, each prefixed by its length as a varint, in binary
    /// frames (subprotocol `centrifuge-protobuf`).
    Protobuf,
}

impl Flavour {
    /// `Protobuf` if `protobuf`, else `Json`.
    pub(crate) fn of(protobuf: bool) -> Self {
        if protobuf {
            Flavour::Protobuf
        } else {
            Flavour::Json
        }
    }

    /// The subprotocol offered in the upgrade request.
    pub(crate) fn subprotocol(self) -> Option<&'static str> {
        match self {
            Flavour::Json => None,
            Flavour::Protobuf => Some(PROTOBUF_SUBPROTOCOL),
        }
    }

    /// How the summaries name it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Flavour::Json => "JSON",
            Flavour::Protobuf => "Protobuf",
        }
    }
}

/// How a connection talks: the protocol flavour, and whether it offers permessage-deflate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Wire {
    /// JSON or Protobuf.
    pub(crate) flavour: Flavour,
    /// Offer permessage-deflate, and fail unless the server accepts it.
    pub(crate) compression: bool,
}

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
    /// `--protobuf` was given and the server did not choose subprotocol
    /// `centrifuge-protobuf`.
    NoProtobuf {
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
            ConnError::NoProtobuf { .. } => {
                format!("subprotocol {PROTOBUF_SUBPROTOCOL} not accepted")
            }
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
            ConnError::NoProtobuf { url, detail } => write!(
                f,
                "--protobuf: {detail} ({url}); does the server speak the Protobuf flavour of the \
                 client protocol? (leave out --protobuf for JSON)"
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
    /// Publication `data` received by connection `conn`: the JSON value's text, or the
    /// Protobuf `bytes` as they came.
    fn publication(&self, conn: usize, data: &[u8]);
}

/// A sink that ignores publications.
#[derive(Debug)]
pub(crate) struct Ignore;

impl PubSink for Ignore {
    fn publication(&self, _conn: usize, _data: &[u8]) {}
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

/// One line of a frame as a connection that sends commands (the client publisher) reads it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// A server ping: answer `{}`.
    Ping,
    /// The reply to command `id`, with its error if it failed.
    Reply {
        /// The command's id.
        id: u32,
        /// Error code and message.
        error: Option<(u32, String)>,
    },
    /// A disconnect push: the server is closing the connection.
    Disconnect {
        /// The disconnect code.
        code: u16,
        /// The reason.
        reason: String,
    },
    /// Another push (a publication, a join, ...).
    Push,
}

/// One reply or push of a frame, whatever the flavour.
#[derive(Debug, PartialEq, Eq)]
enum Event<'a> {
    /// A server ping: answer it.
    Ping,
    /// The reply to command `id`.
    Reply {
        /// The command's id.
        id: u32,
        /// Error code and message.
        error: Option<(u32, String)>,
        /// It has a connect result.
        connect: bool,
        /// It has a subscribe result.
        subscribe: bool,
    },
    /// A publication's data: the JSON value's text, or the Protobuf bytes.
    Publication(Cow<'a, [u8]>),
    /// A disconnect push: the server is closing the connection.
    Disconnect {
        /// The disconnect code.
        code: u16,
        /// The reason.
        reason: String,
    },
    /// Another push (join, leave, unsubscribe, a publication without data, ...).
    Push,
}

impl<'a> Event<'a> {
    /// A line of a JSON frame.
    fn from_json(line: Line<'a>) -> Self {
        let r = match line {
            Line::Ping => return Event::Ping,
            Line::Reply(r) => r,
        };
        match r.push {
            Some(Push {
                disconnect: Some(d),
                ..
            }) => Event::Disconnect {
                code: d.code,
                reason: d.reason,
            },
            Some(Push {
                publication: Some(Publication { data: Some(data) }),
                ..
            }) => Event::Publication(Cow::Borrowed(data.get().as_bytes())),
            Some(_) => Event::Push,
            None => Event::Reply {
                id: r.id,
                error: r.error.map(|e| (e.code, e.message)),
                connect: r.connect.is_some(),
                subscribe: r.subscribe.is_some(),
            },
        }
    }

    /// A Reply of a Protobuf frame; one without id, push or error (the empty one) is a ping.
    fn from_proto(r: proto::Reply) -> Self {
        if r.id == 0 && r.push.is_none() && r.error.is_none() {
            return Event::Ping;
        }
        match r.push {
            Some(proto::Push {
                disconnect: Some(d),
                ..
            }) => Event::Disconnect {
                code: u16::try_from(d.code).unwrap_or(u16::MAX),
                reason: d.reason,
            },
            Some(proto::Push {
                publication: Some(p),
                ..
            }) => Event::Publication(Cow::Owned(p.data)),
            Some(_) => Event::Push,
            None => Event::Reply {
                id: r.id,
                error: r.error.map(|e| (e.code, e.message)),
                connect: r.connect.is_some(),
                subscribe: r.subscribe.is_some(),
            },
        }
    }
}

/// The events of a frame, read as they are iterated.
type Events<'a> = Box<dyn Iterator<Item = Result<Event<'a>, ConnError>> + Send + 'a>;

/// The events of a text or binary message in `flavour`; the wrong kind of frame for the
/// flavour is a protocol error.
fn events(flavour: Flavour, msg: &Incoming) -> Result<Events<'_>, ConnError> {
    match (flavour, msg) {
        (Flavour::Json, Incoming::Text(t)) => {
            Ok(Box::new(lines(t).map(|l| l.map(Event::from_json))))
        }
        (Flavour::Protobuf, Incoming::Binary(b)) => Ok(Box::new(proto::replies(b).map(|r| {
            r.map(Event::from_proto)
                .map_err(|e| ConnError::Protocol(format!("the server sent {e}")))
        }))),
        (Flavour::Json, Incoming::Binary(_)) => Err(ConnError::Protocol(
            "binary frame from the server; the JSON protocol uses text frames".into(),
        )),
        (Flavour::Protobuf, Incoming::Text(_)) => Err(ConnError::Protocol(
            "text frame from the server; the Protobuf protocol uses binary frames".into(),
        )),
        (_, other) => Err(ConnError::Protocol(format!(
            "not a data message: {other:?}"
        ))),
    }
}

/// The lines of a text frame as [`Answer`]s.
pub(crate) fn answers(text: &str) -> impl Iterator<Item = Result<Answer, ConnError>> + '_ {
    lines(text).map(|line| {
        Ok(match Event::from_json(line?) {
            Event::Ping => Answer::Ping,
            Event::Reply { id, error, .. } => Answer::Reply { id, error },
            Event::Disconnect { code, reason } => Answer::Disconnect { code, reason },
            Event::Publication(_) | Event::Push => Answer::Push,
        })
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

/// Answers a server ping in `flavour`: `{}`, or an empty Command.
async fn pong(ws: &mut WebSocket, flavour: Flavour) -> Result<(), WsError> {
    match flavour {
        Flavour::Json => ws.send_text("{}").await,
        Flavour::Protobuf => ws.send_binary(proto::PONG).await,
    }
}

/// An open, subscribed connection.
#[derive(Debug)]
pub(crate) struct Session {
    ws: WebSocket,
    flavour: Flavour,
    /// Data frame bytes received while opening (the replies to connect and subscribe).
    opening_bytes: u64,
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
    /// Bytes of the data frames (headers included, as on the wire) received once subscribed,
    /// until told to stop: publications and pings.
    pub(crate) bytes: u64,
}

/// Opens a connection to `target` speaking `wire` (offering permessage-deflate and the
/// Protobuf subprotocol as it says, and failing if the server does not accept them): connect
/// with `token`, subscribe to `channels`, all within `limit`.
pub(crate) async fn open(
    target: &WsTarget,
    source: Option<IpAddr>,
    token: &str,
    channels: &[String],
    wire: Wire,
    limit: Duration,
) -> Result<Session, ConnError> {
    let mut stage = "TCP connect";
    let steps = open_steps(target, source, token, channels, wire, &mut stage);
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
    wire: Wire,
    stage: &mut &'static str,
) -> Result<Session, ConnError> {
    let flavour = wire.flavour;
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
    let mut ws = WebSocket::connect(tcp, &target.url, wire.compression, flavour.subprotocol())
        .await
        .map_err(|e| match e {
            HandshakeError::Compression(detail) => ConnError::NoCompression {
                url: target.url.clone(),
                detail,
            },
            HandshakeError::Subprotocol(detail) => ConnError::NoProtobuf {
                url: target.url.clone(),
                detail,
            },
            e => ConnError::Handshake {
                url: target.url.clone(),
                detail: e.to_string(),
            },
        })?;
    *stage = "connect";
    match flavour {
        Flavour::Json => ws.send_text(&opening_frame(token, channels)).await,
        Flavour::Protobuf => ws.send_binary(&proto::opening_frame(token, channels)).await,
    }
    .map_err(ws_error)?;
    // Replies 1 (connect) and 2.. (subscribes) may come in any frames, between pings.
    let mut waiting = channels.len() + 1;
    while waiting > 0 {
        let msg = match ws.recv().await {
            Ok(Some(m @ (Incoming::Text(_) | Incoming::Binary(_)))) => m,
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
        for event in events(flavour, &msg)? {
            let (id, error, connect, subscribe) = match event? {
                Event::Ping => {
                    ping = true;
                    continue;
                }
                Event::Disconnect { code: 3500, .. } => return Err(ConnError::TokenRejected),
                Event::Disconnect { code, reason } => {
                    return Err(ConnError::Closed {
                        stage,
                        code: Some(code),
                        reason,
                    })
                }
                // A push before we are subscribed: not ours to count.
                Event::Publication(_) | Event::Push => continue,
                Event::Reply {
                    id,
                    error,
                    connect,
                    subscribe,
                } => (id, error, connect, subscribe),
            };
            match id {
                0 => {}
                1 => {
                    if let Some((code, message)) = error {
                        return Err(ConnError::ConnectError { code, message });
                    }
                    if !connect {
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
                    if let Some((code, message)) = error {
                        return Err(ConnError::SubscribeError {
                            channel: channel.clone(),
                            code,
                            message,
                        });
                    }
                    if !subscribe {
                        return Err(ConnError::Protocol(format!(
                            "the reply to subscribe {channel:?} has no subscribe result"
                        )));
                    }
                    waiting -= 1;
                }
            }
        }
        if ping {
            pong(&mut ws, flavour).await.map_err(ws_error)?;
        }
    }
    let opening_bytes = ws.data_bytes();
    Ok(Session {
        ws,
        flavour,
        opening_bytes,
    })
}

/// A transport or framing error as a connection error.
fn ws_error(e: WsError) -> ConnError {
    match e {
        WsError::Io(e) => ConnError::Io(e),
        e => ConnError::Protocol(e.to_string()),
    }
}

/// Hands the publications of a data message to `sink` as connection `conn`; returns whether
/// it held a ping, and how the session ends if it must (a disconnect push, a bad frame).
fn deliver(
    flavour: Flavour,
    msg: &Incoming,
    conn: usize,
    sink: &dyn PubSink,
) -> (bool, Option<EndReason>) {
    let mut ping = false;
    let events = match events(flavour, msg) {
        Ok(e) => e,
        Err(e) => return (false, Some(EndReason::Failed(e.to_string()))),
    };
    for event in events {
        match event {
            Ok(Event::Ping) => ping = true,
            Ok(Event::Publication(data)) => sink.publication(conn, &data),
            Ok(Event::Disconnect { code, .. }) => {
                return (ping, Some(EndReason::Closed(Some(code))))
            }
            Ok(Event::Reply { .. } | Event::Push) => {}
            Err(e) => return (ping, Some(EndReason::Failed(e.to_string()))),
        }
    }
    (ping, None)
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
        // Data bytes when told to stop (what comes during the close is not counted).
        let mut at_stop = None;
        let reason = loop {
            let msg = tokio::select! {
                _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                    at_stop = Some(self.ws.data_bytes());
                    let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close()).await;
                    break EndReason::Stopped;
                }
                m = self.ws.recv() => m,
            };
            let msg = match msg {
                Ok(Some(m @ (Incoming::Text(_) | Incoming::Binary(_)))) => m,
                Ok(Some(Incoming::Close { code, .. })) => break EndReason::Closed(code),
                Ok(Some(Incoming::Ping(_) | Incoming::Pong)) => continue,
                Err(e) => break EndReason::Failed(e.to_string()),
                Ok(None) => break EndReason::Closed(None),
            };
            let (ping, end) = deliver(self.flavour, &msg, conn, sink);
            if let Some(end) = end {
                break end;
            }
            if ping {
                pings += 1;
                if let Err(e) = pong(&mut self.ws, self.flavour).await {
                    break EndReason::Failed(e.to_string());
                }
            }
        };
        let bytes = at_stop.unwrap_or_else(|| self.ws.data_bytes());
        Ended {
            reason,
            pings,
            inflated: self.ws.inflated(),
            bytes: bytes.saturating_sub(self.opening_bytes),
        }
    }

    /// Whether permessage-deflate was negotiated.
    pub(crate) fn compressed(&self) -> bool {
        self.ws.deflate()
    }

    /// Bytes of the data frames received while opening (the replies to connect and
    /// subscribe, and any ping among them), headers included.
    pub(crate) fn opening_bytes(&self) -> u64 {
        self.opening_bytes
    }

    /// The WebSocket, for a connection that goes on sending commands.
    pub(crate) fn into_socket(self) -> WebSocket {
        self.ws
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
    fn answers_to_commands() {
        let text = "{}\n{\"id\":7,\"publish\":{}}\n\
                    {\"id\":8,\"error\":{\"code\":103,\"message\":\"permission denied\"}}\n\
                    {\"push\":{\"channel\":\"x\",\"pub\":{\"data\":{}}}}\n\
                    {\"push\":{\"disconnect\":{\"code\":3001,\"reason\":\"shutdown\"}}}";
        let a: Vec<Answer> = answers(text).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            a,
            [
                Answer::Ping,
                Answer::Reply { id: 7, error: None },
                Answer::Reply {
                    id: 8,
                    error: Some((103, "permission denied".into()))
                },
                Answer::Push,
                Answer::Disconnect {
                    code: 3001,
                    reason: "shutdown".into()
                },
            ]
        );
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

    #[test]
    fn protobuf_frames_read_as_the_json_ones_do() {
        use prost::Message as _;
        let mut frame = vec![0x00];
        for r in [
            proto::Reply {
                id: 1,
                connect: Some(proto::ConnectResult::default()),
                ..Default::default()
            },
            proto::Reply {
                id: 2,
                error: Some(proto::Error {
                    code: 103,
                    message: "permission denied".into(),
                    temporary: false,
                }),
                ..Default::default()
            },
            proto::Reply {
                push: Some(proto::Push {
                    channel: "x".into(),
                    publication: Some(proto::Publication {
                        data: br#"{"t":5,"seq":1}"#.to_vec(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            proto::Reply {
                push: Some(proto::Push {
                    unsubscribe: Some(proto::Unsubscribe {
                        code: 2500,
                        reason: "x".into(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            proto::Reply {
                push: Some(proto::Push {
                    disconnect: Some(proto::Disconnect {
                        code: 3001,
                        reason: "shutdown".into(),
                        reconnect: true,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ] {
            frame.extend(r.encode_length_delimited_to_vec());
        }
        let msg = Incoming::Binary(frame);
        let got: Vec<Event<'_>> = events(Flavour::Protobuf, &msg)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            got,
            [
                Event::Ping,
                Event::Reply {
                    id: 1,
                    error: None,
                    connect: true,
                    subscribe: false
                },
                Event::Reply {
                    id: 2,
                    error: Some((103, "permission denied".into())),
                    connect: false,
                    subscribe: false
                },
                Event::Publication(Cow::Borrowed(br#"{"t":5,"seq":1}"#)),
                Event::Push,
                Event::Disconnect {
                    code: 3001,
                    reason: "shutdown".into()
                },
            ]
        );
        // The same in JSON.
        let text = Incoming::Text(
            "{}\n{\"id\":1,\"connect\":{}}\n{\"push\":{\"channel\":\"x\",\"pub\":{\"data\":\
             {\"t\":5,\"seq\":1}}}}"
                .into(),
        );
        let json: Vec<Event<'_>> = events(Flavour::Json, &text)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(json[..2], got[..2]);
        assert_eq!(json[2], got[3]);

        // The wrong kind of frame for the flavour.
        let e = events(Flavour::Protobuf, &text).err().unwrap();
        assert!(e.to_string().contains("binary frames"), "{e}");
        let e = events(Flavour::Json, &msg).err().unwrap();
        assert!(e.to_string().contains("text frames"), "{e}");
        // A broken frame.
        let bad = Incoming::Binary(vec![9, 8]);
        let e = events(Flavour::Protobuf, &bad)
            .unwrap()
            .next()
            .unwrap()
            .unwrap_err();
        assert!(matches!(e, ConnError::Protocol(_)), "{e}");
    }

    #[test]
    fn a_server_without_protobuf_is_named() {
        let e = ConnError::NoProtobuf {
            url: "ws://127.0.0.1:1/x".into(),
            detail: "the server did not accept subprotocol centrifuge-protobuf: its 101 \
                     response has no Sec-WebSocket-Protocol header"
                .into(),
        };
        let m = e.to_string();
        assert!(
            m.starts_with("--protobuf: the server did not accept subprotocol centrifuge-protobuf")
                && m.contains("ws://127.0.0.1:1/x"),
            "{m}"
        );
        assert_eq!(e.kind(), "subprotocol centrifuge-protobuf not accepted");
    }

    /// Publications collected.
    #[derive(Default)]
    struct Collect(std::sync::Mutex<Vec<Vec<u8>>>);

    impl PubSink for Collect {
        fn publication(&self, _conn: usize, data: &[u8]) {
            self.0.lock().unwrap().push(data.to_vec());
        }
    }

    /// Reads one masked client frame: its opcode and unmasked payload (short frames only).
    async fn client_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
        use tokio::io::AsyncReadExt;
        let mut head = [0u8; 2];
        s.read_exact(&mut head).await.unwrap();
        assert_eq!(head[1] & 0x80, 0x80, "client frames are masked");
        let len = match head[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                s.read_exact(&mut l).await.unwrap();
                usize::from(u16::from_be_bytes(l))
            }
            n => usize::from(n),
        };
        let mut mask = [0u8; 4];
        s.read_exact(&mut mask).await.unwrap();
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.unwrap();
        crate::ws::apply_mask(&mut payload, mask);
        (head[0] & 0x0f, payload)
    }

    /// An unmasked binary server frame (short).
    fn binary(payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() < 126);
        let mut f = vec![0x82, payload.len() as u8];
        f.extend_from_slice(payload);
        f
    }

    /// A fake hub of the Protobuf flavour (or, `choose` false, one that ignores the offered
    /// subprotocol): the opening, a ping, a publication, then a disconnect push.
    async fn fake_hub(listener: tokio::net::TcpListener, choose: bool) {
        use prost::Message as _;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut s, _) = listener.accept().await.unwrap();
        let mut req = Vec::new();
        let mut b = [0u8; 1024];
        while !req.ends_with(b"\r\n\r\n") {
            let n = s.read(&mut b).await.unwrap();
            assert!(n > 0);
            req.extend_from_slice(&b[..n]);
        }
        let req = String::from_utf8(req).unwrap();
        assert!(
            req.contains("\r\nSec-WebSocket-Protocol: centrifuge-protobuf\r\n"),
            "{req}"
        );
        let key = req
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap()
            .trim()
            .to_owned();
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n{}\r\n",
            crate::ws::accept_key(&key),
            if choose {
                "Sec-WebSocket-Protocol: centrifuge-protobuf\r\n"
            } else {
                ""
            }
        );
        s.write_all(head.as_bytes()).await.unwrap();
        if !choose {
            let _ = s.read(&mut b).await;
            return;
        }
        // connect and subscribe, in one binary frame.
        let (op, mut commands) = client_frame(&mut s).await;
        assert_eq!(op, crate::ws::op::BINARY);
        let connect = proto::Command::decode_length_delimited(&mut commands.as_slice()).unwrap();
        let rest = &commands[connect.encoded_len() + 1..];
        let subscribe = proto::Command::decode_length_delimited(rest).unwrap();
        assert_eq!(connect.id, 1);
        assert_eq!(connect.connect.unwrap().token, "tok");
        assert_eq!(subscribe.id, 2);
        assert_eq!(subscribe.subscribe.unwrap().channel, "ch");
        commands.clear();
        // A ping first, then the replies.
        let mut frame = vec![0x00];
        for r in [
            proto::Reply {
                id: 1,
                connect: Some(proto::ConnectResult {
                    client: "c".into(),
                    ping: 25,
                    pong: true,
                    ..Default::default()
                }),
                ..Default::default()
            },
            proto::Reply {
                id: 2,
                subscribe: Some(proto::SubscribeResult::default()),
                ..Default::default()
            },
        ] {
            frame.extend(r.encode_length_delimited_to_vec());
        }
        s.write_all(&binary(&frame)).await.unwrap();
        assert_eq!(
            client_frame(&mut s).await,
            (crate::ws::op::BINARY, vec![0x00])
        );
        // Two publications and a ping in one frame.
        let mut frame = Vec::new();
        for seq in 0..2 {
            let push = proto::Reply {
                push: Some(proto::Push {
                    channel: "ch".into(),
                    publication: Some(proto::Publication {
                        data: format!(r#"{{"t":1,"seq":{seq}}}"#).into_bytes(),
                        offset: seq + 1,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            };
            frame.extend(push.encode_length_delimited_to_vec());
        }
        frame.push(0x00);
        s.write_all(&binary(&frame)).await.unwrap();
        assert_eq!(
            client_frame(&mut s).await,
            (crate::ws::op::BINARY, vec![0x00])
        );
        let bye = proto::Reply {
            push: Some(proto::Push {
                disconnect: Some(proto::Disconnect {
                    code: 3001,
                    reason: "shutdown".into(),
                    reconnect: true,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        s.write_all(&binary(&bye.encode_length_delimited_to_vec()))
            .await
            .unwrap();
        let _ = s.read(&mut b).await;
    }

    #[tokio::test]
    async fn a_protobuf_session_against_a_fake_hub() {
        let protobuf = Wire {
            flavour: Flavour::Protobuf,
            compression: false,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hub = tokio::spawn(fake_hub(listener, true));
        let target = WsTarget {
            url: format!("ws://{addr}/connection/websocket"),
            addr,
        };
        let channels = ["ch".to_owned()];
        let limit = Duration::from_secs(10);
        let session = open(&target, None, "tok", &channels, protobuf, limit)
            .await
            .unwrap();
        // The ping (2 + 1 bytes) and the two replies, in one frame.
        assert!(session.opening_bytes() > 3, "{}", session.opening_bytes());
        let sink = Collect::default();
        let (_stop, stop_rx) = watch::channel(false);
        let ended = session.run(0, stop_rx, &sink).await;
        assert_eq!(ended.reason, EndReason::Closed(Some(3001)));
        assert_eq!(ended.pings, 1);
        let got = sink.0.lock().unwrap().clone();
        assert_eq!(
            got,
            [
                br#"{"t":1,"seq":0}"#.to_vec(),
                br#"{"t":1,"seq":1}"#.to_vec()
            ]
        );
        // Two data frames after the opening, headers (2 bytes) included. Each push: data
        // 2 + 15, offset 2; channel 4, pub 2 + 19; push 2 + 25; length prefix 1: 28 bytes.
        let publications = 2 + 2 * 28 + 1;
        // code 1 + 2, reason 2 + 8, reconnect 2; disconnect 2 + 15; push 2 + 17; prefix 1.
        let disconnect = 2 + 20;
        assert_eq!(ended.bytes, publications + disconnect);
        hub.await.unwrap();

        // A server that ignores the offer.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hub = tokio::spawn(fake_hub(listener, false));
        let target = WsTarget {
            url: format!("ws://{addr}/connection/websocket"),
            addr,
        };
        let e = open(&target, None, "tok", &channels, protobuf, limit)
            .await
            .unwrap_err();
        assert!(matches!(e, ConnError::NoProtobuf { .. }), "{e}");
        assert!(e.to_string().contains("Sec-WebSocket-Protocol"), "{e}");
        hub.abort();
    }
}
