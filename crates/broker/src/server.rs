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

use crate::auth::{Authenticator, TrustedIssuer};
use crate::broker::{Broker, BrokerParts};
use crate::clock::{Clock, SystemClock};
use crate::dev::{DevIssuer, DevUser};
use crate::error::{Error, Result};
use crate::keys::Ed25519Key;
use crate::provider::Providers;
use crate::provider::token::TokenProvider;
use crate::settings::{BrokerSettings, DEFAULT_LISTEN};
use crate::store::Store;

pub struct ServerOptions {
    pub policy_dir: PathBuf,
    /// Overrides `[broker] data_dir`.
    pub data_dir: Option<PathBuf>,
    /// Overrides `[broker] listen`.
    pub listen: Option<SocketAddr>,
    /// Dev mode: trust the development issuer and mint demo tokens.
    pub dev: bool,
    pub clock: Option<Arc<dyn Clock>>,
}

pub struct Server {
    pub addr: SocketAddr,
    pub url: String,
    pub broker: Arc<Broker>,
    pub data_dir: PathBuf,
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
    let listener = TcpListener::bind(listen).await.map_err(Error::io(format!("listening on {listen}")))?;
    let addr = listener.local_addr().map_err(Error::io("reading the listening address"))?;
    let url = settings.public_url.clone().unwrap_or_else(|| format!("http://{addr}"));
    let url = url.trim_end_matches('/').to_owned();

    let store = Store::open(&data_dir.join("hourglass.db")).await?;
    let token_key = Arc::new(Ed25519Key::load_or_create(&data_dir.join("keys/token-signing.pem"))?);
    let mut authenticator = Authenticator::default();
    for issuer in &settings.issuers {
        authenticator = authenticator.trust(TrustedIssuer::from_jwks_file(
            issuer.issuer.clone(),
            issuer.audience.clone(),
            &BrokerSettings::resolve(&options.policy_dir, &issuer.jwks_file),
            issuer.id_claim.clone(),
            issuer.groups_claim.clone(),
        )?);
    }
    let dev_issuer = if options.dev { Some(DevIssuer::load_or_create(&data_dir, format!("{url}/dev"))?) } else { None };
    if let Some(dev) = &dev_issuer {
        authenticator = authenticator.trust(dev.trusted());
    }
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
    })?;
    for warning in &broker.policy().warnings {
        tracing::warn!("policy: {warning}");
    }
    broker.record_start().await?;
    broker.recover().await?;
    let dev_tokens = match &dev_issuer {
        Some(issuer) => crate::dev::write_tokens(&data_dir, issuer, broker.now())?,
        None => Vec::new(),
    };

    let app = crate::http::router(Arc::clone(&broker));
    let serving = {
        let broker = Arc::clone(&broker);
        tokio::spawn(async move {
            let stopping = async move { broker.stopping().await };
            if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(stopping).await {
                tracing::error!("server failed: {error}");
            }
        })
    };
    let scheduler = tokio::spawn(Arc::clone(&broker).run_scheduler());
    let watcher = tokio::spawn(crate::reload::watch_policy(Arc::clone(&broker), options.policy_dir));
    Ok(Server { addr, url, broker, data_dir, dev_tokens, tasks: vec![serving, scheduler, watcher] })
}
