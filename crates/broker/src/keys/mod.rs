//! The broker's own Ed25519 keys. Session, grant-token and SSH CA keys live
//! in the store, sealed with the store key (`sealing.rs`), rotated with
//! overlap and shared by every replica (`set.rs`); the dev issuer's key is
//! a PKCS#8 PEM file readable by the broker's user only (dev mode runs one
//! broker). Key material never reaches a log or an error message.

mod sealing;
mod set;

pub use sealing::{StoreKey, StoreKeyError};
pub use set::{KeyPurpose, KeySet, KeyWindow, RotationPolicy, signer_at, successor};

use std::path::Path;

use base64::Engine;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use jsonwebtoken::DecodingKey;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// An Ed25519 key ready for JWT signing and verification.
pub struct Ed25519Key {
    pub kid: String,
    /// Zeroized when dropped (ed25519-dalek's `zeroize` feature): the only
    /// copy of the secret, which signs tokens too ([`Ed25519Key::sign_jwt`]).
    signing: SigningKey,
    decoding: DecodingKey,
    public: [u8; 32],
}

impl Ed25519Key {
    pub fn load_or_create(path: &Path) -> Result<Self> {
        if !path.exists() {
            let signing = SigningKey::generate(&mut rand::rngs::OsRng);
            if create_private(path, &signing)? {
                return Self::from_signing_key(&signing);
            }
            // Another process made one first: that one is the key.
        }
        let pem =
            Zeroizing::new(std::fs::read_to_string(path).map_err(Error::io(format!("reading {}", path.display())))?);
        let signing = SigningKey::from_pkcs8_pem(&pem)
            .map_err(|_| Error::Config(format!("{} is not an Ed25519 PKCS#8 key", path.display())))?;
        Self::from_signing_key(&signing)
    }

    pub fn from_signing_key(signing: &SigningKey) -> Result<Self> {
        let public = signing.verifying_key().to_bytes();
        let kid = hourglass_core::audit::to_hex(&Sha256::digest(public)[..8]);
        Ok(Ed25519Key { kid, signing: signing.clone(), decoding: DecodingKey::from_ed_der(&public), public })
    }

    /// A new random key.
    pub fn generate() -> Result<Self> {
        Self::from_signing_key(&SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// The 32-byte secret seed, for sealing into the store and for keys of
    /// other formats made from it (the SSH CA).
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    pub fn from_seed(seed: &[u8; 32]) -> Result<Self> {
        Self::from_signing_key(&SigningKey::from_bytes(seed))
    }

    /// The raw public key.
    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// Reads a PKCS#8 PEM file (a key kept on disk by an older broker).
    pub fn read_pem_file(path: &Path) -> Result<Self> {
        let pem =
            Zeroizing::new(std::fs::read_to_string(path).map_err(Error::io(format!("reading {}", path.display())))?);
        let signing = SigningKey::from_pkcs8_pem(&pem)
            .map_err(|_| Error::Config(format!("{} is not an Ed25519 PKCS#8 key", path.display())))?;
        Self::from_signing_key(&signing)
    }

    /// An Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.signing.sign(message).to_bytes()
    }

    /// A JWT of `claims`, signed with this key (EdDSA, its `kid` in the
    /// header), as `jsonwebtoken::encode` makes it. Signed here because that
    /// encoder takes the key as PKCS#8 and parses it again for every token,
    /// deriving the public key: as costly as the signature itself, on every
    /// grant token and session; and its copy of the secret is not zeroized.
    pub fn sign_jwt(&self, claims: &impl serde::Serialize) -> std::result::Result<String, serde_json::Error> {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = serde_json::to_vec(&self.header())?;
        let claims = serde_json::to_vec(claims)?;
        let mut token = URL_SAFE_NO_PAD.encode(header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut token);
        let signature = self.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Ok(token)
    }

    pub fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }

    /// The public key as a JWK (RFC 8037).
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.public),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        })
    }

    pub fn header(&self) -> jsonwebtoken::Header {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        header
    }
}

/// Stores a new key at `path` unless one is already there: whether it did.
fn create_private(path: &Path, signing: &SigningKey) -> Result<bool> {
    let pem = signing
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|_| Error::Internal("encoding an Ed25519 key".into()))?;
    create_secret_file(path, pem.as_bytes())
}

/// Writes a file only the broker's user can read, whole, creating its
/// directory.
pub fn write_secret_file(path: &Path, contents: &[u8]) -> Result<()> {
    crate::files::write_atomic(path, contents, crate::files::Access::Owner)
        .map_err(Error::io(format!("writing {}", path.display())))
}

/// Makes a file only the broker's user can read, unless another process
/// made it first: whether this call made it.
pub fn create_secret_file(path: &Path, contents: &[u8]) -> Result<bool> {
    crate::files::create_atomic(path, contents, crate::files::Access::Owner)
        .map_err(Error::io(format!("writing {}", path.display())))
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::pkcs8::EncodePrivateKey;

    use super::*;

    #[test]
    fn jwt_signed_by_the_key_is_the_one_jsonwebtoken_makes_and_verifies() {
        let key = Ed25519Key::from_seed(&[7; 32]).expect("a key");
        let claims = serde_json::json!({ "sub": "alice@example.com", "exp": 4_000_000_000_u64, "note": "ünïcode" });
        let token = key.sign_jwt(&claims).expect("signed");
        // Ed25519 signatures are deterministic: the same bytes exactly.
        let der = SigningKey::from_bytes(&[7; 32]).to_pkcs8_der().expect("PKCS#8");
        let theirs = jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes());
        assert_eq!(token, jsonwebtoken::encode(&key.header(), &claims, &theirs).expect("encoded"));
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        validation.validate_aud = false;
        let read = jsonwebtoken::decode::<serde_json::Value>(&token, key.decoding(), &validation).expect("verifies");
        assert_eq!(read.claims, claims);
        assert_eq!(read.header.kid.as_deref(), Some(key.kid.as_str()));
    }
}
