//! Logging in: `GET /v1/auth/config` tells a client where people log in,
//! `POST /v1/auth/token` exchanges an ID token for a broker session
//! (RFC 8693), and `POST /v1/auth/logout` ends the caller's session on
//! every replica. Errors are the API's `{code, message}`, as everywhere else.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use hourglass_core::api::{ApiError, AuthConfig, ErrorCode, SessionToken};
use serde::Deserialize;

use super::AppState;
use super::error::AppError;
use super::extract::form_refused;
use crate::auth::{AuthError, SESSION_AUDIENCE, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_ID_TOKEN, TOKEN_TYPE_JWT};

pub const GRANT_TYPE_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// How clients log this broker's users in. Needs no token.
#[utoipa::path(get, path = "/v1/auth/config", tag = "meta",
    responses(
        (status = 200, body = AuthConfig),
        (status = 404, body = ApiError, description = "the broker has no [broker.login]: bring your own tokens")))]
pub async fn config(State(broker): State<AppState>) -> Result<Json<AuthConfig>, AppError> {
    broker.auth.login().cloned().map(Json).ok_or_else(|| {
        AppError::new(
            ErrorCode::NotFound,
            "this broker has no login configured ([broker.login] in hourglass.toml); use a token from your identity provider",
        )
    })
}

/// RFC 8693 token exchange, as a form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct TokenExchangeForm {
    /// `urn:ietf:params:oauth:grant-type:token-exchange`
    grant_type: String,
    /// An ID token from a trusted issuer (a person's, or a CI pipeline's).
    subject_token: String,
    /// `urn:ietf:params:oauth:token-type:id_token` or `…:jwt`
    subject_token_type: String,
    /// Optional; `…:access_token` or `…:jwt` (what is issued either way).
    requested_token_type: Option<String>,
    /// Optional; `hourglass` when given.
    audience: Option<String>,
}

/// Exchanges an identity token of a trusted issuer for a broker session: a
/// bearer token for every other call, valid for the configured session
/// lifetime (a machine's, at most as long as its own token).
#[utoipa::path(post, path = "/v1/auth/token", tag = "meta",
    request_body(content = TokenExchangeForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, body = SessionToken),
        (status = 400, body = ApiError, description = "not a token exchange this broker does (grant or token type)"),
        (status = 401, body = ApiError, description = "the subject token is refused: expired, wrong audience, untrusted issuer, bad signature")))]
pub async fn token(
    State(broker): State<AppState>,
    form: Result<axum::Form<TokenExchangeForm>, FormRejection>,
) -> Result<Response, AppError> {
    let axum::Form(form) = form.map_err(|rejection| {
        form_refused(&rejection, "expected a form with grant_type, subject_token and subject_token_type")
    })?;
    if form.grant_type != GRANT_TYPE_TOKEN_EXCHANGE {
        return Err(invalid(format!("grant_type must be {GRANT_TYPE_TOKEN_EXCHANGE}")));
    }
    if form.subject_token_type != TOKEN_TYPE_ID_TOKEN && form.subject_token_type != TOKEN_TYPE_JWT {
        return Err(invalid(format!("subject_token_type must be {TOKEN_TYPE_ID_TOKEN} or {TOKEN_TYPE_JWT}")));
    }
    if let Some(requested) = &form.requested_token_type
        && requested != TOKEN_TYPE_ACCESS_TOKEN
        && requested != TOKEN_TYPE_JWT
    {
        return Err(invalid(format!("requested_token_type must be {TOKEN_TYPE_ACCESS_TOKEN} or {TOKEN_TYPE_JWT}")));
    }
    if let Some(audience) = &form.audience
        && audience != SESSION_AUDIENCE
    {
        return Err(invalid(format!("audience must be {SESSION_AUDIENCE} (or left out)")));
    }
    let session = broker.auth.exchange(form.subject_token.trim(), broker.now()).await.map_err(refused)?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json::<SessionToken>(session)).into_response())
}

fn invalid(message: String) -> AppError {
    AppError::new(ErrorCode::InvalidRequest, message)
}

fn refused(error: AuthError) -> AppError {
    match error {
        AuthError::NoSessions => AppError(crate::Error::Internal("no session key".into())),
        AuthError::Missing => invalid("subject_token is empty".into()),
        error => AppError::new(ErrorCode::Unauthenticated, format!("subject_token refused: {error}")),
    }
}

/// Ends the calling session (or bearer token) on every replica, at once:
/// it is refused from then on, and event streams opened with it close.
/// Logging out of a client calls this before it forgets the session.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "meta", security(("bearer" = [])),
    responses(
        (status = 204, description = "ended; the token is refused from now on"),
        (status = 401, body = ApiError),
        (status = 429, body = ApiError)))]
pub async fn logout(
    State(broker): State<AppState>,
    super::extract::CallerToken(caller): super::extract::CallerToken,
) -> Result<axum::http::StatusCode, AppError> {
    broker.end_session(&caller).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}
