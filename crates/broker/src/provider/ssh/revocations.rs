//! The SSH provider's revocation list, shared by every replica: one
//! document in the store (`ssh/revocations`), changed only under its lock,
//! from which each replica serves the same KRL (`GET
//! /v1/providers/ssh/krl`) and writes it to the `krl_file`s it knows.
//!
//! Why key ids rather than serials: every certificate of a grant carries
//! the same key id, so one entry revokes them all, renewals included. An
//! entry is dropped once the last certificate it covers has expired: sshd
//! refuses that certificate by itself then, and the KRL stays small.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use hourglass_core::Timestamp;
use serde::{Deserialize, Serialize};

use super::krl;
use crate::files::{Access, write_atomic};
use crate::provider::{SharedRecord, Verification};

pub(super) const KRL_COMMENT: &str = "hourglass: revoked certificates of the broker's SSH user CA";

/// The revocation list as stored (and as older brokers kept it in
/// `DATA/ssh/revocations.json`).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Revocations {
    /// The KRL's `krl_version`: increases with every change.
    pub krl_version: u64,
    /// The KRL's `generated_date` (Unix seconds): when it last changed.
    pub generated_at: u64,
    /// Revoked key ids and the `valid_before` (Unix seconds) of their
    /// latest certificate.
    pub revoked: BTreeMap<String, u64>,
    /// Every `krl_file` written so far; each revocation updates all of them.
    pub krl_files: BTreeSet<PathBuf>,
}

impl Revocations {
    fn parse(text: &str) -> Result<Revocations, String> {
        serde_json::from_str(text).map_err(|error| format!("the stored SSH revocation list is unreadable: {error}"))
    }

    fn text(&self) -> Result<String, String> {
        serde_json::to_string(self).map_err(|_| "encoding the revocation list failed".to_owned())
    }
}

/// The list as this replica last read it, and its KRL.
struct Cached {
    revocations: Revocations,
    krl: Arc<Vec<u8>>,
}

pub(super) struct RevocationList {
    record: SharedRecord,
    /// The CA's public key blob (SSH wire form), as KRL sections name it.
    ca_blob: Vec<u8>,
    cache: Mutex<Cached>,
}

impl RevocationList {
    /// The list in the store; on first start on a store without one, the
    /// list an older broker kept in `legacy` (its `revocations.json`), so
    /// that what it revoked stays revoked. Brings the `krl_file`s known up to
    /// date (one may have been lost while the broker was down); a failure
    /// there is retried by the next revocation and keeps nothing from
    /// starting.
    pub async fn open(record: SharedRecord, ca_blob: Vec<u8>, legacy: Option<&Path>) -> Result<Self, String> {
        let mut text = record.read().await?;
        if text.is_none()
            && let Some(path) = legacy.filter(|path| path.exists())
        {
            let old = std::fs::read_to_string(path).map_err(|error| format!("reading {}: {error}", path.display()))?;
            let old = Revocations::parse(&old).map_err(|error| format!("{}: {error}", path.display()))?;
            let imported = old.text()?;
            text = record.update(|current| Ok(current.is_none().then_some(imported))).await?;
        }
        let revocations = match &text {
            Some(text) => Revocations::parse(text)?,
            None => Revocations::default(),
        };
        let krl = Arc::new(encode(&revocations, &ca_blob));
        for path in &revocations.krl_files {
            if let Err(error) = write_atomic(path, &krl, Access::Everyone) {
                tracing::warn!("ssh: cannot write the KRL to {}: {error}", path.display());
            }
        }
        Ok(RevocationList { record, ca_blob, cache: Mutex::new(Cached { revocations, krl }) })
    }

    /// The current KRL and its version, as stored (another replica may have
    /// revoked since this one last looked). If the store cannot be read,
    /// the last KRL this replica knew.
    pub async fn krl(&self) -> (Arc<Vec<u8>>, u64) {
        let stored = self.record.read().await.and_then(|text| text.as_deref().map(Revocations::parse).transpose());
        match stored {
            Ok(Some(stored)) => {
                self.remember(stored);
            }
            Ok(None) => {}
            Err(error) => tracing::warn!("ssh: serving the last KRL known: {error}"),
        }
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        (Arc::clone(&cache.krl), cache.revocations.krl_version)
    }

    /// Keeps `stored` and its KRL, unless this replica already holds that
    /// version.
    fn remember(&self, stored: Revocations) -> Arc<Vec<u8>> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.revocations != stored {
            cache.krl = Arc::new(encode(&stored, &self.ca_blob));
            cache.revocations = stored;
        }
        Arc::clone(&cache.krl)
    }

    /// Records `path` as a `krl_file` and writes the current KRL there.
    /// Returns the KRL version written.
    pub async fn register_file(&self, path: &Path) -> Result<u64, String> {
        let text = self
            .record
            .update(|current| {
                let mut list = current.as_deref().map(Revocations::parse).transpose()?.unwrap_or_default();
                if list.krl_files.insert(path.to_path_buf()) { list.text().map(Some) } else { Ok(None) }
            })
            .await?;
        let stored = text.as_deref().map(Revocations::parse).transpose()?.unwrap_or_default();
        let version = stored.krl_version;
        let krl = self.remember(stored);
        write_atomic(path, &krl, Access::Everyone)
            .map_err(|error| format!("cannot write the KRL to {}: {error}", path.display()))?;
        Ok(version)
    }

    /// Lists `key_id` until `valid_before` (dropping entries past `now`),
    /// in the store, then writes the KRL everywhere this replica knows and
    /// checks what was written.
    pub async fn revoke(
        &self,
        key_id: &str,
        valid_before: u64,
        own_file: Option<&Path>,
        now: Timestamp,
    ) -> Result<Verification, String> {
        let now_secs = u64::try_from(now.unix_seconds()).unwrap_or(0);
        let text = self
            .record
            .update(|current| {
                let list = current.as_deref().map(Revocations::parse).transpose()?.unwrap_or_default();
                let mut next = list.clone();
                next.revoked.retain(|_, until| *until > now_secs);
                let until = next.revoked.get(key_id).copied().unwrap_or(0).max(valid_before);
                next.revoked.insert(key_id.to_owned(), until);
                if let Some(path) = own_file {
                    next.krl_files.insert(path.to_path_buf());
                }
                if next == list {
                    return Ok(None);
                }
                next.krl_version += 1;
                next.generated_at = now_secs;
                next.text().map(Some)
            })
            .await?;
        let stored = text.as_deref().map(Revocations::parse).transpose()?.unwrap_or_default();
        let until = stored.revoked.get(key_id).copied().unwrap_or(valid_before);
        let (version, files) = (stored.krl_version, stored.krl_files.clone());
        let krl = self.remember(stored);
        let served = krl::decode(&krl).map_err(|error| format!("the KRL just encoded is invalid: {error}"))?;
        if !served.lists(&self.ca_blob, key_id) {
            return Err(format!("the KRL does not list {key_id}"));
        }
        let mut written = Vec::new();
        let mut failed = Vec::new();
        for path in &files {
            match write_and_check(path, &krl, &self.ca_blob, key_id) {
                Ok(()) => written.push(path.display().to_string()),
                // The grant's own target must have it; another resource's
                // file is kept current on a best-effort basis.
                Err(error) if Some(path.as_path()) == own_file => return Err(error),
                Err(error) => {
                    tracing::warn!("ssh: {error}");
                    failed.push(path.display().to_string());
                }
            }
        }
        let mut verification = Verification::new();
        verification.insert("krl".into(), format!("lists {key_id}").into());
        verification.insert("krl_version".into(), version.into());
        verification.insert("valid_before".into(), super::unix_timestamp(until).to_string().into());
        verification.insert("files".into(), written.into());
        if !failed.is_empty() {
            verification.insert("files_not_written".into(), failed.into());
        }
        Ok(verification)
    }
}

fn encode(revocations: &Revocations, ca_blob: &[u8]) -> Vec<u8> {
    let key_ids: Vec<&str> = revocations.revoked.keys().map(String::as_str).collect();
    krl::encode(revocations.krl_version, revocations.generated_at, KRL_COMMENT, ca_blob, &key_ids)
}

/// Writes a KRL, reads it back and checks it lists `key_id`.
fn write_and_check(path: &Path, krl: &[u8], ca_blob: &[u8], key_id: &str) -> Result<(), String> {
    write_atomic(path, krl, Access::Everyone)
        .map_err(|error| format!("cannot write the KRL to {}: {error}", path.display()))?;
    let read = std::fs::read(path).map_err(|error| format!("cannot read back {}: {error}", path.display()))?;
    let decoded = krl::decode(&read).map_err(|error| format!("{} is not a valid KRL: {error}", path.display()))?;
    if !decoded.lists(ca_blob, key_id) {
        return Err(format!("{} does not list {key_id} after writing", path.display()));
    }
    Ok(())
}
