//! Connections to PostgreSQL, as libpq makes them: the store's (`[broker]
//! store = "postgres://…"`) and the PostgreSQL provider's admin connections.
//!
//! tokio-postgres knows `sslmode` as `disable`, `prefer` or `require` and
//! brings no TLS of its own. Here the connection string is read whole,
//! `sslmode` and `sslrootcert` are taken out and given libpq's meaning with
//! rustls (ring), and tokio-postgres gets the rest:
//!
//! | sslmode       | encrypted          | server certificate checked             |
//! |---------------|--------------------|----------------------------------------|
//! | `disable`     | no                 | —                                      |
//! | `allow`, `prefer` (default) | if the server offers it | as `require`          |
//! | `require`     | yes                | no, unless `sslrootcert` is set (then as `verify-ca`) |
//! | `verify-ca`   | yes                | chain to `sslrootcert` (or the system's roots) |
//! | `verify-full` | yes                | chain, and the host name or address    |
//!
//! `sslrootcert` is a PEM file of trusted certificates, or `system` for the
//! system's roots (the default for `verify-*`). Client certificates
//! (`sslcert`, `sslkey`) are refused with a clear error rather than ignored.
//! Nothing here ever puts the connection string in an error: it may hold a
//! password.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, Socket};

/// How a connection string asks for TLS, in libpq's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl TlsMode {
    pub fn parse(text: &str) -> Option<TlsMode> {
        Some(match text {
            "disable" => TlsMode::Disable,
            "allow" => TlsMode::Allow,
            "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            _ => return None,
        })
    }
}

/// Where trusted certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Roots {
    /// Not given: the system's for `verify-*`, none (encryption only) for `require`.
    Unset,
    System,
    File(PathBuf),
}

/// A PostgreSQL server to connect to: tokio-postgres's configuration and
/// the TLS it must use.
#[derive(Clone)]
pub struct PgTarget {
    config: Config,
    mode: TlsMode,
    tls: Option<RustlsConnector>,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the configuration: it holds the password.
        f.debug_struct("PgTarget").field("server", &self.describe()).field("sslmode", &self.mode).finish()
    }
}

/// Whether every host of `config` is a Unix-domain socket (a directory).
fn only_unix_sockets(config: &Config) -> bool {
    #[cfg(unix)]
    {
        let hosts = config.get_hosts();
        !hosts.is_empty()
            && config.get_hostaddrs().is_empty()
            && hosts.iter().all(|host| matches!(host, tokio_postgres::config::Host::Unix(_)))
    }
    #[cfg(not(unix))]
    {
        let _ = config;
        false
    }
}

impl PgTarget {
    /// Reads a connection string (`postgres://…` or `key=value …`). The
    /// error names what is wrong, never the string itself.
    pub fn parse(dsn: &str) -> Result<PgTarget, String> {
        let split = split_tls_options(dsn)?;
        let mut config = Config::from_str(&split.rest).map_err(|error| {
            // tokio-postgres's parse errors name the option, not its value.
            match std::error::Error::source(&error) {
                Some(cause) => format!("the connection string is malformed ({cause})"),
                None => "the connection string is malformed".to_owned(),
            }
        })?;
        let mode = match &split.sslmode {
            None => TlsMode::Prefer,
            Some(text) => TlsMode::parse(text).ok_or_else(|| {
                format!("sslmode \"{text}\" is not one of disable, allow, prefer, require, verify-ca, verify-full")
            })?,
        };
        let roots = match split.sslrootcert.as_deref() {
            None | Some("") => Roots::Unset,
            Some("system") => Roots::System,
            Some(path) => Roots::File(PathBuf::from(path)),
        };
        // libpq ignores sslmode over Unix-domain sockets: there is no TLS
        // on them (and no server name to check).
        let plain = mode == TlsMode::Disable || only_unix_sockets(&config);
        config.ssl_mode(match mode {
            _ if plain => SslMode::Disable,
            TlsMode::Allow | TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Disable | TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
        });
        let tls = if plain { None } else { Some(RustlsConnector::new(mode, &roots)?) };
        Ok(PgTarget { config, mode, tls })
    }

    pub fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn mode(&self) -> TlsMode {
        self.mode
    }

    /// `host:port/database`, for messages: no user, no password.
    pub fn describe(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
            None => match self.config.get_hostaddrs().first() {
                Some(address) => address.to_string(),
                None => "localhost".into(),
            },
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let database = self.config.get_dbname().or(self.config.get_user()).unwrap_or("postgres");
        format!("{host}:{port}/{database}")
    }

    /// Opens a connection; its I/O runs on a task of its own, which ends
    /// when the client is dropped or the server goes away.
    pub async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        match &self.tls {
            None => {
                let (client, connection) = self.config.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Ok(client)
            }
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Ok(client)
            }
        }
    }

    /// Opens a connection whose notifications (`LISTEN`) come out of the
    /// receiver; it ends when the connection does.
    pub async fn connect_with_notifications(
        &self,
    ) -> Result<(Client, tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>), tokio_postgres::Error>
    {
        match &self.tls {
            None => {
                let (client, connection) = self.config.connect(tokio_postgres::NoTls).await?;
                Ok((client, forward_notifications(connection)))
            }
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                Ok((client, forward_notifications(connection)))
            }
        }
    }

    /// Cancels the statement running on the connection `token` came from,
    /// over the same kind of connection as the session's.
    pub async fn cancel(&self, token: tokio_postgres::CancelToken) -> Result<(), tokio_postgres::Error> {
        match &self.tls {
            None => token.cancel_query(tokio_postgres::NoTls).await,
            Some(tls) => token.cancel_query(tls.clone()).await,
        }
    }
}

/// Drives a connection, handing its notifications over.
fn forward_notifications<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
) -> tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let message = std::future::poll_fn(|cx| connection.poll_message(cx)).await;
            match message {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(notification))) => {
                    if sender.send(notification).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    });
    receiver
}

/// The connection string with `sslmode` and `sslrootcert` taken out.
#[derive(Debug, PartialEq, Eq)]
struct TlsOptions {
    rest: String,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

/// Options libpq knows that are refused rather than silently ignored.
const UNSUPPORTED: &[&str] = &["sslcert", "sslkey", "sslpassword", "sslcrl", "sslcrldir", "sslsni", "requiressl"];

fn take_option(key: &str, value: String, options: &mut TlsOptions) -> Result<bool, String> {
    match key {
        "sslmode" => options.sslmode = Some(value),
        "sslrootcert" => options.sslrootcert = Some(value),
        key if UNSUPPORTED.contains(&key) => {
            return Err(format!(
                "the connection string sets {key}, which hourglassd does not support (client certificates and CRLs): \
                 use password or SCRAM authentication over sslmode=verify-full"
            ));
        }
        _ => return Ok(false),
    }
    Ok(true)
}

fn split_tls_options(dsn: &str) -> Result<TlsOptions, String> {
    let dsn = dsn.trim();
    let mut options = TlsOptions { rest: String::new(), sslmode: None, sslrootcert: None };
    if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
        let (base, query) = match dsn.split_once('?') {
            Some((base, query)) => (base, query),
            None => (dsn, ""),
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded = percent_decode(value)
                .ok_or_else(|| format!("the connection string's {key} is not valid percent-encoded UTF-8"))?;
            if !take_option(key, decoded, &mut options)? {
                kept.push(pair);
            }
        }
        options.rest = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
        return Ok(options);
    }
    let mut kept = Vec::new();
    for (key, value, raw) in key_values(dsn)? {
        if !take_option(key, value, &mut options)? {
            kept.push(raw);
        }
    }
    options.rest = kept.join(" ");
    Ok(options)
}

/// The `key=value` pairs of a libpq keyword/value string: each key, its
/// value unquoted, and the pair's text as written.
fn key_values(text: &str) -> Result<Vec<(&str, String, &str)>, String> {
    let bytes = text.as_bytes();
    let mut pairs = Vec::new();
    let mut at = 0;
    let skip_ws = |mut at: usize| {
        while at < bytes.len() && bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        at
    };
    loop {
        at = skip_ws(at);
        if at == bytes.len() {
            return Ok(pairs);
        }
        let start = at;
        while at < bytes.len() && bytes[at] != b'=' && !bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        let key = &text[start..at];
        at = skip_ws(at);
        if bytes.get(at) != Some(&b'=') {
            // Not the key itself: a mistyped string may have split a password.
            return Err("the connection string is malformed (key=value pairs expected)".into());
        }
        at = skip_ws(at + 1);
        let mut value = String::new();
        if bytes.get(at) == Some(&b'\'') {
            at += 1;
            loop {
                match bytes.get(at) {
                    None => return Err("the connection string is malformed (a quoted value is not closed)".into()),
                    Some(b'\'') => {
                        at += 1;
                        break;
                    }
                    Some(b'\\') if at + 1 < bytes.len() => {
                        value.push(char::from(bytes[at + 1]));
                        at += 2;
                    }
                    Some(_) => {
                        let c = text[at..].chars().next().unwrap_or_default();
                        value.push(c);
                        at += c.len_utf8();
                    }
                }
            }
        } else {
            while at < bytes.len() && !bytes[at].is_ascii_whitespace() {
                if bytes[at] == b'\\' && at + 1 < bytes.len() {
                    value.push(char::from(bytes[at + 1]));
                    at += 2;
                } else {
                    let c = text[at..].chars().next().unwrap_or_default();
                    value.push(c);
                    at += c.len_utf8();
                }
            }
        }
        pairs.push((key, value, &text[start..at]));
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = text.get(at + 1..at + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// TLS for tokio-postgres with rustls and ring, checking the server as the
/// `sslmode` says.
#[derive(Clone)]
struct RustlsConnector {
    config: Arc<rustls::ClientConfig>,
}

impl RustlsConnector {
    fn new(mode: TlsMode, roots: &Roots) -> Result<RustlsConnector, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // libpq's `require` with a root certificate checks the chain.
        let check = match (mode, roots) {
            (TlsMode::VerifyFull, _) => Check::Full,
            (TlsMode::VerifyCa, _) => Check::Chain,
            (_, Roots::Unset) => Check::EncryptOnly,
            (_, _) => Check::Chain,
        };
        let verifier: Arc<dyn ServerCertVerifier> = match check {
            Check::EncryptOnly => Arc::new(EncryptOnly { provider: Arc::clone(&provider) }),
            Check::Chain | Check::Full => {
                let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(root_store(roots)?),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|error| format!("the trusted certificates cannot verify a server: {error}"))?;
                Arc::new(Checked { inner: webpki, check_name: check == Check::Full })
            }
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("TLS: {error}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(RustlsConnector { config: Arc::new(config) })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    EncryptOnly,
    Chain,
    Full,
}

fn root_store(roots: &Roots) -> Result<rustls::RootCertStore, String> {
    use crate::roots::RootsError;
    let file = match roots {
        Roots::File(path) => Some(path.as_path()),
        Roots::System | Roots::Unset => None,
    };
    crate::roots::trusted_roots(file).map_err(|error| {
        let path = file.map(|path| path.display().to_string()).unwrap_or_default();
        match error {
            RootsError::Unreadable(kind) => format!("sslrootcert {path}: cannot read it: {kind}"),
            RootsError::Invalid(why) => format!("sslrootcert {path}: a certificate is invalid: {why}"),
            RootsError::NoCertificate => format!("sslrootcert {path} holds no PEM certificate"),
            RootsError::NoSystemRoots => {
                "sslmode needs trusted roots but the system has none: set sslrootcert to a CA file".into()
            }
        }
    })
}

/// `verify-ca` and `verify-full`: the chain must lead to a trusted root;
/// the name is checked only for `verify-full`.
#[derive(Debug)]
struct Checked {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for Checked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// libpq's `require` without a root certificate: encrypted against a
/// passive listener, but any certificate is taken (the handshake's
/// signatures are still checked). SECURITY.md says why `verify-full` is
/// the one to use.
#[derive(Debug)]
struct EncryptOnly {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

impl MakeTlsConnect<Socket> for RustlsConnector {
    type Stream = TlsStream;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnect> {
        let name = ServerName::try_from(domain.to_owned())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("\"{domain}\" is not a server name")))?;
        Ok(RustlsConnect { connector: tokio_rustls::TlsConnector::from(Arc::clone(&self.config)), name })
    }
}

pub struct RustlsConnect {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl TlsConnect<Socket> for RustlsConnect {
    type Stream = TlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TlsStream>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move { Ok(TlsStream(self.connector.connect(self.name, stream).await?)) })
    }
}

/// A TLS session to the server. No channel binding: SCRAM without `-PLUS`.
pub struct TlsStream(tokio_rustls::client::TlsStream<Socket>);

impl tokio_postgres::tls::TlsStream for TlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A server's error in its own words (message and detail), or what broke
/// the connection: never the connection string, which may hold a password,
/// nor the statement, which may carry a verifier.
pub fn describe_error(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_owned(),
        },
        None if error.is_closed() => "the connection to the database server closed".into(),
        None => {
            // Connection errors name the cause (refused, timed out).
            let cause = std::error::Error::source(error).map(ToString::to_string);
            match cause {
                Some(cause) => format!("{error}: {cause}"),
                None => error.to_string(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_options_are_taken_out_of_a_key_value_string() {
        let split = split_tls_options(
            r"host=db.acme.example port=5433 sslmode=verify-full sslrootcert='/etc/ca dir/ca.pem' password='it\'s' user=hg",
        )
        .expect("parses");
        assert_eq!(split.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(split.sslrootcert.as_deref(), Some("/etc/ca dir/ca.pem"), "quoted values are unquoted");
        assert_eq!(split.rest, r"host=db.acme.example port=5433 password='it\'s' user=hg", "the rest as written");
    }

    #[test]
    fn tls_options_are_taken_out_of_a_url() {
        let split = split_tls_options(
            "postgres://hg:p%40ss@db:5432/hourglass?sslmode=require&application_name=hg&sslrootcert=%2Fca.pem",
        )
        .expect("parses");
        assert_eq!(split.sslmode.as_deref(), Some("require"));
        assert_eq!(split.sslrootcert.as_deref(), Some("/ca.pem"), "percent-decoded");
        assert_eq!(split.rest, "postgres://hg:p%40ss@db:5432/hourglass?application_name=hg");
        let plain = split_tls_options("postgresql://db/hourglass?sslmode=disable").expect("parses");
        assert_eq!(plain.rest, "postgresql://db/hourglass");
    }

    #[test]
    fn tls_unknown_sslmode_and_client_certificates_are_refused_without_the_password() {
        let error = PgTarget::parse("host=db password=hunter2 sslmode=verify-everything").expect_err("refused");
        assert!(error.contains("verify-everything") && !error.contains("hunter2"), "{error}");
        let error = PgTarget::parse("postgres://u:hunter2@db/x?sslcert=/c.pem").expect_err("refused");
        assert!(error.contains("sslcert") && !error.contains("hunter2"), "{error}");
        let error = PgTarget::parse("host=db password=hunter2 bogus=1").expect_err("refused");
        assert!(error.contains("bogus") && !error.contains("hunter2"), "{error}");
    }

    #[test]
    fn tls_modes_map_to_what_tokio_postgres_negotiates() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let target = PgTarget::parse("host=db user=u").expect("parses");
        assert_eq!(target.mode(), TlsMode::Prefer, "libpq's default");
        assert_eq!(target.config().get_ssl_mode(), SslMode::Prefer);
        let target = PgTarget::parse("host=db user=u sslmode=disable").expect("parses");
        assert_eq!(target.config().get_ssl_mode(), SslMode::Disable);
        assert!(target.tls.is_none());
        let target = PgTarget::parse("host=db user=u sslmode=require").expect("parses");
        assert_eq!(target.config().get_ssl_mode(), SslMode::Require);
        let error = PgTarget::parse("host=db user=u sslmode=verify-full sslrootcert=/nonexistent/ca.pem")
            .expect_err("an unreadable root file is an error, not a fallback");
        assert!(error.contains("/nonexistent/ca.pem"), "{error}");
        assert_eq!(target.describe(), "db:5432/u");
    }

    #[test]
    fn tls_sslmode_is_ignored_over_unix_sockets_as_libpq_does() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        for dsn in [
            "host=/run/postgresql user=u",
            "postgresql://u@/x?host=/run/postgresql&sslmode=require",
            "host=/tmp user=u sslmode=verify-full",
        ] {
            let target = PgTarget::parse(dsn).expect("parses");
            assert_eq!(target.config().get_ssl_mode(), SslMode::Disable, "{dsn}");
            assert!(target.tls.is_none(), "{dsn}");
        }
        let target = PgTarget::parse("host=/run/postgresql,db.acme.example user=u").expect("parses");
        assert_eq!(target.config().get_ssl_mode(), SslMode::Prefer, "a TCP host among them negotiates");
    }
}
