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
//!   letters, digits and `_`; names that change how shells run (`PATH`,
//!   `LD_*`, `HOURGLASS_*`, …) are refused. On renew, leaving `env` out keeps
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
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use zeroize::{Zeroize, Zeroizing};

use super::{IssueInput, Issued, Provider, ProviderError, Verification, is_env_name};

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
/// Limits on what the broker stores and audits for a hook.
const MAX_STATE: usize = 64 * 1024;
const MAX_VERIFICATION: usize = 16 * 1024;
const MAX_ENV: usize = 100;
const MAX_ENV_VALUE: usize = 64 * 1024;
/// Values shorter than this are not searched for in state and verification
/// (`1`, `true` and `eu-west-1` are not credentials).
const MIN_SECRET_CHECKED: usize = 8;
/// Credentials with their own `expires_at` are minted again this long before it.
const REFRESH_MARGIN_MILLIS: i64 = 30_000;
/// After a timeout, how long to wait for the killed hook's pipes to close.
const KILL_GRACE: StdDuration = StdDuration::from_secs(2);
/// The broker's variables every hook gets (when set): what tools need to run.
const BASE_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR"];
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// Credential variables that would change how the owner's shell and tools
/// run, rather than authenticate them.
const RESERVED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "SHELL",
    "USER",
    "LOGNAME",
    "IFS",
    "ENV",
    "BASH_ENV",
    "PROMPT_COMMAND",
    "PS1",
    "PS2",
    "PS4",
    "TERM",
];
const RESERVED_ENV_PREFIXES: &[&str] = &["LD_", "DYLD_", "HOURGLASS_"];

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Issue,
    Renew,
    Revoke,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Issue => "issue",
            Action::Renew => "renew",
            Action::Revoke => "revoke",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One credential variable the hook printed.
struct Var {
    name: String,
    value: Zeroizing<String>,
    secret: bool,
}

/// What the hook answered on issue or renew.
#[derive(Default)]
struct Answer {
    /// `None` when the hook printed no `state`.
    state: Option<Value>,
    /// `None` when the hook printed no `env`.
    env: Option<Vec<Var>>,
    expires_at: Option<Timestamp>,
    verification: Option<Verification>,
}

impl Answer {
    fn verification(&mut self, action: Action) -> Verification {
        self.verification.take().unwrap_or_else(|| default_verification(action))
    }
}

fn default_verification(action: Action) -> Verification {
    let mut verification = Verification::new();
    verification.insert("hook".into(), format!("{action} succeeded").into());
    verification
}

/// Reads the hook's stdout on issue and renew. Errors name fields, never
/// values: stdout holds credentials.
fn parse_answer(stdout: &[u8], action: Action, now: Timestamp) -> Result<Answer, String> {
    let mut object = parse_object(stdout, action)?.ok_or_else(|| {
        format!(
            "exec hook {action} printed nothing on stdout: print one JSON object such as {{\"state\": {{}}, \"env\": {{}}}}"
        )
    })?;
    const KNOWN: &[&str] = &["state", "env", "public", "expires_at", "verification"];
    refuse_unknown(&object, action, KNOWN)?;
    let mut answer = Answer { state: object.remove("state"), ..Answer::default() };
    let public = match object.remove("public") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(name) => Ok(name),
                _ => Err(format!("exec hook {action} printed \"public\" with an entry that is not a string")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(format!("exec hook {action} printed \"public\" that is not an array of names")),
    };
    if let Some(env) = object.remove("env") {
        let Value::Object(env) = env else {
            return Err(format!("exec hook {action} printed \"env\" that is not an object of NAME: \"value\""));
        };
        if env.len() > MAX_ENV {
            return Err(format!("exec hook {action} printed more than {MAX_ENV} variables in \"env\""));
        }
        let mut vars = Vec::with_capacity(env.len());
        for (name, value) in env {
            check_env_name(&name, action)?;
            let Value::String(value) = value else {
                return Err(format!("exec hook {action} printed a value for {name} that is not a string"));
            };
            let value = Zeroizing::new(value);
            if value.contains('\0') {
                return Err(format!("exec hook {action} printed a value for {name} with a NUL character"));
            }
            if value.len() > MAX_ENV_VALUE {
                return Err(format!("exec hook {action} printed a value for {name} longer than 64 KiB"));
            }
            let secret = !public.contains(&name);
            vars.push(Var { name, value, secret });
        }
        if let Some(stray) = public.iter().find(|name| !vars.iter().any(|var| &var.name == *name)) {
            return Err(format!("exec hook {action} lists \"{}\" in \"public\" but not in \"env\"", shorten(stray)));
        }
        answer.env = Some(vars);
    } else if !public.is_empty() {
        return Err(format!("exec hook {action} printed \"public\" without \"env\""));
    }
    if let Some(expires_at) = object.remove("expires_at") {
        if answer.env.is_none() {
            return Err(format!("exec hook {action} printed \"expires_at\" without \"env\": it is when those expire"));
        }
        let at = expires_at
            .as_str()
            .and_then(|text| Timestamp::parse(text).ok())
            .ok_or_else(|| format!("exec hook {action} printed \"expires_at\" that is not an RFC 3339 timestamp"))?;
        if at <= now {
            return Err(format!("exec hook {action} printed credentials whose \"expires_at\" has passed"));
        }
        answer.expires_at = Some(at);
    }
    answer.verification = parse_verification(object.remove("verification"), action)?;
    if let Some(state) = &answer.state
        && serialized_len(state) > MAX_STATE
    {
        return Err(format!("exec hook {action} printed a \"state\" larger than 64 KiB"));
    }
    for var in answer.env.iter().flatten().filter(|var| var.secret && var.value.len() >= MIN_SECRET_CHECKED) {
        let leaks = |value: &Value| contains_text(value, &var.value);
        let field = if answer.state.as_ref().is_some_and(leaks) {
            "state"
        } else if answer
            .verification
            .as_ref()
            .is_some_and(|v| v.iter().any(|(k, v)| k.contains(var.value.as_str()) || leaks(v)))
        {
            "verification"
        } else {
            continue;
        };
        return Err(format!(
            "exec hook {action} put the value of {} into \"{field}\", which is stored in plain text: keep \
             credentials in \"env\" only (or list the variable in \"public\" if it is not secret)",
            var.name
        ));
    }
    Ok(answer)
}

/// Reads the hook's stdout on revoke: nothing, or `{"verification": {…}}`.
fn parse_revoke_answer(stdout: &[u8]) -> Result<Verification, String> {
    let action = Action::Revoke;
    let Some(mut object) = parse_object(stdout, action)? else { return Ok(default_verification(action)) };
    refuse_unknown(&object, action, &["verification"])?;
    Ok(parse_verification(object.remove("verification"), action)?.unwrap_or_else(|| default_verification(action)))
}

/// One JSON object, or `None` for blank output.
fn parse_object(stdout: &[u8], action: Action) -> Result<Option<Map<String, Value>>, String> {
    if stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice::<Value>(stdout) {
        Ok(Value::Object(object)) => Ok(Some(object)),
        Ok(_) => Err(format!("exec hook {action} printed JSON on stdout that is not an object")),
        // serde_json's syntax messages name positions, never content; still,
        // say only where, so that no byte of stdout can reach an error.
        Err(error) => Err(format!(
            "exec hook {action} printed invalid JSON on stdout (line {}, column {}): print exactly one JSON object \
             there and send logs to stderr",
            error.line(),
            error.column()
        )),
    }
}

fn refuse_unknown(object: &Map<String, Value>, action: Action, known: &[&str]) -> Result<(), String> {
    match object.keys().find(|key| !known.contains(&key.as_str())) {
        Some(key) => Err(format!(
            "exec hook {action} printed an unknown field \"{}\" (known: {})",
            shorten(key),
            known.join(", ")
        )),
        None => Ok(()),
    }
}

fn parse_verification(value: Option<Value>, action: Action) -> Result<Option<Verification>, String> {
    match value {
        None => Ok(None),
        Some(Value::Object(verification)) => {
            if serialized_len(&verification) > MAX_VERIFICATION {
                return Err(format!("exec hook {action} printed a \"verification\" larger than 16 KiB"));
            }
            Ok(Some(verification))
        }
        Some(_) => Err(format!("exec hook {action} printed \"verification\" that is not an object")),
    }
}

fn check_env_name(name: &str, action: Action) -> Result<(), String> {
    if !is_env_name(name) {
        return Err(format!(
            "exec hook {action} printed env name \"{}\", which is not an environment variable name \
             (upper case letters, digits and _, not starting with a digit)",
            shorten(name)
        ));
    }
    if RESERVED_ENV.contains(&name) || RESERVED_ENV_PREFIXES.iter().any(|prefix| name.starts_with(prefix)) {
        return Err(format!(
            "exec hook {action} printed env name \"{name}\", which is reserved: a credential must not change how \
             the owner's shell and tools run"
        ));
    }
    Ok(())
}

/// Whether any string (or object key) in `value` contains `needle`.
fn contains_text(value: &Value, needle: &str) -> bool {
    match value {
        Value::String(text) => text.contains(needle),
        Value::Array(items) => items.iter().any(|item| contains_text(item, needle)),
        Value::Object(map) => map.iter().any(|(key, item)| key.contains(needle) || contains_text(item, needle)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

fn serialized_len(value: &impl Serialize) -> usize {
    serde_json::to_vec(value).map_or(usize::MAX, |bytes| bytes.len())
}

/// At most 64 characters of a name the hook printed, for an error.
fn shorten(text: &str) -> String {
    let short: String = text.chars().filter(|c| !c.is_control()).take(64).collect();
    if short.len() < text.len() { format!("{short}…") } else { short }
}

/// Credentials minted by the hook, in memory only.
struct Minted {
    env: Vec<Var>,
    /// When to mint again: shortly before the hook's own `expires_at`.
    refresh_at: Option<Timestamp>,
}

impl Minted {
    fn new(env: Vec<Var>, expires_at: Option<Timestamp>) -> Minted {
        Minted { env, refresh_at: expires_at.map(|at| at.plus_millis(-REFRESH_MARGIN_MILLIS)) }
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
        let mut command = match dies_with_broker() {
            Some(setpriv) => {
                let mut command = tokio::process::Command::new(setpriv);
                command.args(["--pdeathsig", "KILL", "--"]).arg(&path);
                command
            }
            None => tokio::process::Command::new(&path),
        };
        command
            .args(args)
            .arg(action.as_str())
            .current_dir(&self.policy_dir)
            .env_clear()
            .envs(hook_environment(hook, action, reissue, grant))
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

/// A hook's process group: killed on drop unless disarmed, so that a hook
/// abandoned mid-run (the broker's own timeout, shutdown) leaves nothing.
///
/// Killing a group needs `kill(2)` with a negative id, which safe `std`
/// does not offer; the shell's `kill` builtin does it without a dependency.
struct ProcessGroup {
    id: Option<u32>,
    armed: AtomicBool,
}

const KILL_SCRIPT: &str = "kill -s KILL -- \"-$1\" 2>/dev/null";

impl ProcessGroup {
    fn new(id: Option<u32>) -> ProcessGroup {
        ProcessGroup { id, armed: AtomicBool::new(true) }
    }

    async fn kill(&self) {
        let Some(id) = self.id else { return };
        let _ = tokio::process::Command::new("/bin/sh")
            .args(["-c", KILL_SCRIPT, "hourglass-kill", &id.to_string()])
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }

    fn disarm(&self) {
        self.armed.store(false, Ordering::SeqCst);
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(id) = self.id
            && self.armed.load(Ordering::SeqCst)
        {
            // Blocks for the few milliseconds a shell takes: drop cannot await.
            let _ = std::process::Command::new("/bin/sh")
                .args(["-c", KILL_SCRIPT, "hourglass-kill", &id.to_string()])
                .env_clear()
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Reads all of `reader`, killing the hook if it prints more than `cap`.
async fn read_capped(
    mut reader: impl AsyncRead + Unpin,
    cap: usize,
    group: &ProcessGroup,
) -> Result<Zeroizing<Vec<u8>>, String> {
    let mut out = Zeroizing::new(Vec::with_capacity(16 * 1024));
    let mut chunk = [0_u8; 8192];
    let result = loop {
        let read = match reader.read(&mut chunk).await {
            Ok(0) => break Ok(()),
            Ok(read) => read,
            Err(error) => break Err(format!("failed: its stdout could not be read: {}", error.kind())),
        };
        if out.len() + read > cap {
            group.kill().await;
            break Err(format!("printed more than {} KiB on stdout and was killed", cap / 1024));
        }
        if out.len() + read > out.capacity() {
            // Grow by copying into a new buffer, so that the old one is zeroized.
            let mut bigger = Zeroizing::new(Vec::with_capacity((out.capacity() * 2).max(out.len() + read)));
            bigger.extend_from_slice(&out);
            out = bigger;
        }
        out.extend_from_slice(&chunk[..read]);
    };
    chunk.zeroize();
    result.map(|()| out)
}

/// The end of a hook's stderr.
#[derive(Default)]
struct Tail {
    bytes: Vec<u8>,
    truncated: bool,
}

impl Tail {
    /// `": <stderr>"` for an error message, or `""` when there was none.
    fn describe(&self) -> String {
        let text = clean_stderr(&self.bytes);
        if text.is_empty() {
            String::new()
        } else if self.truncated {
            format!(": …{text}")
        } else {
            format!(": {text}")
        }
    }
}

async fn read_tail(mut reader: impl AsyncRead + Unpin, keep: usize) -> Tail {
    let mut tail = Tail::default();
    let mut chunk = [0_u8; 8192];
    while let Ok(read) = reader.read(&mut chunk).await
        && read > 0
    {
        tail.bytes.extend_from_slice(&chunk[..read]);
        if tail.bytes.len() > keep {
            let excess = tail.bytes.len() - keep;
            tail.bytes.drain(..excess);
            tail.truncated = true;
        }
    }
    tail
}

/// Stderr as text safe for an error message, a terminal and the audit log:
/// UTF-8 (lossy), escape sequences and control characters removed except
/// line breaks and tabs, blank lines and outer space trimmed.
fn clean_stderr(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI (`ESC [ … final`): skip it whole; other escapes lose the ESC.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for next in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&next) {
                            break;
                        }
                    }
                }
            }
            '\n' | '\t' => out.push(c),
            '\r' => {}
            // Bidirectional overrides could make the text read differently.
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {}
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    let lines: Vec<&str> = out.lines().map(str::trim_end).filter(|line| !line.trim().is_empty()).collect();
    lines.join("\n").trim().to_owned()
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

/// `setpriv --pdeathsig KILL`, when this system has it: a hook then dies
/// with the broker (killed, crashed) instead of changing the target after a
/// restarted broker has already revoked the grant it acts for. (The parent
/// is the runtime worker thread that spawned it, which lives as long as the
/// broker.) A hook's own children are still killed with its process group
/// on timeout and exit.
fn dies_with_broker() -> Option<&'static std::path::Path> {
    static SETPRIV: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    SETPRIV
        .get_or_init(|| ["/usr/bin/setpriv", "/bin/setpriv"].into_iter().map(PathBuf::from).find(|path| path.is_file()))
        .as_deref()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use hourglass_core::{AccessRequest, GrantId, NewRequest, RequestId};

    use super::*;

    /// 2026-11-18T11:06:40Z: a fixed broker clock.
    const NOW: Timestamp = Timestamp::from_unix_millis(1_795_000_000_000);
    /// A credential the hooks below print; no error may ever contain it.
    const SECRET: &str = "s3cr3t-value-1234";

    fn resource(settings: &str, role_settings: &str) -> Resource {
        let toml = format!(
            "[workflows.w]\napprovals = [{{ group = \"g\", count = 1 }}]\n[resources.cloud]\nprovider = \"exec\"\nworkflow = \"w\"\nlabels = [\"production\"]\nsettings = {settings}\n[resources.cloud.roles.deploy]\nsettings = {role_settings}\n"
        );
        let policy =
            hourglass_policy::Policy::from_sources(vec![("hourglass.toml".into(), toml)]).expect("policy loads");
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
            IssueInput { grant, resource: &self.resource, role: &self.resource.roles["deploy"], now, material: None }
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
            (
                format!("{{\"state\":{{}},\"env\":{{\"LD_PRELOAD\":\"{SECRET}\"}}}}"),
                "\"LD_PRELOAD\", which is reserved",
            ),
            (
                format!("{{\"state\":{{}},\"env\":{{\"HOURGLASS_TOKEN\":\"{SECRET}\"}}}}"),
                "\"HOURGLASS_TOKEN\", which is reserved",
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
        assert!(
            error.starts_with("cloud: exec hook issue failed (exit status 3): …"),
            "names the step and how: {error}"
        );
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
        let fixture =
            Fixture::new("sleep 60 &\necho $! > sleep.pid\necho 'still working' >&2\nwait", ", timeout = \"1s\"");
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
}
