//! What a hook prints on stdout, read strictly: unknown fields, reserved
//! or malformed variable names, oversized values and secrets echoed into
//! state or verification are refused with the field named.

use hourglass_core::Timestamp;
use serde::Serialize;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::super::{Verification, is_env_name};

/// Limits on what the broker stores and audits for a hook.
pub(super) const MAX_STATE: usize = 64 * 1024;
pub(super) const MAX_VERIFICATION: usize = 16 * 1024;
pub(super) const MAX_ENV: usize = 100;
pub(super) const MAX_ENV_VALUE: usize = 64 * 1024;
/// Values shorter than this are not searched for in state and verification
/// (`1`, `true` and `eu-west-1` are not credentials).
pub(super) const MIN_SECRET_CHECKED: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    Issue,
    Renew,
    Revoke,
}

impl Action {
    pub(super) fn as_str(self) -> &'static str {
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
pub(super) struct Var {
    pub(super) name: String,
    pub(super) value: Zeroizing<String>,
    pub(super) secret: bool,
}

/// What the hook answered on issue or renew.
#[derive(Default)]
pub(super) struct Answer {
    /// `None` when the hook printed no `state`.
    pub(super) state: Option<Value>,
    /// `None` when the hook printed no `env`.
    pub(super) env: Option<Vec<Var>>,
    pub(super) expires_at: Option<Timestamp>,
    pub(super) verification: Option<Verification>,
}

impl Answer {
    pub(super) fn verification(&mut self, action: Action) -> Verification {
        self.verification.take().unwrap_or_else(|| default_verification(action))
    }
}

pub(super) fn default_verification(action: Action) -> Verification {
    let mut verification = Verification::new();
    verification.insert("hook".into(), format!("{action} succeeded").into());
    verification
}

/// Reads the hook's stdout on issue and renew. Errors name fields, never
/// values: stdout holds credentials.
pub(super) fn parse_answer(stdout: &[u8], action: Action, now: Timestamp) -> Result<Answer, String> {
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
pub(super) fn parse_revoke_answer(stdout: &[u8]) -> Result<Verification, String> {
    let action = Action::Revoke;
    let Some(mut object) = parse_object(stdout, action)? else { return Ok(default_verification(action)) };
    refuse_unknown(&object, action, &["verification"])?;
    Ok(parse_verification(object.remove("verification"), action)?.unwrap_or_else(|| default_verification(action)))
}

/// One JSON object, or `None` for blank output.
pub(super) fn parse_object(stdout: &[u8], action: Action) -> Result<Option<Map<String, Value>>, String> {
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

pub(super) fn refuse_unknown(object: &Map<String, Value>, action: Action, known: &[&str]) -> Result<(), String> {
    match object.keys().find(|key| !known.contains(&key.as_str())) {
        Some(key) => Err(format!(
            "exec hook {action} printed an unknown field \"{}\" (known: {})",
            shorten(key),
            known.join(", ")
        )),
        None => Ok(()),
    }
}

pub(super) fn parse_verification(value: Option<Value>, action: Action) -> Result<Option<Verification>, String> {
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

pub(super) fn check_env_name(name: &str, action: Action) -> Result<(), String> {
    if !is_env_name(name) {
        return Err(format!(
            "exec hook {action} printed env name \"{}\", which is not an environment variable name \
             (upper case letters, digits and _, not starting with a digit)",
            shorten(name)
        ));
    }
    if let Some(why) = hourglass_core::env_names::refused_credential_name(name) {
        return Err(format!(
            "exec hook {action} printed env name \"{name}\", which is reserved: {why}, and a credential must not \
             change how the owner's shell and tools run"
        ));
    }
    Ok(())
}

/// Whether any string (or object key) in `value` contains `needle`.
pub(super) fn contains_text(value: &Value, needle: &str) -> bool {
    match value {
        Value::String(text) => text.contains(needle),
        Value::Array(items) => items.iter().any(|item| contains_text(item, needle)),
        Value::Object(map) => map.iter().any(|(key, item)| key.contains(needle) || contains_text(item, needle)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

pub(super) fn serialized_len(value: &impl Serialize) -> usize {
    serde_json::to_vec(value).map_or(usize::MAX, |bytes| bytes.len())
}

/// At most 64 characters of a name the hook printed, for an error.
pub(super) fn shorten(text: &str) -> String {
    let short: String = text.chars().filter(|c| !c.is_control()).take(64).collect();
    if short.len() < text.len() { format!("{short}…") } else { short }
}
