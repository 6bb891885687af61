//! The exec provider running a real hook (`tests/hooks/record.sh`) under a
//! real `hourglassd dev`, driven by the `hourglass` CLI.

use std::path::Path;
use std::time::Duration;

use hourglass_e2e::{DevBroker, eventually, policy_dir};
use serde_json::{Value, json};

/// Engineers may request `orders-cloud/deploy` and get it at once.
const CEDAR: &str = r#"
@id("engineers-may-request")
permit (principal in Group::"engineers", action == Action::"request", resource);

@id("orders-cloud-is-automatic")
permit (principal in Group::"engineers", action == Action::"auto_approve", resource in Resource::"orders-cloud");
"#;

/// A broker whose `orders-cloud` resource runs the recording hook, which
/// logs to and takes its orders from `work`.
struct Exec {
    broker: DevBroker,
    work: tempfile::TempDir,
    policy: tempfile::TempDir,
}

impl Exec {
    fn start(timeout: &str, env: &[(&str, &str)]) -> Exec {
        let work = tempfile::tempdir().expect("work dir");
        let toml = format!(
            r#"
[defaults]
workflow = "sre-review"
min_duration = "5s"
max_duration = "1h"
default_duration = "15m"
max_total = "4h"
renewals_without_approval = 2
pending_timeout = "30m"
reason_required = true

[workflows.sre-review]
approvals = [{{ group = "sre", count = 1 }}]

[resources.orders-cloud]
description = "Orders cloud account, through a team's hook"
provider = "exec"
labels = ["production"]
settings = {{ command = ["hooks/record.sh", "{work}"], timeout = "{timeout}", pass_env = ["PASSED_TO_HOOK"] }}

[resources.orders-cloud.roles.deploy]
description = "Deploy orders"
settings = {{ cloud_role = "orders-deployer", max_session = 3600 }}
"#,
            work = work.path().display()
        );
        let policy = policy_dir(&toml, CEDAR);
        // The hook lives in the policy directory, where `hooks/record.sh` resolves.
        let hook = policy.path().join("hooks/record.sh");
        std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
        std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("hooks/record.sh"), &hook).expect("hook copied");
        set_executable(&hook);
        let broker = DevBroker::start_with_policy(policy.path(), env);
        Exec { broker, work, policy }
    }

    /// Makes the hook fail `action` with `stderr`, or succeed again (`None`).
    fn fail(&self, action: &str, stderr: Option<&str>) {
        let marker = self.work.path().join(format!("fail-{action}"));
        match stderr {
            Some(text) => std::fs::write(marker, text).unwrap(),
            None => std::fs::remove_file(marker).unwrap(),
        }
    }

    /// Every call the hook logged: its action and its stdin.
    fn calls(&self) -> Vec<(String, Value)> {
        let log = std::fs::read_to_string(self.work.path().join("calls.log")).unwrap_or_default();
        log.lines()
            .map(|line| {
                let (action, input) = line.split_once(' ').expect("ACTION JSON");
                (action.to_owned(), serde_json::from_str(input).expect("the hook got JSON on stdin"))
            })
            .collect()
    }

    fn actions(&self) -> Vec<String> {
        self.calls().into_iter().map(|(action, _)| action).collect()
    }

    fn request(&self) -> Value {
        let request = self.broker.json(
            "alice",
            &["request", "orders-cloud", "--role", "deploy", "--for", "15m", "--reason", "deploy orders"],
        );
        assert_eq!(request["grant"]["state"], "active", "issued at once through the hook: {request}");
        request["grant"].clone()
    }

    /// alice's grant `id` among her ended grants, once `done` says so.
    fn ended(&self, id: &str, done: impl Fn(&Value) -> bool) -> Option<Value> {
        eventually(Duration::from_secs(30), || {
            let all = self.broker.json("alice", &["grants", "--ended"]);
            let grant = all.as_array()?.iter().find(|g| g["id"] == id)?.clone();
            done(&grant).then_some(grant)
        })
    }

    /// The audit log, one JSON event per line.
    fn audit(&self) -> Vec<Value> {
        let data_dir = self.broker.data_dir.to_str().unwrap();
        let export = self.broker.hourglassd(&["audit", "export", "--data-dir", data_dir]);
        assert!(export.ok, "audit export runs: {}", export.stderr);
        export.stdout.lines().map(|line| serde_json::from_str(line).expect("JSON line")).collect()
    }
}

#[test]
fn exec_credentials_are_never_stored_and_are_minted_again_after_a_restart() {
    let mut exec = Exec::start("10s", &[]);
    let grant = exec.request();
    let grant_id = id(&grant);
    let env = exec.broker.hourglass("alice", &["env", &grant_id, "--shell", "bash"]);
    assert!(env.stdout.contains("export ORDERS_CLOUD_KEY='key-issue-1'"), "issued: {}{}", env.stdout, env.stderr);

    // Killed hard: nothing is written on the way out.
    exec.broker.kill();
    let data_dir = exec.broker.data_dir.clone();
    let mut stored = Vec::new();
    for file in std::fs::read_dir(&data_dir).unwrap().flatten() {
        if file.file_name().to_string_lossy().starts_with("hourglass.db") {
            stored.extend(std::fs::read(file.path()).unwrap());
        }
    }
    assert!(!stored.is_empty(), "the store is in {}", data_dir.display());
    let needle = b"key-issue-1";
    assert!(!stored.windows(needle.len()).any(|w| w == needle), "the hook's credential is not in the store");
    assert!(
        stored.windows(grant_id.len()).any(|w| w == grant_id.as_bytes()),
        "while the grant is (the search above can find what is there)"
    );

    let restarted = DevBroker::start_in_with_policy(&data_dir, exec.policy.path(), &[]);
    let env = restarted.hourglass("alice", &["env", &grant_id, "--shell", "bash"]);
    assert!(env.ok, "credentials after a restart: {}", env.stderr);
    assert!(env.stdout.contains("export ORDERS_CLOUD_KEY='key-renew-2'"), "minted again: {}", env.stdout);
    let calls = exec.calls();
    let (action, input) = calls.last().unwrap();
    assert_eq!(action, "renew", "a reissue runs renew");
    assert_eq!(input["reissue"], true, "marked as a reissue: {input}");
    assert_eq!(input["grant"]["expires_at"], grant["expires_at"], "for the same deadline: {input}");
    assert_eq!(input["state"], json!({"account": format!("acct-{grant_id}")}), "with the stored state: {input}");
    let again = restarted.hourglass("alice", &["env", &grant_id, "--shell", "bash"]);
    assert!(again.stdout.contains("key-renew-2") && exec.calls().len() == 2, "then served from memory again");
    drop(restarted);
}

fn set_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("hook made executable");
}

fn id(grant: &Value) -> String {
    grant["id"].as_str().expect("a grant id").to_owned()
}

/// Whether process `pid` is gone; a zombie (killed, not yet reaped by
/// init) counts as gone.
fn process_gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn exec_hook_receives_the_grant_as_json_and_its_credentials_reach_the_owner() {
    let exec = Exec::start("10s", &[]);
    let grant = exec.request();
    let grant_id = id(&grant);

    // issue: the hook got the grant, the resource and the role's settings.
    let calls = exec.calls();
    assert_eq!(exec.actions(), ["issue"], "one hook run for the issue");
    let (_, input) = &calls[0];
    assert_eq!(input["version"], 1, "protocol version: {input}");
    assert_eq!(input["action"], "issue", "{input}");
    assert_eq!(input["reissue"], false, "{input}");
    assert_eq!(input["grant"]["id"], grant_id.as_str(), "the grant: {input}");
    assert_eq!(input["grant"]["owner"], "alice@acme.example", "its owner: {input}");
    assert_eq!(input["grant"]["role"], "deploy", "{input}");
    assert_eq!(input["grant"]["expires_at"], grant["expires_at"], "its deadline: {input}");
    assert_eq!(input["resource"]["name"], "orders-cloud", "{input}");
    assert_eq!(input["resource"]["labels"], json!(["production"]), "{input}");
    assert_eq!(input["role"]["name"], "deploy", "{input}");
    assert_eq!(
        input["role"]["settings"],
        json!({"cloud_role": "orders-deployer", "max_session": 3600}),
        "role settings, so one hook serves several roles: {input}"
    );
    assert_eq!(input["state"], Value::Null, "nothing before issue: {input}");
    assert!(input["now"].as_str().is_some_and(|now| now.ends_with('Z')), "the broker's time: {input}");

    // The owner gets the hook's credentials; the broker holds them in memory.
    let env = exec.broker.hourglass("alice", &["env", &grant_id, "--shell", "bash"]);
    assert!(env.ok, "hourglass env works: {}", env.stderr);
    assert!(env.stdout.contains("export ORDERS_CLOUD_KEY='key-issue-1'"), "the hook's key: {}", env.stdout);
    assert!(env.stdout.contains("export ORDERS_CLOUD_REGION='eu-west-1'"), "and region: {}", env.stdout);
    let credential = exec.broker.json("alice", &["env", &grant_id]);
    let secret = |name: &str| {
        credential["env"].as_array().unwrap().iter().find(|v| v["name"] == name).map(|v| v["secret"].clone())
    };
    assert_eq!(secret("ORDERS_CLOUD_KEY"), Some(json!(true)), "secret by default: {credential}");
    assert_eq!(secret("ORDERS_CLOUD_REGION"), Some(json!(false)), "public when the hook says so: {credential}");
    assert_eq!(exec.actions(), ["issue"], "fetching credentials runs no hook while the broker has them");

    // renew: the hook gets the new deadline and its own state back.
    let renewed = exec.broker.json("alice", &["renew", &grant_id, "--for", "30m"]);
    assert!(renewed["expires_at"].as_str() > grant["expires_at"].as_str(), "the deadline moved: {renewed}");
    let (action, input) = exec.calls().pop().unwrap();
    assert_eq!(action, "renew", "renew runs the hook");
    assert_eq!(input["grant"]["expires_at"], renewed["expires_at"], "with the new deadline: {input}");
    assert_eq!(input["state"], json!({"account": format!("acct-{grant_id}")}), "and the issue's state: {input}");
    let env = exec.broker.hourglass("alice", &["env", &grant_id, "--shell", "bash"]);
    assert!(env.stdout.contains("export ORDERS_CLOUD_KEY='key-renew-2'"), "renew's credentials: {}", env.stdout);

    // revoke: the hook removes the credential; the broker forgets it.
    let revoked = exec.broker.json("alice", &["revoke", &grant_id, "--reason", "deployed"]);
    assert_eq!(revoked["state"], "revoked", "{revoked}");
    assert_eq!(revoked["revocation"]["status"], "done", "the hook confirmed at once: {revoked}");
    let (action, input) = exec.calls().pop().unwrap();
    assert_eq!(action, "revoke", "revoke runs the hook");
    assert_eq!(input["state"], json!({"account": format!("acct-{grant_id}")}), "with the state: {input}");
    let gone = exec.broker.hourglass("alice", &["env", &grant_id]);
    assert!(!gone.ok && gone.stderr.contains("revoked"), "no credential after revoke: {}", gone.stderr);

    // What the hook verified is in the audit log; its credentials are not.
    let audit = exec.audit();
    let verified = |action: &str| {
        audit.iter().find(|e| e["action"] == action && e["target"] == grant_id.as_str()).map(|e| e.to_string())
    };
    let issued = verified("grant.issued").expect("grant.issued audited");
    assert!(issued.contains(&format!("acct-{grant_id}")), "the hook's verification is audited: {issued}");
    let attempt = verified("grant.revocation_attempt").expect("revocation audited");
    assert!(attempt.contains(&format!("\"removed\":\"acct-{grant_id}\"")), "what revoke verified: {attempt}");
    let everything: String = audit.iter().map(Value::to_string).collect();
    assert!(!everything.contains("key-issue-1") && !everything.contains("key-renew-2"), "no credential audited");
}

/// A renewal whose hook is still at work when its grant is revoked extends
/// nothing, and the audit says so: without it the renewal reads approved
/// and nothing tells that it was never applied.
#[test]
fn exec_renewal_finishing_after_its_grant_was_revoked_is_audited_as_not_applied() {
    let exec = Exec::start("20s", &[]);
    let grant_id = id(&exec.request());
    std::fs::write(exec.work.path().join("hang-renew"), "").unwrap();
    let renewed = std::thread::scope(|scope| {
        let renewing = scope.spawn(|| exec.broker.hourglass("alice", &["renew", &grant_id, "--for", "30m"]));
        let sleep = eventually(Duration::from_secs(20), || {
            let pid = std::fs::read_to_string(exec.work.path().join("sleep.pid")).ok()?;
            (!pid.trim().is_empty()).then(|| pid.trim().to_owned())
        })
        .expect("the renew hook started and waits");
        // The hook's revoke waits for its renew (one hook at a time per
        // grant): the revocation is recorded at once, its hook runs after.
        let revoking = scope.spawn(|| exec.broker.json("alice", &["revoke", &grant_id, "--reason", "done early"]));
        assert!(exec.ended(&grant_id, |g| g["state"] == "revoked").is_some(), "revoked while renewing");
        let killed = std::process::Command::new("kill").arg(&sleep).status().expect("kill runs");
        assert!(killed.success(), "the renew hook's wait ended");
        let revoked = revoking.join().expect("revoke returned");
        assert_eq!(revoked["revocation"]["status"], "done", "and its hook ran after the renewal's: {revoked}");
        renewing.join().expect("renew returned")
    });
    assert!(!renewed.ok, "the renewal of a revoked grant fails");
    assert!(renewed.stderr.contains(&format!("grant {grant_id} is revoked")), "says why: {}", renewed.stderr);

    let audit = exec.audit();
    let of_grant = |action: &'static str| {
        let grant_id = grant_id.clone();
        audit.iter().filter(move |e| e["action"] == action && e["target"] == grant_id.as_str())
    };
    assert_eq!(of_grant("grant.renewed").count(), 0, "nothing renewed");
    let refusal = of_grant("grant.renewal_refused").next().expect("the renewal not applied is audited").to_string();
    assert!(
        refusal.contains("not applied") && refusal.contains("is revoked") && refusal.contains("\"failed\""),
        "as a failed renewal, naming why: {refusal}"
    );
    let filed = audit
        .iter()
        .find(|e| e["action"] == "request.filed" && e.to_string().contains(&format!("\"renews\":\"{grant_id}\"")))
        .expect("the renewal's request was filed");
    let request = filed["target"].as_str().expect("the request's id").to_owned();
    assert!(refusal.contains(&request), "naming the renewal's request {request}: {refusal}");
}

#[test]
fn exec_hook_never_sees_the_brokers_secret_environment() {
    let admin_dsn = "postgres://admin:hunter2-admin@db.internal/orders";
    let exec = Exec::start("10s", &[("ORDERS_DB_ADMIN_DSN", admin_dsn), ("PASSED_TO_HOOK", "visible")]);
    exec.request();
    let env = std::fs::read_to_string(exec.work.path().join("env.issue")).expect("the hook recorded its environment");
    assert!(!env.contains("ORDERS_DB_ADMIN_DSN") && !env.contains("hunter2"), "the broker's secret stays out: {env}");
    assert!(!env.contains("HOURGLASS_LOG"), "nothing of the broker's own environment is passed: {env}");
    assert!(env.lines().any(|line| line == "PASSED_TO_HOOK=visible"), "pass_env passes what it lists: {env}");
    assert!(env.lines().any(|line| line == "HOURGLASS_ACTION=issue"), "the action is in the environment: {env}");
}

#[test]
fn exec_failing_issue_fails_the_grant_with_the_hooks_stderr() {
    let exec = Exec::start("10s", &[]);
    exec.fail("issue", Some("quota exceeded for team orders\n"));
    let run = exec.broker.hourglass(
        "alice",
        &["request", "orders-cloud", "--role", "deploy", "--for", "15m", "--reason", "deploy orders"],
    );
    assert!(!run.ok, "the request fails when the hook does");
    assert!(
        run.stderr.contains("orders-cloud: exec hook issue failed (exit status 3): quota exceeded for team orders"),
        "the CLI names the hook's complaint: {}",
        run.stderr
    );
    assert_eq!(exec.broker.json("alice", &["grants"]).as_array().map(Vec::len), Some(0), "no live grant");
    let ended = exec.broker.json("alice", &["grants", "--ended"]);
    let grant = ended.as_array().and_then(|all| all.first()).cloned().expect("the failed grant is listed");
    assert_eq!(grant["state"], "failed", "{grant}");

    // The hook is asked to undo whatever the failed issue half-did.
    let grant =
        exec.ended(&id(&grant), |g| g["revocation"]["status"] == "done").expect("the failed grant's cleanup completes");
    assert_eq!(grant["state"], "failed", "{grant}");
    let calls = exec.calls();
    let actions: Vec<&str> = calls.iter().map(|(action, _)| action.as_str()).collect();
    assert_eq!(actions, ["issue", "revoke"], "issue failed, then revoke cleaned up");
    assert_eq!(calls[1].1["state"], Value::Null, "with no state, as none was stored: {}", calls[1].1);

    let audit = exec.audit();
    let failed = audit.iter().find(|e| e["action"] == "grant.issue_failed").expect("grant.issue_failed audited");
    assert!(
        failed["reason"].as_str().is_some_and(|reason| reason.contains("quota exceeded for team orders")),
        "the hook's stderr is in the audit log: {failed}"
    );
}

#[test]
fn exec_failing_revoke_is_retried_until_it_succeeds() {
    let exec = Exec::start("10s", &[]);
    let grant_id = id(&exec.request());
    exec.fail("revoke", Some("cloud api unavailable"));

    let revoked = exec.broker.json("alice", &["revoke", &grant_id]);
    assert_eq!(revoked["state"], "revoked", "revoked at once in the broker: {revoked}");
    assert_ne!(revoked["revocation"]["status"], "done", "but not confirmed by the hook: {revoked}");
    assert!(
        revoked["revocation"]["last_error"].as_str().is_some_and(|e| e.contains("cloud api unavailable")),
        "the hook's stderr says why: {revoked}"
    );
    let gone = exec.broker.hourglass("alice", &["env", &grant_id]);
    assert!(!gone.ok, "no credential while the revocation is pending: {}", gone.stdout);

    let retried = exec.ended(&grant_id, |g| g["revocation"]["attempts"].as_u64() > Some(1));
    let retried = retried.expect("the scheduler retries the failed revocation");
    assert_ne!(retried["revocation"]["status"], "done", "still failing while the hook fails: {retried}");

    exec.fail("revoke", None);
    let done = exec.ended(&grant_id, |g| g["revocation"]["status"] == "done").expect("retried until it succeeds");
    assert_eq!(done["state"], "revoked", "{done}");

    let attempts: Vec<Value> = exec
        .audit()
        .into_iter()
        .filter(|e| e["action"] == "grant.revocation_attempt" && e["target"] == grant_id.as_str())
        .collect();
    assert!(attempts.len() >= 3, "every attempt is audited: {attempts:?}");
    let (last, failures) = attempts.split_last().unwrap();
    assert!(
        failures.iter().all(|e| e["reason"].as_str().is_some_and(|r| r.contains("cloud api unavailable"))),
        "each failure records the hook's stderr: {failures:?}"
    );
    assert!(last["reason"].is_null() && last.to_string().contains("removed"), "the last one succeeded: {last}");
}

/// A revocation that hangs at the target holds up its own grant only: the
/// scheduler expires a grant whose deadline comes after it while the first
/// is still being revoked. Fails with a scheduler that waits for each batch
/// of revocations before it keeps the next deadline: the second grant then
/// expires only once the first revocation has timed out, and been recorded.
#[test]
fn exec_hanging_revocation_delays_no_other_grants_expiry() {
    let exec = Exec::start("20s", &[]);
    std::fs::write(exec.work.path().join("hang-revoke"), "").unwrap();
    let file = |user: &str, duration: &str| {
        let args = ["request", "orders-cloud", "--role", "deploy", "--for", duration, "--reason", "deploy orders"];
        let request = exec.broker.json(user, &args);
        assert_eq!(request["grant"]["state"], "active", "{request}");
        id(&request["grant"])
    };
    let first = file("alice", "5s");
    let second = file("dave", "8s");
    let ended = |user: &str, grant: &str| {
        let all = exec.broker.json(user, &["grants", "--ended"]);
        all.as_array()?.iter().find(|g| g["id"] == grant).cloned()
    };
    let expired = eventually(Duration::from_secs(40), || ended("dave", &second).filter(|g| g["state"] == "expired"));
    assert!(expired.is_some(), "dave's grant expires at its deadline");
    let first = ended("alice", &first).expect("alice's grant ended first");
    assert_eq!(first["state"], "expired", "{first}");
    assert_eq!(
        first["revocation"]["attempts"].as_u64().unwrap_or(0),
        0,
        "alice's revocation still hangs at the hook meanwhile: {first}"
    );
}

#[test]
fn exec_hanging_hook_times_out_and_leaves_no_process_behind() {
    let exec = Exec::start("2s", &[]);
    std::fs::write(exec.work.path().join("hang-issue"), "").unwrap();
    let run = exec.broker.hourglass(
        "alice",
        &["request", "orders-cloud", "--role", "deploy", "--for", "15m", "--reason", "deploy orders"],
    );
    assert!(!run.ok, "a hook that hangs fails the request");
    assert!(run.stderr.contains("exec hook issue timed out after 2s"), "says it timed out: {}", run.stderr);
    let pid = std::fs::read_to_string(exec.work.path().join("sleep.pid")).expect("the hook started its sleep");
    let pid = pid.trim();
    assert!(
        eventually(Duration::from_secs(10), || process_gone(pid).then_some(())).is_some(),
        "the hook's own child (sleep, pid {pid}) was killed with it"
    );
    let ended = exec.broker.json("alice", &["grants", "--ended"]);
    assert_eq!(ended[0]["state"], "failed", "the grant failed: {ended}");
}

/// Answers `issue` with what it could read of the broker's secrets: the
/// broker's environment, the store key, the store (paths from `SPY_DATA`).
const SPY_HOOK: &str = r#"#!/bin/sh
can() { if cat "$1" >/dev/null 2>&1; then echo yes; else echo no; fi; }
if [ "$1" = issue ]; then
  printf '{"state":{},"env":{"SPY_ENVIRON":"%s","SPY_STORE_KEY":"%s","SPY_STORE":"%s","SPY_UID":"%s"},"public":["SPY_ENVIRON","SPY_STORE_KEY","SPY_STORE","SPY_UID"]}' \
    "$(can /proc/$PPID/environ)" "$(can "$SPY_DATA/keys/store.key")" "$(can "$SPY_DATA/hourglass.db")" "$(id -u)"
fi
"#;

/// The effective user id of this process (from /proc: no libc needed).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

#[test]
fn exec_hook_run_as_another_user_cannot_read_the_brokers_environment_or_keys() {
    assert_eq!(
        effective_uid(),
        Some(0),
        "switching a hook's user needs a root broker: run the suite as root (CI does)"
    );
    let data = tempfile::tempdir().expect("a data directory (0700, as the broker's)");
    let resource = |name: &str, run_as: &str| {
        format!(
            "[resources.{name}]\nprovider = \"exec\"\nsettings = {{ command = [\"hooks/spy.sh\"], pass_env = [\"SPY_DATA\"]{run_as} }}\n[resources.{name}.roles.deploy]\n"
        )
    };
    let toml = format!(
        "[defaults]\nworkflow = \"review\"\nreason_required = false\n[workflows.review]\napprovals = [{{ group = \"sre\", count = 1 }}]\n{}{}",
        resource("as-broker", ""),
        resource("as-nobody", ", run_as = \"nobody\""),
    );
    let policy = policy_dir(&toml, CEDAR.replace("orders-cloud", "as-broker").as_str());
    std::fs::write(
        policy.path().join("auto.cedar"),
        r#"permit (principal in Group::"engineers", action == Action::"auto_approve", resource in Resource::"as-nobody");"#,
    )
    .expect("auto.cedar");
    // The policy directory and the hook are readable by the hook's user, as
    // /etc/hourglass would be; the data directory is the broker's alone.
    set_mode(policy.path(), 0o755);
    let hook = policy.path().join("hooks/spy.sh");
    std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
    set_mode(hook.parent().unwrap(), 0o755);
    std::fs::write(&hook, SPY_HOOK).unwrap();
    set_mode(&hook, 0o755);
    let data_path = data.path().display().to_string();
    let broker = DevBroker::start_at(data.path(), policy.path(), &[("SPY_DATA", &data_path)]);

    let spied = |resource: &str| -> Value {
        let filed = broker.json("alice", &["request", resource, "--role", "deploy", "--for", "10m"]);
        assert_eq!(filed["state"], "approved", "{filed}");
        let grant = filed["grant"]["id"].as_str().expect("a grant").to_owned();
        let credential = broker.client("alice");
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let id = hourglass_core::GrantId::parse(&grant).expect("a grant id");
        let credential = runtime.block_on(credential.credential(&id)).expect("the credential");
        credential.env.iter().map(|var| (var.name.clone(), Value::String(var.value.clone()))).collect()
    };
    // The broker's own user reads all three: what the test guards against is real.
    let as_broker = spied("as-broker");
    assert_eq!(
        (&as_broker["SPY_ENVIRON"], &as_broker["SPY_STORE_KEY"], &as_broker["SPY_STORE"]),
        (&json!("yes"), &json!("yes"), &json!("yes")),
        "a hook run as the broker's user reads its environment and keys: {as_broker}"
    );
    let as_nobody = spied("as-nobody");
    assert_eq!(as_nobody["SPY_UID"], "65534", "the hook ran as nobody: {as_nobody}");
    assert_eq!(
        (&as_nobody["SPY_ENVIRON"], &as_nobody["SPY_STORE_KEY"], &as_nobody["SPY_STORE"]),
        (&json!("no"), &json!("no"), &json!("no")),
        "run_as keeps the broker's environment, store key and store from the hook: {as_nobody}"
    );
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}
