//! Per-principal limits (`[broker.limits]`) and the body size limit: a
//! principal over a limit gets a clear 429 (413 for a body) naming it, is
//! refused before anything changes or is audited, and slows nobody else.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use hourglass_broker::http::MAX_BODY_BYTES;
use hourglass_broker::settings::LimitSettings;
use hourglass_core::Duration;
use serde_json::Value;

use super::{Harness, admin_payments, assert_refused, grant_id, read_orders, request_id, write_orders};

/// How many audit events the store holds.
async fn audit_len(h: &Harness) -> usize {
    h.broker.store().audit_links(0, 100_000).await.expect("the audit log reads").len()
}

async fn whoami(h: &Harness, user: &str) -> (StatusCode, Option<String>, Value) {
    let request = h.builder(Method::GET, Some(user), "/v1/whoami").body(Body::empty()).expect("a request");
    let (status, headers, body) = h.send(request).await;
    let retry_after = headers.get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    (status, retry_after, body)
}

#[tokio::test]
async fn limits_call_rate_per_principal_is_429_with_retry_after_and_others_unaffected() {
    let h = Harness::new().await;
    let defaults = LimitSettings::default();
    assert_eq!((defaults.requests_per_second, defaults.request_burst), (20, 60), "the defaults this test relies on");
    for call in 0..60 {
        let (status, _, body) = whoami(&h, "alice").await;
        assert_eq!(status, StatusCode::OK, "call {call} is within alice's burst of 60: {body}");
    }
    let audited = audit_len(&h).await;
    let before = h.snapshot(&["bob"]).await;

    let (status, retry_after, body) = whoami(&h, "alice").await;
    assert_refused(&(status, body), StatusCode::TOO_MANY_REQUESTS, "rate_limited", "20 a second", "the 61st call");
    assert_eq!(retry_after.as_deref(), Some("1"), "Retry-After says when the next call is admitted");
    let filed = h.post("alice", "/v1/requests", read_orders("10m")).await;
    assert_refused(&filed, StatusCode::TOO_MANY_REQUESTS, "rate_limited", "requests_per_second", "a filing too");

    // Everyone else is served as before, and nothing alice tried happened.
    assert_eq!(whoami(&h, "bob").await.0, StatusCode::OK, "bob is not slowed down by alice");
    let outcome = h.file("dave", read_orders("10m")).await;
    assert_eq!(outcome["grant"]["state"], "active", "dave files and is granted while alice is limited");
    let health = Request::builder().uri("/healthz").body(Body::empty()).expect("a request");
    assert_eq!(h.send(health).await.0, StatusCode::OK, "the broker answers health checks");
    assert_eq!(h.snapshot(&["bob"]).await, before, "alice's refused filing changed nothing bob sees");
    assert_eq!(
        audit_len(&h).await,
        audited + 3,
        "only dave's filing (filed, approved, issued) is audited: a flood of refused calls cannot flood the log"
    );

    // A second later 20 calls are admitted again, and no more.
    h.advance(Duration::from_secs(1));
    for call in 0..20 {
        assert_eq!(whoami(&h, "alice").await.0, StatusCode::OK, "call {call} after a second's refill");
    }
    assert_eq!(whoami(&h, "alice").await.0, StatusCode::TOO_MANY_REQUESTS, "the 21st in that second waits");
}

#[tokio::test]
async fn limits_pending_requests_per_principal_is_429_naming_the_limit() {
    let h = Harness::with_limits(LimitSettings { pending_requests: 1, ..LimitSettings::default() }).await;
    let payments = request_id(&h.file("alice", admin_payments("30m")).await);
    let before = h.snapshot(&["alice", "bob"]).await;
    let audited = audit_len(&h).await;

    let refused = h.post("alice", "/v1/requests", write_orders("30m")).await;
    assert_refused(
        &refused,
        StatusCode::TOO_MANY_REQUESTS,
        "limit_reached",
        "pending_requests",
        "a second request waiting for approval is one too many",
    );
    assert!(refused.1["message"].as_str().is_some_and(|m| m.contains("(1;")), "names the limit: {}", refused.1);
    assert_eq!(h.snapshot(&["alice", "bob"]).await, before, "the refused request was not filed");
    assert_eq!(audit_len(&h).await, audited, "nor audited");

    let outcome = h.file("alice", read_orders("10m")).await;
    assert_eq!(outcome["grant"]["state"], "active", "approved at once, so it waits for nobody: not limited");
    let outcome = h.file("dave", write_orders("30m")).await;
    assert_eq!(outcome["request"]["state"], "pending", "dave has a limit of his own");

    // Once decided, the request no longer waits: room for another.
    h.decide_ok("bob", &payments, "approve").await;
    let grant = h.decide_ok("carol", &payments, "approve").await["grant"]["id"].as_str().expect("a grant").to_owned();
    let outcome = h.file("alice", write_orders("30m")).await;
    assert_eq!(outcome["request"]["state"], "pending", "alice may have one waiting again");
    // A renewal waiting for approval counts like any request.
    let refused = h.renew("alice", &grant, "45m").await;
    assert_refused(&refused, StatusCode::TOO_MANY_REQUESTS, "limit_reached", "pending_requests", "a renewal too");
}

#[tokio::test]
async fn limits_event_streams_per_principal_is_429_naming_the_limit() {
    let h = Harness::new().await;
    assert_eq!(LimitSettings::default().event_streams, 16, "the default this test relies on");
    let mut streams = Vec::new();
    for _ in 0..16 {
        streams.push(h.subscribe("alice").await);
    }
    let request = h.builder(Method::GET, Some("alice"), "/v1/events").body(Body::empty()).expect("a request");
    let (status, _, body) = h.send(request).await;
    assert_refused(&(status, body), StatusCode::TOO_MANY_REQUESTS, "limit_reached", "16 event streams", "a 17th");

    let mut bob = h.subscribe("bob").await;
    bob.expect("hello", "bob's stream opens while alice is at her limit").await;
    let id = request_id(&h.file("dave", write_orders("30m")).await);
    let filed = bob.expect("request.filed", "and is served").await;
    assert_eq!(filed["request"]["id"], id.as_str(), "about dave's request");
    streams[0].expect("hello", "alice's open streams still work").await;

    streams.pop();
    let mut again = h.subscribe("alice").await;
    again.expect("hello", "a closed stream frees its place").await;
}

#[tokio::test]
async fn limits_oversized_bodies_are_413_json_on_every_operation_with_a_body() {
    let h = Harness::new().await;
    let grant = super::grant_id(&h.file("alice", read_orders("10m")).await);
    let request = request_id(&h.file("alice", write_orders("30m")).await);
    let before = h.snapshot(super::WATCHED).await;
    let big = "x".repeat(MAX_BODY_BYTES + 1);
    let json_body = format!(r#"{{"reason": "{big}"}}"#);
    let form_body = format!("token={big}");

    let request_openapi = Request::builder().uri("/v1/openapi.json").body(Body::empty()).expect("a request");
    let (_, _, openapi) = h.send(request_openapi).await;
    let mut checked = Vec::new();
    for (path, item) in openapi["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("an operation map") {
            let Some(content) = operation["requestBody"]["content"].as_object() else { continue };
            let form = content.contains_key("application/x-www-form-urlencoded");
            let uri = path.replace("{id}", if path.starts_with("/v1/grants") { &grant } else { &request });
            let http = Request::builder()
                .method(method.to_ascii_uppercase().as_str())
                .uri(&uri)
                .header(header::AUTHORIZATION, format!("Bearer {}", h.token("alice")))
                .header(
                    header::CONTENT_TYPE,
                    if form { "application/x-www-form-urlencoded" } else { "application/json" },
                )
                .body(Body::from(if form { form_body.clone() } else { json_body.clone() }))
                .expect("a request");
            let (status, _, body) = h.send(http).await;
            let why = format!("{method} {path} with a body over {MAX_BODY_BYTES} bytes");
            assert_refused(&(status, body), StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "65536", &why);
            checked.push(format!("{method} {path}"));
        }
    }
    assert!(checked.len() >= 8, "every operation with a body was tried: {checked:?}");
    assert_eq!(h.snapshot(super::WATCHED).await, before, "oversized bodies change nothing");
}

#[tokio::test]
async fn refusals_repeated_within_a_minute_are_audited_once_then_summarized() {
    let h = Harness::new().await;
    let grant = grant_id(&h.file("alice", read_orders("30m")).await);
    let before = h.broker.store().audit_head().await.expect("the audit head").0;
    for _ in 0..30 {
        let (status, _) = h.get("dave", &format!("/v1/grants/{grant}/credential")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "dave may not fetch alice's credential");
    }
    let audited = async |after: u64| {
        let links = h.broker.store().audit_links(after, 100).await.expect("the audit log");
        links.iter().map(|link| serde_json::from_str::<Value>(&link.canonical).expect("an event")).collect::<Vec<_>>()
    };
    let first = audited(before).await;
    assert_eq!(first.len(), 1, "thirty identical refusals in a minute: one record, not thirty: {first:?}");
    assert_eq!(
        (first[0]["action"].as_str(), first[0]["result"].as_str()),
        (Some("grant.credential_fetched"), Some("refused"))
    );

    h.broker.audit_repeated_refusals().await.expect("audited");
    assert_eq!(audited(before).await.len(), 1, "within the minute the repeats are only counted");
    h.advance(Duration::from_secs(61));
    h.broker.audit_repeated_refusals().await.expect("audited");
    let all = audited(before).await;
    assert_eq!(all.len(), 2, "then one record of the repeats: {all:?}");
    assert_eq!(all[1]["details"]["repeats"], 29, "counting them: {}", all[1]);
    assert_eq!(all[1]["actor"], "dave@acme.example");
    assert!(all[1]["reason"].as_str().is_some_and(|r| r.starts_with("refused 29 more times")), "{}", all[1]);
}
