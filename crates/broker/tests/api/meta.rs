//! Meta: health, readiness, metrics, the API document.

use super::*;

#[tokio::test]
async fn meta_health_openapi_metrics_not_found() {
    let h = Harness::new().await;
    let anonymous = |path: &str| Request::builder().uri(path).body(Body::empty()).expect("a request");

    let (status, _, health) = h.send(anonymous("/healthz")).await;
    assert_eq!(status, StatusCode::OK, "health needs no token: {health}");
    assert_eq!(health["status"], "ok", "the broker says it is ok");
    assert_eq!(at(&health["server_time"]), h.now(), "health carries the broker's clock");

    let (status, _, ready) = h.send(anonymous("/readyz")).await;
    assert_eq!(status, StatusCode::OK, "ready: the store answers, the lease holds: {ready}");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["replicas"], 1, "one broker on its SQLite store");

    let (status, _, openapi) = h.send(anonymous("/v1/openapi.json")).await;
    assert_eq!(status, StatusCode::OK, "the OpenAPI document is served");
    for path in ["/v1/requests", "/v1/grants/{id}/renew", "/v1/events", "/v1/introspect"] {
        assert!(openapi["paths"].get(path).is_some(), "the OpenAPI document describes {path}");
    }

    h.file("alice", read_orders("10m")).await;
    let (status, _, metrics) = h.send(anonymous("/metrics")).await;
    assert_eq!(status, StatusCode::OK, "metrics are served");
    let metrics = str_of(&metrics, "metrics text");
    assert!(
        metrics.contains("hourglass_requests_total{outcome=\"auto_approved\"} 1"),
        "the auto-approved request is counted:\n{metrics}"
    );

    let (status, _, body) = h
        .send(Request::builder().method(Method::DELETE).uri("/v1/requests").body(Body::empty()).expect("a request"))
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "DELETE is not a method of /v1/requests");
    assert_eq!(body["code"], "method_not_allowed", "405 answers JSON with a code too: {body}");

    for path in ["/v1/nope", "/nope"] {
        let (status, _, body) = h.send(anonymous(path)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path} does not exist");
        assert_eq!(body["code"], "not_found", "unknown paths answer JSON with a code, not plain text: {body}");
    }
}

#[tokio::test]
async fn meta_catalog_hints_what_policy_would_do() {
    let h = Harness::new().await;
    let catalog = h.get_ok("alice", "/v1/resources").await;
    let role = |resource: &str, role: &str| {
        catalog["resources"]
            .as_array()
            .and_then(|list| list.iter().find(|r| r["name"] == resource))
            .and_then(|r| r["roles"].as_array())
            .and_then(|roles| roles.iter().find(|r| r["name"] == role))
            .cloned()
            .unwrap_or_else(|| panic!("the catalog offers {resource}/{role}: {catalog}"))
    };
    let read = role("orders-api", "read");
    assert_eq!((&read["may_request"], &read["auto_approve"]), (&json!(true), &json!(true)), "read is at once");
    assert_eq!(read["max_duration"], "1h", "bounds come from the policy");
    let write = role("orders-api", "write");
    assert_eq!((&write["may_request"], &write["auto_approve"]), (&json!(true), &json!(false)), "write waits");
    let admin = role("payments-api", "admin");
    assert_eq!(admin["ticket_required"], true, "the form must ask for a ticket");
    assert_eq!(admin["may_request"], true, "alice may request it, given the ticket it requires");
}
