//! The broker's HTTP API, tested in-process: every call goes through
//! `hourglass_broker::http::router(broker)` with `oneshot`, no socket. Time
//! moves only when a test advances the `ManualClock`, and expiry runs only
//! when a test calls `run_due_work`, so nothing here sleeps or races a clock.
//!
//! Test names start with their topic, so `cargo test -p hourglass-broker
//! --test api renew` runs the renewal tests (topics: auto, credential,
//! approval, inbox, visibility, events, break_glass, renew, revoke, expiry,
//! bad_input, auth, audit, policy_reload, meta; `login` is in api/login.rs,
//! `authorization` (the matrix of every operation and principal) in
//! api/authorization.rs, `limits` in api/limits.rs, `fuzz` (arbitrary bodies on every
//! operation that takes one) in api/fuzz.rs).
//!
//! The demo policy in `demo/policy` is the policy under test: alice is an
//! engineer, dave an on-call engineer, bob and erin SRE, carol security.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use hourglass_broker::auth::{Authenticator, Sessions};
use hourglass_broker::clock::{Clock, ManualClock, SystemClock};
use hourglass_broker::dev::{self, DevIssuer};
use hourglass_broker::keys::{Ed25519Key, KeyPurpose, KeySet, RotationPolicy, StoreKey};
use hourglass_broker::provider::Providers;
use hourglass_broker::provider::token::TokenProvider;
use hourglass_broker::settings::LimitSettings;
use hourglass_broker::store::Store;
use hourglass_broker::{Broker, BrokerParts, Reload};
use hourglass_core::api::AuthConfig;
use hourglass_core::audit::{AuditAction, AuditEvent, AuditResult, StoredLink, verify_chain};
use hourglass_core::{Duration, Timestamp};
use hourglass_policy::Policy;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tempfile::TempDir;
use tower::ServiceExt;

#[path = "api/authorization.rs"]
mod authorization;
#[path = "api/fuzz.rs"]
mod fuzz;
#[path = "api/limits.rs"]
mod limits;
#[path = "api/login.rs"]
mod login;

/// The broker's public URL: the `iss` of the grant tokens it signs.
const BROKER_URL: &str = "http://hourglass.test";
const ORDERS_AUDIENCE: &str = "https://orders.acme.example";
/// How long an event-stream read waits before the test calls it missing.
/// Events are published before the call that caused them answers, so a
/// healthy stream never comes near this.
const EVENT_WAIT: StdDuration = StdDuration::from_secs(5);

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// Keys rotate monthly, as a broker's do by default.
fn rotation() -> RotationPolicy {
    RotationPolicy {
        period: StdDuration::from_secs(30 * 24 * 3600),
        publish_ahead: StdDuration::from_secs(24 * 3600),
        overlap: StdDuration::from_secs(24 * 3600),
    }
}

/// One broker with its own temporary store, policy directory, keys and
/// clock, and a dev-issuer token for each demo user.
struct Harness {
    broker: Arc<Broker>,
    app: Router,
    clock: Arc<ManualClock>,
    /// Bearer tokens by short name (`alice`).
    tokens: HashMap<String, String>,
    policy_dir: PathBuf,
    data_dir: PathBuf,
    db_path: PathBuf,
    dev_issuer: String,
    _temp: TempDir,
}

impl Harness {
    async fn new() -> Harness {
        Harness::with_limits(LimitSettings::default()).await
    }

    /// A harness whose broker enforces `limits` (the others: the defaults).
    async fn with_limits(limits: LimitSettings) -> Harness {
        let temp = tempfile::tempdir().expect("a temporary directory");
        let data_dir = temp.path().join("data");
        let policy_dir = temp.path().join("policy");
        dev::materialize_policy(&policy_dir).expect("the demo policy is written");
        let policy = Policy::load_dir(&policy_dir).expect("the demo policy loads");
        let db_path = data_dir.join("hourglass.db");
        let store = Store::open_sqlite(&db_path).await.expect("the store opens");
        // Keys as a broker keeps them: in the store, sealed with its store key.
        let store_key = Arc::new(StoreKey::read_or_create(&data_dir.join("keys/store.key")).expect("a store key"));
        let keys = async |purpose| {
            let now = SystemClock.now();
            let set = KeySet::open(store.clone(), Arc::clone(&store_key), purpose, rotation(), None, now).await;
            Arc::new(set.expect("a key set"))
        };
        let token_keys = keys(KeyPurpose::GrantToken).await;
        let session_keys = keys(KeyPurpose::Session).await;
        let dev_issuer = format!("{BROKER_URL}/dev");
        let issuer = DevIssuer::load_or_create(&data_dir, dev_issuer.clone()).expect("a dev issuer");
        // Whole seconds, so that token `exp` (seconds) equals a deadline exactly.
        // Near the real time, because identity tokens are checked against it.
        let start = Timestamp::from_unix_millis(SystemClock.now().unix_seconds() * 1000);
        let clock = Arc::new(ManualClock::new(start));
        let broker = Broker::new(BrokerParts {
            store,
            policy,
            policy_dir: Some(policy_dir.clone()),
            providers: Providers::default()
                .with(Arc::new(TokenProvider::new(Arc::clone(&token_keys), BROKER_URL.into()))),
            authenticator: Authenticator::default()
                .trust(issuer.trusted())
                .with_sessions(Sessions::new(session_keys, BROKER_URL.into(), Duration::from_hours(8)))
                .with_login(AuthConfig {
                    issuer: dev_issuer.clone(),
                    client_id: "hourglass-cli".into(),
                    scopes: vec!["openid".into()],
                    dev: true,
                }),
            token_keys,
            clock: Arc::clone(&clock) as Arc<dyn Clock>,
            provider_timeout: StdDuration::from_secs(5),
            limits,
        })
        .expect("the broker assembles with the demo policy");
        broker.record_start().await.expect("the start is recorded");
        // Events reach subscribers through the store, as in a running broker.
        let cursor = broker.event_cursor().await.expect("the event stream's position");
        tokio::spawn(Arc::clone(&broker).follow_events(cursor));
        let tokens = dev::users()
            .expect("demo users load")
            .into_iter()
            .map(|user| {
                let token = issuer.mint(&user, start).expect("a dev token");
                (user.short_name().to_owned(), token)
            })
            .collect();
        let app = hourglass_broker::http::router(Arc::clone(&broker));
        Harness { broker, app, clock, tokens, policy_dir, data_dir, db_path, dev_issuer, _temp: temp }
    }

    fn now(&self) -> Timestamp {
        self.broker.now()
    }

    fn advance(&self, duration: Duration) {
        self.clock.advance(duration);
    }

    /// Runs the expiry scheduler's work once, as it would at this instant.
    async fn run_due_work(&self) {
        self.broker.run_due_work().await.expect("due work runs");
    }

    fn token(&self, user: &str) -> &str {
        self.tokens.get(user).unwrap_or_else(|| panic!("no demo user {user}"))
    }

    fn builder(&self, method: Method, user: Option<&str>, path: &str) -> axum::http::request::Builder {
        let builder = Request::builder().method(method).uri(path);
        match user {
            Some(user) => builder.header(header::AUTHORIZATION, format!("Bearer {}", self.token(user))),
            None => builder,
        }
    }

    /// Sends one request through the router; the body as JSON (or, when it
    /// is not JSON, as a JSON string of its text).
    async fn send(&self, request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
        let response = self.app.clone().oneshot(request).await.expect("the router answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.expect("the body is read").to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, headers, body)
    }

    async fn get(&self, user: &str, path: &str) -> (StatusCode, Value) {
        let request = self.builder(Method::GET, Some(user), path).body(Body::empty()).expect("a request");
        let (status, _, body) = self.send(request).await;
        (status, body)
    }

    async fn post(&self, user: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.post_raw(user, path, body.to_string()).await
    }

    async fn post_raw(&self, user: &str, path: &str, body: impl Into<Body>) -> (StatusCode, Value) {
        let request = self
            .builder(Method::POST, Some(user), path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.into())
            .expect("a request");
        let (status, _, body) = self.send(request).await;
        (status, body)
    }

    /// `GET` that must succeed.
    async fn get_ok(&self, user: &str, path: &str) -> Value {
        let (status, body) = self.get(user, path).await;
        assert_eq!(status, StatusCode::OK, "GET {path} as {user} should succeed: {body}");
        body
    }

    /// Files a request that must be accepted; returns the `RequestOutcome`.
    async fn file(&self, user: &str, body: Value) -> Value {
        let (status, outcome) = self.post(user, "/v1/requests", body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{user} filing {body} should be accepted: {outcome}");
        outcome
    }

    async fn decide(&self, user: &str, request_id: &str, verdict: &str) -> (StatusCode, Value) {
        self.post(user, &format!("/v1/requests/{request_id}/{verdict}"), json!({})).await
    }

    /// A decision that must be accepted; returns the `RequestOutcome`.
    async fn decide_ok(&self, user: &str, request_id: &str, verdict: &str) -> Value {
        let (status, outcome) = self.decide(user, request_id, verdict).await;
        assert_eq!(status, StatusCode::OK, "{user} should be able to {verdict} {request_id}: {outcome}");
        outcome
    }

    async fn request(&self, user: &str, id: &str) -> Value {
        self.get_ok(user, &format!("/v1/requests/{id}")).await
    }

    async fn grant(&self, user: &str, id: &str) -> Value {
        self.get_ok(user, &format!("/v1/grants/{id}")).await
    }

    async fn renew(&self, user: &str, grant_id: &str, duration: &str) -> (StatusCode, Value) {
        self.post(user, &format!("/v1/grants/{grant_id}/renew"), json!({ "duration": duration })).await
    }

    async fn revoke(&self, user: &str, grant_id: &str) -> (StatusCode, Value) {
        self.post(user, &format!("/v1/grants/{grant_id}/revoke"), json!({})).await
    }

    /// The grant token from the credential endpoint.
    async fn grant_token(&self, user: &str, grant_id: &str) -> String {
        let credential = self.get_ok(user, &format!("/v1/grants/{grant_id}/credential")).await;
        credential["env"]
            .as_array()
            .and_then(|vars| vars.iter().find(|var| var["name"].as_str().is_some_and(|n| n.ends_with("_TOKEN"))))
            .and_then(|var| var["value"].as_str())
            .unwrap_or_else(|| panic!("the credential carries a *_TOKEN variable: {credential}"))
            .to_owned()
    }

    /// RFC 7662 introspection of a grant token (no bearer token needed).
    async fn introspect(&self, token: &str) -> Value {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/v1/introspect")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={token}")))
            .expect("a request");
        let (status, _, body) = self.send(request).await;
        assert_eq!(status, StatusCode::OK, "introspection always answers 200: {body}");
        body
    }

    /// Everything these users can list about requests and grants, without
    /// the server's clock: what "nothing changed" is checked against.
    async fn snapshot(&self, users: &[&str]) -> Value {
        let mut all = serde_json::Map::new();
        for user in users {
            let mut requests = self.get_ok(user, "/v1/requests").await;
            let mut grants = self.get_ok(user, "/v1/grants?ended=true").await;
            for list in [&mut requests, &mut grants] {
                if let Some(fields) = list.as_object_mut() {
                    fields.remove("server_time");
                }
            }
            all.insert((*user).to_owned(), json!({ "requests": requests, "grants": grants }));
        }
        Value::Object(all)
    }

    /// Opens `GET /v1/events` as `user`.
    async fn subscribe(&self, user: &str) -> EventStream {
        self.subscribe_after(user, None).await
    }

    /// Opens the event stream as a client reconnecting after the event
    /// numbered `last_event_id` (its `Last-Event-ID`), or afresh.
    async fn subscribe_after(&self, user: &str, last_event_id: Option<&str>) -> EventStream {
        let mut builder = self.builder(Method::GET, Some(user), "/v1/events");
        if let Some(id) = last_event_id {
            builder = builder.header("last-event-id", id);
        }
        let request = builder.body(Body::empty()).expect("a request");
        let response = self.app.clone().oneshot(request).await.expect("the router answers");
        assert_eq!(response.status(), StatusCode::OK, "{user} may open the event stream");
        let content_type = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        assert_eq!(content_type, Some("text/event-stream"), "the event stream is server-sent events");
        EventStream { who: user.to_owned(), body: response.into_body(), buffer: String::new(), last_id: None }
    }
}

/// A live `/v1/events` response, read frame by frame.
struct EventStream {
    who: String,
    body: Body,
    buffer: String,
    /// The `id:` of the last event read that had one.
    last_id: Option<String>,
}

impl EventStream {
    /// The next event as `(event name, data)`, or `None` if none came in time.
    async fn next_within(&mut self, wait: StdDuration) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut kind = None;
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        kind = Some(value.trim().to_owned());
                    } else if let Some(value) = line.strip_prefix("id:") {
                        self.last_id = Some(value.trim().to_owned());
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push(value.strip_prefix(' ').unwrap_or(value));
                    }
                }
                // A block without an event name is a keep-alive comment.
                if let Some(kind) = kind {
                    let data = serde_json::from_str(&data.join("\n"))
                        .unwrap_or_else(|e| panic!("{kind} data for {} is JSON: {e}", self.who));
                    return Some((kind, data));
                }
                continue;
            }
            let frame = tokio::time::timeout(wait, self.body.frame()).await.ok()??;
            let frame = frame.unwrap_or_else(|e| panic!("{}'s event stream failed: {e}", self.who));
            if let Ok(bytes) = frame.into_data() {
                self.buffer.push_str(std::str::from_utf8(&bytes).expect("events are UTF-8"));
            }
        }
    }

    async fn next(&mut self) -> (String, Value) {
        match self.next_within(EVENT_WAIT).await {
            Some(event) => event,
            None => panic!("{} received no event within {EVENT_WAIT:?}", self.who),
        }
    }

    /// The next event must be `kind`; returns its data.
    async fn expect(&mut self, kind: &str, why: &str) -> Value {
        let (got, data) = self.next().await;
        assert_eq!(got, kind, "{}: {why}; got {got}: {data}", self.who);
        assert_eq!(data["kind"], kind, "the data's kind matches the SSE event name");
        data
    }
}

fn ask(resource: &str, role: &str, duration: &str, reason: &str) -> Value {
    json!({ "resource": resource, "role": role, "duration": duration, "reason": reason })
}

fn read_orders(duration: &str) -> Value {
    ask("orders-api", "read", duration, "investigating order 1234")
}

fn write_orders(duration: &str) -> Value {
    ask("orders-api", "write", duration, "fix order 1234 stuck in checkout")
}

fn admin_payments(duration: &str) -> Value {
    json!({
        "resource": "payments-api", "role": "admin", "duration": duration,
        "reason": "refund batch failed", "ticket": "INC-4711",
    })
}

fn str_of<'a>(value: &'a Value, what: &str) -> &'a str {
    value.as_str().unwrap_or_else(|| panic!("{what} is a string, got {value}"))
}

fn at(value: &Value) -> Timestamp {
    Timestamp::parse(str_of(value, "a timestamp")).unwrap_or_else(|e| panic!("{e}"))
}

fn request_id(outcome: &Value) -> String {
    str_of(&outcome["request"]["id"], "request.id").to_owned()
}

fn grant_id(outcome: &Value) -> String {
    str_of(&outcome["grant"]["id"], "grant.id").to_owned()
}

/// Asserts a refusal: its status, its `code`, and a message naming `names`.
#[track_caller]
fn assert_refused(got: &(StatusCode, Value), status: StatusCode, code: &str, names: &str, why: &str) {
    let (got_status, body) = got;
    assert_eq!(*got_status, status, "{why}: status; body {body}");
    assert_eq!(body["code"], code, "{why}: error code; body {body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(names), "{why}: the message should name {names:?}: {message:?}");
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("a list, got {list}"))
        .iter()
        .map(|item| str_of(&item["id"], "id").to_owned())
        .collect()
}

/// alice's orders-api/write for `duration`, approved by bob: the grant.
async fn approved_write(h: &Harness, duration: &str) -> Value {
    let filed = h.file("alice", write_orders(duration)).await;
    let outcome = h.decide_ok("bob", &request_id(&filed), "approve").await;
    assert_eq!(outcome["grant"]["state"], "active", "bob's approval issues the grant: {outcome}");
    outcome["grant"].clone()
}

// ---------------------------------------------------------------------------
// Auto-approval and the credential
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Approvals
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Event stream
// ---------------------------------------------------------------------------

#[tokio::test]
async fn events_reach_requester_and_every_approver() {
    let h = Harness::new().await;
    let mut bob = h.subscribe("bob").await;
    let mut erin = h.subscribe("erin").await;
    let mut alice = h.subscribe("alice").await;
    let mut dave = h.subscribe("dave").await;
    for stream in [&mut bob, &mut erin, &mut alice, &mut dave] {
        let hello = stream.expect("hello", "every stream starts with hello").await;
        assert_eq!(at(&hello["at"]), h.now(), "hello carries the broker's clock");
    }

    let id = request_id(&h.file("alice", write_orders("30m")).await);
    for stream in [&mut bob, &mut erin] {
        let filed = stream.expect("request.filed", "approvers hear of a request they may decide").await;
        assert_eq!(filed["request"]["id"], id.as_str(), "about alice's request");
    }
    alice.expect("request.filed", "the requester hears of her own request").await;

    let grant_id = grant_id(&h.decide_ok("bob", &id, "approve").await);
    let approved = bob.expect("request.approved", "the approver hears of the approval").await;
    assert_eq!(approved["request"]["id"], id.as_str(), "bob's event is about alice's request");
    let approved = erin.expect("request.approved", "other approvers are told, so it leaves their list").await;
    assert_eq!(approved["request"]["decisions"][0]["approver"], "bob@acme.example", "erin learns bob decided");
    alice.expect("request.approved", "the requester hears of the approval").await;
    let issued = alice.expect("grant.issued", "the requester hears her grant is ready").await;
    assert_eq!(issued["grant"]["id"], grant_id.as_str(), "about her new grant");

    // dave may not decide orders-api/write: the next event he sees must be
    // about his own request, proving nothing about alice's reached him.
    let own = request_id(&h.file("dave", read_orders("10m")).await);
    let (kind, data) = dave.next().await;
    assert_eq!(
        (kind.as_str(), data["request"]["id"].as_str()),
        ("request.approved", Some(own.as_str())),
        "dave hears only of his own request: {data}"
    );
}

#[tokio::test]
async fn events_a_stream_reopened_with_last_event_id_gets_what_it_missed_once() {
    let h = Harness::new().await;
    let mut bob = h.subscribe("bob").await;
    bob.expect("hello", "first frame").await;
    let first = request_id(&h.file("alice", write_orders("30m")).await);
    bob.expect("request.filed", "bob may decide alice's request").await;
    let seen = bob.last_id.clone().expect("events carry their number as the SSE id");
    drop(bob);

    // While bob's stream is down (his laptop asleep, his replica gone):
    let second = request_id(&h.file("dave", write_orders("30m")).await);
    let (status, _) = h.post("alice", &format!("/v1/requests/{first}/cancel"), json!({})).await;
    assert_eq!(status, StatusCode::OK);

    let mut bob = h.subscribe_after("bob", Some(&seen)).await;
    bob.expect("hello", "first frame").await;
    let missed = bob.expect("request.filed", "what he missed comes first, in order").await;
    assert_eq!(missed["request"]["id"], second.as_str());
    let after_second = bob.last_id.clone().expect("an id");
    let cancelled = bob.expect("request.cancelled", "then the cancellation").await;
    assert_eq!(cancelled["request"]["id"], first.as_str());
    assert!(
        after_second.parse::<u64>().unwrap() > seen.parse::<u64>().unwrap(),
        "ids increase: {seen} then {after_second}"
    );
    // Then the live stream, with nothing sent twice.
    let third = request_id(&h.file("erin", write_orders("10m")).await);
    let (kind, data) = bob.next().await;
    assert_eq!(
        (kind.as_str(), data["request"]["id"].as_str()),
        ("request.filed", Some(third.as_str())),
        "the next event is the new one: nothing of what he missed is sent twice"
    );

    // A client further behind than what the broker keeps is told to resync.
    h.broker.store().prune(h.now().plus_millis(3_600_000), StdDuration::from_secs(3600)).await.expect("pruned");
    let mut late = h.subscribe_after("bob", Some(&seen)).await;
    late.expect("hello", "first frame").await;
    late.expect("resync", "the events after its id are gone: reload the lists").await;
}

// ---------------------------------------------------------------------------
// Break-glass
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Renewals
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Revocation
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Expiry
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Bad input: a clear 4xx and nothing changed
// ---------------------------------------------------------------------------

/// Whose view of requests and grants "nothing changed" compares.
const WATCHED: &[&str] = &["alice", "bob", "dave"];

/// alice with a pending write and a live read, so that "nothing changed"
/// compares something; the snapshot of [`WATCHED`].
async fn with_some_state(h: &Harness) -> Value {
    h.file("alice", write_orders("30m")).await;
    h.file("alice", read_orders("10m")).await;
    h.snapshot(WATCHED).await
}

#[tokio::test]
async fn bad_input_durations_are_refused() {
    let h = Harness::new().await;
    let before = with_some_state(&h).await;
    let staging = |duration: &str| json!({"resource": "staging-api", "role": "deploy", "duration": duration});
    let cases = [
        (staging("ten minutes"), StatusCode::BAD_REQUEST, "invalid_duration", "ten minutes", "words are no duration"),
        (staging("30"), StatusCode::BAD_REQUEST, "invalid_duration", "unit", "a bare number has no unit"),
        (staging(""), StatusCode::BAD_REQUEST, "invalid_duration", "empty", "an empty duration"),
        (staging("0s"), StatusCode::BAD_REQUEST, "duration_out_of_bounds", "0s", "zero is too short"),
        (staging("1s"), StatusCode::BAD_REQUEST, "duration_out_of_bounds", "5s", "below min_duration"),
        (staging("9h"), StatusCode::BAD_REQUEST, "duration_out_of_bounds", "8h", "above deploy's max_duration"),
        (read_orders("2h"), StatusCode::BAD_REQUEST, "duration_out_of_bounds", "1h", "above read's max_duration"),
    ];
    for (body, status, code, names, why) in cases {
        let refused = h.post("alice", "/v1/requests", body).await;
        assert_refused(&refused, status, code, names, why);
    }
    assert_eq!(h.snapshot(WATCHED).await, before, "refused durations change nothing");
}

#[tokio::test]
async fn bad_input_reason_and_ticket_are_required() {
    let h = Harness::new().await;
    let before = with_some_state(&h).await;
    let mut no_ticket = admin_payments("30m");
    no_ticket.as_object_mut().map(|o| o.remove("ticket"));
    let mut blank_ticket = admin_payments("30m");
    blank_ticket["ticket"] = json!("   ");
    let cases = [
        (ask("orders-api", "write", "10m", ""), "reason_required", "reason", "an empty reason"),
        (ask("orders-api", "write", "10m", "  \n "), "reason_required", "reason", "a blank reason"),
        (json!({"resource": "orders-api", "role": "write", "duration": "10m"}), "reason_required", "reason", "none"),
        (no_ticket, "ticket_required", "ticket", "payments-api/admin needs a ticket"),
        (blank_ticket, "ticket_required", "ticket", "a blank ticket is no ticket"),
        (ask("orders-api", "write", "10m", "bell\u{7}"), "invalid_request", "control", "control characters"),
        (ask("orders-api", "write", "10m", &"x".repeat(1001)), "invalid_request", "1000", "an overlong reason"),
    ];
    for (body, code, names, why) in cases {
        let refused = h.post("dave", "/v1/requests", body).await;
        assert_refused(&refused, StatusCode::BAD_REQUEST, code, names, why);
    }
    let pending = ids(&before["bob"]["requests"]["awaiting_me"]);
    assert_eq!(pending.len(), 1, "alice's write waits for bob");
    let path = format!("/v1/requests/{}/approve", pending[0]);
    let refused = h.post("bob", &path, json!({"comment": "ok\u{1b}[2J"})).await;
    assert_refused(&refused, StatusCode::BAD_REQUEST, "invalid_request", "comment", "a comment with escapes");
    assert_eq!(h.snapshot(WATCHED).await, before, "refused requests change nothing");
}

#[tokio::test]
async fn bad_input_unknown_resource_and_role_are_404() {
    let h = Harness::new().await;
    let before = with_some_state(&h).await;
    let refused = h.post("alice", "/v1/requests", ask("billing-api", "read", "10m", "why")).await;
    assert_refused(&refused, StatusCode::NOT_FOUND, "unknown_resource", "billing-api", "no policy, no access");
    let refused = h.post("alice", "/v1/requests", ask("orders-api", "delete", "10m", "why")).await;
    assert_refused(&refused, StatusCode::NOT_FOUND, "unknown_role", "delete", "unknown role, no access");
    assert_eq!(h.snapshot(WATCHED).await, before, "unknown targets change nothing");
}

#[tokio::test]
async fn bad_input_ids_are_named_in_the_error() {
    let h = Harness::new().await;
    let before = with_some_state(&h).await;
    let grant = ids(&before["alice"]["grants"]["grants"])[0].clone();
    let request = ids(&before["alice"]["requests"]["mine"])[0].clone();
    let missing_request = "req-0000000000";
    let missing_grant = "grt-0000000000";

    let refused = h.get("alice", &format!("/v1/requests/{missing_request}")).await;
    assert_refused(&refused, StatusCode::NOT_FOUND, "not_found", missing_request, "an unknown request");
    let refused = h.decide("bob", missing_request, "approve").await;
    assert_refused(&refused, StatusCode::NOT_FOUND, "not_found", missing_request, "approving an unknown request");
    let refused = h.revoke("alice", missing_grant).await;
    assert_refused(&refused, StatusCode::NOT_FOUND, "not_found", missing_grant, "revoking an unknown grant");
    let refused = h.renew("alice", missing_grant, "10m").await;
    assert_refused(&refused, StatusCode::NOT_FOUND, "not_found", missing_grant, "renewing an unknown grant");
    let refused = h.decide("bob", &grant, "approve").await;
    assert_refused(&refused, StatusCode::BAD_REQUEST, "invalid_request", &grant, "a grant id is not a request id");
    let refused = h.get("alice", &format!("/v1/grants/{request}")).await;
    assert_refused(&refused, StatusCode::BAD_REQUEST, "invalid_request", &request, "a request id is not a grant id");
    let refused = h.get("alice", "/v1/requests/garbage").await;
    assert_refused(&refused, StatusCode::BAD_REQUEST, "invalid_request", "garbage", "not an id at all");
    assert_eq!(h.snapshot(WATCHED).await, before, "bad ids change nothing");
}

#[tokio::test]
async fn bad_input_malformed_bodies_are_refused() {
    let h = Harness::new().await;
    let before = with_some_state(&h).await;
    let mut typo = ask("staging-api", "deploy", "10m", "why");
    typo["duraton"] = json!("1h");
    let refused = h.post("alice", "/v1/requests", typo).await;
    assert_refused(&refused, StatusCode::BAD_REQUEST, "invalid_request", "duraton", "an unknown field is refused");
    let refused = h.post_raw("alice", "/v1/requests", r#"{"resource": "staging-api", "role": "#).await;
    assert_refused(&refused, StatusCode::BAD_REQUEST, "invalid_request", "JSON", "malformed JSON");
    let refused = h.post("alice", "/v1/requests", json!({"resource": "staging-api", "role": "deploy"})).await;
    assert_refused(&refused, StatusCode::BAD_REQUEST, "invalid_request", "duration", "a missing field");
    let refused =
        h.post("alice", "/v1/requests", json!({"resource": "staging-api", "role": "deploy", "duration": 30})).await;
    assert_refused(&refused, StatusCode::BAD_REQUEST, "invalid_request", "string", "a number where text belongs");
    let huge = ask("staging-api", "deploy", "10m", &"x".repeat(70 * 1024));
    let refused = h.post("alice", "/v1/requests", huge).await;
    assert_refused(&refused, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "65536", "bodies over 64 KiB");
    let refused = h.get("alice", "/v1/grants?everyone=true").await;
    assert_refused(&refused, StatusCode::BAD_REQUEST, "invalid_request", "everyone", "an unknown query parameter");
    assert_eq!(h.snapshot(WATCHED).await, before, "malformed bodies change nothing");
}

#[tokio::test]
async fn bad_input_duplicate_request_is_409() {
    let h = Harness::new().await;
    let before = with_some_state(&h).await;
    let pending = ids(&before["alice"]["requests"]["awaiting_me"]);
    assert!(pending.is_empty(), "alice decides nothing");
    let write = before["alice"]["requests"]["mine"]
        .as_array()
        .and_then(|list| list.iter().find(|r| r["role"] == "write"))
        .map(|r| str_of(&r["id"], "id").to_owned())
        .expect("alice's pending write");
    let live = ids(&before["alice"]["grants"]["grants"])[0].clone();

    let refused = h.post("alice", "/v1/requests", write_orders("1h")).await;
    assert_refused(&refused, StatusCode::CONFLICT, "duplicate", &write, "the same access is already pending");
    let refused = h.post("alice", "/v1/requests", read_orders("20m")).await;
    assert_refused(&refused, StatusCode::CONFLICT, "duplicate", &live, "the same access is already granted");
    assert_eq!(h.snapshot(WATCHED).await, before, "duplicates change nothing");
}

// ---------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------

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
            "iss": iss, "aud": aud, "sub": "alice@acme.example", "email": "alice@acme.example",
            "groups": ["engineers"], "iat": now - 7200, "exp": exp,
        })
    };
    let sign = |key: &Ed25519Key, claims: Value| {
        jsonwebtoken::encode(&key.header(), &claims, key.encoding()).expect("a signed token")
    };
    let good = sign(&dev_key, claims(&h.dev_issuer, "hourglass", now + 600));
    let cases = [
        ("garbage".to_owned(), "malformed", "a token that is no JWT"),
        (sign(&stranger, claims(&h.dev_issuer, "hourglass", now + 600)), "signature", "signed by an unknown key"),
        (sign(&stranger, claims("https://evil.example", "hourglass", now + 600)), "not trusted", "an unknown issuer"),
        (sign(&dev_key, claims(&h.dev_issuer, "other-app", now + 600)), "audience", "a token for another app"),
        (sign(&dev_key, claims(&h.dev_issuer, "hourglass", now - 3600)), "expired", "an expired token"),
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

// ---------------------------------------------------------------------------
// Audit
// ---------------------------------------------------------------------------

async fn audit_links(h: &Harness) -> Vec<StoredLink> {
    h.broker.store().audit_links(0, 100_000).await.expect("the audit log reads")
}

fn event_of(link: &StoredLink) -> AuditEvent {
    serde_json::from_str(&link.canonical).expect("a stored audit event parses")
}

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

// ---------------------------------------------------------------------------
// Policy hot reload
// ---------------------------------------------------------------------------

fn policy_text(h: &Harness) -> String {
    std::fs::read_to_string(h.policy_dir.join("hourglass.toml")).expect("the policy file reads")
}

fn write_policy(h: &Harness, text: &str) {
    std::fs::write(h.policy_dir.join("hourglass.toml"), text).expect("the policy file writes");
}

/// The 1-based line of the first occurrence of `needle` in `text`.
fn line_of(text: &str, needle: &str) -> usize {
    let offset = text.find(needle).unwrap_or_else(|| panic!("{needle:?} is in the policy"));
    text[..offset].matches('\n').count() + 1
}

#[tokio::test]
async fn policy_reload_refuses_invalid_and_keeps_old() {
    let h = Harness::new().await;
    let digest = h.broker.policy().digest.clone();
    let good = policy_text(&h);
    let bad = good.replacen("max_duration = \"1h\"", "max_duration = \"one hour\"", 1);
    assert_ne!(bad, good, "the edit applies");
    write_policy(&h, &bad);

    let reload = h.broker.reload_policy().await.expect("a reload answers");
    let Reload::Refused { problems } = reload else { panic!("an invalid policy is refused, got {reload:?}") };
    let place = format!("hourglass.toml:{}", line_of(&bad, "one hour"));
    assert!(problems.iter().any(|p| p.contains(&place)), "the problem names {place}: {problems:?}");
    assert_eq!(h.broker.policy().digest, digest, "the last good policy stays in force");

    let refused = h.post("alice", "/v1/requests", read_orders("2h")).await;
    assert_refused(&refused, StatusCode::BAD_REQUEST, "duration_out_of_bounds", "1h", "the old bound still applies");
    let outcome = h.file("alice", read_orders("10m")).await;
    assert_eq!(outcome["grant"]["state"], "active", "requests still work under the old policy");
}

/// A Cedar file nested deeper than a thread's stack can parse used to abort
/// the broker on reload (found by the policy loader's fuzzing, see
/// `hourglass-policy`'s `cedar_limits.rs`). Refused now like any broken
/// policy: named with file and line, the last good policy kept. This test
/// runs on a 2 MiB stack, like the tokio worker that reloads in `hourglassd`.
#[tokio::test]
async fn policy_reload_of_cedar_nested_too_deep_is_refused_not_a_crash() {
    let h = Harness::new().await;
    let digest = h.broker.policy().digest.clone();
    let deep =
        format!("permit (principal, action, resource)\nwhen {{ {}true{} }};\n", "(".repeat(2000), ")".repeat(2000));
    std::fs::write(h.policy_dir.join("deep.cedar"), deep).expect("deep.cedar is written");

    let reload = h.broker.reload_policy().await.expect("a reload answers");
    let Reload::Refused { problems } = reload else { panic!("a too deep policy is refused, got {reload:?}") };
    assert!(problems.iter().any(|p| p.contains("deep.cedar:2:") && p.contains("nest deeper")), "{problems:?}");
    assert_eq!(h.broker.policy().digest, digest, "the last good policy stays in force");
    let outcome = h.file("alice", read_orders("10m")).await;
    assert_eq!(outcome["grant"]["state"], "active", "requests still work under the old policy");
}

#[tokio::test]
async fn policy_reload_applies_valid_change() {
    let h = Harness::new().await;
    let refused = h.post("alice", "/v1/requests", read_orders("2h")).await;
    assert_refused(&refused, StatusCode::BAD_REQUEST, "duration_out_of_bounds", "1h", "2h is over the demo bound");
    let before = policy_text(&h);
    let after = before.replacen(
        "[resources.orders-api.roles.read]\n",
        "[resources.orders-api.roles.read]\nmax_duration = \"2h\"\n",
        1,
    );
    assert_ne!(after, before, "the edit applies");
    write_policy(&h, &after);

    let reload = h.broker.reload_policy().await.expect("a reload answers");
    let Reload::Loaded { digest } = reload else { panic!("a valid change loads, got {reload:?}") };
    assert_eq!(h.broker.policy().digest, digest, "the new policy is in force");
    assert_eq!(h.broker.reload_policy().await.expect("a reload answers"), Reload::Unchanged, "loaded once");

    let outcome = h.file("alice", read_orders("2h")).await;
    // Cedar approves reads at once only up to an hour, so 2h waits for an SRE.
    assert_eq!(outcome["request"]["state"], "pending", "the new bound admits 2h: {outcome}");
    let refused = h.post("dave", "/v1/requests", read_orders("3h")).await;
    assert_refused(&refused, StatusCode::BAD_REQUEST, "duration_out_of_bounds", "2h", "and bounds at 2h");
}

// ---------------------------------------------------------------------------
// Meta
// ---------------------------------------------------------------------------

#[tokio::test]
async fn meta_health_openapi_metrics_not_found() {
    let h = Harness::new().await;
    let anonymous = |path: &str| Request::builder().uri(path).body(Body::empty()).expect("a request");

    let (status, _, health) = h.send(anonymous("/healthz")).await;
    assert_eq!(status, StatusCode::OK, "health needs no token: {health}");
    assert_eq!(health["status"], "ok", "the broker says it is ok");
    assert_eq!(at(&health["server_time"]), h.now(), "health carries the broker's clock");

    let (status, _, ready) = h.send(anonymous("/readyz")).await;
    assert_eq!(status, StatusCode::OK, "ready: the store answers, the lease holds: {ready}");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["replicas"], 1, "one broker on its SQLite store");

    let (status, _, openapi) = h.send(anonymous("/v1/openapi.json")).await;
    assert_eq!(status, StatusCode::OK, "the OpenAPI document is served");
    for path in ["/v1/requests", "/v1/grants/{id}/renew", "/v1/events", "/v1/introspect"] {
        assert!(openapi["paths"].get(path).is_some(), "the OpenAPI document describes {path}");
    }

    h.file("alice", read_orders("10m")).await;
    let (status, _, metrics) = h.send(anonymous("/metrics")).await;
    assert_eq!(status, StatusCode::OK, "metrics are served");
    let metrics = str_of(&metrics, "metrics text");
    assert!(
        metrics.contains("hourglass_requests_total{outcome=\"auto_approved\"} 1"),
        "the auto-approved request is counted:\n{metrics}"
    );

    let (status, _, body) = h
        .send(Request::builder().method(Method::DELETE).uri("/v1/requests").body(Body::empty()).expect("a request"))
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "DELETE is not a method of /v1/requests");
    assert_eq!(body["code"], "method_not_allowed", "405 answers JSON with a code too: {body}");

    for path in ["/v1/nope", "/nope"] {
        let (status, _, body) = h.send(anonymous(path)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path} does not exist");
        assert_eq!(body["code"], "not_found", "unknown paths answer JSON with a code, not plain text: {body}");
    }
}

#[tokio::test]
async fn meta_catalog_hints_what_policy_would_do() {
    let h = Harness::new().await;
    let catalog = h.get_ok("alice", "/v1/resources").await;
    let role = |resource: &str, role: &str| {
        catalog["resources"]
            .as_array()
            .and_then(|list| list.iter().find(|r| r["name"] == resource))
            .and_then(|r| r["roles"].as_array())
            .and_then(|roles| roles.iter().find(|r| r["name"] == role))
            .cloned()
            .unwrap_or_else(|| panic!("the catalog offers {resource}/{role}: {catalog}"))
    };
    let read = role("orders-api", "read");
    assert_eq!((&read["may_request"], &read["auto_approve"]), (&json!(true), &json!(true)), "read is at once");
    assert_eq!(read["max_duration"], "1h", "bounds come from the policy");
    let write = role("orders-api", "write");
    assert_eq!((&write["may_request"], &write["auto_approve"]), (&json!(true), &json!(false)), "write waits");
    let admin = role("payments-api", "admin");
    assert_eq!(admin["ticket_required"], true, "the form must ask for a ticket");
    assert_eq!(admin["may_request"], true, "alice may request it, given the ticket it requires");
}
