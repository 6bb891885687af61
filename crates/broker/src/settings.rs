//! The `[broker]` table of `hourglass.toml`: how this broker runs, as
//! opposed to the policy it enforces. Read at start; changes need a restart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hourglass_core::Duration;
use serde::Deserialize;

use crate::error::{Error, Result};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7300";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSettings {
    pub listen: Option<SocketAddr>,
    /// How clients reach this broker; also the `iss` of the tokens it signs.
    pub public_url: Option<String>,
    /// Where the store and keys live (relative paths: to the policy directory).
    pub data_dir: Option<PathBuf>,
    /// Longest a provider may take to issue, renew or revoke.
    pub provider_timeout: Option<Duration>,
    #[serde(default)]
    pub issuers: Vec<IssuerSettings>,
}

/// An identity provider whose tokens the broker accepts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSettings {
    pub issuer: String,
    #[serde(default = "default_audience")]
    pub audience: String,
    /// A JWKS file with the issuer's public keys (relative: to the policy directory).
    pub jwks_file: PathBuf,
    #[serde(default = "default_id_claim")]
    pub id_claim: String,
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
}

fn default_audience() -> String {
    "hourglass".into()
}

fn default_id_claim() -> String {
    "email".into()
}

fn default_groups_claim() -> String {
    "groups".into()
}

impl BrokerSettings {
    pub fn from_table(table: &toml::Table) -> Result<Self> {
        table
            .clone()
            .try_into()
            .map_err(|error: toml::de::Error| Error::Config(format!("[broker]: {}", error.message())))
    }

    /// `path` as given, or relative to `base` when it is relative.
    pub fn resolve(base: &Path, path: &Path) -> PathBuf {
        if path.is_absolute() { path.to_path_buf() } else { base.join(path) }
    }
}
