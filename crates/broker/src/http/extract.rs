//! Extractors that turn every malformed input into a `{code, message}`
//! refusal instead of axum's plain-text rejections.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::extract::rejection::FormRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use hourglass_core::Principal;
use hourglass_core::api::ErrorCode;
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::AppError;
use crate::auth::Verified;

/// The verified principal making the call, admitted by its rate limit.
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let CallerToken(verified) = CallerToken::from_request_parts(parts, state).await?;
        Ok(Caller(verified.principal))
    }
}

/// [`Caller`], with its token's expiry and id: for what lasts as long as
/// the token (an event stream) or ends it (logging out).
pub struct CallerToken(pub Verified);

impl FromRequestParts<AppState> for CallerToken {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(AUTHORIZATION).and_then(|value| value.to_str().ok()).unwrap_or("");
        let token = header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer ")).unwrap_or("").trim();
        // Behind the accept loop, the client's address: an address whose
        // tokens keep failing gets no more signature checks for a while
        // (a token verified before still passes).
        let address = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
        let now = state.now();
        if let Some(address) = address
            && !token.is_empty()
            && !state.auth.remembers(token)
        {
            state.limits.admit_unverified(address, now)?;
        }
        let verified = match state.auth.verify_bearer(token).await {
            Ok(verified) => verified,
            Err(error) => {
                if let Some(address) = address.filter(|_| !token.is_empty()) {
                    state.limits.auth_failed(address, now);
                }
                return Err(AppError::new(ErrorCode::Unauthenticated, error.to_string()));
            }
        };
        state.limits.admit_call(&verified.principal.id, now)?;
        Ok(CallerToken(verified))
    }
}

/// A JSON body. Content type is not required; an empty body, or `null`, is
/// read as `{}` so that optional bodies (a comment, a reason) can be left
/// out (the OpenAPI document says so: their schema is `null` or the object).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                AppError::new(ErrorCode::InvalidRequest, format!("cannot read the request body: {rejection}"))
            }
        })?;
        let text: &[u8] = if bytes.trim_ascii().is_empty() || bytes.trim_ascii() == b"null" { b"{}" } else { &bytes };
        serde_json::from_slice(text)
            .map(JsonBody)
            .map_err(|error| AppError::new(ErrorCode::InvalidRequest, format!("invalid JSON body: {error}")))
    }
}

fn too_large() -> AppError {
    AppError::new(
        ErrorCode::PayloadTooLarge,
        format!("the request body is larger than {} bytes", super::MAX_BODY_BYTES),
    )
}

/// A form body that could not be read: too large is a 413 as for JSON
/// bodies, anything else a 400 saying what form was `expected`.
pub fn form_refused(rejection: &FormRejection, expected: &str) -> AppError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large()
    } else {
        AppError::new(ErrorCode::InvalidRequest, format!("{expected}: {}", rejection.body_text()))
    }
}

/// Query parameters, refused with a clear message when malformed.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned> FromRequestParts<AppState> for QueryParams<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded_from_str(query)
            .map(QueryParams)
            .map_err(|error| AppError::new(ErrorCode::InvalidRequest, format!("invalid query parameters: {error}")))
    }
}

fn serde_urlencoded_from_str<T: DeserializeOwned>(query: &str) -> Result<T, String> {
    axum::extract::Query::<T>::try_from_uri(&format!("/?{query}").parse().map_err(|e| format!("{e}"))?)
        .map(|axum::extract::Query(value)| value)
        .map_err(|rejection| rejection.body_text())
}
