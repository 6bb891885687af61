//! The formats tools read credentials in: AWS `credential_process`, the
//! Kubernetes exec credential plugin, git's credential helper protocol.
//! Pure: the agent hands a credential in, text comes out.

pub mod aws;
pub mod git;
pub mod kube;

use hourglass_core::api::Credential;

use crate::agent::protocol::{AgentError, AgentErrorCode};

/// The bearer token of a credential: a secret variable named `KUBE_TOKEN`,
/// else the one secret variable whose name ends in `_TOKEN` (the token
/// provider's `{PREFIX}_TOKEN`).
pub fn token(credential: &Credential) -> Result<&str, AgentError> {
    let secret = || credential.env.iter().filter(|v| v.secret);
    if let Some(var) = secret().find(|v| v.name == "KUBE_TOKEN") {
        return Ok(&var.value);
    }
    let tokens: Vec<_> = secret().filter(|v| v.name.ends_with("_TOKEN")).collect();
    match tokens.as_slice() {
        [only] => Ok(&only.value),
        [] => Err(AgentError::new(
            AgentErrorCode::Unsupported,
            format!("grant {} carries no token (no secret *_TOKEN variable)", credential.grant_id),
        )),
        several => Err(AgentError::new(
            AgentErrorCode::Unsupported,
            format!(
                "grant {} carries several tokens ({}): have its provider set KUBE_TOKEN",
                credential.grant_id,
                several.iter().map(|v| v.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}
