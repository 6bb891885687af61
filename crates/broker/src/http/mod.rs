//! The HTTP face of the broker: JSON API under `/v1`, its OpenAPI document,
//! the event stream, health, metrics and the token JWKS. Handlers are thin:
//! they extract, call the broker, and shape the answer.

mod approve;
mod auth;
mod error;
mod events;
mod extract;
mod introspect;
pub(crate) mod page;
mod refusals;
mod v1;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use hourglass_core::api::{Health, Readiness};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::AppError;

use crate::broker::Broker;

pub type AppState = Arc<Broker>;

/// Request bodies are small JSON documents; anything larger is refused.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Hourglass broker",
        description = "Just-in-time access: request, approve, renew and revoke short-lived credentials."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "access", description = "Requests and approvals"),
        (name = "grants", description = "Issued access"),
        (name = "meta", description = "Health, identity and discovery")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The whole application, ready to serve or to call with `oneshot` in tests.
pub fn router(broker: Arc<Broker>) -> Router {
    let (router, mut openapi) = api_router().split_for_parts();
    refusals::document(&mut openapi);
    let openapi = Arc::new(openapi.to_pretty_json().unwrap_or_default());
    router
        .route(
            "/v1/openapi.json",
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], (*openapi).clone()) }),
        )
        .route("/metrics", get(metrics))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/v1/providers/{kind}/{name}", get(provider_document))
        .merge(approve::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(broker)
}

/// The routes that make up the OpenAPI document.
fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(auth::config))
        .routes(routes!(auth::token))
        .routes(routes!(auth::logout))
        .routes(routes!(v1::whoami))
        .routes(routes!(v1::catalog))
        .routes(routes!(v1::create_request, v1::list_requests))
        .routes(routes!(v1::get_request))
        .routes(routes!(v1::approve))
        .routes(routes!(v1::deny))
        .routes(routes!(v1::cancel))
        .routes(routes!(v1::list_grants))
        .routes(routes!(v1::get_grant))
        .routes(routes!(v1::credential))
        .routes(routes!(v1::ready))
        .routes(routes!(v1::renew))
        .routes(routes!(v1::revoke))
        .routes(routes!(v1::revoke_matching))
        .routes(routes!(v1::my_notifications, v1::choose_notifications))
        .routes(routes!(v1::reviews))
        .routes(routes!(v1::review))
        .routes(routes!(v1::history))
        .routes(routes!(events::events))
        .routes(routes!(introspect::introspect))
}

/// The OpenAPI document, for tools that want it without a running broker.
pub fn openapi_json() -> String {
    let mut openapi = api_router().into_openapi();
    refusals::document(&mut openapi);
    openapi.to_pretty_json().unwrap_or_default()
}

/// Liveness and the broker's clock.
#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, body = Health)))]
async fn healthz(State(broker): State<AppState>) -> Json<Health> {
    Json(Health { status: "ok".into(), version: env!("CARGO_PKG_VERSION").into(), server_time: broker.now() })
}

/// Readiness: the store answers within a couple of seconds and this
/// replica's lease holds. 503 otherwise, saying which: route elsewhere.
#[utoipa::path(get, path = "/readyz", tag = "meta", responses(
    (status = 200, body = Readiness),
    (status = 503, body = hourglass_core::api::ApiError, description = "the store cannot be reached, or this replica's lease lapsed")))]
async fn readyz(State(broker): State<AppState>) -> Result<Json<Readiness>, AppError> {
    let unavailable = |message: &str| AppError::new(hourglass_core::api::ErrorCode::Unavailable, message);
    let live = tokio::time::timeout(std::time::Duration::from_secs(2), broker.store.live_replicas()).await;
    let replicas = match live {
        Ok(Ok(count)) => count,
        Ok(Err(error)) => {
            tracing::warn!("readiness: the store failed: {error}");
            return Err(unavailable("not ready: the store cannot be reached"));
        }
        Err(_) => return Err(unavailable("not ready: the store did not answer within 2s")),
    };
    if !broker.store.may_act() {
        return Err(unavailable("not ready: this replica's lease on the store lapsed; it is renewing it"));
    }
    Ok(Json(Readiness { status: "ready".into(), replica: broker.store.replica_id().to_string(), replicas }))
}

async fn metrics(State(broker): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], broker.metrics_text())
}

async fn jwks(State(broker): State<AppState>) -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "max-age=300")], Json(broker.jwks()))
}

/// A provider's public document: `/v1/providers/ssh/ca.pub?resource=NAME`
/// for sshd's `TrustedUserCAKeys`, `/v1/providers/ssh/krl` for its
/// `RevokedKeys`.
async fn provider_document(
    State(broker): State<AppState>,
    axum::extract::Path((kind, name)): axum::extract::Path<(String, String)>,
    axum::extract::Query(query): axum::extract::Query<DocumentQuery>,
) -> Result<axum::response::Response, AppError> {
    let policy = broker.policy();
    let resource = match &query.resource {
        Some(wanted) => match policy.resource(wanted) {
            Ok(resource) if resource.provider == kind => Some(resource),
            _ => {
                return Err(AppError::new(
                    hourglass_core::api::ErrorCode::NotFound,
                    format!("there is no {kind} resource named {wanted}"),
                ));
            }
        },
        None => None,
    };
    let document = match broker.providers.get(&kind) {
        Ok(provider) => provider.document(&name, resource).await,
        Err(_) => None,
    };
    let Some(document) = document else {
        return Err(AppError::new(
            hourglass_core::api::ErrorCode::NotFound,
            format!("provider {kind} publishes no {name}"),
        ));
    };
    Ok(([(header::CONTENT_TYPE, document.content_type), (header::CACHE_CONTROL, "no-cache")], document.body)
        .into_response())
}

#[derive(serde::Deserialize)]
struct DocumentQuery {
    resource: Option<String>,
}

async fn method_not_allowed() -> AppError {
    AppError::new(
        hourglass_core::api::ErrorCode::MethodNotAllowed,
        "this endpoint does not take that HTTP method (see /v1/openapi.json)",
    )
}

async fn not_found() -> AppError {
    AppError::new(hourglass_core::api::ErrorCode::NotFound, "no such endpoint (see /v1/openapi.json)")
}
