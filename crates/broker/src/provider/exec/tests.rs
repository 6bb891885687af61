use std::path::Path;

use hourglass_core::{AccessRequest, GrantId, NewRequest, RequestId};

use super::process::clean_stderr;
use super::*;

/// 2026-11-18T11:06:40Z: a fixed broker clock.
const NOW: Timestamp = Timestamp::from_unix_millis(1_795_000_000_000);
/// A credential the hooks below print; no error may ever contain it.
const SECRET: &str = "s3cr3t-value-1234";

fn resource(settings: &str, role_settings: &str) -> Resource {
    let toml = format!(
        "[workflows.w]\napprovals = [{{ group = \"g\", count = 1 }}]\n[resources.cloud]\nprovider = \"exec\"\nworkflow = \"w\"\nlabels = [\"production\"]\nsettings = {settings}\n[resources.cloud.roles.deploy]\nsettings = {role_settings}\n"
    );
    let policy = hourglass_policy::Policy::from_sources(vec![("hourglass.toml".into(), toml)]).expect("policy loads");
    policy.resources["cloud"].clone()
}

fn grant(now: Timestamp) -> Grant {
    let request = AccessRequest::file(
        RequestId::from_random(rand::random()),
        NewRequest {
            requester: "alice@acme.example".into(),
            resource: "cloud".into(),
            role: "deploy".into(),
            duration: Duration::from_mins(15),
            reason: "test".into(),
            ticket: None,
            break_glass: false,
            renews: None,
        },
        Vec::new(),
        Duration::from_mins(5),
        now,
    );
    Grant::start(GrantId::from_random(rand::random()), &request, KIND, now)
}

/// Writes an executable POSIX sh script at `dir/name`.
fn script(dir: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("hook directory");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("hook written");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("hook made executable");
}

/// A policy directory with the hook `hooks/hook.sh` and a provider for it.
/// The hook is run through `sh` (looked up in PATH): exec'ing a file
/// this multi-threaded test process just wrote can fail with ETXTBSY.
struct Fixture {
    dir: tempfile::TempDir,
    provider: ExecProvider,
    resource: Resource,
}

impl Fixture {
    fn new(body: &str, settings: &str) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        script(dir.path(), "hooks/hook.sh", body);
        let provider = ExecProvider::new(dir.path().to_path_buf());
        let resource = resource(
            &format!("{{ command = [\"sh\", \"hooks/hook.sh\"]{settings} }}"),
            "{ cloud_role = \"deployer\", max_session = 3600 }",
        );
        Fixture { dir, provider, resource }
    }

    fn input<'a>(&'a self, grant: &'a Grant, now: Timestamp) -> IssueInput<'a> {
        IssueInput {
            grant,
            resource: &self.resource,
            role: &self.resource.roles["deploy"],
            now,
            material: None,
            ticket: None,
        }
    }

    /// Every call the recording hook logged: one JSON input per line.
    fn calls(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.dir.path().join("calls.log")).unwrap_or_default();
        text.lines().map(|line| serde_json::from_str(line).expect("the hook logs JSON lines")).collect()
    }
}

/// Logs its input and answers with one key per call, named after the
/// action; `reissue` changes nothing in the state.
const RECORDING_HOOK: &str = r#"input=$(cat)
printf '%s\n' "$input" >> calls.log
n=$(wc -l < calls.log | tr -d ' ')
case "$1" in
  issue|renew) printf '{"state":{"account":"acct-%s"},"env":{"CLOUD_KEY":"key-%s-%s-%s","CLOUD_REGION":"eu-west-1"},"public":["CLOUD_REGION"],"verification":{"account":"acct-%s"}}' "$HOURGLASS_GRANT_ID" "$1" "$n" "s3cr3t" "$HOURGLASS_GRANT_ID" ;;
  revoke) printf '{"verification":{"removed":"acct-%s"}}' "$HOURGLASS_GRANT_ID" ;;
esac"#;

fn env_value(credential: &Credential, name: &str) -> String {
    credential.env.iter().find(|var| var.name == name).map(|var| var.value.clone()).unwrap_or_default()
}

#[test]
fn settings_are_checked_with_clear_messages() {
    let dir = tempfile::tempdir().expect("temp dir");
    script(dir.path(), "hooks/ok.sh", "exit 0");
    std::fs::write(dir.path().join("hooks/plain.txt"), "not a program").expect("file");
    let provider = ExecProvider::new(dir.path().to_path_buf());
    let cases: &[(&str, Option<&str>)] = &[
        ("{ command = [\"hooks/ok.sh\"] }", None),
        ("{ command = [\"./hooks/ok.sh\", \"--account\", \"orders\"], timeout = \"5m\" }", None),
        ("{ command = [\"python3\", \"hooks/x.py\"], pass_env = [\"AWS_PROFILE\", \"https_proxy\"] }", None),
        ("{ command = [\"/bin/sh\", \"-c\", \"true\"], timeout = \"1s\" }", None),
        ("{ }", Some("missing field `command`")),
        ("{ command = [] }", Some("command must name the hook to run")),
        ("{ command = [\"\"] }", Some("empty program name")),
        ("{ command = \"hooks/ok.sh\" }", Some("invalid type")),
        ("{ command = [\"hooks/missing.sh\"] }", Some("command \"hooks/missing.sh\": cannot use")),
        ("{ command = [\"hooks/plain.txt\"] }", Some("is not executable (chmod +x it)")),
        ("{ command = [\"./hooks\"] }", Some("is not a file")),
        (
            "{ command = [\"hooks/ok.sh\"], timeout = \"10m\" }",
            Some("timeout 10m is longer than the longest allowed (5m)"),
        ),
        ("{ command = [\"hooks/ok.sh\"], timeout = \"0s\" }", Some("timeout must be at least 1s")),
        ("{ command = [\"hooks/ok.sh\"], timeout = \"30\" }", Some("number without a unit")),
        (
            "{ command = [\"hooks/ok.sh\"], pass_env = [\"ORDERS DSN\"] }",
            Some("\"ORDERS DSN\" is not an environment variable name"),
        ),
        ("{ command = [\"hooks/ok.sh\"], pass_env = [\"HOURGLASS_TOKEN\"] }", Some("set by the broker")),
        ("{ command = [\"hooks/ok.sh\"], run_as = \"no-such-user-here\" }", Some("is no local user")),
        ("{ command = [\"hooks/ok.sh\"], run_as = \"root\" }", Some("is root")),
        ("{ command = [\"hooks/ok.sh\"], run_as = \"nobody\" }", None),
        ("{ command = [\"hooks/ok.sh\"], shell = true }", Some("unknown field `shell`")),
    ];
    for (settings, expected) in cases {
        let result = provider.check(&resource(settings, "{ anything = [\"goes\", 1] }"));
        match expected {
            None => assert_eq!(result, Ok(()), "{settings} is valid"),
            Some(expected) => {
                let error = result.expect_err(settings);
                assert!(error.contains(expected), "{settings}: expected {expected:?} in {error:?}");
            }
        }
    }
}

#[test]
fn hook_output_is_parsed_strictly_and_never_quoted() {
    let good = format!(
        r#"{{"state":{{"key_id":"AK1"}},"env":{{"CLOUD_KEY":"{SECRET}","CLOUD_REGION":"eu-west-1"}},"public":["CLOUD_REGION"],"expires_at":"2026-11-18T12:06:40Z","verification":{{"key_id":"AK1"}}}}"#
    );
    let answer = parse_answer(good.as_bytes(), Action::Issue, NOW).expect("good output parses");
    assert_eq!(answer.state, Some(json!({"key_id": "AK1"})), "state kept as printed");
    let env = answer.env.as_ref().expect("env");
    let flags: Vec<(&str, &str, bool)> =
        env.iter().map(|var| (var.name.as_str(), var.value.as_str(), var.secret)).collect();
    assert_eq!(
        flags,
        [("CLOUD_KEY", SECRET, true), ("CLOUD_REGION", "eu-west-1", false)],
        "secret unless listed in public"
    );
    assert_eq!(answer.expires_at, Timestamp::parse("2026-11-18T12:06:40Z").ok(), "the credentials' own expiry");
    assert_eq!(answer.verification, json!({"key_id": "AK1"}).as_object().cloned(), "verification kept");
    let minimal = parse_answer(br#"{"state": null}"#, Action::Issue, NOW).expect("state alone parses");
    assert!(minimal.env.is_none() && minimal.state == Some(Value::Null), "no env is no credentials");
    let renewal = parse_answer(b"{}", Action::Renew, NOW).expect("an empty renewal answer parses");
    assert!(renewal.state.is_none() && renewal.env.is_none(), "renew may keep state and env as they were");

    let bad: &[(String, &str)] = &[
        (
            format!("here you go: {{\"env\":{{\"CLOUD_KEY\":\"{SECRET}\"}}}}"),
            "invalid JSON on stdout (line 1, column 1)",
        ),
        (format!("{{\"state\":{{}},\"env\":{{\"CLOUD_KEY\":\"{SECRET}\"}}}}\nlog line"), "invalid JSON on stdout"),
        (format!("{{\"state\":{{}},\"env\":{{\"CLOUD_KEY\":\"{SECRET}\""), "invalid JSON on stdout"),
        (format!("[\"{SECRET}\"]"), "not an object"),
        (String::new(), "printed nothing on stdout"),
        (
            format!("{{\"state\":{{}},\"env\":{{\"cloud-key\":\"{SECRET}\"}}}}"),
            "env name \"cloud-key\", which is not an environment variable name",
        ),
        (format!("{{\"state\":{{}},\"env\":{{\"1KEY\":\"{SECRET}\"}}}}"), "env name \"1KEY\""),
        (format!("{{\"state\":{{}},\"env\":{{\"PATH\":\"{SECRET}\"}}}}"), "\"PATH\", which is reserved"),
        (format!("{{\"state\":{{}},\"env\":{{\"LD_PRELOAD\":\"{SECRET}\"}}}}"), "\"LD_PRELOAD\", which is reserved"),
        (
            format!("{{\"state\":{{}},\"env\":{{\"HOURGLASS_TOKEN\":\"{SECRET}\"}}}}"),
            "\"HOURGLASS_TOKEN\", which is reserved",
        ),
        (
            format!("{{\"state\":{{}},\"env\":{{\"NODE_OPTIONS\":\"{SECRET}\"}}}}"),
            "\"NODE_OPTIONS\", which is reserved",
        ),
        (format!("{{\"state\":{{}},\"env\":{{\"HTTPS_PROXY\":\"{SECRET}\"}}}}"), "\"HTTPS_PROXY\", which is reserved"),
        (
            format!("{{\"state\":{{}},\"env\":{{\"SSL_CERT_FILE\":\"{SECRET}\"}}}}"),
            "\"SSL_CERT_FILE\", which is reserved",
        ),
        (
            format!("{{\"state\":{{}},\"env\":{{\"GIT_SSH_COMMAND\":\"{SECRET}\"}}}}"),
            "\"GIT_SSH_COMMAND\", which is reserved",
        ),
        ("{\"state\":{},\"env\":{\"CLOUD_KEY\":1234567890}}".into(), "value for CLOUD_KEY that is not a string"),
        (format!("{{\"state\":{{}},\"env\":[\"{SECRET}\"]}}"), "\"env\" that is not an object"),
        (format!("{{\"state\":{{}},\"env\":{{\"CLOUD_KEY\":\"{SECRET}\\u0000\"}}}}"), "NUL character"),
        (
            format!("{{\"state\":{{}},\"env\":{{\"CLOUD_KEY\":\"{SECRET}\"}},\"secrets\":[]}}"),
            "unknown field \"secrets\"",
        ),
        (
            format!("{{\"state\":{{}},\"env\":{{\"CLOUD_KEY\":\"{SECRET}\"}},\"public\":[\"REGION\"]}}"),
            "lists \"REGION\" in \"public\" but not in \"env\"",
        ),
        (
            format!("{{\"state\":{{\"copy\":\"{SECRET}\"}},\"env\":{{\"CLOUD_KEY\":\"{SECRET}\"}}}}"),
            "put the value of CLOUD_KEY into \"state\"",
        ),
        (
            format!(
                "{{\"state\":{{}},\"env\":{{\"CLOUD_KEY\":\"{SECRET}\"}},\"verification\":{{\"k\":\"is {SECRET}\"}}}}"
            ),
            "put the value of CLOUD_KEY into \"verification\"",
        ),
        (
            format!("{{\"state\":{{}},\"env\":{{\"CLOUD_KEY\":\"{SECRET}\"}},\"verification\":\"{SECRET}\"}}"),
            "\"verification\" that is not an object",
        ),
        (
            format!("{{\"state\":{{}},\"env\":{{\"CLOUD_KEY\":\"{SECRET}\"}},\"expires_at\":\"tomorrow\"}}"),
            "\"expires_at\" that is not an RFC 3339 timestamp",
        ),
        (
            format!(
                "{{\"state\":{{}},\"env\":{{\"CLOUD_KEY\":\"{SECRET}\"}},\"expires_at\":\"2020-01-01T00:00:00Z\"}}"
            ),
            "\"expires_at\" has passed",
        ),
        ("{\"state\":{},\"expires_at\":\"2030-01-01T00:00:00Z\"}".into(), "\"expires_at\" without \"env\""),
    ];
    for (stdout, expected) in bad {
        let error = match parse_answer(stdout.as_bytes(), Action::Issue, NOW) {
            Ok(_) => panic!("{stdout:?} must be refused"),
            Err(error) => error,
        };
        assert!(error.contains(expected), "{stdout:?}: expected {expected:?} in {error:?}");
        assert!(!error.contains(SECRET) && !error.contains("1234567890"), "never quotes stdout: {error}");
    }
}

#[test]
fn revoke_output_may_be_empty_or_a_verification() {
    let default = parse_revoke_answer(b" \n").expect("blank output is fine");
    assert_eq!(default.get("hook"), Some(&json!("revoke succeeded")), "a default verification: {default:?}");
    let given = parse_revoke_answer(br#"{"verification":{"removed":"AK1"}}"#).expect("a verification");
    assert_eq!(given.get("removed"), Some(&json!("AK1")), "the hook's verification: {given:?}");
    let error = parse_revoke_answer(br#"{"state":{}}"#).expect_err("revoke prints no state");
    assert!(error.contains("unknown field \"state\" (known: verification)"), "{error}");
    let error = parse_revoke_answer(b"done").expect_err("not JSON");
    assert!(error.contains("invalid JSON"), "{error}");
}

#[test]
fn stderr_is_cleaned_for_messages() {
    let raw = "\u{1b}[31merror:\u{1b}[0m quota\u{7} exceeded\r\n\n  \n\u{202e}team orders\u{0}\t(ticket 7)\n";
    assert_eq!(clean_stderr(raw.as_bytes()), "error: quota exceeded\nteam orders\t(ticket 7)", "readable, inert");
    assert_eq!(clean_stderr(b"\xffbad utf-8"), "\u{fffd}bad utf-8", "invalid UTF-8 replaced, not refused");
}

#[tokio::test]
async fn a_failing_hooks_stderr_is_captured_capped_and_cleaned() {
    let fixture = Fixture::new(
        r#"cat > /dev/null
i=0; while [ $i -lt 200 ]; do printf 'noise line %03d padding padding padding padding\n' $i >&2; i=$((i+1)); done
printf '\033[31mquota exceeded for team orders\033[0m\n' >&2
printf '{"env":{"CLOUD_KEY":"s3cr3t-value-1234"}}'
exit 3"#,
        "",
    );
    let grant = grant(NOW);
    let error = fixture.provider.issue(fixture.input(&grant, NOW)).await.expect_err("exit 3 fails").to_string();
    assert!(error.starts_with("cloud: exec hook issue failed (exit status 3): …"), "names the step and how: {error}");
    assert!(error.ends_with("quota exceeded for team orders"), "ends with the last thing the hook said: {error}");
    assert!(!error.contains("noise line 000"), "only the end of stderr is kept: {error}");
    assert!(error.len() <= STDERR_TAIL + 100, "capped at about 4 KiB: {} bytes", error.len());
    assert!(!error.contains('\u{1b}'), "no escape sequences reach terminals or the audit log");
    assert!(!error.contains(SECRET), "stdout is never quoted");
}

#[tokio::test]
async fn a_hook_that_prints_too_much_is_stopped() {
    let fixture = Fixture::new("cat > /dev/null\nwhile :; do echo 0123456789abcdef0123456789abcdef; done", "");
    let grant = grant(NOW);
    let error = fixture.provider.issue(fixture.input(&grant, NOW)).await.expect_err("too much").to_string();
    assert!(error.contains("exec hook issue printed more than 1024 KiB on stdout and was killed"), "{error}");
}

#[tokio::test]
async fn a_hook_that_runs_too_long_is_killed_with_everything_it_started() {
    let fixture = Fixture::new("sleep 60 &\necho $! > sleep.pid\necho 'still working' >&2\nwait", ", timeout = \"1s\"");
    let grant = grant(NOW);
    let error = fixture.provider.issue(fixture.input(&grant, NOW)).await.expect_err("times out").to_string();
    assert!(
        error.contains("exec hook issue timed out after 1s and was killed: still working"),
        "says so, with what the hook said: {error}"
    );
    let pid = std::fs::read_to_string(fixture.dir.path().join("sleep.pid")).expect("the hook started sleep");
    let stat = Path::new("/proc").join(pid.trim()).join("stat");
    // The sleep was the hook's child: it dies with the hook's group. A
    // zombie (Z) is dead too, waiting for init to reap it.
    let mut alive = true;
    for _ in 0..100 {
        alive = std::fs::read_to_string(&stat).is_ok_and(|s| !s.rsplit(')').next().unwrap_or("").starts_with(" Z"));
        if !alive {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    assert!(!alive, "the hook's background sleep {} was killed with it", pid.trim());
}

#[tokio::test]
async fn credentials_are_kept_in_memory_and_reissued_after_a_restart() {
    let fixture = Fixture::new(RECORDING_HOOK, "");
    let grant = grant(NOW);
    let issued = fixture.provider.issue(fixture.input(&grant, NOW)).await.expect("issued");
    assert!(issued.ready, "the hook's exit 0 is the confirmation");
    assert_eq!(issued.verification.get("account"), Some(&json!(format!("acct-{}", grant.id))), "audited");
    let stored = &issued.state;
    assert_eq!(stored["state"], json!({"account": format!("acct-{}", grant.id)}), "the hook's state is stored");
    assert_eq!(stored["hook"]["command"], json!(["sh", "hooks/hook.sh"]), "with the command that revoke runs");
    assert!(!stored.to_string().contains("s3cr3t"), "no credential in what the broker stores: {stored}");

    let first = fixture.provider.credential(fixture.input(&grant, NOW), stored).await.expect("credential");
    assert_eq!(env_value(&first, "CLOUD_KEY"), "key-issue-1-s3cr3t", "the issued key, from memory");
    assert!(first.env.iter().any(|v| v.name == "CLOUD_KEY" && v.secret), "secret by default");
    assert!(first.env.iter().any(|v| v.name == "CLOUD_REGION" && !v.secret), "public when listed");
    assert_eq!(fixture.calls().len(), 1, "serving from memory runs no hook");

    // A restart: a new provider knows nothing, and mints again through renew.
    let restarted = ExecProvider::new(fixture.dir.path().to_path_buf());
    let later = NOW.plus_millis(60_000);
    let again = restarted.credential(fixture.input(&grant, later), stored).await.expect("reissued");
    assert_eq!(env_value(&again, "CLOUD_KEY"), "key-renew-2-s3cr3t", "fresh credentials from renew");
    let calls = fixture.calls();
    let reissue = calls.last().expect("a call");
    assert_eq!(reissue["action"], "renew", "a reissue is a renew: {reissue}");
    assert_eq!(reissue["reissue"], true, "marked as a reissue: {reissue}");
    assert_eq!(reissue["state"], stored["state"], "with the stored state: {reissue}");
    assert_eq!(reissue["grant"]["expires_at"], grant.expires_at.to_string(), "for the same deadline: {reissue}");
    assert_eq!(reissue["now"], later.to_string(), "at the broker's time: {reissue}");

    let verification = restarted.revoke(&grant, stored, later).await.expect("revoked");
    assert_eq!(verification.get("removed"), Some(&json!(format!("acct-{}", grant.id))), "{verification:?}");
    let revoke = fixture.calls().pop().expect("a call");
    assert_eq!(revoke["action"], "revoke", "{revoke}");
    assert_eq!(revoke["state"], stored["state"], "revoke gets the state: {revoke}");
    assert_eq!(revoke["role"]["settings"], json!({"cloud_role": "deployer", "max_session": 3600}), "{revoke}");
    assert_eq!(revoke["resource"]["labels"], json!(["production"]), "{revoke}");
    let after = restarted.credential(fixture.input(&grant, later), stored).await.expect_err("revoked");
    assert!(after.to_string().contains("has ended"), "nothing is minted after revocation: {after}");
    assert_eq!(fixture.calls().len(), 3, "no hook ran for the refused fetch");
}

#[tokio::test]
async fn credentials_with_their_own_expiry_are_minted_again_before_it() {
    // NOW + 10 minutes; the grant runs for 15.
    let fixture = Fixture::new(
        r#"printf '%s\n' "$(cat)" >> calls.log
n=$(wc -l < calls.log | tr -d ' ')
printf '{"state":null,"env":{"CLOUD_KEY":"key-%s"},"expires_at":"2026-11-18T11:16:40Z"}' "$n""#,
        "",
    );
    let grant = grant(NOW);
    let issued = fixture.provider.issue(fixture.input(&grant, NOW)).await.expect("issued");
    let early = NOW.plus_millis(9 * 60_000);
    let credential = fixture.provider.credential(fixture.input(&grant, early), &issued.state).await.expect("ok");
    assert_eq!(env_value(&credential, "CLOUD_KEY"), "key-1", "still valid for a minute: from memory");
    let late = NOW.plus_millis(10 * 60_000 - 10_000);
    let credential = fixture.provider.credential(fixture.input(&grant, late), &issued.state).await.expect("ok");
    assert_eq!(env_value(&credential, "CLOUD_KEY"), "key-2", "about to expire: minted again");
    let calls = fixture.calls();
    assert_eq!(calls.len(), 2, "one issue, one reissue");
    assert_eq!(calls[1]["reissue"], true, "{}", calls[1]);
}

#[tokio::test]
async fn renew_moves_the_deadline_and_may_replace_the_credentials() {
    let fixture = Fixture::new(RECORDING_HOOK, "");
    let mut grant = grant(NOW);
    let issued = fixture.provider.issue(fixture.input(&grant, NOW)).await.expect("issued");
    grant.expires_at = grant.expires_at.plus(Duration::from_mins(30));
    let later = NOW.plus_millis(1000);
    let renewed = fixture.provider.renew(fixture.input(&grant, later), &issued.state).await.expect("renewed");
    let call = fixture.calls().pop().expect("a call");
    assert_eq!(call["action"], "renew", "{call}");
    assert_eq!(call["reissue"], false, "an ordinary renewal: {call}");
    assert_eq!(call["grant"]["expires_at"], grant.expires_at.to_string(), "the new deadline: {call}");
    assert_eq!(call["state"], issued.state["state"], "the previous state: {call}");
    let credential = fixture.provider.credential(fixture.input(&grant, later), &renewed.state).await.expect("ok");
    assert_eq!(env_value(&credential, "CLOUD_KEY"), "key-renew-2-s3cr3t", "renew's credentials replace issue's");
}

#[tokio::test]
async fn a_reissue_cannot_change_the_state_and_must_mint() {
    let fixture = Fixture::new(
        r#"cat > /dev/null
case "$1" in
  issue) printf '{"state":{"n":1},"env":{"CLOUD_KEY":"k"}}' ;;
  renew) if [ -e changes-state ]; then printf '{"state":{"n":2},"env":{"CLOUD_KEY":"k"}}'; else printf '{"state":{"n":1}}'; fi ;;
esac"#,
        "",
    );
    let grant = grant(NOW);
    let issued = fixture.provider.issue(fixture.input(&grant, NOW)).await.expect("issued");
    let restarted = ExecProvider::new(fixture.dir.path().to_path_buf());
    let error = restarted.credential(fixture.input(&grant, NOW), &issued.state).await.expect_err("no env");
    assert!(error.to_string().contains("printed no \"env\" on a reissue"), "{error}");
    std::fs::write(fixture.dir.path().join("changes-state"), "").expect("marker");
    let error = restarted.credential(fixture.input(&grant, NOW), &issued.state).await.expect_err("new state");
    assert!(error.to_string().contains("changed \"state\" on a reissue"), "{error}");
}

#[tokio::test]
async fn a_failed_issue_is_cleaned_up_by_revoke_with_a_null_state() {
    let fixture = Fixture::new(
        r#"printf '%s\n' "$(cat)" >> calls.log
case "$1" in
  issue) printf '{"env":{"CLOUD_KEY":"k"}}' ;;
esac"#,
        "",
    );
    let grant = grant(NOW);
    let error = fixture.provider.issue(fixture.input(&grant, NOW)).await.expect_err("no state").to_string();
    assert!(error.contains("exec hook issue printed no \"state\""), "{error}");
    // The broker revokes a failed grant with no stored state.
    let verification = fixture.provider.revoke(&grant, &Value::Null, NOW).await.expect("cleaned up");
    assert_eq!(verification.get("hook"), Some(&json!("revoke succeeded")), "{verification:?}");
    let calls = fixture.calls();
    let actions: Vec<&str> = calls.iter().filter_map(|call| call["action"].as_str()).collect();
    assert_eq!(actions, ["issue", "revoke"], "the hook was asked to undo the failed issue");
    assert_eq!(calls[1]["state"], Value::Null, "with no state: {}", calls[1]);
}

#[tokio::test]
async fn an_issue_cut_short_by_a_restart_is_revoked_from_the_planned_state() {
    let fixture = Fixture::new(r#"printf '%s\n' "$(cat)" >> calls.log"#, "");
    let grant = grant(NOW);
    let planned = fixture.provider.planned_state(fixture.input(&grant, NOW)).expect("a plan").expect("a hook");
    // A new broker process: nothing in memory about this grant.
    let restarted = ExecProvider::new(fixture.provider.policy_dir.clone());
    let verification = restarted.revoke(&grant, &planned, NOW).await.expect("revoked");
    assert_eq!(verification.get("hook"), Some(&json!("revoke succeeded")), "{verification:?}");
    let calls = fixture.calls();
    let actions: Vec<&str> = calls.iter().filter_map(|call| call["action"].as_str()).collect();
    assert_eq!(actions, ["revoke"], "the planned hook was asked to undo whatever the issue did");
    assert_eq!(calls[0]["state"], Value::Null, "with no hook state: {}", calls[0]);
}

#[tokio::test]
async fn a_hook_that_cannot_start_fails_clearly_and_leaves_nothing_to_clean() {
    let dir = tempfile::tempdir().expect("temp dir");
    let provider = ExecProvider::new(dir.path().to_path_buf());
    let resource = resource("{ command = [\"hooks/absent.sh\"] }", "{}");
    let grant = grant(NOW);
    let input = IssueInput {
        grant: &grant,
        resource: &resource,
        role: &resource.roles["deploy"],
        now: NOW,
        material: None,
        ticket: None,
    };
    let error = provider.issue(input).await.expect_err("nothing to run").to_string();
    assert!(error.contains("cannot start exec hook \"hooks/absent.sh\""), "{error}");
    let verification = provider.revoke(&grant, &Value::Null, NOW).await.expect("nothing to undo");
    assert!(verification["hook"].as_str().is_some_and(|text| text.starts_with("not run")), "{verification:?}");
}

#[tokio::test]
async fn the_hook_gets_a_minimal_environment() {
    // cargo sets both for test processes; only the listed one may pass.
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some(), "run under cargo test");
    assert!(std::env::var_os("CARGO_PKG_NAME").is_some(), "run under cargo test");
    let fixture = Fixture::new(
        "cat > /dev/null\nenv > env.txt\nprintf '{\"state\":null}'",
        ", pass_env = [\"CARGO_PKG_NAME\", \"UNSET_FOR_EXEC_TEST\"]",
    );
    let grant = grant(NOW);
    fixture.provider.issue(fixture.input(&grant, NOW)).await.expect("issued");
    let env = std::fs::read_to_string(fixture.dir.path().join("env.txt")).expect("the hook wrote its env");
    let names: Vec<&str> = env.lines().filter_map(|line| line.split('=').next()).collect();
    assert!(names.contains(&"CARGO_PKG_NAME"), "listed in pass_env: {names:?}");
    assert!(!names.contains(&"CARGO_MANIFEST_DIR"), "not listed, not passed: {names:?}");
    assert!(names.contains(&"PATH"), "PATH, so that tools are found: {names:?}");
    assert!(env.contains("HOURGLASS_ACTION=issue\n"), "the action: {env}");
    assert!(env.contains(&format!("HOURGLASS_GRANT_ID={}\n", grant.id)), "the grant: {env}");
    assert!(env.contains("HOURGLASS_REISSUE=false\n"), "not a reissue: {env}");
    let hourglass: Vec<&&str> = names.iter().filter(|name| name.starts_with("HOURGLASS_")).collect();
    assert_eq!(hourglass.len(), 7, "only the call's own HOURGLASS_ variables: {hourglass:?}");
}
