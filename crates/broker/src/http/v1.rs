//! `/v1` handlers.

use axum::Json;
use axum::extract::{Path, State};
use hourglass_core::api::{
    ApiError, Catalog, CreateRequest, Credential, DecisionBody, ErrorCode, GrantList, NotificationChoice,
    PersonalChannel, ReadyBody, RenewBody, RenewOutcome, RequestList, RequestOutcome, ReviewBody, ReviewItem,
    RevokeBody, RevokeMatchingBody, RevokedGrants, WhoAmI,
};
use hourglass_core::audit::AuditRecord;
use hourglass_core::{AccessRequest, Grant, GrantId, RequestId, Verdict};
use serde::Deserialize;

use super::AppState;
use super::error::AppError;
use super::extract::{Caller, CallerToken, JsonBody, QueryParams};

type ApiResult<T> = Result<Json<T>, AppError>;

fn request_id(text: &str) -> Result<RequestId, AppError> {
    RequestId::parse(text).map_err(|error| AppError::new(ErrorCode::InvalidRequest, error.to_string()))
}

fn grant_id(text: &str) -> Result<GrantId, AppError> {
    GrantId::parse(text).map_err(|error| AppError::new(ErrorCode::InvalidRequest, error.to_string()))
}

/// The caller as the broker sees them.
#[utoipa::path(get, path = "/v1/whoami", tag = "meta", security(("bearer" = [])),
    responses((status = 200, body = WhoAmI), (status = 401, body = ApiError)))]
pub async fn whoami(State(broker): State<AppState>, Caller(who): Caller) -> Json<WhoAmI> {
    Json(WhoAmI { principal: who, server_time: broker.now() })
}

/// What can be requested, with what policy would do for the caller.
#[utoipa::path(get, path = "/v1/resources", tag = "access", security(("bearer" = [])),
    responses((status = 200, body = Catalog), (status = 401, body = ApiError)))]
pub async fn catalog(State(broker): State<AppState>, Caller(who): Caller) -> Json<Catalog> {
    Json(broker.catalog(&who))
}

/// Asks for access. Approved at once when policy says so (the grant is in
/// the answer), otherwise pending until approvers decide.
#[utoipa::path(post, path = "/v1/requests", tag = "access", security(("bearer" = [])), request_body = CreateRequest,
    responses(
        (status = 200, body = RequestOutcome),
        (status = 400, body = ApiError, description = "invalid duration, missing reason or ticket, malformed body"),
        (status = 403, body = ApiError, description = "policy does not allow it"),
        (status = 404, body = ApiError, description = "unknown resource or role"),
        (status = 409, body = ApiError, description = "the same access is already pending or active"),
        (status = 413, body = ApiError),
        (status = 429, body = ApiError, description = "too many calls, or as many requests waiting as one principal may have")))]
pub async fn create_request(
    State(broker): State<AppState>,
    Caller(who): Caller,
    JsonBody(body): JsonBody<CreateRequest>,
) -> ApiResult<RequestOutcome> {
    Ok(Json(broker.file_request(&who, body).await?))
}

/// My requests, and the pending requests waiting for my decision.
#[utoipa::path(get, path = "/v1/requests", tag = "access", security(("bearer" = [])),
    responses((status = 200, body = RequestList), (status = 401, body = ApiError)))]
pub async fn list_requests(State(broker): State<AppState>, Caller(who): Caller) -> ApiResult<RequestList> {
    Ok(Json(broker.requests_view(&who).await?))
}

#[utoipa::path(get, path = "/v1/requests/{id}", tag = "access", security(("bearer" = [])),
    params(("id" = RequestId, Path, description = "request id")),
    responses((status = 200, body = AccessRequest), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
pub async fn get_request(
    State(broker): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<AccessRequest> {
    Ok(Json(broker.request_for(&who, &request_id(&id)?).await?))
}

/// Approves a request. When it completes the approvals, the grant is issued
/// and returned.
#[utoipa::path(post, path = "/v1/requests/{id}/approve", tag = "access", security(("bearer" = [])),
    params(("id" = RequestId, Path, description = "request id")), request_body(content = Option<DecisionBody>, description = "optional"),
    responses(
        (status = 200, body = RequestOutcome),
        (status = 401, body = ApiError, description = "step_up_required: policy needs a fresher login (or a person) to decide"),
        (status = 403, body = ApiError, description = "own request, or not an approver"),
        (status = 404, body = ApiError),
        (status = 409, body = ApiError, description = "already decided by you, or no longer pending")))]
pub async fn approve(
    State(broker): State<AppState>,
    CallerToken(who): CallerToken,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<DecisionBody>,
) -> ApiResult<RequestOutcome> {
    let decider = (&who.principal, &who.authentication);
    Ok(Json(broker.decide(decider, &request_id(&id)?, Verdict::Approve, body.comment).await?))
}

/// Denies a request; one denial ends it.
#[utoipa::path(post, path = "/v1/requests/{id}/deny", tag = "access", security(("bearer" = [])),
    params(("id" = RequestId, Path, description = "request id")), request_body(content = Option<DecisionBody>, description = "optional"),
    responses((status = 200, body = RequestOutcome), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub async fn deny(
    State(broker): State<AppState>,
    CallerToken(who): CallerToken,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<DecisionBody>,
) -> ApiResult<RequestOutcome> {
    let decider = (&who.principal, &who.authentication);
    Ok(Json(broker.decide(decider, &request_id(&id)?, Verdict::Deny, body.comment).await?))
}

/// Withdraws my pending request.
#[utoipa::path(post, path = "/v1/requests/{id}/cancel", tag = "access", security(("bearer" = [])),
    params(("id" = RequestId, Path, description = "request id")),
    responses((status = 200, body = AccessRequest), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub async fn cancel(
    State(broker): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<AccessRequest> {
    Ok(Json(broker.cancel(&who, &request_id(&id)?).await?))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(default, deny_unknown_fields)]
pub struct GrantQuery {
    /// Include grants that have ended.
    ended: bool,
    /// Everybody's grants that policy lets me view, not only mine.
    all: bool,
}

/// My live grants (or, with `ended`, my history of grants too).
#[utoipa::path(get, path = "/v1/grants", tag = "grants", security(("bearer" = [])), params(GrantQuery),
    responses((status = 200, body = GrantList), (status = 400, body = ApiError), (status = 401, body = ApiError)))]
pub async fn list_grants(
    State(broker): State<AppState>,
    Caller(who): Caller,
    QueryParams(query): QueryParams<GrantQuery>,
) -> ApiResult<GrantList> {
    Ok(Json(broker.grants_view(&who, query.all, query.ended).await?))
}

#[utoipa::path(get, path = "/v1/grants/{id}", tag = "grants", security(("bearer" = [])),
    params(("id" = GrantId, Path, description = "grant id")),
    responses((status = 200, body = Grant), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
pub async fn get_grant(
    State(broker): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Grant> {
    Ok(Json(broker.grant_for(&who, &grant_id(&id)?).await?))
}

/// The credential of my live grant, with the environment variables that use
/// it. Contains secrets: never log it.
#[utoipa::path(get, path = "/v1/grants/{id}/credential", tag = "grants", security(("bearer" = [])),
    params(("id" = GrantId, Path, description = "grant id")),
    responses((status = 200, body = Credential), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub async fn credential(
    State(broker): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Credential> {
    Ok(Json(broker.credential(&who, &grant_id(&id)?).await?))
}

/// Confirms my grant's credential works, where only my client can check it
/// (it holds the secret). The grant is shown ready from then on.
#[utoipa::path(post, path = "/v1/grants/{id}/ready", tag = "grants", security(("bearer" = [])),
    params(("id" = GrantId, Path, description = "grant id")), request_body(content = Option<ReadyBody>, description = "optional"),
    responses((status = 200, body = Grant), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub async fn ready(
    State(broker): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ReadyBody>,
) -> ApiResult<Grant> {
    Ok(Json(broker.confirm_ready(&who, &grant_id(&id)?, body).await?))
}

/// Extends my grant to `duration` from now: at once within policy, else as
/// a renewal request waiting for approval (the grant keeps its deadline).
#[utoipa::path(post, path = "/v1/grants/{id}/renew", tag = "grants", security(("bearer" = [])),
    params(("id" = GrantId, Path, description = "grant id")), request_body = RenewBody,
    responses((status = 200, body = RenewOutcome), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError),
        (status = 429, body = ApiError, description = "too many calls, or as many requests waiting as one principal may have")))]
pub async fn renew(
    State(broker): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RenewBody>,
) -> ApiResult<RenewOutcome> {
    Ok(Json(broker.renew(&who, &grant_id(&id)?, body).await?))
}

/// Ends a grant now: my own, or any that policy lets me revoke.
#[utoipa::path(post, path = "/v1/grants/{id}/revoke", tag = "grants", security(("bearer" = [])),
    params(("id" = GrantId, Path, description = "grant id")), request_body(content = Option<RevokeBody>, description = "optional"),
    responses((status = 200, body = Grant), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub async fn revoke(
    State(broker): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RevokeBody>,
) -> ApiResult<Grant> {
    Ok(Json(broker.revoke(&who, &grant_id(&id)?, body.reason).await?))
}

/// Ends every live grant on a resource at once, narrowed to a role or an
/// owner: for an incident. All or nothing: refused if policy does not let
/// me revoke one of them.
#[utoipa::path(post, path = "/v1/grants/revoke", tag = "grants", security(("bearer" = [])), request_body = RevokeMatchingBody,
    responses(
        (status = 200, body = RevokedGrants),
        (status = 400, body = ApiError, description = "no reason, malformed body"),
        (status = 403, body = ApiError, description = "policy does not allow revoking one of the matching grants"),
        (status = 404, body = ApiError, description = "unknown resource with no live grant")))]
pub async fn revoke_matching(
    State(broker): State<AppState>,
    Caller(who): Caller,
    JsonBody(body): JsonBody<RevokeMatchingBody>,
) -> ApiResult<RevokedGrants> {
    Ok(Json(RevokedGrants { grants: broker.revoke_matching(&who, body).await? }))
}

/// The channels that can tell me of my requests and access, and which I
/// turned off.
#[utoipa::path(get, path = "/v1/me/notifications", tag = "meta", security(("bearer" = [])),
    responses((status = 200, body = Vec<PersonalChannel>)))]
pub async fn my_notifications(State(broker): State<AppState>, Caller(who): Caller) -> ApiResult<Vec<PersonalChannel>> {
    Ok(Json(broker.personal_channels(&who).await?))
}

/// Turns channels off (those named) or on (the others) for me.
#[utoipa::path(put, path = "/v1/me/notifications", tag = "meta", security(("bearer" = [])), request_body = NotificationChoice,
    responses((status = 200, body = Vec<PersonalChannel>), (status = 400, body = ApiError, description = "a channel that tells no requester here")))]
pub async fn choose_notifications(
    State(broker): State<AppState>,
    Caller(who): Caller,
    JsonBody(body): JsonBody<NotificationChoice>,
) -> ApiResult<Vec<PersonalChannel>> {
    Ok(Json(broker.choose_channels(&who, body).await?))
}

/// Break-glass grants waiting for my review: access taken at once in an
/// emergency, on roles whose requests I could have approved.
#[utoipa::path(get, path = "/v1/reviews", tag = "grants", security(("bearer" = [])),
    responses((status = 200, body = Vec<ReviewItem>)))]
pub async fn reviews(State(broker): State<AppState>, Caller(who): Caller) -> ApiResult<Vec<ReviewItem>> {
    Ok(Json(broker.reviews_for(&who).await?))
}

/// Reviews a break-glass grant after the fact: justified or not, and why.
/// Once, by someone who could have approved its request, never its owner.
#[utoipa::path(post, path = "/v1/grants/{id}/review", tag = "grants", security(("bearer" = [])),
    params(("id" = GrantId, Path, description = "grant id")), request_body = ReviewBody,
    responses(
        (status = 200, body = Grant),
        (status = 400, body = ApiError, description = "no comment, or not a break-glass grant"),
        (status = 403, body = ApiError, description = "my own grant, or not one whose requests I may approve"),
        (status = 404, body = ApiError),
        (status = 409, body = ApiError, description = "reviewed already")))]
pub async fn review(
    State(broker): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ReviewBody>,
) -> ApiResult<Grant> {
    Ok(Json(broker.review(&who, &grant_id(&id)?, body).await?))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryQuery {
    /// Whose history (default: mine; others' needs permission to view their grants).
    subject: Option<String>,
    /// At most this many events, newest first (default 100, at most 1000).
    limit: Option<usize>,
}

/// Audit events about my access (or by me), newest first.
#[utoipa::path(get, path = "/v1/history", tag = "grants", security(("bearer" = [])), params(HistoryQuery),
    responses((status = 200, body = Vec<AuditRecord>), (status = 403, body = ApiError)))]
pub async fn history(
    State(broker): State<AppState>,
    Caller(who): Caller,
    QueryParams(query): QueryParams<HistoryQuery>,
) -> ApiResult<Vec<AuditRecord>> {
    Ok(Json(broker.history(&who, query.subject.as_deref(), query.limit.unwrap_or(100)).await?))
}
