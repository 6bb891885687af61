//! The agent's socket protocol, version 1: JSON lines over a Unix socket.
//!
//! Each request is one line, a JSON object with `version` and `op`:
//!
//! ```json
//! {"version":1,"op":"credential","grant":{"grant":"grt-7k2m9x4q3t"}}
//! {"version":1,"op":"credential","grant":{"resource":"orders-db","role":"read"}}
//! {"version":1,"op":"hook_state"}
//! ```
//!
//! Each answer is one line: `{"ok":{…}}` or `{"error":{"code":"…","message":"…"}}`.
//! A connection may carry several requests, answered in order. A peer of
//! another uid gets one `forbidden` error line and the connection closes.
//! A request with another `version` gets `unsupported_version`; fields a
//! version does not know are ignored, so adding optional fields keeps the
//! version.

use hourglass_core::api::{Credential, EnvVar};
use hourglass_core::{GrantId, GrantState, RequestId, Timestamp};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

pub const VERSION: u32 = 1;

/// The longest request line the agent reads (a private key fits easily).
pub const MAX_LINE: usize = 64 * 1024;

/// One request line.
#[derive(Debug, Serialize, Deserialize)]
pub struct RequestLine {
    pub version: u32,
    #[serde(flatten)]
    pub request: Request,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// What the agent is and holds (no secrets).
    Status,
    /// A held grant's credential, completed with the client's own secret.
    Credential { grant: Selector },
    /// What the prompt hook exports, and the state line it compares.
    HookState,
    /// A secret born on this client for a request (and its grant, when
    /// already issued): the agent keeps it in memory to complete the
    /// credential.
    StoreSecret {
        request_id: RequestId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grant_id: Option<GrantId>,
        secret: ClientSecretValue,
        /// Whether the agent should check the credential works and tell the
        /// broker (when the grant is issued later, after an approval).
        #[serde(default)]
        confirm_ready: bool,
    },
    /// git's credential helper question: which token answers for this host.
    GitCredential {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        protocol: Option<String>,
        host: String,
    },
    /// Turns the managed block in `~/.pgpass` on or off.
    Pgpass { enabled: bool },
    /// Asks the agent to exit.
    Stop,
}

/// A secret born on this client. Zeroized when dropped; never logged.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(rename_all = "snake_case")]
pub enum ClientSecretValue {
    /// The password whose SCRAM verifier went to the broker.
    PostgresPassword(String),
    /// The OpenSSH private key whose public key went to the broker.
    SshPrivateKey(String),
}

impl ClientSecretValue {
    pub fn kind(&self) -> &'static str {
        match self {
            ClientSecretValue::PostgresPassword(_) => "postgres_password",
            ClientSecretValue::SshPrivateKey(_) => "ssh_private_key",
        }
    }
}

impl std::fmt::Debug for ClientSecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientSecretValue::{}(…)", self.kind())
    }
}

/// Which grant: by id, or the live grant on a resource (and role).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Selector {
    Grant {
        grant: GrantId,
    },
    Resource {
        resource: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<String>,
    },
}

impl Selector {
    /// `grt-…` is a grant id; anything else is `RESOURCE` or `RESOURCE/ROLE`.
    pub fn parse(text: &str) -> Result<Selector, AgentError> {
        let text = text.trim();
        if text.starts_with(GrantId::PREFIX) {
            return GrantId::parse(text)
                .map(|grant| Selector::Grant { grant })
                .map_err(|error| AgentError::new(AgentErrorCode::InvalidRequest, error.to_string()));
        }
        let (resource, role) = match text.split_once('/') {
            Some((resource, role)) => (resource, Some(role.to_owned())),
            None => (text, None),
        };
        if resource.is_empty() || role.as_deref() == Some("") {
            return Err(AgentError::new(
                AgentErrorCode::InvalidRequest,
                format!("\"{text}\" is neither a grant id (grt-…) nor RESOURCE[/ROLE]"),
            ));
        }
        Ok(Selector::Resource { resource: resource.to_owned(), role })
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Grant { grant } => write!(f, "{grant}"),
            Selector::Resource { resource, role: Some(role) } => write!(f, "{resource}/{role}"),
            Selector::Resource { resource, role: None } => f.write_str(resource),
        }
    }
}

/// One answer line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Ok(Answer),
    Error(AgentError),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Status(Status),
    Credential(HeldCredential),
    HookState(HookSnapshot),
    GitCredential(Option<GitAnswer>),
    Done,
}

/// An error answer: a stable code for programs, a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct AgentError {
    pub code: AgentErrorCode,
    pub message: String,
}

impl AgentError {
    pub fn new(code: AgentErrorCode, message: impl Into<String>) -> AgentError {
        AgentError { code, message: message.into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentErrorCode {
    /// No agent answers on the socket (a client-side code).
    NotRunning,
    /// The peer runs as another user.
    Forbidden,
    UnsupportedVersion,
    InvalidRequest,
    /// No live grant matches.
    NotFound,
    /// The grant has ended (expired, revoked, failed).
    Ended,
    /// Several live grants match a resource: name the grant.
    Ambiguous,
    /// The grant needs a secret this agent does not hold (it was made by
    /// another client, or before the agent restarted).
    Incomplete,
    /// The grant has no credential of the asked kind (no AWS keys, no token).
    Unsupported,
    /// The agent could not do it (a file, ssh-agent); the message says why.
    Failed,
}

/// What `status` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub version: u32,
    pub pid: u32,
    /// The broker this agent follows.
    pub broker: String,
    /// Whom the broker says the agent acts for, once it has asked.
    #[serde(default)]
    pub principal: Option<String>,
    /// Whether the event stream is connected now.
    pub online: bool,
    /// The broker's clock minus this machine's, in milliseconds.
    pub skew_ms: i64,
    pub grants: Vec<HeldGrant>,
    /// Secrets waiting for their request's approval.
    pub waiting_secrets: usize,
    /// The ssh-agent the agent adds SSH keys to, if any.
    #[serde(default)]
    pub ssh_auth_sock: Option<String>,
    /// Whether the managed `~/.pgpass` block is on.
    pub pgpass: bool,
    /// The state line the prompt hook compares.
    pub hook_state: String,
}

/// A grant the agent holds, without its secrets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldGrant {
    pub id: GrantId,
    pub resource: String,
    pub role: String,
    pub provider: String,
    pub state: GrantState,
    /// The deadline on the broker's clock.
    pub expires_at: Timestamp,
    /// The same instant on this machine's clock.
    pub local_expires_at: Timestamp,
    pub ready: bool,
    /// Whether the agent can hand out the whole credential (it holds the
    /// credential and, where the client makes one, the client's secret).
    pub complete: bool,
    /// Names of the variables the credential sets.
    pub env: Vec<String>,
    /// Why not complete, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// A credential as the agent hands it out: completed (`PGPASSWORD` added
/// for PostgreSQL), with the deadline on this machine's clock.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldCredential {
    pub credential: Credential,
    pub local_expires_at: Timestamp,
    pub owner: String,
}

/// What the prompt hook needs: the state line the agent last wrote to the
/// hook file and, oldest grant first, each live grant's variables.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HookSnapshot {
    pub state: String,
    pub grants: Vec<HookGrant>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HookGrant {
    pub id: GrantId,
    /// The deadline on this machine's clock, in Unix seconds (rounded
    /// down, so shells drop it no later than the broker does).
    pub deadline: i64,
    pub env: Vec<EnvVar>,
}

/// git's answer: `username=` and `password=` lines.
#[derive(Debug, Clone, Serialize, Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct GitAnswer {
    pub username: String,
    pub password: String,
    /// Unix seconds on this machine's clock (`password_expiry_utc`).
    #[zeroize(skip)]
    pub expires: i64,
    #[zeroize(skip)]
    pub grant: GrantId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_flat_json_objects_with_version_and_op() {
        let line = RequestLine { version: VERSION, request: Request::Status };
        assert_eq!(serde_json::to_string(&line).expect("json"), r#"{"version":1,"op":"status"}"#, "wire form");
        let parsed: RequestLine =
            serde_json::from_str(r#"{"version":1,"op":"credential","grant":{"resource":"db","role":"read"}}"#)
                .expect("a credential request parses");
        assert!(
            matches!(parsed.request, Request::Credential { grant: Selector::Resource { ref resource, .. } } if resource == "db"),
            "selector by resource: {parsed:?}"
        );
    }

    #[test]
    fn answers_are_ok_or_error_objects() {
        let error = Reply::Error(AgentError::new(AgentErrorCode::NotFound, "no live grant grt-x"));
        assert_eq!(
            serde_json::to_string(&error).expect("json"),
            r#"{"error":{"code":"not_found","message":"no live grant grt-x"}}"#,
            "errors carry a snake_case code"
        );
        assert_eq!(serde_json::to_string(&Reply::Ok(Answer::Done)).expect("json"), r#"{"ok":"done"}"#);
    }

    #[test]
    fn selectors_parse_grant_ids_and_resources() {
        let id = GrantId::from_random(7);
        assert_eq!(Selector::parse(id.as_str()).expect("id"), Selector::Grant { grant: id }, "a grant id");
        assert_eq!(
            Selector::parse("orders-db/read").expect("resource/role"),
            Selector::Resource { resource: "orders-db".into(), role: Some("read".into()) },
            "resource and role"
        );
        assert_eq!(
            Selector::parse("orders-db").expect("resource"),
            Selector::Resource { resource: "orders-db".into(), role: None },
            "resource alone"
        );
        assert!(Selector::parse("grt-!!").is_err(), "a malformed grant id is refused");
        assert!(Selector::parse("/read").is_err(), "an empty resource is refused");
    }
}
