//! Signed checkpoints of the audit chain's head, kept outside the store.
//!
//! The hash chain shows an edit in the middle of the log, but whoever can
//! write to the store can also cut its end off (`DELETE … WHERE seq > N`)
//! or rewrite it and recompute every hash after the change. So every few
//! seconds, when the log grew, the broker signs its head (the last event's
//! number and hash) with a key of its own that the store never holds
//! (`DATA/keys/audit-checkpoint.pem`, or `[broker] audit_checkpoint_key`),
//! appends the checkpoint to a file outside the store
//! (`DATA/audit-checkpoints.jsonl`, or `[broker] audit_checkpoints`) and
//! logs it (at info, for a log shipper or SIEM to keep elsewhere).
//! `hourglassd audit verify` checks the store against the last of them: a
//! store that ends before a checkpoint was truncated, and one whose event
//! at a checkpoint's number has another hash was rewritten. Events after
//! the last checkpoint (a few seconds' worth) are covered by the next one.
//! Each replica keeps its own key and file: one witness each.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use hourglass_core::Timestamp;
use hourglass_core::audit::to_hex;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::keys::Ed25519Key;
use crate::store::Store;

/// What every signature covers first, so it signs nothing else.
const SIGNED_PREFIX: &str = "hourglass-audit-checkpoint-v1";

/// How often the head is checked (and signed, when it moved).
pub const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// One signed statement: "the audit log's event `seq` had hash `hash` at `at`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: String,
    pub at: Timestamp,
    /// The id of the key that signed it.
    pub kid: String,
    /// Ed25519 over [`Checkpoint::message`], base64url.
    pub signature: String,
}

impl Checkpoint {
    fn message(seq: u64, hash: &str, at: Timestamp) -> String {
        format!("{SIGNED_PREFIX}\n{seq}\n{hash}\n{at}")
    }

    pub fn sign(key: &Ed25519Key, seq: u64, hash: &str, at: Timestamp) -> Checkpoint {
        let signature = key.sign(Checkpoint::message(seq, hash, at).as_bytes());
        Checkpoint {
            seq,
            hash: hash.to_owned(),
            at,
            kid: key.kid.clone(),
            signature: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signature),
        }
    }

    /// Whether `public` signed exactly this.
    pub fn verifies(&self, public: &[u8; 32]) -> bool {
        let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&self.signature) else {
            return false;
        };
        let Ok(signature) = ed25519_dalek::Signature::from_slice(&bytes) else { return false };
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(public) else { return false };
        key.verify_strict(Checkpoint::message(self.seq, &self.hash, self.at).as_bytes(), &signature).is_ok()
    }
}

/// Where a broker's checkpoints go: its key, its file, the last one made.
pub struct Checkpoints {
    key: Ed25519Key,
    file: PathBuf,
    last_seq: std::sync::atomic::AtomicU64,
}

impl Checkpoints {
    /// The key at `key_file` (made if missing, readable by the broker's
    /// user only, its public half written beside it as `.pub`) and the
    /// checkpoints appended to `file`.
    pub fn open(key_file: &Path, file: PathBuf) -> Result<Checkpoints> {
        let key = Ed25519Key::load_or_create(key_file)?;
        let public = public_key_file(key_file);
        crate::files::write_atomic(
            &public,
            format!("{}\n", to_hex(&key.public())).as_bytes(),
            crate::files::Access::Everyone,
        )
        .map_err(Error::io(format!("writing {}", public.display())))?;
        let last = read_checkpoints(&file, &key.public()).ok().and_then(|all| all.last().map(|c| c.seq)).unwrap_or(0);
        Ok(Checkpoints { key, file, last_seq: std::sync::atomic::AtomicU64::new(last) })
    }

    /// Signs the store's head if it moved since the last checkpoint, and
    /// appends it (on disk before this returns); None when it had not moved.
    pub async fn checkpoint(&self, store: &Store, now: Timestamp) -> Result<Option<Checkpoint>> {
        use std::sync::atomic::Ordering;
        let (seq, hash) = store.audit_head().await?;
        if seq == 0 || seq == self.last_seq.load(Ordering::Acquire) {
            return Ok(None);
        }
        let checkpoint = Checkpoint::sign(&self.key, seq, &hash, now);
        let line = serde_json::to_string(&checkpoint).map_err(|e| Error::Internal(format!("a checkpoint: {e}")))?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.file)
            .map_err(Error::io(format!("opening {}", self.file.display())))?;
        file.write_all(format!("{line}\n").as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(Error::io(format!("appending to {}", self.file.display())))?;
        self.last_seq.store(seq, Ordering::Release);
        tracing::info!(checkpoint = %line, "audit checkpoint");
        Ok(Some(checkpoint))
    }
}

/// `KEY.pub` beside `KEY.pem`: the public key, hex.
pub fn public_key_file(key_file: &Path) -> PathBuf {
    key_file.with_extension("pub")
}

/// The public key in `path`: a `.pub` file (hex) or the private key's PEM.
pub fn read_public_key(path: &Path) -> std::result::Result<[u8; 32], String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {}", path.display(), e.kind()))?;
    if let Some(public) = hourglass_core::audit::from_hex(text.trim()) {
        return Ok(public);
    }
    Ed25519Key::read_pem_file(path)
        .map(|key| key.public())
        .map_err(|_| format!("{} holds neither a checkpoint public key (hex) nor its private key", path.display()))
}

/// Every checkpoint in `file`, in order, each signed by `public`; the first
/// line that does not parse or verify is the error.
pub fn read_checkpoints(file: &Path, public: &[u8; 32]) -> std::result::Result<Vec<Checkpoint>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("reading {}: {}", file.display(), e.kind()))?;
    // A line without its newline is one a crash cut short: not a checkpoint.
    let whole = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    for (index, line) in whole.lines().enumerate().filter(|(_, line)| !line.trim().is_empty()) {
        let at = || format!("{} line {}", file.display(), index + 1);
        let checkpoint: Checkpoint =
            serde_json::from_str(line).map_err(|e| format!("{}: not a checkpoint ({e})", at()))?;
        if !checkpoint.verifies(public) {
            return Err(format!("{}: the signature does not verify with the checkpoint key", at()));
        }
        if checkpoints.last().is_some_and(|last| last.seq > checkpoint.seq) {
            return Err(format!("{}: goes back to event {}", at(), checkpoint.seq));
        }
        checkpoints.push(checkpoint);
    }
    Ok(checkpoints)
}

/// Checks a chain, link by link as it is walked, against checkpoints.
pub struct CheckpointCheck {
    checkpoints: std::collections::BTreeMap<u64, Checkpoint>,
    last: Option<Checkpoint>,
}

impl CheckpointCheck {
    pub fn new(checkpoints: Vec<Checkpoint>) -> CheckpointCheck {
        let last = checkpoints.last().cloned();
        CheckpointCheck { checkpoints: checkpoints.into_iter().map(|c| (c.seq, c)).collect(), last }
    }

    /// How many checkpoints there are.
    pub fn len(&self) -> usize {
        self.checkpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.checkpoints.is_empty()
    }

    /// The error for event `seq` stored with `hash`, if a checkpoint says otherwise.
    pub fn link(&self, seq: u64, hash: &str) -> Option<String> {
        let checkpoint = self.checkpoints.get(&seq)?;
        (checkpoint.hash != hash).then(|| {
            format!(
                "audit log rewritten: event {seq} has hash {hash}, but the checkpoint signed at {} says {}",
                checkpoint.at, checkpoint.hash
            )
        })
    }

    /// The error for a chain that ends at `head`, if a checkpoint covers more.
    pub fn end(&self, head: u64) -> Option<String> {
        let last = self.last.as_ref()?;
        (head < last.seq).then(|| {
            format!(
                "audit log truncated: the checkpoint signed at {} covers event {}, but the store ends at event {head}",
                last.at, last.seq
            )
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

    use super::*;

    #[test]
    fn checkpoints_verify_only_as_signed_and_catch_a_shorter_or_different_chain() {
        let key = Ed25519Key::generate().unwrap();
        let at = Timestamp::from_unix_millis(1_795_428_000_000);
        let signed = Checkpoint::sign(&key, 7, "ab", at);
        assert!(signed.verifies(&key.public()));
        assert!(!Checkpoint { seq: 6, ..signed.clone() }.verifies(&key.public()), "another number");
        assert!(!Checkpoint { hash: "cd".into(), ..signed.clone() }.verifies(&key.public()), "another hash");
        assert!(!signed.verifies(&Ed25519Key::generate().unwrap().public()), "another key");

        let check = CheckpointCheck::new(vec![Checkpoint::sign(&key, 3, "h3", at), signed]);
        assert_eq!(check.link(3, "h3"), None);
        assert!(check.link(7, "zz").unwrap().contains("rewritten: event 7"));
        assert_eq!(check.link(5, "anything"), None, "no checkpoint at 5");
        assert!(check.end(6).unwrap().contains("truncated"));
        assert_eq!(check.end(7), None);
        assert_eq!(check.end(9), None, "events after the last checkpoint");
    }
}
