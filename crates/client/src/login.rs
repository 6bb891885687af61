//! Logging in: OpenID Connect against the issuer the broker names
//! (`GET /v1/auth/config`), then an RFC 8693 token exchange of the ID token
//! for a broker session (`POST /v1/auth/token`).
//!
//! - [`Login::with_browser`]: Authorization Code with PKCE (S256) through the
//!   system browser and a loopback redirect on a random port (RFC 8252),
//!   with `state` and `nonce` checked.
//! - [`Login::with_device`]: the device authorization grant (RFC 8628).
//! - [`renew`]: the refresh token (rotated by the IdP) for a new ID token,
//!   exchanged for a new session; [`revoke`] ends the refresh token.
//!
//! The OAuth exchanges use the `oauth2` crate over this crate's reqwest
//! (one HTTP stack), with redirects off for every call to the IdP. Calls to
//! the broker's origin (the dev issuer included) trust what the caller's
//! [`Trust`] pins; calls to an IdP elsewhere, the system's roots.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration as StdDuration;

use hourglass_core::api::{ApiError, AuthConfig, SessionToken};
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, CsrfToken, DeviceAuthorizationUrl, EndpointNotSet, EndpointSet,
    ExtraTokenFields, PkceCodeChallenge, RedirectUrl, RefreshToken, RequestTokenError, Scope,
    StandardDeviceAuthorizationResponse, StandardRevocableToken, StandardTokenResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use zeroize::Zeroizing;

use crate::session::{StoredSession, unverified_claims};
use crate::{Error, Result, Trust};

/// RFC 8693 names.
pub const GRANT_TYPE_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";

/// How long the browser login may take before the loopback listener gives up.
const BROWSER_TIMEOUT: StdDuration = StdDuration::from_secs(300);

/// What the user must do to log in, for the caller to show.
#[derive(Debug, Clone, Copy)]
pub enum Prompt<'a> {
    /// Open this URL in a browser (the caller opens the system browser and
    /// prints it too).
    Browser { url: &'a str },
    /// Visit the verification URI and enter the code (RFC 8628).
    Device { verification_uri: &'a str, verification_uri_complete: Option<&'a str>, user_code: &'a str },
}

/// Opens `url` in the user's browser: `$BROWSER` when set (the convention
/// of xdg-utils and most CLIs, and how a test stands in for a browser), else
/// the desktop's default (`xdg-open`, `open` on macOS). False when nothing
/// could be started; the caller then shows the URL.
pub fn open_browser(url: &str) -> bool {
    let from_env = std::env::var("BROWSER").ok().filter(|browser| !browser.trim().is_empty());
    let opener = from_env.unwrap_or_else(|| if cfg!(target_os = "macos") { "open" } else { "xdg-open" }.to_owned());
    std::process::Command::new(opener.trim())
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

/// The OpenID Connect endpoints this client uses, from discovery.
#[derive(Debug, Clone, Deserialize)]
pub struct ProviderMetadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub device_authorization_endpoint: Option<String>,
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
}

/// The token endpoint's answer, with the `id_token` that oauth2's basic
/// response would drop.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdTokenField {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

impl ExtraTokenFields for IdTokenField {}

type OidcTokenResponse = StandardTokenResponse<IdTokenField, BasicTokenType>;

type OidcClient<A = EndpointNotSet, D = EndpointNotSet, R = EndpointNotSet, T = EndpointNotSet> = oauth2::Client<
    BasicErrorResponse,
    OidcTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    A,
    D,
    EndpointNotSet,
    R,
    T,
>;

/// One login in progress: the broker's login settings and its issuer's endpoints.
pub struct Login {
    broker: String,
    config: AuthConfig,
    metadata: ProviderMetadata,
    http: Http,
    /// Ask the identity provider to authenticate the person again, even
    /// if it remembers them (`prompt=login`, `max_age=0`): a step-up for
    /// deciding what policy guards with `approval_max_auth_age`.
    fresh: bool,
}

impl Login {
    /// Asks the broker how its users log in and discovers the issuer.
    /// `trust` is what the client trusts for the broker's certificate.
    pub async fn start(broker: &str, trust: &Trust) -> Result<Login> {
        let broker = broker.trim().trim_end_matches('/').to_owned();
        let http = Http::new(trust)?;
        let config = http.broker_config(&broker).await?;
        let metadata = http.discover(&config.issuer).await?;
        Ok(Login { broker, config, metadata, http, fresh: false })
    }

    /// This login authenticates the person again at the identity provider
    /// (its ID token's `auth_time` is now), whatever it remembers.
    pub fn fresh(mut self) -> Login {
        self.fresh = true;
        self
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    pub fn metadata(&self) -> &ProviderMetadata {
        &self.metadata
    }

    fn client(&self) -> Result<OidcClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>> {
        oidc_client(&self.config.client_id, &self.metadata)
    }

    fn scopes(&self) -> impl Iterator<Item = Scope> + '_ {
        self.config.scopes.iter().cloned().map(Scope::new)
    }

    /// Authorization Code with PKCE through a browser and a loopback redirect.
    pub async fn with_browser(&self, prompt: impl Fn(Prompt<'_>)) -> Result<StoredSession> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.map_err(|error| {
            Error::Config(format!("cannot listen on a loopback port for the login redirect: {error}"))
        })?;
        let port = listener.local_addr().map_err(|error| Error::Config(error.to_string()))?.port();
        let redirect = RedirectUrl::new(format!("http://127.0.0.1:{port}/callback")).map_err(config_error)?;
        let auth_url = AuthUrl::new(self.metadata.authorization_endpoint.clone()).map_err(config_error)?;
        let client = self.client()?.set_auth_uri(auth_url).set_redirect_uri(redirect);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let nonce = CsrfToken::new_random();
        let mut authorize = client
            .authorize_url(CsrfToken::new_random)
            .add_scopes(self.scopes())
            .add_extra_param("nonce", nonce.secret())
            .set_pkce_challenge(challenge);
        if self.fresh {
            authorize = authorize.add_extra_param("prompt", "login").add_extra_param("max_age", "0");
        }
        let (url, state) = authorize.url();
        prompt(Prompt::Browser { url: url.as_str() });
        let code = tokio::time::timeout(BROWSER_TIMEOUT, wait_for_code(&listener, state.secret()))
            .await
            .map_err(|_| Error::Config("the login was not completed in the browser within 5 minutes".into()))??;
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .set_pkce_verifier(verifier)
            .request_async(&self.http)
            .await
            .map_err(|error| token_error("the identity provider refused the authorization code", error))?;
        let id_token = id_token_of(&response)?;
        let claims = unverified_claims(&id_token).unwrap_or_default();
        if claims.nonce.as_deref() != Some(nonce.secret().as_str()) {
            return Err(Error::Protocol("the ID token's nonce is not the one this login sent".into()));
        }
        self.finish(&response, &id_token).await
    }

    /// The device authorization grant: the user approves on another device.
    pub async fn with_device(&self, prompt: impl Fn(Prompt<'_>)) -> Result<StoredSession> {
        let Some(endpoint) = &self.metadata.device_authorization_endpoint else {
            return Err(Error::Config(format!(
                "{} does not offer the device authorization grant: log in with a browser",
                self.metadata.issuer
            )));
        };
        let client = self
            .client()?
            .set_device_authorization_url(DeviceAuthorizationUrl::new(endpoint.clone()).map_err(config_error)?);
        let details: StandardDeviceAuthorizationResponse = client
            .exchange_device_code()
            .add_scopes(self.scopes())
            .request_async(&self.http)
            .await
            .map_err(|error| token_error("the identity provider refused the device authorization", error))?;
        prompt(Prompt::Device {
            verification_uri: details.verification_uri().as_str(),
            verification_uri_complete: details.verification_uri_complete().map(|uri| uri.secret().as_str()),
            user_code: details.user_code().secret(),
        });
        let response = client
            .exchange_device_access_token(&details)
            .request_async(&self.http, tokio::time::sleep, None)
            .await
            .map_err(|error| token_error("the device login did not complete", error))?;
        let id_token = id_token_of(&response)?;
        self.finish(&response, &id_token).await
    }

    async fn finish(&self, response: &OidcTokenResponse, id_token: &str) -> Result<StoredSession> {
        let session = self.http.exchange(&self.broker, id_token).await?;
        Ok(stored(&session, response, &self.config.issuer, &self.config.client_id))
    }
}

/// Renews a session: the refresh token for a new ID token (the IdP rotates
/// the refresh token), exchanged for a new broker session.
pub async fn renew(broker: &str, trust: &Trust, current: &StoredSession) -> Result<StoredSession> {
    let Some(refresh_token) = &current.refresh_token else {
        return Err(Error::Config("the identity provider gave no refresh token".into()));
    };
    let http = Http::new(trust)?;
    let metadata = http.discover(&current.issuer).await?;
    let response = oidc_client(&current.client_id, &metadata)?
        .exchange_refresh_token(&RefreshToken::new(refresh_token.clone()))
        .request_async(&http)
        .await
        .map_err(|error| token_error("the identity provider refused the refresh token", error))?;
    let id_token = id_token_of(&response)?;
    let session = http.exchange(broker.trim_end_matches('/'), &id_token).await?;
    let mut renewed = stored(&session, &response, &current.issuer, &current.client_id);
    // An IdP that does not rotate refresh tokens answers without one.
    if renewed.refresh_token.is_none() {
        renewed.refresh_token = current.refresh_token.clone();
    }
    Ok(renewed)
}

/// Revokes the session's refresh token at the IdP (RFC 7009). `Ok(false)`
/// when there is nothing to revoke or the IdP offers no revocation.
/// `trust` is the broker's (the dev issuer shares its origin).
pub async fn revoke(session: &StoredSession, trust: &Trust) -> Result<bool> {
    let Some(refresh_token) = &session.refresh_token else { return Ok(false) };
    let http = Http::new(trust)?;
    let metadata = http.discover(&session.issuer).await?;
    let Some(endpoint) = &metadata.revocation_endpoint else { return Ok(false) };
    // A plain form POST rather than oauth2's revocation, which refuses
    // http:// endpoints even on loopback (the dev issuer, tests).
    let body = Zeroizing::new(
        oauth2::url::form_urlencoded::Serializer::new(String::new())
            .append_pair("token", refresh_token)
            .append_pair("token_type_hint", "refresh_token")
            .append_pair("client_id", &session.client_id)
            .finish(),
    );
    let response = http
        .to(endpoint)
        .post(endpoint)
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body.to_string())
        .send()
        .await
        .map_err(|error| http.unreachable(endpoint, &error))?;
    if !response.status().is_success() {
        let status = response.status();
        let detail =
            response.json::<serde_json::Value>().await.map_or_else(|_| format!("HTTP {status}"), |v| describe(&v));
        return Err(Error::Config(format!("the identity provider did not revoke the refresh token: {detail}")));
    }
    Ok(true)
}

fn oidc_client(
    client_id: &str,
    metadata: &ProviderMetadata,
) -> Result<OidcClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>> {
    let token_url = TokenUrl::new(metadata.token_endpoint.clone()).map_err(config_error)?;
    Ok(OidcClient::new(ClientId::new(client_id.to_owned())).set_token_uri(token_url))
}

fn stored(session: &SessionToken, response: &OidcTokenResponse, issuer: &str, client_id: &str) -> StoredSession {
    let claims = unverified_claims(&session.access_token).unwrap_or_default();
    let now = crate::clock::local_now().unix_seconds();
    let issued_at = claims.iat.unwrap_or(now);
    StoredSession {
        session_token: session.access_token.clone(),
        refresh_token: response.refresh_token().map(|token| token.secret().clone()),
        issued_at,
        expires_at: claims.exp.unwrap_or(now + i64::try_from(session.expires_in).unwrap_or(0)),
        issuer: issuer.to_owned(),
        client_id: client_id.to_owned(),
    }
}

fn id_token_of(response: &OidcTokenResponse) -> Result<Zeroizing<String>> {
    response.extra_fields().id_token.clone().map(Zeroizing::new).ok_or_else(|| {
        Error::Protocol(
            "the identity provider sent no ID token (is the `openid` scope allowed for this client?)".into(),
        )
    })
}

fn config_error(error: impl std::fmt::Display) -> Error {
    Error::Config(format!("the identity provider's configuration is unusable: {error}"))
}

fn token_error<RE: oauth2::ErrorResponse + 'static>(what: &str, error: RequestTokenError<HttpError, RE>) -> Error {
    let detail = match error {
        RequestTokenError::ServerResponse(response) => {
            serde_json::to_value(&response).map_or_else(|_| "an error".to_owned(), |value| describe(&value))
        }
        RequestTokenError::Request(error) => error.to_string(),
        RequestTokenError::Parse(error, _) => format!("an answer this client does not understand: {error}"),
        RequestTokenError::Other(message) => message,
    };
    Error::Config(format!("{what}: {detail}"))
}

/// `invalid_grant: grant request is invalid` from an RFC 6749 error body.
fn describe(error: &serde_json::Value) -> String {
    let code = error["error"].as_str().unwrap_or("error");
    match error["error_description"].as_str() {
        Some(description) => format!("{code}: {description}"),
        None => code.to_owned(),
    }
}

/// Waits for the browser's redirect to the loopback listener; answers it
/// with a page telling the user to go back to the terminal.
async fn wait_for_code(listener: &TcpListener, expected_state: &str) -> Result<Zeroizing<String>> {
    loop {
        let (mut stream, _) = listener
            .accept()
            .await
            .map_err(|error| Error::Config(format!("the login redirect listener failed: {error}")))?;
        let mut buffer = vec![0_u8; 16 * 1024];
        let mut read = 0;
        while read < buffer.len() {
            match stream.read(&mut buffer[read..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
            if buffer[..read].windows(4).any(|window| window == b"\r\n\r\n") {
                break;
            }
        }
        let head = String::from_utf8_lossy(&buffer[..read]).into_owned();
        zeroize::Zeroize::zeroize(&mut buffer);
        let target = head.lines().next().and_then(|line| line.split_whitespace().nth(1)).unwrap_or("");
        let Ok(url) = oauth2::url::Url::parse(&format!("http://127.0.0.1{target}")) else {
            respond(&mut stream, 400, "That is not a login redirect.").await;
            continue;
        };
        if url.path() != "/callback" {
            respond(&mut stream, 404, "Not found.").await;
            continue;
        }
        let param = |name: &str| url.query_pairs().find(|(key, _)| key == name).map(|(_, value)| value.into_owned());
        if let Some(error) = param("error") {
            let description = param("error_description").unwrap_or_default();
            respond(&mut stream, 400, "The login failed; see the terminal.").await;
            return Err(Error::Config(format!("the identity provider refused the login: {error} {description}")));
        }
        if param("state").as_deref() != Some(expected_state) {
            respond(&mut stream, 400, "This redirect does not belong to the login in progress.").await;
            return Err(Error::Protocol(
                "the login redirect's state does not match this login (a forged or stale redirect)".into(),
            ));
        }
        let Some(code) = param("code") else {
            respond(&mut stream, 400, "The redirect carries no authorization code.").await;
            return Err(Error::Protocol("the login redirect carries no authorization code".into()));
        };
        respond(
            &mut stream,
            200,
            "You are logged in to Hourglass. You can close this window and return to the terminal.",
        )
        .await;
        return Ok(Zeroizing::new(code));
    }
}

async fn respond(stream: &mut tokio::net::TcpStream, status: u16, message: &str) {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Bad Request",
    };
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Hourglass</title></head><body><p>{message}</p></body></html>"
    );
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The HTTP clients of the login: our reqwest, no redirects, for oauth2
/// too; one trusting the broker's pin for its origin, one the system's roots.
struct Http {
    trust: Trust,
    pinned: reqwest::Client,
    system: reqwest::Client,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

impl Http {
    fn new(trust: &Trust) -> Result<Http> {
        let build = |builder: reqwest::ClientBuilder| {
            builder
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(StdDuration::from_secs(5))
                .timeout(StdDuration::from_secs(30))
                .user_agent(concat!("hourglass/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|error| Error::Config(format!("building the HTTP client: {error}")))
        };
        let system = build(Trust::system().builder_for_pinned())?;
        let pinned = match trust.ca_file() {
            Some(_) => build(trust.builder_for_pinned())?,
            None => system.clone(),
        };
        Ok(Http { trust: trust.clone(), pinned, system })
    }

    /// The client for calls to `url`.
    fn to(&self, url: &str) -> &reqwest::Client {
        if self.trust.pins(url) { &self.pinned } else { &self.system }
    }

    fn unreachable(&self, url: &str, error: &reqwest::Error) -> Error {
        let reason = crate::tls::explain(error, &self.trust, url).unwrap_or_else(|| error.to_string());
        Error::Unreachable { url: url.to_owned(), reason }
    }

    async fn get(&self, url: &str) -> Result<reqwest::Response> {
        self.to(url).get(url).send().await.map_err(|error| self.unreachable(url, &error))
    }

    async fn broker_config(&self, broker: &str) -> Result<AuthConfig> {
        let url = format!("{broker}/v1/auth/config");
        let response = self.get(&url).await?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|error| Error::Unreachable { url: url.clone(), reason: error.to_string() })?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|error| Error::Protocol(format!("{url}: {error}")));
        }
        Err(match serde_json::from_slice::<ApiError>(&bytes) {
            Ok(error) => Error::Api(error),
            Err(_) => Error::Protocol(format!("{url}: HTTP {status}")),
        })
    }

    async fn discover(&self, issuer: &str) -> Result<ProviderMetadata> {
        let issuer = issuer.trim_end_matches('/');
        let url = format!("{issuer}/.well-known/openid-configuration");
        let response = self.get(&url).await?;
        if !response.status().is_success() {
            return Err(Error::Protocol(format!("{url}: HTTP {}", response.status())));
        }
        let metadata: ProviderMetadata =
            response.json().await.map_err(|error| Error::Protocol(format!("{url}: {error}")))?;
        if metadata.issuer.trim_end_matches('/') != issuer {
            return Err(Error::Protocol(format!("{url} names another issuer ({})", metadata.issuer)));
        }
        Ok(metadata)
    }

    /// `POST /v1/auth/token`: the ID token for a broker session.
    async fn exchange(&self, broker: &str, id_token: &str) -> Result<SessionToken> {
        let url = format!("{broker}/v1/auth/token");
        let body = Zeroizing::new(
            oauth2::url::form_urlencoded::Serializer::new(String::new())
                .append_pair("grant_type", GRANT_TYPE_TOKEN_EXCHANGE)
                .append_pair("subject_token", id_token)
                .append_pair("subject_token_type", TOKEN_TYPE_ID_TOKEN)
                .finish(),
        );
        let response = self
            .to(&url)
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body.to_string())
            .send()
            .await
            .map_err(|error| self.unreachable(broker, &error))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|error| Error::Unreachable { url: broker.to_owned(), reason: error.to_string() })?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|error| Error::Protocol(format!("{url}: {error}")));
        }
        Err(match serde_json::from_slice::<ApiError>(&bytes) {
            Ok(error) => Error::Api(error),
            Err(_) => Error::Protocol(format!("{url}: HTTP {status}")),
        })
    }
}

impl<'c> oauth2::AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = std::result::Result<oauth2::HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let url = parts.uri.to_string();
            let response = self
                .to(&url)
                .request(parts.method, &url)
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|error| HttpError(format!("{}: {error}", parts.uri)))?;
            let mut builder = oauth2::http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            let bytes = response.bytes().await.map_err(|error| HttpError(error.to_string()))?;
            builder.body(bytes.to_vec()).map_err(|error| HttpError(error.to_string()))
        })
    }
}
