//! HTTPS between the broker and its clients, with real certificates and
//! real handshakes: `hourglassd dev`'s local CA, a configured certificate
//! reloaded on SIGHUP, a CA pinned by the client, and the refusal to serve
//! plain HTTP beyond loopback.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hourglass_client::Trust;
use hourglass_e2e::ca::TestCa;
use hourglass_e2e::issuer::JwtIssuer;
use hourglass_e2e::{DevBroker, Run, bin, eventually};

/// The demo policy, trusting `idp`, and `[broker]` lines added after `data_dir`.
fn serve_config(idp: &JwtIssuer, broker_lines: &str) -> tempfile::TempDir {
    let config = tempfile::tempdir().expect("temp dir");
    hourglass_e2e::copy_demo_policy(config.path(), |toml| toml);
    idp.trust_in(config.path());
    let file = config.path().join("hourglass.toml");
    let toml = std::fs::read_to_string(&file).expect("hourglass.toml");
    let toml = toml.replacen("data_dir = \"data\"\n", &format!("data_dir = \"data\"\n{broker_lines}"), 1);
    std::fs::write(&file, toml).expect("hourglass.toml");
    config
}

/// `hourglass whoami --json` as `user` of `broker`, pinning `ca` (or with no pin).
fn whoami(broker: &DevBroker, user: &str, ca: Option<&Path>) -> Run {
    let mut command = broker.command(user, &["whoami", "--json"]);
    match ca {
        Some(ca) => command.env("HOURGLASS_CA", ca),
        None => command.env_remove("HOURGLASS_CA"),
    };
    Run::from(command.output().expect("hourglass runs"))
}

#[test]
fn dev_serves_https_that_clients_trust_through_its_ca_only() {
    let broker = DevBroker::start();
    assert!(broker.url.starts_with("https://127.0.0.1:"), "dev serves HTTPS by default: {}", broker.url);
    let ca = broker.ca.clone().expect("dev prints HOURGLASS_CA");
    assert_eq!(ca, broker.data_dir.join("tls/ca.pem"), "the CA is kept in the data directory");

    let me = broker.json("alice", &["whoami"]);
    assert_eq!(me["id"], "alice@acme.example", "the CLI pinning the dev CA reaches the broker: {me}");

    let unpinned = whoami(&broker, "alice", None);
    assert!(!unpinned.ok, "the dev CA is not among the system's roots: {}", unpinned.stdout);
    assert!(
        unpinned.stderr.contains("not trusted") && unpinned.stderr.contains("HOURGLASS_CA"),
        "the error says what is wrong and how to fix it: {}",
        unpinned.stderr
    );

    // Nothing is answered in the clear on the HTTPS port.
    let authority = broker.url.strip_prefix("https://").expect("https");
    let plain = Run::from(
        Command::new(bin("hourglass"))
            .args(["whoami"])
            .env("HOURGLASS_BROKER", format!("http://{authority}"))
            .env("HOURGLASS_TOKEN", broker.token("alice"))
            .env_remove("HOURGLASS_CA")
            .output()
            .expect("hourglass runs"),
    );
    assert!(!plain.ok, "plain HTTP to the TLS port gets no answer: {}", plain.stdout);
}

#[test]
fn client_refuses_a_broker_certificate_from_an_unpinned_ca() {
    let broker = DevBroker::start();
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let other_ca = elsewhere.path().join("other-ca.pem");
    TestCa::new("Another CA").write(&other_ca);

    let refused = whoami(&broker, "alice", Some(&other_ca));
    assert!(!refused.ok, "a certificate from another CA is refused: {}", refused.stdout);
    assert!(
        refused.stderr.contains("not signed by the pinned CA") && refused.stderr.contains("other-ca.pem"),
        "the error names the pinned CA: {}",
        refused.stderr
    );

    // The same through the library, as the agent and the desktop app use it.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let trust = Trust::pinned(&broker.url, &other_ca).expect("the other CA loads");
    let client = hourglass_client::Client::with_trust(&broker.url, trust, broker.token("alice")).expect("a client");
    let error = runtime.block_on(client.whoami()).expect_err("the handshake fails");
    assert!(matches!(error, hourglass_client::Error::Unreachable { .. }), "no answer is read: {error}");
    let pinned = runtime.block_on(broker.client("alice").whoami()).expect("the dev CA is accepted");
    assert_eq!(pinned.principal.id, "alice@acme.example", "pinning the right CA works: {pinned:?}");
}

#[test]
fn dev_keeps_its_ca_across_restarts_so_clients_keep_trusting_it() {
    let data = tempfile::tempdir().expect("temp dir");
    let mut first = DevBroker::start_in(data.path());
    let ca = first.ca.clone().expect("a CA");
    let pinned = std::fs::read(&ca).expect("the CA a user pinned");
    first.kill();

    let second = DevBroker::start_in(data.path());
    assert_eq!(second.ca.as_deref(), Some(ca.as_path()), "the same CA file");
    assert_eq!(std::fs::read(&ca).expect("CA"), pinned, "the same CA: clients keep trusting it");
    let me = whoami(&second, "alice", Some(&ca));
    assert!(me.ok, "the restarted broker's new certificate chains to the pinned CA: {}", me.stderr);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.path().join("tls/ca.key")).expect("the CA key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the CA key is private to the broker's user");
    }
}

#[test]
fn broker_serves_https_with_the_configured_certificate_and_reloads_it_on_sighup() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (first_ca, second_ca) = (TestCa::new("First CA"), TestCa::new("Second CA"));
    let (first_pem, second_pem) = (dir.path().join("first-ca.pem"), dir.path().join("second-ca.pem"));
    first_ca.write(&first_pem);
    second_ca.write(&second_pem);
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    let (cert_pem, key_pem) = first_ca.server(&["localhost", "127.0.0.1"]);
    std::fs::write(&cert, cert_pem).expect("certificate");
    std::fs::write(&key, key_pem).expect("key");

    let idp = JwtIssuer::new("idp-1");
    let config = serve_config(&idp, &format!("tls_cert = \"{}\"\ntls_key = \"{}\"\n", cert.display(), key.display()));
    let tokens =
        BTreeMap::from([("alice".to_owned(), idp.token("alice@acme.example", &["engineers"], "hourglass", 3600))]);
    let mut broker = DevBroker::serve(config.path(), tokens);
    assert!(broker.url.starts_with("https://"), "a broker with a certificate serves HTTPS: {}", broker.url);

    broker.ca = Some(first_pem.clone());
    let me = broker.json("alice", &["whoami"]);
    assert_eq!(me["id"], "alice@acme.example", "the configured certificate verifies against its CA: {me}");
    assert!(!whoami(&broker, "alice", Some(&second_pem)).ok, "and not against another CA");

    // A renewed certificate from another CA, then SIGHUP: served from now on.
    let (cert_pem, key_pem) = second_ca.server(&["localhost", "127.0.0.1"]);
    std::fs::write(&cert, cert_pem).expect("certificate");
    std::fs::write(&key, key_pem).expect("key");
    let pid = broker.pid().expect("running").to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().expect("kill runs").success(), "SIGHUP sent");
    let reloaded = eventually(Duration::from_secs(10), || whoami(&broker, "alice", Some(&second_pem)).ok.then_some(()));
    assert!(reloaded.is_some(), "after SIGHUP the broker presents the new certificate");
    assert!(!whoami(&broker, "alice", Some(&first_pem)).ok, "and no longer the old one");

    // A broken file on reload: the certificate in use stays.
    std::fs::write(&key, "not a key").expect("key");
    assert!(Command::new("kill").args(["-HUP", &pid]).status().expect("kill runs").success(), "SIGHUP sent");
    std::thread::sleep(Duration::from_millis(500));
    let kept = whoami(&broker, "alice", Some(&second_pem));
    assert!(kept.ok, "a failed reload keeps the certificate in use: {}", kept.stderr);
    broker.ca = Some(second_pem);
}

#[test]
fn dev_refuses_a_non_loopback_address_and_a_production_configuration() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    // A broker that starts serving (the refusal missing) is stopped after
    // a while rather than left to hang the test: it counts as started.
    let dev = |args: &[&str]| {
        let mut child = Command::new(bin("hourglassd"))
            .args(["dev", "--data-dir"])
            .arg(data_dir.path())
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("hourglassd runs");
        let exited = eventually(Duration::from_secs(20), || child.try_wait().ok().flatten()).is_some();
        if !exited {
            let _ = child.kill();
        }
        let output = child.wait_with_output().expect("hourglassd's output");
        Run {
            ok: !exited || output.status.success(),
            stdout: String::new(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    };
    let everywhere = dev(&["--listen", "0.0.0.0:0"]);
    assert!(!everywhere.ok, "the password-less demo login on every interface does not start");
    assert!(
        everywhere.stderr.contains("refusing to run the development broker on 0.0.0.0")
            && everywhere.stderr.contains("loopback"),
        "the error says why and names the way out: {}",
        everywhere.stderr
    );

    // The demo policy with a production login added: refused on loopback too.
    let policy = data_dir.path().join("policy");
    let toml = std::fs::read_to_string(policy.join("hourglass.toml")).expect("the demo policy was written");
    let login = "[broker.login]\nissuer = \"https://idp.acme.example\"\nclient_id = \"hourglass\"\n\n";
    std::fs::write(policy.join("hourglass.toml"), format!("{login}{toml}")).expect("written");
    let production = dev(&["--listen", "127.0.0.1:0", "--config", policy.to_str().expect("a UTF-8 path")]);
    assert!(!production.ok, "a configuration that logs real people in does not start in dev mode");
    assert!(
        production.stderr.contains("[broker.login]") && production.stderr.contains("hourglassd serve"),
        "the error names the table and the way out: {}",
        production.stderr
    );
}

#[test]
fn non_loopback_listen_without_tls_refused() {
    let idp = JwtIssuer::new("idp-1");
    let config = serve_config(&idp, "");
    let refused = Run::from(
        Command::new(bin("hourglassd"))
            .args(["serve", "--listen", "0.0.0.0:0", "--config"])
            .arg(config.path())
            .output()
            .expect("hourglassd runs"),
    );
    assert!(!refused.ok, "plain HTTP on every interface does not start");
    assert!(
        refused.stderr.contains("refusing to serve plain HTTP on 0.0.0.0")
            && refused.stderr.contains("tls_cert")
            && refused.stderr.contains("insecure_http = true"),
        "the error says why and names the ways out: {}",
        refused.stderr
    );

    // The operator's explicit choice (a TLS-terminating proxy in front) is honoured.
    let behind_proxy = serve_config(&idp, "insecure_http = true\n");
    let tokens =
        BTreeMap::from([("alice".to_owned(), idp.token("alice@acme.example", &["engineers"], "hourglass", 3600))]);
    let broker = DevBroker::serve_on(behind_proxy.path(), "0.0.0.0:0", tokens);
    assert!(broker.url.starts_with("http://0.0.0.0:"), "it serves plain HTTP: {}", broker.url);
    let me = broker.json("alice", &["whoami"]);
    assert_eq!(me["id"], "alice@acme.example", "and answers: {me}");
}
