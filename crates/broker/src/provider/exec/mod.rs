//! Exec: a team's own command, the *hook*, run on issue, renew and revoke.
//! This is how cloud CLIs, kubectl or a ticket system plug into Hourglass.
//!
//! # Settings
//!
//! ```toml
//! [resources.orders-cloud]
//! provider = "exec"
//! settings = { command = ["hooks/cloud-key.sh", "--account", "orders"], timeout = "30s", pass_env = ["CLOUD_ADMIN_KEY"] }
//!
//! [resources.orders-cloud.roles.deploy]
//! settings = { cloud_role = "orders-deployer" }   # free-form, handed to the hook
//! ```
//!
//! - `command` (required): the program and its first arguments, run without
//!   a shell. A program path with a `/` in it is relative to the policy
//!   directory (`hooks/x.sh`, `./x.sh`); a bare name (`python3`) is looked up
//!   in `PATH`. The hook runs in the policy directory.
//! - `timeout` (default `30s`, at most `5m`): the hook and everything it
//!   started are killed when it runs longer. The broker's `provider_timeout`
//!   (30 s by default) bounds issue, renew and revoke as well.
//! - `run_as`: a local user the hook runs as (a name from /etc/passwd,
//!   `UID` or `UID:GID`; its supplementary groups are dropped), so that it
//!   cannot read what the broker's user can: the broker's environment
//!   (`/proc/PPID/environ`), its data directory (the store key, the
//!   store). Needs the broker to run as root (or with CAP_SETUID and
//!   CAP_SETGID) and setpriv (util-linux); the hook and the policy
//!   directory must be readable by that user.
//! - `pass_env`: names of the broker's environment variables the hook gets.
//!   Otherwise it gets only `PATH`, `HOME`, `LANG`, `LC_ALL`, `LC_CTYPE`,
//!   `TZ` and `TMPDIR`, never the broker's whole environment (which holds
//!   admin connection strings), plus the `HOURGLASS_*` variables below.
//! - Role settings are free-form: the hook gets them as `role.settings`, so
//!   one hook serves several roles.
//!
//! # Protocol (version 1)
//!
//! The broker runs `command... ACTION`, ACTION being `issue`, `renew` or
//! `revoke`, with `HOURGLASS_ACTION`, `HOURGLASS_GRANT_ID`,
//! `HOURGLASS_OWNER`, `HOURGLASS_RESOURCE`, `HOURGLASS_ROLE`,
//! `HOURGLASS_EXPIRES_AT` and `HOURGLASS_REISSUE` (`true`/`false`) set, and
//! one JSON object on stdin:
//!
//! ```json
//! {"version": 1, "action": "renew", "reissue": false,
//!  "grant": {"id": "grt-…", "owner": "alice@acme.example", "resource": "orders-cloud", "role": "deploy",
//!            "state": "active", "issued_at": "…", "expires_at": "2026-11-23T14:32:00.000Z", …},
//!  "resource": {"name": "orders-cloud", "labels": ["production"], "settings": {"command": […], …}},
//!  "role": {"name": "deploy", "settings": {"cloud_role": "orders-deployer"}},
//!  "state": {"key_id": "AK…"},
//!  "now": "2026-11-23T14:02:00.000Z"}
//! ```
//!
//! `state` is what the hook answered last (`null` on issue). Exit status 0 is
//! success, anything else failure. On issue and renew the hook prints one
//! JSON object on stdout (logs go to stderr):
//!
//! ```json
//! {"state": {"key_id": "AK…"},
//!  "env": {"CLOUD_ACCESS_KEY_ID": "AK…", "CLOUD_SECRET_ACCESS_KEY": "…", "CLOUD_REGION": "eu-west-1"},
//!  "public": ["CLOUD_REGION"],
//!  "expires_at": "2026-11-23T15:02:00Z",
//!  "verification": {"key_id": "AK…", "policy": "orders-deployer"}}
//! ```
//!
//! - `state` (required on issue; on renew, leaving it out keeps the one
//!   before): stored by the broker **in plain text** and given back on
//!   renew and revoke. It must never hold a secret; the broker refuses a
//!   state (or verification) that contains one of the `env` values.
//! - `env`: the owner's credentials (`hourglass env`). Every value is a
//!   secret unless its name is listed in `public`. Names are upper case
//!   letters, digits and `_`; names that change how shells and programs
//!   run (`PATH`, `LD_*`, `NODE_OPTIONS`, `*_PROXY`, `SSL_CERT_FILE`,
//!   `SSH_AUTH_SOCK`, `HOURGLASS_*`, …: `hourglass_core::env_names`) are
//!   refused, and clients drop them from any credential they receive. On renew, leaving `env` out keeps
//!   the credentials issued before.
//! - `expires_at` (with `env` only): when these credentials stop working, if
//!   they have their own lifetime; the broker mints fresh ones (a reissue,
//!   below) when the owner fetches them after that.
//! - `verification`: what the hook checked, recorded in the audit log.
//!
//! On revoke stdout may be empty or `{"verification": {…}}`. Unknown fields
//! are refused, so that a typo fails loudly.
//!
//! # Secrets, restarts and reissues
//!
//! The credentials the hook prints are kept in the broker's memory only
//! (zeroized when dropped), never stored: after a restart the broker no
//! longer has them. When their owner fetches them then (or after their
//! `expires_at`), the broker runs `renew` with `"reissue": true` for the
//! grant's current deadline. So `renew` must be idempotent and able to mint
//! fresh credentials for a grant it already knows. A reissue cannot store a
//! new state: the hook must answer with the state it was given (or none).
//! Name what you create after `grant.id`, so that revoke finds all of it.
//!
//! Revoke must be idempotent too: a failure (non-zero exit, timeout) is
//! retried with backoff until it succeeds, and every attempt is audited.
//! When an issue fails after the hook started, the broker runs `revoke` for
//! the grant with `"state": null` so that the hook removes whatever it
//! half-created. Issue may also run twice for a grant after a crash.
//!
//! Revoke, and reissues, run the command recorded at issue or at the last
//! renewal, so that a grant is removed even if its resource left the policy:
//! keep old hook paths working until their grants have ended.
//!
//! # Failures
//!
//! A hook that exits non-zero or runs past its timeout fails the step; the
//! last 4 KiB of its stderr (control characters removed) are in the error,
//! which the requester sees and the audit log records. Stderr is therefore
//! never a place for secrets. Stdout is never quoted in an error. The hook
//! runs in its own process group, killed when it times out and after it
//! exits: a process it leaves behind dies with it (use `setsid` to detach
//! on purpose). It also dies with the broker (`setpriv --pdeathsig`), so a
//! hook of a killed broker cannot act after the restarted one has moved on.
//!
//! Here: the provider and its per-grant memory; `answer.rs` reads what a
//! hook prints, `process.rs` runs it.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration as StdDuration;

use hourglass_core::api::{Credential, EnvVar};
use hourglass_core::{Duration, Grant, Timestamp};
use hourglass_policy::{Resource, Role};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use zeroize::Zeroizing;

use super::{IssueInput, Issued, Provider, ProviderError, Verification};

mod answer;
mod process;

use answer::{Action, Var, parse_answer, parse_revoke_answer};
use process::{ProcessGroup, dies_with_broker, read_capped, read_tail};

pub const KIND: &str = "exec";

/// The version of the stdin/stdout protocol above; bumped only for a change
/// a hook written for it would misread.
pub const PROTOCOL_VERSION: u64 = 1;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_TIMEOUT: Duration = Duration::from_mins(5);
/// What a hook may print on stdout.
const MAX_STDOUT: usize = 1024 * 1024;
/// How much of a failing hook's stderr goes into the error: its end.
const STDERR_TAIL: usize = 4096;
/// Credentials with their own `expires_at` are minted again this long before it.
const REFRESH_MARGIN_MILLIS: i64 = 30_000;
/// After a timeout, how long to wait for the killed hook's pipes to close.
const KILL_GRACE: StdDuration = StdDuration::from_secs(2);
/// The broker's variables every hook gets (when set): what tools need to run.
const BASE_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR"];
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// `[resources.NAME.settings]` for `provider = "exec"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Program and arguments; the action is appended.
    command: Vec<String>,
    timeout: Option<Duration>,
    /// The broker's environment variables passed to the hook.
    #[serde(default)]
    pass_env: Vec<String>,
    /// The local user the hook runs as (a name, `UID` or `UID:GID`).
    run_as: Option<String>,
}

impl Settings {
    fn parse(resource: &Resource) -> Result<Settings, String> {
        let settings: Settings =
            resource.settings.clone().try_into().map_err(|e: toml::de::Error| e.message().trim().to_owned())?;
        let Some(program) = settings.command.first() else {
            return Err("command must name the hook to run, e.g. command = [\"hooks/grant.sh\"]".into());
        };
        if program.trim().is_empty() {
            return Err("command starts with an empty program name".into());
        }
        if settings.command.iter().any(|arg| arg.contains('\0')) {
            return Err("command contains a NUL character".into());
        }
        if let Some(timeout) = settings.timeout {
            if timeout.is_zero() {
                return Err("timeout must be at least 1s".into());
            }
            if timeout > MAX_TIMEOUT {
                return Err(format!("timeout {timeout} is longer than the longest allowed ({MAX_TIMEOUT})"));
            }
        }
        if let Some(user) = &settings.run_as {
            process::RunAs::look_up(user)?;
        }
        for name in &settings.pass_env {
            if !is_variable_name(name) {
                return Err(format!("pass_env: \"{name}\" is not an environment variable name"));
            }
            if name.starts_with("HOURGLASS_") {
                return Err(format!("pass_env: \"{name}\" is set by the broker for each call and cannot be passed"));
            }
        }
        Ok(settings)
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`: what may be passed through (`https_proxy` too).
fn is_variable_name(name: &str) -> bool {
    name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Everything a run of the hook needs besides the grant, recorded with the
/// grant so that revoke works after a restart and without the policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Hook {
    command: Vec<String>,
    timeout: Duration,
    #[serde(default)]
    pass_env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    run_as: Option<String>,
    resource: ResourceInfo,
    role: RoleInfo,
}

/// `resource` on the hook's stdin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ResourceInfo {
    name: String,
    labels: Vec<String>,
    settings: Value,
}

/// `role` on the hook's stdin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RoleInfo {
    name: String,
    settings: Value,
}

impl Hook {
    fn new(settings: Settings, resource: &Resource, role: &Role) -> Hook {
        Hook {
            command: settings.command,
            timeout: settings.timeout.unwrap_or(DEFAULT_TIMEOUT),
            pass_env: settings.pass_env,
            run_as: settings.run_as,
            resource: ResourceInfo {
                name: resource.name.clone(),
                labels: resource.labels.clone(),
                settings: table_to_json(&resource.settings),
            },
            role: RoleInfo { name: role.name.clone(), settings: table_to_json(&role.settings) },
        }
    }

    fn configured(input: &IssueInput<'_>) -> Result<Hook, ProviderError> {
        let settings = Settings::parse(input.resource).map_err(|message| failed(&input.resource.name, message))?;
        Ok(Hook::new(settings, input.resource, input.role))
    }
}

/// The broker's `provider_state` for an exec grant: the hook as it was run,
/// and the hook's own (non-secret) state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    hook: Hook,
    state: Value,
}

impl Stored {
    fn from_value(resource: &str, value: &Value) -> Result<Stored, ProviderError> {
        serde_json::from_value(value.clone())
            .map_err(|e| failed(resource, format!("the stored exec grant record is unreadable: {e}")))
    }

    fn to_value(&self) -> Value {
        json!({ "hook": self.hook, "state": self.state })
    }
}

fn table_to_json(table: &toml::Table) -> Value {
    Value::Object(table.iter().map(|(key, value)| (key.clone(), toml_to_json(value))).collect())
}

fn toml_to_json(value: &toml::Value) -> Value {
    match value {
        toml::Value::String(text) => Value::String(text.clone()),
        toml::Value::Integer(number) => Value::from(*number),
        toml::Value::Float(number) => serde_json::Number::from_f64(*number).map_or(Value::Null, Value::Number),
        toml::Value::Boolean(flag) => Value::Bool(*flag),
        toml::Value::Datetime(at) => Value::String(at.to_string()),
        toml::Value::Array(items) => Value::Array(items.iter().map(toml_to_json).collect()),
        toml::Value::Table(table) => table_to_json(table),
    }
}

/// Credentials minted by the hook, in memory only.
struct Minted {
    env: Vec<Var>,
    /// When to mint again: shortly before the hook's own `expires_at`.
    refresh_at: Option<Timestamp>,
    /// The hook's own `expires_at`: when these credentials stop working.
    ends: Option<Timestamp>,
}

impl Minted {
    fn new(env: Vec<Var>, expires_at: Option<Timestamp>) -> Minted {
        Minted { env, refresh_at: expires_at.map(|at| at.plus_millis(-REFRESH_MARGIN_MILLIS)), ends: expires_at }
    }

    fn fresh(&self, now: Timestamp) -> bool {
        self.refresh_at.is_none_or(|at| now < at)
    }
}

/// What the provider knows of one grant in memory. Its lock also keeps the
/// hook runs of one grant in order.
#[derive(Default)]
struct Slot {
    minted: Option<Minted>,
    /// Revocation started: nothing may be minted for the grant again.
    ended: bool,
    deadline: Option<Timestamp>,
    /// The hook of an issue that may have half-created something: revoke
    /// runs it with a null state.
    cleanup: Option<Hook>,
}

impl Slot {
    fn forgettable(&self, now: Timestamp) -> bool {
        self.ended && self.cleanup.is_none() && self.deadline.is_some_and(|deadline| deadline <= now)
    }
}

/// Why a hook run failed.
enum HookFailure {
    /// The program could not be started: nothing ran.
    NotStarted(String),
    /// It ran and failed, timed out, or printed too much.
    Failed(String),
}

impl HookFailure {
    fn message(self) -> String {
        match self {
            HookFailure::NotStarted(message) | HookFailure::Failed(message) => message,
        }
    }
}

pub struct ExecProvider {
    policy_dir: PathBuf,
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
}

impl ExecProvider {
    /// Relative program paths in `command` resolve against `policy_dir`.
    pub fn new(policy_dir: PathBuf) -> Self {
        ExecProvider { policy_dir, slots: Mutex::new(HashMap::new()) }
    }

    fn program_path(&self, program: &str) -> PathBuf {
        if program.contains('/') { self.policy_dir.join(program) } else { PathBuf::from(program) }
    }

    fn check_program(&self, program: &str) -> Result<(), String> {
        if !program.contains('/') {
            return Ok(()); // looked up in PATH when it runs
        }
        let path = self.program_path(program);
        let meta = std::fs::metadata(&path)
            .map_err(|error| format!("command \"{program}\": cannot use {}: {}", path.display(), error.kind()))?;
        if !meta.is_file() {
            return Err(format!("command \"{program}\": {} is not a file", path.display()));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o111 == 0 {
                return Err(format!("command \"{program}\": {} is not executable (chmod +x it)", path.display()));
            }
        }
        Ok(())
    }

    /// The grant's slot; forgets grants revoked and past their deadline.
    fn slot(&self, grant: &Grant, now: Timestamp) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.retain(|_, slot| slot.try_lock().map_or(true, |slot| !slot.forgettable(now)));
        Arc::clone(slots.entry(grant.id.as_str().to_owned()).or_default())
    }

    /// Runs the hook for `action` and returns its stdout if it exited 0.
    async fn run(
        &self,
        hook: &Hook,
        action: Action,
        reissue: bool,
        grant: &Grant,
        state: &Value,
        now: Timestamp,
    ) -> Result<Zeroizing<Vec<u8>>, HookFailure> {
        let request = json!({
            "version": PROTOCOL_VERSION,
            "action": action.as_str(),
            "reissue": reissue,
            "grant": grant,
            "resource": hook.resource,
            "role": hook.role,
            "state": state,
            "now": now.to_string(),
        });
        let stdin_bytes = serde_json::to_vec(&request)
            .map_err(|e| HookFailure::NotStarted(format!("cannot write the exec hook's input: {e}")))?;
        let Some((program, args)) = hook.command.split_first() else {
            return Err(HookFailure::NotStarted("the exec hook's command is empty".into()));
        };
        let path = self.program_path(program);
        if program.contains('/') && !path.is_file() {
            return Err(HookFailure::NotStarted(format!(
                "cannot start exec hook \"{program}\": {} is not there",
                path.display()
            )));
        }
        let run_as = match &hook.run_as {
            Some(user) => Some(process::RunAs::look_up(user).map_err(HookFailure::NotStarted)?),
            None => None,
        };
        let mut command = match (dies_with_broker(), &run_as) {
            (Some(setpriv), _) => {
                let mut command = tokio::process::Command::new(setpriv);
                if let Some(user) = &run_as {
                    command.args(user.setpriv_args());
                }
                command.args(["--pdeathsig", "KILL", "--"]).arg(&path);
                command
            }
            (None, Some(_)) => {
                return Err(HookFailure::NotStarted(
                    "run_as needs setpriv (util-linux) to start the hook as another user, and it is not installed"
                        .into(),
                ));
            }
            (None, None) => tokio::process::Command::new(&path),
        };
        let mut environment = hook_environment(hook, action, reissue, grant);
        if let Some(user) = &run_as {
            // Its own home, not the broker's.
            environment.retain(|(name, _)| name != "HOME");
            environment.push(("HOME".into(), user.home.clone().into()));
        }
        command
            .args(args)
            .arg(action.as_str())
            .current_dir(&self.policy_dir)
            .env_clear()
            .envs(environment)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that everything it starts can be killed.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|error| HookFailure::NotStarted(format!("cannot start exec hook \"{program}\": {error}")))?;
        let group = ProcessGroup::new(child.id());
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(HookFailure::Failed("exec hook started without its pipes".into()));
        };
        let exited = AtomicBool::new(false);
        let work = async {
            let feed = async move {
                // A hook need not read its input: a closed pipe is no error.
                let _ = stdin.write_all(&stdin_bytes).await;
                drop(stdin);
            };
            let wait = async {
                let status = child.wait().await;
                exited.store(true, Ordering::SeqCst);
                // Whatever it left running dies with it, closing the pipes.
                group.kill().await;
                status
            };
            let ((), status, stdout, stderr) =
                tokio::join!(feed, wait, read_capped(stdout, MAX_STDOUT, &group), read_tail(stderr, STDERR_TAIL));
            (status, stdout, stderr)
        };
        tokio::pin!(work);
        let finished = tokio::select! {
            done = &mut work => Some(done),
            () = tokio::time::sleep(hook.timeout.as_std()) => None,
        };
        let Some((status, stdout, stderr)) = finished else {
            let had_exited = exited.load(Ordering::SeqCst);
            group.kill().await;
            let stderr = tokio::time::timeout(KILL_GRACE, &mut work).await.map(|(_, _, stderr)| stderr).ok();
            let mut message = format!("exec hook {action} timed out after {} and was killed", hook.timeout);
            if had_exited {
                message.push_str(" (it had exited, but a process it started kept stdout or stderr open)");
            }
            message.push_str(&stderr.map(|tail| tail.describe()).unwrap_or_default());
            return Err(HookFailure::Failed(message));
        };
        group.disarm();
        // Before the exit status: a hook killed for printing too much failed for that.
        let stdout = stdout.map_err(|problem| HookFailure::Failed(format!("exec hook {action} {problem}")))?;
        let status =
            status.map_err(|error| HookFailure::Failed(format!("waiting for exec hook {action} failed: {error}")))?;
        if !status.success() {
            let how = match status.code() {
                Some(code) => format!("exit status {code}"),
                None => status.to_string(),
            };
            return Err(HookFailure::Failed(format!("exec hook {action} failed ({how}){}", stderr.describe())));
        }
        Ok(stdout)
    }
}

/// The hook's whole environment: a few harmless variables of the broker's,
/// those `pass_env` names, and the call's `HOURGLASS_*`.
fn hook_environment(hook: &Hook, action: Action, reissue: bool, grant: &Grant) -> Vec<(String, OsString)> {
    let mut env: Vec<(String, OsString)> = BASE_ENV
        .iter()
        .map(|name| (*name).to_owned())
        .chain(hook.pass_env.iter().cloned())
        .filter_map(|name| std::env::var_os(&name).map(|value| (name, value)))
        .collect();
    if !env.iter().any(|(name, _)| name == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    env.extend([
        ("HOURGLASS_ACTION".to_owned(), OsString::from(action.as_str())),
        ("HOURGLASS_GRANT_ID".to_owned(), grant.id.as_str().into()),
        ("HOURGLASS_OWNER".to_owned(), grant.owner.clone().into()),
        ("HOURGLASS_RESOURCE".to_owned(), grant.resource.clone().into()),
        ("HOURGLASS_ROLE".to_owned(), grant.role.clone().into()),
        ("HOURGLASS_EXPIRES_AT".to_owned(), grant.expires_at.to_string().into()),
        ("HOURGLASS_REISSUE".to_owned(), reissue.to_string().into()),
    ]);
    env
}

fn failed(resource: &str, message: impl Into<String>) -> ProviderError {
    ProviderError::failed(resource, message)
}

fn credential_of(grant: &Grant, minted: &Minted) -> Credential {
    Credential {
        grant_id: grant.id.clone(),
        resource: grant.resource.clone(),
        role: grant.role.clone(),
        provider: KIND.into(),
        expires_at: grant.expires_at,
        valid_until: minted.ends,
        env: minted
            .env
            .iter()
            .map(|var| EnvVar { name: var.name.clone(), value: var.value.as_str().to_owned(), secret: var.secret })
            .collect(),
        ssh_certificate: None,
        client_secret: None,
    }
}

#[async_trait::async_trait]
impl Provider for ExecProvider {
    /// The hook that will run, stored with the grant before it runs: a
    /// broker killed while the hook worked has the restarted one run the
    /// hook's revoke (with a null hook state) instead of assuming nothing
    /// was made.
    fn planned_state(&self, input: IssueInput<'_>) -> Result<Option<Value>, ProviderError> {
        Ok(Some(Stored { hook: Hook::configured(&input)?, state: Value::Null }.to_value()))
    }

    fn kind(&self) -> &'static str {
        KIND
    }

    fn check(&self, resource: &Resource) -> Result<(), String> {
        let settings = Settings::parse(resource)?;
        // Role settings are the hook's own: any table is fine.
        settings.command.first().map_or(Ok(()), |program| self.check_program(program))
    }

    async fn issue(&self, input: IssueInput<'_>) -> Result<Issued, ProviderError> {
        let name = &input.resource.name;
        let hook = Hook::configured(&input)?;
        let slot = self.slot(input.grant, input.now);
        let mut slot = slot.lock().await;
        if slot.ended {
            return Err(failed(name, "the grant ended while it was being issued; the exec hook was not run"));
        }
        slot.deadline = Some(input.grant.expires_at);
        // Until the hook has answered well, whatever it did is to be undone.
        slot.cleanup = Some(hook.clone());
        let stdout = match self.run(&hook, Action::Issue, false, input.grant, &Value::Null, input.now).await {
            Ok(stdout) => stdout,
            Err(HookFailure::NotStarted(message)) => {
                slot.cleanup = None;
                return Err(failed(name, message));
            }
            Err(HookFailure::Failed(message)) => return Err(failed(name, message)),
        };
        let mut answer = parse_answer(&stdout, Action::Issue, input.now).map_err(|message| failed(name, message))?;
        let Some(state) = answer.state.take() else {
            return Err(failed(name, "exec hook issue printed no \"state\": print \"state\": null if it keeps none"));
        };
        let verification = answer.verification(Action::Issue);
        slot.minted = Some(Minted::new(answer.env.take().unwrap_or_default(), answer.expires_at));
        slot.cleanup = None;
        Ok(Issued { state: Stored { hook, state }.to_value(), ready: true, verification })
    }

    async fn renew(&self, input: IssueInput<'_>, state: &Value) -> Result<Issued, ProviderError> {
        let name = &input.resource.name;
        let stored = Stored::from_value(name, state)?;
        let hook = Hook::configured(&input)?;
        let slot = self.slot(input.grant, input.now);
        let mut slot = slot.lock().await;
        if slot.ended {
            return Err(failed(name, "the grant has ended; the exec hook was not run"));
        }
        slot.deadline = Some(input.grant.expires_at);
        let stdout = self
            .run(&hook, Action::Renew, false, input.grant, &stored.state, input.now)
            .await
            .map_err(|failure| failed(name, failure.message()))?;
        let mut answer = parse_answer(&stdout, Action::Renew, input.now).map_err(|message| failed(name, message))?;
        if let Some(env) = answer.env.take() {
            slot.minted = Some(Minted::new(env, answer.expires_at));
        }
        let verification = answer.verification(Action::Renew);
        let state = answer.state.take().unwrap_or(stored.state);
        Ok(Issued { state: Stored { hook, state }.to_value(), ready: true, verification })
    }

    async fn revoke(&self, grant: &Grant, state: &Value, now: Timestamp) -> Result<Verification, ProviderError> {
        let name = &grant.resource;
        let slot = self.slot(grant, now);
        let mut slot = slot.lock().await;
        slot.ended = true;
        slot.minted = None;
        slot.deadline = Some(grant.expires_at);
        let (hook, hook_state) = if state.is_null() {
            match slot.cleanup.clone() {
                // An issue that failed after the hook started: let it clean up.
                Some(hook) => (hook, Value::Null),
                None => {
                    let mut verification = Verification::new();
                    verification.insert("hook".into(), "not run: no exec hook issued anything for this grant".into());
                    return Ok(verification);
                }
            }
        } else {
            let stored = Stored::from_value(name, state)?;
            (stored.hook, stored.state)
        };
        let stdout = match self.run(&hook, Action::Revoke, false, grant, &hook_state, now).await {
            Ok(stdout) => stdout,
            // Planned but never answered, and the hook cannot even start:
            // its issue could not have started either.
            Err(HookFailure::NotStarted(message)) if hook_state.is_null() => {
                let mut verification = Verification::new();
                verification
                    .insert("hook".into(), format!("not run: {message}; it could not have issued either").into());
                return Ok(verification);
            }
            Err(failure) => return Err(failed(name, failure.message())),
        };
        let verification = parse_revoke_answer(&stdout).map_err(|message| failed(name, message))?;
        slot.cleanup = None;
        Ok(verification)
    }

    async fn credential(&self, input: IssueInput<'_>, state: &Value) -> Result<Credential, ProviderError> {
        let name = &input.resource.name;
        let slot = self.slot(input.grant, input.now);
        let mut slot = slot.lock().await;
        if slot.ended {
            return Err(failed(name, "the grant has ended"));
        }
        if let Some(minted) = slot.minted.as_ref().filter(|minted| minted.fresh(input.now)) {
            return Ok(credential_of(input.grant, minted));
        }
        // Not in memory (the broker restarted) or past the hook's own
        // expiry: mint again for the grant's deadline, with the recorded hook.
        let stored = Stored::from_value(name, state)?;
        let stdout = self
            .run(&stored.hook, Action::Renew, true, input.grant, &stored.state, input.now)
            .await
            .map_err(|failure| failed(name, failure.message()))?;
        let mut answer = parse_answer(&stdout, Action::Renew, input.now).map_err(|message| failed(name, message))?;
        if answer.state.as_ref().is_some_and(|state| *state != stored.state) {
            return Err(failed(
                name,
                "exec hook renew changed \"state\" on a reissue, where the broker cannot store it: answer a reissue \
                 with the state it was given (or none), and name what you create after the grant id",
            ));
        }
        let Some(env) = answer.env.take() else {
            return Err(failed(
                name,
                "exec hook renew printed no \"env\" on a reissue: it must mint the credentials again",
            ));
        };
        slot.deadline = Some(input.grant.expires_at);
        let minted = slot.minted.insert(Minted::new(env, answer.expires_at));
        Ok(credential_of(input.grant, minted))
    }
}

#[cfg(test)]
mod tests;
