//! `POST /v1/introspect`: RFC 7662 token introspection for resource servers.

use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::{Form, Json};
use hourglass_core::api::ApiError;
use serde::Deserialize;

use super::AppState;
use super::error::AppError;
use super::extract::form_refused;
use crate::introspection::Introspection;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct IntrospectForm {
    token: String,
    /// The audience the asking resource server answers to (its `aud`): a
    /// token made for another audience is then inactive, so a resource
    /// server that forgets to compare `aud` still cannot be handed another
    /// resource's token. Optional, as RFC 7662 has no such parameter;
    /// resource servers should send it.
    audience: Option<String>,
    #[allow(dead_code, reason = "RFC 7662 allows the hint; there is one kind of token")]
    token_type_hint: Option<String>,
}

/// Whether a grant token is active: signed by this broker, not expired, its
/// grant neither revoked nor ended, and (when `audience` is sent) made for
/// that audience. Possession of the token is the authorization to ask.
#[utoipa::path(post, path = "/v1/introspect", tag = "grants",
    request_body(content = IntrospectForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = Introspection), (status = 400, body = ApiError), (status = 413, body = ApiError)))]
pub async fn introspect(
    State(broker): State<AppState>,
    form: Result<Form<IntrospectForm>, FormRejection>,
) -> Result<Json<Introspection>, AppError> {
    let Form(form) = form.map_err(|rejection| form_refused(&rejection, "expected a form with `token`"))?;
    Ok(Json(broker.introspect(&form.token, form.audience.as_deref()).await?))
}
