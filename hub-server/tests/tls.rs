//! `http_server.tls`: WebSocket (`wss://`) and the server API over HTTPS on one port, with a
//! self-signed certificate made at test time; a plain-text or silent client disturbs nobody;
//! a bad certificate or key stops the binary at start with the file named; the real
//! `centrifuge` npm client over `wss://`.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, ServerName};
use support::process::{free_port, TempDir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A self-signed certificate for `localhost` and `127.0.0.1`, with its key.
struct Cert {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

fn self_signed() -> Cert {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("rcgen");
    Cert {
        cert_pem: c.cert.pem(),
        key_pem: c.signing_key.serialize_pem(),
        der: c.cert.der().clone(),
    }
}

/// The test config with TLS on, the certificate and key inline.
fn tls_config(cert: &Cert) -> hub_server::config::Config {
    support::config(serde_json::json!({
        "http_server": {"tls": {
            "enabled": true,
            "server_cert_pem": cert.cert_pem,
            "server_key_pem": cert.key_pem,
        }}
    }))
}

/// A client trusting only `cert`, offering ALPN `http/1.1`, limited to `versions`.
fn connector(cert: &Cert, versions: &[&'static rustls::SupportedProtocolVersion]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

fn default_connector(cert: &Cert) -> TlsConnector {
    connector(cert, rustls::DEFAULT_VERSIONS)
}

/// Opens TCP and completes the TLS handshake (certificate checked for 127.0.0.1) within 5 s.
async fn tls_connect(addr: SocketAddr, tls: &TlsConnector) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    tokio::time::timeout(Duration::from_secs(5), tls.connect(name, tcp))
        .await
        .expect("TLS handshake took over 5 s")
        .expect("TLS handshake")
}

/// An HTTPS request; returns status and body.
async fn https(
    addr: SocketAddr,
    tls: &TlsConnector,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let s = tls_connect(addr, tls).await;
    let (status, _, body) = support::raw_http::request_on(
        s,
        &addr.to_string(),
        method,
        path,
        headers,
        body,
        Duration::from_secs(10),
    )
    .await;
    (status, body)
}

/// Publishes through the server API over HTTPS; returns the parsed reply.
async fn publish(addr: SocketAddr, tls: &TlsConnector, channel: &str, data: serde_json::Value) {
    let (status, body) = https(
        addr,
        tls,
        "POST",
        "/api/publish",
        &[("X-API-Key", support::API_KEY)],
        &serde_json::json!({"channel": channel, "data": data}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "publish over HTTPS: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v.get("error").is_none(), "publish failed: {v}");
}

type Wss = WebSocketStream<TlsStream<TcpStream>>;

async fn wss(addr: SocketAddr, tls: &TlsConnector) -> Wss {
    let s = tls_connect(addr, tls).await;
    let (ws, _) = tokio_tungstenite::client_async(format!("wss://{addr}/connection/websocket"), s)
        .await
        .expect("WebSocket handshake over TLS");
    ws
}

async fn send(ws: &mut Wss, v: serde_json::Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// Reads JSON messages (pings `{}` skipped) until one satisfies `pred`; returns it.
async fn until(ws: &mut Wss, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no frame in time")
            .expect("socket closed")
            .expect("socket error");
        if let Message::Text(t) = m {
            for line in t.split('\n') {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                if pred(&v) {
                    return v;
                }
            }
        }
    }
}

/// Connects over `wss://` with a token, subscribes to `channel`; returns the socket.
async fn subscribed(addr: SocketAddr, tls: &TlsConnector, user: &str, channel: &str) -> Wss {
    let mut ws = wss(addr, tls).await;
    let token = support::token(serde_json::json!({"sub": user}));
    send(
        &mut ws,
        serde_json::json!({"id": 1, "connect": {"token": token}}),
    )
    .await;
    let r = until(&mut ws, |v| v["id"] == 1).await;
    assert!(r["connect"]["client"].is_string(), "connect failed: {r}");
    send(
        &mut ws,
        serde_json::json!({"id": 2, "subscribe": {"channel": channel}}),
    )
    .await;
    let r = until(&mut ws, |v| v["id"] == 2).await;
    assert!(r.get("error").is_none(), "subscribe failed: {r}");
    ws
}

/// Waits for the publication push on `channel`; returns its data.
async fn publication(ws: &mut Wss, channel: &str) -> serde_json::Value {
    let p = until(ws, |v| {
        v["push"]["channel"] == channel && v["push"].get("pub").is_some()
    })
    .await;
    p["push"]["pub"]["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_and_server_api_over_tls_on_one_port() {
    let cert = self_signed();
    let server = support::start(tls_config(&cert)).await;
    let tls = default_connector(&cert);

    // TLS 1.3 by default, ALPN http/1.1 (WebSocket upgrades are HTTP/1.1).
    let s = tls_connect(server.addr, &tls).await;
    let (_, conn) = s.get_ref();
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    drop(s);

    let mut ws = subscribed(server.addr, &tls, "alice", "news").await;
    publish(
        server.addr,
        &tls,
        "news",
        serde_json::json!({"text": "over tls"}),
    )
    .await;
    assert_eq!(
        publication(&mut ws, "news").await,
        serde_json::json!({"text": "over tls"})
    );

    // Health and metrics are on the same TLS port.
    let (status, body) = https(server.addr, &tls, "GET", "/health", &[], "").await;
    assert_eq!((status, body.as_str()), (200, "{}"));
    let (status, body) = https(server.addr, &tls, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200);
    assert!(body.contains("hub_engine_ready"), "metrics: {body}");

    // A TLS 1.2-only client is served too.
    let tls12 = connector(&cert, &[&rustls::version::TLS12]);
    let s = tls_connect(server.addr, &tls12).await;
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    drop(s);
    let mut ws12 = subscribed(server.addr, &tls12, "bob", "news").await;
    publish(server.addr, &tls12, "news", serde_json::json!({"n": 2})).await;
    assert_eq!(
        publication(&mut ws12, "news").await,
        serde_json::json!({"n": 2})
    );
    assert_eq!(
        publication(&mut ws, "news").await,
        serde_json::json!({"n": 2})
    );

    // A client that does not trust the certificate gets no connection.
    let stranger = default_connector(&self_signed());
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let name = ServerName::IpAddress(server.addr.ip().into());
    let err = stranger.connect(name, tcp).await.unwrap_err();
    // rcgen names every certificate alike: the stranger's anchor matches by name, not by key.
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );

    // Graceful shutdown closes the TLS WebSocket with 3001 too.
    let stopping = tokio::spawn(server.shutdown());
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => break f.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(code, Some(3001));
    stopping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_the_tls_port_is_not_served_and_tls_clients_still_are() {
    let cert = self_signed();
    let server = support::start(tls_config(&cert)).await;
    let tls = default_connector(&cert);

    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    // The handshake fails at once: the connection ends long before the handshake timeout.
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf))
        .await
        .expect("the plain-text connection was not closed");
    assert!(
        !buf.starts_with(b"HTTP/"),
        "plain HTTP got an HTTP answer: {:?}",
        String::from_utf8_lossy(&buf)
    );
    // At most a TLS alert record (content type 21).
    assert!(buf.is_empty() || buf[0] == 21, "not a TLS alert: {buf:?}");

    let (status, body) = https(server.addr, &tls, "GET", "/health", &[], "").await;
    assert_eq!((status, body.as_str()), (200, "{}"));
    let mut ws = subscribed(server.addr, &tls, "alice", "after").await;
    publish(server.addr, &tls, "after", serde_json::json!(1)).await;
    assert_eq!(publication(&mut ws, "after").await, serde_json::json!(1));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_say_hello_block_no_one_and_are_cut_after_the_handshake_timeout() {
    let cert = self_signed();
    let server = support::start(tls_config(&cert)).await;
    let tls = default_connector(&cert);

    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // Half a ClientHello: a handshake started and stalled.
    let mut partial = TcpStream::connect(server.addr).await.unwrap();
    partial.write_all(&[22, 3, 1, 0, 200, 1]).await.unwrap();

    // Meanwhile others get through at once, over and over.
    for i in 0..5 {
        let t = Instant::now();
        let (status, _) = https(server.addr, &tls, "GET", "/health", &[], "").await;
        assert_eq!(status, 200);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "request {i} took {:?} behind silent clients",
            t.elapsed()
        );
    }
    let mut ws = subscribed(server.addr, &tls, "alice", "busy").await;
    publish(server.addr, &tls, "busy", serde_json::json!("x")).await;
    assert_eq!(publication(&mut ws, "busy").await, serde_json::json!("x"));

    // The stalled ones are dropped after the 10 s handshake timeout, not before.
    silent.push(partial);
    for mut s in silent {
        let mut buf = Vec::new();
        // Ok(0) on the server's FIN (or a reset): either way, cut.
        let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf))
            .await
            .expect("a silent client was never cut");
        assert!(buf.is_empty(), "silent client got bytes: {buf:?}");
    }
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(20),
        "silent clients cut after {waited:?}"
    );
    server.shutdown().await;
}

/// Runs the real binary with `tls` as `http_server.tls`; returns its exit status and stderr.
async fn run_binary(dir: &Path, tls: serde_json::Value) -> (std::process::ExitStatus, String) {
    let mut config = serde_json::to_value(support::config(serde_json::json!({}))).unwrap();
    config["http_server"]["port"] = serde_json::json!(free_port());
    config["http_server"]["tls"] = tls;
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hub-server"))
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .expect("hub-server kept running with a bad TLS setup")
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_refuses_to_start_with_a_missing_or_mismatched_key() {
    let dir = TempDir::new("tls");
    let (a, b) = (self_signed(), self_signed());
    let file = |name: &str, text: &str| -> PathBuf {
        let p = dir.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let cert_a = file("a.crt", &a.cert_pem);
    let key_b = file("b.key", &b.key_pem);
    let missing = dir.0.join("missing.key");

    let (status, stderr) = run_binary(
        &dir.0,
        serde_json::json!({"enabled": true, "server_cert_pem_file": cert_a, "server_key_pem_file": missing}),
    )
    .await;
    assert!(!status.success(), "started without its key: {stderr}");
    assert!(
        stderr.contains("cannot read http_server.tls.server_key_pem_file")
            && stderr.contains(&missing.display().to_string()),
        "the missing file is not named: {stderr}"
    );

    let (status, stderr) = run_binary(
        &dir.0,
        serde_json::json!({"enabled": true, "server_cert_pem_file": cert_a, "server_key_pem_file": key_b}),
    )
    .await;
    assert!(
        !status.success(),
        "started with another certificate's key: {stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "error: the private key in http_server.tls.server_key_pem_file {:?} does not \
             belong to the certificate in http_server.tls.server_cert_pem_file {:?}",
            key_b.display().to_string(),
            cert_a.display().to_string()
        )),
        "no clear mismatch error: {stderr}"
    );

    // The files swapped: no certificate where the certificate should be.
    let (status, stderr) = run_binary(
        &dir.0,
        serde_json::json!({"enabled": true, "server_cert_pem_file": key_b, "server_key_pem_file": cert_a}),
    )
    .await;
    assert!(!status.success());
    assert!(
        stderr.contains("no certificate") && stderr.contains(&key_b.display().to_string()),
        "{stderr}"
    );

    // Enabled without any certificate configured.
    let (status, stderr) = run_binary(&dir.0, serde_json::json!({"enabled": true})).await;
    assert!(!status.success());
    assert!(
        stderr.contains("neither http_server.tls.server_cert_pem nor http_server.tls.server_cert_pem_file is set"),
        "{stderr}"
    );
}

/// The real `centrifuge` npm client under Node over `wss://`, trusting the test certificate
/// through `NODE_EXTRA_CA_CERTS` (verification stays on): `tests/js/tls.test.mjs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn centrifuge_js_over_wss() {
    let cert = self_signed();
    let server = support::start(tls_config(&cert)).await;
    let dir = TempDir::new("tls-js");
    let ca = dir.0.join("ca.pem");
    std::fs::write(&ca, &cert.cert_pem).unwrap();

    let js = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/js");
    assert!(
        js.join("node_modules/centrifuge").exists(),
        "node_modules missing in {}: run `npm ci --prefix tests/js` (scripts/test.sh does)",
        js.display()
    );
    let addr = server.addr;
    let run = tokio::process::Command::new("node")
        .arg("--test")
        .arg("tls.test.mjs")
        .current_dir(&js)
        .env("HUB_WS_URL", format!("wss://{addr}/connection/websocket"))
        .env("HUB_API_URL", format!("https://{addr}"))
        .env("HUB_API_KEY", support::API_KEY)
        .env("HUB_SECRET", support::SECRET)
        .env("NODE_EXTRA_CA_CERTS", &ca)
        .env_remove("NODE_TLS_REJECT_UNAUTHORIZED")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the node test did not finish within 120 s")
        .expect("node must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(out.status.success(), "tls.test.mjs failed");
    assert!(
        stdout.contains("# fail 0") && stdout.contains("# pass 2"),
        "node reported failures"
    );
    server.shutdown().await;
}

/// `grpc_api.tls`: the gRPC server API over TLS (tonic, ALPN h2) next to HTTPS; a
/// plain-text gRPC client gets nothing; a bad key for it fails the build with its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_api_over_tls() {
    use hub_server::api::grpc::proto;
    use hub_server::api::grpc::proto::centrifugo_api_client::CentrifugoApiClient;
    use tonic::transport::{Certificate, Channel, ClientTlsConfig};

    let cert = self_signed();
    let tls_section = serde_json::json!({
        "enabled": true,
        "server_cert_pem": cert.cert_pem,
        "server_key_pem": cert.key_pem,
    });
    let mut config = tls_config(&cert);
    config.grpc_api = serde_json::from_value(serde_json::json!({
        "enabled": true, "key": "grpc-key", "tls": tls_section,
    }))
    .unwrap();
    let server = support::start(config).await;
    let grpc = server.grpc_addr.unwrap();
    let tls = default_connector(&cert);
    let mut ws = subscribed(server.addr, &tls, "alice", "grpc").await;

    let channel = Channel::from_shared(format!("https://localhost:{}", grpc.port()))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&cert.cert_pem)))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("gRPC over TLS");
    let mut client = CentrifugoApiClient::new(channel);
    let mut req = tonic::Request::new(proto::PublishRequest {
        channel: "grpc".into(),
        data: br#"{"via":"grpc+tls"}"#.to_vec().into(),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("authorization", "apikey grpc-key".parse().unwrap());
    let res = client
        .publish(req)
        .await
        .expect("publish over gRPC+TLS")
        .into_inner();
    assert!(res.error.is_none(), "{:?}", res.error);
    assert_eq!(
        publication(&mut ws, "grpc").await,
        serde_json::json!({"via": "grpc+tls"})
    );

    // Plain text to the TLS gRPC port: no answer.
    let plain = Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    let mut plain = CentrifugoApiClient::new(plain);
    let mut req = tonic::Request::new(proto::InfoRequest::default());
    req.metadata_mut()
        .insert("authorization", "apikey grpc-key".parse().unwrap());
    assert!(
        plain.info(req).await.is_err(),
        "plain gRPC was served on the TLS port"
    );
    server.shutdown().await;

    // Its own certificate checks, with its own section named.
    let mut bad = tls_config(&cert);
    bad.grpc_api = serde_json::from_value(serde_json::json!({
        "enabled": true, "key": "k",
        "tls": {"enabled": true, "server_cert_pem": cert.cert_pem, "server_key_pem": self_signed().key_pem},
    }))
    .unwrap();
    let err = hub_server::server::build(bad)
        .await
        .err()
        .expect("built with a foreign key");
    assert!(
        err.contains("the private key in grpc_api.tls.server_key_pem does not belong to the certificate in grpc_api.tls.server_cert_pem"),
        "{err}"
    );
}
