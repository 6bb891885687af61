//! `/approve/REQUEST-ID`: a request decided from a link, in any browser, on
//! any screen. The page is the broker's own: its login sends the person to
//! the identity provider to authenticate again (`web_login.rs`), its
//! session is a broker session in an HttpOnly, SameSite=Lax cookie scoped
//! to `/approve`, a decision is a form POST that must come from the
//! broker's origin and carry a token bound to that session, and the
//! decision goes through the same `decide` as the API (policy, fresh
//! authentication, audit). Nothing secret is ever in a URL.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hourglass_core::api::ErrorCode;
use hourglass_core::{RequestId, Verdict};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::AppState;
use super::page::{self, CSP, RequestPage};
use crate::error::Error;

const SESSION_COOKIE: &str = "hourglass_approve";
const LOGIN_COOKIE: &str = "hourglass_approve_login";
/// How long a login may take at the identity provider.
const LOGIN_LIFETIME: hourglass_core::Duration = hourglass_core::Duration::from_mins(10);

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new().route("/approve/callback", get(callback)).route("/approve/{id}", get(show).post(decide))
}

/// A page, with the headers every page has.
fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    if let Ok(csp) = HeaderValue::from_str(&CSP) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}

fn message(status: StatusCode, title: &str, text: &str, link: Option<(&str, &str)>) -> Response {
    html(status, page::message(title, text, link))
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

fn set_cookie(response: &mut Response, name: &str, value: &str, max_age: i64, secure: bool) {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!("{name}={value}; Path=/approve; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}");
    if let Ok(value) = HeaderValue::from_str(&text) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// The form's token: bound to the session it was shown with, which an
/// attacker's page cannot read (HttpOnly) and so cannot compute.
fn csrf_of(session: &str) -> String {
    hourglass_core::audit::to_hex(&Sha256::digest(format!("hourglass-approve-csrf:{session}").as_bytes()))
}

/// Constant time: how many leading bytes matched must not show.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Deserialize)]
pub struct ShowQuery {
    /// Log in again (after a decision was refused for want of a fresh login).
    #[serde(default)]
    login: Option<String>,
}

/// `GET /approve/{id}`: the request, and the form to decide it; a login first.
async fn show(
    State(broker): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<ShowQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(web) = broker.web_login.as_ref() else {
        return message(StatusCode::NOT_FOUND, "Not available", "This broker has no approval page.", None);
    };
    let Ok(id) = RequestId::parse(&id) else {
        return message(StatusCode::NOT_FOUND, "No such request", "That is not a request id.", None);
    };
    let session = cookie(&headers, SESSION_COOKIE);
    let verified = match (&session, &query.login) {
        (Some(token), None) => broker.auth.verify_bearer(token).await.ok(),
        _ => None,
    };
    let (Some(verified), Some(token)) = (verified, session) else { return start_login(&broker, web, &id).await };
    render(&broker, &verified.principal, &id, &token, None).await
}

async fn render(
    broker: &crate::broker::Broker,
    who: &hourglass_core::Principal,
    id: &RequestId,
    session: &str,
    notice: Option<(&str, bool)>,
) -> Response {
    let request = match broker.request_for(who, id).await {
        Ok(request) => request,
        Err(error) => return refused_page(&error),
    };
    let now = broker.now();
    let may_decide = request.is_pending()
        && now < request.pending_until
        && request.decision_by(&who.id).is_none()
        && broker.policy().may_decide(who, &request, now);
    let csrf = csrf_of(session);
    html(
        StatusCode::OK,
        page::request_page(&RequestPage { request: &request, viewer: &who.id, may_decide, csrf: &csrf, notice }),
    )
}

fn refused_page(error: &Error) -> Response {
    let api = error.to_api();
    let status = StatusCode::from_u16(api.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    message(status, "Not possible", &api.message, None)
}

/// To the identity provider, the login's state kept in a cookie the broker
/// sealed (any replica opens it).
async fn start_login(broker: &crate::broker::Broker, web: &crate::web_login::WebLogin, id: &RequestId) -> Response {
    let started = match web.start().await {
        Ok(started) => started,
        Err(error) => {
            tracing::warn!("the approval page's login cannot start: {error}");
            return message(
                StatusCode::BAD_GATEWAY,
                "Login unavailable",
                "The identity provider cannot be reached; try again.",
                None,
            );
        }
    };
    let note =
        json!({ "state": started.state, "nonce": started.nonce, "verifier": started.verifier, "request": id.as_str() });
    let Ok(sealed) = broker.auth.seal_note(&note, broker.now(), LOGIN_LIFETIME) else {
        return message(StatusCode::INTERNAL_SERVER_ERROR, "Login unavailable", "The broker cannot sign in now.", None);
    };
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(&started.url) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    set_cookie(&mut response, LOGIN_COOKIE, &sealed, LOGIN_LIFETIME.as_secs() as i64, web.secure());
    response
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /approve/callback`: back from the identity provider.
async fn callback(State(broker): State<AppState>, Query(query): Query<CallbackQuery>, headers: HeaderMap) -> Response {
    let Some(web) = broker.web_login.as_ref() else {
        return message(StatusCode::NOT_FOUND, "Not available", "This broker has no approval page.", None);
    };
    let failed = |text: &str| message(StatusCode::UNAUTHORIZED, "Login failed", text, None);
    if let Some(error) = &query.error {
        return failed(&format!("The identity provider said: {error}"));
    }
    let Some(note) = cookie(&headers, LOGIN_COOKIE).and_then(|sealed| broker.auth.open_note(&sealed).ok()) else {
        return failed("This login was not started here, or took too long: open the request's link again.");
    };
    let (Some(code), Some(state)) = (&query.code, &query.state) else { return failed("The answer has no code.") };
    let expected = note["state"].as_str().unwrap_or_default();
    if expected.is_empty() || !same(expected, state) {
        return failed("This answer belongs to another login: open the request's link again.");
    }
    let id_token = match web.redeem(code, note["verifier"].as_str().unwrap_or_default()).await {
        Ok(token) => token,
        Err(error) => return failed(&error.to_string()),
    };
    // The ID token's nonce is this login's (its signature is checked by
    // the exchange below, before anything in it counts).
    let nonce = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(&id_token)
        .ok()
        .and_then(|data| data.claims["nonce"].as_str().map(str::to_owned));
    if nonce.as_deref() != note["nonce"].as_str() {
        return failed("The identity provider's answer is not for this login.");
    }
    let session = match broker.auth.exchange(&id_token, broker.now()).await {
        Ok(session) => session,
        Err(error) => return failed(&error.to_string()),
    };
    let next = note["request"].as_str().unwrap_or_default();
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/approve/{next}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    let lifetime = i64::try_from(session.expires_in).unwrap_or(0);
    set_cookie(&mut response, SESSION_COOKIE, &session.access_token, lifetime, web.secure());
    set_cookie(&mut response, LOGIN_COOKIE, "", 0, web.secure());
    response
}

#[derive(Deserialize)]
pub struct DecisionForm {
    csrf: String,
    verdict: String,
    #[serde(default)]
    comment: String,
}

/// `POST /approve/{id}`: the decision.
async fn decide(
    State(broker): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<DecisionForm>,
) -> Response {
    let Some(web) = broker.web_login.as_ref() else {
        return message(StatusCode::NOT_FOUND, "Not available", "This broker has no approval page.", None);
    };
    let Ok(id) = RequestId::parse(&id) else {
        return message(StatusCode::NOT_FOUND, "No such request", "That is not a request id.", None);
    };
    // A form another site's page submits carries that site's origin (the
    // pages' referrer policy is same-origin: a policy of no-referrer would
    // have browsers send "null" here for the page's own forms).
    let origin = headers.get(header::ORIGIN).and_then(|value| value.to_str().ok());
    if origin.is_some_and(|origin| origin != web.public_url) {
        return message(StatusCode::FORBIDDEN, "Refused", "This form was not sent from the approval page.", None);
    }
    let relogin = format!("/approve/{id}?login=1");
    let Some(session) = cookie(&headers, SESSION_COOKIE) else {
        return message(
            StatusCode::UNAUTHORIZED,
            "Log in",
            "Your login here has ended.",
            Some((&relogin, "Log in again")),
        );
    };
    let Ok(verified) = broker.auth.verify_bearer(&session).await else {
        return message(
            StatusCode::UNAUTHORIZED,
            "Log in",
            "Your login here has ended.",
            Some((&relogin, "Log in again")),
        );
    };
    if !same(&form.csrf, &csrf_of(&session)) {
        return message(StatusCode::FORBIDDEN, "Refused", "This form was not sent from the approval page.", None);
    }
    let verdict = match form.verdict.as_str() {
        "approve" => Verdict::Approve,
        "deny" => Verdict::Deny,
        _ => return message(StatusCode::BAD_REQUEST, "Refused", "Approve or deny.", None),
    };
    let comment = Some(form.comment).filter(|comment| !comment.trim().is_empty());
    let decided = broker.decide((&verified.principal, &verified.authentication), &id, verdict, comment).await;
    match decided {
        Ok(outcome) => {
            let said = match (verdict, outcome.request.state) {
                (Verdict::Approve, hourglass_core::RequestState::Approved) => "Approved: the access starts now.",
                (Verdict::Approve, _) => "Your approval is counted; the request waits for others.",
                (Verdict::Deny, _) => "Denied.",
            };
            render(&broker, &verified.principal, &id, &session, Some((said, true))).await
        }
        Err(error) if error.code() == ErrorCode::StepUpRequired => message(
            StatusCode::UNAUTHORIZED,
            "Log in again",
            &error.to_api().message,
            Some((&relogin, "Log in again, then decide")),
        ),
        Err(error) => {
            let api = error.to_api();
            render(&broker, &verified.principal, &id, &session, Some((&api.message, false))).await
        }
    }
}
