//! Revocation: one grant, or every match on a resource.

use super::*;

#[tokio::test]
async fn revoke_by_owner_ends_grant_and_introspection() {
    let h = Harness::new().await;
    let id = grant_id(&h.file("alice", read_orders("10m")).await);
    let token = h.grant_token("alice", &id).await;
    let live = h.introspect(&token).await;
    assert_eq!(live["active"], true, "a live grant's token is active: {live}");
    assert_eq!(live["jti"], id.as_str(), "introspection names the grant");
    assert_eq!(live["sub"], "alice@acme.example", "and its owner");

    h.advance(Duration::from_mins(1));
    let (status, grant) = h.post("alice", &format!("/v1/grants/{id}/revoke"), json!({"reason": "done with it"})).await;
    assert_eq!(status, StatusCode::OK, "the owner may revoke: {grant}");
    assert_eq!(grant["state"], "revoked", "the grant ends now");
    assert_eq!(at(&grant["ended_at"]), h.now(), "at the broker's time");
    assert_eq!(grant["ended_by"], "alice@acme.example", "by its owner");
    assert_eq!(grant["end_reason"], "done with it", "for the reason given");
    assert_eq!(grant["revocation"]["status"], "done", "the provider confirmed the credential is gone");

    assert_eq!(h.introspect(&token).await, json!({"active": false}), "a revoked grant's token is inactive");
    let (status, body) = h.get("alice", &format!("/v1/grants/{id}/credential")).await;
    assert_eq!((status, &body["code"]), (StatusCode::CONFLICT, &json!("not_active")), "no credential: {body}");
    assert!(ids(&h.get_ok("alice", "/v1/grants").await["grants"]).is_empty(), "not among live grants");
    assert_eq!(h.introspect("not-a-token").await, json!({"active": false}), "garbage is inactive, not an error");
}

#[tokio::test]
async fn revoke_by_security_admin_allowed_by_engineer_forbidden() {
    let h = Harness::new().await;
    let id = grant_id(&h.file("alice", read_orders("10m")).await);
    for who in ["dave", "bob"] {
        let refused = h.revoke(who, &id).await;
        assert_refused(&refused, StatusCode::FORBIDDEN, "forbidden", &id, "only the owner and security revoke");
        assert_eq!(h.grant("alice", &id).await["state"], "active", "the grant survives {who}'s attempt");
    }
    assert_eq!(h.grant("carol", &id).await["id"], id.as_str(), "security may view anyone's grant");
    let (status, grant) = h.revoke("carol", &id).await;
    assert_eq!(status, StatusCode::OK, "carol (security admin) may revoke alice's grant: {grant}");
    assert_eq!(grant["state"], "revoked", "the grant ends");
    assert_eq!(grant["ended_by"], "carol@acme.example", "attributed to carol");
}

#[tokio::test]
async fn revoke_matching_ends_every_live_grant_on_a_resource_in_one_call() {
    let h = Harness::new().await;
    let alices = grant_id(&h.file("alice", read_orders("10m")).await);
    let daves = grant_id(&h.file("dave", read_orders("10m")).await);
    let write = approved_write(&h, "30m").await["id"].as_str().expect("a grant id").to_owned();
    let token = h.grant_token("dave", &daves).await;

    let bulk = json!({"resource": "orders-api", "role": "read", "reason": "incident 42: rotate everything"});
    let (status, body) = h.post("carol", "/v1/grants/revoke", bulk).await;
    assert_eq!(status, StatusCode::OK, "security may revoke everyone's read grants: {body}");
    let mut revoked = ids(&body["grants"]);
    revoked.sort();
    let mut expected = vec![alices.clone(), daves.clone()];
    expected.sort();
    assert_eq!(revoked, expected, "both read grants, not alice's write grant");
    for grant in body["grants"].as_array().expect("a list") {
        assert_eq!(grant["state"], "revoked", "{grant}");
        assert_eq!(grant["ended_by"], "carol@acme.example", "attributed to carol: {grant}");
        assert_eq!(grant["end_reason"], "incident 42: rotate everything", "with the incident's reason: {grant}");
        assert_eq!(grant["revocation"]["status"], "done", "its credential removed before the answer: {grant}");
    }
    assert_eq!(h.introspect(&token).await, json!({"active": false}), "dave's token is inactive at once");
    assert_eq!(h.grant("alice", &write).await["state"], "active", "another role on the resource is untouched");
    let events = audit_links(&h).await.iter().map(event_of).collect::<Vec<_>>();
    let recorded = events.iter().filter(|e| e.action == AuditAction::GrantRevoked && e.actor == "carol@acme.example");
    assert_eq!(recorded.count(), 2, "each revocation audited on its own");
}

#[tokio::test]
async fn revoke_matching_is_all_or_nothing_and_needs_a_reason() {
    let h = Harness::new().await;
    let alices = grant_id(&h.file("alice", read_orders("10m")).await);
    let daves = grant_id(&h.file("dave", read_orders("10m")).await);

    let everyone = json!({"resource": "orders-api", "reason": "leaving"});
    let refused = h.post("alice", "/v1/grants/revoke", everyone).await;
    assert_refused(&refused, StatusCode::FORBIDDEN, "forbidden", "1 of the 2", "alice may not revoke dave's grant");
    assert_eq!(h.grant("alice", &alices).await["state"], "active", "nothing revoked, not even alice's own");
    assert_eq!(h.grant("dave", &daves).await["state"], "active", "dave's grant survives");

    let unexplained = h.post("carol", "/v1/grants/revoke", json!({"resource": "orders-api", "reason": " "})).await;
    assert_refused(&unexplained, StatusCode::BAD_REQUEST, "reason_required", "reason", "a bulk revocation says why");
    let unknown = h.post("carol", "/v1/grants/revoke", json!({"resource": "no-such-api", "reason": "x"})).await;
    assert_refused(&unknown, StatusCode::NOT_FOUND, "not_found", "no-such-api", "an unknown resource is named");

    let mine = json!({"resource": "orders-api", "owner": "alice@acme.example", "reason": "leaving"});
    let (status, body) = h.post("alice", "/v1/grants/revoke", mine).await;
    assert_eq!(status, StatusCode::OK, "alice may revoke all of her own: {body}");
    assert_eq!(ids(&body["grants"]), vec![alices], "only hers");
    assert_eq!(h.grant("dave", &daves).await["state"], "active", "dave's grant survives");
}

#[tokio::test]
async fn revoke_twice_is_not_active() {
    let h = Harness::new().await;
    let id = grant_id(&h.file("alice", read_orders("10m")).await);
    let (status, first) = h.revoke("alice", &id).await;
    assert_eq!(status, StatusCode::OK, "the first revoke ends the grant: {first}");
    let again = h.revoke("alice", &id).await;
    assert_refused(&again, StatusCode::CONFLICT, "not_active", "revoked", "a grant ends once");
    let again = h.revoke("carol", &id).await;
    assert_refused(&again, StatusCode::CONFLICT, "not_active", "revoked", "even for an admin");
    assert_eq!(h.grant("alice", &id).await, first, "the second attempts change nothing");
}

#[tokio::test]
async fn revoke_or_cancel_past_the_deadline_is_refused_not_recorded() {
    let h = Harness::new().await;
    let grant = grant_id(&h.file("alice", read_orders("1m")).await);
    let request = request_id(&h.file("alice", write_orders("30m")).await);
    h.advance(Duration::from_mins(31));
    let late = h.revoke("alice", &grant).await;
    assert_refused(&late, StatusCode::CONFLICT, "not_active", "reached its deadline", "it expired, not revoked");
    let late = h.post("alice", &format!("/v1/requests/{request}/cancel"), json!({})).await;
    assert_refused(&late, StatusCode::CONFLICT, "not_pending", "expired", "it expired, not cancelled");
    h.run_due_work().await;
    assert_eq!(h.grant("alice", &grant).await["state"], "expired", "the scheduler records the expiry");
    assert_eq!(h.request("alice", &request).await["state"], "expired", "and the request's");
}

#[tokio::test]
async fn introspection_for_another_audience_is_inactive() {
    let h = Harness::new().await;
    let id = grant_id(&h.file("alice", read_orders("10m")).await);
    let token = h.grant_token("alice", &id).await;
    let live = h.introspect(&token).await;
    let audience = live["aud"].as_str().expect("the token's audience").to_owned();
    assert_eq!(h.introspect_for(&token, &audience).await, live, "active to the resource server it was made for");
    assert_eq!(
        h.introspect_for(&token, "https://billing.acme.example").await,
        json!({"active": false}),
        "inactive to a resource server answering to another audience"
    );
}
