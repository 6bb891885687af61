//! Approvals: who may decide, thresholds, the inbox, who sees what.

use super::*;

#[tokio::test]
async fn approval_starts_the_access_clock_at_approval() {
    let h = Harness::new().await;
    let filed_at = h.now();
    let filed = h.file("alice", write_orders("30m")).await;
    assert_eq!(filed["request"]["state"], "pending", "orders-api/write waits for an SRE");
    assert_eq!(filed["request"]["approvals_remaining"], 1, "one SRE approval is needed");
    assert!(filed.get("grant").is_none(), "no grant before approval: {filed}");
    assert_eq!(at(&filed["request"]["created_at"]), filed_at, "filed at the broker's time");

    h.advance(Duration::from_mins(10));
    let approved_at = h.now();
    let id = request_id(&filed);
    let (status, outcome) = h.post("bob", &format!("/v1/requests/{id}/approve"), json!({"comment": "go"})).await;
    assert_eq!(status, StatusCode::OK, "bob (sre) approves: {outcome}");
    assert_eq!(outcome["request"]["state"], "approved", "one SRE approval completes sre-review");
    assert_eq!(outcome["request"]["decisions"][0]["approver"], "bob@acme.example", "bob's decision is recorded");
    assert_eq!(outcome["request"]["decisions"][0]["comment"], "go", "with his comment");
    let grant = &outcome["grant"];
    assert_eq!(grant["state"], "active", "the approval issues the grant");
    assert_eq!(at(&grant["issued_at"]), approved_at, "the access clock starts at approval, not at request");
    assert_eq!(
        at(&grant["expires_at"]),
        approved_at.plus(Duration::from_mins(30)),
        "the 10 minutes spent waiting are not taken from the 30 asked for"
    );
}

#[tokio::test]
async fn approval_two_person_needs_sre_and_security() {
    let h = Harness::new().await;
    let filed = h.file("alice", admin_payments("30m")).await;
    let id = request_id(&filed);
    assert_eq!(filed["request"]["approvals_remaining"], 2, "two-person: one SRE and one security");

    let outcome = h.decide_ok("bob", &id, "approve").await;
    assert_eq!(outcome["request"]["state"], "pending", "one SRE is half of two-person");
    assert_eq!(outcome["request"]["approvals_remaining"], 1, "the SRE slot is filled");
    assert!(outcome.get("grant").is_none(), "no grant yet: {outcome}");
    assert!(!ids(&h.get_ok("bob", "/v1/requests").await["awaiting_me"]).contains(&id), "bob has decided");
    assert!(ids(&h.get_ok("carol", "/v1/requests").await["awaiting_me"]).contains(&id), "security is asked");

    // A second SRE cannot stand in for security: the approval is refused as
    // pointless rather than recorded, and erin's inbox no longer lists it.
    assert!(!ids(&h.get_ok("erin", "/v1/requests").await["awaiting_me"]).contains(&id), "erin's approval cannot count");
    let refused = h.decide("erin", &id, "approve").await;
    assert_refused(
        &refused,
        StatusCode::CONFLICT,
        "approval_not_needed",
        "1 from security",
        "two SREs are not security",
    );
    let after = h.request("alice", &id).await;
    assert_eq!(after["approvals_remaining"], 1, "the security slot is still open");
    assert_eq!(after["decisions"].as_array().map(Vec::len), Some(1), "erin's approval is not recorded");
    assert!(h.get_ok("alice", "/v1/grants").await["grants"].as_array().expect("grants").is_empty(), "no access yet");

    let outcome = h.decide_ok("carol", &id, "approve").await;
    assert_eq!(outcome["request"]["state"], "approved", "security completes the two-person rule");
    assert_eq!(outcome["request"]["approvals_remaining"], 0, "every slot is filled");
    assert_eq!(outcome["grant"]["state"], "active", "the grant is issued on the last approval");
}

#[tokio::test]
async fn self_approval_refused() {
    let h = Harness::new().await;
    // bob is an SRE, so he could approve this request were it not his own.
    let filed = h.file("bob", write_orders("30m")).await;
    let id = request_id(&filed);
    let before = h.request("bob", &id).await;
    for verdict in ["approve", "deny"] {
        let refused = h.decide("bob", &id, verdict).await;
        assert_refused(&refused, StatusCode::FORBIDDEN, "self_approval", "own request", "nobody decides their own");
    }
    assert_eq!(h.request("bob", &id).await, before, "a refused self-approval changes nothing");
    assert!(ids(&h.get_ok("erin", "/v1/requests").await["awaiting_me"]).contains(&id), "it still waits for erin");

    // An engineer deciding their own request is refused as self-approval too.
    let filed = h.file("alice", write_orders("30m")).await;
    let refused = h.decide("alice", &request_id(&filed), "approve").await;
    assert_refused(&refused, StatusCode::FORBIDDEN, "self_approval", "own request", "alice on her own request");
}

#[tokio::test]
async fn approval_twice_is_already_decided() {
    let h = Harness::new().await;
    let id = request_id(&h.file("alice", admin_payments("30m")).await);
    h.decide_ok("bob", &id, "approve").await;
    let refused = h.decide("bob", &id, "approve").await;
    assert_refused(&refused, StatusCode::CONFLICT, "already_decided", "already decided", "a decision counts once");
    let request = h.request("alice", &id).await;
    assert_eq!(request["decisions"].as_array().map(Vec::len), Some(1), "bob's approval is recorded once");
    assert_eq!(request["approvals_remaining"], 1, "and counted once");
    assert_eq!(request["state"], "pending", "still waiting for security");
}

#[tokio::test]
async fn approval_after_approved_is_not_pending() {
    let h = Harness::new().await;
    let filed = h.file("alice", write_orders("30m")).await;
    let id = request_id(&filed);
    let grant = h.decide_ok("bob", &id, "approve").await["grant"].clone();
    let refused = h.decide("erin", &id, "approve").await;
    assert_refused(&refused, StatusCode::CONFLICT, "not_pending", "approved", "the request was decided already");
    let grants = h.get_ok("alice", "/v1/grants?ended=true").await;
    assert_eq!(grants["grants"], json!([grant]), "a late approval issues no second grant");
}

#[tokio::test]
async fn approval_replayed_decision_is_not_pending_and_changes_nothing() {
    let h = Harness::new().await;
    let approved = request_id(&h.file("alice", write_orders("30m")).await);
    let denied = request_id(&h.file("dave", write_orders("30m")).await);
    let path = |id: &str, verdict: &str| format!("/v1/requests/{id}/{verdict}");
    let body = json!({"comment": "go"});
    assert_eq!(h.post("bob", &path(&approved, "approve"), body.clone()).await.0, StatusCode::OK, "approved once");
    assert_eq!(h.post("bob", &path(&denied, "deny"), body.clone()).await.0, StatusCode::OK, "denied once");
    let before = h.snapshot(WATCHED).await;
    let seen = audit_links(&h).await.len();

    // The very same calls again, as a replayed or retried request would be.
    let replay = h.post("bob", &path(&approved, "approve"), body.clone()).await;
    assert_refused(&replay, StatusCode::CONFLICT, "not_pending", "approved", "an approval replayed after it completed");
    let replay = h.post("bob", &path(&denied, "deny"), body).await;
    assert_refused(&replay, StatusCode::CONFLICT, "not_pending", "denied", "a denial replayed");
    assert_eq!(h.snapshot(WATCHED).await, before, "replays issue no second grant and change nothing");
    let events: Vec<AuditEvent> = audit_links(&h).await.iter().skip(seen).map(event_of).collect();
    assert_eq!(events.len(), 2, "each replay is audited once: {events:?}");
    assert!(
        events.iter().all(|e| e.action.as_str() == "request.decision_refused" && e.result == AuditResult::Refused),
        "as a refused decision: {events:?}"
    );
}

#[tokio::test]
async fn approval_by_engineer_is_forbidden() {
    let h = Harness::new().await;
    let id = request_id(&h.file("alice", write_orders("30m")).await);
    let before = h.request("alice", &id).await;
    let refused = h.decide("dave", &id, "approve").await;
    assert_refused(&refused, StatusCode::FORBIDDEN, "forbidden", "sre", "engineers are not approvers of sre-review");
    // carol approves PCI resources only; orders-api is not one.
    let refused = h.decide("carol", &id, "approve").await;
    assert_refused(&refused, StatusCode::FORBIDDEN, "forbidden", "sre", "security does not approve sre-review");
    assert_eq!(h.request("alice", &id).await, before, "refused decisions change nothing");
}

#[tokio::test]
async fn approval_deny_ends_the_request() {
    let h = Harness::new().await;
    let id = request_id(&h.file("alice", write_orders("30m")).await);
    let (status, outcome) = h.post("bob", &format!("/v1/requests/{id}/deny"), json!({"comment": "use read"})).await;
    assert_eq!(status, StatusCode::OK, "bob may deny: {outcome}");
    assert_eq!(outcome["request"]["state"], "denied", "one denial ends the request");
    assert!(outcome.get("grant").is_none(), "a denied request issues nothing: {outcome}");
    let late = h.decide("erin", &id, "approve").await;
    assert_refused(&late, StatusCode::CONFLICT, "not_pending", "denied", "a denied request cannot be approved later");
    assert!(
        h.get_ok("alice", "/v1/grants?ended=true").await["grants"].as_array().expect("list").is_empty(),
        "no grant"
    );
}

#[tokio::test]
async fn approval_cancel_by_requester_only() {
    let h = Harness::new().await;
    let id = request_id(&h.file("alice", write_orders("30m")).await);
    let refused = h.post("bob", &format!("/v1/requests/{id}/cancel"), json!({})).await;
    assert_refused(&refused, StatusCode::FORBIDDEN, "forbidden", "requester", "only alice may withdraw her request");
    assert_eq!(h.request("alice", &id).await["state"], "pending", "bob's attempt changed nothing");

    let (status, request) = h.post("alice", &format!("/v1/requests/{id}/cancel"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "the requester cancels: {request}");
    assert_eq!(request["state"], "cancelled", "the request is withdrawn");
    let late = h.decide("bob", &id, "approve").await;
    assert_refused(&late, StatusCode::CONFLICT, "not_pending", "cancelled", "a cancelled request cannot be approved");
    let again = h.post("alice", &format!("/v1/requests/{id}/cancel"), json!({})).await;
    assert_refused(&again, StatusCode::CONFLICT, "not_pending", "cancelled", "cancelling twice");
    h.file("alice", write_orders("30m")).await;
}

#[tokio::test]
async fn inbox_lists_pending_request_until_decided() {
    let h = Harness::new().await;
    let id = request_id(&h.file("alice", write_orders("30m")).await);
    let bob = h.get_ok("bob", "/v1/requests").await;
    assert_eq!(ids(&bob["awaiting_me"]), vec![id.clone()], "bob (sre) sees alice's request waiting for him");
    assert!(ids(&bob["mine"]).is_empty(), "bob filed nothing");
    assert_eq!(ids(&h.get_ok("erin", "/v1/requests").await["awaiting_me"]), vec![id.clone()], "every SRE sees it");
    assert!(ids(&h.get_ok("dave", "/v1/requests").await["awaiting_me"]).is_empty(), "engineers approve nothing");
    assert!(ids(&h.get_ok("carol", "/v1/requests").await["awaiting_me"]).is_empty(), "not a security request");
    assert!(ids(&h.get_ok("alice", "/v1/requests").await["awaiting_me"]).is_empty(), "never one's own request");

    h.decide_ok("bob", &id, "approve").await;
    assert!(ids(&h.get_ok("bob", "/v1/requests").await["awaiting_me"]).is_empty(), "decided: gone from bob's inbox");
    assert!(ids(&h.get_ok("erin", "/v1/requests").await["awaiting_me"]).is_empty(), "and from erin's");
    let mine = h.get_ok("alice", "/v1/requests").await;
    assert_eq!(mine["mine"][0]["state"], "approved", "alice sees her request approved: {mine}");
}

#[tokio::test]
async fn visibility_of_others_requests_grants_and_history() {
    let h = Harness::new().await;
    let id = request_id(&h.file("alice", write_orders("30m")).await);
    let grant = grant_id(&h.file("alice", read_orders("10m")).await);

    assert_eq!(h.request("bob", &id).await["id"], id.as_str(), "an approver sees a request he may decide");
    let refused = h.get("dave", &format!("/v1/requests/{id}")).await;
    assert_refused(&refused, StatusCode::FORBIDDEN, "forbidden", &id, "other engineers do not see alice's request");
    let refused = h.get("dave", &format!("/v1/grants/{grant}")).await;
    assert_refused(&refused, StatusCode::FORBIDDEN, "forbidden", &grant, "nor her grant");
    assert!(ids(&h.get_ok("dave", "/v1/grants?all=true").await["grants"]).is_empty(), "all = all dave may view");
    assert_eq!(
        ids(&h.get_ok("carol", "/v1/grants?all=true").await["grants"]),
        vec![grant.clone()],
        "security views everyone's grants"
    );

    let refused = h.get("dave", "/v1/history?subject=alice@acme.example").await;
    assert_refused(&refused, StatusCode::FORBIDDEN, "forbidden", "alice", "dave may not read alice's history");
    let history = h.get_ok("carol", "/v1/history?subject=alice@acme.example").await;
    let targets: Vec<&str> = history.as_array().expect("a list").iter().filter_map(|e| e["target"].as_str()).collect();
    assert!(targets.contains(&grant.as_str()), "security reads alice's history: {targets:?}");
    let own = h.get_ok("dave", "/v1/history").await;
    assert!(own.as_array().expect("a list").is_empty(), "dave's own history has nothing of alice's: {own}");
}

#[tokio::test]
async fn history_of_another_shows_only_what_the_viewer_may_view() {
    let h = Harness::new().await;
    // dave may view anyone's staging grants, and nothing else of anyone's.
    let viewer = r#"permit (principal == User::"dave@acme.example", action == Action::"view", resource in Resource::"staging-api");"#;
    std::fs::write(h.policy_dir.join("viewer.cedar"), viewer).expect("viewer.cedar is written");
    assert!(matches!(h.broker.reload_policy().await.expect("a reload"), hourglass_broker::Reload::Loaded { .. }));

    // bob has a staging grant of his own, and approves alice's orders request.
    let staging = grant_id(&h.file("bob", ask("staging-api", "deploy", "1h", "")).await);
    let orders = request_id(&h.file("alice", write_orders("30m")).await);
    h.decide_ok("bob", &orders, "approve").await;

    let targets = |history: &Value| -> Vec<String> {
        history.as_array().expect("a list").iter().filter_map(|e| e["target"].as_str().map(str::to_owned)).collect()
    };
    let seen = targets(&h.get_ok("dave", "/v1/history?subject=bob@acme.example").await);
    assert!(seen.contains(&staging), "dave sees bob's staging grant: {seen:?}");
    assert!(!seen.contains(&orders), "but not what bob did to alice's orders access: {seen:?}");
    let all = targets(&h.get_ok("carol", "/v1/history?subject=bob@acme.example").await);
    assert!(all.contains(&orders) && all.contains(&staging), "security sees all of it: {all:?}");
    let own = targets(&h.get_ok("bob", "/v1/history").await);
    assert!(own.contains(&orders), "and bob his own, whole: {own:?}");
}

#[tokio::test]
async fn approvals_inbox_shows_what_i_decide_under_a_flood_of_requests_others_decide() {
    let h = Harness::new().await;
    let minter = super::authorization::Minter::new(&h);
    // More than a page of requests SRE decides (orders-api/write), from as
    // many engineers, all ending sooner than the one request carol decides.
    for n in 0..1001 {
        let token = minter.person(&format!("engineer{n}@acme.example"), &["engineers"]);
        let request = Request::builder()
            .method(Method::POST)
            .uri("/v1/requests")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::from(write_orders("30m").to_string()))
            .expect("a request");
        let (status, _, body) = h.send(request).await;
        assert_eq!(status, StatusCode::OK, "engineer{n} files: {body}");
    }
    // Filed a minute later: it ends after all of them.
    h.advance(Duration::from_mins(1));
    let payments = request_id(&h.file("dave", admin_payments("30m")).await);
    let inbox = h.get_ok("carol", "/v1/requests").await;
    assert_eq!(
        ids(&inbox["awaiting_me"]),
        vec![payments],
        "security's inbox holds the PCI request, not hidden behind a thousand others"
    );
    assert_eq!(ids(&h.get_ok("bob", "/v1/requests").await["awaiting_me"]).len(), 200, "SRE's shows the first 200");
}

/// A session exchanged for an ID token of `user` whose login (`auth_time`)
/// was at `logged_in`.
async fn session_logged_in_at(h: &Harness, user: &str, logged_in: Timestamp) -> String {
    let issuer = DevIssuer::load_or_create(&h.data_dir, h.dev_issuer.clone()).expect("the harness's dev issuer");
    let who = dev::users().expect("demo users").into_iter().find(|u| u.short_name() == user).expect("a demo user");
    let id_token = issuer.mint_id_token(&who, SystemClock.now(), None, logged_in).expect("an ID token");
    let body = format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token={id_token}\
         &subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token"
    );
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/auth/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .expect("a request");
    let (status, _, session) = h.send(request).await;
    assert_eq!(status, StatusCode::OK, "the exchange: {session}");
    session["access_token"].as_str().expect("a session token").to_owned()
}

impl Harness {
    fn bearer_request(&self, method: Method, bearer: &str, path: &str) -> Request<Body> {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {bearer}"))
            .body(Body::empty())
            .expect("a request")
    }
}

#[tokio::test]
async fn approvals_need_a_fresh_login_when_policy_asks_for_one() {
    let h = Harness::new().await;
    let policy = std::fs::read_to_string(h.policy_dir.join("hourglass.toml")).expect("the policy reads");
    let fresh = policy.replacen(
        "[resources.orders-api.roles.write]\n",
        "[resources.orders-api.roles.write]\napproval_max_auth_age = \"5m\"\n",
        1,
    );
    assert_ne!(fresh, policy, "the edit applies");
    std::fs::write(h.policy_dir.join("hourglass.toml"), fresh).expect("the policy writes");
    assert!(matches!(h.broker.reload_policy().await.expect("reloads"), Reload::Loaded { .. }));

    let id = request_id(&h.file("alice", write_orders("30m")).await);
    let path = format!("/v1/requests/{id}/approve");
    // The demo's long-lived token does not say when bob logged in.
    let (status, headers, body) =
        h.send(h.builder(Method::POST, Some("bob"), &path).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["code"], "step_up_required");
    assert!(
        body["message"].as_str().unwrap().contains("orders-api/write: deciding this needs a login within the last 5m")
    );
    assert_eq!(
        headers.get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()),
        Some(r#"Bearer error="insufficient_user_authentication""#),
        "RFC 9470's challenge"
    );
    // A session from a login an hour ago (a refreshed session keeps it): refused.
    let stale = session_logged_in_at(&h, "bob", h.now().minus(Duration::from_hours(1))).await;
    let refused = h.send(h.bearer_request(Method::POST, &stale, &path)).await;
    assert_eq!((refused.0, refused.2["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("step_up_required")));
    assert!(refused.2["message"].as_str().unwrap().contains("yours was 1h ago"), "{}", refused.2);
    // Logged in a minute ago: the approval counts.
    let fresh = session_logged_in_at(&h, "bob", h.now().minus(Duration::from_mins(1))).await;
    let (status, _, outcome) = h.send(h.bearer_request(Method::POST, &fresh, &path)).await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(outcome["request"]["state"], "approved");
    // The refusals are audited.
    let audit = h.broker.store().audit_records(0, 1000).await.expect("the audit log");
    let refusals = audit.iter().filter(|r| r.event.action == AuditAction::DecisionRefused).count();
    assert_eq!(refusals, 1, "the refusal is audited (its repeat within the minute is counted into a summary)");
    // Other roles ask for nothing: the demo token still approves there.
    let other = request_id(&h.file("alice", admin_payments("30m")).await);
    h.decide_ok("bob", &other, "approve").await;
}

#[tokio::test]
async fn notification_choices_name_only_channels_that_tell_requesters() {
    let h = Harness::new().await;
    assert_eq!(h.get_ok("alice", "/v1/me/notifications").await, json!([]), "the demo tells requesters on no channel");
    let request = h
        .builder(Method::PUT, Some("alice"), "/v1/me/notifications")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"muted": ["mail"]}"#))
        .unwrap();
    let (status, _, body) = h.send(request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "invalid_request");
    assert!(body["message"].as_str().unwrap().contains("no channel \"mail\" tells requesters here"), "{body}");
}
