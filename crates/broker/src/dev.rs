//! `hourglassd dev`: a complete broker for demos and tests, with the demo
//! policy from the repository, demo identities and a development token
//! issuer. Clearly not for production: anyone with the printed tokens is
//! that user.

use std::collections::BTreeMap;
use std::path::Path;

use hourglass_core::{Duration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::auth::{TrustedIssuer, VerificationKey};
use crate::error::{Error, Result};
use crate::keys::{Ed25519Key, write_secret_file};

/// The demo policy, compiled in so `hourglassd dev` works from anywhere.
pub const DEMO_POLICY: &[(&str, &str)] = &[
    ("hourglass.toml", include_str!("../../../demo/policy/hourglass.toml")),
    ("requests.cedar", include_str!("../../../demo/policy/requests.cedar")),
    ("approvals.cedar", include_str!("../../../demo/policy/approvals.cedar")),
];

const DEMO_USERS: &str = include_str!("../../../demo/users.toml");

/// The audience of identity tokens the broker accepts.
pub const AUDIENCE: &str = "hourglass";

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
        std::fs::write(&path, text).map_err(Error::io(format!("writing {}", path.display())))?;
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
    name: &'a str,
    groups: &'a [String],
    iat: i64,
    exp: i64,
}

impl DevIssuer {
    pub fn load_or_create(data_dir: &Path, issuer: String) -> Result<Self> {
        Ok(DevIssuer { key: Ed25519Key::load_or_create(&data_dir.join("keys/dev-issuer.pem"))?, issuer })
    }

    pub fn trusted(&self) -> TrustedIssuer {
        TrustedIssuer {
            issuer: self.issuer.clone(),
            audience: AUDIENCE.into(),
            keys: vec![VerificationKey {
                kid: Some(self.key.kid.clone()),
                key: self.key.decoding().clone(),
                algorithm: jsonwebtoken::Algorithm::EdDSA,
            }],
            id_claim: "email".into(),
            groups_claim: "groups".into(),
        }
    }

    pub fn mint(&self, user: &DevUser, now: Timestamp) -> Result<String> {
        let claims = IdentityClaims {
            iss: &self.issuer,
            aud: AUDIENCE,
            sub: &user.id,
            email: &user.id,
            name: &user.name,
            groups: &user.groups,
            iat: now.unix_seconds(),
            exp: now.plus(TOKEN_LIFETIME).unix_seconds(),
        };
        jsonwebtoken::encode(&self.key.header(), &claims, self.key.encoding())
            .map_err(|_| Error::Internal("signing a dev token failed".into()))
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
