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
    let sign = |key: &Ed25519Key, claims: Value| {
        jsonwebtoken::encode(&key.header(), &claims, key.encoding()).expect("a signed token")
    };
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
