//! The Kubernetes exec credential plugin (`client.authentication.k8s.io`):
//! kubectl runs the command from the kubeconfig's `users[].user.exec` and
//! reads an `ExecCredential` with `status.token` and
//! `status.expirationTimestamp` (RFC 3339), caching it until then.

use hourglass_core::Timestamp;
use hourglass_core::api::Credential;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::agent::protocol::{AgentError, AgentErrorCode};

pub const API_VERSION: &str = "client.authentication.k8s.io/v1";
/// Older kubectl versions ask for this one; the status is the same.
pub const API_VERSION_BETA: &str = "client.authentication.k8s.io/v1beta1";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExecCredential<'a> {
    api_version: &'a str,
    kind: &'static str,
    status: Status<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Status<'a> {
    expiration_timestamp: String,
    token: &'a str,
}

/// The apiVersion to answer with, from `KUBERNETES_EXEC_INFO` (kubectl sets
/// it when the kubeconfig says `provideClusterInfo` or by default in v1):
/// the version it asked for when we speak it, else v1.
pub fn api_version(exec_info: Option<&str>) -> Result<&'static str, AgentError> {
    let Some(info) = exec_info.filter(|text| !text.trim().is_empty()) else { return Ok(API_VERSION) };
    let asked = serde_json::from_str::<serde_json::Value>(info)
        .ok()
        .and_then(|value| value["apiVersion"].as_str().map(str::to_owned));
    match asked.as_deref() {
        None | Some(API_VERSION) => Ok(API_VERSION),
        Some(API_VERSION_BETA) => Ok(API_VERSION_BETA),
        Some(other) => Err(AgentError::new(
            AgentErrorCode::Unsupported,
            format!("kubectl asked for {other}; hourglass speaks {API_VERSION} and {API_VERSION_BETA}"),
        )),
    }
}

/// The `ExecCredential` JSON for `credential`'s token, valid until
/// `expires` on this machine's clock.
pub fn exec_credential(
    credential: &Credential,
    expires: Timestamp,
    api_version: &str,
) -> Result<Zeroizing<String>, AgentError> {
    let token = super::token(credential)?;
    let output = ExecCredential {
        api_version,
        kind: "ExecCredential",
        status: Status { expiration_timestamp: rfc3339_seconds(expires), token },
    };
    serde_json::to_string(&output)
        .map(Zeroizing::new)
        .map_err(|error| AgentError::new(AgentErrorCode::Failed, error.to_string()))
}

/// `2026-11-23T14:32:00Z`: Kubernetes' `metav1.Time` is whole seconds.
/// Rounded down, so kubectl asks again no later than the deadline.
fn rfc3339_seconds(at: Timestamp) -> String {
    let text = Timestamp::from_unix_millis(at.unix_seconds() * 1000).to_string();
    text.replace(".000Z", "Z")
}

#[cfg(test)]
mod tests {
    use hourglass_core::GrantId;
    use hourglass_core::api::EnvVar;

    use super::*;

    #[test]
    fn an_exec_credential_carries_the_token_and_an_rfc3339_expiry() {
        let credential = Credential {
            grant_id: GrantId::from_random(1),
            resource: "k8s".into(),
            role: "view".into(),
            provider: "token".into(),
            expires_at: Timestamp::from_unix_millis(0),
            valid_until: None,
            env: vec![
                EnvVar { name: "K8S_TOKEN".into(), value: "eyJ.x.y".into(), secret: true },
                EnvVar { name: "K8S_TOKEN_EXPIRES_AT".into(), value: "2026".into(), secret: false },
            ],
            ssh_certificate: None,
            client_secret: None,
        };
        let expires = Timestamp::parse("2026-11-23T14:32:00.999Z").expect("time");
        let json = exec_credential(&credential, expires, API_VERSION).expect("a token");
        let value: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        assert_eq!(value["apiVersion"], API_VERSION);
        assert_eq!(value["kind"], "ExecCredential");
        assert_eq!(value["status"]["token"], "eyJ.x.y", "the secret *_TOKEN variable");
        assert_eq!(value["status"]["expirationTimestamp"], "2026-11-23T14:32:00Z", "whole seconds, rounded down");
    }

    #[test]
    fn the_api_version_follows_what_kubectl_asked() {
        assert_eq!(api_version(None).expect("default"), API_VERSION);
        let beta = r#"{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","spec":{}}"#;
        assert_eq!(api_version(Some(beta)).expect("beta"), API_VERSION_BETA);
        let alpha = r#"{"apiVersion":"client.authentication.k8s.io/v1alpha1"}"#;
        assert!(api_version(Some(alpha)).is_err(), "an unknown version is refused");
    }
}
