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
use crate::checkpoints::{CHECKPOINT_EVERY, Checkpoints};
use crate::clock::{Clock, SystemClock};
use crate::dev::{DevIssuer, DevUser};
use crate::error::{Error, Result};
use crate::keys::{Ed25519Key, KeyPurpose, KeySet, RotationPolicy, StoreKey};
use crate::notify::channels::Channels;
use crate::provider::Providers;
use crate::provider::ssh::SshProvider;
use crate::provider::token::TokenProvider;
use crate::settings::{BrokerSettings, DEFAULT_LISTEN, DEFAULT_SESSION_LIFETIME};
use crate::store::{Store, StoreLocation};
use crate::tls::{ServerCertificate, TlsFiles, TlsListener};
use crate::web_login::WebLogin;

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
    /// Overrides `[broker] store` and `HOURGLASS_STORE`.
    pub store: Option<StoreLocation>,
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
    if crate::files::private_dir(&data_dir).map_err(Error::io(format!("making {} private", data_dir.display())))? {
        tracing::warn!(dir = %data_dir.display(), "the data directory was open to other users; made it private (0700)");
    }
    let listen = match options.listen.or(settings.listen) {
        Some(listen) => listen,
        None => DEFAULT_LISTEN.parse().map_err(|_| Error::Internal("default listen address".into()))?,
    };
    let tls = match options.tls {
        Some(files) => Some(files),
        None => settings.tls_files(&options.policy_dir)?,
    };
    if options.dev {
        crate::dev::check_dev_mode(listen, &settings)?;
    }
    crate::tls::check_listen(listen, tls.is_some(), settings.insecure_http)?;
    let certificate = tls.map(ServerCertificate::load).transpose()?;
    let listener = TcpListener::bind(listen).await.map_err(Error::io(format!("listening on {listen}")))?;
    let addr = listener.local_addr().map_err(Error::io("reading the listening address"))?;
    let scheme = if certificate.is_some() { "https" } else { "http" };
    let url = settings.public_url.clone().unwrap_or_else(|| format!("{scheme}://{addr}"));
    let url = url.trim_end_matches('/').to_owned();

    let location = match options.store {
        Some(location) => location,
        None => settings.store_location(&options.policy_dir, &data_dir)?,
    };
    let store = Store::open(&location, &settings.store_options(&options.policy_dir)?).await?;
    tracing::info!(store = %store.describe(), replica = %store.replica_id(), "store open");
    let clock = options.clock.unwrap_or_else(|| Arc::new(SystemClock));
    let keys = SigningKeys::open(&settings, &policy, &store, &options.policy_dir, &data_dir, clock.now()).await?;
    let dev_issuer =
        if options.dev { Some(Arc::new(DevIssuer::load_or_create(&data_dir, format!("{url}/dev"))?)) } else { None };
    let authenticator = authenticator(&settings, &options.policy_dir, &url, dev_issuer.as_deref(), &keys.session)?;
    // Keys of discovered issuers, before the first token arrives. An IdP
    // that cannot be reached now is tried again when a token needs it.
    authenticator.refresh_keys(true).await;
    let (checkpoint_key, checkpoint_file) = settings.checkpoint_files(&options.policy_dir, &data_dir);
    let checkpoints = Arc::new(Checkpoints::open(&checkpoint_key, checkpoint_file)?);
    let ssh_ca = keys.ssh_ca.signer(clock.now())?;
    let providers = Providers::standard(
        TokenProvider::new(Arc::clone(&keys.grant_token), url.clone()),
        &ssh_ca,
        store.clone(),
        &data_dir,
        &options.policy_dir,
    )
    .await
    .map_err(Error::Config)?;
    let broker = Broker::new(BrokerParts {
        store,
        policy,
        policy_dir: Some(options.policy_dir.clone()),
        providers,
        authenticator,
        token_keys: Arc::clone(&keys.grant_token),
        clock,
        provider_timeout: settings.provider_timeout.map_or(StdDuration::from_secs(30), |d| d.as_std()),
        limits: settings.limits,
        channels: Channels::load(&settings, &options.policy_dir)?,
        web_login: match &settings.login {
            Some(login) => login
                .web_client_id
                .as_ref()
                .map(|client| WebLogin::new(&login.issuer, client, &login.scopes, &url))
                .transpose()?,
            None => None,
        },
    })?;
    let siem_sinks = crate::siem::sinks(&settings, &options.policy_dir)?;
    for warning in &broker.policy().warnings {
        tracing::warn!("policy: {warning}");
    }
    broker.load_ended_sessions().await?;
    broker.record_start().await?;
    let reclaimed = broker.reclaim_revocations().await?;
    if reclaimed > 0 {
        tracing::info!("{reclaimed} revocation(s) interrupted by the last stop are due again");
    }
    let dev_tokens = match &dev_issuer {
        Some(issuer) => crate::dev::write_tokens(&data_dir, issuer, broker.now())?,
        None => Vec::new(),
    };

    let event_cursor = broker.event_cursor().await?;
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
    let configured = usize::try_from(settings.limits.connections).unwrap_or(usize::MAX);
    let (connections, open_files) = crate::serve::connection_cap(configured);
    if connections < configured {
        tracing::warn!(
            "[broker.limits] connections = {configured}, but the open-file limit ({}) leaves room for {connections}: \
             serving at most {connections} at once (raise LimitNOFILE)",
            open_files.unwrap_or(0)
        );
    }
    let header_read_timeout = StdDuration::from_secs(u64::from(settings.limits.header_read_seconds));
    let serving = match &certificate {
        Some(certificate) => {
            let listener = TlsListener::new(listener, certificate.server_config()?);
            let until_stop = Arc::clone(&broker);
            let stop = async move { until_stop.stopping().await };
            tasks.push(tokio::spawn(crate::tls::reload_on_hangup(Arc::clone(certificate), stop)));
            tokio::spawn(crate::serve::serve(listener, app, connections, header_read_timeout, stopping))
        }
        None => tokio::spawn(crate::serve::serve(listener, app, connections, header_read_timeout, stopping)),
    };
    tasks.push(serving);
    tasks.push(tokio::spawn(Arc::clone(&broker).follow_events(event_cursor)));
    tasks.push(tokio::spawn(Arc::clone(&broker).run_scheduler()));
    tasks.push(tokio::spawn(renew_lease(Arc::clone(&broker))));
    tasks.push(tokio::spawn(prune_store(Arc::clone(&broker))));
    tasks.push(tokio::spawn(tidy_providers(Arc::clone(&broker))));
    tasks.push(tokio::spawn(crate::notify::outbox::run(Arc::clone(&broker))));
    for sink in siem_sinks {
        tasks.push(tokio::spawn(crate::siem::run(Arc::clone(&broker), sink)));
    }
    tasks.push(tokio::spawn(sign_checkpoints(Arc::clone(&broker), checkpoints)));
    tasks.push(tokio::spawn(refresh_signing_keys(Arc::clone(&broker), keys)));
    tasks.push(tokio::spawn(crate::reload::watch_policy(Arc::clone(&broker), options.policy_dir)));
    tasks.push(tokio::spawn(refresh_issuer_keys(Arc::clone(&broker))));
    Ok(Server { addr, url, broker, data_dir, certificate, dev_tokens, tasks })
}

/// The broker's signing keys, from the store (every replica's), sealed
/// with the store key.
pub struct SigningKeys {
    pub session: Arc<KeySet>,
    pub grant_token: Arc<KeySet>,
    pub ssh_ca: Arc<KeySet>,
}

/// Keys are read from the store again this often: a key another replica
/// made (a rotation) is known here well before it signs anything, since
/// successors are made a day ahead.
const KEY_REFRESH: StdDuration = StdDuration::from_secs(30);
const DEFAULT_KEY_ROTATION: StdDuration = StdDuration::from_secs(30 * 24 * 3600);
const DAY: StdDuration = StdDuration::from_secs(24 * 3600);

impl SigningKeys {
    /// Opens the key sets, making each purpose's first key when the store
    /// has none: the one an older broker kept in `data_dir` if there is one
    /// (moved into the store, then its file removed), else a new one.
    pub async fn open(
        settings: &BrokerSettings,
        policy: &Policy,
        store: &Store,
        policy_dir: &std::path::Path,
        data_dir: &std::path::Path,
        now: hourglass_core::Timestamp,
    ) -> Result<SigningKeys> {
        let store_key = Arc::new(match &settings.store_key_file {
            Some(path) => StoreKey::read(&BrokerSettings::resolve(policy_dir, path))?,
            None if store.is_shared() => {
                return Err(Error::Config(
                    "a PostgreSQL store needs [broker] store_key_file: the key that seals the signing keys in \
                     the store, the same file on every replica (make one with: head -c 32 /dev/urandom | base64 \
                     > FILE; chmod 600 FILE)"
                        .into(),
                ));
            }
            None => StoreKey::read_or_create(&data_dir.join("keys/store.key"))?,
        });
        SigningKeys::open_with(store, store_key, rotation_policy(settings, policy), data_dir, now).await
    }

    /// The key sets of `store`, sealed with `store_key`, keys rotating by
    /// `rotation`; an older broker's key files in `data_dir` are moved in.
    pub async fn open_with(
        store: &Store,
        store_key: Arc<StoreKey>,
        rotation: RotationPolicy,
        data_dir: &std::path::Path,
        now: hourglass_core::Timestamp,
    ) -> Result<SigningKeys> {
        let open = async |purpose: KeyPurpose, policy: RotationPolicy, legacy: Option<(Ed25519Key, PathBuf)>| {
            let (first, file) = legacy.map_or((None, None), |(key, file)| (Some(key), Some(file)));
            let set = KeySet::open(store.clone(), Arc::clone(&store_key), purpose, policy, first, now).await?;
            // Moved into the store: the plain copy in the data directory goes.
            if let Some(file) = file
                && set.windows().iter().any(|w| Some(&w.kid) == legacy_kid(&file).as_ref())
            {
                tracing::info!(file = %file.display(), "signing key moved into the store; removing the file");
                std::fs::remove_file(&file).map_err(Error::io(format!("removing {}", file.display())))?;
            }
            Result::Ok(Arc::new(set))
        };
        let pem = |name: &str| -> Result<Option<(Ed25519Key, PathBuf)>> {
            let path = data_dir.join("keys").join(name);
            Ok(if path.exists() { Some((Ed25519Key::read_pem_file(&path)?, path)) } else { None })
        };
        let ssh_dir = data_dir.join("ssh");
        let ssh_legacy =
            SshProvider::legacy_ca(&ssh_dir).map_err(Error::Config)?.map(|key| (key, ssh_dir.join("user_ca")));
        Ok(SigningKeys {
            session: open(KeyPurpose::Session, rotation, pem("session.pem")?).await?,
            grant_token: open(KeyPurpose::GrantToken, rotation, pem("token-signing.pem")?).await?,
            ssh_ca: open(KeyPurpose::SshUserCa, RotationPolicy::NEVER, ssh_legacy).await?,
        })
    }
}

/// The kid of the key in a legacy key file (PEM or OpenSSH), if readable.
fn legacy_kid(path: &std::path::Path) -> Option<String> {
    if path.extension().is_some_and(|ext| ext == "pem") {
        return Ed25519Key::read_pem_file(path).ok().map(|key| key.kid);
    }
    SshProvider::legacy_ca(path.parent()?).ok().flatten().map(|key| key.kid)
}

/// Session and grant-token keys sign for `key_rotation`; what they signed
/// verifies for as long after as the longest session or grant can live (at
/// least a day); successors are published a day ahead.
pub fn rotation_policy(settings: &BrokerSettings, policy: &Policy) -> RotationPolicy {
    let period = settings.key_rotation.map_or(DEFAULT_KEY_ROTATION, |d| d.as_std());
    let session = settings.login.as_ref().map_or(DEFAULT_SESSION_LIFETIME, |login| login.session_lifetime).as_std();
    let longest_grant = policy
        .resources
        .values()
        .flat_map(|resource| resource.roles.values())
        .map(|role| role.limits.max_total.as_std())
        .max()
        .unwrap_or_default();
    RotationPolicy { period, publish_ahead: DAY.min(period / 4), overlap: session.max(longest_grant).max(DAY) }
}

/// Reads the signing keys from the store again now and then (and makes a
/// successor when one is due).
async fn refresh_signing_keys(broker: Arc<Broker>, keys: SigningKeys) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(KEY_REFRESH) => {}
            () = broker.stopping() => return,
        }
        for set in [&keys.session, &keys.grant_token, &keys.ssh_ca] {
            if let Err(error) = set.refresh(broker.now()).await {
                tracing::warn!(purpose = set.purpose().as_str(), "refreshing signing keys failed: {error}");
            }
        }
    }
}

/// Who the broker trusts, and how people log in: `[broker.login]` (its
/// issuer trusted for ID tokens), `[[broker.issuers]]`, and in dev mode the
/// development issuer (also the login issuer when none is configured).
fn authenticator(
    settings: &BrokerSettings,
    policy_dir: &std::path::Path,
    url: &str,
    dev: Option<&DevIssuer>,
    session_keys: &Arc<KeySet>,
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
    authenticator.check_namespaces()?;
    let lifetime = settings.login.as_ref().map_or(DEFAULT_SESSION_LIFETIME, |login| login.session_lifetime);
    Ok(authenticator.with_sessions(Sessions::new(Arc::clone(session_keys), url.to_owned(), lifetime)))
}

/// Renews this replica's lease three times per lease (PostgreSQL), and
/// ends it when the broker stops, so that the others take its work over at
/// once.
async fn renew_lease(broker: Arc<Broker>) {
    if !broker.store.is_shared() {
        return;
    }
    let every = broker.store.lease() / 3;
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = broker.stopping() => break,
        }
        match broker.store.renew_lease().await {
            Ok(true) => {}
            // A new replica id: whatever the old one claimed is anyone's.
            Ok(false) => broker.schedule(broker.now()),
            Err(error) => tracing::warn!("renewing this replica's lease failed: {error}"),
        }
    }
    if let Err(error) = broker.store.retire().await {
        tracing::warn!("ending this replica's lease at stop failed (it lapses by itself): {error}");
    }
}

/// How long the store keeps events for clients that reconnect, and
/// replicas gone for good.
const EVENTS_KEPT: StdDuration = StdDuration::from_secs(24 * 3600);
const REPLICAS_KEPT: StdDuration = StdDuration::from_secs(3600);
/// Notifications sent are kept this long: an update on a topic finds the
/// message it updates for as long as a grant can last after its request.
const NOTICES_KEPT: StdDuration = StdDuration::from_secs(30 * 24 * 3600);

/// Prunes old events, long-gone replicas and notifications long sent,
/// every few minutes.
async fn prune_store(broker: Arc<Broker>) {
    loop {
        let before = broker.now().plus_millis(-i64::try_from(EVENTS_KEPT.as_millis()).unwrap_or(i64::MAX));
        if let Err(error) = broker.store.prune(before, REPLICAS_KEPT).await {
            tracing::warn!("pruning old events failed: {error}");
        }
        let notices_before = broker.now().plus_millis(-i64::try_from(NOTICES_KEPT.as_millis()).unwrap_or(i64::MAX));
        if let Err(error) = broker.store.prune_notices(notices_before).await {
            tracing::warn!("pruning sent notifications failed: {error}");
        }
        tokio::select! {
            () = tokio::time::sleep(StdDuration::from_secs(300)) => {}
            () = broker.stopping() => return,
        }
    }
}

/// Each provider's periodic work ([`crate::provider::Provider::tidy`]),
/// every minute.
async fn tidy_providers(broker: Arc<Broker>) {
    loop {
        broker.providers.tidy(broker.now()).await;
        tokio::select! {
            () = tokio::time::sleep(StdDuration::from_secs(60)) => {}
            () = broker.stopping() => return,
        }
    }
}

/// Signs the audit log's head every few seconds when it moved, and once
/// more as the broker stops (see [`crate::checkpoints`]); audits repeated
/// refusals first, so that the checkpoint covers them.
async fn sign_checkpoints(broker: Arc<Broker>, checkpoints: Arc<Checkpoints>) {
    loop {
        let stopping = tokio::select! {
            () = tokio::time::sleep(CHECKPOINT_EVERY) => false,
            () = broker.stopping() => true,
        };
        // The same beat audits the repeats of refusals whose minute is over.
        if let Err(error) = broker.audit_repeated_refusals().await {
            tracing::warn!("auditing repeated refusals failed (tried again shortly): {error}");
        }
        if let Err(error) = checkpoints.checkpoint(&broker.store, broker.now()).await {
            tracing::warn!("signing an audit checkpoint failed (tried again shortly): {error}");
        }
        if stopping {
            return;
        }
    }
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
