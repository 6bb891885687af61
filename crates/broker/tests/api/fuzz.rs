//! Every operation that takes a body, sent bodies nobody meant to send:
//! arbitrary JSON values, valid bodies mutated (a field removed, set to any
//! JSON value, an unknown field added, the text cut short or a byte
//! changed), arbitrary bytes, under any content type, as the owner of the
//! target, an approver, an admin, another engineer or nobody, at the real
//! target or at an id that is malformed or of nothing.
//!
//! Whatever arrives, the broker answers: never a 5xx (nor a panic); a
//! refusal is a `{code, message}` whose code is the one its status means;
//! and a refused call changes no request and no grant (compared row by row
//! in the store).
//!
//! Each operation gets [`CASES`] cases from a fixed seed, so that CI is
//! deterministic; `PROPTEST_RNG_SEED=n` explores other inputs and
//! `PROPTEST_CASES=n` runs more per operation. No regression files are
//! written: a failure found is pinned as a named test.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use hourglass_broker::settings::LimitSettings;
use hourglass_core::api::ApiError;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{Config, RngSeed, TestRunner};
use serde_json::{Map, Value, json};

use super::authorization::{Minter, call, form, stored_state};
use super::{Harness, grant_id, read_orders, request_id, write_orders};

/// Cases per operation.
const CASES: u32 = 64;

/// Each operation its own seed, from the fixed one (or `PROPTEST_RNG_SEED`).
fn config(operation: Operation) -> Config {
    let default = Config::default();
    let offset = OPERATIONS.iter().position(|o| *o == operation).unwrap_or(0) as u64;
    Config {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() { default.cases } else { CASES },
        failure_persistence: None,
        rng_seed: match default.rng_seed {
            RngSeed::Random => RngSeed::Fixed(0x6170_692d_6675_7a7a + offset),
            RngSeed::Fixed(chosen) => RngSeed::Fixed(chosen + offset),
        },
        ..default
    }
}

/// The operations that read a body, each with a valid body to mutate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    FileRequest,
    Approve,
    Deny,
    Cancel,
    Ready,
    Renew,
    Revoke,
    RevokeMatching,
    /// Forms: RFC 8693 exchange and RFC 7662 introspection.
    Exchange,
    Introspect,
}

const OPERATIONS: [Operation; 10] = [
    Operation::FileRequest,
    Operation::Approve,
    Operation::Deny,
    Operation::Cancel,
    Operation::Ready,
    Operation::Renew,
    Operation::Revoke,
    Operation::RevokeMatching,
    Operation::Exchange,
    Operation::Introspect,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Nothing,
    PendingRequest,
    LiveGrant,
}

impl Operation {
    fn path(self) -> &'static str {
        match self {
            Operation::FileRequest => "/v1/requests",
            Operation::Approve => "/v1/requests/{id}/approve",
            Operation::Deny => "/v1/requests/{id}/deny",
            Operation::Cancel => "/v1/requests/{id}/cancel",
            Operation::Ready => "/v1/grants/{id}/ready",
            Operation::Renew => "/v1/grants/{id}/renew",
            Operation::Revoke => "/v1/grants/{id}/revoke",
            Operation::RevokeMatching => "/v1/grants/revoke",
            Operation::Exchange => "/v1/auth/token",
            Operation::Introspect => "/v1/introspect",
        }
    }

    fn target(self) -> Target {
        match self {
            Operation::Approve | Operation::Deny | Operation::Cancel => Target::PendingRequest,
            Operation::Ready | Operation::Renew | Operation::Revoke | Operation::RevokeMatching => Target::LiveGrant,
            Operation::Introspect => Target::LiveGrant,
            Operation::FileRequest | Operation::Exchange => Target::Nothing,
        }
    }

    fn is_form(self) -> bool {
        matches!(self, Operation::Exchange | Operation::Introspect)
    }

    /// A body the operation accepts (`{requester}`, `{token}` are filled in).
    fn valid(self) -> Value {
        match self {
            Operation::FileRequest => json!({
                "resource": "orders-api", "role": "write", "duration": "30m", "reason": "fuzz",
                "ticket": "T-1", "break_glass": false,
                "client_material": {"postgres_scram_verifier": null, "ssh_public_key": null},
            }),
            Operation::Approve | Operation::Deny => json!({"comment": "ok"}),
            Operation::Cancel => json!({}),
            Operation::Ready => json!({"check": "logged in"}),
            Operation::Renew => json!({"duration": "20m", "reason": "more time"}),
            Operation::Revoke => json!({"reason": "done"}),
            Operation::RevokeMatching => {
                json!({"resource": "orders-api", "role": "read", "owner": "{requester}", "reason": "incident"})
            }
            Operation::Exchange => json!({
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "subject_token": "{token}",
                "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
                "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "audience": "hourglass",
            }),
            Operation::Introspect => json!({"token": "{token}", "token_type_hint": "access_token"}),
        }
    }
}

/// Strings that mean something to the broker, or to what is behind it.
const TRICKY: &[&str] = &[
    "",
    " ",
    "orders-api",
    "payments-api",
    "staging-api",
    "nowhere",
    "read",
    "write",
    "deploy",
    "admin",
    "{requester}",
    "{token}",
    "alice@acme.example",
    "1h",
    "0s",
    "1s",
    "4h",
    "366d",
    "367d",
    "99999999999999999999s",
    "-1m",
    "1h30",
    "1.5h",
    "\u{0}",
    "\u{202e}",
    "💥",
    "../../etc/passwd",
    "'; DROP TABLE grants; --",
    "SCRAM-SHA-256$4096:c2FsdA==$a:b",
    "ssh-ed25519 AAAA",
    "urn:ietf:params:oauth:grant-type:token-exchange",
    "urn:ietf:params:oauth:token-type:id_token",
    "urn:ietf:params:oauth:token-type:jwt",
    "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
    "req_00000000000000000000000000",
    "grt_00000000000000000000000000",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(TRICKY).prop_map(str::to_owned),
        2 => any::<String>(),
        1 => "[0-9]{1,25}[smhdx]{0,2}",
        1 => (1usize..70_000).prop_map(|n| "a".repeat(n)),
    ]
}

const FIELDS: &[&str] = &[
    "resource",
    "role",
    "duration",
    "reason",
    "ticket",
    "break_glass",
    "client_material",
    "postgres_scram_verifier",
    "ssh_public_key",
    "comment",
    "check",
    "owner",
    "grant_type",
    "subject_token",
    "subject_token_type",
    "requested_token_type",
    "audience",
    "token",
    "token_type_hint",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![3 => select(FIELDS).prop_map(str::to_owned), 1 => any::<String>()]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((key(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Edit {
    Remove(Index),
    Set(Index, Value),
    Add(String, Value),
}

#[derive(Debug, Clone)]
enum Bytes {
    Cut(Index),
    Change(Index, u8),
}

/// How the body is made.
#[derive(Debug, Clone)]
enum Shape {
    /// The valid body with its fields edited, then its text changed.
    Mutated(Vec<Edit>, Vec<Bytes>),
    /// Any JSON value.
    Json(Value),
    /// Any bytes.
    Raw(Vec<u8>),
}

fn shape() -> impl Strategy<Value = Shape> {
    let edit = prop_oneof![
        any::<Index>().prop_map(Edit::Remove),
        (any::<Index>(), json_value()).prop_map(|(at, value)| Edit::Set(at, value)),
        (any::<Index>(), text()).prop_map(|(at, text)| Edit::Set(at, Value::String(text))),
        (key(), json_value()).prop_map(|(key, value)| Edit::Add(key, value)),
    ];
    let bytes = prop_oneof![
        any::<Index>().prop_map(Bytes::Cut),
        (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Bytes::Change(at, byte)),
    ];
    prop_oneof![
        5 => (proptest::collection::vec(edit, 0..4), proptest::collection::vec(bytes, 0..2))
            .prop_map(|(edits, bytes)| Shape::Mutated(edits, bytes)),
        2 => json_value().prop_map(Shape::Json),
        1 => proptest::collection::vec(any::<u8>(), 0..200).prop_map(Shape::Raw),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Owner,
    /// SRE: approves orders-api.
    Approver,
    /// Security: views and revokes anyone's grants.
    Admin,
    OtherEngineer,
    Anonymous,
}

#[derive(Debug, Clone)]
enum Id {
    Target,
    /// The target's id with something appended.
    Suffixed(String),
    /// Any path segment (percent-encoded).
    Any(String),
}

#[derive(Debug, Clone)]
struct Case {
    shape: Shape,
    who: Who,
    id: Id,
    content_type: Option<&'static str>,
}

fn case(operation: Operation) -> impl Strategy<Value = Case> {
    let who = prop_oneof![
        4 => Just(Who::Owner),
        2 => Just(Who::Approver),
        1 => Just(Who::Admin),
        1 => Just(Who::OtherEngineer),
        1 => Just(Who::Anonymous),
    ];
    let id = prop_oneof![
        6 => Just(Id::Target),
        1 => text().prop_map(Id::Suffixed),
        1 => text().prop_map(Id::Any),
    ];
    let usual = if operation.is_form() { "application/x-www-form-urlencoded" } else { "application/json" };
    let content_type = prop_oneof![
        6 => Just(Some(usual)),
        1 => Just(None),
        1 => select(&["application/json", "application/x-www-form-urlencoded", "text/plain", "multipart/form-data"][..]).prop_map(Some),
    ];
    (shape(), who, id, content_type).prop_map(|(shape, who, id, content_type)| Case { shape, who, id, content_type })
}

/// The body's bytes: JSON, or for forms the same fields as `a=b&…`.
fn body_bytes(operation: Operation, shape: &Shape, fill: &dyn Fn(&str) -> String) -> Vec<u8> {
    let render = |value: &Value| -> Vec<u8> {
        if operation.is_form() {
            let pairs: Vec<(String, String)> = match value {
                Value::Object(map) => {
                    map.iter().map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), fill))).collect()
                }
                other => vec![("token".to_owned(), other.to_string())],
            };
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            form(&pairs).into_bytes()
        } else {
            fill(&value.to_string()).into_bytes()
        }
    };
    match shape {
        Shape::Json(value) => render(value),
        Shape::Raw(bytes) => bytes.clone(),
        Shape::Mutated(edits, changes) => {
            let mut map: Map<String, Value> = match operation.valid() {
                Value::Object(map) => map,
                _ => Map::new(),
            };
            for edit in edits {
                let keys: Vec<String> = map.keys().cloned().collect();
                match edit {
                    Edit::Remove(at) if !keys.is_empty() => {
                        map.remove(&keys[at.index(keys.len())]);
                    }
                    Edit::Set(at, value) if !keys.is_empty() => {
                        map.insert(keys[at.index(keys.len())].clone(), value.clone());
                    }
                    Edit::Add(key, value) => {
                        map.insert(key.clone(), value.clone());
                    }
                    _ => {}
                }
            }
            let mut bytes = render(&Value::Object(map));
            for change in changes {
                match change {
                    Bytes::Cut(at) => bytes.truncate(at.index(bytes.len() + 1)),
                    Bytes::Change(at, byte) if !bytes.is_empty() => {
                        let at = at.index(bytes.len());
                        bytes[at] = *byte;
                    }
                    Bytes::Change(..) => {}
                }
            }
            bytes
        }
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Sets up the target for a fresh requester, sends the case, and checks the
/// answer. `n` numbers the requester, so that cases do not share state.
async fn check(
    h: &Harness,
    minter: &Minter,
    operation: Operation,
    case: &Case,
    n: usize,
    seen: &RefCell<BTreeMap<u16, usize>>,
) -> Result<StatusCode, String> {
    let requester = format!("fuzz{n}@acme.example");
    let requester_token = minter.person(&requester, &["engineers"]);
    let as_requester = |method: Method, path: String, body: Value| {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {requester_token}"))
            .body(if body.is_null() { Body::empty() } else { Body::from(body.to_string()) })
            .expect("a request")
    };
    let mut target_id = String::new();
    let mut grant_token = String::new();
    match operation.target() {
        Target::Nothing => {}
        Target::PendingRequest => {
            let (status, _, outcome) =
                call(h, as_requester(Method::POST, "/v1/requests".into(), write_orders("30m"))).await;
            assert_eq!(status, StatusCode::OK, "the requester files a write: {outcome}");
            target_id = request_id(&outcome);
        }
        Target::LiveGrant => {
            let (status, _, outcome) =
                call(h, as_requester(Method::POST, "/v1/requests".into(), read_orders("10m"))).await;
            assert_eq!(status, StatusCode::OK, "the requester files a read: {outcome}");
            target_id = grant_id(&outcome);
            let path = format!("/v1/grants/{target_id}/credential");
            let (_, _, credential) = call(h, as_requester(Method::GET, path, Value::Null)).await;
            grant_token = credential["env"][0]["value"].as_str().expect("the grant token").to_owned();
        }
    }

    let id = match &case.id {
        Id::Target => target_id.clone(),
        Id::Suffixed(text) => format!("{target_id}{}", percent_encode(text)),
        Id::Any(text) => percent_encode(text),
    };
    let path = operation.path().replace("{id}", &id);
    let token = match case.who {
        Who::Owner => Some(requester_token.clone()),
        Who::Approver => Some(h.token("bob").to_owned()),
        Who::Admin => Some(h.token("carol").to_owned()),
        Who::OtherEngineer => Some(h.token("dave").to_owned()),
        Who::Anonymous => None,
    };
    // The exchange's subject token is the caller's identity; introspection's is the grant's.
    let subject =
        if operation == Operation::Introspect { grant_token.clone() } else { token.clone().unwrap_or_default() };
    let fill = |text: &str| text.replace("{requester}", &requester).replace("{token}", &subject);
    let body = body_bytes(operation, &case.shape, &fill);

    let mut builder = Request::builder().method(Method::POST).uri(&path);
    if let (Some(token), false) = (&token, operation == Operation::Exchange) {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if let Some(content_type) = case.content_type {
        builder = builder.header(header::CONTENT_TYPE, content_type);
    }
    let Ok(request) = builder.body(Body::from(body)) else {
        return Ok(StatusCode::OK); // not a request http can even build (a path it refuses): nothing to send
    };

    let before = stored_state(h);
    let (status, _, answer) = call(h, request).await;
    *seen.borrow_mut().entry(status.as_u16()).or_default() += 1;
    let place = format!("POST {path} as {:?}", case.who);
    if status.is_server_error() {
        return Err(format!("{place}: {status} {answer}"));
    }
    if status == StatusCode::OK {
        return if answer.is_object() {
            Ok(status)
        } else {
            Err(format!("{place}: 200 without a JSON object: {answer}"))
        };
    }
    let error: ApiError = serde_json::from_value(answer.clone())
        .map_err(|error| format!("{place}: a {status} refusal is not {{code, message}} ({error}): {answer}"))?;
    if error.message.trim().is_empty() {
        return Err(format!("{place}: a refusal says why: {answer}"));
    }
    if error.code.http_status() != status.as_u16() {
        return Err(format!("{place}: {status} with code {:?}, which means {}", error.code, error.code.http_status()));
    }
    if stored_state(h).0 != before.0 {
        return Err(format!("{place}: refused ({status} {answer}) yet a request or grant changed"));
    }
    Ok(status)
}

/// Runs `operation`'s property with its own runner and seed.
fn fuzz(operation: Operation) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    // No limit on calls: the clock stands still here, so a bucket would
    // never refill (limits have their own tests).
    let limits = LimitSettings {
        requests_per_second: 1_000_000,
        request_burst: 1_000_000,
        pending_requests: 1_000_000,
        ..LimitSettings::default()
    };
    let h = runtime.block_on(Harness::with_limits(limits));
    let minter = Minter::new(&h);
    let counter = Cell::new(0usize);
    let seen = RefCell::new(BTreeMap::new());
    let mut runner = TestRunner::new(config(operation));
    let result = runner.run(&case(operation), |case| {
        counter.set(counter.get() + 1);
        runtime
            .block_on(check(&h, &minter, operation, &case, counter.get(), &seen))
            .map(drop)
            .map_err(TestCaseError::fail)
    });
    if let Err(error) = result {
        panic!("{operation:?}: {error}");
    }
    // The cases reach the handler: refused for what the body holds, and the
    // body they mutate is accepted as it is.
    let seen = seen.into_inner();
    eprintln!("{operation:?}: statuses {seen:?}");
    assert!(seen.contains_key(&400), "{operation:?}: no case was refused as malformed ({seen:?})");
    let usual = if operation.is_form() { "application/x-www-form-urlencoded" } else { "application/json" };
    let who = if matches!(operation, Operation::Approve | Operation::Deny) { Who::Approver } else { Who::Owner };
    let valid = Case { shape: Shape::Mutated(Vec::new(), Vec::new()), who, id: Id::Target, content_type: Some(usual) };
    let status = runtime.block_on(check(&h, &minter, operation, &valid, counter.get() + 1, &RefCell::default()));
    assert_eq!(status, Ok(StatusCode::OK), "{operation:?}: the valid body is accepted");
}

#[test]
fn api_json_bodies_never_panic_or_5xx_or_change_state_when_refused() {
    for operation in OPERATIONS {
        fuzz(operation);
    }
}
