//! Expiry: grants end at their deadline, requests when undecided.

use super::*;

#[tokio::test]
async fn expiry_ends_grant_at_deadline_and_keeps_history() {
    let h = Harness::new().await;
    let id = grant_id(&h.file("alice", read_orders("5s")).await);
    let token = h.grant_token("alice", &id).await;
    let deadline = at(&h.grant("alice", &id).await["expires_at"]);

    h.advance(Duration::from_secs(4));
    h.run_due_work().await;
    assert_eq!(h.grant("alice", &id).await["state"], "active", "not expired a second early");

    h.advance(Duration::from_secs(1));
    h.run_due_work().await;
    let grant = h.grant("alice", &id).await;
    assert_eq!(grant["state"], "expired", "the scheduler ends the grant at its deadline");
    assert_eq!(at(&grant["ended_at"]), deadline, "ended at the deadline itself");
    assert_eq!(grant["revocation"]["status"], "done", "and the provider revoked it");
    assert_eq!(h.introspect(&token).await, json!({"active": false}), "its token is no longer active");
    assert!(ids(&h.get_ok("alice", "/v1/grants").await["grants"]).is_empty(), "not among live grants");
    assert_eq!(ids(&h.get_ok("alice", "/v1/grants?ended=true").await["grants"]), vec![id.clone()], "but in history");

    let history = h.get_ok("alice", "/v1/history").await;
    let actions: Vec<&str> = history
        .as_array()
        .expect("history is a list")
        .iter()
        .filter(|event| event["target"] == id.as_str())
        .filter_map(|event| event["action"].as_str())
        .collect();
    for action in ["grant.issued", "grant.credential_fetched", "grant.expired", "grant.revocation_attempt"] {
        assert!(actions.contains(&action), "history keeps {action} for the grant: {actions:?}");
    }
}

#[tokio::test]
async fn expiry_ends_undecided_request() {
    let h = Harness::new().await;
    let filed = h.file("alice", write_orders("30m")).await;
    let id = request_id(&filed);
    assert_eq!(
        at(&filed["request"]["pending_until"]),
        h.now().plus(Duration::from_mins(30)),
        "an undecided request waits pending_timeout (30m in the demo policy)"
    );
    h.advance(Duration::from_secs(30 * 60 - 1));
    h.run_due_work().await;
    assert_eq!(h.request("alice", &id).await["state"], "pending", "not expired a second early");

    h.advance(Duration::from_secs(1));
    h.run_due_work().await;
    assert_eq!(h.request("alice", &id).await["state"], "expired", "the scheduler expires it at pending_until");
    let late = h.decide("bob", &id, "approve").await;
    assert_refused(&late, StatusCode::CONFLICT, "not_pending", "expired", "an expired request cannot be approved");
    h.file("alice", write_orders("30m")).await;
}

#[tokio::test]
async fn expiry_past_deadline_grant_cannot_be_renewed() {
    let h = Harness::new().await;
    let id = grant_id(&h.file("alice", read_orders("5s")).await);
    h.advance(Duration::from_secs(5));
    // Before the scheduler has run, the deadline alone ends the grant.
    let refused = h.renew("alice", &id, "10m").await;
    assert_refused(&refused, StatusCode::CONFLICT, "not_active", "deadline", "no renewal past the deadline");
    let (status, body) = h.get("alice", &format!("/v1/grants/{id}/credential")).await;
    assert_eq!((status, &body["code"]), (StatusCode::CONFLICT, &json!("not_active")), "no credential: {body}");

    h.run_due_work().await;
    let refused = h.renew("alice", &id, "10m").await;
    assert_refused(&refused, StatusCode::CONFLICT, "not_active", "expired", "nor once it has expired");
    assert_eq!(h.grant("alice", &id).await["renewals"], 0, "nothing was renewed");
}

#[tokio::test]
async fn expiry_is_enforced_before_the_scheduler_runs() {
    let h = Harness::new().await;
    // A pending request past its timeout cannot be approved, even before the
    // scheduler has expired it: the decision itself enforces the timeout.
    let stale = request_id(&h.file("alice", write_orders("30m")).await);
    let lapsed = grant_id(&h.file("alice", read_orders("5s")).await);
    h.advance(Duration::from_mins(30));
    let late = h.decide("bob", &stale, "approve").await;
    assert_refused(&late, StatusCode::CONFLICT, "not_pending", "expired", "too late to approve");
    assert_eq!(h.request("alice", &stale).await["state"], "expired", "the refused decision expired it");

    // A grant past its deadline cannot be renewed ("request access again"),
    // so it must not block that new request either.
    let refused = h.renew("alice", &lapsed, "10m").await;
    assert_refused(&refused, StatusCode::CONFLICT, "not_active", "request access again", "past the deadline");
    let outcome = h.file("alice", read_orders("10m")).await;
    assert_ne!(grant_id(&outcome), lapsed, "a new grant, not the lapsed one");

    // Likewise a request past its timeout does not block asking again.
    let stale = request_id(&h.file("dave", write_orders("30m")).await);
    h.advance(Duration::from_mins(30));
    let outcome = h.file("dave", write_orders("30m")).await;
    assert_ne!(request_id(&outcome), stale, "a new request, not the stale one");

    h.run_due_work().await;
    assert_eq!(h.grant("alice", &lapsed).await["state"], "expired", "the scheduler still ends the lapsed grant");
    assert_eq!(h.request("dave", &stale).await["state"], "expired", "and the stale request");
    assert_eq!(h.request("dave", &request_id(&outcome)).await["state"], "pending", "the new one waits on");
}

/// An expiry pass ends several grants in one transaction, and reads the
/// renewals pending on all of them at once: each is withdrawn, its audit
/// record naming its own grant, and a grant without one is unaffected.
#[tokio::test]
async fn expiry_withdraws_each_pending_renewal_of_the_grants_it_ends_naming_its_grant() {
    let h = Harness::new().await;
    let mut grants = Vec::new();
    for owner in ["alice", "dave"] {
        let id = request_id(&h.file(owner, admin_payments("30m")).await);
        h.decide_ok("bob", &id, "approve").await;
        grants.push((owner, grant_id(&h.decide_ok("carol", &id, "approve").await)));
        h.advance(Duration::from_secs(1));
    }
    grants.push(("alice", grant_id(&h.file("alice", read_orders("30m")).await)));
    h.advance(Duration::from_mins(20));
    // payments-api/admin allows no renewal without approval: both wait.
    let mut renewals = Vec::new();
    for (owner, grant) in &grants[..2] {
        let (status, outcome) = h.renew(owner, grant, "45m").await;
        assert_eq!((status, &outcome["request"]["state"]), (StatusCode::OK, &json!("pending")), "{outcome}");
        renewals.push(request_id(&outcome));
    }

    // Every deadline passes before the renewals' own timeout.
    h.advance(Duration::from_mins(11));
    h.run_due_work().await;
    for (owner, grant) in &grants {
        assert_eq!(h.grant(owner, grant).await["state"], "expired", "ended at its deadline");
    }
    for ((owner, _), renewal) in grants.iter().zip(&renewals) {
        assert_eq!(h.request(owner, renewal).await["state"], "cancelled", "a renewal of an ended grant is withdrawn");
    }
    let withdrawn: Vec<(String, String)> = audit_links(&h)
        .await
        .iter()
        .map(event_of)
        .filter(|event| event.action == AuditAction::RequestCancelled)
        .map(|event| (event.target.clone(), event.reason.clone().unwrap_or_default()))
        .collect();
    assert_eq!(withdrawn.len(), 2, "one record per renewal withdrawn: {withdrawn:?}");
    for (renewal, (_, grant)) in renewals.iter().zip(&grants) {
        let reason = withdrawn.iter().find(|(target, _)| target == renewal).map(|(_, reason)| reason.as_str());
        assert_eq!(reason, Some(format!("grant {grant} ended").as_str()), "names its own grant");
    }
}
