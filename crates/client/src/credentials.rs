//! A grant's credential as a person's tools use it (`hourglass env` and
//! `exec`, the desktop's "Copy" and "Terminal"): from the local agent,
//! completed with the secret this client made (a PostgreSQL password; an
//! SSH key, which the agent hands to ssh-agent), with no network. From the
//! broker only when the agent does not run or has not heard of the grant
//! yet, and never half: a credential whose secret only the agent could
//! complete is refused with what to do.

use std::time::Duration as StdDuration;

use hourglass_core::api::{ClientSecret, Credential};

use crate::agent::protocol::Selector;
use crate::agent::{AgentClient, AgentErrorCode, Paths};
use crate::{Client, Error, Result};

/// How long to wait for the agent to catch up with a grant just issued
/// whose secret only the agent has.
const AGENT_CATCH_UP: StdDuration = StdDuration::from_secs(5);

fn agent_code(error: &Error) -> Option<AgentErrorCode> {
    match error {
        Error::Agent(error) => Some(error.code),
        _ => None,
    }
}

/// The credential `selector` names, complete. `broker` makes a client of
/// the broker, only when one is needed (the agent alone needs no session).
pub async fn complete(
    paths: &Paths,
    selector: Selector,
    broker: impl FnOnce() -> Result<Client>,
) -> Result<Credential> {
    let agent_error = match from_agent(paths, &selector).await {
        Ok(credential) => return Ok(credential),
        Err(error) => error,
    };
    let code = agent_code(&agent_error);
    // The agent may not have caught up with a grant just issued.
    let direct = matches!(code, Some(AgentErrorCode::NotRunning | AgentErrorCode::NotFound));
    let Selector::Grant { grant } = &selector else { return Err(agent_error) };
    if !direct {
        return Err(agent_error);
    }
    let credential = broker()?.credential(grant).await?;
    let Some(kind) = credential.client_secret else { return Ok(credential) };
    if code == Some(AgentErrorCode::NotFound) {
        // The agent holds this grant's secret and hears of the grant from
        // the broker's event stream a moment after the request returned.
        let started = tokio::time::Instant::now();
        while started.elapsed() < AGENT_CATCH_UP {
            tokio::time::sleep(StdDuration::from_millis(50)).await;
            match from_agent(paths, &selector).await {
                Ok(credential) => return Ok(credential),
                Err(error) if agent_code(&error) == Some(AgentErrorCode::NotFound) => {}
                Err(_) => break,
            }
        }
    }
    let what = match kind {
        ClientSecret::PostgresPassword => "password",
        ClientSecret::SshPrivateKey => "SSH key",
    };
    let why = if code == Some(AgentErrorCode::NotRunning) {
        "the hourglass agent, which is not running"
    } else {
        "the hourglass agent, which does not hold it"
    };
    Err(Error::Config(format!(
        "the {what} of grant {grant} was made on the client and lives only in {why}: request access again"
    )))
}

/// The agent's credential, asked off the async workers: the agent client
/// blocks, and the agent may be served on this same runtime (the app's).
async fn from_agent(paths: &Paths, selector: &Selector) -> Result<Credential> {
    let (paths, selector) = (paths.clone(), selector.clone());
    tokio::task::spawn_blocking(move || {
        AgentClient::connect(&paths).and_then(|mut agent| agent.credential(selector)).map(|held| held.credential)
    })
    .await
    .map_err(|error| Error::Config(format!("the call to the agent stopped: {error}")))?
}
