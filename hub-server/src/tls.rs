//! TLS termination with rustls (the ring provider): the certificate and key of
//! `http_server.tls` (and `grpc_api.tls`) read at start, the server configs built from them,
//! and [`TlsListener`], a listener for `axum::serve` that hands over finished handshakes.
//!
//! Handshakes run in their own tasks, each bounded by [`HANDSHAKE_TIMEOUT`], at most
//! [`MAX_HANDSHAKES`] at once: a client that opens TCP and never says hello, or a flood of
//! them, delays nobody else's handshake and cannot grow memory without bound.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::Tls;

/// Longest a client may take to finish its TLS handshake; then the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most TLS handshakes in flight; more connections wait in the kernel's accept queue.
pub const MAX_HANDSHAKES: usize = 1024;

/// The PEM text of a certificate chain and its private key, and where each came from (for
/// errors: the config key, and the file when read from one).
pub struct PemPair {
    /// The certificate chain, PEM.
    pub cert: Vec<u8>,
    /// `http_server.tls.server_cert_pem`, or `..._file "<path>"`.
    pub cert_from: String,
    /// The private key, PEM.
    pub key: Vec<u8>,
    /// `http_server.tls.server_key_pem`, or `..._file "<path>"`.
    pub key_from: String,
}

impl PemPair {
    /// Reads the certificate and key of `tls` (inline PEM when set, else the file).
    /// `section` names the config section in errors (`http_server.tls`).
    pub fn read(section: &str, tls: &Tls) -> Result<PemPair, String> {
        let (cert, cert_from) = read_pem(
            section,
            "server_cert_pem",
            &tls.server_cert_pem,
            &tls.server_cert_pem_file,
        )?;
        let (key, key_from) = read_pem(
            section,
            "server_key_pem",
            &tls.server_key_pem,
            &tls.server_key_pem_file,
        )?;
        Ok(PemPair {
            cert,
            cert_from,
            key,
            key_from,
        })
    }

    /// The certificate chain and key as DER; an error names what is missing and where.
    pub fn parse(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
        let certs = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("invalid PEM in {}: {e}", self.cert_from))?;
        if certs.is_empty() {
            return Err(format!(
                "no certificate (-----BEGIN CERTIFICATE-----) in {}",
                self.cert_from
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => format!(
                "no private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE \
                 KEY) in {}",
                self.key_from
            ),
            e => format!("invalid PEM in {}: {e}", self.key_from),
        })?;
        Ok((certs, key))
    }

    /// A rustls server config for this pair: TLS 1.2 and 1.3 on the ring provider, `alpn`
    /// offered. Fails, naming both sources, when the key is not the certificate's.
    pub fn server_config(&self, alpn: &[u8]) -> Result<rustls::ServerConfig, String> {
        let (certs, key) = self.parse()?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "the private key in {} does not belong to the certificate in {} (a key of \
                 another certificate?): {e}",
                self.key_from, self.cert_from
            ),
            e => format!(
                "cannot use the certificate in {} with the key in {}: {e}",
                self.cert_from, self.key_from
            ),
        })?;
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(config)
    }
}

/// Reads one PEM item of `tls`: the inline text when set, else the file. Returns the text
/// and where it came from, for errors.
fn read_pem(
    section: &str,
    key: &str,
    inline: &str,
    file: &str,
) -> Result<(Vec<u8>, String), String> {
    if !inline.trim().is_empty() {
        return Ok((inline.as_bytes().to_vec(), format!("{section}.{key}")));
    }
    if file.is_empty() {
        return Err(format!(
            "{section}.enabled is true but neither {section}.{key} nor {section}.{key}_file \
             is set"
        ));
    }
    let from = format!("{section}.{key}_file {file:?}");
    let text = std::fs::read(file).map_err(|e| format!("cannot read {from}: {e}"))?;
    Ok((text, from))
}

/// The rustls server config of `http_server.tls`-like `tls`: read at call, TLS 1.2 and 1.3 on
/// the ring provider, ALPN `http/1.1` (WebSocket upgrades need HTTP/1.1). Errors name the
/// key or file at fault.
pub fn server_config(section: &str, tls: &Tls) -> Result<Arc<rustls::ServerConfig>, String> {
    Ok(Arc::new(
        PemPair::read(section, tls)?.server_config(b"http/1.1")?,
    ))
}

/// The tonic TLS config of `grpc_api.tls`-like `tls`: the same files and checks as
/// [`server_config`] (errors name the key or file at fault), handshakes bounded by
/// [`HANDSHAKE_TIMEOUT`]; tonic offers ALPN `h2` on the process's default provider, ring.
pub fn grpc_server_config(
    section: &str,
    tls: &Tls,
) -> Result<tonic::transport::ServerTlsConfig, String> {
    let pair = PemPair::read(section, tls)?;
    // Checked with our errors; tonic parses the PEM again into its own rustls config.
    pair.server_config(b"h2")?;
    // tonic builds that config on the default provider: make sure it is ring. An error
    // means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(&pair.cert, &pair.key))
        .timeout(HANDSHAKE_TIMEOUT))
}

/// A TLS listener for `axum::serve`: a background task accepts TCP connections (with
/// `TCP_NODELAY`), runs each handshake in its own task with [`HANDSHAKE_TIMEOUT`], and
/// passes the finished streams on. Failed handshakes are logged at debug and dropped.
/// Dropping the listener stops accepting and closes the socket. For
/// `into_make_service_with_connect_info::<SocketAddr>()`, wrap it in
/// `axum::serve::ListenerExt::tap_io` (axum gives `ConnectInfo` to `TapIo` listeners).
pub struct TlsListener {
    streams: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    accept_task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `listener` with `config` (see [`server_config`]). Needs a Tokio
    /// runtime.
    pub fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<TlsListener> {
        let local_addr = listener.local_addr()?;
        let (tx, streams) = mpsc::channel(64);
        let accept_task = tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), tx));
        Ok(TlsListener {
            streams,
            local_addr,
            accept_task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.streams.recv().await {
            Some(s) => s,
            // The accept task is gone (it only ends when aborted): nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        // At the limit, stop accepting until a handshake ends: the kernel queues the rest.
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let (tcp, addr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                handle_accept_error(e).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            // Held until the stream is handed over, so streams waiting for axum count too.
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = tx.send((stream, addr)).await;
                }
                Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
            }
        });
    }
}

/// As axum's own TCP listener: errors of one connection are skipped; others (out of file
/// descriptors) are logged and accepting pauses for a second.
async fn handle_accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept error");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
