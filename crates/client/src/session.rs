//! The session: a broker session token and the identity provider's refresh
//! token that renews it, kept in the OS keyring (Secret Service on Linux,
//! the Keychain on macOS, the Credential Manager on Windows), one entry per
//! broker URL. Never in a file: when the keyring is unavailable, callers say
//! so and offer a session that lives only in a shell's memory
//! (`hourglass login --print-token`).

use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{Error, Result};

/// The keyring service name of every entry; the entry's user is the broker URL.
pub const KEYRING_SERVICE: &str = "hourglass";

/// Where a client's session is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum SessionKind {
    /// In the OS keyring, renewed silently.
    Keyring,
    /// In this process's memory only (no keyring to keep it in): it ends
    /// when the process does. Never in a file.
    Memory,
    /// `HOURGLASS_TOKEN` from the environment.
    Environment,
}

/// What the keyring holds for one broker, as JSON. Zeroized when dropped.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct StoredSession {
    /// The broker session (a bearer token for `/v1`).
    pub session_token: String,
    /// The identity provider's refresh token, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// When the session token was issued and expires (Unix seconds).
    #[zeroize(skip)]
    pub issued_at: i64,
    #[zeroize(skip)]
    pub expires_at: i64,
    /// The identity provider and the client logged in with, for renewal.
    #[zeroize(skip)]
    pub issuer: String,
    #[zeroize(skip)]
    pub client_id: String,
}

impl std::fmt::Debug for StoredSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSession")
            .field("issuer", &self.issuer)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Renew this close to the end (a minute, or a quarter of a short session).
pub fn renewal_margin(issued_at: i64, expires_at: i64) -> i64 {
    ((expires_at - issued_at) / 4).clamp(1, 60)
}

impl StoredSession {
    /// Whether the session should be renewed before use at `now` (Unix seconds).
    pub fn needs_renewal(&self, now: i64) -> bool {
        self.expires_at - now <= renewal_margin(self.issued_at, self.expires_at)
    }
}

/// The session entry of one broker in the OS keyring.
pub struct SessionStore {
    entry: keyring::Entry,
    broker: String,
}

impl SessionStore {
    pub fn for_broker(broker: &str) -> Result<SessionStore> {
        let broker = broker.trim().trim_end_matches('/').to_owned();
        let entry = keyring::Entry::new(KEYRING_SERVICE, &broker).map_err(|error| unavailable(&error))?;
        Ok(SessionStore { entry, broker })
    }

    pub fn broker(&self) -> &str {
        &self.broker
    }

    /// The stored session, if any. An unreadable entry counts as none.
    pub fn load(&self) -> Result<Option<StoredSession>> {
        match self.entry.get_password() {
            Ok(text) => {
                let text = Zeroizing::new(text);
                Ok(serde_json::from_str(&text).ok())
            }
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(error) => Err(unavailable(&error)),
        }
    }

    /// Fails with the keyring-unavailable error when there is no usable keyring.
    pub fn check(&self) -> Result<()> {
        self.load().map(drop)
    }

    pub fn save(&self, session: &StoredSession) -> Result<()> {
        let text = Zeroizing::new(
            serde_json::to_string(session).map_err(|error| Error::Config(format!("encoding the session: {error}")))?,
        );
        self.entry.set_password(&text).map_err(|error| unavailable(&error))
    }

    /// Removes the entry; `false` when there was none.
    pub fn delete(&self) -> Result<bool> {
        match self.entry.delete_credential() {
            Ok(()) => Ok(true),
            Err(keyring::Error::NoEntry) => Ok(false),
            Err(error) => Err(unavailable(&error)),
        }
    }
}

/// The error for every keyring failure: [`Error::NoKeyring`], saying what
/// happened.
fn unavailable(error: &keyring::Error) -> Error {
    let detail = match error {
        keyring::Error::PlatformFailure(inner) => format!("no Secret Service or session bus: {inner}"),
        keyring::Error::NoStorageAccess(inner) => format!("the keyring is locked or has no collection: {inner}"),
        other => other.to_string(),
    };
    Error::NoKeyring { detail }
}

/// What a session token says about itself, read without verification: for
/// display only (the broker verifies tokens, clients never decide on this).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenClaims {
    #[serde(default)]
    pub iss: Option<String>,
    #[serde(default)]
    pub exp: Option<i64>,
    #[serde(default)]
    pub iat: Option<i64>,
    /// The identity provider a broker session was exchanged from.
    #[serde(default)]
    pub idp: Option<String>,
    #[serde(default)]
    pub nonce: Option<String>,
}

/// The payload of a JWT, unverified; `None` when the token is not a JWT.
pub fn unverified_claims(token: &str) -> Option<TokenClaims> {
    let payload = token.split('.').nth(1)?;
    let bytes = Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?);
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_starts_a_minute_before_the_end_or_a_quarter_of_a_short_session() {
        assert_eq!(renewal_margin(0, 8 * 3600), 60, "long sessions renew a minute early");
        assert_eq!(renewal_margin(0, 20), 5, "a 20 s session renews in its last quarter");
        let session = StoredSession {
            session_token: "t".into(),
            refresh_token: None,
            issued_at: 0,
            expires_at: 3600,
            issuer: "https://idp".into(),
            client_id: "hourglass".into(),
        };
        assert!(!session.needs_renewal(3000), "ten minutes left: used as is");
        assert!(session.needs_renewal(3550), "50 s left: renewed");
    }

    #[test]
    fn claims_are_read_from_a_jwt_payload() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"exp":42,"idp":"https://idp"}"#);
        let claims = unverified_claims(&format!("e30.{payload}.sig")).expect("a JWT");
        assert_eq!(claims.exp, Some(42), "exp is read");
        assert_eq!(claims.idp.as_deref(), Some("https://idp"), "idp is read");
        assert!(unverified_claims("not a jwt").is_none(), "other tokens have no claims");
    }
}
