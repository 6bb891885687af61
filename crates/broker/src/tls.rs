//! HTTPS: the certificate the broker presents (`[broker] tls_cert` and
//! `tls_key`, PEM), replaced on SIGHUP, and the listener that does each
//! connection's TLS handshake (rustls with ring, TLS 1.2 and 1.3).
//!
//! Plain HTTP is served only on loopback addresses, unless `[broker]
//! insecure_http = true` says a TLS-terminating proxy sits in front: a
//! broker never hands out sessions and credentials in the clear by accident.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration as StdDuration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::error::{Error, Result};

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: StdDuration = StdDuration::from_secs(10);

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server certificate first, then any intermediates.
    pub cert: PathBuf,
    /// Its private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: PathBuf,
}

/// Refuses to serve plain HTTP on an address other machines can reach,
/// unless the operator said a TLS-terminating proxy is in front.
pub fn check_listen(listen: SocketAddr, tls: bool, insecure_http: bool) -> Result<()> {
    if tls || insecure_http || listen.ip().is_loopback() {
        return Ok(());
    }
    Err(Error::Config(format!(
        "refusing to serve plain HTTP on {listen}: sessions and credentials would cross the network in the clear. \
         Set tls_cert and tls_key in [broker], listen on a loopback address, or set insecure_http = true \
         when a TLS-terminating proxy is in front"
    )))
}

/// The certificate the broker presents, read from its files and replaced
/// whole by [`ServerCertificate::reload`]; handshakes in progress keep the
/// one they started with.
#[derive(Debug)]
pub struct ServerCertificate {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServerCertificate {
    pub fn load(files: TlsFiles) -> Result<Arc<ServerCertificate>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = RwLock::new(Arc::new(certified_key(&files, &provider)?));
        Ok(Arc::new(ServerCertificate { files, provider, current }))
    }

    /// Reads the files again. A certificate or key that does not load (or
    /// a key that does not match the certificate) is refused and the one in
    /// use stays.
    pub fn reload(&self) -> Result<()> {
        let loaded = Arc::new(certified_key(&self.files, &self.provider)?);
        let mut current = self.current.write().map_err(|_| Error::Internal("the certificate lock".into()))?;
        *current = loaded;
        Ok(())
    }

    /// The DER certificate chain in use, leaf first.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current.read().map(|current| current.cert.clone()).unwrap_or_default()
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The rustls configuration of the listener: this certificate, no client
    /// certificates, HTTP/1.1 (the only protocol the router serves).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .map_err(|error| Error::Internal(format!("TLS versions: {error}")))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ServerCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|current| Arc::clone(&current))
    }
}

fn certified_key(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey> {
    let chain = read_certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|error| Error::Config(format!("tls_key {}: no usable private key ({error})", files.key.display())))?;
    let signing = provider.key_provider.load_private_key(key).map_err(|error| {
        Error::Config(format!("tls_key {}: unsupported private key ({error})", files.key.display()))
    })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| {
        Error::Config(format!(
            "tls_key {} is not the key of the certificate in {}",
            files.key.display(),
            files.cert.display()
        ))
    })?;
    Ok(certified)
}

/// Every certificate of a PEM file, in order; at least one.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let text = std::fs::read(path).map_err(Error::io(format!("reading tls_cert {}", path.display())))?;
    let chain = CertificateDer::pem_slice_iter(&text)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|error| Error::Config(format!("tls_cert {}: {error}", path.display())))?;
    if chain.is_empty() {
        return Err(Error::Config(format!("tls_cert {}: no PEM certificate in it", path.display())));
    }
    Ok(chain)
}

/// Reloads the certificate on every SIGHUP (a renewal tool's deploy hook
/// sends one), until `stop` resolves. A failed reload is logged and the
/// certificate in use stays.
pub async fn reload_on_hangup(certificate: Arc<ServerCertificate>, stop: impl std::future::Future<Output = ()>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            tracing::warn!("no SIGHUP handler: the TLS certificate is reloaded only by a restart");
            return;
        };
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                received = hangup.recv() => {
                    if received.is_none() {
                        return;
                    }
                }
                () = &mut stop => return,
            }
            match certificate.reload() {
                Ok(()) => tracing::info!("TLS certificate reloaded from {}", certificate.files.cert.display()),
                Err(error) => tracing::error!("TLS certificate not reloaded, the previous one stays: {error}"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (certificate, stop);
    }
}

/// A TCP listener whose connections are handed to the HTTP server once
/// their TLS handshake is done. Handshakes run concurrently, each bounded by
/// [`HANDSHAKE_TIMEOUT`], so a slow or silent client holds up nobody.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> TlsListener {
        TlsListener { tcp, acceptor: TlsAcceptor::from(config), handshakes: JoinSet::new() }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let acceptor = self.acceptor.clone();
                        self.handshakes.spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(tls)) => Some((tls, peer)),
                                Ok(Err(error)) => {
                                    tracing::debug!("TLS handshake with {peer} failed: {error}");
                                    None
                                }
                                Err(_) => {
                                    tracing::debug!("TLS handshake with {peer} timed out");
                                    None
                                }
                            }
                        });
                    }
                    // Out of file descriptors and the like: as axum's own
                    // listener does, wait a little rather than spin.
                    Err(error) => {
                        tracing::warn!("accepting a connection: {error}");
                        tokio::time::sleep(StdDuration::from_millis(50)).await;
                    }
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(connection)) = done {
                        return connection;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_listen_without_tls_refused() {
        let public: SocketAddr = "0.0.0.0:7300".parse().expect("an address");
        let error = check_listen(public, false, false).expect_err("plain HTTP on every interface is refused");
        let message = error.to_string();
        assert!(
            message.contains("tls_cert") && message.contains("insecure_http"),
            "the error names the ways out: {message}"
        );
        assert!(check_listen(public, true, false).is_ok(), "TLS on every interface is fine");
        assert!(check_listen(public, false, true).is_ok(), "insecure_http = true is the operator's explicit choice");
        for loopback in ["127.0.0.1:7300", "[::1]:7300", "127.0.0.2:7300"] {
            let listen: SocketAddr = loopback.parse().expect("an address");
            assert!(check_listen(listen, false, false).is_ok(), "plain HTTP on loopback {loopback} stays possible");
        }
    }
}
