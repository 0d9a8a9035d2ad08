//! Where the load goes, checked before any traffic: the URLs parse, their hosts resolve to
//! loopback addresses (unless `--allow-remote`), and this process may open enough files.

use std::net::SocketAddr;

use http::Uri;

/// A WebSocket endpoint: the URL for the handshake and the address to dial.
#[derive(Debug, Clone)]
pub(crate) struct WsTarget {
    /// The URL as given (`ws://host:port/path`).
    pub(crate) url: String,
    /// The resolved address.
    pub(crate) addr: SocketAddr,
}

/// An HTTP server API endpoint.
#[derive(Debug, Clone)]
pub(crate) struct HttpTarget {
    /// The URL as given.
    pub(crate) url: String,
    /// The resolved address.
    pub(crate) addr: SocketAddr,
    /// The `Host` header value.
    pub(crate) host: String,
    /// The path before `/api/...`, without a trailing slash ("" for the root).
    pub(crate) base_path: String,
}

/// Host and port of `url`, after checking its scheme is one of `schemes` (the first one's
/// default port applies when the URL has none).
fn host_port(url: &str, schemes: &[(&str, u16)]) -> Result<(Uri, String, u16), String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    let scheme = uri.scheme_str().unwrap_or("");
    let Some(&(_, default_port)) = schemes.iter().find(|(s, _)| *s == scheme) else {
        let names: Vec<&str> = schemes.iter().map(|(s, _)| *s).collect();
        return Err(format!(
            "URL {url:?} must start with {}:// (TLS is not supported)",
            names.join(":// or ")
        ));
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("URL {url:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(default_port);
    Ok((uri, host, port))
}

/// Resolves `host:port` and keeps loopback-only unless `allow_remote`.
async fn resolve(
    url: &str,
    host: &str,
    port: u16,
    allow_remote: bool,
) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve {host:?} (from {url}): {e}"))?
            .collect(),
    };
    check_loopback(url, &addrs, allow_remote)?;
    addrs
        .first()
        .copied()
        .ok_or_else(|| format!("{host:?} (from {url}) resolves to no address"))
}

/// Refuses addresses outside loopback unless `allow_remote`.
pub(crate) fn check_loopback(
    url: &str,
    addrs: &[SocketAddr],
    allow_remote: bool,
) -> Result<(), String> {
    if allow_remote {
        return Ok(());
    }
    match addrs.iter().find(|a| !a.ip().is_loopback()) {
        Some(a) => Err(format!(
            "{url} resolves to {}, which is not a loopback address: the load client only \
             targets this machine unless --allow-remote is given",
            a.ip()
        )),
        None => Ok(()),
    }
}

/// Parses and resolves a `ws://` URL.
pub(crate) async fn ws(url: &str, allow_remote: bool) -> Result<WsTarget, String> {
    let (_, host, port) = host_port(url, &[("ws", 80)])?;
    let addr = resolve(url, &host, port, allow_remote).await?;
    Ok(WsTarget {
        url: url.to_owned(),
        addr,
    })
}

/// Parses and resolves a comma-separated list of `ws://` URLs (`--url a,b,c`, one per
/// cluster node).
pub(crate) async fn ws_list(urls: &str, allow_remote: bool) -> Result<Vec<WsTarget>, String> {
    let mut out = Vec::new();
    for u in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        out.push(ws(u, allow_remote).await?);
    }
    if out.is_empty() {
        return Err("--url: no URL given".into());
    }
    Ok(out)
}

/// The first of a comma-separated list of URLs (`--api-url` of a cluster: publications go
/// through one node).
pub(crate) fn first_url(urls: &str) -> &str {
    urls.split(',')
        .map(str::trim)
        .find(|u| !u.is_empty())
        .unwrap_or("")
}

/// Checks `--source-addrs`: loopback only unless `allow_remote` (binding to another
/// machine's address would fail anyway).
pub(crate) fn check_sources(
    sources: &[std::net::IpAddr],
    allow_remote: bool,
) -> Result<(), String> {
    match sources.iter().find(|a| !a.is_loopback()) {
        Some(a) if !allow_remote => Err(format!(
            "--source-addrs {a} is not a loopback address; use 127.0.0.0/8 (or --allow-remote)"
        )),
        _ => Ok(()),
    }
}

/// Parses and resolves an `http://` URL of the server API's host (a path prefix is kept).
pub(crate) async fn http(url: &str, allow_remote: bool) -> Result<HttpTarget, String> {
    let (uri, host, port) = host_port(url, &[("http", 80)])?;
    let addr = resolve(url, &host, port, allow_remote).await?;
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or(&host);
    Ok(HttpTarget {
        url: url.to_owned(),
        addr,
        host: authority.to_owned(),
        base_path: uri.path().trim_end_matches('/').to_owned(),
    })
}

/// Files kept free beyond the connections: stdio, the runtime, the API client, /proc reads.
pub(crate) const FILE_MARGIN: u64 = 64;

/// Raises the soft open-files limit to the hard limit and checks that `connections` sockets
/// (plus `extra` and [`FILE_MARGIN`]) fit; `flag` names the option to lower in the error.
pub(crate) fn ensure_open_files(connections: u64, extra: u64, flag: &str) -> Result<u64, String> {
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map_err(|e| format!("cannot read the open-files limit: {e}"))?;
    let soft = rlimit::increase_nofile_limit(hard)
        .map_err(|e| format!("cannot raise the open-files limit: {e}"))?;
    check_files(connections, extra, soft, flag)?;
    Ok(soft)
}

/// The check of [`ensure_open_files`], given the limit in force.
pub(crate) fn check_files(
    connections: u64,
    extra: u64,
    limit: u64,
    flag: &str,
) -> Result<(), String> {
    let needed = connections
        .saturating_add(extra)
        .saturating_add(FILE_MARGIN);
    if needed <= limit {
        return Ok(());
    }
    let max = limit.saturating_sub(extra + FILE_MARGIN);
    Err(format!(
        "{flag} {connections} needs {needed} open files, but this process may open at most \
         {limit} (the hard limit, `ulimit -Hn`); the most this machine allows is {flag} {max}. \
         Raise the hard limit (limits.conf, or LimitNOFILE in a systemd unit) to go further"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ws_urls_parse_and_resolve_to_loopback() {
        let t = ws("ws://127.0.0.1:8000/connection/websocket", false)
            .await
            .unwrap();
        assert_eq!(t.addr, "127.0.0.1:8000".parse().unwrap());
        let t = ws("ws://[::1]:9/x", false).await.unwrap();
        assert_eq!(t.addr, "[::1]:9".parse().unwrap());
        let t = ws("ws://127.0.0.1/x", false).await.unwrap();
        assert_eq!(t.addr.port(), 80);
    }

    #[tokio::test]
    async fn bad_urls_are_explained() {
        let e = ws("wss://127.0.0.1:8000/x", false).await.unwrap_err();
        assert!(e.contains("ws://"), "{e}");
        let e = ws("not a url", false).await.unwrap_err();
        assert!(e.contains("invalid URL"), "{e}");
        let e = http("ws://127.0.0.1:8000", false).await.unwrap_err();
        assert!(e.contains("http://"), "{e}");
    }

    #[tokio::test]
    async fn remote_addresses_need_allow_remote() {
        // A documentation address (TEST-NET-1): checked, never dialled.
        let e = ws("ws://192.0.2.1:8000/x", false).await.unwrap_err();
        assert!(e.contains("--allow-remote"), "{e}");
        assert!(ws("ws://192.0.2.1:8000/x", true).await.is_ok());
    }

    #[tokio::test]
    async fn url_lists_split_on_commas() {
        let t = ws_list("ws://127.0.0.1:1/a, ws://127.0.0.2:2/b,", false)
            .await
            .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].addr, "127.0.0.2:2".parse().unwrap());
        assert!(ws_list(" , ", false).await.is_err());
        assert_eq!(first_url(" http://a:1 ,http://b:2"), "http://a:1");
        assert!(check_sources(&["127.0.0.3".parse().unwrap()], false).is_ok());
        assert!(check_sources(&["10.0.0.1".parse().unwrap()], false).is_err());
    }

    #[tokio::test]
    async fn http_targets_keep_host_and_prefix() {
        let t = http("http://127.0.0.1:8000", false).await.unwrap();
        assert_eq!(t.host, "127.0.0.1:8000");
        assert_eq!(t.base_path, "");
        let t = http("http://127.0.0.1:8000/hub/", false).await.unwrap();
        assert_eq!(t.base_path, "/hub");
    }

    #[test]
    fn file_limit_check_names_the_maximum() {
        assert!(check_files(19_000, 0, 20_000, "--connections").is_ok());
        let e = check_files(20_000, 16, 20_000, "--subscribers").unwrap_err();
        assert!(e.contains("--subscribers 19920"), "{e}");
        assert!(e.contains("20080"), "{e}");
    }
}
