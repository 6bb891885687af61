//! The exec provider running a real hook script, driven through the CLI.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use hourglass_e2e::{DevBroker, eventually, policy_dir};
use serde_json::Value;

const CEDAR: &str = r#"
permit (principal in Group::"engineers", action in [Action::"request", Action::"auto_approve"], resource);
"#;

/// A hook that logs each call (action, then its JSON input) and answers
/// with credentials; `fail-issue`/`fail-revoke`/`hang` marker files in its
/// directory make it fail or hang, so a test can break and mend it.
const HOOK: &str = r#"#!/bin/sh
dir=$(dirname "$0")
action=$HOURGLASS_ACTION
input=$(cat)
printf '%s\t%s\t%s\t%s\n' "$action" "$input" "$(env | tr '\n' ' ')" "$*" >> "$dir/calls.log"
[ -e "$dir/hang" ] && sleep 60
if [ -e "$dir/fail-$action" ]; then
    echo "cloud says: AccessDenied for $action" >&2
    exit 2
fi
case "$action" in
    issue|renew)
        echo '{"state": {"session": "s-1"}, "env": {"CLOUD_TOKEN": "tok-secret-42", "CLOUD_REGION": "eu-west-1"}, "public": ["CLOUD_REGION"], "verification": {"checked": "session s-1"}}' ;;
    revoke)
        echo '{"verification": {"session": "ended"}}' ;;
esac
"#;

struct Setup {
    broker: DevBroker,
    policy: tempfile::TempDir,
}

impl Setup {
    fn new(timeout: &str) -> Setup {
        let toml = format!(
            r#"
[defaults]
workflow = "review"
min_duration = "5s"
renewals_without_approval = 5

[workflows.review]
approvals = [{{ group = "sre", count = 1 }}]

[resources.cloud]
provider = "exec"
settings = {{ command = ["./hook.sh", "--account", "prod"], timeout = "{timeout}", pass_env = ["CLOUD_PROFILE"] }}

[resources.cloud.roles.admin]
settings = {{ role_arn = "arn:cloud:role/admin" }}
"#
        );
        let policy = policy_dir(&toml, CEDAR);
        let hook = policy.path().join("hook.sh");
        std::fs::write(&hook, HOOK).expect("hook");
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let broker = DevBroker::start_with_policy(
            policy.path(),
            &[("CLOUD_PROFILE", "prod-profile"), ("ORDERS_DB_ADMIN_DSN", "host=db password=broker-only-secret")],
        );
        Setup { broker, policy }
    }

    /// Each hook call: (action, its JSON input, its environment, its arguments).
    fn calls(&self) -> Vec<(String, Value, String, String)> {
        let log = std::fs::read_to_string(self.policy.path().join("calls.log")).unwrap_or_default();
        log.lines()
            .map(|line| {
                let mut parts = line.splitn(4, '\t');
                let action = parts.next().unwrap_or_default().to_owned();
                let input = serde_json::from_str(parts.next().unwrap_or("null")).expect("the hook got JSON");
                let env = parts.next().unwrap_or_default().to_owned();
                (action, input, env, parts.next().unwrap_or_default().to_owned())
            })
            .collect()
    }

    fn marker(&self, name: &str) -> std::path::PathBuf {
        self.policy.path().join(name)
    }
}

fn touch(path: &Path) {
    std::fs::write(path, "").expect("marker");
}

fn request(setup: &Setup, duration: &str) -> Value {
    setup.broker.json("alice", &["request", "cloud", "--role", "admin", "--for", duration, "--reason", "rotate keys"])
}

#[test]
fn exec_hook_receives_the_grant_as_json_and_serves_its_credentials() {
    let setup = Setup::new("10s");
    let request = request(&setup, "10m");
    let grant = &request["grant"];
    assert_eq!(grant["state"], "active", "the hook issued it: {request}");
    let id = grant["id"].as_str().expect("grant id").to_owned();

    let calls = setup.calls();
    let (action, input, env, args) = &calls[0];
    assert_eq!(action, "issue", "the action is in HOURGLASS_ACTION");
    assert_eq!(args, "--account prod issue", "the configured arguments, then the action");
    assert_eq!(input["version"], 1, "protocol version");
    assert_eq!(input["action"], "issue");
    assert_eq!(input["grant"]["id"], id.as_str(), "the grant as JSON");
    assert_eq!(input["grant"]["owner"], "alice@acme.example");
    assert_eq!(input["grant"]["expires_at"], grant["expires_at"], "the deadline the credential must honour");
    assert_eq!(input["role"]["settings"]["role_arn"], "arn:cloud:role/admin", "role settings reach the hook");
    assert_eq!(input["state"], Value::Null, "no state before issue");
    assert!(env.contains("CLOUD_PROFILE=prod-profile"), "pass_env variables reach the hook: {env}");
    assert!(env.contains("HOURGLASS_ACTION=issue"), "the action is in the environment too");
    assert!(!env.contains("broker-only-secret"), "the broker's own environment never reaches a hook: {env}");

    let exports = setup.broker.hourglass("alice", &["env", &id, "--shell", "bash"]);
    assert!(exports.ok, "{}", exports.stderr);
    assert!(
        exports.stdout.contains("export CLOUD_TOKEN='tok-secret-42'"),
        "the hook's credentials: {}",
        exports.stdout
    );
    assert!(exports.stdout.contains("export CLOUD_REGION='eu-west-1'"), "{}", exports.stdout);

    let renewed = setup.broker.json("alice", &["renew", &id, "--for", "20m"]);
    let (action, input, _, _) = setup.calls().pop().expect("a renew call");
    assert_eq!(action, "renew");
    assert_eq!(input["grant"]["expires_at"], renewed["expires_at"], "renew carries the new deadline");
    assert_eq!(input["state"]["session"], "s-1", "the hook gets back the state it returned");

    let revoked = setup.broker.json("alice", &["revoke", &id]);
    assert_eq!(revoked["revocation"]["status"], "done", "{revoked}");
    let (action, input, _, _) = setup.calls().pop().expect("a revoke call");
    assert_eq!(action, "revoke");
    assert_eq!(input["state"]["session"], "s-1", "revoke knows what to undo");

    let data_dir = setup.broker.data_dir.to_str().expect("utf-8 path").to_owned();
    let export = setup.broker.hourglassd(&["audit", "export", "--data-dir", &data_dir]);
    assert!(export.stdout.contains("\"checked\":\"session s-1\""), "the hook's verification is audited");
    assert!(!export.stdout.contains("tok-secret-42"), "the credentials never reach the audit log");
    let mut store = std::fs::read(setup.broker.data_dir.join("hourglass.db")).expect("store");
    store.extend(std::fs::read(setup.broker.data_dir.join("hourglass.db-wal")).unwrap_or_default());
    assert!(!String::from_utf8_lossy(&store).contains("tok-secret-42"), "nor the broker's store");
}

#[test]
fn exec_failing_issue_ends_the_grant_failed_with_the_hooks_stderr() {
    let setup = Setup::new("10s");
    touch(&setup.marker("fail-issue"));
    let run = setup
        .broker
        .hourglass("alice", &["request", "cloud", "--role", "admin", "--for", "10m", "--reason", "rotate keys"]);
    assert!(!run.ok, "the request fails with the hook");
    assert!(run.stderr.contains("cloud says: AccessDenied for issue"), "the hook's stderr explains it: {}", run.stderr);
    let grants = setup.broker.json("alice", &["grants", "--ended"]);
    assert_eq!(grants[0]["state"], "failed", "nothing is left active: {grants}");
    let data_dir = setup.broker.data_dir.to_str().expect("utf-8 path").to_owned();
    let export = setup.broker.hourglassd(&["audit", "export", "--data-dir", &data_dir]);
    let failed = export.stdout.lines().find(|l| l.contains("grant.issue_failed")).expect("audited");
    assert!(failed.contains("AccessDenied for issue"), "stderr in the audit log: {failed}");
}

#[test]
fn exec_failing_revoke_is_retried_until_it_succeeds() {
    let setup = Setup::new("10s");
    let id = request(&setup, "10m")["grant"]["id"].as_str().expect("id").to_owned();
    touch(&setup.marker("fail-revoke"));
    let revoked = setup.broker.json("alice", &["revoke", &id]);
    assert_eq!(revoked["state"], "revoked", "the grant ends at once");
    assert_eq!(revoked["revocation"]["status"], "pending", "the hook failed: {revoked}");
    assert!(
        revoked["revocation"]["last_error"].as_str().is_some_and(|e| e.contains("AccessDenied for revoke")),
        "{revoked}"
    );
    let retried = eventually(Duration::from_secs(15), || {
        let grants = setup.broker.json("alice", &["grants", "--ended"]);
        (grants[0]["revocation"]["attempts"].as_u64() >= Some(2)).then_some(())
    });
    assert!(retried.is_some(), "the broker retries a failed revocation");

    std::fs::remove_file(setup.marker("fail-revoke")).expect("mend the hook");
    let done = eventually(Duration::from_secs(20), || {
        let grants = setup.broker.json("alice", &["grants", "--ended"]);
        (grants[0]["revocation"]["status"] == "done").then(|| grants[0].clone())
    })
    .expect("once the hook works again the revocation completes");
    assert!(done["revocation"]["attempts"].as_u64() >= Some(3), "{done}");
}

#[test]
fn exec_hanging_hook_times_out_with_a_clear_error() {
    let setup = Setup::new("2s");
    touch(&setup.marker("hang"));
    let run = setup
        .broker
        .hourglass("alice", &["request", "cloud", "--role", "admin", "--for", "10m", "--reason", "rotate keys"]);
    assert!(!run.ok && run.stderr.contains("timed out after 2s"), "{}", run.stderr);
    let leftover = std::process::Command::new("pgrep").args(["-f", "sleep 60"]).output().expect("pgrep");
    let mine = String::from_utf8_lossy(&leftover.stdout).lines().count();
    assert_eq!(mine, 0, "the hung hook and its sleep were killed");
}
