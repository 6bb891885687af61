//! The token provider: a JWT signed by the broker (EdDSA), `aud` = the
//! resource, a `role` claim, `exp` = the grant's deadline and `jti` = the
//! grant id. Resource servers verify it against `/.well-known/jwks.json` and
//! ask `/v1/introspect` whether it was revoked.
//!
//! Nothing is created on a target, so issue and revoke only record; the
//! token is signed when its owner fetches it, for the deadline in force then.

use std::sync::Arc;

use hourglass_core::Grant;
use hourglass_core::api::{Credential, EnvVar};
use hourglass_policy::Resource;
use serde::{Deserialize, Serialize};

use super::{IssueInput, Issued, Provider, ProviderError, Verification, env_prefix, is_env_name};
use crate::keys::KeySet;

pub const KIND: &str = "token";

/// `[resources.NAME.settings]` for `provider = "token"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The token's `aud`; defaults to the resource name.
    audience: Option<String>,
    /// Environment variables are `{PREFIX}_TOKEN` and `{PREFIX}_TOKEN_EXPIRES_AT`.
    env_prefix: Option<String>,
}

/// The claims of a grant token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    /// When this copy was signed: renewals sign a new one.
    pub iat: i64,
    pub jti: String,
    pub resource: String,
    pub role: String,
}

pub struct TokenProvider {
    /// The grant-token keys every replica shares (the JWKS).
    keys: Arc<KeySet>,
    issuer: String,
}

impl TokenProvider {
    pub fn new(keys: Arc<KeySet>, issuer: String) -> Self {
        TokenProvider { keys, issuer }
    }

    fn settings(resource: &Resource) -> Result<Settings, String> {
        let settings: Settings =
            resource.settings.clone().try_into().map_err(|e: toml::de::Error| e.message().to_owned())?;
        if let Some(prefix) = &settings.env_prefix
            && !is_env_name(prefix)
        {
            return Err(format!("env_prefix \"{prefix}\" must be upper case letters, digits and '_'"));
        }
        Ok(settings)
    }
}

#[async_trait::async_trait]
impl Provider for TokenProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn check(&self, resource: &Resource) -> Result<(), String> {
        Self::settings(resource)?;
        match resource.roles.values().find(|role| !role.settings.is_empty()) {
            Some(role) => Err(format!("role \"{}\": the token provider takes no role settings", role.name)),
            None => Ok(()),
        }
    }

    fn issues_in_broker(&self) -> bool {
        true
    }

    async fn issue(&self, input: IssueInput<'_>) -> Result<Issued, ProviderError> {
        let settings = Self::settings(input.resource)
            .map_err(|message| ProviderError::Failed { resource: input.resource.name.clone(), message })?;
        let audience = settings.audience.unwrap_or_else(|| input.resource.name.clone());
        let state = serde_json::json!({ "jti": input.grant.id, "audience": audience });
        // Nothing exists on a target: the token is signed for its owner on demand.
        Ok(Issued { state, ready: true, verification: Verification::new() })
    }

    async fn renew(&self, _input: IssueInput<'_>, state: &serde_json::Value) -> Result<Issued, ProviderError> {
        // The deadline lives in the token: the next fetch signs the new one.
        Ok(Issued { state: state.clone(), ready: true, verification: Verification::new() })
    }

    async fn revoke(
        &self,
        _grant: &Grant,
        _state: &serde_json::Value,
        _now: hourglass_core::Timestamp,
    ) -> Result<Verification, ProviderError> {
        // The grant's state is what introspection answers from; once it is
        // revoked or expired, the jti is reported inactive.
        let mut verification = Verification::new();
        verification.insert("introspection".into(), "reports the token inactive".into());
        Ok(verification)
    }

    async fn credential(&self, input: IssueInput<'_>, state: &serde_json::Value) -> Result<Credential, ProviderError> {
        let failed = |message: String| ProviderError::Failed { resource: input.resource.name.clone(), message };
        let settings = Self::settings(input.resource).map_err(failed)?;
        let grant = input.grant;
        let audience = state["audience"].as_str().map_or_else(|| input.resource.name.clone(), str::to_owned);
        let claims = GrantClaims {
            iss: self.issuer.clone(),
            sub: grant.owner.clone(),
            aud: audience,
            exp: grant.expires_at.unix_seconds(),
            iat: input.now.unix_seconds(),
            jti: grant.id.to_string(),
            resource: grant.resource.clone(),
            role: grant.role.clone(),
        };
        let failed = || ProviderError::Failed {
            resource: input.resource.name.clone(),
            message: "signing the token failed".into(),
        };
        let key = self.keys.signer(input.now).map_err(|_| failed())?;
        let token = key.sign_jwt(&claims).map_err(|_| failed())?;
        let prefix = settings.env_prefix.unwrap_or_else(|| env_prefix(&input.resource.name));
        Ok(Credential {
            grant_id: grant.id.clone(),
            resource: grant.resource.clone(),
            role: grant.role.clone(),
            provider: KIND.into(),
            expires_at: grant.expires_at,
            valid_until: None,
            env: vec![
                EnvVar { name: format!("{prefix}_TOKEN"), value: token, secret: true },
                EnvVar {
                    name: format!("{prefix}_TOKEN_EXPIRES_AT"),
                    value: grant.expires_at.to_string(),
                    secret: false,
                },
            ],
            ssh_certificate: None,
            client_secret: None,
        })
    }
}
