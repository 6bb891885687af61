//! What every Hourglass client shares: the broker API client and its event
//! stream, and the formats that hand credentials to shells and tools. The
//! CLI and the desktop app reach the broker only through this crate.

pub mod account;
pub mod agent;
pub mod atomic_write;
pub mod clock;
pub mod credentials;
pub mod env;
pub mod feed;
pub mod filing;
pub mod hook;
pub mod login;
pub mod material;
pub mod pgpass;
pub mod readiness;
pub mod renewal;
pub mod secrets;
pub mod session;
pub mod sse;
pub mod ssh_agent;
pub mod tls;
pub mod tools;

use std::time::Duration as StdDuration;

use futures::{Stream, StreamExt};
use hourglass_core::api::{
    ApiError, Catalog, CreateRequest, Credential, DecisionBody, ErrorCode, Event, GrantList, Health,
    NotificationChoice, PersonalChannel, ReadyBody, RenewBody, RenewOutcome, RequestList, RequestOutcome, ReviewBody,
    ReviewItem, RevokeBody, RevokeMatchingBody, RevokedGrants, WhoAmI,
};
use hourglass_core::audit::AuditRecord;
use hourglass_core::review::ReviewVerdict;
use hourglass_core::{AccessRequest, Grant, GrantId, RequestId, Verdict};
use serde::Serialize;
use serde::de::DeserializeOwned;
pub use tls::Trust;
use zeroize::Zeroizing;

/// Where the CLI finds the broker when `HOURGLASS_BROKER` is not set:
/// `hourglassd dev`'s default address (HTTPS, its CA in `HOURGLASS_CA`).
pub const DEFAULT_BROKER: &str = "https://127.0.0.1:7300";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The broker refused: its code and message, as sent.
    #[error("{0}")]
    Api(ApiError),
    #[error("cannot reach the broker at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the broker sent an answer this client does not understand: {0}")]
    Protocol(String),
    #[error("{0}")]
    Config(String),
    /// The local agent refused or could not be reached: its code and message.
    #[error("{0}")]
    Agent(agent::AgentError),
    /// There is no usable OS keyring to keep a session in. The message
    /// tells a shell user what to do; the desktop app offers to keep the
    /// session in its own memory instead.
    #[error(
        "the OS keyring is unavailable ({detail}). Hourglass keeps sessions only there, never in a file. \
         Start and unlock a keyring (gnome-keyring, KWallet), or keep the session in this shell's memory only: \
         eval \"$(hourglass login --print-token)\" (it sets HOURGLASS_TOKEN)"
    )]
    NoKeyring { detail: String },
}

impl Error {
    /// The broker's error code, when the broker refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Api(error) => Some(error.code),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// A client of one broker, acting as the principal its token names.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    trust: Trust,
    auth: std::sync::Arc<Auth>,
}

/// Where the bearer token comes from.
enum Auth {
    /// A token given as is (`HOURGLASS_TOKEN`, tests, `--print-token` sessions).
    Token(Zeroizing<String>),
    /// The session in the OS keyring, renewed before it ends.
    Session { store: session::SessionStore, current: tokio::sync::Mutex<session::StoredSession> },
}

/// Where the session of a client comes from, and what it says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionInfo {
    /// `keyring` or `environment`.
    pub source: &'static str,
    /// When the bearer token expires, when it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<hourglass_core::Timestamp>,
    /// The identity provider the session was exchanged from, or the token's issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idp: Option<String>,
}

/// The broker URL: `broker` if given, else `HOURGLASS_BROKER`, else [`DEFAULT_BROKER`].
pub fn broker_url(broker: Option<&str>) -> String {
    let from_env = std::env::var("HOURGLASS_BROKER").ok().filter(|url| !url.trim().is_empty());
    let base = broker.map(str::to_owned).or(from_env).unwrap_or_else(|| DEFAULT_BROKER.to_owned());
    base.trim().trim_end_matches('/').to_owned()
}

impl Client {
    /// A client with a bearer token, trusting for the broker's certificate
    /// the CA that `HOURGLASS_CA` names, else the system's roots.
    pub fn new(base: &str, token: &str) -> Result<Client> {
        Client::with_trust(base, Trust::for_broker(base, None)?, token)
    }

    /// A client with a bearer token, trusting `trust` for the broker's certificate.
    pub fn with_trust(base: &str, trust: Trust, token: &str) -> Result<Client> {
        Client::with_auth(base, trust, Auth::Token(Zeroizing::new(token.trim().to_owned())))
    }

    /// A client using the session stored in the OS keyring, renewed
    /// silently (refresh token, then a new exchange) near its end, trusting
    /// `trust` for the broker's certificate.
    pub fn with_session(
        base: &str,
        trust: Trust,
        store: session::SessionStore,
        current: session::StoredSession,
    ) -> Result<Client> {
        Client::with_auth(base, trust, Auth::Session { store, current: tokio::sync::Mutex::new(current) })
    }

    fn with_auth(base: &str, trust: Trust, auth: Auth) -> Result<Client> {
        let base = base.trim().trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Config(format!("broker URL \"{base}\" must start with http:// or https://")));
        }
        let http = trust
            .builder_for(&base)
            .connect_timeout(StdDuration::from_secs(5))
            .user_agent(concat!("hourglass/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| Error::Config(format!("building the HTTP client: {error}")))?;
        Ok(Client { http, base, trust, auth: std::sync::Arc::new(auth) })
    }

    /// The broker (`broker`, else `HOURGLASS_BROKER`, else [`DEFAULT_BROKER`]),
    /// the CA pinned for it (`ca`, else `HOURGLASS_CA`, else none: the
    /// system's roots) and credentials: `HOURGLASS_TOKEN` when set (scripts,
    /// CI, a `--print-token` session), else the session `hourglass login`
    /// keeps in the OS keyring for that broker.
    pub fn from_env(broker: Option<&str>, ca: Option<&std::path::Path>) -> Result<Client> {
        let base = broker_url(broker);
        let trust = Trust::for_broker(&base, ca)?;
        match account::resume(&base, trust)? {
            account::Resumed::LoggedIn { client, .. } => Ok(client),
            account::Resumed::NoKeyring(error) => Err(error),
            account::Resumed::LoggedOut => Err(Error::Config(format!(
                "not logged in to {base}: run `hourglass login --broker {base}` (scripts and CI: set HOURGLASS_TOKEN; \
                 with `hourglassd dev`, `export HOURGLASS_TOKEN=$(hourglass dev-token alice)` also works)"
            ))),
        }
    }

    /// The bearer token for the next call; a keyring session is renewed
    /// first when it is about to end.
    async fn bearer(&self) -> Result<Zeroizing<String>> {
        let (store, current) = match &*self.auth {
            Auth::Token(token) => return Ok(token.clone()),
            Auth::Session { store, current } => (store, current),
        };
        let mut current = current.lock().await;
        let now = clock::local_now().unix_seconds();
        if !current.needs_renewal(now) {
            return Ok(Zeroizing::new(current.session_token.clone()));
        }
        match login::renew(&self.base, &self.trust, &current).await {
            Ok(renewed) => {
                // The IdP rotated the refresh token: keep the new one, or the
                // next renewal fails.
                store.save(&renewed)?;
                *current = renewed;
                Ok(Zeroizing::new(current.session_token.clone()))
            }
            Err(error) if current.expires_at <= now => Err(Error::Config(format!(
                "your session with {} has ended and could not be renewed ({error}): log in again with `hourglass login`",
                self.base
            ))),
            // Still valid for a little while: use it, renew next time.
            Err(_) => Ok(Zeroizing::new(current.session_token.clone())),
        }
    }

    /// Where this client's session comes from and when it ends.
    pub async fn session_info(&self) -> SessionInfo {
        let source = match &*self.auth {
            Auth::Token(_) => "environment",
            Auth::Session { .. } => "keyring",
        };
        let claims = match self.bearer().await {
            Ok(token) => session::unverified_claims(&token).unwrap_or_default(),
            Err(_) => session::TokenClaims::default(),
        };
        SessionInfo {
            source,
            expires_at: claims.exp.map(|exp| hourglass_core::Timestamp::from_unix_millis(exp.saturating_mul(1000))),
            idp: claims.idp.or(claims.iss),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// What this client trusts for the broker's certificate.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    fn unreachable(&self, error: &reqwest::Error) -> Error {
        let reason = if let Some(tls) = tls::explain(error, &self.trust, &self.base) {
            tls
        } else if error.is_connect() {
            "connection refused or no route (is hourglassd running?)".to_owned()
        } else if error.is_timeout() {
            "timed out".to_owned()
        } else {
            error.to_string()
        };
        Error::Unreachable { url: self.base.clone(), reason }
    }

    async fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T> {
        let token = self.bearer().await?;
        let response = request
            .bearer_auth(token.as_str())
            .timeout(StdDuration::from_secs(60))
            .send()
            .await
            .map_err(|error| self.unreachable(&error))?;
        let bytes = self.answer(response).await?;
        serde_json::from_slice(&bytes).map_err(|error| Error::Protocol(error.to_string()))
    }

    /// A successful answer's body; any other answer as the error it says.
    async fn answer(&self, response: reqwest::Response) -> Result<bytes::Bytes> {
        let status = response.status();
        let bytes = response.bytes().await.map_err(|error| self.unreachable(&error))?;
        if status.is_success() {
            return Ok(bytes);
        }
        match serde_json::from_slice::<ApiError>(&bytes) {
            Ok(error) => Err(Error::Api(error)),
            Err(_) => Err(Error::Protocol(format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)))),
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }

    async fn post<T: DeserializeOwned, B: Serialize>(&self, path: &str, body: &B) -> Result<T> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body)).await
    }

    async fn put<T: DeserializeOwned, B: Serialize>(&self, path: &str, body: &B) -> Result<T> {
        self.send(self.http.put(format!("{}{path}", self.base)).json(body)).await
    }

    /// Ends this client's session at the broker (`POST /v1/auth/logout`):
    /// every replica refuses it from then on.
    pub async fn end_session(&self) -> Result<()> {
        let token = self.bearer().await?;
        let response = self
            .http
            .post(format!("{}/v1/auth/logout", self.base))
            .bearer_auth(token.as_str())
            .timeout(StdDuration::from_secs(15))
            .send()
            .await
            .map_err(|error| self.unreachable(&error))?;
        self.answer(response).await.map(drop)
    }

    pub async fn health(&self) -> Result<Health> {
        self.get("/healthz").await
    }

    pub async fn whoami(&self) -> Result<WhoAmI> {
        self.get("/v1/whoami").await
    }

    pub async fn catalog(&self) -> Result<Catalog> {
        self.get("/v1/resources").await
    }

    pub async fn create_request(&self, body: &CreateRequest) -> Result<RequestOutcome> {
        self.post("/v1/requests", body).await
    }

    pub async fn requests(&self) -> Result<RequestList> {
        self.get("/v1/requests").await
    }

    pub async fn request(&self, id: &RequestId) -> Result<AccessRequest> {
        self.get(&format!("/v1/requests/{id}")).await
    }

    pub async fn approve(&self, id: &RequestId, comment: Option<String>) -> Result<RequestOutcome> {
        self.post(&format!("/v1/requests/{id}/approve"), &DecisionBody { comment }).await
    }

    pub async fn deny(&self, id: &RequestId, comment: Option<String>) -> Result<RequestOutcome> {
        self.post(&format!("/v1/requests/{id}/deny"), &DecisionBody { comment }).await
    }

    /// Approves or denies.
    pub async fn decide(&self, id: &RequestId, verdict: Verdict, comment: Option<String>) -> Result<RequestOutcome> {
        match verdict {
            Verdict::Approve => self.approve(id, comment).await,
            Verdict::Deny => self.deny(id, comment).await,
        }
    }

    pub async fn cancel(&self, id: &RequestId) -> Result<AccessRequest> {
        self.post(&format!("/v1/requests/{id}/cancel"), &serde_json::json!({})).await
    }

    pub async fn grants(&self, include_ended: bool, everyone: bool) -> Result<GrantList> {
        self.get(&format!("/v1/grants?ended={include_ended}&all={everyone}")).await
    }

    pub async fn grant(&self, id: &GrantId) -> Result<Grant> {
        self.get(&format!("/v1/grants/{id}")).await
    }

    /// The credential of a live grant. Zeroized when dropped; never log it.
    /// Variables no credential may set (a preload library, a proxy, a CA
    /// bundle…) are dropped here, whatever the broker sent, so that no
    /// shell, IDE or tool this client feeds ever gets them.
    pub async fn credential(&self, id: &GrantId) -> Result<Credential> {
        let mut credential: Credential = self.get(&format!("/v1/grants/{id}/credential")).await?;
        credential.drop_refused_names();
        Ok(credential)
    }

    pub async fn renew(&self, id: &GrantId, duration: &str, reason: Option<String>) -> Result<RenewOutcome> {
        self.post(&format!("/v1/grants/{id}/renew"), &RenewBody { duration: duration.to_owned(), reason }).await
    }

    /// Tells the broker this client checked the grant's credential works.
    pub async fn confirm_ready(&self, id: &GrantId, check: Option<String>) -> Result<Grant> {
        self.post(&format!("/v1/grants/{id}/ready"), &ReadyBody { check }).await
    }

    pub async fn revoke(&self, id: &GrantId, reason: Option<String>) -> Result<Grant> {
        self.post(&format!("/v1/grants/{id}/revoke"), &RevokeBody { reason }).await
    }

    /// Ends every live grant on a resource (narrowed to a role or owner) at
    /// once; all or nothing.
    pub async fn revoke_matching(&self, body: &RevokeMatchingBody) -> Result<RevokedGrants> {
        self.post("/v1/grants/revoke", body).await
    }

    /// The channels that can tell me of my requests and access, as I chose them.
    pub async fn my_channels(&self) -> Result<Vec<PersonalChannel>> {
        self.get("/v1/me/notifications").await
    }

    /// Turns the `muted` channels off for me, the others on.
    pub async fn choose_channels(&self, muted: Vec<String>) -> Result<Vec<PersonalChannel>> {
        self.put("/v1/me/notifications", &NotificationChoice { muted }).await
    }

    /// Break-glass grants waiting for my review.
    pub async fn reviews(&self) -> Result<Vec<ReviewItem>> {
        self.get("/v1/reviews").await
    }

    /// Reviews a break-glass grant: justified or not, and why.
    pub async fn review(&self, id: &GrantId, verdict: ReviewVerdict, comment: String) -> Result<Grant> {
        self.post(&format!("/v1/grants/{id}/review"), &ReviewBody { verdict, comment }).await
    }

    pub async fn history(&self, limit: usize) -> Result<Vec<AuditRecord>> {
        self.get(&format!("/v1/history?limit={limit}")).await
    }

    /// Opens the event stream. The first event is `hello`, with the broker's
    /// clock. The stream ends when the connection does; reconnecting (and
    /// reloading state, since events may have been missed) is the caller's:
    /// [`feed::Feed`] does both.
    pub async fn events(&self) -> Result<impl Stream<Item = Result<Event>> + Send + 'static> {
        Ok(self.events_since(None).await?.map(|delivered| delivered.map(|delivered| delivered.event)))
    }

    /// Opens the event stream, asking the broker to resume after the event
    /// `last_event_id` names (`Last-Event-ID`): it replays what was missed,
    /// or sends `resync` when it cannot. Each event comes with the stream's
    /// id, if the broker sends ids.
    pub async fn events_since(
        &self,
        last_event_id: Option<&str>,
    ) -> Result<impl Stream<Item = Result<Delivered>> + Send + 'static> {
        let token = self.bearer().await?;
        let mut request = self
            .http
            .get(format!("{}/v1/events", self.base))
            .bearer_auth(token.as_str())
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.map_err(|error| self.unreachable(&error))?;
        if !response.status().is_success() {
            let status = response.status();
            let bytes = response.bytes().await.unwrap_or_default();
            return Err(match serde_json::from_slice::<ApiError>(&bytes) {
                Ok(error) => Error::Api(error),
                Err(_) => Error::Protocol(format!("HTTP {status} opening the event stream")),
            });
        }
        let url = self.base.clone();
        let mut parser = sse::Parser::default();
        let stream = response.bytes_stream().flat_map(move |chunk| {
            let items: Vec<Result<Delivered>> = match chunk {
                Ok(bytes) => parser
                    .push(&bytes)
                    .into_iter()
                    .map(|message| {
                        serde_json::from_str::<Event>(&message.data)
                            .map(|event| Delivered { id: message.id, event })
                            .map_err(|error| Error::Protocol(format!("event {}: {error}", message.event)))
                    })
                    .collect(),
                Err(error) => vec![Err(Error::Unreachable { url: url.clone(), reason: error.to_string() })],
            };
            futures::stream::iter(items)
        });
        Ok(stream)
    }
}

/// An event as the stream delivered it.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The stream's last event id with it (SSE `id:`), when the broker sends ids.
    pub id: Option<String>,
    pub event: Event,
}
