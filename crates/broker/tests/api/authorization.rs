//! Who may call what: every operation of the HTTP API, called by every kind
//! of principal, gets exactly what policy allows. A refusal has the status
//! and code the table says, changes no request and no grant, and is audited
//! exactly where the broker audits refusals (by authenticated principals,
//! on state-changing calls and credential fetches).
//!
//! The table is checked against `/v1/openapi.json`: an operation without a
//! row (a new endpoint) or a row without an operation fails the test.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use hourglass_broker::Reload;
use hourglass_broker::keys::Ed25519Key;
use hourglass_core::Duration;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{Harness, grant_id, read_orders, request_id, write_orders};

/// Every kind of caller the broker must tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    /// Owns the request or grant the call is about (an engineer).
    Requester,
    /// Another engineer: no rights over the requester's access.
    OtherEngineer,
    /// An approver, but of another group than the request needs (security,
    /// who approves PCI resources only).
    OtherGroupApprover,
    /// An approver of the group the request needs (SRE).
    RightApprover,
    /// Views and revokes everyone's grants; approves and requests nothing.
    Admin,
    Anonymous,
    /// The requester's own identity, in tokens that must not pass.
    ExpiredToken,
    UntrustedIssuer,
    WrongAudience,
    /// Its `nbf` is ten minutes ahead.
    NotYetValid,
}

const EVERYONE: [Who; 10] = [
    Who::Requester,
    Who::OtherEngineer,
    Who::OtherGroupApprover,
    Who::RightApprover,
    Who::Admin,
    Who::Anonymous,
    Who::ExpiredToken,
    Who::UntrustedIssuer,
    Who::WrongAudience,
    Who::NotYetValid,
];

/// Whose bearer token does not authenticate, and what the 401 must name.
fn unauthenticated(who: Who) -> Option<&'static str> {
    match who {
        Who::Anonymous => Some("no bearer token"),
        Who::ExpiredToken => Some("expired"),
        Who::UntrustedIssuer => Some("not trusted"),
        Who::WrongAudience => Some("audience"),
        Who::NotYetValid => Some("not valid yet"),
        _ => None,
    }
}

/// What a call must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Ok,
    /// Refused with this status and code, nothing changed, and the refusal
    /// audited as this action (by the caller) or not at all.
    Refused {
        status: StatusCode,
        code: &'static str,
        audited_as: Option<&'static str>,
    },
}

const fn refused(status: StatusCode, code: &'static str, audited_as: Option<&'static str>) -> Expect {
    Expect::Refused { status, code, audited_as }
}

const FORBIDDEN: Expect = refused(StatusCode::FORBIDDEN, "forbidden", None);

/// What the call is about, set up afresh for every call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Nothing,
    /// The requester's orders-api/write, waiting for an SRE.
    PendingRequest,
    /// The requester's live orders-api/read grant.
    LiveGrant,
}

/// How the call is made.
#[derive(Debug, Clone, Copy)]
enum Call {
    /// The caller's bearer token, and this JSON body (for POST).
    Bearer(Option<&'static str>),
    /// No bearer token: the caller's token is the form's `subject_token`
    /// (RFC 8693 exchange).
    ExchangeForm,
    /// The bearer token is sent (and must be ignored); the form carries
    /// the target grant's token (RFC 7662 introspection).
    IntrospectForm,
}

struct Row {
    method: Method,
    /// As in the OpenAPI document; `{id}` is the target's id.
    path: &'static str,
    /// Appended to the path (the query).
    query: &'static str,
    target: Target,
    call: Call,
    /// What each authenticated principal gets; [`unauthenticated`] callers
    /// get a 401 on every operation that needs a token.
    rule: fn(Who) -> Expect,
    /// Answers the same to everyone, token or not.
    public: bool,
}

fn every_principal(_: Who) -> Expect {
    Expect::Ok
}

fn view_request(who: Who) -> Expect {
    match who {
        Who::Requester | Who::RightApprover | Who::Admin => Expect::Ok,
        _ => FORBIDDEN,
    }
}

fn decide(who: Who) -> Expect {
    let audited = Some("request.decision_refused");
    match who {
        Who::RightApprover => Expect::Ok,
        Who::Requester => refused(StatusCode::FORBIDDEN, "self_approval", audited),
        _ => refused(StatusCode::FORBIDDEN, "forbidden", audited),
    }
}

fn cancel(who: Who) -> Expect {
    match who {
        Who::Requester => Expect::Ok,
        _ => refused(StatusCode::FORBIDDEN, "forbidden", Some("request.cancelled")),
    }
}

fn file_request(who: Who) -> Expect {
    match who {
        // Admins administer; policy lets them request nothing.
        Who::Admin => refused(StatusCode::FORBIDDEN, "forbidden", Some("request.refused")),
        _ => Expect::Ok,
    }
}

fn view_grant(who: Who) -> Expect {
    match who {
        Who::Requester | Who::Admin => Expect::Ok,
        _ => FORBIDDEN,
    }
}

/// Only the owner, whatever else policy lets the caller do.
fn owner_only(audited_as: &'static str) -> impl Fn(Who) -> Expect {
    move |who| match who {
        Who::Requester => Expect::Ok,
        _ => refused(StatusCode::FORBIDDEN, "forbidden", Some(audited_as)),
    }
}

fn credential(who: Who) -> Expect {
    owner_only("grant.credential_fetched")(who)
}

fn ready(who: Who) -> Expect {
    owner_only("grant.verified")(who)
}

fn renew(who: Who) -> Expect {
    owner_only("grant.renewal_refused")(who)
}

fn revoke(who: Who) -> Expect {
    match who {
        Who::Requester | Who::Admin => Expect::Ok,
        _ => refused(StatusCode::FORBIDDEN, "forbidden", Some("grant.revoke_refused")),
    }
}

/// Reviewing the requester's grant, which was not taken under break-glass:
/// who may review is checked first, so only an approver of its role learns
/// that there is nothing to review.
fn review(who: Who) -> Expect {
    let audited = Some("grant.reviewed");
    match who {
        Who::Requester => refused(StatusCode::FORBIDDEN, "self_approval", audited),
        Who::RightApprover => refused(StatusCode::BAD_REQUEST, "invalid_request", audited),
        _ => refused(StatusCode::FORBIDDEN, "forbidden", audited),
    }
}

fn exchange(who: Who) -> Expect {
    match who {
        Who::Anonymous => refused(StatusCode::BAD_REQUEST, "invalid_request", None),
        Who::ExpiredToken | Who::UntrustedIssuer | Who::WrongAudience | Who::NotYetValid => {
            refused(StatusCode::UNAUTHORIZED, "unauthenticated", None)
        }
        _ => Expect::Ok,
    }
}

const fn row(method: Method, path: &'static str, target: Target, rule: fn(Who) -> Expect) -> Row {
    Row { method, path, query: "", target, call: Call::Bearer(None), rule, public: false }
}

const fn post(path: &'static str, target: Target, body: &'static str, rule: fn(Who) -> Expect) -> Row {
    Row { method: Method::POST, path, query: "", target, call: Call::Bearer(Some(body)), rule, public: false }
}

const fn public(method: Method, path: &'static str) -> Row {
    Row {
        method,
        path,
        query: "",
        target: Target::Nothing,
        call: Call::Bearer(None),
        rule: every_principal,
        public: true,
    }
}

/// One row per operation of `/v1/openapi.json`.
fn openapi_rows() -> Vec<Row> {
    use Target::{LiveGrant, Nothing, PendingRequest};
    vec![
        public(Method::GET, "/healthz"),
        public(Method::GET, "/readyz"),
        public(Method::GET, "/v1/auth/config"),
        Row {
            method: Method::POST,
            path: "/v1/auth/token",
            query: "",
            target: Nothing,
            call: Call::ExchangeForm,
            rule: exchange,
            public: false,
        },
        // Ends the caller's own token (every call here has a fresh one).
        row(Method::POST, "/v1/auth/logout", Nothing, every_principal),
        row(Method::GET, "/v1/whoami", Nothing, every_principal),
        row(Method::GET, "/v1/resources", Nothing, every_principal),
        post(
            "/v1/requests",
            Nothing,
            r#"{"resource": "staging-api", "role": "deploy", "duration": "1h", "reason": "matrix"}"#,
            file_request,
        ),
        row(Method::GET, "/v1/requests", Nothing, every_principal),
        row(Method::GET, "/v1/requests/{id}", PendingRequest, view_request),
        post("/v1/requests/{id}/approve", PendingRequest, r#"{"comment": "ok"}"#, decide),
        post("/v1/requests/{id}/deny", PendingRequest, r#"{"comment": "no"}"#, decide),
        post("/v1/requests/{id}/cancel", PendingRequest, "", cancel),
        Row { query: "?all=true&ended=true", ..row(Method::GET, "/v1/grants", Nothing, every_principal) },
        row(Method::GET, "/v1/grants/{id}", LiveGrant, view_grant),
        row(Method::GET, "/v1/grants/{id}/credential", LiveGrant, credential),
        post("/v1/grants/{id}/ready", LiveGrant, r#"{"check": "logged in"}"#, ready),
        post("/v1/grants/{id}/renew", LiveGrant, r#"{"duration": "20m"}"#, renew),
        post("/v1/grants/{id}/revoke", LiveGrant, r#"{"reason": "done"}"#, revoke),
        // Every live grant the requester holds on the resource (`{requester}` is filled in).
        post(
            "/v1/grants/revoke",
            LiveGrant,
            r#"{"resource": "orders-api", "owner": "{requester}", "reason": "x"}"#,
            revoke,
        ),
        row(Method::GET, "/v1/me/notifications", Nothing, every_principal),
        Row {
            method: Method::PUT,
            call: Call::Bearer(Some(r#"{"muted": []}"#)),
            ..row(Method::PUT, "/v1/me/notifications", Nothing, every_principal)
        },
        row(Method::GET, "/v1/reviews", Nothing, every_principal),
        post("/v1/grants/{id}/review", LiveGrant, r#"{"verdict": "justified", "comment": "ok"}"#, review),
        // `?subject=` is filled in with the requester.
        Row { query: "?subject=", ..row(Method::GET, "/v1/history", Nothing, view_grant) },
        row(Method::GET, "/v1/events", Nothing, every_principal),
        Row { call: Call::IntrospectForm, target: LiveGrant, ..public(Method::POST, "/v1/introspect") },
    ]
}

/// Routes served beside the OpenAPI operations: public documents.
fn other_public_rows() -> Vec<Row> {
    vec![
        public(Method::GET, "/v1/openapi.json"),
        public(Method::GET, "/metrics"),
        public(Method::GET, "/.well-known/jwks.json"),
        // No SSH provider in this broker: the same 404 for everyone.
        public(Method::GET, "/v1/providers/ssh/ca.pub"),
    ]
}

/// The policy under test: the demo's, with administration moved from
/// security to an `admins` group, so that each kind of principal is a
/// different person (security then only approves PCI resources).
async fn matrix_harness() -> Harness {
    let h = Harness::new().await;
    let file = h.policy_dir.join("approvals.cedar");
    let text = std::fs::read_to_string(&file).expect("approvals.cedar");
    let admin = "@id(\"security-admin\")\npermit (\n  principal in Group::\"security\",";
    assert!(text.contains(admin), "the demo policy has its security-admin rule");
    let text = text.replace(admin, "@id(\"admins-admin\")\npermit (\n  principal in Group::\"admins\",");
    std::fs::write(&file, text).expect("approvals.cedar is written");
    let reload = h.broker.reload_policy().await.expect("a reload answers");
    assert!(matches!(reload, Reload::Loaded { .. }), "the matrix policy loads: {reload:?}");
    h
}

/// Signs identity tokens as the dev issuer (or a stranger), for principals
/// the demo does not have and for tokens that must be refused.
pub(super) struct Minter {
    dev_key: Ed25519Key,
    stranger: Ed25519Key,
    dev_issuer: String,
}

impl Minter {
    pub(super) fn new(h: &Harness) -> Minter {
        Minter {
            dev_key: Ed25519Key::load_or_create(&h.data_dir.join("keys/dev-issuer.pem")).expect("the dev key"),
            stranger: Ed25519Key::load_or_create(&h.data_dir.join("stranger.pem")).expect("a stranger's key"),
            dev_issuer: h.dev_issuer.clone(),
        }
    }

    fn sign(&self, key: &Ed25519Key, iss: &str, aud: &str, email: &str, groups: &[&str], lifetime: i64) -> String {
        let now = hourglass_broker::clock::Clock::now(&hourglass_broker::clock::SystemClock).unix_seconds();
        // Each token its own (`jti`), as an IdP's are: ending one ends no other.
        let claims = json!({
            "iss": iss, "aud": aud, "sub": email, "email": email, "email_verified": true, "groups": groups,
            "iat": now.min(now + lifetime), "exp": now + lifetime, "jti": rand::random::<u64>().to_string(),
        });
        key.sign_jwt(&claims).expect("a signed token")
    }

    /// A good token of the dev issuer for `email`, usable only from ten
    /// minutes on (`nbf`).
    fn not_yet_valid(&self, email: &str, groups: &[&str]) -> String {
        let now = hourglass_broker::clock::Clock::now(&hourglass_broker::clock::SystemClock).unix_seconds();
        let claims = json!({
            "iss": self.dev_issuer, "aud": "hourglass", "sub": email, "email": email, "email_verified": true,
            "groups": groups, "iat": now, "nbf": now + 600, "exp": now + 1200,
        });
        self.dev_key.sign_jwt(&claims).expect("a signed token")
    }

    pub(super) fn person(&self, email: &str, groups: &[&str]) -> String {
        self.sign(&self.dev_key, &self.dev_issuer, "hourglass", email, groups, 600)
    }

    /// The bearer token `who` calls with (none for the anonymous), given
    /// the requester of this call.
    fn token_of(&self, who: Who, requester: &str) -> Option<String> {
        let engineers: &[&str] = &["engineers"];
        match who {
            Who::Requester => Some(self.person(requester, engineers)),
            // Minted for each call, as the demo directory has them: a call
            // that ends its token (logging out) ends no other call's.
            Who::OtherEngineer => Some(self.person("dave@acme.example", &["engineers", "oncall"])),
            Who::OtherGroupApprover => Some(self.person("carol@acme.example", &["security"])),
            Who::RightApprover => Some(self.person("bob@acme.example", &["sre"])),
            Who::Admin => Some(self.person("root@acme.example", &["admins"])),
            Who::Anonymous => None,
            Who::ExpiredToken => {
                Some(self.sign(&self.dev_key, &self.dev_issuer, "hourglass", requester, engineers, -3600))
            }
            Who::UntrustedIssuer => {
                Some(self.sign(&self.stranger, "https://evil.example", "hourglass", requester, engineers, 600))
            }
            Who::WrongAudience => {
                Some(self.sign(&self.dev_key, &self.dev_issuer, "other-app", requester, engineers, 600))
            }
            Who::NotYetValid => Some(self.not_yet_valid(requester, engineers)),
        }
    }
}

fn principal_id(who: Who, requester: &str) -> &str {
    match who {
        Who::OtherEngineer => "dave@acme.example",
        Who::OtherGroupApprover => "carol@acme.example",
        Who::RightApprover => "bob@acme.example",
        Who::Admin => "root@acme.example",
        _ => requester,
    }
}

/// Every request and grant as stored, and the last audit sequence number:
/// what "nothing changed" is checked against.
pub(super) fn stored_state(h: &Harness) -> (Vec<(String, String)>, u64) {
    let db = rusqlite::Connection::open(&h.db_path).expect("a second connection to the store");
    db.busy_timeout(std::time::Duration::from_secs(10)).expect("busy timeout");
    let mut statement = db
        .prepare("SELECT id, doc FROM requests UNION ALL SELECT id, doc || provider_state FROM grants ORDER BY 1")
        .expect("a query");
    let rows = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .expect("requests and grants read")
        .collect::<Result<Vec<(String, String)>, _>>()
        .expect("rows");
    let seq: i64 = db.query_row("SELECT coalesce(max(seq), 0) FROM audit", [], |row| row.get(0)).expect("audit");
    (rows, u64::try_from(seq).expect("seq"))
}

/// The operations `(METHOD, path)` of the served OpenAPI document.
async fn openapi_operations(h: &Harness) -> BTreeSet<(String, String)> {
    let request = Request::builder().uri("/v1/openapi.json").body(Body::empty()).expect("a request");
    let (status, _, document) = h.send(request).await;
    assert_eq!(status, StatusCode::OK, "the OpenAPI document is served");
    let paths = document["paths"].as_object().expect("the document has paths");
    let methods = ["get", "post", "put", "patch", "delete", "head", "options", "trace"];
    paths
        .iter()
        .flat_map(|(path, item)| {
            methods
                .iter()
                .filter(|method| item.get(**method).is_some())
                .map(move |method| (method.to_ascii_uppercase(), path.clone()))
        })
        .collect()
}

/// What one call got: status, content type, body (JSON, or text as a JSON
/// string; an event stream is not read).
pub(super) async fn call(h: &Harness, request: Request<Body>) -> (StatusCode, String, Value) {
    let response = h.app.clone().oneshot(request).await.expect("the router answers");
    let status = response.status();
    let content_type =
        response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    if content_type == "text/event-stream" {
        return (status, content_type, Value::Null);
    }
    let bytes = response.into_body().collect().await.expect("the body is read").to_bytes();
    let body =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, content_type, body)
}

pub(super) fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(name, value)| format!("{name}={}", value.replace('%', "%25").replace('+', "%2B").replace('=', "%3D")))
        .collect::<Vec<_>>()
        .join("&")
}

/// Runs one cell of the matrix; returns a description of what is wrong, if anything.
async fn check_cell(h: &Harness, minter: &Minter, row: &Row, who: Who, cell: usize) -> Option<String> {
    let requester = format!("requester{cell}@acme.example");
    let requester_token = minter.person(&requester, &["engineers"]);
    let as_requester = |path: &str, body: Value| {
        Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {requester_token}"))
            .body(Body::from(body.to_string()))
            .expect("a request")
    };
    let mut target_id = String::new();
    let mut grant_token = String::new();
    match row.target {
        Target::Nothing => {}
        Target::PendingRequest => {
            let (status, _, outcome) = call(h, as_requester("/v1/requests", write_orders("30m"))).await;
            assert_eq!(status, StatusCode::OK, "the requester files a write: {outcome}");
            assert_eq!(outcome["request"]["state"], "pending", "it waits for an SRE");
            target_id = request_id(&outcome);
        }
        Target::LiveGrant => {
            let (status, _, outcome) = call(h, as_requester("/v1/requests", read_orders("10m"))).await;
            assert_eq!(status, StatusCode::OK, "the requester files a read: {outcome}");
            target_id = grant_id(&outcome);
            let get = Request::builder()
                .uri(format!("/v1/grants/{target_id}/credential"))
                .header(header::AUTHORIZATION, format!("Bearer {requester_token}"))
                .body(Body::empty())
                .expect("a request");
            let (_, _, credential) = call(h, get).await;
            grant_token = credential["env"][0]["value"].as_str().expect("the grant token").to_owned();
        }
    }

    let token = minter.token_of(who, &requester);
    let mut path = row.path.replace("{id}", &target_id) + row.query;
    if row.query == "?subject=" {
        path.push_str(&requester);
    }
    let mut builder = Request::builder().method(row.method.clone()).uri(&path);
    let send_bearer = !matches!(row.call, Call::ExchangeForm);
    if let (Some(token), true) = (&token, send_bearer) {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = match row.call {
        Call::Bearer(None) => Body::empty(),
        Call::Bearer(Some(json)) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Body::from(json.replace("{requester}", &requester))
        }
        Call::ExchangeForm => {
            builder = builder.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            Body::from(form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
                ("subject_token", token.as_deref().unwrap_or("")),
                ("subject_token_type", "urn:ietf:params:oauth:token-type:id_token"),
            ]))
        }
        Call::IntrospectForm => {
            builder = builder.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            Body::from(form(&[("token", &grant_token)]))
        }
    };

    let expect = match (row.public, row.call, unauthenticated(who)) {
        (false, Call::Bearer(_), Some(_)) => refused(StatusCode::UNAUTHORIZED, "unauthenticated", None),
        _ => (row.rule)(who),
    };
    let before = stored_state(h);
    let (status, content_type, body) = call(h, builder.body(body).expect("a request")).await;
    let place = format!("{} {path} as {who:?}", row.method);
    match expect {
        Expect::Ok if row.public => {
            // The same answer as for the anonymous: the token plays no part.
            let anonymous = Request::builder().method(row.method.clone()).uri(&path);
            let (expected, _, _) = call(h, anonymous.body(Body::empty()).expect("a request")).await;
            let expected = if matches!(row.call, Call::IntrospectForm) { StatusCode::OK } else { expected };
            (status != expected).then(|| format!("{place}: {status}, the anonymous get {expected}: {body}"))
        }
        Expect::Ok => {
            let events_ok = row.path != "/v1/events" || content_type == "text/event-stream";
            let want = if row.path == "/v1/auth/logout" { StatusCode::NO_CONTENT } else { StatusCode::OK };
            (status != want || !events_ok).then(|| format!("{place}: expected {want}, got {status}: {body}"))
        }
        Expect::Refused { status: want, code, audited_as } => {
            let mut wrong = Vec::new();
            if status != want || body["code"] != code {
                wrong.push(format!("expected {want} {code}, got {status} {body}"));
            }
            if body["message"].as_str().is_none_or(str::is_empty) {
                wrong.push(format!("a refusal is {{code, message}}: {body}"));
            }
            if let (Some(names), Call::Bearer(_)) = (unauthenticated(who), row.call) {
                let message = body["message"].as_str().unwrap_or_default();
                if !message.contains(names) {
                    wrong.push(format!("the 401 should name {names:?}: {message:?}"));
                }
            }
            let after = stored_state(h);
            if after.0 != before.0 {
                wrong.push("the refusal changed a request or grant".to_owned());
            }
            let events = new_audit_events(h, before.1).await;
            match audited_as {
                None if !events.is_empty() => wrong.push(format!("not audited here, yet got {events:?}")),
                None => {}
                Some(action) => {
                    let actor = principal_id(who, &requester);
                    let audited = events.len() == 1
                        && events[0]["action"] == action
                        && events[0]["actor"] == actor
                        && events[0]["result"] == "refused";
                    if !audited {
                        wrong
                            .push(format!("expected one refused {action} by {actor} in the audit log, got {events:?}"));
                    }
                }
            }
            (!wrong.is_empty()).then(|| format!("{place}: {}", wrong.join("; ")))
        }
    }
}

async fn new_audit_events(h: &Harness, after: u64) -> Vec<Value> {
    let links = h.broker.store().audit_links(after, 100).await.expect("the audit log reads");
    links.iter().map(|link| serde_json::from_str(&link.canonical).expect("an audit event")).collect()
}

#[tokio::test]
async fn authorization_matrix_every_operation_every_principal() {
    let h = matrix_harness().await;
    let minter = Minter::new(&h);
    let rows = openapi_rows();

    let documented = openapi_operations(&h).await;
    let covered: BTreeSet<(String, String)> =
        rows.iter().map(|row| (row.method.as_str().to_owned(), row.path.to_owned())).collect();
    let missing: Vec<_> = documented.difference(&covered).collect();
    assert!(missing.is_empty(), "operations without a row in the authorization matrix: {missing:?}");
    let stale: Vec<_> = covered.difference(&documented).collect();
    assert!(stale.is_empty(), "rows for operations the OpenAPI document does not have: {stale:?}");
    assert_eq!(rows.len(), documented.len(), "one row per operation");

    let mut failures = Vec::new();
    let mut cells = 0;
    for row in rows.iter().chain(&other_public_rows()) {
        // Three seconds between operations refill every principal's rate
        // limit (limits have their own tests); no deadline here is that near.
        h.advance(Duration::from_secs(3));
        for who in EVERYONE {
            cells += 1;
            if let Some(failure) = check_cell(&h, &minter, row, who, cells).await {
                failures.push(failure);
            }
        }
    }
    assert_eq!(cells, (documented.len() + other_public_rows().len()) * EVERYONE.len(), "every cell ran");
    assert!(failures.is_empty(), "{} of {cells} cells are wrong:\n{}", failures.len(), failures.join("\n"));
}
