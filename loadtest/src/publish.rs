//! The server API client: `POST {base}/api/<method>` over HTTP/1.1 keep-alive connections,
//! several at once (a pool), so that a slow call does not hold back the next one.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::target::HttpTarget;

/// Responses larger than this are refused (the API's answers are small).
const MAX_RESPONSE: usize = 1 << 20;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallError {
    /// Nothing listens at the address.
    Refused {
        /// The API URL.
        url: String,
    },
    /// A transport error.
    Io(String),
    /// No complete answer in time.
    Timeout(Duration),
    /// An answer that is not HTTP.
    BadResponse(String),
    /// A status other than 200.
    Status {
        /// The status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// A 200 answer with an `error` object (or a gRPC response with one).
    Api {
        /// Error code.
        code: u32,
        /// Error message.
        message: String,
    },
    /// The gRPC server API refused the key (status `UNAUTHENTICATED`).
    Unauthenticated,
    /// A gRPC transport error, or a status other than OK.
    Grpc(String),
    /// The hub answered a client `publish` command with an error.
    PublishRefused {
        /// The channel.
        channel: String,
        /// Error code.
        code: u32,
        /// Error message.
        message: String,
    },
    /// The client publisher's connection ended.
    Disconnected(String),
}

impl CallError {
    /// A short label to group failures by in a report.
    pub(crate) fn kind(&self) -> String {
        match self {
            CallError::Refused { .. } => "connection refused".into(),
            CallError::Io(_) => "io error".into(),
            CallError::Timeout(_) => "timeout".into(),
            CallError::BadResponse(_) => "bad response".into(),
            CallError::Status { status, .. } => format!("HTTP {status}"),
            CallError::Api { code, .. } => format!("API error {code}"),
            CallError::Unauthenticated => "unauthenticated".into(),
            CallError::Grpc(_) => "gRPC error".into(),
            CallError::PublishRefused { code, .. } => format!("publish error {code}"),
            CallError::Disconnected(_) => "publisher disconnected".into(),
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Refused { url } => {
                write!(f, "connection refused: is the hub's server API at {url}?")
            }
            CallError::Io(e) => write!(f, "server API call failed: {e}"),
            CallError::Timeout(d) => write!(f, "the call got no answer within {d:?}"),
            CallError::BadResponse(e) => {
                write!(f, "server API answered something else than HTTP: {e}")
            }
            CallError::Status { status: 401, .. } => {
                write!(f, "API key rejected (HTTP 401): check --api-key")
            }
            CallError::Status { status, body } => {
                write!(f, "server API answered HTTP {status}: {body}")
            }
            CallError::Api { code, message } => {
                write!(f, "server API answered error {code} {message:?}")
            }
            CallError::Unauthenticated => write!(
                f,
                "API key rejected (gRPC UNAUTHENTICATED): check --api-key (the hub's grpc_api.key)"
            ),
            CallError::Grpc(e) => write!(f, "gRPC server API call failed: {e}"),
            CallError::PublishRefused {
                channel,
                code,
                message,
            } => {
                write!(
                    f,
                    "client publish to {channel:?} refused: error {code} {message:?}"
                )?;
                match code {
                    103 => write!(
                        f,
                        "; the channel's namespace must allow client publishes: \
                         \"allow_publish_for_client\": true (allow_publish_for_subscriber is \
                         not enough: the publisher connection does not subscribe)"
                    ),
                    102 => write!(f, "; the channel's namespace is not in the hub's config"),
                    111 => write!(
                        f,
                        "; over the hub's commands per connection: raise its \
                         client.command_rate_limit (100/s by default; 0 = no limit) and \
                         client.command_rate_burst"
                    ),
                    _ => Ok(()),
                }
            }
            CallError::Disconnected(e) => write!(f, "the client publisher's connection ended: {e}"),
        }
    }
}

/// The head of an HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    /// Status code.
    pub(crate) status: u16,
    /// Bytes of the head, up to and including the blank line.
    pub(crate) len: usize,
    /// `Content-Length`, if given.
    pub(crate) content_length: Option<usize>,
    /// `Transfer-Encoding: chunked`.
    pub(crate) chunked: bool,
    /// The server will close the connection after this response.
    pub(crate) close: bool,
}

/// Parses the head at the start of `buf`; `Ok(None)` if it is not complete yet.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > 64 * 1024 {
            return Err("response head over 64 KiB".into());
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| "response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x status line: {status_line:.100}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status code in {status_line:.100}"))?;
    let mut head = Head {
        status,
        len: end + 4,
        content_length: None,
        chunked: false,
        close: version == "HTTP/1.0",
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = Some(
                value
                    .parse()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.contains("close") {
                head.close = true;
            } else if v.contains("keep-alive") {
                head.close = false;
            }
        }
    }
    Ok(Some(head))
}

/// Decodes a chunked body at the start of `buf`: `Ok(Some((body, bytes used)))` when it is
/// complete, `Ok(None)` when more bytes are needed.
pub(crate) fn dechunk(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(nl) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_line = std::str::from_utf8(&buf[at..at + nl]).map_err(|_| "bad chunk size")?;
        let size_hex = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("bad chunk size {size_hex:?}"))?;
        at += nl + 2;
        if size == 0 {
            // Trailers (none expected) end with a blank line.
            return match buf[at..].windows(2).position(|w| w == b"\r\n") {
                Some(0) => Ok(Some((body, at + 2))),
                Some(_) => match buf[at..].windows(4).position(|w| w == b"\r\n\r\n") {
                    Some(p) => Ok(Some((body, at + p + 4))),
                    None => Ok(None),
                },
                None => Ok(None),
            };
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size + 2;
    }
}

/// One keep-alive connection.
#[derive(Debug)]
struct Conn {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(target: &HttpTarget) -> Result<Self, CallError> {
        let tcp = TcpStream::connect(target.addr).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                CallError::Refused {
                    url: target.url.clone(),
                }
            } else {
                CallError::Io(format!("{} ({}): {e}", target.url, target.addr))
            }
        })?;
        let _ = tcp.set_nodelay(true);
        Ok(Conn {
            tcp,
            buf: Vec::with_capacity(1024),
        })
    }

    /// Sends `request` and reads one response: status, body, and whether the connection may
    /// be used again. `Err((error, sent_nothing_back))`: the flag tells whether the server
    /// sent no byte, so that a stale keep-alive connection can be retried.
    async fn roundtrip(
        &mut self,
        request: &[u8],
    ) -> Result<(u16, Vec<u8>, bool), (CallError, bool)> {
        let io = |e: std::io::Error| CallError::Io(e.to_string());
        self.tcp
            .write_all(request)
            .await
            .map_err(|e| (io(e), true))?;
        self.buf.clear();
        let head = loop {
            if let Some(h) =
                parse_head(&self.buf).map_err(|e| (CallError::BadResponse(e), false))?
            {
                break h;
            }
            if !self.read_more().await.map_err(|e| (e, false))? {
                let nothing = self.buf.is_empty();
                return Err((
                    CallError::Io("connection closed by the server".into()),
                    nothing,
                ));
            }
        };
        let body = if head.chunked {
            loop {
                if let Some((b, _)) = dechunk(&self.buf[head.len..])
                    .map_err(|e| (CallError::BadResponse(e), false))?
                {
                    break b;
                }
                if !self.read_more().await.map_err(|e| (e, false))? {
                    return Err((CallError::Io("connection closed mid-body".into()), false));
                }
            }
        } else if let Some(n) = head.content_length {
            while self.buf.len() < head.len + n {
                if !self.read_more().await.map_err(|e| (e, false))? {
                    return Err((CallError::Io("connection closed mid-body".into()), false));
                }
            }
            self.buf[head.len..head.len + n].to_vec()
        } else {
            // No length: the body runs to the end of the connection.
            while self.read_more().await.map_err(|e| (e, false))? {}
            return Ok((head.status, self.buf[head.len..].to_vec(), false));
        };
        Ok((head.status, body, !head.close))
    }

    /// Reads more bytes into the buffer; `false` at end of stream.
    async fn read_more(&mut self) -> Result<bool, CallError> {
        if self.buf.len() > MAX_RESPONSE {
            return Err(CallError::BadResponse("response over 1 MiB".into()));
        }
        let mut chunk = [0u8; 4096];
        let n = self
            .tcp
            .read(&mut chunk)
            .await
            .map_err(|e| CallError::Io(e.to_string()))?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }
}

/// A pool of keep-alive connections to the server API.
#[derive(Debug)]
pub(crate) struct ApiClient {
    target: HttpTarget,
    key: String,
    idle: Mutex<Vec<Conn>>,
    slots: Semaphore,
    timeout: Duration,
}

impl ApiClient {
    /// A client with at most `connections` connections, each call limited to `timeout`.
    pub(crate) fn new(
        target: HttpTarget,
        key: String,
        connections: usize,
        timeout: Duration,
    ) -> Self {
        ApiClient {
            target,
            key,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(connections.max(1)),
            timeout,
        }
    }

    /// The request bytes of a call.
    fn request(&self, method: &str, body: &[u8]) -> Vec<u8> {
        let mut r = format!(
            "POST {}/api/{method} HTTP/1.1\r\nHost: {}\r\nX-API-Key: {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.target.base_path,
            self.target.host,
            self.key,
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    }

    /// Calls `method` with the JSON `body`; the `result` must come back without `error`.
    /// Waits for a free connection first; the time limit counts from then.
    pub(crate) async fn call(&self, method: &str, body: &[u8]) -> Result<(), CallError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| CallError::Io("client closed".into()))?;
        let request = self.request(method, body);
        let limit = self.timeout;
        let (status, body) = tokio::time::timeout(limit, self.send(&request))
            .await
            .map_err(|_| CallError::Timeout(limit))??;
        check_answer(status, &body)
    }

    async fn send(&self, request: &[u8]) -> Result<(u16, Vec<u8>), CallError> {
        let pooled = self.idle.lock().ok().and_then(|mut v| v.pop());
        let reused = pooled.is_some();
        let mut conn = match pooled {
            Some(c) => c,
            None => Conn::open(&self.target).await?,
        };
        let (status, body, keep) = match conn.roundtrip(request).await {
            Ok(r) => r,
            // A kept-alive connection the server closed meanwhile: once more on a new one.
            Err((_, true)) if reused => {
                conn = Conn::open(&self.target).await?;
                conn.roundtrip(request).await.map_err(|(e, _)| e)?
            }
            Err((e, _)) => return Err(e),
        };
        if keep {
            if let Ok(mut idle) = self.idle.lock() {
                idle.push(conn);
            }
        }
        Ok((status, body))
    }
}

/// A 200 with a JSON body that has no `error` object.
pub(crate) fn check_answer(status: u16, body: &[u8]) -> Result<(), CallError> {
    let text = String::from_utf8_lossy(body);
    if status != 200 {
        return Err(CallError::Status {
            status,
            body: text.chars().take(200).collect(),
        });
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(default)]
        error: Option<ApiErr>,
    }
    #[derive(serde::Deserialize)]
    struct ApiErr {
        #[serde(default)]
        code: u32,
        #[serde(default)]
        message: String,
    }
    let a: Answer = serde_json::from_str(&text)
        .map_err(|e| CallError::BadResponse(format!("body is not JSON ({e}): {:.200}", text)))?;
    match a.error {
        Some(e) => Err(CallError::Api {
            code: e.code,
            message: e.message,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_when_complete() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Len"), Ok(None));
        let h = parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\n{\"result\":{}}")
            .unwrap()
            .unwrap();
        assert_eq!(
            h,
            Head {
                status: 200,
                len: 39,
                content_length: Some(13),
                chunked: false,
                close: false
            }
        );
        let h = parse_head(
            b"HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!((h.status, h.chunked, h.close), (401, true, true));
        let h = parse_head(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert!(h.close);
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
    }

    #[test]
    fn chunked_bodies_decode_when_complete() {
        let full = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\nNEXT";
        assert_eq!(
            dechunk(full),
            Ok(Some((b"hello world".to_vec(), full.len() - 4)))
        );
        for cut in 0..full.len() - 4 {
            assert_eq!(dechunk(&full[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(dechunk(b"zz\r\n").is_err());
    }

    #[test]
    fn answers_are_checked() {
        assert_eq!(check_answer(200, br#"{"result":{}}"#), Ok(()));
        assert_eq!(
            check_answer(
                200,
                br#"{"error":{"code":102,"message":"unknown channel"}}"#
            ),
            Err(CallError::Api {
                code: 102,
                message: "unknown channel".into()
            })
        );
        let e = check_answer(401, b"").unwrap_err();
        assert_eq!(
            e.to_string(),
            "API key rejected (HTTP 401): check --api-key"
        );
        assert!(matches!(
            check_answer(200, b"<html>"),
            Err(CallError::BadResponse(_))
        ));
    }

    #[tokio::test]
    async fn keep_alive_roundtrips_against_a_tiny_server() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // One connection, three requests: the pool must reuse it.
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = vec![0u8; 4096];
            let mut answered = 0;
            while answered < 3 {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0);
                seen.extend_from_slice(&buf[..n]);
                while let Some(p) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&seen[..p]).to_string();
                    assert!(head.starts_with("POST /api/publish HTTP/1.1"), "{head}");
                    assert!(head.contains("X-API-Key: k"), "{head}");
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .unwrap()
                        .parse()
                        .unwrap();
                    if seen.len() < p + 4 + len {
                        break;
                    }
                    seen.drain(..p + 4 + len);
                    let body = br#"{"result":{}}"#;
                    let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                    s.write_all(resp.as_bytes()).await.unwrap();
                    s.write_all(body).await.unwrap();
                    answered += 1;
                }
            }
        });
        let target = crate::target::http(&format!("http://{addr}"), false)
            .await
            .unwrap();
        let c = ApiClient::new(target, "k".into(), 1, Duration::from_secs(5));
        for _ in 0..3 {
            c.call("publish", br#"{"channel":"x","data":{}}"#)
                .await
                .unwrap();
        }
        server.await.unwrap();
    }

    #[tokio::test]
    async fn refused_names_the_url() {
        // Bind then drop: nothing listens there any more.
        let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let url = format!("http://{addr}");
        let target = crate::target::http(&url, false).await.unwrap();
        let c = ApiClient::new(target, "k".into(), 1, Duration::from_secs(5));
        let e = c.call("info", b"{}").await.unwrap_err();
        assert_eq!(e, CallError::Refused { url: url.clone() });
        assert!(e.to_string().contains(&url));
    }
}
