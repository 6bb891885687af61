//! Who is calling: bearer tokens verified (issuer, audience, signature,
//! expiry) and mapped to a [`Principal`], and the broker's own sessions.
//!
//! Two kinds of bearer token are accepted:
//!
//! - **Sessions** the broker signed itself (`POST /v1/auth/token`, an RFC 8693
//!   token exchange of an ID token): `iss` is the broker's URL, `aud` is
//!   [`SESSION_AUDIENCE`], signed with `DATA/keys/session.pem`.
//! - **Tokens of trusted issuers**, as they are: the login issuer's ID tokens,
//!   `[[broker.issuers]]` (people's IdPs, CI pipelines), the dev issuer.
//!
//! An issuer's keys come from a JWKS file, or from its OpenID Connect
//! discovery document; discovered keys are cached, fetched again when a token
//! names a key id the cache does not know (at most once per
//! [`REFETCH_COOLDOWN`] per issuer) and periodically, so IdP key rotation
//! needs no restart.

mod claims;
mod verified;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration as StdDuration, Instant};

use hourglass_core::api::{AuthConfig, SessionToken};
use hourglass_core::authentication::Authentication;
use hourglass_core::{Duration, Principal, Timestamp};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::keys::KeySet;
use crate::settings::{IssuerKind, IssuerSettings, LoginSettings};
pub use claims::ClaimRules;

/// Tokens longer than this are refused before any parsing.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The longest principal id a token may give.
const MAX_PRINCIPAL_CHARS: usize = 256;

/// Tolerated clock difference with the issuer.
const LEEWAY_SECONDS: u64 = 30;

/// The audience of the notes the broker seals for itself (`seal_note`).
const NOTE_AUDIENCE: &str = "hourglass-note";

/// The audience of the broker's own sessions.
pub const SESSION_AUDIENCE: &str = "hourglass";

/// Marks a session token, so that no other token the broker signs (or
/// might sign one day) passes for one.
const SESSION_TOKEN_USE: &str = "session";

/// RFC 8693 token type URIs.
pub const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// A token naming an unknown key id fetches the issuer's keys again at most
/// this often, so that garbage tokens cannot make the broker hammer an IdP.
pub const REFETCH_COOLDOWN: StdDuration = StdDuration::from_secs(30);

/// How often discovered keys are fetched again in the background.
pub const REFRESH_INTERVAL: StdDuration = StdDuration::from_secs(15 * 60);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "no bearer token: send `Authorization: Bearer <token>` (log in with `hourglass login`, or in dev mode use a token `hourglassd dev` printed)"
    )]
    Missing,
    #[error("the token is malformed")]
    Malformed,
    #[error("the token has expired; log in again")]
    Expired,
    #[error(
        "the token's `{0}` claim cannot name a principal: at most 256 characters, none a space or a control character"
    )]
    UnusablePrincipal(String),
    #[error("this session was ended (logged out): log in again")]
    Ended,
    #[error("the token is not valid yet (its `nbf` is ahead of the broker's clock)")]
    NotYetValid,
    #[error("the token's issuer is not trusted by this broker")]
    UntrustedIssuer,
    #[error("the token was issued for another audience")]
    WrongAudience,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token names no principal (claim `{0}` is missing)")]
    NoPrincipal(String),
    #[error(
        "the token's email is not verified by its identity provider (`email_verified` is not true): an unverified address names nobody"
    )]
    UnverifiedEmail,
    #[error(
        "the token's `{0}` claim is missing or holds a value this broker does not accept from its issuer ([[broker.issuers]] require)"
    )]
    ClaimNotAccepted(String),
    #[error("a broker session cannot be exchanged for another: exchange an ID token from your identity provider")]
    SessionNotExchangeable,
    #[error("this broker issues no sessions")]
    NoSessions,
}

pub struct VerificationKey {
    pub kid: Option<String>,
    pub key: DecodingKey,
    pub algorithm: Algorithm,
}

/// Where an issuer's public keys come from.
pub enum IssuerKeys {
    /// Known at start (a JWKS file, the dev issuer's own key).
    Fixed(Vec<VerificationKey>),
    /// From the issuer's discovery document, cached and refreshed.
    Discovered(Arc<DiscoveredKeys>),
}

/// An identity provider whose tokens the broker accepts.
pub struct TrustedIssuer {
    pub issuer: String,
    /// Its tokens name one of these as their audience (the login issuer:
    /// the CLI's and app's client, and the approval page's).
    pub audiences: Vec<String>,
    pub keys: IssuerKeys,
    pub kind: IssuerKind,
    /// The claim that identifies the principal (no fallback).
    pub id_claim: String,
    /// A claim with groups; empty for none.
    pub groups_claim: String,
    /// Groups every principal of this issuer is in.
    pub groups: Vec<String>,
    /// Required claims, groups and attributes from claims, the namespace.
    pub rules: ClaimRules,
}

impl TrustedIssuer {
    /// A person-issuer with fixed keys and the usual claims (`email`, `groups`).
    pub fn with_keys(issuer: String, audience: String, keys: Vec<VerificationKey>) -> Self {
        TrustedIssuer {
            issuer,
            audiences: vec![audience],
            keys: IssuerKeys::Fixed(keys),
            kind: IssuerKind::Person,
            id_claim: "email".into(),
            groups_claim: "groups".into(),
            groups: Vec::new(),
            rules: ClaimRules::default(),
        }
    }

    /// An issuer as `[[broker.issuers]]` describes it (`base`: the policy
    /// directory, for a relative `jwks_file`).
    pub fn from_settings(settings: &IssuerSettings, base: &Path) -> Result<Self> {
        let keys = match &settings.jwks_file {
            Some(file) => IssuerKeys::Fixed(keys_from_file(&crate::settings::BrokerSettings::resolve(base, file))?),
            None => IssuerKeys::Discovered(Arc::new(DiscoveredKeys::new(&settings.issuer)?)),
        };
        Ok(TrustedIssuer {
            issuer: settings.issuer.trim_end_matches('/').to_owned(),
            audiences: vec![settings.audience.clone()],
            keys,
            kind: settings.kind,
            id_claim: settings.id_claim.clone(),
            groups_claim: settings.groups_claim.clone(),
            groups: settings.groups.clone(),
            rules: ClaimRules::from_settings(settings),
        })
    }

    /// The login issuer of `[broker.login]`: its ID tokens name the client
    /// (or the approval page's client) as their audience.
    pub fn from_login(login: &LoginSettings) -> Result<Self> {
        Ok(TrustedIssuer {
            issuer: login.issuer.trim_end_matches('/').to_owned(),
            audiences: std::iter::once(login.client_id.clone()).chain(login.web_client_id.clone()).collect(),
            keys: IssuerKeys::Discovered(Arc::new(DiscoveredKeys::new(&login.issuer)?)),
            kind: IssuerKind::Person,
            id_claim: login.id_claim.clone(),
            groups_claim: login.groups_claim.clone(),
            groups: Vec::new(),
            rules: ClaimRules::default(),
        })
    }

    /// Keys that may have signed a token with this header, fetching the
    /// issuer's keys again when none is known for its key id.
    async fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Arc<Vec<VerificationKey>> {
        match &self.keys {
            IssuerKeys::Fixed(keys) => Arc::new(
                keys.iter()
                    .filter(|key| key.algorithm == alg && (kid.is_none() || key.kid.as_deref() == kid))
                    .map(VerificationKey::clone_key)
                    .collect(),
            ),
            IssuerKeys::Discovered(discovered) => {
                let matching = |keys: &[VerificationKey]| -> Vec<VerificationKey> {
                    keys.iter()
                        .filter(|key| key.algorithm == alg && (kid.is_none() || key.kid.as_deref() == kid))
                        .map(VerificationKey::clone_key)
                        .collect()
                };
                let found = matching(&discovered.keys());
                if !found.is_empty() {
                    return Arc::new(found);
                }
                discovered.refresh(false).await;
                Arc::new(matching(&discovered.keys()))
            }
        }
    }
}

impl VerificationKey {
    fn clone_key(&self) -> VerificationKey {
        VerificationKey { kid: self.kid.clone(), key: self.key.clone(), algorithm: self.algorithm }
    }
}

/// The keys in a JWKS file (RFC 7517).
pub fn keys_from_file(path: &Path) -> Result<Vec<VerificationKey>> {
    let text = std::fs::read_to_string(path).map_err(Error::io(format!("reading JWKS {}", path.display())))?;
    let set: JwkSet = serde_json::from_str(&text)
        .map_err(|error| Error::Config(format!("{} is not a JWKS document: {error}", path.display())))?;
    let keys = keys_from_set(&set);
    if keys.is_empty() {
        return Err(Error::Config(format!("{} holds no usable signing key", path.display())));
    }
    Ok(keys)
}

/// The signature keys of a JWKS. Each key verifies only with its own
/// algorithm: the `alg` it states, else the one its type implies. Symmetric
/// and encryption keys are left out.
pub fn keys_from_set(set: &JwkSet) -> Vec<VerificationKey> {
    set.keys
        .iter()
        .filter_map(|jwk| {
            let algorithm = key_algorithm(jwk)?;
            let key = DecodingKey::from_jwk(jwk).ok()?;
            Some(VerificationKey { kid: jwk.common.key_id.clone(), key, algorithm })
        })
        .collect()
}

fn key_algorithm(jwk: &Jwk) -> Option<Algorithm> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(params) => match params.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(params) if params.curve == EllipticCurve::Ed25519 => Algorithm::EdDSA,
        // Shared secrets never verify identity tokens.
        AlgorithmParameters::OctetKeyPair(_) | AlgorithmParameters::OctetKey(_) => return None,
    };
    let algorithm = match jwk.common.key_algorithm {
        Some(stated) => stated.to_string().parse().ok()?,
        None => implied,
    };
    let family_matches = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => matches!(
            algorithm,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        ),
        _ => algorithm == implied,
    };
    family_matches.then_some(algorithm)
}

/// An issuer's keys from its OpenID Connect discovery document.
pub struct DiscoveredKeys {
    issuer: String,
    http: reqwest::Client,
    keys: RwLock<Arc<Vec<VerificationKey>>>,
    /// Held while fetching, so that concurrent misses fetch once; holds when
    /// the last fetch was attempted.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    cooldown: StdDuration,
}

#[derive(Deserialize)]
struct DiscoveryDocument {
    issuer: String,
    jwks_uri: String,
}

impl DiscoveredKeys {
    pub fn new(issuer: &str) -> Result<Self> {
        let issuer = issuer.trim_end_matches('/').to_owned();
        check_url(&issuer, "issuer")?;
        let http = crate::roots::http_client(StdDuration::from_secs(10), true)
            .map_err(|error| Error::Config(format!("building the HTTP client: {error}")))?;
        Ok(DiscoveredKeys {
            issuer,
            http,
            keys: RwLock::new(Arc::new(Vec::new())),
            last_fetch: tokio::sync::Mutex::new(None),
            cooldown: REFETCH_COOLDOWN,
        })
    }

    /// Changes the least time between two fetches caused by unknown key ids.
    pub fn with_cooldown(mut self, cooldown: StdDuration) -> Self {
        self.cooldown = cooldown;
        self
    }

    pub fn keys(&self) -> Arc<Vec<VerificationKey>> {
        match self.keys.read() {
            Ok(keys) => Arc::clone(&keys),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Fetches the keys again: always when `forced`, otherwise unless the
    /// last attempt is more recent than the cooldown. A failed fetch keeps
    /// the keys there were and is logged.
    pub async fn refresh(&self, forced: bool) {
        let mut last = self.last_fetch.lock().await;
        if !forced && last.is_some_and(|at| at.elapsed() < self.cooldown) {
            return;
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                tracing::debug!(issuer = %self.issuer, keys = keys.len(), "fetched the issuer's keys");
                match self.keys.write() {
                    Ok(mut slot) => *slot = Arc::new(keys),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(keys),
                }
            }
            Err(message) => tracing::warn!(issuer = %self.issuer, "cannot fetch the issuer's keys: {message}"),
        }
    }

    async fn fetch(&self) -> std::result::Result<Vec<VerificationKey>, String> {
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let document: DiscoveryDocument = self.get_json(&url).await?;
        // OpenID Connect Discovery 1.0, section 4.3: the document must name
        // the issuer it was fetched for.
        if document.issuer.trim_end_matches('/') != self.issuer {
            return Err(format!("{url} names another issuer ({})", document.issuer));
        }
        check_url(&document.jwks_uri, "jwks_uri").map_err(|error| error.to_string())?;
        let set: JwkSet = self.get_json(&document.jwks_uri).await?;
        let keys = keys_from_set(&set);
        if keys.is_empty() {
            return Err(format!("{} holds no usable signing key", document.jwks_uri));
        }
        Ok(keys)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> std::result::Result<T, String> {
        let response = self.http.get(url).send().await.map_err(|error| format!("GET {url}: {error}"))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", response.status()));
        }
        response.json().await.map_err(|error| format!("GET {url}: {error}"))
    }
}

/// Keys and issuers are fetched over HTTPS, or plain HTTP on loopback
/// (a development IdP on the same machine).
fn check_url(url: &str, what: &str) -> Result<()> {
    let parsed = reqwest::Url::parse(url).map_err(|error| Error::Config(format!("{what} {url:?}: {error}")))?;
    if crate::roots::is_https_or_loopback(&parsed) {
        Ok(())
    } else {
        Err(Error::Config(format!("{what} {url:?} must be an https:// URL (http:// only on loopback)")))
    }
}

/// A verified identity token and what it says.
pub struct Identity {
    pub principal: Principal,
    pub issuer: String,
    pub kind: IssuerKind,
    pub email: Option<String>,
    /// When and how they logged in (`auth_time`, `amr`), and whether a
    /// machine's issuer vouches for them.
    pub authentication: Authentication,
    /// The token's own `exp` (Unix seconds).
    pub expires_at: i64,
}

/// The claims of a broker session token.
#[derive(Debug, Serialize, Deserialize)]
struct SessionClaims {
    iss: String,
    aud: String,
    sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    /// The principal's attributes (claims its issuer exposes to policies).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    attrs: BTreeMap<String, String>,
    /// The issuer whose token this session was exchanged for.
    idp: String,
    /// When the person last logged in at `idp` (its ID token's
    /// `auth_time`): a session renewed by a refresh keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth_time: Option<i64>,
    /// How (`amr`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    amr: Vec<String>,
    /// Exchanged for a machine's token (a pipeline).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    machine: bool,
    token_use: String,
    iat: i64,
    exp: i64,
    jti: String,
}

/// The broker's own sessions: signed with their own key, never a grant
/// token's or the dev issuer's.
pub struct Sessions {
    /// Every replica's session keys: the one signing now, and those whose
    /// sessions still verify.
    keys: Arc<KeySet>,
    /// The broker's URL: the sessions' `iss`.
    issuer: String,
    lifetime: Duration,
}

impl Sessions {
    pub fn new(keys: Arc<KeySet>, issuer: String, lifetime: Duration) -> Self {
        Sessions { keys, issuer: issuer.trim_end_matches('/').to_owned(), lifetime }
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }
}

/// A bearer token verified: whom it names, until when, and by what id
/// logging out ends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub principal: Principal,
    /// When and how the principal logged in, as the token says.
    pub authentication: Authentication,
    /// The token's own `exp` (Unix seconds).
    pub expires_at: i64,
    /// A broker session's `jti`, or `sha256:HEX` of any other token.
    pub token_id: String,
}

impl Verified {
    /// How long the token stays valid from now, by the clock its expiry is
    /// checked against (the system's, as every verification's).
    pub fn remaining(&self) -> StdDuration {
        StdDuration::from_secs(u64::try_from(self.expires_at - unix_now()).unwrap_or(0))
    }
}

#[derive(Default)]
pub struct Authenticator {
    issuers: Vec<TrustedIssuer>,
    sessions: Option<Sessions>,
    login: Option<AuthConfig>,
    verified: verified::VerifiedTokens,
    /// Tokens their holders ended (logged out), by token id, with when
    /// they would have expired: refused until then. Every replica learns
    /// of each from the store's `session.ended` event.
    ended: RwLock<std::collections::HashMap<String, i64>>,
}

impl Authenticator {
    pub fn trust(mut self, issuer: TrustedIssuer) -> Self {
        self.issuers.push(issuer);
        self
    }

    /// Issue and accept broker sessions.
    pub fn with_sessions(mut self, sessions: Sessions) -> Self {
        self.sessions = Some(sessions);
        self
    }

    /// What `GET /v1/auth/config` tells clients.
    pub fn with_login(mut self, login: AuthConfig) -> Self {
        self.login = Some(login);
        self
    }

    pub fn login(&self) -> Option<&AuthConfig> {
        self.login.as_ref()
    }

    /// Refuses two issuers that would name principals in one namespace:
    /// one could then sign for the other's people.
    pub fn check_namespaces(&self) -> Result<()> {
        for (index, issuer) in self.issuers.iter().enumerate() {
            let namespace = &issuer.rules.namespace;
            if let Some(other) = self.issuers[..index].iter().find(|other| &other.rules.namespace == namespace) {
                let shared = if namespace.is_empty() {
                    "both name principals without a prefix".to_owned()
                } else {
                    format!("both name principals {namespace}:…")
                };
                return Err(Error::Config(format!(
                    "issuers {} and {} {shared}: give one of them its own `namespace` in [[broker.issuers]]",
                    other.issuer, issuer.issuer
                )));
            }
        }
        Ok(())
    }

    pub fn issuers(&self) -> impl Iterator<Item = &str> {
        self.issuers.iter().map(|issuer| issuer.issuer.as_str())
    }

    /// Fetches the keys of every discovered issuer (`forced`: even when
    /// fetched recently). Failures are logged; the previous keys stay.
    pub async fn refresh_keys(&self, forced: bool) {
        for issuer in &self.issuers {
            if let IssuerKeys::Discovered(keys) = &issuer.keys {
                keys.refresh(forced).await;
            }
        }
    }

    /// Verifies a bearer token (a broker session, or a trusted issuer's
    /// token) and returns the principal it names.
    pub async fn verify(&self, token: &str) -> std::result::Result<Principal, AuthError> {
        self.verify_bearer(token).await.map(|verified| verified.principal)
    }

    /// [`Authenticator::verify`], with the token's expiry and id.
    pub async fn verify_bearer(&self, token: &str) -> std::result::Result<Verified, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed);
        }
        let now = unix_now();
        let digest = verified::digest(token);
        let verified = match self.verified.get(&digest, now) {
            Some(verified) => verified,
            None => {
                let (header, issuer) = peek(token)?;
                let verified = match self.sessions.as_ref().filter(|sessions| sessions.issuer == issuer) {
                    Some(sessions) => {
                        // A session another replica signed with a key it just made.
                        if let Some(kid) = &header.kid {
                            sessions.keys.look_up(kid, Timestamp::from_unix_millis(now.saturating_mul(1000))).await;
                        }
                        verify_session(sessions, token, &header)?
                    }
                    None => {
                        let identity = self.verify_identity_with(token, &header, &issuer).await?;
                        Verified {
                            principal: identity.principal,
                            authentication: identity.authentication,
                            expires_at: identity.expires_at,
                            token_id: format!("sha256:{}", hourglass_core::audit::to_hex(&digest)),
                        }
                    }
                };
                self.verified.remember(digest, &verified, now);
                verified
            }
        };
        if self.is_ended(&verified.token_id) {
            return Err(AuthError::Ended);
        }
        Ok(verified)
    }

    /// Whether `token` was verified a moment ago (no signature to check).
    pub fn remembers(&self, token: &str) -> bool {
        self.verified.holds(&verified::digest(token), unix_now())
    }

    /// Ends a token (its holder logged out) until it would have expired.
    pub fn end(&self, token_id: &str, expires_at: i64) {
        let now = unix_now();
        let mut ended = self.ended.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        ended.retain(|_, until| *until > now);
        if expires_at > now {
            ended.insert(token_id.to_owned(), expires_at);
        }
    }

    fn is_ended(&self, token_id: &str) -> bool {
        let ended = self.ended.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        ended.contains_key(token_id)
    }

    /// Verifies an identity token of a trusted issuer (not a broker session).
    pub async fn verify_identity(&self, token: &str) -> std::result::Result<Identity, AuthError> {
        let (header, issuer) = peek(token)?;
        if self.sessions.as_ref().is_some_and(|sessions| sessions.issuer == issuer) {
            return Err(AuthError::SessionNotExchangeable);
        }
        self.verify_identity_with(token, &header, &issuer).await
    }

    /// RFC 8693: an identity token of a trusted issuer for a broker session.
    /// The session lasts the configured lifetime; a machine's session never
    /// outlives the token it was exchanged for.
    pub async fn exchange(&self, subject_token: &str, now: Timestamp) -> std::result::Result<SessionToken, AuthError> {
        let sessions = self.sessions.as_ref().ok_or(AuthError::NoSessions)?;
        let identity = self.verify_identity(subject_token).await?;
        let mut expires_at = now.plus(sessions.lifetime).unix_seconds();
        if identity.kind == IssuerKind::Machine {
            expires_at = expires_at.min(identity.expires_at);
        }
        let claims = SessionClaims {
            iss: sessions.issuer.clone(),
            aud: SESSION_AUDIENCE.into(),
            sub: identity.principal.id.clone(),
            email: identity.email,
            name: identity.principal.name.clone(),
            groups: identity.principal.groups.iter().cloned().collect(),
            attrs: identity.principal.attributes.clone(),
            idp: identity.issuer,
            auth_time: identity.authentication.at.map(Timestamp::unix_seconds),
            amr: identity.authentication.methods.clone(),
            machine: identity.authentication.machine,
            token_use: SESSION_TOKEN_USE.into(),
            iat: now.unix_seconds(),
            exp: expires_at,
            jti: hourglass_core::audit::to_hex(&rand::random::<[u8; 16]>()),
        };
        let key = sessions.keys.signer(now).map_err(|_| AuthError::NoSessions)?;
        let access_token = key.sign_jwt(&claims).map_err(|_| AuthError::Malformed)?;
        tracing::info!(principal = %claims.sub, idp = %claims.idp, "session issued");
        Ok(SessionToken {
            access_token,
            issued_token_type: TOKEN_TYPE_JWT.into(),
            token_type: "Bearer".into(),
            expires_in: u64::try_from(expires_at - now.unix_seconds()).unwrap_or(0),
        })
    }

    /// Signs `note` for this broker to read back within `lifetime` (the
    /// approval page's login in progress, kept in the browser): signed with
    /// the session keys every replica holds, for an audience no session
    /// has, so that it is never taken for one.
    pub fn seal_note(
        &self,
        note: &Value,
        now: Timestamp,
        lifetime: Duration,
    ) -> std::result::Result<String, AuthError> {
        let sessions = self.sessions.as_ref().ok_or(AuthError::NoSessions)?;
        let claims = serde_json::json!({
            "iss": sessions.issuer,
            "aud": NOTE_AUDIENCE,
            "exp": now.plus(lifetime).unix_seconds(),
            "note": note,
        });
        let key = sessions.keys.signer(now).map_err(|_| AuthError::NoSessions)?;
        key.sign_jwt(&claims).map_err(|_| AuthError::Malformed)
    }

    /// A note this broker (any replica) sealed, if it is intact and not expired.
    pub fn open_note(&self, sealed: &str) -> std::result::Result<Value, AuthError> {
        let sessions = self.sessions.as_ref().ok_or(AuthError::NoSessions)?;
        let header = jsonwebtoken::decode_header(sealed).map_err(|_| AuthError::Malformed)?;
        let now = Timestamp::from_unix_millis(unix_now().saturating_mul(1000));
        let key =
            header.kid.as_deref().and_then(|kid| sessions.keys.verifier(kid, now)).ok_or(AuthError::BadSignature)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&sessions.issuer]);
        validation.set_audience(&[NOTE_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let claims =
            jsonwebtoken::decode::<Value>(sealed, key.decoding(), &validation).map_err(|error| classify(&error))?;
        Ok(claims.claims["note"].clone())
    }

    async fn verify_identity_with(
        &self,
        token: &str,
        header: &jsonwebtoken::Header,
        issuer_name: &str,
    ) -> std::result::Result<Identity, AuthError> {
        let issuer = self.issuers.iter().find(|i| i.issuer == issuer_name).ok_or(AuthError::UntrustedIssuer)?;
        let candidates = issuer.candidates(header.kid.as_deref(), header.alg).await;
        let mut last = AuthError::BadSignature;
        for key in candidates.iter() {
            let mut validation = Validation::new(key.algorithm);
            validation.set_issuer(&[&issuer.issuer]);
            validation.set_audience(&issuer.audiences);
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            // A token not yet valid is refused, like an expired one.
            validation.validate_nbf = true;
            validation.leeway = LEEWAY_SECONDS;
            match jsonwebtoken::decode::<Value>(token, &key.key, &validation) {
                Ok(data) => return identity_from(&data.claims, issuer),
                Err(error) => {
                    last = classify(&error);
                    if last != AuthError::BadSignature {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }
}

/// The header and the (unverified) issuer: only to pick the keys; nothing
/// else is trusted before the signature verifies.
fn peek(token: &str) -> std::result::Result<(jsonwebtoken::Header, String), AuthError> {
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Malformed);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
    let unverified = jsonwebtoken::dangerous::insecure_decode::<Value>(token).map_err(|_| AuthError::Malformed)?;
    let issuer = unverified.claims["iss"].as_str().ok_or(AuthError::Malformed)?.to_owned();
    Ok((header, issuer))
}

fn classify(error: &jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidIssuer => AuthError::UntrustedIssuer,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        _ => AuthError::Malformed,
    }
}

/// The principal of a broker session, and when it ends (`exp`).
fn verify_session(
    sessions: &Sessions,
    token: &str,
    header: &jsonwebtoken::Header,
) -> std::result::Result<Verified, AuthError> {
    if header.alg != Algorithm::EdDSA {
        return Err(AuthError::BadSignature);
    }
    // Sessions carry the id of the key that signed them: one this broker
    // (or another replica) signs or signed with, within its overlap.
    let now = Timestamp::from_unix_millis(unix_now().saturating_mul(1000));
    let key = header.kid.as_deref().and_then(|kid| sessions.keys.verifier(kid, now)).ok_or(AuthError::BadSignature)?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[&sessions.issuer]);
    validation.set_audience(&[SESSION_AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.validate_nbf = true;
    validation.leeway = LEEWAY_SECONDS;
    let claims = jsonwebtoken::decode::<SessionClaims>(token, key.decoding(), &validation)
        .map_err(|error| classify(&error))?
        .claims;
    if claims.token_use != SESSION_TOKEN_USE {
        return Err(AuthError::Malformed);
    }
    let principal = Principal {
        id: claims.sub,
        name: claims.name,
        groups: claims.groups.into_iter().collect(),
        attributes: claims.attrs,
    };
    let authentication = Authentication {
        at: claims.auth_time.map(|seconds| Timestamp::from_unix_millis(seconds.saturating_mul(1000))),
        methods: claims.amr,
        machine: claims.machine,
    };
    Ok(Verified { principal, authentication, expires_at: claims.exp, token_id: claims.jti })
}

/// The clock expiry is checked against: the system's, as `jsonwebtoken`'s.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_secs()).unwrap_or(i64::MAX))
}

fn identity_from(claims: &Value, issuer: &TrustedIssuer) -> std::result::Result<Identity, AuthError> {
    // The configured claim or nothing: falling back to another (`sub`)
    // would let one person's id be another's in a second namespace.
    let id = claims[issuer.id_claim.as_str()]
        .as_str()
        .filter(|id| !id.trim().is_empty())
        .ok_or_else(|| AuthError::NoPrincipal(issuer.id_claim.clone()))?;
    // The id reaches logs, audit records, hooks' environments and role
    // names: IdP text, so nothing in it may break a line or a word.
    if id.chars().count() > MAX_PRINCIPAL_CHARS || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(AuthError::UnusablePrincipal(issuer.id_claim.clone()));
    }
    // Anyone can type an address into an account at many providers: it
    // names a person only once the provider has verified it. Some send the
    // flag as a string.
    if issuer.id_claim == "email"
        && !matches!(&claims["email_verified"], Value::Bool(true))
        && claims["email_verified"] != "true"
    {
        return Err(AuthError::UnverifiedEmail);
    }
    if let Some(claim) = issuer.rules.unmet(claims) {
        return Err(AuthError::ClaimNotAccepted(claim.to_owned()));
    }
    let mut groups: std::collections::BTreeSet<String> = issuer.groups.iter().cloned().collect();
    groups.extend(issuer.rules.groups(claims));
    if !issuer.groups_claim.is_empty() {
        match &claims[issuer.groups_claim.as_str()] {
            Value::Array(items) => groups.extend(items.iter().filter_map(Value::as_str).map(str::to_owned)),
            Value::String(one) => {
                groups.insert(one.clone());
            }
            _ => {}
        }
    }
    groups.retain(|group| !group.is_empty() && !group.chars().any(char::is_control));
    Ok(Identity {
        principal: Principal {
            id: issuer.rules.principal_id(&id.to_ascii_lowercase()),
            name: claims["name"].as_str().map(|name| name.chars().filter(|c| !c.is_control()).collect()),
            groups,
            attributes: issuer.rules.attributes(claims),
        },
        issuer: issuer.issuer.clone(),
        kind: issuer.kind,
        email: claims["email"].as_str().map(str::to_owned),
        authentication: Authentication {
            at: claims["auth_time"].as_i64().map(|seconds| Timestamp::from_unix_millis(seconds.saturating_mul(1000))),
            methods: match &claims["amr"] {
                Value::Array(methods) => methods.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
                _ => Vec::new(),
            },
            machine: issuer.kind == IssuerKind::Machine,
        },
        expires_at: claims["exp"].as_i64().unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

    use super::*;

    #[test]
    fn two_issuers_may_not_name_principals_in_one_namespace() {
        let people = |issuer: &str| TrustedIssuer::with_keys(issuer.into(), "hourglass".into(), Vec::new());
        let clash =
            Authenticator::default().trust(people("https://login.acme.example")).trust(people("https://evil.example"));
        let error = clash.check_namespaces().unwrap_err().to_string();
        assert!(
            error.contains("https://login.acme.example and https://evil.example both name principals without a prefix"),
            "{error}"
        );
        let mut contractors = people("https://contractors.example");
        contractors.rules.namespace = "contractors".into();
        let apart = Authenticator::default().trust(people("https://login.acme.example")).trust(contractors);
        assert!(apart.check_namespaces().is_ok(), "a second people's issuer in its own namespace");
    }
}
