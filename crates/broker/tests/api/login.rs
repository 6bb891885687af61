//! Logging in, broker side: `GET /v1/auth/config`, the RFC 8693 exchange at
//! `POST /v1/auth/token`, and trusted issuers whose keys come from OpenID
//! Connect discovery. The identity providers here are real HTTP servers on
//! loopback (discovery document and JWKS) whose keys the test holds, so
//! that it can rotate them and sign tokens the broker must refuse.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use hourglass_broker::auth::{Authenticator, DiscoveredKeys, IssuerKeys, REFETCH_COOLDOWN, Sessions, TrustedIssuer};
use hourglass_broker::clock::{Clock, SystemClock};
use hourglass_broker::dev;
use hourglass_broker::keys::{Ed25519Key, KeyPurpose, KeySet};
use hourglass_broker::provider::Providers;
use hourglass_broker::provider::token::TokenProvider;
use hourglass_broker::settings::{ClaimValues, IssuerKind, IssuerSettings, LimitSettings, LoginSettings};
use hourglass_broker::store::Store;
use hourglass_broker::{Broker, BrokerParts};
use hourglass_core::Duration;
use hourglass_core::api::AuthConfig;
use hourglass_policy::Policy;
use http_body_util::BodyExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::BROKER_URL;

const CLIENT_ID: &str = "hourglass-cli";
const SESSION_LIFETIME: Duration = Duration::from_mins(20);

/// One signing key of a test IdP.
struct IdpKey {
    kid: String,
    key: SigningKey,
}

impl IdpKey {
    fn new(kid: &str) -> IdpKey {
        IdpKey { kid: kid.to_owned(), key: SigningKey::generate(&mut rand::rngs::OsRng) }
    }

    fn jwk(&self) -> Value {
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.key.verifying_key().to_bytes());
        json!({ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.kid, "alg": "EdDSA", "use": "sig" })
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let der = self.key.to_pkcs8_der().expect("PKCS#8");
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(der.as_bytes())).expect("signed")
    }
}

/// A real identity provider on loopback: discovery and JWKS, nothing else.
struct Idp {
    issuer: String,
    published: Arc<Mutex<Vec<Value>>>,
    jwks_fetches: Arc<AtomicUsize>,
}

impl Idp {
    async fn start(keys: &[&IdpKey]) -> Idp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let issuer = format!("http://{}", listener.local_addr().expect("an address"));
        let published = Arc::new(Mutex::new(keys.iter().map(|key| key.jwk()).collect::<Vec<_>>()));
        let jwks_fetches = Arc::new(AtomicUsize::new(0));
        let discovery = json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/jwks") });
        let app = {
            let published = Arc::clone(&published);
            let fetches = Arc::clone(&jwks_fetches);
            axum::Router::new()
                .route(
                    "/.well-known/openid-configuration",
                    axum::routing::get(move || {
                        let discovery = discovery.clone();
                        async move { axum::Json(discovery) }
                    }),
                )
                .route(
                    "/jwks",
                    axum::routing::get(move || {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        let keys = published.lock().expect("keys").clone();
                        async move { axum::Json(json!({ "keys": keys })) }
                    }),
                )
        };
        tokio::spawn(async move { axum::serve(listener, app).await.expect("the test IdP serves") });
        Idp { issuer, published, jwks_fetches }
    }

    /// The IdP now publishes only these keys (a rotation).
    fn publish(&self, keys: &[&IdpKey]) {
        *self.published.lock().expect("keys") = keys.iter().map(|key| key.jwk()).collect();
    }

    fn fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }

    /// An ID token for `email` in `groups`, for `audience`, ending `lifetime` seconds from now.
    fn token(&self, key: &IdpKey, email: &str, groups: &[&str], audience: &str, lifetime: i64) -> String {
        let now = SystemClock.now().unix_seconds();
        key.sign(&json!({
            "iss": self.issuer, "aud": audience, "sub": format!("id-{email}"), "email": email, "email_verified": true,
            "name": "Test User", "groups": groups, "iat": now, "exp": now + lifetime,
        }))
    }
}

/// A broker whose login issuer is `login` and which also trusts `machine`
/// (a CI pipeline's issuer) when given.
struct LoginBroker {
    app: axum::Router,
    _temp: tempfile::TempDir,
}

fn login_settings(issuer: &str) -> LoginSettings {
    LoginSettings {
        issuer: issuer.to_owned(),
        client_id: CLIENT_ID.into(),
        web_client_id: None,
        scopes: vec!["openid".into(), "email".into(), "groups".into()],
        session_lifetime: SESSION_LIFETIME,
        id_claim: "email".into(),
        groups_claim: "groups".into(),
    }
}

impl LoginBroker {
    async fn start(login: TrustedIssuer, machine: Option<TrustedIssuer>) -> LoginBroker {
        let temp = tempfile::tempdir().expect("a temporary directory");
        let policy_dir = temp.path().join("policy");
        dev::materialize_policy(&policy_dir).expect("the demo policy is written");
        let policy = Policy::load_dir(&policy_dir).expect("the demo policy loads");
        let store = Store::open_sqlite(&temp.path().join("hourglass.db")).await.expect("the store opens");
        let token_key = Ed25519Key::load_or_create(&temp.path().join("token.pem")).expect("a token key");
        let token_keys = Arc::new(KeySet::single(KeyPurpose::GrantToken, token_key));
        let session_key = Ed25519Key::load_or_create(&temp.path().join("session.pem")).expect("a session key");
        let session_keys = Arc::new(KeySet::single(KeyPurpose::Session, session_key));
        let config = AuthConfig {
            issuer: login.issuer.clone(),
            client_id: CLIENT_ID.into(),
            scopes: vec!["openid".into()],
            dev: false,
        };
        let mut authenticator = Authenticator::default().trust(login).with_login(config).with_sessions(Sessions::new(
            session_keys,
            BROKER_URL.into(),
            SESSION_LIFETIME,
        ));
        if let Some(machine) = machine {
            authenticator = authenticator.trust(machine);
        }
        let broker = Broker::new(BrokerParts {
            store,
            policy,
            policy_dir: Some(policy_dir),
            providers: Providers::default()
                .with(Arc::new(TokenProvider::new(Arc::clone(&token_keys), BROKER_URL.into()))),
            authenticator,
            token_keys,
            clock: Arc::new(SystemClock) as Arc<dyn Clock>,
            provider_timeout: StdDuration::from_secs(5),
            limits: LimitSettings::default(),
            channels: Default::default(),
            web_login: None,
        })
        .expect("the broker assembles");
        LoginBroker { app: hourglass_broker::http::router(broker), _temp: temp }
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
        let response = self.app.clone().oneshot(request).await.expect("the router answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.expect("a body").to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)));
        (status, headers, body)
    }

    /// `POST /v1/auth/token` with an RFC 8693 form.
    async fn exchange_form(&self, fields: &[(&str, &str)]) -> (StatusCode, axum::http::HeaderMap, Value) {
        let body =
            fields.iter().map(|(name, value)| format!("{name}={}", form_encode(value))).collect::<Vec<_>>().join("&");
        let request = Request::builder()
            .method(Method::POST)
            .uri("/v1/auth/token")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .expect("a request");
        self.send(request).await
    }

    async fn exchange(&self, subject_token: &str) -> (StatusCode, Value) {
        let (status, _, body) = self
            .exchange_form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
                ("subject_token", subject_token),
                ("subject_token_type", "urn:ietf:params:oauth:token-type:id_token"),
            ])
            .await;
        (status, body)
    }

    /// A session for `subject_token`, which must be accepted.
    async fn session(&self, subject_token: &str) -> Value {
        let (status, body) = self.exchange(subject_token).await;
        assert_eq!(status, StatusCode::OK, "the exchange should succeed: {body}");
        body
    }

    async fn call(&self, method: Method, path: &str, bearer: &str, body: Option<Value>) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {bearer}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.map_or_else(Body::empty, |body| Body::from(body.to_string())))
            .expect("a request");
        let (status, _, body) = self.send(request).await;
        (status, body)
    }
}

fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn claims_of(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

fn read_orders() -> Value {
    json!({ "resource": "orders-api", "role": "read", "duration": "10m", "reason": "reports" })
}

#[tokio::test]
async fn login_config_is_public_and_names_the_issuer_and_client() {
    let key = IdpKey::new("k1");
    let idp = Idp::start(&[&key]).await;
    let broker =
        LoginBroker::start(TrustedIssuer::from_login(&login_settings(&idp.issuer)).expect("login"), None).await;
    let request = Request::builder().uri("/v1/auth/config").body(Body::empty()).expect("a request");
    let (status, _, config) = broker.send(request).await;
    assert_eq!(status, StatusCode::OK, "no token is needed to learn how to log in: {config}");
    assert_eq!(config["issuer"], json!(idp.issuer), "the login issuer: {config}");
    assert_eq!(config["client_id"], json!(CLIENT_ID), "the client to log in as: {config}");
    assert_eq!(config["dev"], json!(false), "a real IdP is not the dev issuer: {config}");
}

#[tokio::test]
async fn login_exchange_issues_a_broker_session_that_the_api_accepts() {
    let key = IdpKey::new("k1");
    let idp = Idp::start(&[&key]).await;
    let broker =
        LoginBroker::start(TrustedIssuer::from_login(&login_settings(&idp.issuer)).expect("login"), None).await;
    let id_token = idp.token(&key, "Alice@Acme.Example", &["engineers"], CLIENT_ID, 300);

    let (status, headers, session) = broker
        .exchange_form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
            ("subject_token", &id_token),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:id_token"),
        ])
        .await;
    assert_eq!(status, StatusCode::OK, "a valid ID token is exchanged: {session}");
    assert_eq!(
        headers.get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()),
        Some("no-store"),
        "tokens are not cached"
    );
    assert_eq!(session["token_type"], "Bearer", "a bearer token: {session}");
    assert_eq!(session["issued_token_type"], "urn:ietf:params:oauth:token-type:jwt", "RFC 8693 token type: {session}");
    assert_eq!(session["expires_in"], json!(SESSION_LIFETIME.as_secs()), "the configured lifetime: {session}");

    let token = session["access_token"].as_str().expect("an access token");
    let claims = claims_of(token);
    assert_eq!(claims["iss"], BROKER_URL, "the broker signs its sessions: {claims}");
    assert_eq!(claims["aud"], "hourglass", "sessions are for the broker: {claims}");
    assert_eq!(claims["idp"], json!(idp.issuer), "the session names the IdP it came from: {claims}");
    assert_eq!(claims["sub"], "alice@acme.example", "the principal is the lowercased email: {claims}");

    let (status, me) = broker.call(Method::GET, "/v1/whoami", token, None).await;
    assert_eq!(status, StatusCode::OK, "the session is a bearer token for the API: {me}");
    assert_eq!(me["principal"]["groups"], json!(["engineers"]), "groups come from the ID token: {me}");
    let (status, outcome) = broker.call(Method::POST, "/v1/requests", token, Some(read_orders())).await;
    assert_eq!(status, StatusCode::OK, "the IdP's groups reach the Cedar policy: {outcome}");
    assert_eq!(outcome["request"]["state"], "approved", "engineers read orders at once: {outcome}");

    let (status, refused) = broker.exchange(token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a session cannot extend itself: {refused}");
    assert!(str_of(&refused).contains("cannot be exchanged"), "the refusal says why: {refused}");
}

fn str_of(body: &Value) -> String {
    format!("{} {}", body["code"].as_str().unwrap_or(""), body["message"].as_str().unwrap_or(""))
}

#[tokio::test]
async fn login_exchange_refuses_tampered_expired_untrusted_and_misaddressed_tokens() {
    let key = IdpKey::new("k1");
    let idp = Idp::start(&[&key]).await;
    let impostor_key = IdpKey::new("k1");
    let impostor = Idp::start(&[&impostor_key]).await;
    let broker =
        LoginBroker::start(TrustedIssuer::from_login(&login_settings(&idp.issuer)).expect("login"), None).await;

    let genuine = idp.token(&key, "alice@acme.example", &["engineers"], CLIENT_ID, 300);
    let tampered = {
        let parts: Vec<&str> = genuine.split('.').collect();
        let mut claims = claims_of(&genuine);
        claims["groups"] = json!(["engineers", "sre"]);
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("{}.{payload}.{}", parts[0], parts[2])
    };
    let cases = [
        ("tampered", tampered, "signature does not verify"),
        ("expired", idp.token(&key, "alice@acme.example", &[], CLIENT_ID, -3600), "has expired"),
        (
            "untrusted issuer",
            impostor.token(&impostor_key, "alice@acme.example", &[], CLIENT_ID, 300),
            "issuer is not trusted",
        ),
        ("wrong audience", idp.token(&key, "alice@acme.example", &[], "another-app", 300), "another audience"),
        ("not a JWT", "hello".to_owned(), "malformed"),
    ];
    for (what, token, expected) in cases {
        let (status, body) = broker.exchange(&token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: refused as unauthenticated: {body}");
        assert_eq!(body["code"], "unauthenticated", "{what}: the API's error shape: {body}");
        assert!(str_of(&body).contains(expected), "{what}: the message says {expected:?}: {body}");
    }

    let (status, _, body) = broker
        .exchange_form(&[
            ("grant_type", "authorization_code"),
            ("subject_token", &genuine),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:id_token"),
        ])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "another grant type is not a token exchange: {body}");
    assert!(str_of(&body).contains("grant_type must be"), "the message names the grant type: {body}");
    let (status, _, body) = broker
        .exchange_form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
            ("subject_token", &genuine),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:saml2"),
        ])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "only JWT subject tokens: {body}");
    let (status, _, body) = broker.exchange_form(&[("subject_token", &genuine)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a form missing fields is refused: {body}");
    assert_eq!(body["code"], "invalid_request", "as invalid_request: {body}");
}

/// The login issuer with keys fetched again on every unknown key id.
fn eager_login_issuer(issuer: &str) -> TrustedIssuer {
    let mut trusted = TrustedIssuer::from_login(&login_settings(issuer)).expect("login");
    trusted.keys = IssuerKeys::Discovered(Arc::new(
        DiscoveredKeys::new(issuer).expect("discovery").with_cooldown(StdDuration::ZERO),
    ));
    trusted
}

#[tokio::test]
async fn login_keys_follow_a_rotation_at_the_idp_without_a_restart() {
    let old = IdpKey::new("2026-01");
    let new = IdpKey::new("2026-02");
    let idp = Idp::start(&[&old]).await;
    let broker = LoginBroker::start(eager_login_issuer(&idp.issuer), None).await;

    let before = idp.token(&old, "alice@acme.example", &["engineers"], CLIENT_ID, 300);
    broker.session(&before).await;

    idp.publish(&[&new]);
    let after = idp.token(&new, "alice@acme.example", &["engineers"], CLIENT_ID, 300);
    broker.session(&after).await;

    let (status, body) = broker.exchange(&before).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a key the IdP retired no longer verifies: {body}");
}

#[tokio::test]
async fn login_unknown_key_ids_fetch_the_jwks_at_most_once_per_cooldown() {
    assert!(REFETCH_COOLDOWN >= StdDuration::from_secs(10), "the cooldown is long enough to matter");
    let key = IdpKey::new("real");
    let idp = Idp::start(&[&key]).await;
    let broker =
        LoginBroker::start(TrustedIssuer::from_login(&login_settings(&idp.issuer)).expect("login"), None).await;

    broker.session(&idp.token(&key, "alice@acme.example", &[], CLIENT_ID, 300)).await;
    let fetched = idp.fetches();
    assert_eq!(fetched, 1, "the first token fetched the keys once");
    for n in 0..5 {
        let stranger = IdpKey::new(&format!("unknown-{n}"));
        let (status, _) = broker.exchange(&idp.token(&stranger, "alice@acme.example", &[], CLIENT_ID, 300)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "a token signed by an unknown key is refused");
    }
    assert_eq!(idp.fetches(), fetched, "unknown key ids within the cooldown do not hammer the IdP");
}

#[tokio::test]
async fn login_machine_tokens_become_ci_principals_under_the_same_policy() {
    let person_key = IdpKey::new("people");
    let people = Idp::start(&[&person_key]).await;
    let ci_key = IdpKey::new("ci");
    let ci = Idp::start(&[&ci_key]).await;
    let machine = TrustedIssuer::from_settings(
        &IssuerSettings {
            issuer: ci.issuer.clone(),
            audience: "hourglass".into(),
            jwks_file: None,
            kind: IssuerKind::Machine,
            id_claim: "sub".into(),
            groups_claim: String::new(),
            groups: vec!["ci".into()],
            require: [("repository_owner".to_owned(), ClaimValues::One("acme".into()))].into(),
            groups_from: Vec::new(),
            attributes: vec!["repository".into()],
            namespace: None,
        },
        std::path::Path::new("."),
    )
    .expect("a machine issuer");
    let broker =
        LoginBroker::start(TrustedIssuer::from_login(&login_settings(&people.issuer)).expect("login"), Some(machine))
            .await;

    let now = SystemClock.now().unix_seconds();
    let pipeline = ci_key.sign(&json!({
        "iss": ci.issuer, "aud": "hourglass", "sub": "repo:acme/orders:ref:refs/heads/main",
        "repository_owner": "acme", "repository": "acme/orders",
        "groups": ["engineers"], "iat": now, "exp": now + 120,
    }));
    // Another organisation's pipeline, signed by the same issuer: refused.
    let fork = ci_key.sign(&json!({
        "iss": ci.issuer, "aud": "hourglass", "sub": "repo:evil/orders:ref:refs/heads/main",
        "repository_owner": "evil", "repository": "evil/orders", "iat": now, "exp": now + 120,
    }));
    let (status, refused) = broker.exchange(&fork).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "another owner's token is refused: {refused}");
    assert!(refused.to_string().contains("`repository_owner` claim"), "the refusal names the claim: {refused}");
    let session = broker.session(&pipeline).await;
    let expires_in = session["expires_in"].as_u64().expect("expires_in");
    assert!(expires_in <= 120, "a machine's session ends with its own token, not after {expires_in}s");

    let token = session["access_token"].as_str().expect("an access token");
    let (status, me) = broker.call(Method::GET, "/v1/whoami", token, None).await;
    assert_eq!(status, StatusCode::OK, "the machine session works: {me}");
    assert_eq!(
        me["principal"]["id"], "127.0.0.1:repo:acme/orders:ref:refs/heads/main",
        "the sub names the pipeline, in its issuer's namespace (by default its host): {me}"
    );
    assert_eq!(me["principal"]["attributes"], json!({ "repository": "acme/orders" }), "policies see its repository");
    assert_eq!(me["principal"]["groups"], json!(["ci"]), "static groups only (no groups claim configured): {me}");
    let (status, refused) = broker.call(Method::POST, "/v1/requests", token, Some(read_orders())).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the demo policy lets no `ci` principal request: {refused}");
}
