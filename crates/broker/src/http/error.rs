//! Errors as the API returns them: `{code, message}` with the status the
//! code implies. Internal errors are logged here and never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hourglass_core::api::{ApiError, ErrorCode};

use crate::error::Error;

pub struct AppError(pub Error);

impl From<Error> for AppError {
    fn from(error: Error) -> Self {
        AppError(error)
    }
}

impl AppError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        AppError(Error::refused(code, message))
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = self.0.to_api();
        let retry_after = match &self.0 {
            Error::Refused { .. } => None,
            Error::RateLimited { retry_after_secs, .. } => Some(*retry_after_secs),
            Error::Provider(error) => {
                tracing::warn!("provider failed: {error}");
                None
            }
            other => {
                tracing::error!("request failed: {other}");
                None
            }
        };
        let mut response = error_response(&body);
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

pub fn error_response(body: &ApiError) -> Response {
    let status = StatusCode::from_u16(body.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(body)).into_response();
    match body.code {
        ErrorCode::Unauthenticated => {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        // RFC 9470: the client logs in again and retries.
        ErrorCode::StepUpRequired => {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer error="insufficient_user_authentication""#),
            );
        }
        _ => {}
    }
    response
}
