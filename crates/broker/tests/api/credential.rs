//! Auto-approval and the credential a grant hands its owner.

use super::*;

#[tokio::test]
async fn auto_approved_read_is_active_at_once() {
    let h = Harness::new().await;
    h.advance(Duration::from_secs(7));
    let now = h.now();
    let outcome = h.file("alice", read_orders("10m")).await;

    let request = &outcome["request"];
    let grant = &outcome["grant"];
    assert_eq!(request["state"], "approved", "policy approves orders-api/read for engineers at once");
    assert_eq!(request["auto_approved"], true, "no human decided it");
    assert_eq!(grant["state"], "active", "the grant is usable in the same answer");
    assert_eq!(grant["owner"], "alice@acme.example", "the requester owns the grant");
    assert_eq!(request["grant_id"], grant["id"], "the request names the grant it produced");
    assert_eq!(at(&grant["issued_at"]), now, "the access clock starts at issue");
    assert_eq!(at(&grant["expires_at"]), now.plus(Duration::from_mins(10)), "the deadline counts from issue");
    assert!(grant.get("ready_at").is_some_and(|r| !r.is_null()), "the token provider confirms at once: {grant}");
    assert_eq!(grant["needs_review"], false, "only break-glass grants need review");

    let listed = h.get_ok("alice", "/v1/grants").await;
    assert_eq!(ids(&listed["grants"]), vec![grant_id(&outcome)], "alice's live grants list the new grant");
    assert_eq!(h.grant("alice", &grant_id(&outcome)).await, *grant, "GET /v1/grants/{{id}} answers the same grant");
}

#[tokio::test]
async fn credential_token_verifies_against_jwks() {
    let h = Harness::new().await;
    let outcome = h.file("alice", read_orders("10m")).await;
    let grant = &outcome["grant"];
    let id = grant_id(&outcome);

    let credential = h.get_ok("alice", &format!("/v1/grants/{id}/credential")).await;
    assert_eq!(credential["expires_at"], grant["expires_at"], "the credential carries the grant's deadline");
    let names: Vec<&str> =
        credential["env"].as_array().expect("env").iter().filter_map(|v| v["name"].as_str()).collect();
    assert_eq!(names, ["ORDERS_API_TOKEN", "ORDERS_API_TOKEN_EXPIRES_AT"], "env names use the policy's env_prefix");
    assert_eq!(credential["env"][0]["secret"], true, "the token is marked secret");

    let token = h.grant_token("alice", &id).await;
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(h.get_ok("alice", "/.well-known/jwks.json").await).expect("a JWKS document");
    let header = jsonwebtoken::decode_header(&token).expect("a JWT header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA, "grant tokens are EdDSA");
    let jwk = jwks.find(header.kid.as_deref().expect("the token names its key")).expect("the JWKS has the key");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).expect("a usable JWK");
    let validation = |audience: &str| {
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[BROKER_URL]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation
    };
    let claims = jsonwebtoken::decode::<Value>(&token, &key, &validation(ORDERS_AUDIENCE))
        .expect("the token verifies against the broker's JWKS")
        .claims;
    assert_eq!(claims["aud"], ORDERS_AUDIENCE, "aud is the resource's audience setting");
    assert_eq!(claims["role"], "read", "the role claim names the granted role");
    assert_eq!(claims["sub"], "alice@acme.example", "sub is the grant's owner");
    assert_eq!(claims["jti"], id.as_str(), "jti is the grant id, for revocation");
    assert_eq!(claims["exp"], at(&grant["expires_at"]).unix_seconds(), "exp is the grant's deadline");
    assert!(claims.get("nbf").is_none(), "no nbf: a resource server whose clock lags would refuse a fresh token");
    h.advance(Duration::from_secs(7));
    let later = h.grant_token("alice", &id).await;
    let later = jsonwebtoken::dangerous::insecure_decode::<Value>(&later).expect("a JWT").claims;
    assert_eq!(later["iat"], h.now().unix_seconds(), "iat is when this copy was signed");
    assert!(
        jsonwebtoken::decode::<Value>(&token, &key, &validation("https://payments.acme.example")).is_err(),
        "a token for orders-api is refused by another resource"
    );

    let (status, body) = h.get("bob", &format!("/v1/grants/{id}/credential")).await;
    assert_eq!((status, &body["code"]), (StatusCode::FORBIDDEN, &json!("forbidden")), "only the owner: {body}");
}

#[tokio::test]
async fn credential_past_the_deadline_is_refused_naming_the_deadline() {
    let h = Harness::new().await;
    let outcome = h.file("alice", read_orders("1m")).await;
    let id = grant_id(&outcome);
    // Past the deadline, before the scheduler has recorded the expiry: the
    // grant still reads active, but it is not usable, and says why.
    h.advance(Duration::from_mins(2));
    let late = h.get("alice", &format!("/v1/grants/{id}/credential")).await;
    assert_refused(
        &late,
        StatusCode::CONFLICT,
        "not_active",
        "reached its deadline",
        "no credential after the deadline",
    );
    let late = h.post("alice", &format!("/v1/grants/{id}/ready"), json!({})).await;
    assert_refused(&late, StatusCode::CONFLICT, "not_active", "reached its deadline", "nor a confirmation");
    h.run_due_work().await;
    let ended = h.get("alice", &format!("/v1/grants/{id}/credential")).await;
    assert_refused(&ended, StatusCode::CONFLICT, "not_active", "expired", "once recorded, the state says it");
}
