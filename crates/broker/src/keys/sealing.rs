//! The store key: seals the private halves of the broker's signing keys
//! before they go into the store (AES-256-GCM, ring), so that the store —
//! a PostgreSQL database and its backups, a copied SQLite file — holds no
//! secret in the clear. Every replica has the same store key, in a file
//! (`[broker] store_key_file`, 32 random bytes in base64); a SQLite broker
//! makes its own on first start (`DATA/keys/store.key`).
//!
//! Each sealed value is bound to what it is (its key id and purpose, as the
//! AEAD's associated data): a sealed key copied onto another row does not
//! open.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

pub struct StoreKey {
    key: LessSafeKey,
    /// Who sealed a value: a fingerprint of the key, never the key.
    pub id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreKeyError {
    #[error(
        "it was sealed with store key {sealed_with}, and this broker's store key is {ours}: \
         every replica needs the same store_key_file"
    )]
    OtherKey { sealed_with: String, ours: String },
    #[error("it does not open with the store key (altered, or moved to another row)")]
    Corrupt,
}

impl StoreKey {
    /// Reads the store key from `path` (base64 of 32 bytes).
    pub fn read(path: &Path) -> Result<StoreKey> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|error| {
            Error::Config(format!(
                "store_key_file {}: {} (make one with: head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE)",
                path.display(),
                error.kind()
            ))
        })?);
        let bytes = Zeroizing::new(STANDARD.decode(text.trim()).map_err(|_| {
            Error::Config(format!("store_key_file {} is not base64 (of 32 random bytes)", path.display()))
        })?);
        StoreKey::from_bytes(&bytes)
            .ok_or_else(|| Error::Config(format!("store_key_file {} must hold 32 bytes, in base64", path.display())))
    }

    /// Reads the store key at `path`, making a new one there first if there
    /// is none (a broker on its own SQLite store).
    pub fn read_or_create(path: &Path) -> Result<StoreKey> {
        if !path.exists() {
            let mut bytes = Zeroizing::new([0u8; 32]);
            SystemRandom::new()
                .fill(bytes.as_mut())
                .map_err(|_| Error::Internal("the system's random source failed".into()))?;
            let text = Zeroizing::new(format!("{}\n", STANDARD.encode(bytes.as_ref())));
            // Another process that made one first wins: its key is read.
            crate::keys::create_secret_file(path, text.as_bytes())?;
        }
        StoreKey::read(path)
    }

    /// The store key of 32 bytes; `None` for any other length.
    pub fn from_bytes(bytes: &[u8]) -> Option<StoreKey> {
        if bytes.len() != 32 {
            return None;
        }
        let key = UnboundKey::new(&AES_256_GCM, bytes).ok()?;
        let id =
            hourglass_core::audit::to_hex(&Sha256::digest([b"hourglass store key\0".as_slice(), bytes].concat())[..8]);
        Some(StoreKey { key: LessSafeKey::new(key), id })
    }

    /// Seals `secret` as the value named `label`: base64 of nonce and
    /// ciphertext.
    pub fn seal(&self, label: &str, secret: &[u8]) -> Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| Error::Internal("the system's random source failed".into()))?;
        let mut sealed = Zeroizing::new(secret.to_vec());
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(label.as_bytes()), &mut *sealed)
            .map_err(|_| Error::Internal("sealing a key failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(STANDARD.encode(out))
    }

    /// Opens what [`StoreKey::seal`] sealed as `label` with the key `sealed_with`.
    pub fn open(
        &self,
        label: &str,
        sealed_with: &str,
        sealed: &str,
    ) -> std::result::Result<Zeroizing<Vec<u8>>, StoreKeyError> {
        if sealed_with != self.id {
            return Err(StoreKeyError::OtherKey { sealed_with: sealed_with.to_owned(), ours: self.id.clone() });
        }
        let bytes = STANDARD.decode(sealed).map_err(|_| StoreKeyError::Corrupt)?;
        if bytes.len() < NONCE_LEN {
            return Err(StoreKeyError::Corrupt);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| StoreKeyError::Corrupt)?;
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(label.as_bytes()), &mut buffer)
            .map_err(|_| StoreKeyError::Corrupt)?;
        Ok(Zeroizing::new(plain.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> StoreKey {
        StoreKey::from_bytes(&[byte; 32]).expect("32 bytes")
    }

    #[test]
    fn keys_sealed_values_open_only_with_their_label_and_store_key() {
        let store_key = key(7);
        let sealed = store_key.seal("session/abc", b"the seed").expect("sealed");
        assert!(!sealed.contains("the seed"), "not in the clear");
        assert_eq!(&**store_key.open("session/abc", &store_key.id, &sealed).expect("opens"), b"the seed");
        assert!(
            matches!(store_key.open("session/xyz", &store_key.id, &sealed), Err(StoreKeyError::Corrupt)),
            "bound to its label: a sealed value moved to another row does not open"
        );
        let other = key(8);
        let error = other.open("session/abc", &store_key.id, &sealed).expect_err("another store key");
        assert!(error.to_string().contains("every replica needs the same store_key_file"), "{error}");
        let mut tampered = base64::engine::general_purpose::STANDARD.decode(&sealed).expect("base64");
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let tampered = base64::engine::general_purpose::STANDARD.encode(tampered);
        assert!(matches!(store_key.open("session/abc", &store_key.id, &tampered), Err(StoreKeyError::Corrupt)));
    }

    #[test]
    fn keys_a_store_key_file_is_made_once_private_and_read_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("keys/store.key");
        let first = StoreKey::read_or_create(&path).expect("made");
        let again = StoreKey::read_or_create(&path).expect("read back");
        assert_eq!(first.id, again.id, "the same key");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "readable by the broker's user only");
        std::fs::write(&path, "not base64!").expect("write");
        let error = StoreKey::read(&path).err().expect("refused").to_string();
        assert!(error.contains("not base64"), "{error}");
    }
}
