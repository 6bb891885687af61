//! Authentication: who is calling.

use super::*;

#[tokio::test]
async fn auth_missing_token_is_401_with_challenge() {
    let h = Harness::new().await;
    for (method, path) in [(Method::GET, "/v1/requests"), (Method::POST, "/v1/requests"), (Method::GET, "/v1/events")] {
        let request = Request::builder().method(method).uri(path).body(Body::empty()).expect("a request");
        let (status, headers, body) = h.send(request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} needs a bearer token: {body}");
        assert_eq!(body["code"], "unauthenticated", "{path}: the code says why");
        assert_eq!(
            headers.get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()),
            Some("Bearer"),
            "{path}: a 401 tells the client which scheme to use"
        );
    }
}

#[tokio::test]
async fn auth_bad_tokens_are_refused() {
    let h = Harness::new().await;
    let before = with_some_state(&h).await;
    // The dev issuer's own key (from its data directory), to sign tokens
    // that differ from a good one in exactly one way.
    let dev_key = Ed25519Key::load_or_create(&h.data_dir.join("keys/dev-issuer.pem")).expect("the dev issuer key");
    let stranger = Ed25519Key::load_or_create(&h.data_dir.join("stranger.pem")).expect("a random key");
    let now = SystemClock.now().unix_seconds();
    let claims = |iss: &str, aud: &str, exp: i64| {
        json!({
            "iss": iss, "aud": aud, "sub": "alice@acme.example", "email": "alice@acme.example", "email_verified": true,
            "groups": ["engineers"], "iat": now - 7200, "exp": exp,
        })
    };
    let sign = |key: &Ed25519Key, claims: Value| key.sign_jwt(&claims).expect("a signed token");
    let good = sign(&dev_key, claims(&h.dev_issuer, "hourglass", now + 600));
    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = claims(&h.dev_issuer, "hourglass", now + 600);
        change(&mut claims);
        sign(&dev_key, claims)
    };
    let unverified = with(&|c| c["email_verified"] = json!(false));
    let unsaid = with(&|c| {
        c.as_object_mut().expect("claims").remove("email_verified");
    });
    // The principal is the configured claim (`email`) or nobody: never `sub`.
    let no_email = with(&|c| {
        c.as_object_mut().expect("claims").remove("email");
    });
    let cases = [
        ("garbage".to_owned(), "malformed", "a token that is no JWT"),
        (sign(&stranger, claims(&h.dev_issuer, "hourglass", now + 600)), "signature", "signed by an unknown key"),
        (sign(&stranger, claims("https://evil.example", "hourglass", now + 600)), "not trusted", "an unknown issuer"),
        (sign(&dev_key, claims(&h.dev_issuer, "other-app", now + 600)), "audience", "a token for another app"),
        (sign(&dev_key, claims(&h.dev_issuer, "hourglass", now - 3600)), "expired", "an expired token"),
        (unverified, "not verified", "an email its provider has not verified"),
        (unsaid, "not verified", "an email nobody said was verified"),
        (no_email, "claim `email` is missing", "no email, though `sub` is there"),
        (with(&|c| c["nbf"] = json!(now + 600)), "not valid yet", "a token whose `nbf` is ten minutes ahead"),
        (
            with(&|c| c["email"] = json!("alice@acme.example\nHOURGLASS_X=1")),
            "cannot name a principal",
            "an id that would break a line in a hook's environment or a log",
        ),
    ];
    for (token, names, why) in cases {
        let request = Request::builder()
            .uri("/v1/requests")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .expect("a request");
        let (status, headers, body) = h.send(request).await;
        assert_refused(&(status, body), StatusCode::UNAUTHORIZED, "unauthenticated", names, why);
        assert!(headers.contains_key(header::WWW_AUTHENTICATE), "{why}: a 401 carries a challenge");
    }
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/requests")
        .header(header::AUTHORIZATION, format!("Bearer {good}"))
        .body(Body::from(ask("staging-api", "deploy", "1h", "").to_string()))
        .expect("a request");
    assert_eq!(h.snapshot(WATCHED).await, before, "refused tokens change nothing");
    let (status, _, body) = h.send(request).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the same token minted right is accepted, so each refusal had one cause: {body}"
    );
}

#[tokio::test]
async fn logout_ends_the_session_at_once_closes_its_event_stream_and_leaves_other_sessions() {
    let mut h = Harness::new().await;
    // Two broker sessions of alice's, exchanged from her ID token.
    let exchange = async |h: &Harness| {
        let form = format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token={}&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token",
            h.token("alice")
        );
        let request = Request::builder()
            .method(Method::POST)
            .uri("/v1/auth/token")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form))
            .expect("a request");
        let (status, _, session) = h.send(request).await;
        assert_eq!(status, StatusCode::OK, "exchanged: {session}");
        session["access_token"].as_str().expect("a session").to_owned()
    };
    let laptop = exchange(&h).await;
    let desktop = exchange(&h).await;
    assert_ne!(laptop, desktop, "two sessions");
    h.tokens.insert("laptop".into(), laptop);
    h.tokens.insert("desktop".into(), desktop);
    let mut stream = h.subscribe("laptop").await;
    stream.expect("hello", "the stream opens").await;
    let mut other_stream = h.subscribe("desktop").await;
    other_stream.expect("hello", "the other session's stream opens").await;
    let before = h.broker.store().audit_head().await.expect("the audit head").0;

    let (status, body) = h.post("laptop", "/v1/auth/logout", json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "logged out: {body}");
    let (status, refused) = h.get("laptop", "/v1/whoami").await;
    assert_refused(
        &(status, refused),
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "ended",
        "the session is refused at once",
    );
    assert_eq!(stream.next_within(EVENT_WAIT).await, None, "its event stream closed");
    let (status, _) = h.get("desktop", "/v1/whoami").await;
    assert_eq!(status, StatusCode::OK, "another session of the same person lives on");
    let told = other_stream.expect("session.ended", "alice's other clients hear one of her sessions ended").await;
    assert_ne!(told["session"]["id"], "", "naming it: {told}");
    h.file("desktop", ask("staging-api", "deploy", "1h", "")).await;
    other_stream.expect("request.approved", "the other session's stream still carries events").await;

    let audit = h.broker.store().audit_links(before, 10).await.expect("the audit log");
    let ended: Vec<Value> = audit.iter().map(|link| serde_json::from_str(&link.canonical).expect("an event")).collect();
    assert!(
        ended.iter().any(|e| e["action"] == "session.ended" && e["actor"] == "alice@acme.example"),
        "the logout is audited: {ended:?}"
    );
    let (status, _) = h.post("laptop", "/v1/auth/logout", json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "an ended session cannot log out again");
}
