//! The servers' Prometheus endpoints (`/metrics`): where each node's is, and its
//! `process_resident_memory_bytes` (the hub exports it, read from `/proc/self` at each
//! scrape), so that `idle` measures a server's memory without `--pid`: a server in a
//! container or on another machine (`--allow-remote`).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use http::Uri;

use crate::publish::{dechunk, parse_head};
use crate::target;

/// The metric read.
pub(crate) const RSS_METRIC: &str = "process_resident_memory_bytes";

/// Expositions larger than this are refused.
const MAX_BODY: u64 = 16 << 20;

/// Time limit of connecting, and of each read or write.
const LIMIT: Duration = Duration::from_secs(5);

/// One node's Prometheus endpoint.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// The URL (`http://host:port/metrics`).
    pub(crate) url: String,
    addr: SocketAddr,
    host: String,
    path: String,
}

/// The `/metrics` URL of the node serving WebSocket URL `ws_url`: the same host and port.
pub(crate) fn url_of(ws_url: &str) -> Result<String, String> {
    let uri: Uri = ws_url
        .parse()
        .map_err(|e| format!("invalid URL {ws_url:?}: {e}"))?;
    let authority = uri
        .authority()
        .ok_or_else(|| format!("URL {ws_url:?} has no host"))?;
    Ok(format!("http://{authority}/metrics"))
}

/// The endpoints to read: `given` (`--metrics-url`; one without a path gets `/metrics`), or
/// else one per node of `ws_urls` (`--url`, comma-separated). Each is resolved (loopback only
/// unless `allow_remote`) and listed once, however often it was named.
pub(crate) async fn endpoints(
    given: &[String],
    ws_urls: &str,
    allow_remote: bool,
) -> Result<Vec<Endpoint>, String> {
    let urls: Vec<String> = if given.is_empty() {
        ws_urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(url_of)
            .collect::<Result<_, _>>()?
    } else {
        given
            .iter()
            .map(|u| u.trim())
            .filter(|u| !u.is_empty())
            .map(|u| match u.parse::<Uri>() {
                Ok(uri) if matches!(uri.path(), "" | "/") => {
                    format!("{}/metrics", u.trim_end_matches('/'))
                }
                _ => u.to_owned(),
            })
            .collect()
    };
    let mut out: Vec<Endpoint> = Vec::new();
    for url in urls {
        if out.iter().any(|e| e.url == url) {
            continue;
        }
        let t = target::http(&url, allow_remote).await?;
        let path = if t.base_path.is_empty() {
            "/".to_owned()
        } else {
            t.base_path.clone()
        };
        out.push(Endpoint {
            url,
            addr: t.addr,
            host: t.host,
            path,
        });
    }
    Ok(out)
}

impl Endpoint {
    /// `GET`s the exposition (blocking, each step within 5 s).
    pub(crate) fn scrape(&self) -> Result<String, String> {
        let fail = |e: &dyn std::fmt::Display| format!("GET {}: {e}", self.url);
        let mut s = TcpStream::connect_timeout(&self.addr, LIMIT).map_err(|e| fail(&e))?;
        s.set_read_timeout(Some(LIMIT)).map_err(|e| fail(&e))?;
        s.set_write_timeout(Some(LIMIT)).map_err(|e| fail(&e))?;
        write!(
            s,
            "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n",
            self.path, self.host
        )
        .map_err(|e| fail(&e))?;
        let mut buf = Vec::new();
        s.take(MAX_BODY)
            .read_to_end(&mut buf)
            .map_err(|e| fail(&e))?;
        let head = parse_head(&buf)
            .map_err(|e| fail(&e))?
            .ok_or_else(|| fail(&"the response ended within its head"))?;
        if head.status != 200 {
            return Err(fail(&format!("HTTP {}", head.status)));
        }
        let rest = &buf[head.len..];
        let body = if head.chunked {
            dechunk(rest)
                .map_err(|e| fail(&e))?
                .ok_or_else(|| fail(&"the chunked body ended early"))?
                .0
        } else {
            match head.content_length {
                Some(n) if n <= rest.len() => rest[..n].to_vec(),
                Some(_) => return Err(fail(&"the body ended early")),
                None => rest.to_vec(),
            }
        };
        String::from_utf8(body).map_err(|_| fail(&"the body is not UTF-8"))
    }

    /// The node's RSS, bytes.
    pub(crate) fn rss(&self) -> Result<u64, String> {
        let text = self.scrape()?;
        parse_rss(&text).ok_or_else(|| {
            format!(
                "{} has no {RSS_METRIC} (a hub-server before this metric, or not on Linux)",
                self.url
            )
        })
    }
}

/// `process_resident_memory_bytes` (without labels) of an exposition text.
pub(crate) fn parse_rss(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (name, value) = l.trim().split_once(char::is_whitespace)?;
        if name != RSS_METRIC {
            return None;
        }
        // A timestamp may follow the value.
        let v: f64 = value.split_whitespace().next()?.parse().ok()?;
        (v.is_finite() && v >= 0.0).then_some(v as u64)
    })
}

/// The RSS of every endpoint, summed; the error names the first that could not be read.
pub(crate) fn rss_sum(endpoints: &[Endpoint]) -> Result<u64, String> {
    blocking(|| endpoints.iter().map(Endpoint::rss).sum())
}

/// Runs blocking `f` on this thread; within a multi-threaded runtime, its other tasks move to
/// other threads meanwhile (`block_in_place`).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_url_is_the_nodes_host_and_port() {
        assert_eq!(
            url_of("ws://127.0.0.1:8000/connection/websocket").unwrap(),
            "http://127.0.0.1:8000/metrics"
        );
        assert_eq!(
            url_of("ws://[::1]/connection/websocket").unwrap(),
            "http://[::1]/metrics"
        );
        assert!(url_of("not a url").is_err());
    }

    #[tokio::test]
    async fn endpoints_are_derived_or_given_and_listed_once() {
        let e = endpoints(
            &[],
            "ws://127.0.0.1:8001/connection/websocket,ws://127.0.0.1:8002/x,\
             ws://127.0.0.1:8001/connection/websocket",
            false,
        )
        .await
        .unwrap();
        let urls: Vec<&str> = e.iter().map(|e| e.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "http://127.0.0.1:8001/metrics",
                "http://127.0.0.1:8002/metrics"
            ]
        );
        assert_eq!(e[0].path, "/metrics");
        let e = endpoints(
            &["http://127.0.0.1:9/".into(), "http://127.0.0.1:9090".into()],
            "ws://127.0.0.1:8001/x",
            false,
        )
        .await
        .unwrap();
        assert_eq!(e[0].url, "http://127.0.0.1:9/metrics");
        assert_eq!(e[1].url, "http://127.0.0.1:9090/metrics");
        assert_eq!(e[1].path, "/metrics");
        let err = endpoints(&["http://192.0.2.1:9090/metrics".into()], "", false)
            .await
            .unwrap_err();
        assert!(err.contains("--allow-remote"), "{err}");
    }

    #[test]
    fn rss_is_read_from_the_unlabelled_sample() {
        let text = "# HELP process_resident_memory_bytes Resident memory size in bytes.\n\
                    # TYPE process_resident_memory_bytes gauge\n\
                    process_resident_memory_bytes_other 1\n\
                    process_resident_memory_bytes{pid=\"1\"} 2\n\
                    process_resident_memory_bytes 1.8874368e7 1700000000000\n";
        assert_eq!(parse_rss(text), Some(18_874_368));
        assert_eq!(parse_rss("hub_connections 3\n"), None);
        assert_eq!(parse_rss("process_resident_memory_bytes NaN\n"), None);
    }

    #[test]
    fn a_tiny_server_is_scraped_and_a_closed_port_named() {
        use std::io::BufRead as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for body in ["process_resident_memory_bytes 4096\n", "up 1\n"] {
                let (s, _) = listener.accept().unwrap();
                let mut r = std::io::BufReader::new(s);
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                assert_eq!(line, "GET /metrics HTTP/1.1\r\n");
                while line != "\r\n" {
                    line.clear();
                    r.read_line(&mut line).unwrap();
                }
                let mut s = r.into_inner();
                // Chunked, as hyper sends a streamed body.
                write!(
                    s,
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                    body.len()
                )
                .unwrap();
            }
        });
        let e = Endpoint {
            url: format!("http://{addr}/metrics"),
            addr,
            host: addr.to_string(),
            path: "/metrics".into(),
        };
        assert_eq!(rss_sum(std::slice::from_ref(&e)), Ok(4096));
        let err = e.rss().unwrap_err();
        assert!(
            err.contains("has no process_resident_memory_bytes"),
            "{err}"
        );
        server.join().unwrap();
        let err = e.rss().unwrap_err();
        assert!(
            err.starts_with(&format!("GET http://{addr}/metrics: ")),
            "{err}"
        );
    }
}
