//! `[broker.channels.NAME]` as written, and the secrets its files hold:
//! below every other file of `notify`, so that the broker's settings can
//! name it.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// A channel as written in `[broker.channels.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChannelSettings {
    /// With `token_file` and `channel`: a bot's `chat.postMessage`, the
    /// message updated in place (`chat.update`) as the request is decided.
    /// With `webhook_url_file`: an incoming webhook, which cannot update;
    /// the decision follows as a message of its own.
    Slack {
        channel: Option<String>,
        token_file: Option<PathBuf>,
        webhook_url_file: Option<PathBuf>,
        /// Slack's Web API (default `https://slack.com/api`).
        api_url: Option<String>,
    },
    /// A Teams workflow ("Post to a channel when a webhook request is
    /// received"): Adaptive Cards; the decision follows as a card of its own.
    Teams { webhook_url_file: PathBuf },
    Email {
        /// `host:port`.
        smtp: String,
        #[serde(default)]
        tls: SmtpTls,
        /// Trust only this CA (PEM) for the server's certificate, instead
        /// of the system's roots.
        ca_file: Option<PathBuf>,
        username: Option<String>,
        password_file: Option<PathBuf>,
        from: String,
        /// Approvers' addresses (a team's list).
        #[serde(default)]
        to: Vec<String>,
    },
    /// JSON to a URL of the team's own, signed (`Hourglass-Signature: t=…,
    /// v1=hex(HMAC-SHA256(secret, "t.body"))`), with `Idempotency-Key`.
    Webhook { url: String, secret_file: PathBuf },
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// STARTTLS, required (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// None: only to a relay on loopback.
    None,
}

/// A secret read from a file: zeroized when dropped, never printed.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn read(path: &Path, what: &str) -> Result<Secret> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| Error::Config(format!("{what}: cannot read {}: {}", path.display(), error.kind())))?;
        let text = Zeroizing::new(text);
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(Error::Config(format!("{what}: {} is empty", path.display())));
        }
        Ok(Secret(Zeroizing::new(trimmed.to_owned())))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}
