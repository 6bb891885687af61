//! `hourglassd serve` with a policy directory and a configured identity
//! provider: only tokens that provider signed, for this broker, are accepted.

use std::collections::BTreeMap;
use std::path::Path;

use hourglass_e2e::issuer::JwtIssuer as Idp;
use hourglass_e2e::{DevBroker, eventually};

/// The demo policy, trusting `idp`.
fn policy_dir(into: &Path, idp: &Idp) {
    hourglass_e2e::copy_demo_policy(into, |toml| toml);
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

/// A raw HTTP/1.1 exchange on its own connection: what it read before the
/// server closed it or `wait` passed (`None`: nothing came).
fn raw_exchange(url: &str, sent: &str, wait: std::time::Duration) -> Option<String> {
    use std::io::{Read, Write};
    let address = url.trim_start_matches("http://");
    let mut connection = std::net::TcpStream::connect(address).expect("the broker accepts connections");
    connection.set_read_timeout(Some(wait)).expect("a read timeout");
    connection.write_all(sent.as_bytes()).expect("sent");
    let mut answer = Vec::new();
    match connection.read_to_end(&mut answer) {
        Ok(_) => Some(String::from_utf8_lossy(&answer).into_owned()),
        Err(_) if !answer.is_empty() => Some(String::from_utf8_lossy(&answer).into_owned()),
        Err(_) => None,
    }
}

#[test]
fn serve_caps_connections_times_out_slow_headers_and_slows_addresses_whose_tokens_fail() {
    use std::time::Duration;
    let config = tempfile::tempdir().unwrap();
    let idp = Idp::new("idp-1");
    policy_dir(config.path(), &idp);
    let toml = std::fs::read_to_string(config.path().join("hourglass.toml")).unwrap();
    let limits = "[broker.limits]\nconnections = 3\nheader_read_seconds = 2\nauth_failures_per_minute = 5\n\n";
    std::fs::write(
        config.path().join("hourglass.toml"),
        toml.replacen("[[broker.issuers]]", &format!("{limits}[[broker.issuers]]"), 1),
    )
    .unwrap();
    let alice = idp.token("alice@acme.example", &["engineers"], "hourglass", 3600);
    let broker = DevBroker::serve(config.path(), BTreeMap::from([("alice".to_owned(), alice.clone())]));

    // Headers trickled in (slowloris): the connection is closed, not held.
    // (Closed, the read ends; held open, it would give up after 20 s with nothing.)
    let slow = raw_exchange(&broker.url, "GET /healthz HTTP/1.1\r\nHost: x\r\n", Duration::from_secs(20));
    assert!(slow.is_some(), "a client that never finishes its headers is cut off (after about 2 s)");

    // Three event streams hold the three connections: a fourth client waits.
    // (reqwest needs a TLS provider installed even for plain HTTP: run on
    // its own, no other test has installed one.)
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let streams: Vec<_> = (0..3)
        .map(|_| http.get(format!("{}/v1/events", broker.url)).bearer_auth(&alice).send().expect("a stream opens"))
        .collect();
    assert!(streams.iter().all(|s| s.status() == 200), "three streams open");
    let health = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_eq!(
        raw_exchange(&broker.url, health, Duration::from_secs(2)),
        None,
        "a fourth connection waits while three are open"
    );
    drop(streams);
    // (A stream's end is noticed at its next keep-alive, within 15 s.)
    let answered = eventually(Duration::from_secs(40), || raw_exchange(&broker.url, health, Duration::from_secs(2)));
    assert!(answered.is_some_and(|a| a.starts_with("HTTP/1.1 200")), "and is served once one closes");

    // Refused tokens from one address: after five in a minute, new tokens
    // from it are refused unchecked; a token verified before still works.
    let call = |token: &str| {
        let response = http.get(format!("{}/v1/whoami", broker.url)).bearer_auth(token).send().expect("answers");
        (response.status().as_u16(), response.text().unwrap_or_default())
    };
    assert_eq!(call(&alice).0, 200, "alice's token verifies");
    let stranger = Idp::new("idp-1");
    for n in 0..5 {
        let forged = stranger.token(&format!("x{n}@acme.example"), &[], "hourglass", 3600);
        assert_eq!(call(&forged).0, 401, "a forged token is refused");
    }
    let (status, body) = call(&stranger.token("y@acme.example", &[], "hourglass", 3600));
    assert_eq!(status, 429, "the sixth in a minute is not even checked: {body}");
    assert!(body.contains("too many refused tokens from 127.0.0.1"), "saying why: {body}");
    assert_eq!(call(&alice).0, 200, "alice's token, verified before, still works from that address");
}
