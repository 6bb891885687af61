//! Bad input: a clear 4xx naming what is wrong, and nothing changed.

use super::*;

#[tokio::test]
async fn bad_input_durations_are_refused() {
    let h = Harness::new().await;
    let before = with_some_state(&h).await;
    let staging = |duration: &str| json!({"resource": "staging-api", "role": "deploy", "duration": duration});
    let cases = [
        (staging("ten minutes"), StatusCode::BAD_REQUEST, "invalid_duration", "ten minutes", "words are no duration"),
        (staging("30"), StatusCode::BAD_REQUEST, "invalid_duration", "unit", "a bare number has no unit"),
        (staging(""), StatusCode::BAD_REQUEST, "invalid_duration", "empty", "an empty duration"),
        (staging("0s"), StatusCode::BAD_REQUEST, "duration_out_of_bounds", "0s", "zero is too short"),
        (staging("1s"), StatusCode::BAD_REQUEST, "duration_out_of_bounds", "5s", "below min_duration"),
        (staging("9h"), StatusCode::BAD_REQUEST, "duration_out_of_bounds", "8h", "above deploy's max_duration"),
        (read_orders("2h"), StatusCode::BAD_REQUEST, "duration_out_of_bounds", "1h", "above read's max_duration"),
    ];
    for (body, status, code, names, why) in cases {
        let refused = h.post("alice", "/v1/requests", body).await;
        assert_refused(&refused, status, code, names, why);
    }
    assert_eq!(h.snapshot(WATCHED).await, before, "refused durations change nothing");
}

#[tokio::test]
async fn bad_input_reason_and_ticket_are_required() {
    let h = Harness::new().await;
    let before = with_some_state(&h).await;
    let mut no_ticket = admin_payments("30m");
    no_ticket.as_object_mut().map(|o| o.remove("ticket"));
    let mut blank_ticket = admin_payments("30m");
    blank_ticket["ticket"] = json!("   ");
    let cases = [
        (ask("orders-api", "write", "10m", ""), "reason_required", "reason", "an empty reason"),
        (ask("orders-api", "write", "10m", "  \n "), "reason_required", "reason", "a blank reason"),
        (json!({"resource": "orders-api", "role": "write", "duration": "10m"}), "reason_required", "reason", "none"),
        (no_ticket, "ticket_required", "ticket", "payments-api/admin needs a ticket"),
        (blank_ticket, "ticket_required", "ticket", "a blank ticket is no ticket"),
        (ask("orders-api", "write", "10m", "bell\u{7}"), "invalid_request", "control", "control characters"),
        (ask("orders-api", "write", "10m", &"x".repeat(1001)), "invalid_request", "1000", "an overlong reason"),
    ];
    for (body, code, names, why) in cases {
        let refused = h.post("dave", "/v1/requests", body).await;
        assert_refused(&refused, StatusCode::BAD_REQUEST, code, names, why);
    }
    let pending = ids(&before["bob"]["requests"]["awaiting_me"]);
    assert_eq!(pending.len(), 1, "alice's write waits for bob");
    let path = format!("/v1/requests/{}/approve", pending[0]);
    let refused = h.post("bob", &path, json!({"comment": "ok\u{1b}[2J"})).await;
    assert_refused(&refused, StatusCode::BAD_REQUEST, "invalid_request", "comment", "a comment with escapes");
    assert_eq!(h.snapshot(WATCHED).await, before, "refused requests change nothing");
}

#[tokio::test]
async fn bad_input_unknown_resource_and_role_are_404() {
    let h = Harness::new().await;
    let before = with_some_state(&h).await;
    let refused = h.post("alice", "/v1/requests", ask("billing-api", "read", "10m", "why")).await;
    assert_refused(&refused, StatusCode::NOT_FOUND, "unknown_resource", "billing-api", "no policy, no access");
    let refused = h.post("alice", "/v1/requests", ask("orders-api", "delete", "10m", "why")).await;
    assert_refused(&refused, StatusCode::NOT_FOUND, "unknown_role", "delete", "unknown role, no access");
    assert_eq!(h.snapshot(WATCHED).await, before, "unknown targets change nothing");
}

#[tokio::test]
async fn bad_input_ids_are_named_in_the_error() {
    let h = Harness::new().await;
    let before = with_some_state(&h).await;
    let grant = ids(&before["alice"]["grants"]["grants"])[0].clone();
    let request = ids(&before["alice"]["requests"]["mine"])[0].clone();
    let missing_request = "req-0000000000";
    let missing_grant = "grt-0000000000";

    let refused = h.get("alice", &format!("/v1/requests/{missing_request}")).await;
    assert_refused(&refused, StatusCode::NOT_FOUND, "not_found", missing_request, "an unknown request");
    let refused = h.decide("bob", missing_request, "approve").await;
    assert_refused(&refused, StatusCode::NOT_FOUND, "not_found", missing_request, "approving an unknown request");
    let refused = h.revoke("alice", missing_grant).await;
    assert_refused(&refused, StatusCode::NOT_FOUND, "not_found", missing_grant, "revoking an unknown grant");
    let refused = h.renew("alice", missing_grant, "10m").await;
    assert_refused(&refused, StatusCode::NOT_FOUND, "not_found", missing_grant, "renewing an unknown grant");
    let refused = h.decide("bob", &grant, "approve").await;
    assert_refused(&refused, StatusCode::BAD_REQUEST, "invalid_request", &grant, "a grant id is not a request id");
    let refused = h.get("alice", &format!("/v1/grants/{request}")).await;
    assert_refused(&refused, StatusCode::BAD_REQUEST, "invalid_request", &request, "a request id is not a grant id");
    let refused = h.get("alice", "/v1/requests/garbage").await;
    assert_refused(&refused, StatusCode::BAD_REQUEST, "invalid_request", "garbage", "not an id at all");
    assert_eq!(h.snapshot(WATCHED).await, before, "bad ids change nothing");
}

#[tokio::test]
async fn bad_input_malformed_bodies_are_refused() {
    let h = Harness::new().await;
    let before = with_some_state(&h).await;
    let mut typo = ask("staging-api", "deploy", "10m", "why");
    typo["duraton"] = json!("1h");
    let refused = h.post("alice", "/v1/requests", typo).await;
    assert_refused(&refused, StatusCode::BAD_REQUEST, "invalid_request", "duraton", "an unknown field is refused");
    let refused = h.post_raw("alice", "/v1/requests", r#"{"resource": "staging-api", "role": "#).await;
    assert_refused(&refused, StatusCode::BAD_REQUEST, "invalid_request", "JSON", "malformed JSON");
    let refused = h.post("alice", "/v1/requests", json!({"resource": "staging-api", "role": "deploy"})).await;
    assert_refused(&refused, StatusCode::BAD_REQUEST, "invalid_request", "duration", "a missing field");
    let refused =
        h.post("alice", "/v1/requests", json!({"resource": "staging-api", "role": "deploy", "duration": 30})).await;
    assert_refused(&refused, StatusCode::BAD_REQUEST, "invalid_request", "string", "a number where text belongs");
    let huge = ask("staging-api", "deploy", "10m", &"x".repeat(70 * 1024));
    let refused = h.post("alice", "/v1/requests", huge).await;
    assert_refused(&refused, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "65536", "bodies over 64 KiB");
    let refused = h.get("alice", "/v1/grants?everyone=true").await;
    assert_refused(&refused, StatusCode::BAD_REQUEST, "invalid_request", "everyone", "an unknown query parameter");
    assert_eq!(h.snapshot(WATCHED).await, before, "malformed bodies change nothing");
}

#[tokio::test]
async fn bad_input_duplicate_request_is_409() {
    let h = Harness::new().await;
    let before = with_some_state(&h).await;
    let pending = ids(&before["alice"]["requests"]["awaiting_me"]);
    assert!(pending.is_empty(), "alice decides nothing");
    let write = before["alice"]["requests"]["mine"]
        .as_array()
        .and_then(|list| list.iter().find(|r| r["role"] == "write"))
        .map(|r| str_of(&r["id"], "id").to_owned())
        .expect("alice's pending write");
    let live = ids(&before["alice"]["grants"]["grants"])[0].clone();

    let refused = h.post("alice", "/v1/requests", write_orders("1h")).await;
    assert_refused(&refused, StatusCode::CONFLICT, "duplicate", &write, "the same access is already pending");
    let refused = h.post("alice", "/v1/requests", read_orders("20m")).await;
    assert_refused(&refused, StatusCode::CONFLICT, "duplicate", &live, "the same access is already granted");
    assert_eq!(h.snapshot(WATCHED).await, before, "duplicates change nothing");
}
