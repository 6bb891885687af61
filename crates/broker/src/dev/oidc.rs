//! The development OpenID Connect issuer of `hourglassd dev`, served at
//! `{broker}/dev`: discovery, JWKS, an authorization endpoint whose "login"
//! is a user picker (development only, no passwords), a token endpoint
//! (authorization code with PKCE S256, refresh tokens that rotate, the
//! device grant) and a device verification page with the same picker.
//!
//! `hourglass login` cannot tell it from a production IdP: the demo logs in
//! through exactly the code path people use. State lives in memory; a
//! restart logs everybody out of the dev issuer (sessions the broker issued
//! stay valid until they expire).

use crate::http::page::escape;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::rejection::FormRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine;
use hourglass_core::{Duration, Timestamp};
use sha2::{Digest, Sha256};

use super::{CLIENT_ID, DevIssuer, DevUser};
use crate::clock::Clock;

/// ID tokens are for logging in, not for calling the broker with: short.
pub const ID_TOKEN_LIFETIME: Duration = Duration::from_hours(1);
const CODE_LIFETIME: Duration = Duration::from_mins(2);
const DEVICE_CODE_LIFETIME: Duration = Duration::from_mins(10);
/// Seconds between device-grant polls (RFC 8628 `interval`).
const DEVICE_INTERVAL: u64 = 2;
const REFRESH_TOKEN_LIFETIME: Duration = Duration::from_hours(24 * 30);
pub const GRANT_TYPE_DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";
const SCOPES: &[&str] = &["openid", "email", "profile", "groups", "offline_access"];

/// The dev issuer's state: codes, refresh tokens and device grants in flight.
pub struct DevOidc {
    issuer: Arc<DevIssuer>,
    users: Vec<DevUser>,
    clock: Arc<dyn Clock>,
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    codes: HashMap<String, CodeGrant>,
    refresh_tokens: HashMap<String, LoggedIn>,
    /// By device code.
    devices: HashMap<String, DeviceGrant>,
}

struct CodeGrant {
    login: LoggedIn,
    redirect_uri: String,
    code_challenge: String,
    nonce: Option<String>,
    expires_at: Timestamp,
}

#[derive(Clone)]
struct LoggedIn {
    user: String,
    scope: String,
    auth_time: Timestamp,
}

struct DeviceGrant {
    user_code: String,
    scope: String,
    expires_at: Timestamp,
    interval: u64,
    last_poll: Option<Timestamp>,
    approved: Option<LoggedIn>,
}

impl DevOidc {
    pub fn new(issuer: Arc<DevIssuer>, users: Vec<DevUser>, clock: Arc<dyn Clock>) -> Self {
        DevOidc { issuer, users, clock, pending: Mutex::new(Pending::default()) }
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        match self.pending.lock() {
            Ok(pending) => pending,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer.issuer)
    }

    fn user(&self, id: &str) -> Option<&DevUser> {
        self.users.iter().find(|user| user.id == id)
    }

    /// The token endpoint's answer for a logged-in user: an ID token and a
    /// fresh refresh token (the previous one, if any, is already spent).
    fn tokens(&self, login: LoggedIn, nonce: Option<&str>) -> Response {
        let now = self.clock.now();
        let Some(user) = self.user(&login.user) else {
            return oauth_error("invalid_grant", "the user is no longer a demo user");
        };
        let id_token = match self.issuer.mint_id_token(user, now, nonce, login.auth_time) {
            Ok(token) => token,
            Err(error) => {
                tracing::error!("dev issuer: {error}");
                return oauth_error("server_error", "signing the ID token failed");
            }
        };
        let refresh_token = random_token();
        let scope = login.scope.clone();
        self.pending().refresh_tokens.insert(refresh_token.clone(), login);
        no_store(Json(serde_json::json!({
            "access_token": random_token(),
            "token_type": "Bearer",
            "expires_in": ID_TOKEN_LIFETIME.as_secs(),
            "id_token": id_token,
            "refresh_token": refresh_token,
            "scope": scope,
        })))
    }
}

/// The dev issuer's routes, under the issuer's path (`/dev`).
pub fn router(oidc: Arc<DevOidc>) -> Router {
    Router::new()
        .route("/dev/.well-known/openid-configuration", get(discovery))
        .route("/dev/jwks", get(jwks))
        .route("/dev/authorize", get(authorize_page).post(authorize))
        .route("/dev/token", post(token))
        .route("/dev/device/code", post(device_code))
        .route("/dev/device", get(device_page).post(device_approve))
        .route("/dev/revoke", post(revoke))
        .layer(DefaultBodyLimit::max(crate::http::MAX_BODY_BYTES))
        .with_state(oidc)
}

type Params = HashMap<String, String>;

async fn discovery(State(oidc): State<Arc<DevOidc>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "issuer": oidc.issuer.issuer,
        "authorization_endpoint": oidc.url("/authorize"),
        "token_endpoint": oidc.url("/token"),
        "jwks_uri": oidc.url("/jwks"),
        "device_authorization_endpoint": oidc.url("/device/code"),
        "revocation_endpoint": oidc.url("/revoke"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token", GRANT_TYPE_DEVICE_CODE],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": SCOPES,
        "claims_supported": ["sub", "email", "name", "groups", "nonce", "auth_time"],
    }))
}

async fn jwks(State(oidc): State<Arc<DevOidc>>) -> Json<serde_json::Value> {
    Json(oidc.issuer.jwks())
}

/// An authorization request, checked. Only the dev client with a loopback
/// redirect (RFC 8252) and a PKCE S256 challenge is served.
struct AuthorizationRequest {
    redirect_uri: String,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: String,
    scope: String,
}

fn check_authorization(params: &Params) -> Result<AuthorizationRequest, String> {
    let get = |name: &str| params.get(name).map(String::as_str).filter(|value| !value.is_empty());
    if get("client_id") != Some(CLIENT_ID) {
        return Err(format!("unknown client_id: the development issuer serves only \"{CLIENT_ID}\""));
    }
    let redirect_uri = get("redirect_uri").ok_or("redirect_uri is missing")?;
    if !is_loopback_redirect(redirect_uri) {
        return Err("redirect_uri must be a loopback address: http://127.0.0.1:PORT/...".into());
    }
    if get("response_type") != Some("code") {
        return Err("response_type must be \"code\"".into());
    }
    let code_challenge = get("code_challenge").ok_or("PKCE is required: send code_challenge")?;
    if get("code_challenge_method") != Some("S256") {
        return Err("code_challenge_method must be S256".into());
    }
    let scope = get("scope").unwrap_or("openid");
    if !scope.split_whitespace().any(|s| s == "openid") {
        return Err("scope must include openid".into());
    }
    Ok(AuthorizationRequest {
        redirect_uri: redirect_uri.to_owned(),
        state: get("state").map(str::to_owned),
        nonce: get("nonce").map(str::to_owned),
        code_challenge: code_challenge.to_owned(),
        scope: scope.to_owned(),
    })
}

fn is_loopback_redirect(uri: &str) -> bool {
    reqwest::Url::parse(uri)
        .is_ok_and(|url| url.scheme() == "http" && matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")))
}

/// `GET /dev/authorize`: the user picker.
async fn authorize_page(State(oidc): State<Arc<DevOidc>>, Query(params): Query<Params>) -> Response {
    if let Err(problem) = check_authorization(&params) {
        return error_page(&problem);
    }
    let mut hidden = String::new();
    for name in [
        "client_id",
        "redirect_uri",
        "response_type",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
        "scope",
    ] {
        if let Some(value) = params.get(name) {
            hidden.push_str(&format!(r#"<input type="hidden" name="{name}" value="{}">"#, escape(value)));
        }
    }
    let body = format!(
        r#"<form method="post" action="{action}">{hidden}<p>Sign in to Hourglass as:</p>{buttons}</form>"#,
        action = escape(&oidc.url("/authorize")),
        buttons = user_buttons(&oidc.users),
    );
    page("Sign in", &body)
}

/// `POST /dev/authorize`: the picked user; back to the client with a code.
async fn authorize(State(oidc): State<Arc<DevOidc>>, form: Result<Form<Params>, FormRejection>) -> Response {
    let Ok(Form(params)) = form else { return error_page("expected a form") };
    let request = match check_authorization(&params) {
        Ok(request) => request,
        Err(problem) => return error_page(&problem),
    };
    let Some(user) = params.get("user").and_then(|id| oidc.user(id)) else {
        return error_page("pick one of the demo users");
    };
    let now = oidc.clock.now();
    let code = random_token();
    let grant = CodeGrant {
        login: LoggedIn { user: user.id.clone(), scope: request.scope, auth_time: now },
        redirect_uri: request.redirect_uri.clone(),
        code_challenge: request.code_challenge,
        nonce: request.nonce,
        expires_at: now.plus(CODE_LIFETIME),
    };
    oidc.pending().codes.insert(code.clone(), grant);
    let Ok(mut target) = reqwest::Url::parse(&request.redirect_uri) else {
        return error_page("redirect_uri is not a URL");
    };
    {
        let mut query = target.query_pairs_mut();
        query.append_pair("code", &code);
        if let Some(state) = &request.state {
            query.append_pair("state", state);
        }
        query.append_pair("iss", &oidc.issuer.issuer);
    }
    Redirect::to(target.as_str()).into_response()
}

/// `POST /dev/token`
async fn token(State(oidc): State<Arc<DevOidc>>, form: Result<Form<Params>, FormRejection>) -> Response {
    let Ok(Form(params)) = form else { return oauth_error("invalid_request", "expected a form body") };
    let get = |name: &str| params.get(name).map(String::as_str).unwrap_or("");
    if get("client_id") != CLIENT_ID {
        return oauth_error("invalid_client", "unknown client_id");
    }
    let now = oidc.clock.now();
    match get("grant_type") {
        "authorization_code" => {
            let Some(grant) = oidc.pending().codes.remove(get("code")) else {
                return oauth_error("invalid_grant", "unknown or used authorization code");
            };
            if grant.expires_at < now {
                return oauth_error("invalid_grant", "the authorization code has expired");
            }
            if grant.redirect_uri != get("redirect_uri") {
                return oauth_error("invalid_grant", "redirect_uri differs from the authorization request's");
            }
            if !pkce_matches(get("code_verifier"), &grant.code_challenge) {
                return oauth_error("invalid_grant", "the code_verifier does not match the code_challenge (PKCE)");
            }
            oidc.tokens(grant.login, grant.nonce.as_deref())
        }
        "refresh_token" => {
            // Rotation: a refresh token is spent by its first use.
            let Some(login) = oidc.pending().refresh_tokens.remove(get("refresh_token")) else {
                return oauth_error("invalid_grant", "unknown, used or revoked refresh token");
            };
            if login.auth_time.plus(REFRESH_TOKEN_LIFETIME) < now {
                return oauth_error("invalid_grant", "the refresh token has expired");
            }
            oidc.tokens(login, None)
        }
        GRANT_TYPE_DEVICE_CODE => {
            let device_code = get("device_code");
            let mut pending = oidc.pending();
            let Some(grant) = pending.devices.get_mut(device_code) else {
                return oauth_error("invalid_grant", "unknown device code");
            };
            if grant.expires_at < now {
                pending.devices.remove(device_code);
                return oauth_error("expired_token", "the device code has expired");
            }
            let too_soon = grant.last_poll.is_some_and(|last| last.millis_until(now) < (grant.interval * 1000) as i64);
            grant.last_poll = Some(now);
            if too_soon {
                grant.interval += 5;
                return oauth_error("slow_down", "polling too often");
            }
            let Some(login) = grant.approved.clone() else {
                return oauth_error("authorization_pending", "the user has not picked an identity yet");
            };
            pending.devices.remove(device_code);
            drop(pending);
            oidc.tokens(login, None)
        }
        _ => {
            oauth_error("unsupported_grant_type", "grant_type must be authorization_code, refresh_token or device_code")
        }
    }
}

/// RFC 7636: BASE64URL(SHA256(code_verifier)) == code_challenge.
fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    well_formed && base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier)) == challenge
}

/// `POST /dev/device/code`: RFC 8628 device authorization.
async fn device_code(State(oidc): State<Arc<DevOidc>>, form: Result<Form<Params>, FormRejection>) -> Response {
    let Ok(Form(params)) = form else { return oauth_error("invalid_request", "expected a form body") };
    if params.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
        return oauth_error("invalid_client", "unknown client_id");
    }
    let device_code = random_token();
    let user_code = user_code();
    let grant = DeviceGrant {
        user_code: user_code.clone(),
        scope: params.get("scope").cloned().unwrap_or_else(|| "openid".into()),
        expires_at: oidc.clock.now().plus(DEVICE_CODE_LIFETIME),
        interval: DEVICE_INTERVAL,
        last_poll: None,
        approved: None,
    };
    oidc.pending().devices.insert(device_code.clone(), grant);
    let verification_uri = oidc.url("/device");
    no_store(Json(serde_json::json!({
        "device_code": device_code,
        "user_code": user_code,
        "verification_uri": verification_uri,
        "verification_uri_complete": format!("{verification_uri}?user_code={user_code}"),
        "expires_in": DEVICE_CODE_LIFETIME.as_secs(),
        "interval": DEVICE_INTERVAL,
    })))
}

/// Eight letters without vowels (no words), as `BCDF-GHJK`.
fn user_code() -> String {
    const LETTERS: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
    let random: [u8; 8] = rand::random();
    let letters: String = random.iter().map(|b| LETTERS[usize::from(*b) % LETTERS.len()] as char).collect();
    format!("{}-{}", &letters[..4], &letters[4..])
}

fn normalize_user_code(text: &str) -> String {
    text.chars().filter(char::is_ascii_alphabetic).map(|c| c.to_ascii_uppercase()).collect()
}

/// `GET /dev/device`: the verification page: the code and the user picker.
async fn device_page(State(oidc): State<Arc<DevOidc>>, Query(params): Query<Params>) -> Response {
    let code = params.get("user_code").map(String::as_str).unwrap_or("");
    let body = format!(
        r#"<form method="post" action="{action}"><p><label>Code shown on your device:
<input type="text" name="user_code" value="{code}" autocomplete="off" required></label></p>
<p>Sign in to Hourglass as:</p>{buttons}</form>"#,
        action = escape(&oidc.url("/device")),
        code = escape(code),
        buttons = user_buttons(&oidc.users),
    );
    page("Device sign-in", &body)
}

/// `POST /dev/device`: approves the device grant for the picked user.
async fn device_approve(State(oidc): State<Arc<DevOidc>>, form: Result<Form<Params>, FormRejection>) -> Response {
    let Ok(Form(params)) = form else { return error_page("expected a form") };
    let Some(user) = params.get("user").and_then(|id| oidc.user(id)) else {
        return error_page("pick one of the demo users");
    };
    let wanted = normalize_user_code(params.get("user_code").map(String::as_str).unwrap_or(""));
    let now = oidc.clock.now();
    let mut pending = oidc.pending();
    let grant = pending
        .devices
        .values_mut()
        .find(|grant| normalize_user_code(&grant.user_code) == wanted && grant.expires_at >= now);
    let Some(grant) = grant.filter(|grant| grant.approved.is_none()) else {
        return error_page("no device is waiting for that code (it may have expired or been used): start again");
    };
    grant.approved = Some(LoggedIn { user: user.id.clone(), scope: grant.scope.clone(), auth_time: now });
    drop(pending);
    page(
        "Signed in",
        &format!("<p>Your device is signed in as <b>{}</b>. You can close this window.</p>", escape(&user.id)),
    )
}

/// `POST /dev/revoke`: RFC 7009. Unknown tokens are not an error.
async fn revoke(State(oidc): State<Arc<DevOidc>>, form: Result<Form<Params>, FormRejection>) -> Response {
    let Ok(Form(params)) = form else { return oauth_error("invalid_request", "expected a form body") };
    if let Some(token) = params.get("token") {
        oidc.pending().refresh_tokens.remove(token);
    }
    StatusCode::OK.into_response()
}

fn user_buttons(users: &[DevUser]) -> String {
    users
        .iter()
        .map(|user| {
            format!(
                r#"<p><button type="submit" name="user" value="{id}"><b>{name}</b> &lt;{id}&gt; · {groups}</button></p>"#,
                id = escape(&user.id),
                name = escape(&user.name),
                groups = escape(&user.groups.join(", ")),
            )
        })
        .collect()
}

fn page(title: &str, body: &str) -> Response {
    let html = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} · Hourglass development issuer</title>
<style>body{{font-family:sans-serif;max-width:36em;margin:2em auto}}
.warning{{background:#fff3cd;border:2px solid #b35c00;padding:.8em;font-weight:bold}}
button{{font-size:1em;padding:.5em 1em;width:100%;text-align:left}}</style></head>
<body><p class="warning" role="alert">Development only — no passwords. Anyone who can reach this broker can sign in as any demo user. Never use hourglassd dev in production.</p>
<h1>{title}</h1>
{body}
</body></html>"#
    );
    ([(header::CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

fn error_page(problem: &str) -> Response {
    let mut response = page("Cannot sign in", &format!("<p>{}</p>", escape(problem)));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response
}

/// RFC 6749 section 5.2.
fn oauth_error(error: &str, description: &str) -> Response {
    let mut response = no_store(Json(serde_json::json!({ "error": error, "error_description": description })));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response
}

fn no_store(body: impl IntoResponse) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], body).into_response()
}

fn random_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_accepts_the_rfc_7636_example_and_refuses_another_verifier() {
        // RFC 7636, appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_matches(verifier, challenge), "the RFC's verifier matches its challenge");
        assert!(!pkce_matches("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXl", challenge), "another verifier does not");
        assert!(!pkce_matches("short", challenge), "a verifier under 43 characters is refused");
    }

    #[test]
    fn only_loopback_redirects_are_allowed() {
        assert!(is_loopback_redirect("http://127.0.0.1:49152/callback"), "IPv4 loopback");
        assert!(!is_loopback_redirect("https://evil.example/callback"), "elsewhere");
        assert!(!is_loopback_redirect("http://127.0.0.1.evil.example/callback"), "a look-alike host");
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(escape(r#"<a href="x">&'"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
