//! Logging in and out, and picking a session up again: the same for the
//! CLI and the desktop app, which only say it differently.
//!
//! A session is kept in the OS keyring, renewed silently. Where there is no
//! keyring and the caller accepts it, it is kept in this process's memory
//! only: the shell that evaluates `hourglass login --print-token`, or the
//! desktop app until it quits. Never in a file.

use zeroize::Zeroizing;

use crate::session::{SessionKind, SessionStore, StoredSession};
use crate::{Client, Error, Result, Trust};

/// The session a client finds for a broker.
pub enum Resumed {
    /// A session to use, and where it is kept.
    LoggedIn { client: Client, kind: SessionKind },
    /// Nobody is logged in to this broker here.
    LoggedOut,
    /// There is no keyring to look in, nor to keep a new session in:
    /// [`Error::NoKeyring`].
    NoKeyring(Error),
}

/// The session for `base`: `HOURGLASS_TOKEN` when it is set (scripts, CI,
/// a `--print-token` shell), which always wins; else the one the keyring
/// keeps for that broker.
pub fn resume(base: &str, trust: Trust) -> Result<Resumed> {
    let token = Zeroizing::new(std::env::var("HOURGLASS_TOKEN").unwrap_or_default());
    if !token.trim().is_empty() {
        let client = Client::with_trust(base, trust, &token)?;
        return Ok(Resumed::LoggedIn { client, kind: SessionKind::Environment });
    }
    let stored = SessionStore::for_broker(base).and_then(|store| Ok((store.load()?, store)));
    match stored {
        Ok((Some(current), store)) => {
            let client = Client::with_session(base, trust, store, current)?;
            Ok(Resumed::LoggedIn { client, kind: SessionKind::Keyring })
        }
        Ok((None, _)) => Ok(Resumed::LoggedOut),
        Err(error @ Error::NoKeyring { .. }) => Ok(Resumed::NoKeyring(error)),
        Err(error) => Err(error),
    }
}

/// Where a new session will be kept. Decided before the login starts, so
/// that nobody logs in for a session that cannot be kept.
pub enum Keeping {
    Keyring(SessionStore),
    /// In the memory of this process only.
    Memory,
}

impl Keeping {
    /// The keyring for `base`; an [`Error::NoKeyring`] when it does not
    /// answer.
    pub fn keyring(base: &str) -> Result<Keeping> {
        let store = SessionStore::for_broker(base)?;
        store.check()?;
        Ok(Keeping::Keyring(store))
    }

    /// The keyring for `base` when it answers, else this process's memory.
    pub fn keyring_or_memory(base: &str) -> Result<Keeping> {
        match Keeping::keyring(base) {
            Err(Error::NoKeyring { .. }) => Ok(Keeping::Memory),
            other => other,
        }
    }

    pub fn kind(&self) -> SessionKind {
        match self {
            Keeping::Keyring(_) => SessionKind::Keyring,
            Keeping::Memory => SessionKind::Memory,
        }
    }
}

/// A session kept, and a client that uses it.
pub struct Kept {
    pub client: Client,
    pub kind: SessionKind,
    /// What the user should know beyond it.
    pub notes: Vec<String>,
}

/// Keeps a session a login just made, as `keeping` says: saved in the
/// keyring (the client renews it from there), or held by the returned
/// client only. A session in memory keeps no refresh token: it is revoked
/// at the identity provider now, since nothing would ever use or end it.
pub async fn keep(base: &str, trust: Trust, session: StoredSession, keeping: Keeping) -> Result<Kept> {
    let mut notes = Vec::new();
    let kind = keeping.kind();
    let client = match keeping {
        Keeping::Keyring(store) => {
            store.save(&session)?;
            Client::with_session(base, trust, store, session)?
        }
        Keeping::Memory => {
            if let Err(error) = crate::login::revoke(&session, &trust).await {
                notes.push(format!("note: the identity provider's refresh token was not revoked: {error}"));
            }
            Client::with_trust(base, trust, &session.session_token)?
        }
    };
    Ok(Kept { client, kind, notes })
}

/// What logging out did.
pub struct LoggedOut {
    /// Whether a session was kept for the broker.
    pub was_logged_in: bool,
    pub notes: Vec<String>,
}

/// Ends the session the keyring keeps for `base`: the identity provider
/// revokes its refresh token (a failure there is a note, not an error: the
/// local session goes either way), and the keyring forgets it.
pub async fn log_out(base: &str, trust: &Trust) -> Result<LoggedOut> {
    let store = SessionStore::for_broker(base)?;
    let Some(session) = store.load()? else {
        return Ok(LoggedOut { was_logged_in: false, notes: Vec::new() });
    };
    let mut notes = Vec::new();
    // The broker ends the session on every replica; should it be out of
    // reach, the session still goes from this machine and lapses by itself.
    let ended = match Client::with_session(base, trust.clone(), SessionStore::for_broker(base)?, session.clone()) {
        Ok(client) => client.end_session().await,
        Err(error) => Err(error),
    };
    if let Err(error) = ended {
        notes.push(format!(
            "note: the broker could not end the session ({error}); it stays valid there until {}",
            hourglass_core::Timestamp::from_unix_millis(session.expires_at.saturating_mul(1000))
        ));
    }
    match crate::login::revoke(&session, trust).await {
        Ok(true) => notes.push("The identity provider revoked the refresh token.".to_owned()),
        Ok(false) => {}
        Err(error) => notes.push(format!("note: the refresh token was not revoked at the identity provider: {error}")),
    }
    store.delete()?;
    Ok(LoggedOut { was_logged_in: true, notes })
}
