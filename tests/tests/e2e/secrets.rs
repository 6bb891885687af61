//! No secret at rest, none in the log: a full lifecycle through a real
//! `hourglassd serve` (identity tokens, a broker session, token grants,
//! an SSH certificate for a key made here, a PostgreSQL role for a password
//! made here, refusals of bad tokens), then every secret that passed is
//! looked for in the broker's log (at debug level, panics included), its
//! error answers, the audit export, and every file of its data directory
//! (the SQLite database and its WAL, while it runs and after it stopped).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use hourglass_client::Client;
use hourglass_client::material;
use hourglass_core::api::{ClientMaterial, CreateRequest, Credential};
use hourglass_core::{Grant, GrantState};
use hourglass_e2e::issuer::JwtIssuer;
use hourglass_e2e::postgres::PostgresCluster;
use hourglass_e2e::sshd::current_user;
use hourglass_e2e::{DevBroker, bin};

const CEDAR: &str = r#"
permit (principal in Group::"engineers", action == Action::"request", resource);
permit (principal in Group::"engineers", action == Action::"auto_approve", resource)
when { resource != Role::"orders-api/write" };
permit (principal in Group::"sre", action == Action::"approve", resource);
"#;

/// One secret, and the forms it could leak in.
struct Secret {
    what: String,
    forms: Vec<Vec<u8>>,
}

impl Secret {
    fn text(what: impl Into<String>, text: &str) -> Secret {
        Secret { what: what.into(), forms: vec![text.as_bytes().to_vec()] }
    }

    /// A JWT: whole, and the first half of its signature alone (a token
    /// cut short in a log line, at either end, still leaks when part of
    /// the signature is in it; the claims before it are no secret).
    fn jwt(what: impl Into<String>, token: &str) -> Secret {
        let signature = token.rsplit('.').next().expect("a JWT has a signature");
        assert_eq!(signature.len(), 86, "an Ed25519 signature in base64url: {token}");
        Secret { what: what.into(), forms: vec![token.as_bytes().to_vec(), signature.as_bytes()[..43].to_vec()] }
    }

    /// Raw key bytes as they could be written: raw, hex, base64 (both alphabets).
    fn key_bytes(what: impl Into<String>, bytes: &[u8]) -> Secret {
        let engines =
            [base64::engine::general_purpose::STANDARD_NO_PAD, base64::engine::general_purpose::URL_SAFE_NO_PAD];
        let mut forms = vec![bytes.to_vec(), hourglass_core::audit::to_hex(bytes).into_bytes()];
        forms.extend(engines.iter().map(|engine| engine.encode(bytes).into_bytes()));
        Secret { what: what.into(), forms }
    }

    /// Where in `haystack` (named `place`) this secret is, if anywhere.
    fn found_in(&self, place: &str, haystack: &[u8]) -> Option<String> {
        self.forms
            .iter()
            .any(|form| haystack.windows(form.len()).any(|window| window == form.as_slice()))
            .then(|| format!("{} found in {place}", self.what))
    }
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("a readable directory").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn leaks(secrets: &[Secret], place: &str, haystack: &[u8]) -> Vec<String> {
    secrets.iter().filter_map(|secret| secret.found_in(place, haystack)).collect()
}

fn ask(resource: &str, role: &str, material: Option<ClientMaterial>) -> CreateRequest {
    CreateRequest {
        resource: resource.into(),
        role: role.into(),
        duration: "10m".into(),
        reason: "secrets test".into(),
        ticket: None,
        break_glass: false,
        client_material: material,
    }
}

/// A raw HTTP call, for the answers a typed client would not show as they are.
fn raw(method: &str, url: &str, bearer: Option<&str>, form: Option<&[(&str, &str)]>) -> (u16, String) {
    let http = reqwest::blocking::Client::new();
    let mut request = http.request(method.parse().expect("a method"), url);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    if let Some(form) = form {
        request = request.form(form);
    }
    let response = request.send().expect("the broker answers");
    (response.status().as_u16(), response.text().expect("a body"))
}

fn env_value<'a>(credential: &'a Credential, name: &str) -> &'a str {
    credential
        .env
        .iter()
        .find(|var| var.name == name)
        .map(|var| var.value.as_str())
        .unwrap_or_else(|| panic!("{name} in {credential:?}"))
}

#[test]
fn issued_secrets_never_reach_logs_audit_or_store() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = PostgresCluster::start();
    cluster.create_orders_db();
    let work = tempfile::tempdir().expect("temp dir");
    let config = work.path().join("policy");
    std::fs::create_dir(&config).expect("policy dir");
    let krl = work.path().join("revoked.krl");
    let toml = format!(
        r#"
[defaults]
workflow = "review"
min_duration = "5s"
max_duration = "1h"
renewals_without_approval = 5

[workflows.review]
approvals = [{{ group = "sre", count = 1 }}]

[resources.orders-api]
provider = "token"
settings = {{ audience = "https://orders.acme.example", env_prefix = "ORDERS_API" }}

[resources.orders-api.roles.read]
[resources.orders-api.roles.write]

[resources.box]
provider = "ssh"
settings = {{ krl_file = "{krl}" }}

[resources.box.roles.login]
settings = {{ principals = ["{user}"] }}

{orders_db}
"#,
        krl = krl.display(),
        user = current_user(),
        orders_db = cluster.orders_db_policy(),
    );
    std::fs::write(config.join("hourglass.toml"), toml).expect("hourglass.toml");
    std::fs::write(config.join("policy.cedar"), CEDAR).expect("policy.cedar");
    let idp = JwtIssuer::new("secrets");
    idp.trust_in(&config);
    let log = work.path().join("hourglassd.log");
    // Debug for everything, trace for the broker: more than any operator runs.
    let mut broker = DevBroker::serve_logged(
        &config,
        BTreeMap::new(),
        &[("ORDERS_DB_ADMIN_DSN", &cluster.admin_dsn())],
        &log,
        "debug,hourglass_broker=trace,hourglassd=trace",
    );
    let url = broker.url.clone();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");

    let alice_id_token = idp.token("alice@acme.example", &["engineers"], "hourglass", 600);
    let bob_id_token = idp.token("bob@acme.example", &["sre"], "hourglass", 600);
    let expired_token = idp.token("alice@acme.example", &["engineers"], "hourglass", -3600);
    let foreign_token = idp.token("alice@acme.example", &["engineers"], "another-app", 600);
    let mut answers = String::new();

    // alice logs in: her ID token for a broker session.
    let (status, body) = raw(
        "POST",
        &format!("{url}/v1/auth/token"),
        None,
        Some(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
            ("subject_token", &alice_id_token),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:id_token"),
        ]),
    );
    assert_eq!(status, 200, "the exchange succeeds: {body}");
    let session: serde_json::Value = serde_json::from_str(&body).expect("a session");
    let session = session["access_token"].as_str().expect("access_token").to_owned();
    let alice = Client::new(&url, &session).expect("a client");
    let bob = Client::new(&url, &bob_id_token).expect("a client");

    // Token grants: one approved by bob, renewed and revoked; one at once.
    let (write_token, read_token) = runtime.block_on(async {
        let filed = alice.create_request(&ask("orders-api", "write", None)).await.expect("write filed");
        let approved = bob.approve(&filed.request.id, Some("ok".into())).await.expect("bob approves");
        let grant = approved.grant.expect("issued on approval");
        let write = alice.credential(&grant.id).await.expect("credential");
        alice.renew(&grant.id, "20m", None).await.expect("renewed");
        let renewed = alice.credential(&grant.id).await.expect("credential after renewal");
        alice.revoke(&grant.id, None).await.expect("revoked");
        let read = alice.create_request(&ask("orders-api", "read", None)).await.expect("read filed");
        let read = alice.credential(&read.grant.expect("at once").id).await.expect("credential");
        (
            [env_value(&write, "ORDERS_API_TOKEN").to_owned(), env_value(&renewed, "ORDERS_API_TOKEN").to_owned()],
            env_value(&read, "ORDERS_API_TOKEN").to_owned(),
        )
    });

    // SSH: a key made here; the broker certifies its public half.
    let ssh = material::ssh().expect("a client key");
    let key_file = work.path().join("id_ed25519");
    ssh.private_key.write_openssh_file(&key_file, Default::default()).expect("the private key file");
    let ssh_pem = std::fs::read_to_string(&key_file).expect("the key file");
    let ssh_seed = ssh.private_key.key_data().ed25519().expect("an Ed25519 key").private.to_bytes();
    runtime.block_on(async {
        let outcome = alice.create_request(&ask("box", "login", Some(ssh.material.clone()))).await.expect("box");
        let grant: Grant = outcome.grant.expect("at once");
        assert_eq!(grant.state, GrantState::Active, "a certificate is issued: {grant:?}");
        alice.credential(&grant.id).await.expect("the certificate");
        alice.revoke(&grant.id, None).await.expect("revoked");
    });

    // PostgreSQL: a password made here; the broker sees only its verifier.
    let pg = material::postgres();
    runtime.block_on(async {
        let outcome = alice.create_request(&ask("orders-db", "read", Some(pg.material.clone()))).await.expect("db");
        let grant = outcome.grant.expect("at once");
        let credential = alice.credential(&grant.id).await.expect("credential");
        let dsn = cluster.dsn(env_value(&credential, "PGUSER"), &pg.password, "orders");
        let (db, connection) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await.expect("logs in");
        let connection = tokio::spawn(connection);
        db.query("SELECT count(*) FROM orders", &[]).await.expect("the role reads");
        drop(db);
        let _ = connection.await;
        alice.confirm_ready(&grant.id, Some("logged in".into())).await.expect("ready");
        alice.revoke(&grant.id, None).await.expect("revoked");
    });

    // Refusals that carry a secret: bad bearer tokens, a grant token used as
    // a bearer and as an identity, a revoked token introspected. Their
    // answers must not echo what they were given.
    for token in [&expired_token, &foreign_token, &write_token[0], &read_token] {
        let (status, body) = raw("GET", &format!("{url}/v1/requests"), Some(token), None);
        assert_eq!(status, 401, "refused: {body}");
        answers.push_str(&body);
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
            ("subject_token", token.as_str()),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:id_token"),
        ];
        let (status, body) = raw("POST", &format!("{url}/v1/auth/token"), None, Some(&form));
        assert_eq!(status, 401, "not exchanged: {body}");
        answers.push_str(&body);
    }
    let (status, body) = raw("POST", &format!("{url}/v1/introspect"), None, Some(&[("token", &write_token[1])]));
    assert_eq!((status, body.as_str()), (200, r#"{"active":false}"#), "a revoked grant's token is inactive");

    let mut secrets = vec![
        Secret::jwt("alice's ID token", &alice_id_token),
        Secret::jwt("bob's ID token", &bob_id_token),
        Secret::jwt("an expired ID token", &expired_token),
        Secret::jwt("an ID token for another app", &foreign_token),
        Secret::jwt("alice's broker session", &session),
        Secret::jwt("the write grant's token", &write_token[0]),
        Secret::jwt("the renewed write grant's token", &write_token[1]),
        Secret::jwt("the read grant's token", &read_token),
        Secret::text("the client-made PostgreSQL password", &pg.password),
        Secret::key_bytes("the client-made SSH private key", &ssh_seed),
    ];
    // Every base64 line of the private key file that is this key's own:
    // the first lines of every unencrypted OpenSSH key are the same header
    // (as in the broker's own CA key file), so lines another key has too
    // are no secret.
    let other_file = work.path().join("id_other");
    let other = material::ssh().expect("another key");
    other.private_key.write_openssh_file(&other_file, Default::default()).expect("another key file");
    let other_pem = std::fs::read_to_string(&other_file).expect("the other key file");
    for line in ssh_pem.lines().filter(|line| line.len() >= 60 && !other_pem.contains(line)) {
        secrets.push(Secret::text("a line of the client-made SSH private key file", line));
    }
    assert!(secrets.len() > 10, "some lines of the key file are this key's own");
    let found_in_answers = leaks(&secrets, "an error answer", answers.as_bytes());

    // The broker's own private keys live in its store, sealed with its store
    // key (the one secret file of its data directory, 0600): opened here
    // with that key, independently of the broker's code, they must be
    // nowhere in the clear — not in the store, the log or the audit log.
    let data = broker.data_dir.clone();
    let (store_key, seeds) = broker_keys(&data);
    assert_eq!(seeds.len(), 3, "a session, a grant-token and an SSH CA key are in the store");
    for name in ["keys/token-signing.pem", "keys/session.pem", "ssh/user_ca"] {
        assert!(!data.join(name).exists(), "no private key file {name}: keys are in the store");
    }
    let mut own_keys = vec![Secret::text("the store key", &store_key)];
    for (purpose, seed) in &seeds {
        own_keys.push(Secret::key_bytes(format!("the broker's {purpose} key"), seed));
    }

    let scan_store = |when: &str| -> Vec<String> {
        let mut found = Vec::new();
        for file in files_under(&config) {
            let name = file.strip_prefix(&config).unwrap_or(&file).display().to_string();
            let bytes = std::fs::read(&file).unwrap_or_default();
            found.extend(leaks(&secrets, &format!("{name} ({when})"), &bytes));
            if !name.ends_with("keys/store.key") {
                found.extend(leaks(&own_keys, &format!("{name} ({when})"), &bytes));
            }
        }
        found
    };
    let files = files_under(&data);
    let names: Vec<String> = files.iter().map(|f| f.strip_prefix(&data).unwrap_or(f).display().to_string()).collect();
    assert!(names.iter().any(|n| n == "hourglass.db-wal"), "the WAL is scanned while the broker runs: {names:?}");
    let mut found = found_in_answers;
    found.extend(scan_store("while running"));

    let data_dir = data.to_str().expect("a UTF-8 path");
    let export = std::process::Command::new(bin("hourglassd"))
        .args(["audit", "export", "--data-dir", data_dir])
        .output()
        .expect("hourglassd audit export runs");
    assert!(export.status.success(), "the audit exports: {}", String::from_utf8_lossy(&export.stderr));
    let audit = String::from_utf8_lossy(&export.stdout).into_owned();
    for action in ["request.approved", "grant.renewed", "grant.revoked", "grant.verified", "grant.credential_fetched"] {
        assert!(audit.contains(action), "the audit export covers the lifecycle ({action})");
    }
    found.extend(leaks(&secrets, "the audit export", audit.as_bytes()));
    found.extend(leaks(&own_keys, "the audit export", audit.as_bytes()));

    broker.kill();
    found.extend(scan_store("after the broker stopped"));
    let log_text = std::fs::read(&log).expect("the broker's log");
    assert!(log_text.len() > 1000, "the log was written at debug level ({} bytes)", log_text.len());
    found.extend(leaks(&secrets, "the broker's log", &log_text));
    found.extend(leaks(&own_keys, "the broker's log", &log_text));
    let log_text = String::from_utf8_lossy(&log_text);
    assert!(!log_text.contains("panicked"), "the broker did not panic:\n{log_text}");
    assert!(found.is_empty(), "secrets leaked:\n{}", found.join("\n"));
}

/// The broker's store key (as its file holds it) and its signing keys'
/// seeds by purpose, opened from the store the way the broker seals them
/// (AES-256-GCM, nonce first, bound to "purpose/kid").
fn broker_keys(data: &std::path::Path) -> (String, Vec<(String, Vec<u8>)>) {
    use base64::Engine;
    use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
    let text = std::fs::read_to_string(data.join("keys/store.key")).expect("the store key file");
    let raw = base64::engine::general_purpose::STANDARD.decode(text.trim()).expect("base64");
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &raw).expect("a 32-byte key"));
    let store =
        rusqlite::Connection::open_with_flags(data.join("hourglass.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("the store opens");
    let mut statement = store.prepare("SELECT purpose, kid, sealed_private FROM signing_keys").expect("a query");
    let rows: Vec<(String, String, String)> = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .expect("keys")
        .map(|row| row.expect("a row"))
        .collect();
    let seeds = rows
        .into_iter()
        .map(|(purpose, kid, sealed)| {
            let mut sealed = base64::engine::general_purpose::STANDARD.decode(sealed).expect("base64");
            let (nonce, ciphertext) = sealed.split_at_mut(NONCE_LEN);
            let nonce = Nonce::try_assume_unique_for_key(nonce).expect("a nonce");
            let seed = key
                .open_in_place(nonce, Aad::from(format!("{purpose}/{kid}").as_bytes()), ciphertext)
                .expect("the store key opens it")
                .to_vec();
            assert_eq!(seed.len(), 32, "an Ed25519 seed");
            (purpose, seed)
        })
        .collect();
    (text.trim().to_owned(), seeds)
}
