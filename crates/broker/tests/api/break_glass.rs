//! Break-glass: access at once, reviewed after.

use super::*;

#[tokio::test]
async fn break_glass_grants_at_once_and_flags_review() {
    let h = Harness::new().await;
    let mut bob = h.subscribe("bob").await;
    let mut erin = h.subscribe("erin").await;
    bob.expect("hello", "first frame").await;
    erin.expect("hello", "first frame").await;

    let mut body = write_orders("30m");
    body["break_glass"] = json!(true);
    let outcome = h.file("dave", body).await;
    assert_eq!(outcome["request"]["state"], "approved", "on-call breaks glass without waiting");
    assert_eq!(outcome["request"]["break_glass"], true, "the request is marked break-glass");
    assert_eq!(outcome["grant"]["state"], "active", "access is issued at once");
    assert_eq!(outcome["grant"]["needs_review"], true, "and flagged for review after the fact");
    assert_eq!(at(&outcome["grant"]["expires_at"]), h.now().plus(Duration::from_mins(30)), "still bounded in time");

    for stream in [&mut bob, &mut erin] {
        let filed = stream.expect("request.filed", "every approver is told of a break-glass grant").await;
        assert_eq!(filed["request"]["id"], outcome["request"]["id"], "about dave's request");
        assert_eq!(filed["request"]["break_glass"], true, "and they can see it was break-glass");
    }
}

#[tokio::test]
async fn break_glass_refused_without_oncall_or_reason() {
    let h = Harness::new().await;
    let before = h.snapshot(WATCHED).await;

    let mut body = write_orders("30m");
    body["break_glass"] = json!(true);
    let refused = h.post("alice", "/v1/requests", body.clone()).await;
    assert_refused(&refused, StatusCode::FORBIDDEN, "forbidden", "break glass", "only on-call may break glass");

    body["reason"] = json!("");
    let refused = h.post("dave", "/v1/requests", body).await;
    assert_refused(&refused, StatusCode::BAD_REQUEST, "reason_required", "reason", "break-glass needs a reason");
    // staging-api/deploy needs no reason, but break-glass always does.
    let staging = json!({"resource": "staging-api", "role": "deploy", "duration": "1h", "break_glass": true});
    let refused = h.post("dave", "/v1/requests", staging).await;
    assert_refused(&refused, StatusCode::BAD_REQUEST, "reason_required", "break-glass", "a reason for break-glass");

    assert_eq!(h.snapshot(WATCHED).await, before, "refused break-glass changes nothing");
}

#[tokio::test]
async fn break_glass_replaces_the_same_request_still_pending() {
    let h = Harness::new().await;
    let waiting = request_id(&h.file("dave", write_orders("30m")).await);
    let mut glass = write_orders("30m");
    glass["break_glass"] = json!(true);
    let outcome = h.file("dave", glass).await;
    assert_eq!(outcome["grant"]["state"], "active", "no need to cancel first in an emergency: {outcome}");
    let replaced = h.request("dave", &waiting).await;
    assert_eq!(replaced["state"], "cancelled", "the waiting request is withdrawn: {replaced}");
    assert!(!ids(&h.get_ok("bob", "/v1/requests").await["awaiting_me"]).contains(&waiting), "and leaves the inbox");
}

#[tokio::test]
async fn break_glass_renewal_stays_break_glass_and_tells_approvers() {
    let h = Harness::new().await;
    let mut glass = write_orders("30m");
    glass["break_glass"] = json!(true);
    let grant = grant_id(&h.file("dave", glass).await);
    let mut bob = h.subscribe("bob").await;
    bob.expect("hello", "first frame").await;

    let (status, renewed) = h.renew("dave", &grant, "1h").await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    assert_eq!(renewed["request"]["state"], "approved", "on-call may still break glass: extended at once");
    assert_eq!(renewed["request"]["break_glass"], true, "the renewal is flagged break-glass too");
    assert_eq!(renewed["grant"]["needs_review"], true, "the grant stays flagged for review");
    let told = bob.expect("request.filed", "approvers hear of a break-glass renewal").await;
    assert_eq!(told["request"]["renews"], json!(grant), "about dave's grant");

    // Policy no longer lets dave break glass: extending now needs an approval,
    // even within the renewals normally granted without one.
    let policy = h.policy_dir.join("requests.cedar");
    let text = std::fs::read_to_string(&policy).expect("requests.cedar");
    std::fs::write(&policy, text.replace("principal in Group::\"oncall\",", "principal in Group::\"nobody\","))
        .expect("write");
    assert!(matches!(h.broker.reload_policy().await.expect("reload"), Reload::Loaded { .. }), "policy reloads");
    let (status, pending) = h.renew("dave", &grant, "1h30m").await;
    assert_eq!(status, StatusCode::OK, "{pending}");
    assert_eq!(pending["request"]["state"], "pending", "a break-glass grant no longer covered waits for approval");
    assert_eq!(pending["request"]["break_glass"], false, "and the renewal is an ordinary request");
}

#[tokio::test]
async fn break_glass_grants_are_reviewed_once_by_an_approver_and_the_review_is_audited() {
    let h = Harness::new().await;
    let mut body = write_orders("30m");
    body["break_glass"] = json!(true);
    let outcome = h.file("dave", body).await;
    let grant = grant_id(&outcome);
    let path = format!("/v1/grants/{grant}/review");

    // bob (SRE) could have approved orders-api/write: it waits for his review.
    let waiting = h.get_ok("bob", "/v1/reviews").await;
    assert_eq!(waiting[0]["grant"]["id"], grant.as_str(), "bob's reviews list it: {waiting}");
    assert_eq!(waiting[0]["request"]["reason"], "fix order 1234 stuck in checkout", "with why it was taken");
    assert_eq!(h.get_ok("alice", "/v1/reviews").await, json!([]), "an engineer reviews nothing");
    assert_eq!(h.get_ok("dave", "/v1/reviews").await, json!([]), "nor does its owner");

    let verdict = json!({"verdict": "unjustified", "comment": "no incident was open"});
    let own = h.post("dave", &path, verdict.clone()).await;
    assert_refused(&own, StatusCode::FORBIDDEN, "self_approval", "your own", "the owner never reviews");
    let other = h.post("alice", &path, verdict.clone()).await;
    assert_refused(&other, StatusCode::FORBIDDEN, "forbidden", "orders-api/write", "only its approvers");
    let silent = h.post("bob", &path, json!({"verdict": "justified", "comment": " "})).await;
    assert_refused(&silent, StatusCode::BAD_REQUEST, "reason_required", "comment", "a review says why");

    let (status, reviewed) = h.post("bob", &path, verdict).await;
    assert_eq!(status, StatusCode::OK, "{reviewed}");
    assert_eq!(reviewed["review"]["reviewer"], "bob@acme.example");
    assert_eq!(reviewed["review"]["verdict"], "unjustified");
    assert_eq!(reviewed["needs_review"], true, "still a break-glass grant");
    let again = h.post("erin", &path, json!({"verdict": "justified", "comment": "fine"})).await;
    assert_refused(&again, StatusCode::CONFLICT, "already_decided", "bob@acme.example", "reviewed once");
    assert_eq!(h.get_ok("erin", "/v1/reviews").await, json!([]), "nothing left to review");

    let audit = h.broker.store().audit_records(0, 1000).await.expect("the audit log");
    let review = audit
        .iter()
        .find(|r| r.event.action == AuditAction::GrantReviewed && r.event.result == AuditResult::Ok)
        .expect("the review is audited");
    assert_eq!(review.event.actor, "bob@acme.example");
    assert_eq!(review.event.subject.as_deref(), Some("dave@acme.example"));
    assert_eq!(review.event.details["verdict"], "unjustified");
    assert_eq!(review.event.reason.as_deref(), Some("no incident was open"));
}
