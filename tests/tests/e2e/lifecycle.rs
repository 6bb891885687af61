//! The whole lifecycle across processes: `hourglassd dev` driven by the
//! `hourglass` CLI, as a user would.

use std::time::Duration;

use hourglass_e2e::{DevBroker, eventually};
use serde_json::Value;

fn id(value: &Value) -> String {
    value["id"].as_str().expect("an id").to_owned()
}

#[test]
fn cli_request_approve_use_expire_revoke_and_audit() {
    let broker = DevBroker::start();

    // alice asks for write access: it needs an SRE.
    let request =
        broker.json("alice", &["request", "orders-api", "--role", "write", "--for", "5s", "--reason", "fix order 42"]);
    assert_eq!(request["state"], "pending", "write needs an approval: {request}");
    let request_id = id(&request);

    // bob sees it in his inbox; alice cannot approve it herself.
    let inbox = broker.json("bob", &["requests"]);
    let waiting: Vec<&str> = inbox["awaiting_me"].as_array().unwrap().iter().filter_map(|r| r["id"].as_str()).collect();
    assert!(waiting.contains(&request_id.as_str()), "bob's inbox lists alice's request: {inbox}");
    let own = broker.hourglass("alice", &["approve", &request_id]);
    assert!(!own.ok && own.stderr.contains("your own request"), "self-approval refused: {}", own.stderr);

    // bob approves: the grant is issued at once and counts from now.
    let approved = broker.json("bob", &["approve", &request_id, "--comment", "go ahead"]);
    assert_eq!(approved["state"], "approved");
    let grant = &approved["grant"];
    assert_eq!(grant["state"], "active", "issued on approval: {approved}");
    assert_eq!(grant["request_id"], request_id.as_str());
    assert!(grant["expires_at"].as_str().is_some_and(|t| t.ends_with('Z')), "RFC 3339 deadline: {grant}");
    let grant_id = id(grant);

    // alice uses it from a shell.
    let env = broker.hourglass("alice", &["env", &grant_id, "--shell", "bash"]);
    assert!(
        env.ok && env.stdout.contains("export ORDERS_API_TOKEN='ey"),
        "shell exports: {}{}",
        env.stdout,
        env.stderr
    );
    let grants = broker.json("alice", &["grants"]);
    assert_eq!(grants.as_array().map(Vec::len), Some(1), "one live grant: {grants}");

    // At the deadline the broker expires and revokes it; history keeps it.
    let expired = eventually(Duration::from_secs(20), || {
        let all = broker.json("alice", &["grants", "--ended"]);
        let grant = all.as_array()?.iter().find(|g| g["id"] == grant_id.as_str())?.clone();
        (grant["state"] == "expired" && grant["revocation"]["status"] == "done").then_some(grant)
    })
    .expect("the grant expires and is revoked");
    assert_eq!(expired["ended_by"], "hourglass", "the broker ended it: {expired}");
    assert_eq!(broker.json("alice", &["grants"]).as_array().map(Vec::len), Some(0), "no live grants left");
    let gone = broker.hourglass("alice", &["env", &grant_id]);
    assert!(!gone.ok && gone.stderr.contains("expired"), "no credential after expiry: {}", gone.stderr);

    // Every step is in the audit log, and the chain verifies.
    let data_dir = broker.data_dir.to_str().unwrap();
    let verify = broker.hourglassd(&["audit", "verify", "--data-dir", data_dir]);
    assert!(verify.ok && verify.stdout.contains("intact"), "audit verifies: {}{}", verify.stdout, verify.stderr);
    let export = broker.hourglassd(&["audit", "export", "--data-dir", data_dir]);
    let actions: Vec<String> = export
        .stdout
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("JSON line")["action"].as_str().unwrap().to_owned())
        .collect();
    for action in [
        "request.filed",
        "request.decision_refused",
        "request.approved",
        "grant.issued",
        "grant.expired",
        "grant.revocation_attempt",
    ] {
        assert!(actions.iter().any(|a| a == action), "audit has {action}: {actions:?}");
    }
}

#[test]
fn cli_wait_returns_once_approved_with_the_grant() {
    let broker = DevBroker::start();
    let waiting = broker
        .command(
            "dave",
            &["request", "orders-api", "--role", "write", "--for", "10m", "--reason", "deploy", "--wait", "--json"],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("hourglass --wait starts");
    let request_id = eventually(Duration::from_secs(10), || {
        let inbox = broker.json("erin", &["requests"]);
        inbox["awaiting_me"].as_array()?.first().map(id)
    })
    .expect("dave's request reaches erin's inbox");
    broker.json("erin", &["approve", &request_id]);
    let output = waiting.wait_with_output().expect("--wait finishes");
    assert!(output.status.success(), "--wait exits 0 once approved: {}", String::from_utf8_lossy(&output.stderr));
    let done: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(done["state"], "approved", "{done}");
    assert_eq!(done["grant"]["state"], "active", "--wait returns with the grant ready: {done}");
}

#[test]
fn cli_denied_wait_fails_and_names_the_decider() {
    let broker = DevBroker::start();
    let waiting = broker
        .command(
            "alice",
            &["request", "orders-api", "--role", "write", "--for", "10m", "--reason", "curious", "--wait"],
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("hourglass --wait starts");
    let request_id = eventually(Duration::from_secs(10), || {
        broker.json("bob", &["requests"])["awaiting_me"].as_array()?.first().map(id)
    })
    .expect("request reaches bob");
    broker.json("bob", &["deny", &request_id, "--comment", "use read instead"]);
    let output = waiting.wait_with_output().expect("--wait finishes");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "a denied --wait exits non-zero");
    assert!(stdout.contains("denied by bob@acme.example") && stdout.contains("use read instead"), "{stdout}");
}

#[test]
fn cli_renew_then_revoke_ends_the_credential() {
    let broker = DevBroker::start();
    let request =
        broker.json("alice", &["request", "orders-api", "--role", "read", "--for", "1m", "--reason", "reports"]);
    assert_eq!(request["state"], "approved", "read is automatic: {request}");
    let grant_id = id(&request["grant"]);
    let before = request["grant"]["expires_at"].as_str().unwrap().to_owned();

    let renewed = broker.json("alice", &["renew", &grant_id, "--for", "10m"]);
    assert!(renewed["expires_at"].as_str().unwrap() > before.as_str(), "renewal moves the deadline: {renewed}");
    assert_eq!(renewed["renewal"]["state"], "approved", "within the renewals allowed without approval");
    let by_default = broker.json("alice", &["renew", &grant_id]);
    let (ten, default) = (renewed["expires_at"].as_str().unwrap(), by_default["expires_at"].as_str().unwrap());
    assert!(default > ten, "without --for, the role's default (15m) from now: {by_default}");

    let other = broker.hourglass("dave", &["revoke", &grant_id]);
    assert!(!other.ok && other.stderr.contains("does not allow"), "dave cannot revoke alice's grant: {}", other.stderr);
    let revoked = broker.json("alice", &["revoke", &grant_id, "--reason", "done"]);
    assert_eq!(revoked["state"], "revoked");
    assert_eq!(revoked["revocation"]["status"], "done", "the credential is removed at once: {revoked}");
    let env = broker.hourglass("alice", &["env", &grant_id]);
    assert!(!env.ok && env.stderr.contains("revoked"), "no credential after revoke: {}", env.stderr);
    let again = broker.hourglass("alice", &["revoke", &grant_id]);
    assert!(!again.ok && again.stderr.contains("not active"), "revoking twice is refused: {}", again.stderr);
}

#[test]
fn cli_bad_input_gets_a_clear_error_and_changes_nothing() {
    let broker = DevBroker::start();
    let cases: &[(&[&str], &str)] = &[
        (
            &["request", "orders-api", "--role", "read", "--for", "ten minutes", "--reason", "x"],
            "\"ten minutes\" is not a duration",
        ),
        (&["request", "orders-api", "--role", "read", "--for", "30", "--reason", "x"], "number without a unit"),
        (&["request", "orders-api", "--role", "read", "--for", "0s", "--reason", "x"], "shorter than this role allows"),
        (
            &["request", "orders-api", "--role", "read", "--for", "2h", "--reason", "x"],
            "longer than this role allows at once (1h)",
        ),
        (&["request", "orders-api", "--role", "write", "--for", "5m"], "orders-api/write needs a reason"),
        (&["request", "orders-db", "--role", "read", "--for", "5m", "--reason", "x"], "unknown resource \"orders-db\""),
        (&["request", "orders-api", "--role", "admin", "--for", "5m", "--reason", "x"], "has no role \"admin\""),
        (&["approve", "req-0000000000"], "no request req-0000000000"),
        (&["approve", "grt-0000000000"], "is a grant id, not a request id"),
        (&["renew", "grt-0000000000", "--for", "5m"], "no grant grt-0000000000"),
    ];
    for (args, expected) in cases {
        let run = broker.hourglass("alice", args);
        assert!(!run.ok, "{args:?} must fail");
        assert!(run.stderr.contains(expected), "{args:?}: expected {expected:?} in {:?}", run.stderr);
    }
    let nothing = broker.json("alice", &["requests"]);
    assert_eq!(nothing["mine"].as_array().map(Vec::len), Some(0), "no request was filed: {nothing}");

    let no_token = std::process::Command::new(hourglass_e2e::bin("hourglass"))
        .args(["grants"])
        .env("HOURGLASS_BROKER", &broker.url)
        .env_remove("HOURGLASS_TOKEN")
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("HOURGLASS_TOKEN"), "missing token is explained");
    let dead = std::process::Command::new(hourglass_e2e::bin("hourglass"))
        .args(["grants"])
        .env("HOURGLASS_BROKER", "http://127.0.0.1:9")
        .env("HOURGLASS_TOKEN", broker.token("alice"))
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&dead.stderr);
    assert!(!dead.status.success() && stderr.contains("cannot reach the broker at http://127.0.0.1:9"), "{stderr}");
}

#[test]
fn broker_restart_catches_up_on_missed_expiry() {
    let mut broker = DevBroker::start();
    let request =
        broker.json("alice", &["request", "orders-api", "--role", "read", "--for", "5s", "--reason", "quick look"]);
    let grant_id = id(&request["grant"]);
    broker.kill();
    // The deadline passes while the broker is down.
    std::thread::sleep(Duration::from_secs(6));
    let data_dir = broker.data_dir.clone();
    let restarted = DevBroker::start_in(&data_dir);
    let grant = eventually(Duration::from_secs(10), || {
        let all = restarted.json("alice", &["grants", "--ended"]);
        let grant = all.as_array()?.iter().find(|g| g["id"] == grant_id.as_str())?.clone();
        (grant["revocation"]["status"] == "done").then_some(grant)
    })
    .expect("the restarted broker revokes the grant it missed");
    assert_eq!(grant["state"], "expired", "{grant}");
    drop(restarted);
    drop(broker);
}

#[test]
fn policy_check_names_file_and_line_and_hot_reload_keeps_the_last_good_policy() {
    let broker = DevBroker::start();
    let policy_dir = broker.data_dir.join("policy");
    let dir = policy_dir.to_str().unwrap();
    let check = broker.hourglassd(&["policy", "check", dir]);
    assert!(check.ok && check.stdout.contains("valid"), "demo policy is valid: {}{}", check.stdout, check.stderr);

    let file = policy_dir.join("hourglass.toml");
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, good.replace("workflow = \"two-person\"", "workflow = \"three-person\"")).unwrap();
    let check = broker.hourglassd(&["policy", "check", dir]);
    assert!(!check.ok, "a broken policy fails the check");
    assert!(
        check.stderr.contains("hourglass.toml:") && check.stderr.contains("unknown workflow \"three-person\""),
        "names file, line and reason: {}",
        check.stderr
    );
    // Provider settings are checked too, not only the policy's own shape.
    std::fs::write(&file, good.replace("env_prefix = \"ORDERS_API\"", "env_prefix = \"orders api\"")).unwrap();
    let check = broker.hourglassd(&["policy", "check", dir]);
    assert!(
        !check.ok && check.stderr.contains("env_prefix \"orders api\""),
        "provider settings checked: {}",
        check.stderr
    );
    std::fs::write(&file, good.replace("workflow = \"two-person\"", "workflow = \"three-person\"")).unwrap();

    // The running broker refuses the change and keeps serving the old policy.
    std::thread::sleep(Duration::from_millis(2500));
    let still = broker.json("alice", &["request", "orders-api", "--role", "read", "--for", "5m", "--reason", "x"]);
    assert_eq!(still["state"], "approved", "last good policy in force: {still}");

    // A valid change is picked up: staging deploys may now last 10h.
    std::fs::write(&file, good.replace("max_duration = \"8h\"", "max_duration = \"10h\"")).unwrap();
    let applied = eventually(Duration::from_secs(10), || {
        let run = broker.hourglass("alice", &["request", "staging-api", "--role", "deploy", "--for", "9h", "--json"]);
        run.ok.then_some(run.stdout)
    });
    assert!(applied.is_some(), "the reloaded policy allows 9h on staging-api/deploy");
}

#[test]
fn break_glass_is_reviewed_after_the_fact_from_the_cli_once() {
    let broker = DevBroker::start();
    let glass = broker.json(
        "dave",
        &["request", "orders-api", "--role", "write", "--for", "10m", "--reason", "checkout down", "--break-glass"],
    );
    assert_eq!(glass["state"], "approved", "break glass: at once: {glass}");
    let grant = glass["grant"]["id"].as_str().or(glass["grant_id"].as_str()).expect("a grant").to_owned();

    let waiting = broker.json("bob", &["reviews"]);
    assert_eq!(waiting[0]["grant"]["id"], grant.as_str(), "bob may review it: {waiting}");
    let listed = broker.hourglass("bob", &["reviews"]);
    assert!(
        listed.ok && listed.stdout.contains(&grant) && listed.stdout.contains("checkout down"),
        "{}",
        listed.stdout
    );
    let own = broker.hourglass("dave", &["review", &grant, "--verdict", "justified", "--comment", "mine"]);
    assert!(!own.ok && own.stderr.contains("your own"), "{}", own.stderr);

    let reviewed =
        broker.json("bob", &["review", &grant, "--verdict", "unjustified", "--comment", "no incident was open"]);
    assert_eq!(reviewed["review"]["verdict"], "unjustified", "{reviewed}");
    assert_eq!(broker.json("erin", &["reviews"]), serde_json::json!([]), "reviewed: nothing left for anyone");
    let again = broker.hourglass("erin", &["review", &grant, "--verdict", "justified", "--comment", "fine"]);
    assert!(!again.ok && again.stderr.contains("reviewed already, by bob@acme.example"), "{}", again.stderr);
    let history = broker.hourglass("dave", &["history"]);
    assert!(history.ok && history.stdout.contains("reviewed"), "dave's history shows the review: {}", history.stdout);
}
