//! The audit log: every step recorded, chained, readable by who may.

use super::*;

/// A run touching every kind of step, refusals included.
async fn full_run(h: &Harness) {
    let read = grant_id(&h.file("alice", read_orders("10m")).await);
    let write = request_id(&h.file("alice", write_orders("30m")).await);
    assert_eq!(h.decide("alice", &write, "approve").await.0, StatusCode::FORBIDDEN, "self approval refused");
    let mut glass = write_orders("30m");
    glass["resource"] = json!("staging-api");
    glass["role"] = json!("deploy");
    glass["break_glass"] = json!(true);
    assert_eq!(h.post("alice", "/v1/requests", glass).await.0, StatusCode::FORBIDDEN, "break glass refused");
    assert_eq!(h.revoke("dave", &read).await.0, StatusCode::FORBIDDEN, "dave may not revoke alice's grant");
    let stolen = h.get("dave", &format!("/v1/grants/{read}/credential")).await;
    assert_eq!(stolen.0, StatusCode::FORBIDDEN, "dave may not fetch alice's credential");
    assert_eq!(h.renew("dave", &read, "20m").await.0, StatusCode::FORBIDDEN, "dave may not renew alice's grant");
    let cancel = h.post("dave", &format!("/v1/requests/{write}/cancel"), json!({})).await;
    assert_eq!(cancel.0, StatusCode::FORBIDDEN, "dave may not cancel alice's request");
    let write_grant = grant_id(&h.decide_ok("bob", &write, "approve").await);
    h.advance(Duration::from_mins(5));
    assert_eq!(h.renew("alice", &write_grant, "45m").await.0, StatusCode::OK, "renewal");
    assert_eq!(h.revoke("alice", &write_grant).await.0, StatusCode::OK, "revoke");
    h.advance(Duration::from_mins(10));
    h.run_due_work().await;
}

#[tokio::test]
async fn audit_chain_verifies_and_records_refusals() {
    let h = Harness::new().await;
    full_run(&h).await;
    let links = audit_links(&h).await;
    let count = links.len();
    let (verified, _) = verify_chain(links.clone()).unwrap_or_else(|e| panic!("an untouched chain verifies: {e}"));
    assert_eq!(verified as usize, count, "every stored event is part of the chain");

    let events: Vec<AuditEvent> = links.iter().map(event_of).collect();
    let action_names: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    for action in [
        "broker.started",
        "request.filed",
        "request.approved",
        "grant.issued",
        "grant.renewed",
        "grant.revoked",
        "grant.expired",
        "grant.revocation_attempt",
    ] {
        assert!(action_names.contains(&action), "the run recorded {action}: {action_names:?}");
    }
    let refused = |action: &str, actor: &str| {
        events.iter().any(|e| e.action.as_str() == action && e.actor == actor && e.result == AuditResult::Refused)
    };
    assert!(refused("request.decision_refused", "alice@acme.example"), "self-approval recorded as refused");
    assert!(refused("request.refused", "alice@acme.example"), "a forbidden request recorded as refused");
    assert!(refused("grant.revoke_refused", "dave@acme.example"), "a forbidden revoke recorded as refused");
    assert!(refused("grant.credential_fetched", "dave@acme.example"), "a credential fetch by another recorded");
    assert!(refused("grant.renewal_refused", "dave@acme.example"), "a renewal by another recorded");
    assert!(refused("request.cancelled", "dave@acme.example"), "a cancel by another recorded");
    assert!(
        events.iter().filter(|e| e.actor != "hourglass").all(|e| e.actor.ends_with("@acme.example")),
        "every event names a verified principal or the broker itself"
    );
}

#[tokio::test]
async fn audit_tampering_names_the_altered_seq() {
    let h = Harness::new().await;
    full_run(&h).await;
    let links = audit_links(&h).await;
    let target = links
        .iter()
        .find(|link| link.canonical.contains("fix order 1234 stuck in checkout"))
        .map(|link| link.seq)
        .expect("the write request's filing is in the log");
    assert!(target < links.len() as u64, "a link after the altered one exists, so this is not just the head");

    let raw = rusqlite::Connection::open(&h.db_path).expect("a second connection to the store");
    raw.busy_timeout(std::time::Duration::from_secs(10)).expect("busy timeout");
    let changed = raw
        .execute(
            "UPDATE audit SET event = replace(event, 'stuck in checkout', 'as agreed') WHERE seq = ?1",
            [i64::try_from(target).expect("seq")],
        )
        .expect("the row is rewritten behind the broker's back");
    assert_eq!(changed, 1, "exactly one row altered");
    drop(raw);

    let broken = verify_chain(audit_links(&h).await).expect_err("an altered event breaks the chain");
    assert_eq!(broken.seq, target, "verification names the altered event: {broken}");
}
