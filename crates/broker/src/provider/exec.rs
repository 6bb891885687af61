//! Exec: a team's own command, run on issue, renew and revoke. This is how
//! Hourglass reaches what it has no provider for: cloud CLIs, kubectl,
//! ticket systems.
//!
//! ```toml
//! [resources.aws-prod]
//! provider = "exec"
//! settings = { command = ["hooks/aws-sts", "--account", "prod"], timeout = "30s", pass_env = ["AWS_PROFILE"] }
//!
//! [resources.aws-prod.roles.admin]
//! settings = { role_arn = "arn:aws:iam::123456789012:role/admin" }   # free-form, for the hook
//! ```
//!
//! # Protocol (version 1)
//!
//! The broker runs `command... ACTION` (ACTION is `issue`, `renew` or
//! `revoke`, also in `$HOURGLASS_ACTION`) without a shell; a relative program
//! path is relative to the policy directory. The hook gets a minimal
//! environment (`PATH`, `LANG`, the `pass_env` variables and
//! `HOURGLASS_ACTION`), never the broker's own, which holds secrets. Its
//! standard input is one JSON object:
//!
//! ```json
//! {"version": 1, "action": "issue", "now": "2026-11-23T10:00:00.000Z",
//!  "grant": {"id": "grt-…", "owner": "alice@acme.example", "expires_at": "…", …},
//!  "resource": {"name": "aws-prod", "labels": [], "settings": {…}},
//!  "role": {"name": "admin", "settings": {"role_arn": "…"}},
//!  "state": null}
//! ```
//!
//! On `issue` and `renew` it prints one JSON object on standard output:
//!
//! ```json
//! {"state": {"session": "abc"},
//!  "env": {"AWS_ACCESS_KEY_ID": "…", "AWS_SECRET_ACCESS_KEY": "…", "AWS_SESSION_TOKEN": "…"},
//!  "public": ["AWS_REGION"],
//!  "verification": {"assumed": "arn:aws:sts::…"}}
//! ```
//!
//! - `state` (optional) is stored with the grant and given back as `state` on
//!   later calls: it must not contain secrets.
//! - `env` (optional) are the owner's credentials, secret unless named in
//!   `public`. The broker keeps them in memory only, never in its store;
//!   after a restart it runs `renew` again (same deadline) to mint fresh
//!   ones, so `renew` must be idempotent and able to re-issue.
//! - `verification` (optional) is what the hook checked; it goes to the
//!   audit log.
//!
//! On `revoke` standard output may be empty or `{"verification": {…}}`;
//! revoke must be idempotent (it is retried until it succeeds). Exit status
//! 0 means success. Otherwise the end of standard error (control characters
//! removed) becomes the error message, which the audit log records; standard
//! output is never echoed, since it may hold credentials. A hook that runs
//! past `timeout` is killed with its whole process group.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;

use hourglass_core::api::{Credential, EnvVar};
use hourglass_core::{Duration, Grant, GrantId, Timestamp};
use hourglass_policy::Resource;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroizing;

use super::{IssueInput, Issued, Provider, ProviderError, Verification, is_env_name};

pub const KIND: &str = "exec";

const PROTOCOL_VERSION: u32 = 1;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_TIMEOUT: Duration = Duration::from_mins(5);
/// How much of standard error reaches the error message.
const STDERR_TAIL: usize = 2048;
/// A hook printing more than this on standard output is broken.
const MAX_STDOUT: u64 = 1024 * 1024;

/// `[resources.NAME.settings]` for `provider = "exec"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The program and its arguments; the action is appended.
    command: Vec<String>,
    timeout: Option<Duration>,
    /// Broker environment variables the hook may see.
    #[serde(default)]
    pass_env: Vec<String>,
}

impl Settings {
    fn parse(resource: &Resource) -> Result<Settings, String> {
        let settings: Settings =
            resource.settings.clone().try_into().map_err(|e: toml::de::Error| e.message().to_owned())?;
        if settings.command.first().is_none_or(|program| program.trim().is_empty()) {
            return Err("command must name a program: command = [\"hooks/grant\", \"--flag\"]".into());
        }
        let timeout = settings.timeout();
        if timeout.is_zero() || timeout > MAX_TIMEOUT {
            return Err(format!("timeout {timeout} must be between 1s and {MAX_TIMEOUT}"));
        }
        if let Some(bad) = settings.pass_env.iter().find(|name| !is_env_name(name)) {
            return Err(format!("pass_env: \"{bad}\" is not an environment variable name"));
        }
        Ok(settings)
    }

    fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_TIMEOUT)
    }
}

/// What a hook prints on `issue` and `renew`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Output {
    #[serde(default)]
    state: Option<serde_json::Value>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    public: Vec<String>,
    #[serde(default)]
    verification: Verification,
}

/// What the broker stores for an exec grant: the hook's own state, and a
/// snapshot of how to call it, so that revocation works (and is retried)
/// without the policy, even if the resource has left it since.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    hook: serde_json::Value,
    settings: Settings,
    resource: serde_json::Value,
    role: serde_json::Value,
}

impl Stored {
    fn of(state: &serde_json::Value) -> Option<Stored> {
        serde_json::from_value(state.clone()).ok()
    }
}

/// Credentials a hook minted, held in memory only.
struct Minted {
    expires_at: Timestamp,
    env: Vec<(String, Zeroizing<String>, bool)>,
}

pub struct ExecProvider {
    policy_dir: PathBuf,
    /// The owner's credentials by grant, for the deadline they were minted for.
    minted: Mutex<HashMap<GrantId, Minted>>,
}

impl ExecProvider {
    pub fn new(policy_dir: PathBuf) -> Self {
        ExecProvider { policy_dir, minted: Mutex::new(HashMap::new()) }
    }

    /// The program to run: relative paths are relative to the policy directory.
    fn program(&self, settings: &Settings) -> PathBuf {
        let program = Path::new(&settings.command[0]);
        if program.is_absolute() || !settings.command[0].contains('/') {
            program.to_path_buf()
        } else {
            self.policy_dir.join(program)
        }
    }

    /// Runs the hook for `action` and returns its standard output.
    async fn run(
        &self,
        name: &str,
        settings: &Settings,
        action: &str,
        input: &serde_json::Value,
    ) -> Result<Vec<u8>, ProviderError> {
        let program = self.program(settings);
        let mut command = tokio::process::Command::new(&program);
        command
            .args(&settings.command[1..])
            .arg(action)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()))
            .env("LANG", "C.UTF-8")
            .env("HOURGLASS_ACTION", action)
            .current_dir(&self.policy_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so that a timeout kills what it started too.
            .process_group(0);
        for variable in &settings.pass_env {
            if let Some(value) = std::env::var_os(variable) {
                command.env(variable, value);
            }
        }
        let mut child = command
            .spawn()
            .map_err(|error| failed(name, format!("exec hook {} cannot start: {}", program.display(), error.kind())))?;
        let pid = child.id();
        let (Some(mut stdin), Some(stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(failed(name, "exec hook has no pipes"));
        };
        let input = serde_json::to_vec(input).map_err(|e| failed(name, e.to_string()))?;
        let talk = async {
            // A hook may exit without reading its input: a broken pipe is its business.
            let _ = stdin.write_all(&input).await;
            drop(stdin);
            let mut out = Vec::new();
            let mut err = Vec::new();
            let mut limited = stdout.take(MAX_STDOUT + 1);
            let (read_out, read_err) = tokio::join!(limited.read_to_end(&mut out), stderr.read_to_end(&mut err));
            let status = child.wait().await;
            (read_out.and(read_err).and(status), out, err)
        };
        let timeout = settings.timeout();
        let Ok((result, out, err)) = tokio::time::timeout(timeout.as_std(), talk).await else {
            kill_group(pid);
            return Err(failed(name, format!("exec hook timed out after {timeout} and was killed")));
        };
        let status = result.map_err(|error| failed(name, format!("exec hook: {}", error.kind())))?;
        if !status.success() {
            let code = status.code().map_or_else(|| "a signal".to_owned(), |code| format!("status {code}"));
            return Err(failed(name, format!("exec hook {action} failed with {code}: {}", stderr_tail(&err))));
        }
        if out.len() as u64 > MAX_STDOUT {
            return Err(failed(name, format!("exec hook printed more than {MAX_STDOUT} bytes")));
        }
        Ok(out)
    }

    fn input(
        action: &str,
        grant: &Grant,
        resource: &serde_json::Value,
        role: &serde_json::Value,
        state: &serde_json::Value,
        now: Timestamp,
    ) -> serde_json::Value {
        serde_json::json!({
            "version": PROTOCOL_VERSION,
            "action": action,
            "now": now,
            "grant": grant,
            "resource": resource,
            "role": role,
            "state": state,
        })
    }

    /// Runs `issue` or `renew`, keeps the credentials in memory, and
    /// returns what the broker stores.
    async fn mint(
        &self,
        action: &str,
        input: IssueInput<'_>,
        state: &serde_json::Value,
    ) -> Result<Issued, ProviderError> {
        let name = &input.resource.name;
        let settings = Settings::parse(input.resource).map_err(|message| failed(name, message))?;
        let resource = serde_json::json!({
            "name": input.resource.name, "labels": input.resource.labels, "settings": toml_to_json(&input.resource.settings),
        });
        let role = serde_json::json!({ "name": input.role.name, "settings": toml_to_json(&input.role.settings) });
        let hook_state = Stored::of(state).map_or(serde_json::Value::Null, |stored| stored.hook);
        let stdin = Self::input(action, input.grant, &resource, &role, &hook_state, input.now);
        let stdout = self.run(name, &settings, action, &stdin).await?;
        let output = parse_output(&stdout).map_err(|message| failed(name, message))?;
        let env = output
            .env
            .into_iter()
            .map(|(key, value)| {
                let secret = !output.public.contains(&key);
                (key, Zeroizing::new(value), secret)
            })
            .collect();
        if let Ok(mut minted) = self.minted.lock() {
            minted.insert(input.grant.id.clone(), Minted { expires_at: input.grant.expires_at, env });
        }
        let stored = Stored { hook: output.state.unwrap_or(hook_state), settings, resource, role };
        let state = serde_json::to_value(&stored).map_err(|e| failed(name, e.to_string()))?;
        Ok(Issued { state, ready: true, verification: output.verification })
    }
}

/// A hook's standard output on issue or renew, checked. Error messages never
/// quote the output: it may hold credentials.
fn parse_output(stdout: &[u8]) -> Result<Output, String> {
    let text = std::str::from_utf8(stdout).map_err(|_| "exec hook printed output that is not UTF-8".to_owned())?;
    if text.trim().is_empty() {
        return Ok(Output::default());
    }
    let output: Output = serde_json::from_str(text).map_err(|error| {
        format!("exec hook printed invalid JSON on standard output (line {}, column {})", error.line(), error.column())
    })?;
    if let Some(bad) = output.env.keys().find(|name| !is_env_name(name)) {
        return Err(format!("exec hook returned \"{bad}\", which is not an environment variable name"));
    }
    if let Some(unknown) = output.public.iter().find(|name| !output.env.contains_key(*name)) {
        return Err(format!("exec hook lists \"{unknown}\" as public but returned no such variable"));
    }
    if output.state.as_ref().is_some_and(|state| !state.is_object() && !state.is_null()) {
        return Err("exec hook state must be a JSON object".into());
    }
    Ok(output)
}

/// The end of standard error as one line: what the hook said last is what
/// explains the failure.
fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        return "(nothing on standard error)".into();
    }
    let start = text.len().saturating_sub(STDERR_TAIL);
    let start = (start..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
    if start > 0 { format!("…{}", &text[start..]) } else { text }
}

/// Kills the hook's process group: a shell script's children die with it.
fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid {
        // No libc binding needed for a rare path: kill(1) takes a negative pgid.
        let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
    }
}

fn toml_to_json(table: &toml::Table) -> serde_json::Value {
    serde_json::to_value(table).unwrap_or(serde_json::Value::Null)
}

fn failed(resource: &str, message: impl Into<String>) -> ProviderError {
    ProviderError::failed(resource, message)
}

#[async_trait::async_trait]
impl Provider for ExecProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn check(&self, resource: &Resource) -> Result<(), String> {
        let settings = Settings::parse(resource)?;
        let program = self.program(&settings);
        if settings.command[0].contains('/') {
            let metadata =
                std::fs::metadata(&program).map_err(|_| format!("command {} does not exist", program.display()))?;
            use std::os::unix::fs::PermissionsExt;
            if !metadata.is_file() || metadata.permissions().mode() & 0o111 == 0 {
                return Err(format!("command {} is not an executable file", program.display()));
            }
        }
        // Role settings are the hook's to interpret: any table is accepted.
        Ok(())
    }

    async fn issue(&self, input: IssueInput<'_>) -> Result<Issued, ProviderError> {
        self.mint("issue", input, &serde_json::Value::Null).await
    }

    async fn renew(&self, input: IssueInput<'_>, state: &serde_json::Value) -> Result<Issued, ProviderError> {
        self.mint("renew", input, state).await
    }

    async fn revoke(
        &self,
        grant: &Grant,
        state: &serde_json::Value,
        now: Timestamp,
    ) -> Result<Verification, ProviderError> {
        if let Ok(mut minted) = self.minted.lock() {
            minted.remove(&grant.id);
        }
        let Some(stored) = Stored::of(state) else {
            // Issue never completed: the hook made nothing the broker knows of.
            let mut verification = Verification::new();
            verification.insert("issued".into(), false.into());
            return Ok(verification);
        };
        let stdin = Self::input("revoke", grant, &stored.resource, &stored.role, &stored.hook, now);
        let stdout = self.run(&grant.resource, &stored.settings, "revoke", &stdin).await?;
        let output = parse_output(&stdout).map_err(|message| failed(&grant.resource, message))?;
        Ok(output.verification)
    }

    async fn credential(&self, input: IssueInput<'_>, state: &serde_json::Value) -> Result<Credential, ProviderError> {
        let fresh = self
            .minted
            .lock()
            .ok()
            .and_then(|minted| minted.get(&input.grant.id).map(|m| m.expires_at == input.grant.expires_at))
            .unwrap_or(false);
        if !fresh {
            // Nothing in memory for this deadline (a restart): mint again.
            self.mint("renew", input, state).await?;
        }
        let minted = self.minted.lock().map_err(|_| failed(&input.resource.name, "credential cache poisoned"))?;
        let env = minted
            .get(&input.grant.id)
            .map(|m| {
                m.env
                    .iter()
                    .map(|(name, value, secret)| EnvVar {
                        name: name.clone(),
                        value: value.to_string(),
                        secret: *secret,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let grant = input.grant;
        Ok(Credential {
            grant_id: grant.id.clone(),
            resource: grant.resource.clone(),
            role: grant.role.clone(),
            provider: KIND.into(),
            expires_at: grant.expires_at,
            env,
            ssh_certificate: None,
            client_secret: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration as StdDuration;

    use super::*;

    fn resource(settings: &str) -> Resource {
        let toml = format!(
            "[workflows.w]\napprovals = [{{ group = \"g\", count = 1 }}]\n[resources.hook]\nprovider = \"exec\"\nworkflow = \"w\"\nsettings = {settings}\n[resources.hook.roles.admin]\nsettings = {{ arn = \"x\" }}\n"
        );
        let policy = hourglass_policy::Policy::from_sources(vec![("hourglass.toml".into(), toml)]).expect("policy");
        policy.resources["hook"].clone()
    }

    #[test]
    fn settings_are_checked_with_clear_messages() {
        let dir = tempfile::tempdir().expect("dir");
        let script = dir.path().join("hook.sh");
        std::fs::write(&script, "#!/bin/sh\n").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::write(dir.path().join("plain.txt"), "").expect("write");
        let provider = ExecProvider::new(dir.path().to_path_buf());
        let cases = [
            ("{ command = [\"./hook.sh\"] }", None),
            ("{ command = [\"true\"], timeout = \"5m\", pass_env = [\"AWS_PROFILE\"] }", None),
            ("{ command = [] }", Some("command must name a program")),
            ("{ command = [\"./missing.sh\"] }", Some("missing.sh does not exist")),
            ("{ command = [\"./plain.txt\"] }", Some("is not an executable file")),
            ("{ command = [\"true\"], timeout = \"6m\" }", Some("timeout 6m must be between")),
            ("{ command = [\"true\"], pass_env = [\"aws profile\"] }", Some("not an environment variable name")),
            ("{ command = [\"true\"], shell = true }", Some("unknown field `shell`")),
        ];
        for (settings, expected) in cases {
            let outcome = provider.check(&resource(settings));
            match expected {
                None => assert_eq!(outcome, Ok(()), "{settings}"),
                Some(text) => {
                    let error = outcome.expect_err(settings);
                    assert!(error.contains(text), "{settings}: {error}");
                }
            }
        }
    }

    #[test]
    fn hook_output_is_parsed_strictly_without_echoing_it() {
        let good =
            br#"{"state":{"k":1},"env":{"AWS_ACCESS_KEY_ID":"AKIA","AWS_REGION":"eu-west-1"},"public":["AWS_REGION"]}"#;
        let output = parse_output(good).expect("valid");
        assert_eq!(output.env.len(), 2);
        assert_eq!(output.public, ["AWS_REGION"]);
        assert!(parse_output(b"").expect("empty is fine").env.is_empty(), "revoke may print nothing");
        let cases: [(&[u8], &str); 5] = [
            (b"{\"env\": {\"SECRET\": \"hunter2\"", "invalid JSON"),
            (b"{\"env\": {\"bad name\": \"x\"}}", "not an environment variable name"),
            (b"{\"env\": {}, \"public\": [\"X\"]}", "no such variable"),
            (b"{\"state\": 5}", "state must be a JSON object"),
            (b"{\"creds\": {}}", "invalid JSON"),
        ];
        for (stdout, expected) in cases {
            let error = parse_output(stdout).expect_err(expected);
            assert!(error.contains(expected), "{error}");
            assert!(!error.contains("hunter2"), "standard output is never echoed: {error}");
        }
    }

    #[test]
    fn stderr_is_reduced_to_its_last_line_of_text() {
        assert_eq!(stderr_tail(b"first\n\x1b[31msecond\x1b[0m\n"), "first [31msecond [0m");
        assert_eq!(stderr_tail(b""), "(nothing on standard error)");
        let long = "x".repeat(STDERR_TAIL * 2);
        let tail = stderr_tail(long.as_bytes());
        assert!(tail.starts_with('…') && tail.chars().count() == STDERR_TAIL + 1, "capped at the end");
    }

    fn hook(dir: &Path, body: &str) -> Resource {
        let script = dir.join("hook.sh");
        std::fs::write(&script, format!("#!/bin/sh\n{body}\n")).expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        resource("{ command = [\"./hook.sh\"], timeout = \"2s\" }")
    }

    fn grant() -> Grant {
        let request = hourglass_core::AccessRequest::file(
            hourglass_core::RequestId::from_random(1),
            hourglass_core::NewRequest {
                requester: "alice@acme.example".into(),
                resource: "hook".into(),
                role: "admin".into(),
                duration: Duration::from_mins(5),
                reason: "r".into(),
                ticket: None,
                break_glass: false,
                renews: None,
            },
            Vec::new(),
            Duration::from_mins(5),
            Timestamp::from_unix_millis(0),
        );
        Grant::start(GrantId::from_random(2), &request, KIND, Timestamp::from_unix_millis(0))
    }

    #[tokio::test]
    async fn a_hanging_hook_is_killed_with_its_children() {
        let dir = tempfile::tempdir().expect("dir");
        let marker = dir.path().join("child-survived");
        let resource = hook(dir.path(), &format!("(sleep 3; touch {}) &\nsleep 30", marker.display()));
        let provider = ExecProvider::new(dir.path().to_path_buf());
        let settings = Settings::parse(&resource).expect("settings");
        let error =
            provider.run(&resource.name, &settings, "issue", &serde_json::json!({})).await.expect_err("times out");
        assert!(error.to_string().contains("timed out after 2s"), "{error}");
        tokio::time::sleep(StdDuration::from_secs(2)).await;
        assert!(!marker.exists(), "the hook's background child was killed with its process group");
    }

    #[tokio::test]
    async fn a_failing_hook_reports_its_stderr_and_never_its_stdout() {
        let dir = tempfile::tempdir().expect("dir");
        let resource = hook(
            dir.path(),
            "echo '{\"env\":{\"TOKEN\":\"hunter2\"}}'\necho 'sts: AccessDenied for role x' >&2\nexit 3",
        );
        let provider = ExecProvider::new(dir.path().to_path_buf());
        let settings = Settings::parse(&resource).expect("settings");
        let error = provider.run(&resource.name, &settings, "issue", &serde_json::json!({})).await.expect_err("fails");
        let message = error.to_string();
        assert!(message.contains("failed with status 3: sts: AccessDenied for role x"), "{message}");
        assert!(!message.contains("hunter2"), "stdout never reaches the error: {message}");
    }

    #[tokio::test]
    async fn the_hook_sees_its_input_and_a_minimal_environment_only() {
        let dir = tempfile::tempdir().expect("dir");
        let seen = dir.path().join("seen");
        let resource = hook(
            dir.path(),
            &format!(
                "cat > {seen}.json\nenv > {seen}.env\necho '{{\"env\":{{\"TOKEN\":\"t\"}}}}'",
                seen = seen.display()
            ),
        );
        let provider = ExecProvider::new(dir.path().to_path_buf());
        let grant = grant();
        let role = resource.roles["admin"].clone();
        let input =
            IssueInput { grant: &grant, resource: &resource, role: &role, now: grant.issued_at, material: None };
        let issued = provider.issue(input).await.expect("issue");
        assert!(issued.ready, "a hook that succeeded issued the credential");
        let stdin: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("seen.json")).expect("stdin")).expect("JSON");
        assert_eq!(stdin["action"], "issue");
        assert_eq!(stdin["grant"]["id"], grant.id.as_str());
        assert_eq!(stdin["role"]["settings"]["arn"], "x", "role settings reach the hook");
        let env = std::fs::read_to_string(dir.path().join("seen.env")).expect("env");
        let names: Vec<&str> = env.lines().filter_map(|l| l.split_once('=')).map(|(n, _)| n).collect();
        for name in &names {
            assert!(
                ["PATH", "LANG", "HOURGLASS_ACTION", "PWD", "SHLVL", "_", "OLDPWD"].contains(name),
                "unexpected {name}"
            );
        }
        let credential = provider.credential(input, &issued.state).await.expect("credential");
        assert_eq!(credential.env.len(), 1, "served from memory");
        assert!(credential.env[0].secret, "secret unless declared public");
    }
}
