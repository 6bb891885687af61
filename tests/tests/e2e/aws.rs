//! The AWS provider against moto's server with IAM authentication on
//! (`hourglass_e2e::moto`): a real `hourglassd` assumes roles with its own
//! key, a real agent serves the keys to botocore through
//! `credential_process`, and boto3 uses them.
//!
//! What moto does not enforce, and so what is proven here only by the calls
//! made (read back from moto's record of each session, or from the role):
//! - session policies: that keys stop working at the grant's deadline rests
//!   on the `aws:CurrentTime` deny each session was given, which the tests
//!   read from moto's record of the `AssumeRole` call; moto itself would
//!   accept the keys for ever;
//! - conditions: the deny put on a role at revocation names one session
//!   (`aws:userid`), which the tests read back from the role; moto applies
//!   it to every session of the role, so what the tests show at the target
//!   is only that revoked keys are refused, and that an expiry puts no deny
//!   (the other grant's keys keep working).

use std::process::Command;
use std::time::Duration;

use hourglass_core::Timestamp;
use hourglass_e2e::moto::{ACCOUNT, Moto};
use hourglass_e2e::shell::Workstation;
use hourglass_e2e::{DevBroker, bin, eventually, policy_dir};
use serde_json::Value;

use crate::faults::{assert_audit_intact, audit_events};

const CEDAR: &str = r#"
permit (principal in Group::"engineers", action in [Action::"request", Action::"auto_approve"], resource);
"#;

/// One AWS account with roles that map to moto's IAM roles: two Hourglass
/// roles on the same IAM role (overlapping grants), one whose trust policy
/// names someone else, and one on `other_role_arn`.
fn policy(moto: &Moto, other_role_arn: &str) -> tempfile::TempDir {
    let roles = [("operator", "operator"), ("oncall", "operator"), ("locked", "locked")];
    let toml = format!(
        r#"
[defaults]
workflow = "review"
min_duration = "5s"
max_duration = "2h"
reason_required = false

[workflows.review]
approvals = [{{ group = "sre", count = 1 }}]

{resource}
[resources.aws-prod.roles.other]
settings = {{ role_arn = "{other_role_arn}" }}
"#,
        resource = moto.resource_toml("aws-prod", &roles),
    );
    policy_dir(&toml, CEDAR)
}

fn broker(moto: &Moto, policy: &tempfile::TempDir) -> DevBroker {
    let env = moto.broker_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(name, value)| (*name, value.as_str())).collect();
    DevBroker::start_with_policy(policy.path(), &env)
}

fn granted(outcome: &Value) -> (String, String) {
    let grant = &outcome["grant"];
    assert_eq!(grant["state"], "active", "issued at once: {outcome}");
    assert!(grant["ready_at"].is_string(), "shown ready only once AWS answered as the session: {outcome}");
    (grant["id"].as_str().expect("grant id").to_owned(), grant["expires_at"].as_str().expect("deadline").to_owned())
}

/// The session name of `grant`: the owner, then the grant's id.
fn session_of(grant: &str) -> String {
    format!("alice@acme.example.{}", grant.trim_start_matches("grt-"))
}

/// An AWS config whose profile `hg` gets its keys from the agent.
fn aws_config(station: &Workstation, target: &str) -> String {
    let config = station.home().join(format!("aws-config-{target}"));
    std::fs::write(
        &config,
        format!("[profile hg]\ncredential_process = {} credential-process {target}\n", bin("hourglass").display()),
    )
    .expect("aws config");
    config.display().to_string()
}

/// boto3 as a user runs it: profile `hg`, keys from `credential_process`.
/// Prints the caller's ARN, then whether listing buckets was allowed.
fn use_aws(moto: &Moto, station: &Workstation, config: &str) -> (String, String) {
    let script = "import boto3, botocore\n\
        s = boto3.session.Session(profile_name='hg', region_name='us-east-1')\n\
        print(s.client('sts', endpoint_url=ENDPOINT).get_caller_identity()['Arn'])\n\
        try:\n\
        \x20   s.client('s3', endpoint_url=ENDPOINT).list_buckets()\n\
        \x20   print('allowed')\n\
        except botocore.exceptions.ClientError as e:\n\
        \x20   print(e.response['Error']['Code'])\n";
    let vars: Vec<(&str, &str)> = station.vars().iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let mut env = vars;
    env.push(("AWS_CONFIG_FILE", config));
    let run = moto.python(script, &env);
    assert!(run.ok, "boto3 with the agent's keys: {}", run.stderr);
    let mut lines = run.stdout.lines();
    (lines.next().unwrap_or_default().to_owned(), lines.next().unwrap_or_default().to_owned())
}

/// The static keys `credential_process` hands out now, as JSON.
fn keys_now(station: &Workstation, target: &str) -> Value {
    let run = station.hourglass(&["credential-process", target]);
    assert!(run.ok, "credential-process {target}: {}", run.stderr);
    serde_json::from_str(&run.stdout).expect("one JSON object")
}

/// Whether these static keys may list buckets at moto.
fn keys_allowed(moto: &Moto, keys: &Value) -> String {
    let script = "import boto3, botocore\n\
        try:\n\
        \x20   boto3.client('s3', endpoint_url=ENDPOINT, region_name='us-east-1').list_buckets()\n\
        \x20   print('allowed')\n\
        except botocore.exceptions.ClientError as e:\n\
        \x20   print(e.response['Error']['Code'])\n";
    let field = |name: &str| keys[name].as_str().expect("a key field").to_owned();
    let (id, secret, token) = (field("AccessKeyId"), field("SecretAccessKey"), field("SessionToken"));
    let run = moto.python(
        script,
        &[("AWS_ACCESS_KEY_ID", &id), ("AWS_SECRET_ACCESS_KEY", &secret), ("AWS_SESSION_TOKEN", &token)],
    );
    assert!(run.ok, "boto3 with static keys: {}", run.stderr);
    run.stdout.trim().to_owned()
}

/// The deadline in the session policy moto recorded for each of the
/// session's `AssumeRole` calls.
fn session_deadlines(moto: &Moto, session: &str) -> Vec<String> {
    moto.assumed_roles()
        .iter()
        .filter(|role| role["session_name"] == session)
        .map(|role| {
            let policy: Value = serde_json::from_str(role["policy"].as_str().expect("a session policy was sent"))
                .expect("the session policy is JSON");
            let deny = policy["Statement"]
                .as_array()
                .and_then(|list| list.iter().find(|s| s["Sid"] == "HourglassDeadline"))
                .cloned()
                .expect("every session carries the deadline's deny");
            assert_eq!(deny["Effect"], "Deny", "{deny}");
            deny["Condition"]["DateGreaterThan"]["aws:CurrentTime"].as_str().expect("a time").to_owned()
        })
        .collect()
}

fn whole_seconds(deadline: &str) -> String {
    let at = Timestamp::parse(deadline).expect("RFC 3339");
    Timestamp::from_unix_millis(at.unix_seconds() * 1000).to_string().replace(".000Z", "Z")
}

#[test]
fn aws_grant_is_ready_when_its_session_answers_and_reaches_boto3_through_credential_process() {
    let moto = Moto::start();
    let policy = policy(&moto, &moto.role_arn("operator"));
    let broker = broker(&moto, &policy);
    let mut station = Workstation::new(&broker, "alice");
    station.start_agent();

    let (id, deadline) =
        granted(&station.json(&["request", "aws-prod", "--role", "operator", "--for", "30m", "--ticket", "OPS-42"]));
    let session = session_of(&id);
    let issued = audit_events(&broker.data_dir)
        .into_iter()
        .find(|e| e["action"] == "grant.issued" && e["target"] == id.as_str())
        .expect("the issue is audited");
    let verified = issued.to_string();
    assert!(
        verified.contains(&format!("arn:aws:sts::{ACCOUNT}:assumed-role/operator/{session}")),
        "the audit records what GetCallerIdentity said of the new keys: {verified}"
    );
    station.wait_for("holding the grant", |s| Workstation::held(s, &id).is_some());

    // boto3, with nothing but a profile naming the agent.
    let config = aws_config(&station, "aws-prod");
    let (arn, listed) = use_aws(&moto, &station, &config);
    assert_eq!(arn, format!("arn:aws:sts::{ACCOUNT}:assumed-role/operator/{session}"), "the grant's own session");
    assert_eq!(listed, "allowed", "the role's permissions apply");
    let keys = keys_now(&station, "aws-prod");
    let expiration = Timestamp::parse(keys["Expiration"].as_str().expect("Expiration")).expect("RFC 3339");
    assert!(
        expiration <= Timestamp::parse(&deadline).expect("deadline"),
        "the SDK is told the keys end by the deadline: {expiration}"
    );
    let hook = station.hourglass(&["hook-env", "bash"]);
    assert!(hook.stdout.contains("AWS_SESSION_TOKEN"), "shells export the keys too: {}", hook.stdout);

    // Every session the broker made carries the deadline (moto does not
    // enforce it: proven by the call).
    let deadlines = session_deadlines(&moto, &session);
    assert!(!deadlines.is_empty(), "moto recorded the grant's sessions");
    assert!(deadlines.iter().all(|d| *d == whole_seconds(&deadline)), "{deadlines:?} against {deadline}");

    // Renewed: fresh keys with the new deadline, and the old keys still
    // work (nothing was revoked).
    let before = keys_now(&station, "aws-prod");
    let renewed = station.json(&["renew", &id, "--for", "1h"]);
    let new_deadline = renewed["grant"]["expires_at"]
        .as_str()
        .unwrap_or_else(|| renewed["expires_at"].as_str().expect("deadline"))
        .to_owned();
    assert_ne!(new_deadline, deadline, "the deadline moved");
    let fresh = eventually(Duration::from_secs(15), || {
        let keys = keys_now(&station, "aws-prod");
        (keys["AccessKeyId"] != before["AccessKeyId"]).then_some(keys)
    })
    .expect("the agent fetched keys for the new deadline");
    assert_eq!(keys_allowed(&moto, &fresh), "allowed", "the new keys work");
    assert_eq!(keys_allowed(&moto, &before), "allowed", "the old ones too, until the old deadline: no gap");
    assert!(
        session_deadlines(&moto, &session).contains(&whole_seconds(&new_deadline)),
        "the new keys carry the new deadline"
    );
    assert!(moto.role_policies("operator").iter().all(|(name, _)| name == "work"), "a renewal denies nothing");

    // Revoked: the session is denied on the role, read back, and the keys
    // the agent handed out are refused.
    let run = station.hourglass(&["revoke", &id, "--reason", "done"]);
    assert!(run.ok, "revoke: {}", run.stderr);
    let policies = moto.role_policies("operator");
    let (name, deny) =
        policies.iter().find(|(name, _)| name.starts_with("hourglass-revoked-")).expect("a deny policy on the role");
    assert_eq!(name, &format!("hourglass-revoked-{}", id.trim_start_matches("grt-")), "one per grant");
    assert_eq!(
        deny["Statement"][0]["Condition"]["StringLike"]["aws:userid"],
        format!("*:{session}"),
        "it names this session only: {deny}"
    );
    assert_eq!(keys_allowed(&moto, &fresh), "AccessDenied", "revoked keys are refused at the target");
    let attempts: Vec<String> = audit_events(&broker.data_dir)
        .into_iter()
        .filter(|e| e["action"] == "grant.revocation_attempt" && e["target"] == id.as_str())
        .map(|e| e.to_string())
        .collect();
    assert!(attempts.iter().any(|a| a.contains("deny_policy")), "audited with what was verified: {attempts:?}");
    let gone = station.hourglass(&["credential-process", "aws-prod"]);
    assert!(!gone.ok, "the agent hands out nothing for a revoked grant");
    assert_audit_intact(&broker.data_dir);
}

#[test]
fn aws_overlapping_grants_of_one_role_end_independently() {
    let moto = Moto::start();
    let policy = policy(&moto, &moto.role_arn("operator"));
    let broker = broker(&moto, &policy);
    let mut station = Workstation::new(&broker, "alice");
    station.start_agent();
    // Two Hourglass roles on one IAM role: a short grant and a long one.
    let (short, _) = granted(&station.json(&["request", "aws-prod", "--role", "operator", "--for", "6s"]));
    let (long, _) = granted(&station.json(&["request", "aws-prod", "--role", "oncall", "--for", "30m"]));
    station
        .wait_for("holding both", |s| Workstation::held(s, &short).is_some() && Workstation::held(s, &long).is_some());
    let long_keys = keys_now(&station, "aws-prod/oncall");
    let short_keys = keys_now(&station, "aws-prod/operator");
    assert_eq!(keys_allowed(&moto, &short_keys), "allowed", "both work at first");

    // The short one expires: no deny on the role (its keys end by their
    // session policy), so the long one's keys keep working at the target.
    let expired = eventually(Duration::from_secs(30), || {
        let run = station.hourglass(&["credential-process", &short]);
        (!run.ok).then_some(run.stderr)
    })
    .expect("the short grant's keys are withdrawn at its deadline");
    assert!(expired.contains("expired"), "says why: {expired}");
    let verification = eventually(Duration::from_secs(15), || {
        audit_events(&broker.data_dir)
            .into_iter()
            .find(|e| e["action"] == "grant.revocation_attempt" && e["target"] == short.as_str())
    })
    .expect("the expiry's revocation is audited");
    assert!(verification.to_string().contains("\"denied\":false"), "an expiry puts no deny: {verification}");
    assert!(moto.role_policies("operator").iter().all(|(name, _)| name == "work"), "the role is untouched");
    assert_eq!(keys_allowed(&moto, &long_keys), "allowed", "the other grant of the role is not revoked early");
    assert!(keys_now(&station, "aws-prod/oncall")["AccessKeyId"].is_string(), "and the agent still serves it");
}

#[test]
fn aws_bad_role_and_sts_refusal_fail_clearly_and_leave_nothing() {
    let moto = Moto::start();
    // A role ARN that is not one: refused when the policy loads, with where.
    let bad = policy(&moto, &format!("arn:aws:iam::{ACCOUNT}:user/hourglass-broker"));
    let check = Command::new(bin("hourglassd")).args(["policy", "check"]).arg(bad.path()).output().expect("runs");
    let said = String::from_utf8_lossy(&check.stderr).to_string() + &String::from_utf8_lossy(&check.stdout);
    assert!(!check.status.success(), "a user ARN is not a role: {said}");
    assert!(said.contains("role_arn") && said.contains("hourglass.toml"), "names the setting and the file: {said}");

    let policy = policy(&moto, &moto.role_arn("operator"));
    let broker = broker(&moto, &policy);
    let station = Workstation::new(&broker, "alice");
    // The trust policy names someone else: STS refuses, in its own words.
    let run = station.hourglass(&["request", "aws-prod", "--role", "locked", "--for", "10m"]);
    assert!(!run.ok, "not issued");
    assert!(run.stderr.contains("STS refused to assume") && run.stderr.contains("AccessDenied"), "{}", run.stderr);
    assert!(run.stderr.contains(&moto.role_arn("locked")), "names the role: {}", run.stderr);
    // (A role that does not exist is refused by AWS the same way, with
    // AccessDenied; moto hands out a session for it instead, so that case
    // is not shown here.)
    // Nothing left: no session, no deny, the grant failed.
    assert!(moto.assumed_roles().is_empty(), "no session was made");
    assert!(moto.role_policies("operator").iter().all(|(name, _)| name == "work"), "no deny anywhere");
    assert!(moto.role_policies("locked").is_empty(), "nothing on the refused role");
    let grants = station.json(&["grants", "--ended"]);
    let states: Vec<&str> =
        grants.as_array().expect("grants").iter().map(|g| g["state"].as_str().unwrap_or_default()).collect();
    assert_eq!(states, ["failed"], "{grants}");
}

#[test]
fn aws_broker_killed_mid_issue_issues_once_after_restart() {
    let moto = Moto::start();
    let policy = policy(&moto, &moto.role_arn("operator"));
    let mut broker = broker(&moto, &policy);
    let station = Workstation::new(&broker, "alice");
    // AWS stops answering while the broker assumes the role; the broker dies.
    moto.pause();
    let mut filing =
        station.command(&["request", "aws-prod", "--role", "operator", "--for", "2m"]).spawn().expect("runs");
    std::thread::sleep(Duration::from_secs(2));
    broker.kill();
    let _ = filing.wait();
    moto.resume();

    broker.restart();
    let issued = eventually(Duration::from_secs(30), || {
        let grants = station.json(&["grants"]);
        grants.as_array()?.iter().find(|g| g["state"] == "active").cloned()
    })
    .unwrap_or_else(|| panic!("the restarted broker finishes the issue: {}", station.json(&["grants", "--ended"])));
    let id = issued["id"].as_str().expect("id");
    let issues = audit_events(&broker.data_dir)
        .into_iter()
        .filter(|e| e["action"] == "grant.issued" && e["target"] == id)
        .count();
    assert_eq!(issues, 1, "issued once");
    assert!(issued["ready_at"].is_string(), "verified before shown ready: {issued}");
    let session = session_of(id);
    assert!(
        moto.assumed_roles().iter().all(|role| role["session_name"] == session),
        "every session made was the grant's own"
    );
    assert_audit_intact(&broker.data_dir);
}
