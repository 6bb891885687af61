//! `hourglassd serve` with a policy directory and a configured identity
//! provider: only tokens that provider signed, for this broker, are accepted.

use std::collections::BTreeMap;
use std::path::Path;

use hourglass_e2e::DevBroker;
use hourglass_e2e::issuer::JwtIssuer as Idp;

/// The demo policy, trusting `idp`.
fn policy_dir(into: &Path, idp: &Idp) {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo/policy");
    for entry in std::fs::read_dir(&demo).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), into.join(entry.file_name())).unwrap();
    }
    idp.trust_in(into);
}

#[test]
fn serve_mode_trusts_only_the_configured_issuer() {
    let config = tempfile::tempdir().unwrap();
    let idp = Idp::new("idp-1");
    let impostor = Idp::new("idp-1");
    policy_dir(config.path(), &idp);
    let tokens = BTreeMap::from([
        ("alice".to_owned(), idp.token("alice@acme.example", &["engineers"], "hourglass", 3600)),
        ("impostor".to_owned(), impostor.token("alice@acme.example", &["engineers"], "hourglass", 3600)),
        ("elsewhere".to_owned(), idp.token("alice@acme.example", &["engineers"], "another-app", 3600)),
        ("stale".to_owned(), idp.token("alice@acme.example", &["engineers"], "hourglass", -3600)),
    ]);
    let broker = DevBroker::serve(config.path(), tokens);

    let me = broker.json("alice", &["whoami"]);
    assert_eq!(me["id"], "alice@acme.example", "the email claim names the principal: {me}");
    assert_eq!(me["groups"], serde_json::json!(["engineers"]), "groups come from the token: {me}");
    let request =
        broker.json("alice", &["request", "orders-api", "--role", "read", "--for", "5m", "--reason", "reports"]);
    assert_eq!(request["state"], "approved", "the policy applies to IdP principals: {request}");

    for (user, expected) in [
        ("impostor", "signature does not verify"),
        ("elsewhere", "issued for another audience"),
        ("stale", "has expired"),
    ] {
        let run = broker.hourglass(user, &["whoami"]);
        assert!(!run.ok && run.stderr.contains(expected), "{user}: expected {expected:?}, got {}", run.stderr);
    }

    assert!(config.path().join("data/hourglass.db").exists(), "[broker] data_dir is relative to the policy directory");
    let verify = broker.hourglassd(&["audit", "verify", "--config", config.path().to_str().unwrap()]);
    assert!(
        verify.ok && verify.stdout.contains("intact"),
        "audit verify finds the store through --config: {}{}",
        verify.stdout,
        verify.stderr
    );
}
