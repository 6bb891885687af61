//! Starting a broker: policy, store, keys, identity, then the HTTP server,
//! the expiry scheduler and the policy watcher. Used by `hourglassd` and by
//! tests that want a real broker on a loopback port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use hourglass_policy::Policy;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use hourglass_core::api::AuthConfig;

use crate::auth::{Authenticator, Sessions, TrustedIssuer};
use crate::broker::{Broker, BrokerParts};
use crate::clock::{Clock, SystemClock};
use crate::dev::{DevIssuer, DevUser};
use crate::error::{Error, Result};
use crate::keys::Ed25519Key;
use crate::provider::Providers;
use crate::provider::token::TokenProvider;
use crate::settings::{BrokerSettings, DEFAULT_LISTEN, DEFAULT_SESSION_LIFETIME};
use crate::store::Store;
use crate::tls::{ServerCertificate, TlsFiles, TlsListener};

pub struct ServerOptions {
    pub policy_dir: PathBuf,
    /// Overrides `[broker] data_dir`.
    pub data_dir: Option<PathBuf>,
    /// Overrides `[broker] listen`.
    pub listen: Option<SocketAddr>,
    /// Overrides `[broker] tls_cert` and `tls_key` (dev mode's own certificate).
    pub tls: Option<TlsFiles>,
    /// Dev mode: trust the development issuer and mint demo tokens.
    pub dev: bool,
    pub clock: Option<Arc<dyn Clock>>,
}

pub struct Server {
    pub addr: SocketAddr,
    pub url: String,
    pub broker: Arc<Broker>,
    pub data_dir: PathBuf,
    /// The certificate served when the broker speaks HTTPS.
    pub certificate: Option<Arc<ServerCertificate>>,
    /// Dev mode only: each demo user with a bearer token.
    pub dev_tokens: Vec<(DevUser, String)>,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// Stops accepting, ends event streams and background tasks.
    pub async fn stop(self) {
        self.broker.stop();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

pub async fn start(options: ServerOptions) -> Result<Server> {
    let policy = Policy::load_dir(&options.policy_dir)?;
    let settings = BrokerSettings::from_table(&policy.broker_settings)?;
    let data_dir = options
        .data_dir
        .or_else(|| settings.data_dir.as_ref().map(|dir| BrokerSettings::resolve(&options.policy_dir, dir)))
        .ok_or_else(|| Error::Config("no data directory: set data_dir in [broker] or pass --data-dir".into()))?;
    let listen = match options.listen.or(settings.listen) {
        Some(listen) => listen,
        None => DEFAULT_LISTEN.parse().map_err(|_| Error::Internal("default listen address".into()))?,
    };
    let tls = match options.tls {
        Some(files) => Some(files),
        None => settings.tls_files(&options.policy_dir)?,
    };
    crate::tls::check_listen(listen, tls.is_some(), settings.insecure_http)?;
    let certificate = tls.map(ServerCertificate::load).transpose()?;
    let listener = TcpListener::bind(listen).await.map_err(Error::io(format!("listening on {listen}")))?;
    let addr = listener.local_addr().map_err(Error::io("reading the listening address"))?;
    let scheme = if certificate.is_some() { "https" } else { "http" };
    let url = settings.public_url.clone().unwrap_or_else(|| format!("{scheme}://{addr}"));
    let url = url.trim_end_matches('/').to_owned();

    let store = Store::open(&data_dir.join("hourglass.db")).await?;
    let token_key = Arc::new(Ed25519Key::load_or_create(&data_dir.join("keys/token-signing.pem"))?);
    let dev_issuer =
        if options.dev { Some(Arc::new(DevIssuer::load_or_create(&data_dir, format!("{url}/dev"))?)) } else { None };
    let authenticator = authenticator(&settings, &options.policy_dir, &data_dir, &url, dev_issuer.as_deref())?;
    // Keys of discovered issuers, before the first token arrives. An IdP
    // that cannot be reached now is tried again when a token needs it.
    authenticator.refresh_keys(true).await;
    let providers =
        Providers::standard(TokenProvider::new(Arc::clone(&token_key), url.clone()), &data_dir, &options.policy_dir)
            .map_err(Error::Config)?;
    let clock = options.clock.unwrap_or_else(|| Arc::new(SystemClock));
    let broker = Broker::new(BrokerParts {
        store,
        policy,
        policy_dir: Some(options.policy_dir.clone()),
        providers,
        authenticator,
        token_key,
        clock,
        provider_timeout: settings.provider_timeout.map_or(StdDuration::from_secs(30), |d| d.as_std()),
        limits: settings.limits,
    })?;
    for warning in &broker.policy().warnings {
        tracing::warn!("policy: {warning}");
    }
    broker.record_start().await?;
    let reclaimed = broker.reclaim_revocations().await?;
    if reclaimed > 0 {
        tracing::info!("{reclaimed} revocation(s) interrupted by the last stop are due again");
    }
    let interrupted = broker.interrupted_issues().await?;
    let dev_tokens = match &dev_issuer {
        Some(issuer) => crate::dev::write_tokens(&data_dir, issuer, broker.now())?,
        None => Vec::new(),
    };

    let mut app = crate::http::router(Arc::clone(&broker));
    if let Some(issuer) = &dev_issuer {
        let users = crate::dev::users()?;
        let oidc = crate::dev::oidc::DevOidc::new(Arc::clone(issuer), users, Arc::clone(&broker.clock));
        app = app.merge(crate::dev::oidc::router(Arc::new(oidc)));
    }
    let mut tasks = Vec::new();
    let stopping = {
        let broker = Arc::clone(&broker);
        async move { broker.stopping().await }
    };
    let serving = match &certificate {
        Some(certificate) => {
            let listener = TlsListener::new(listener, certificate.server_config()?);
            tasks.push(tokio::spawn(crate::tls::reload_on_hangup(Arc::clone(certificate), Arc::clone(&broker))));
            tokio::spawn(async move {
                if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(stopping).await {
                    tracing::error!("server failed: {error}");
                }
            })
        }
        None => tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(stopping).await {
                tracing::error!("server failed: {error}");
            }
        }),
    };
    tasks.push(serving);
    tasks.push(tokio::spawn(Arc::clone(&broker).run_scheduler()));
    let recovery = {
        let broker = Arc::clone(&broker);
        tokio::spawn(async move { broker.recover(interrupted).await })
    };
    tasks.push(recovery);
    tasks.push(tokio::spawn(crate::reload::watch_policy(Arc::clone(&broker), options.policy_dir)));
    tasks.push(tokio::spawn(refresh_issuer_keys(Arc::clone(&broker))));
    Ok(Server { addr, url, broker, data_dir, certificate, dev_tokens, tasks })
}

/// Who the broker trusts, and how people log in: `[broker.login]` (its
/// issuer trusted for ID tokens), `[[broker.issuers]]`, and in dev mode the
/// development issuer (also the login issuer when none is configured).
fn authenticator(
    settings: &BrokerSettings,
    policy_dir: &std::path::Path,
    data_dir: &std::path::Path,
    url: &str,
    dev: Option<&DevIssuer>,
) -> Result<Authenticator> {
    let mut authenticator = Authenticator::default();
    for issuer in &settings.issuers {
        authenticator = authenticator.trust(TrustedIssuer::from_settings(issuer, policy_dir)?);
    }
    if let Some(login) = &settings.login {
        let listed =
            settings.issuers.iter().any(|i| i.issuer.trim_end_matches('/') == login.issuer.trim_end_matches('/'));
        if !listed {
            authenticator = authenticator.trust(TrustedIssuer::from_login(login)?);
        }
        authenticator = authenticator.with_login(AuthConfig {
            issuer: login.issuer.trim_end_matches('/').to_owned(),
            client_id: login.client_id.clone(),
            scopes: login.scopes.clone(),
            dev: false,
        });
    }
    if let Some(dev) = dev {
        authenticator = authenticator.trust(dev.trusted());
        if settings.login.is_none() {
            authenticator = authenticator.with_login(AuthConfig {
                issuer: dev.issuer.clone(),
                client_id: crate::dev::CLIENT_ID.into(),
                scopes: ["openid", "email", "profile", "groups", "offline_access"].map(String::from).to_vec(),
                dev: true,
            });
        }
    }
    let lifetime = settings.login.as_ref().map_or(DEFAULT_SESSION_LIFETIME, |login| login.session_lifetime);
    let session_key = Ed25519Key::load_or_create(&data_dir.join("keys/session.pem"))?;
    Ok(authenticator.with_sessions(Sessions::new(session_key, url.to_owned(), lifetime)))
}

/// Fetches discovered issuers' keys now and then, so that keys an IdP
/// retires stop verifying and new ones are known before a token needs them.
async fn refresh_issuer_keys(broker: Arc<Broker>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(crate::auth::REFRESH_INTERVAL) => broker.auth.refresh_keys(true).await,
            () = broker.stopping() => return,
        }
    }
}
