//! The approval page's login: the broker as an OpenID Connect relying party
//! of its own (`[broker.login] web_client_id`), Authorization Code with
//! PKCE, the person asked to authenticate every time (`prompt=login`,
//! `max_age=0`): an approval from a link is never made on a login that a
//! browser remembered.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::error::{Error, Result};

/// Where the page's login happens, and where it comes back to.
pub struct WebLogin {
    issuer: String,
    client_id: String,
    scopes: Vec<String>,
    /// The broker's public URL (no trailing slash): links, the redirect,
    /// the origin a form must come from.
    pub public_url: String,
    http: reqwest::Client,
    endpoints: OnceCell<Endpoints>,
}

#[derive(Debug, Clone, Deserialize)]
struct Endpoints {
    authorization_endpoint: String,
    token_endpoint: String,
}

#[derive(Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
}

/// A login in progress: what the callback checks and needs.
pub struct Started {
    pub url: String,
    pub state: String,
    pub nonce: String,
    pub verifier: String,
}

impl WebLogin {
    pub fn new(issuer: &str, client_id: &str, scopes: &[String], public_url: &str) -> Result<WebLogin> {
        let http = crate::roots::http_client(std::time::Duration::from_secs(15), false)
            .map_err(|error| Error::Config(format!("building the HTTP client: {error}")))?;
        Ok(WebLogin {
            issuer: issuer.trim_end_matches('/').to_owned(),
            client_id: client_id.to_owned(),
            scopes: scopes.iter().filter(|scope| *scope != "offline_access").cloned().collect(),
            public_url: public_url.trim_end_matches('/').to_owned(),
            http,
            endpoints: OnceCell::new(),
        })
    }

    /// Cookies only over HTTPS, unless the broker itself is plain HTTP
    /// (loopback, or behind a proxy that terminates TLS).
    pub fn secure(&self) -> bool {
        self.public_url.starts_with("https://")
    }

    pub fn redirect_uri(&self) -> String {
        format!("{}/approve/callback", self.public_url)
    }

    async fn endpoints(&self) -> Result<&Endpoints> {
        self.endpoints
            .get_or_try_init(|| async {
                let url = format!("{}/.well-known/openid-configuration", self.issuer);
                let answer = self.http.get(&url).send().await.map_err(|error| {
                    Error::Config(format!("the identity provider's discovery: {}", error.without_url()))
                })?;
                answer.json::<Endpoints>().await.map_err(|error| {
                    Error::Config(format!("the identity provider's discovery does not read: {}", error.without_url()))
                })
            })
            .await
    }

    /// Where to send the browser: the identity provider's login, for this
    /// login's state, nonce and PKCE challenge.
    pub async fn start(&self) -> Result<Started> {
        let endpoints = self.endpoints().await?;
        let random = || URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let (state, nonce, verifier) = (random(), random(), random());
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let mut url = reqwest::Url::parse(&endpoints.authorization_endpoint)
            .map_err(|_| Error::Config("the identity provider's authorization endpoint is not a URL".into()))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &self.redirect_uri())
            .append_pair("scope", &self.scopes.join(" "))
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            // Whatever the browser's single sign-on remembers, the person
            // authenticates now: the decision counts from this login.
            .append_pair("prompt", "login")
            .append_pair("max_age", "0");
        Ok(Started { url: url.to_string(), state, nonce, verifier })
    }

    /// The ID token for an authorization `code` (with its PKCE verifier).
    pub async fn redeem(&self, code: &str, verifier: &str) -> Result<String> {
        let endpoints = self.endpoints().await?;
        let redirect = self.redirect_uri();
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect.as_str()),
            ("client_id", self.client_id.as_str()),
            ("code_verifier", verifier),
        ];
        // application/x-www-form-urlencoded, as a URL's query encodes it.
        let body = reqwest::Url::parse_with_params("http://form.invalid/", &form)
            .map_err(|_| Error::Internal("encoding the token request".into()))?
            .query()
            .unwrap_or_default()
            .to_owned();
        let answer = self
            .http
            .post(&endpoints.token_endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|error| {
                Error::Config(format!("the identity provider's token endpoint: {}", error.without_url()))
            })?;
        if !answer.status().is_success() {
            return Err(Error::refused(
                hourglass_core::api::ErrorCode::Unauthenticated,
                format!("the identity provider refused the login (HTTP {})", answer.status().as_u16()),
            ));
        }
        let token: TokenAnswer = answer.json().await.map_err(|error| {
            Error::Config(format!("the identity provider's token answer does not read: {}", error.without_url()))
        })?;
        token.id_token.ok_or_else(|| Error::Config("the identity provider sent no ID token".into()))
    }
}
