//! `hourglassd dev`: a complete broker for demos and tests, with the demo
//! policy from the repository, demo identities and a development OpenID
//! Connect issuer at `{broker}/dev` (`oidc.rs`), so that the demo logs in
//! through the same code path as production. Clearly not for production:
//! anyone with the printed tokens, or who can reach the issuer's user
//! picker, is any demo user.

pub mod oidc;
pub mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use hourglass_core::{Duration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::auth::{TrustedIssuer, VerificationKey};
use crate::error::{Error, Result};
use crate::keys::{Ed25519Key, write_secret_file};
use crate::settings::BrokerSettings;

/// Where the development broker may run: its issuer signs anyone in as
/// any demo user without a password, so it listens on a loopback address
/// only (nobody on another machine reaches it), and never with a
/// configuration that logs real people in (`[broker.login]`: that is a
/// production configuration, for `hourglassd serve`).
pub fn check_dev_mode(listen: SocketAddr, settings: &BrokerSettings) -> Result<()> {
    if !listen.ip().is_loopback() {
        return Err(Error::Config(format!(
            "refusing to run the development broker on {listen}: its login page signs anyone in as any demo user \
             without a password. Listen on a loopback address (--listen 127.0.0.1:7300), or run `hourglassd serve` \
             with your identity provider"
        )));
    }
    if settings.login.is_some() {
        return Err(Error::Config(
            "refusing to run the development broker with [broker.login]: that configuration logs real people in, \
             and the development broker signs anyone in as any demo user without a password. \
             Run `hourglassd serve --config DIR` with it"
                .into(),
        ));
    }
    Ok(())
}

/// The demo policy, compiled in so `hourglassd dev` works from anywhere.
pub const DEMO_POLICY: &[(&str, &str)] = &[
    ("hourglass.toml", include_str!("../../../demo/policy/hourglass.toml")),
    ("requests.cedar", include_str!("../../../demo/policy/requests.cedar")),
    ("approvals.cedar", include_str!("../../../demo/policy/approvals.cedar")),
];

const DEMO_USERS: &str = include_str!("../../../demo/users.toml");

/// The audience of identity tokens the broker accepts, and the client id
/// of `hourglass login` at the dev issuer (so ID tokens have it too).
pub const AUDIENCE: &str = "hourglass";
pub const CLIENT_ID: &str = AUDIENCE;

/// Dev tokens live long enough for a demo or a CI run to reuse them.
pub const TOKEN_LIFETIME: Duration = Duration::from_hours(24 * 30);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevUser {
    pub id: String,
    pub name: String,
    pub groups: Vec<String>,
}

impl DevUser {
    /// `alice` for `alice@acme.example`: the key in `dev-users.json`.
    pub fn short_name(&self) -> &str {
        self.id.split('@').next().unwrap_or(&self.id)
    }
}

#[derive(Deserialize)]
struct DevUsers {
    users: Vec<DevUser>,
}

pub fn users() -> Result<Vec<DevUser>> {
    toml::from_str::<DevUsers>(DEMO_USERS)
        .map(|file| file.users)
        .map_err(|error| Error::Config(format!("demo/users.toml: {}", error.message())))
}

/// Writes the demo policy into `dir` unless a policy is already there, so a
/// demo's edits survive restarts.
pub fn materialize_policy(dir: &Path) -> Result<()> {
    if dir.join(hourglass_policy::POLICY_FILE).exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    for (name, text) in DEMO_POLICY {
        let path = dir.join(name);
        crate::files::write_atomic(&path, text.as_bytes(), crate::files::Access::Everyone)
            .map_err(Error::io(format!("writing {}", path.display())))?;
    }
    Ok(())
}

/// Signs identity tokens for the demo users.
pub struct DevIssuer {
    key: Ed25519Key,
    pub issuer: String,
}

#[derive(Serialize)]
struct IdentityClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    email: &'a str,
    /// The demo users' addresses are the broker's own to vouch for.
    email_verified: bool,
    name: &'a str,
    groups: &'a [String],
    iat: i64,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
}

impl DevIssuer {
    pub fn load_or_create(data_dir: &Path, issuer: String) -> Result<Self> {
        Ok(DevIssuer { key: Ed25519Key::load_or_create(&data_dir.join("keys/dev-issuer.pem"))?, issuer })
    }

    pub fn trusted(&self) -> TrustedIssuer {
        TrustedIssuer::with_keys(
            self.issuer.clone(),
            AUDIENCE.into(),
            vec![VerificationKey {
                kid: Some(self.key.kid.clone()),
                key: self.key.decoding().clone(),
                algorithm: jsonwebtoken::Algorithm::EdDSA,
            }],
        )
    }

    /// The issuer's public key as a JWKS document.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [self.key.jwk()] })
    }

    /// A long-lived demo token (`dev-users.json`, the printed exports).
    pub fn mint(&self, user: &DevUser, now: Timestamp) -> Result<String> {
        self.sign(user, now, TOKEN_LIFETIME, None, None)
    }

    /// An OpenID Connect ID token for `hourglass login`; `auth_time` is when
    /// the user picked themselves.
    pub fn mint_id_token(
        &self,
        user: &DevUser,
        now: Timestamp,
        nonce: Option<&str>,
        auth_time: Timestamp,
    ) -> Result<String> {
        self.sign(user, now, oidc::ID_TOKEN_LIFETIME, nonce, Some(auth_time.unix_seconds()))
    }

    fn sign(
        &self,
        user: &DevUser,
        now: Timestamp,
        lifetime: Duration,
        nonce: Option<&str>,
        auth_time: Option<i64>,
    ) -> Result<String> {
        let claims = IdentityClaims {
            iss: &self.issuer,
            aud: AUDIENCE,
            sub: &user.id,
            email: &user.id,
            email_verified: true,
            name: &user.name,
            groups: &user.groups,
            iat: now.unix_seconds(),
            exp: now.plus(lifetime).unix_seconds(),
            auth_time,
            nonce,
        };
        self.key.sign_jwt(&claims).map_err(|_| Error::Internal("signing a dev token failed".into()))
    }
}

/// Mints a token per demo user and writes `dev-users.json` (mode 0600).
pub fn write_tokens(data_dir: &Path, issuer: &DevIssuer, now: Timestamp) -> Result<Vec<(DevUser, String)>> {
    let mut tokens = Vec::new();
    for user in users()? {
        let token = issuer.mint(&user, now)?;
        tokens.push((user, token));
    }
    let by_name: BTreeMap<&str, &str> =
        tokens.iter().map(|(user, token)| (user.short_name(), token.as_str())).collect();
    let json = serde_json::to_vec_pretty(&by_name).map_err(|e| Error::Internal(e.to_string()))?;
    write_secret_file(&data_dir.join("dev-users.json"), &json)?;
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml: &str) -> BrokerSettings {
        BrokerSettings::from_table(&toml.parse::<toml::Table>().expect("TOML")).expect("settings")
    }

    #[test]
    fn dev_mode_refuses_an_address_other_machines_reach() {
        let plain = settings("");
        for listen in ["127.0.0.1:7300", "[::1]:7300"] {
            assert!(check_dev_mode(listen.parse().expect("an address"), &plain).is_ok(), "{listen}");
        }
        for listen in ["0.0.0.0:7300", "[::]:7300", "10.1.2.3:7300"] {
            let error = check_dev_mode(listen.parse().expect("an address"), &plain).expect_err(listen).to_string();
            assert!(error.contains(listen) && error.contains("loopback"), "names the address and the way out: {error}");
        }
    }

    #[test]
    fn dev_mode_refuses_a_configuration_that_logs_real_people_in() {
        let production = settings("[login]\nissuer = \"https://idp.acme.example\"\nclient_id = \"hourglass\"\n");
        let error = check_dev_mode("127.0.0.1:7300".parse().expect("an address"), &production)
            .expect_err("a production configuration")
            .to_string();
        assert!(error.contains("[broker.login]") && error.contains("hourglassd serve"), "{error}");
    }
}
