//! AWS `credential_process` (the SDKs' and CLI's "sourcing credentials with
//! an external process"): one JSON object on standard output.
//!
//! ```json
//! {"Version": 1, "AccessKeyId": "…", "SecretAccessKey": "…",
//!  "SessionToken": "…", "Expiration": "2026-11-23T14:32:00.000Z"}
//! ```
//!
//! The keys come from an exec-provider grant whose hook printed
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and (for temporary keys)
//! `AWS_SESSION_TOKEN`. `Expiration` is the grant's deadline on this
//! machine's clock, or the hook's `AWS_CREDENTIAL_EXPIRATION` when that is
//! earlier, so the SDK asks again before either ends.

use hourglass_core::Timestamp;
use hourglass_core::api::Credential;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::agent::protocol::{AgentError, AgentErrorCode};

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Output<'a> {
    version: u32,
    access_key_id: &'a str,
    secret_access_key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_token: Option<&'a str>,
    expiration: String,
}

/// The `credential_process` JSON for `credential`, which ends at `expires`
/// on this machine's clock.
pub fn credential_process(credential: &Credential, expires: Timestamp) -> Result<Zeroizing<String>, AgentError> {
    let var = |name: &str| credential.env.iter().find(|v| v.name == name).map(|v| v.value.as_str());
    let (Some(access_key_id), Some(secret_access_key)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"))
    else {
        return Err(AgentError::new(
            AgentErrorCode::Unsupported,
            format!(
                "grant {} ({}/{}) carries no AWS keys (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
                credential.grant_id, credential.resource, credential.role
            ),
        ));
    };
    let own_expiry = var("AWS_CREDENTIAL_EXPIRATION").and_then(|text| Timestamp::parse(text).ok());
    let expiration = own_expiry.map_or(expires, |own| own.min(expires));
    let output = Output {
        version: 1,
        access_key_id,
        secret_access_key,
        session_token: var("AWS_SESSION_TOKEN"),
        expiration: expiration.to_string(),
    };
    serde_json::to_string(&output)
        .map(Zeroizing::new)
        .map_err(|error| AgentError::new(AgentErrorCode::Failed, error.to_string()))
}

#[cfg(test)]
mod tests {
    use hourglass_core::GrantId;
    use hourglass_core::api::EnvVar;

    use super::*;

    fn credential(env: &[(&str, &str)]) -> Credential {
        Credential {
            grant_id: GrantId::from_random(1),
            resource: "aws-prod".into(),
            role: "admin".into(),
            provider: "exec".into(),
            expires_at: Timestamp::from_unix_millis(0),
            valid_until: None,
            env: env.iter().map(|(n, v)| EnvVar { name: (*n).into(), value: (*v).into(), secret: true }).collect(),
            ssh_certificate: None,
            client_secret: None,
        }
    }

    #[test]
    fn the_output_has_the_fields_the_sdks_read() {
        let expires = Timestamp::parse("2026-11-23T14:32:00Z").expect("time");
        let json = credential_process(
            &credential(&[
                ("AWS_ACCESS_KEY_ID", "AKIA1"),
                ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
                ("AWS_SESSION_TOKEN", "tok"),
            ]),
            expires,
        )
        .expect("keys present");
        let value: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        assert_eq!(value["Version"], 1, "version 1 is the only one");
        assert_eq!(value["AccessKeyId"], "AKIA1");
        assert_eq!(value["SecretAccessKey"], "s3cr3t");
        assert_eq!(value["SessionToken"], "tok");
        assert_eq!(value["Expiration"], "2026-11-23T14:32:00.000Z", "RFC 3339, UTC");
    }

    #[test]
    fn an_earlier_expiry_from_the_hook_wins_and_missing_keys_are_refused() {
        let expires = Timestamp::parse("2026-11-23T14:32:00Z").expect("time");
        let json = credential_process(
            &credential(&[
                ("AWS_ACCESS_KEY_ID", "AKIA1"),
                ("AWS_SECRET_ACCESS_KEY", "s"),
                ("AWS_CREDENTIAL_EXPIRATION", "2026-11-23T14:00:00Z"),
            ]),
            expires,
        )
        .expect("keys present");
        assert!(json.contains("\"Expiration\":\"2026-11-23T14:00:00.000Z\""), "the earlier one: {}", *json);
        assert!(!json.contains("SessionToken"), "no token, no field: {}", *json);
        let error = credential_process(&credential(&[("CLOUD_TOKEN", "x")]), expires).expect_err("no keys");
        assert_eq!(error.code, AgentErrorCode::Unsupported, "{error}");
    }
}
