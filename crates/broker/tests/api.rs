//! The broker's HTTP API, tested in-process: every call goes through
//! `hourglass_broker::http::router(broker)` with `oneshot`, no socket. Time
//! moves only when a test advances the `ManualClock`, and expiry runs only
//! when a test calls `run_due_work`, so nothing here sleeps or races a clock.
//!
//! Test names start with their topic, one file each under api/, so `cargo
//! test -p hourglass-broker --test api renew` runs the renewal tests
//! (topics: auto, credential, approval, inbox, visibility, events,
//! break_glass, renew, revoke, expiry, bad_input, auth, audit,
//! policy_reload, meta, login, `authorization` (the matrix of every
//! operation and principal), limits, `fuzz` (arbitrary bodies on every
//! operation that takes one)). This file is the harness.
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

#[path = "api/approval.rs"]
mod approval;
#[path = "api/audit.rs"]
mod audit;
#[path = "api/auth.rs"]
mod auth;
#[path = "api/authorization.rs"]
mod authorization;
#[path = "api/bad_input.rs"]
mod bad_input;
#[path = "api/break_glass.rs"]
mod break_glass;
#[path = "api/credential.rs"]
mod credential;
#[path = "api/events.rs"]
mod events;
#[path = "api/expiry.rs"]
mod expiry;
#[path = "api/fuzz.rs"]
mod fuzz;
#[path = "api/limits.rs"]
mod limits;
#[path = "api/login.rs"]
mod login;
#[path = "api/meta.rs"]
mod meta;
#[path = "api/policy_reload.rs"]
mod policy_reload;
#[path = "api/renew.rs"]
mod renew;
#[path = "api/revoke.rs"]
mod revoke;

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
            channels: Default::default(),
            web_login: None,
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
        self.introspect_form(&format!("token={token}")).await
    }

    /// Introspection as a resource server answering to `audience` asks.
    async fn introspect_for(&self, token: &str, audience: &str) -> Value {
        // Audiences are URLs and names: nothing in them a form must escape but these.
        let audience = audience.replace('%', "%25").replace('&', "%26").replace('+', "%2B");
        self.introspect_form(&format!("token={token}&audience={audience}")).await
    }

    async fn introspect_form(&self, form: &str) -> Value {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/v1/introspect")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form.to_owned()))
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

/// Whose view of requests and grants "nothing changed" compares.
const WATCHED: &[&str] = &["alice", "bob", "dave"];

/// alice with a pending write and a live read, so that "nothing changed"
/// compares something; the snapshot of [`WATCHED`].
async fn with_some_state(h: &Harness) -> Value {
    h.file("alice", write_orders("30m")).await;
    h.file("alice", read_orders("10m")).await;
    h.snapshot(WATCHED).await
}

async fn audit_links(h: &Harness) -> Vec<StoredLink> {
    h.broker.store().audit_links(0, 100_000).await.expect("the audit log reads")
}

fn event_of(link: &StoredLink) -> AuditEvent {
    serde_json::from_str(&link.canonical).expect("a stored audit event parses")
}
