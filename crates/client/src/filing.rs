//! Filing a request whose secret this client makes, the same way from the
//! CLI and the desktop app. For PostgreSQL and SSH resources the secret (a
//! password, a private key) is made here and only its public half is sent;
//! the secret goes to the local agent. A PostgreSQL grant issued at once is
//! logged in to with the new password and confirmed ready.

use hourglass_core::GrantState;
use hourglass_core::api::{CreateRequest, RequestOutcome};

use crate::agent::protocol::{ClientSecretValue, Status};
use crate::agent::{AgentClient, AgentErrorCode, Paths};
use crate::secrets;
use crate::{Client, Error, Result, material, readiness};

/// The secret a resource's provider needs its requester's client to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretKind {
    PostgresPassword,
    SshKey,
}

impl SecretKind {
    /// By the provider's kind, as the catalog names it; `None` when the
    /// broker makes the whole credential.
    pub fn of_provider(kind: &str) -> Option<SecretKind> {
        match kind {
            "postgres" => Some(SecretKind::PostgresPassword),
            "ssh" => Some(SecretKind::SshKey),
            _ => None,
        }
    }
}

/// What secret a request for `resource` needs this client to make, from
/// the broker's catalog.
pub async fn secret_kind(client: &Client, resource: &str) -> Result<Option<SecretKind>> {
    let catalog = client.catalog().await?;
    Ok(catalog.resources.iter().find(|r| r.name == resource).and_then(|r| SecretKind::of_provider(&r.provider)))
}

/// Files `body`: as it is for a resource whose credential the broker
/// makes whole; with a fresh secret, kept by the agent at `paths`, for a
/// PostgreSQL or SSH resource. `before_secret` runs first in that case
/// (the CLI starts an agent there when none runs; the app runs its own).
pub async fn file(
    client: &Client,
    paths: &Paths,
    body: CreateRequest,
    before_secret: impl FnOnce() -> Result<()>,
) -> Result<Filed> {
    match secret_kind(client, &body.resource).await? {
        None => Ok(Filed { outcome: client.create_request(&body).await?, notes: Vec::new() }),
        Some(kind) => {
            before_secret()?;
            file_with_secret(client, paths, body, kind).await
        }
    }
}

/// A filed request, with what its requester should be told beyond it.
pub struct Filed {
    pub outcome: RequestOutcome,
    pub notes: Vec<String>,
}

/// A secret made here for a request.
enum Made {
    Postgres(material::PostgresSecret),
    Ssh(Box<material::SshSecret>),
}

/// Files `body` with a fresh secret of `kind`. The agent at `paths` must
/// already serve (it is asked first, so that a grant never exists whose
/// secret has nowhere to live); when it cannot keep the secret, the request
/// is withdrawn and the error says so.
pub async fn file_with_secret(
    client: &Client,
    paths: &Paths,
    mut body: CreateRequest,
    kind: SecretKind,
) -> Result<Filed> {
    // 4,096 PBKDF2 rounds or a key pair: off the async workers.
    let made = tokio::task::spawn_blocking(move || match kind {
        SecretKind::PostgresPassword => Ok(Made::Postgres(material::postgres())),
        SecretKind::SshKey => material::ssh().map(|secret| Made::Ssh(Box::new(secret))).map_err(Error::Config),
    });
    let agent = agent_status(paths.clone()).await?;
    if agent.broker != client.base_url() {
        return Err(Error::Config(format!(
            "the running hourglass agent follows {}, not {}: stop it (`hourglass agent --stop`) or use its broker",
            agent.broker,
            client.base_url()
        )));
    }
    let made = made.await.map_err(|error| Error::Config(format!("making the secret stopped: {error}")))??;
    let (material, value) = match &made {
        Made::Postgres(secret) => (secret.material.clone(), ClientSecretValue::from(secret)),
        Made::Ssh(secret) => (secret.material.clone(), ClientSecretValue::try_from(&**secret)?),
    };
    body.client_material = Some(material);
    let mut outcome = client.create_request(&body).await?;
    let issued = outcome.grant.clone().filter(|grant| grant.state == GrantState::Active);
    let confirm_here = matches!(made, Made::Postgres(_)) && issued.is_some();
    let request = outcome.request.id.clone();
    let grant = issued.as_ref().map(|g| g.id.clone());
    let stored =
        blocking(paths.clone(), move |paths| secrets::store(&paths, &request, grant.as_ref(), value, !confirm_here))
            .await;
    if let Err(error) = stored {
        // Without its secret the grant is useless: withdraw it.
        let undo = match &outcome.grant {
            Some(grant) => client.revoke(&grant.id, Some("the client could not keep its secret".into())).await.err(),
            None => client.cancel(&outcome.request.id).await.err(),
        };
        let undo = undo.map(|e| format!(" (withdrawing it failed too: {e})")).unwrap_or_default();
        return Err(Error::Config(format!(
            "the agent did not take the new secret ({error}); the request was withdrawn{undo}"
        )));
    }
    let mut notes = Vec::new();
    match (&made, &issued) {
        (Made::Postgres(secret), Some(grant)) => {
            let check = async {
                let credential = client.credential(&grant.id).await.map_err(|e| e.to_string())?;
                let what = readiness::postgres(&credential.env, &secret.password).await?;
                client.confirm_ready(&grant.id, Some(what)).await.map_err(|e| e.to_string())
            };
            match check.await {
                Ok(ready) => outcome.grant = Some(ready),
                Err(error) => notes.push(format!("{}: logging in with the new password failed: {error}", grant.id)),
            }
        }
        (Made::Ssh(_), Some(grant)) => notes.push(match &agent.ssh_auth_sock {
            Some(sock) => format!("{}: the agent adds its key and certificate to the ssh-agent at {sock}", grant.id),
            None => format!(
                "{}: the agent holds its key but knows no ssh-agent (start it with SSH_AUTH_SOCK set)",
                grant.id
            ),
        }),
        (_, None) => notes.push("the agent keeps this request's secret until the grant is issued".into()),
    }
    Ok(Filed { outcome, notes })
}

/// The agent's status: it answers, and so can take a secret. An agent that
/// is starting (the desktop app's, right after its user logged in) binds
/// its socket a moment later: it is given a few seconds.
async fn agent_status(paths: Paths) -> Result<Status> {
    let started = std::time::Instant::now();
    loop {
        let status =
            blocking(paths.clone(), |paths| AgentClient::connect(&paths).and_then(|mut agent| agent.status())).await;
        match status {
            Err(Error::Agent(error))
                if error.code == AgentErrorCode::NotRunning && started.elapsed() < AGENT_START_GRACE =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(error) => {
                return Err(Error::Config(format!(
                    "the secret of this grant is kept by the hourglass agent, which is not available: {error}"
                )));
            }
            Ok(status) => return Ok(status),
        }
    }
}

const AGENT_START_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// The agent client blocks (it needs no runtime, for hooks and helpers):
/// its calls go to a blocking thread, so an agent served on this same
/// runtime (the desktop app's) is never waited for from a worker it needs.
async fn blocking<T: Send + 'static>(
    paths: Paths,
    call: impl FnOnce(Paths) -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(move || call(paths))
        .await
        .map_err(|error| Error::Config(format!("the call to the agent stopped: {error}")))?
}
