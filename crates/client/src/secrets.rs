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

use crate::agent::protocol::ClientSecretValue;
use crate::agent::{AgentClient, Paths};

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
