//! Renewals: extending a grant without starting over.

use super::*;

#[tokio::test]
async fn renew_within_allowance_moves_deadline_and_token_exp() {
    let h = Harness::new().await;
    let grant = approved_write(&h, "30m").await;
    let id = str_of(&grant["id"], "id").to_owned();

    for (n, duration, minutes) in [(1, "45m", 45), (2, "1h", 60)] {
        h.advance(Duration::from_mins(20));
        let (status, outcome) = h.renew("alice", &id, duration).await;
        assert_eq!(status, StatusCode::OK, "renewal {n} is within the allowance of 2: {outcome}");
        assert_eq!(outcome["request"]["state"], "approved", "renewal {n} is granted without approval");
        assert_eq!(outcome["request"]["renews"], id.as_str(), "the renewal request names the grant");
        let deadline = h.now().plus(Duration::from_mins(minutes));
        assert_eq!(at(&outcome["grant"]["expires_at"]), deadline, "renewal {n} moves the deadline to now + {duration}");
        assert_eq!(outcome["grant"]["renewals"], n, "renewals are counted");
        assert_eq!(at(&h.grant("alice", &id).await["expires_at"]), deadline, "the stored grant has the new deadline");

        let token = h.grant_token("alice", &id).await;
        let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(&token).expect("a JWT").claims;
        assert_eq!(claims["exp"], deadline.unix_seconds(), "a freshly fetched token carries the new deadline");
    }
}

#[tokio::test]
async fn renew_after_allowance_needs_approval() {
    let h = Harness::new().await;
    let grant = approved_write(&h, "30m").await;
    let id = str_of(&grant["id"], "id").to_owned();
    for _ in 0..2 {
        h.advance(Duration::from_mins(20));
        let (status, outcome) = h.renew("alice", &id, "30m").await;
        assert_eq!(status, StatusCode::OK, "within the allowance: {outcome}");
    }
    let deadline = at(&h.grant("alice", &id).await["expires_at"]);

    h.advance(Duration::from_mins(20));
    let (status, outcome) = h.renew("alice", &id, "1h").await;
    assert_eq!(status, StatusCode::OK, "a third renewal is filed, not refused: {outcome}");
    assert_eq!(outcome["request"]["state"], "pending", "past the allowance a renewal waits for approval");
    assert_eq!(outcome["request"]["renews"], id.as_str(), "the pending request renews the grant");
    assert_eq!(at(&outcome["grant"]["expires_at"]), deadline, "the grant keeps its deadline meanwhile");
    assert_eq!(at(&h.grant("alice", &id).await["expires_at"]), deadline, "stored deadline unchanged too");
    let renewal = request_id(&outcome);
    assert!(ids(&h.get_ok("bob", "/v1/requests").await["awaiting_me"]).contains(&renewal), "bob is asked");
    let twice = h.renew("alice", &id, "1h").await;
    assert_refused(&twice, StatusCode::CONFLICT, "duplicate", &renewal, "one renewal waits at a time");

    h.advance(Duration::from_mins(5));
    let outcome = h.decide_ok("bob", &renewal, "approve").await;
    assert_eq!(outcome["request"]["state"], "approved", "bob approves the renewal");
    let renewed = h.now().plus(Duration::from_hours(1));
    assert_eq!(at(&outcome["grant"]["expires_at"]), renewed, "approval moves the deadline to approval + 1h");
    assert_eq!(at(&h.grant("alice", &id).await["expires_at"]), renewed, "and it is stored");
    assert_eq!(outcome["grant"]["renewals"], 3, "the approved renewal counts");
}

#[tokio::test]
async fn renew_again_after_a_renewal_request_timed_out() {
    let h = Harness::new().await;
    let grant = approved_write(&h, "4h").await;
    let id = str_of(&grant["id"], "id").to_owned();
    for duration in ["4h", "4h"] {
        h.advance(Duration::from_mins(10));
        assert_eq!(h.renew("alice", &id, duration).await.0, StatusCode::OK, "within the allowance");
    }
    h.advance(Duration::from_mins(10));
    let (status, outcome) = h.renew("alice", &id, "4h").await;
    assert_eq!((status, &outcome["request"]["state"]), (StatusCode::OK, &json!("pending")), "needs approval");
    let stale = request_id(&outcome);

    // Nobody decided within the 30m pending timeout, and the scheduler has
    // not run yet; the grant lives on.
    h.advance(Duration::from_mins(30));
    let (status, outcome) = h.renew("alice", &id, "4h").await;
    assert_eq!(status, StatusCode::OK, "a timed-out renewal request does not block asking again: {outcome}");
    let fresh = request_id(&outcome);
    assert_ne!(fresh, stale, "a new renewal request");
    assert_eq!(outcome["request"]["state"], "pending", "which waits for approval in turn");
    let late = h.decide("bob", &stale, "approve").await;
    assert_refused(&late, StatusCode::CONFLICT, "not_pending", "expired", "the old one can no longer be approved");
    let outcome = h.decide_ok("bob", &fresh, "approve").await;
    assert_eq!(at(&outcome["grant"]["expires_at"]), h.now().plus(Duration::from_hours(4)), "the new one renews");
}

#[tokio::test]
async fn renew_beyond_limits_is_out_of_bounds() {
    let h = Harness::new().await;
    // staging-api/deploy: at most 8h at once and 12h in total; approved at once.
    let outcome = h.file("alice", json!({"resource": "staging-api", "role": "deploy", "duration": "8h"})).await;
    let id = grant_id(&outcome);
    h.advance(Duration::from_hours(7));
    let before = h.grant("alice", &id).await;

    let refused = h.renew("alice", &id, "8h").await;
    assert_refused(&refused, StatusCode::BAD_REQUEST, "duration_out_of_bounds", "12h", "7h + 8h exceeds max_total");
    let refused = h.renew("alice", &id, "9h").await;
    assert_refused(&refused, StatusCode::BAD_REQUEST, "duration_out_of_bounds", "8h", "longer than max_duration");
    let refused = h.renew("alice", &id, "10m").await;
    assert_refused(&refused, StatusCode::BAD_REQUEST, "duration_out_of_bounds", "earlier", "a renewal never shortens");
    let refused = h.renew("alice", &id, "ten minutes").await;
    assert_refused(&refused, StatusCode::BAD_REQUEST, "invalid_duration", "ten minutes", "not a duration");
    assert_eq!(h.grant("alice", &id).await, before, "refused renewals change nothing");

    let (status, outcome) = h.renew("alice", &id, "5h").await;
    assert_eq!(status, StatusCode::OK, "7h + 5h is exactly the 12h total: {outcome}");
}

#[tokio::test]
async fn renew_of_someone_elses_grant_forbidden() {
    let h = Harness::new().await;
    let id = grant_id(&h.file("alice", read_orders("10m")).await);
    let before = h.grant("alice", &id).await;
    for who in ["bob", "carol"] {
        let refused = h.renew(who, &id, "30m").await;
        assert_refused(&refused, StatusCode::FORBIDDEN, "forbidden", "owner", "only the owner renews");
    }
    assert_eq!(h.grant("alice", &id).await, before, "refused renewals change nothing");
}

#[tokio::test]
async fn renew_pending_is_cancelled_when_grant_revoked() {
    let h = Harness::new().await;
    // payments-api/admin allows no renewal without approval.
    let id = request_id(&h.file("alice", admin_payments("30m")).await);
    h.decide_ok("bob", &id, "approve").await;
    let grant = grant_id(&h.decide_ok("carol", &id, "approve").await);
    let (status, outcome) = h.renew("alice", &grant, "45m").await;
    assert_eq!(status, StatusCode::OK, "the renewal is filed: {outcome}");
    assert_eq!(outcome["request"]["state"], "pending", "payments-api/admin renewals need approval");
    let renewal = request_id(&outcome);

    let (status, revoked) = h.revoke("alice", &grant).await;
    assert_eq!(status, StatusCode::OK, "the owner revokes: {revoked}");
    assert_eq!(h.request("alice", &renewal).await["state"], "cancelled", "a renewal of an ended grant is withdrawn");
    let late = h.decide("bob", &renewal, "approve").await;
    assert_refused(&late, StatusCode::CONFLICT, "not_pending", "cancelled", "nothing left to renew");
    assert!(ids(&h.get_ok("bob", "/v1/requests").await["awaiting_me"]).is_empty(), "it leaves bob's inbox");
}
