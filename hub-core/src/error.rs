//! Protocol errors (replies to commands) and disconnects (connection closes).
//!
//! Both are part of the Centrifugo client protocol v2: an [`Error`] travels in `Reply.error`,
//! a [`Disconnect`] is a WebSocket close frame with a documented code and a plain-text reason.

use std::borrow::Cow;
use std::fmt;

/// An error reply to a client command (`Reply.error`), or a server API error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Protocol error code (100–1999; 400–1999 are free for applications).
    pub code: u32,
    /// Short human-readable message.
    pub message: Cow<'static, str>,
    /// A temporary error: clients retry with backoff.
    pub temporary: bool,
}

macro_rules! error_consts {
    ($($(#[$doc:meta])* $name:ident = $code:expr, $msg:expr, $temp:expr;)*) => {
        impl Error {
            $($(#[$doc])* pub const $name: Error = Error { code: $code, message: Cow::Borrowed($msg), temporary: $temp };)*
        }
    };
}

error_consts! {
    /// 100: internal server error (temporary).
    INTERNAL = 100, "internal server error", true;
    /// 101: unauthorized.
    UNAUTHORIZED = 101, "unauthorized", false;
    /// 102: unknown channel (no such namespace).
    UNKNOWN_CHANNEL = 102, "unknown channel", false;
    /// 103: permission denied.
    PERMISSION_DENIED = 103, "permission denied", false;
    /// 104: method not found.
    METHOD_NOT_FOUND = 104, "method not found", false;
    /// 105: already subscribed.
    ALREADY_SUBSCRIBED = 105, "already subscribed", false;
    /// 106: limit exceeded.
    LIMIT_EXCEEDED = 106, "limit exceeded", false;
    /// 107: bad request.
    BAD_REQUEST = 107, "bad request", false;
    /// 108: not available (for example history or presence off for the channel).
    NOT_AVAILABLE = 108, "not available", false;
    /// 109: token expired.
    TOKEN_EXPIRED = 109, "token expired", false;
    /// 110: expired.
    EXPIRED = 110, "expired", false;
    /// 111: too many requests (temporary).
    TOO_MANY_REQUESTS = 111, "too many requests", true;
    /// 112: unrecoverable position.
    UNRECOVERABLE_POSITION = 112, "unrecoverable position", false;
}

impl Error {
    /// An error with a custom code and message (applications use codes 400–1999).
    pub fn new(code: u32, message: impl Into<Cow<'static, str>>) -> Self {
        Error {
            code,
            message: message.into(),
            temporary: false,
        }
    }

    /// The same error with another message.
    pub fn with_message(mut self, message: impl Into<Cow<'static, str>>) -> Self {
        self.message = message.into();
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for Error {}

/// Why the server closes a connection: a close code and a plain-text reason.
///
/// Codes 3000–3499 ask the client to reconnect, 3500–3999 are terminal (PROTOCOL.md §2.3).
/// Applications may use 4000–4499 (reconnect) and 4500–4999 (terminal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// WebSocket close code.
    pub code: u16,
    /// Plain-text reason, never valid JSON, shorter than 123 bytes.
    pub reason: Cow<'static, str>,
}

macro_rules! disconnect_consts {
    ($($(#[$doc:meta])* $name:ident = $code:expr, $reason:expr;)*) => {
        impl Disconnect {
            $($(#[$doc])* pub const $name: Disconnect = Disconnect { code: $code, reason: Cow::Borrowed($reason) };)*
        }
    };
}

disconnect_consts! {
    /// 3000: closed without advice (no close frame is sent).
    CONNECTION_CLOSED = 3000, "connection closed";
    /// 3001: the node shuts down; the client reconnects elsewhere.
    SHUTDOWN = 3001, "shutdown";
    /// 3004: internal server error.
    SERVER_ERROR = 3004, "internal server error";
    /// 3005: the connection expired and was not refreshed.
    EXPIRED = 3005, "connection expired";
    /// 3006: a subscription expired.
    SUBSCRIPTION_EXPIRED = 3006, "subscription expired";
    /// 3008: the client reads too slowly; its outgoing queue overflowed.
    SLOW = 3008, "slow";
    /// 3009: a socket write failed or timed out.
    WRITE_ERROR = 3009, "write error";
    /// 3010: a gap was found in a publication stream.
    INSUFFICIENT_STATE = 3010, "insufficient state";
    /// 3011: the server asks the client to reconnect.
    FORCE_RECONNECT = 3011, "force reconnect";
    /// 3012: no pong came back in time.
    NO_PONG = 3012, "no pong";
    /// 3013: too many requests.
    TOO_MANY_REQUESTS = 3013, "too many requests";
    /// 3500: invalid token (terminal).
    INVALID_TOKEN = 3500, "invalid token";
    /// 3501: bad request (terminal).
    BAD_REQUEST = 3501, "bad request";
    /// 3502: no connect command in time (terminal).
    STALE = 3502, "stale";
    /// 3503: disconnected by the server, no reconnect (terminal).
    FORCE_DISCONNECT = 3503, "force disconnect";
    /// 3504: per-user connection limit (terminal).
    CONNECTION_LIMIT = 3504, "connection limit";
    /// 3505: channels-per-connection limit (terminal).
    CHANNEL_LIMIT = 3505, "channel limit";
    /// 3506: inappropriate protocol, such as binary data for a JSON client (terminal).
    INAPPROPRIATE_PROTOCOL = 3506, "inappropriate protocol";
    /// 3507: permission denied (terminal).
    PERMISSION_DENIED = 3507, "permission denied";
    /// 3508: not available (terminal).
    NOT_AVAILABLE = 3508, "not available";
    /// 3509: too many errors (terminal).
    TOO_MANY_ERRORS = 3509, "too many errors";
    /// 1009: a message went over the size limit (WebSocket code; the client does not reconnect).
    MESSAGE_TOO_BIG = 1009, "message size limit exceeded";
}

impl Disconnect {
    /// A custom disconnect (applications use 4000–4999).
    pub fn new(code: u16, reason: impl Into<Cow<'static, str>>) -> Self {
        Disconnect {
            code,
            reason: reason.into(),
        }
    }

    /// Whether a client should reconnect after this disconnect.
    pub fn reconnect(&self) -> bool {
        !matches!(self.code, 3500..=3999 | 4500..=4999 | 1009)
    }
}

impl fmt::Display for Disconnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason, self.code)
    }
}

/// How a handler refuses a client request: an error reply, or closing the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// Answer the command with this error; the connection stays open.
    Error(Error),
    /// Close the connection.
    Disconnect(Disconnect),
}

impl From<Error> for Reject {
    fn from(e: Error) -> Self {
        Reject::Error(e)
    }
}

impl From<Disconnect> for Reject {
    fn from(d: Disconnect) -> Self {
        Reject::Disconnect(d)
    }
}

/// A failure inside a broker or presence store (network, storage). Clients see error 100
/// (temporary, so they retry).
#[derive(Debug, Clone)]
pub struct EngineError {
    /// What went wrong.
    pub message: String,
    /// The backend is unreachable (or its circuit is open): the call failed fast.
    pub unavailable: bool,
}

impl EngineError {
    /// A failed call.
    pub fn new(message: impl Into<String>) -> Self {
        EngineError {
            message: message.into(),
            unavailable: false,
        }
    }

    /// The backend is unreachable; the call was not attempted.
    pub fn unavailable(message: impl Into<String>) -> Self {
        EngineError {
            message: message.into(),
            unavailable: true,
        }
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for EngineError {}

impl From<EngineError> for Error {
    fn from(e: EngineError) -> Self {
        if e.unavailable {
            Error::INTERNAL.with_message("engine unavailable, retry later")
        } else {
            Error::INTERNAL
        }
    }
}
