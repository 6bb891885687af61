//! Where a client-made secret waits: in the local agent's memory.
//!
//! For PostgreSQL and SSH resources the client makes the secret (see
//! [`crate::material`]) and the broker only ever sees its public half. The
//! secret then has to live somewhere until the grant ends, so that
//! `hourglass env`/`exec`, the prompt hook and ssh-agent can complete the
//! credential. It lives in the agent, in memory, zeroized when the grant
//! ends; never in a file. [`store`] is the one way in.
//!
//! If the agent stops, the secrets it held are gone: the grant can no
//! longer be completed on this machine and must be requested again. (The OS
//! keyring can later back this store, so a restarted agent picks secrets up
//! again: that belongs behind [`store`] and the agent's start-up, nowhere
//! else.)

use hourglass_core::{GrantId, RequestId};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::agent::{AgentClient, Paths};

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

impl From<&crate::material::PostgresSecret> for ClientSecretValue {
    fn from(secret: &crate::material::PostgresSecret) -> Self {
        ClientSecretValue::PostgresPassword(secret.password.as_str().to_owned())
    }
}

impl TryFrom<&crate::material::SshSecret> for ClientSecretValue {
    type Error = crate::Error;

    fn try_from(secret: &crate::material::SshSecret) -> crate::Result<Self> {
        let pem = secret
            .private_key
            .to_openssh(ssh_key::LineEnding::LF)
            .map_err(|error| crate::Error::Config(format!("encoding the SSH key: {error}")))?;
        Ok(ClientSecretValue::SshPrivateKey(pem.as_str().to_owned()))
    }
}

/// Hands `secret`, made for `request` (and its grant, when already issued),
/// to the running agent. With `confirm_ready`, the agent also checks the
/// credential works once the grant is issued and tells the broker.
pub fn store(
    paths: &Paths,
    request: &RequestId,
    grant: Option<&GrantId>,
    secret: ClientSecretValue,
    confirm_ready: bool,
) -> crate::Result<()> {
    let mut agent = AgentClient::connect(paths)?;
    agent.store_secret(request, grant, secret, confirm_ready)
}
