//! Bearer tokens verified a moment ago. A client sends the same session on
//! every call, and checking its Ed25519 or RSA signature costs more than the
//! rest of most calls; so a verified token is remembered, by its SHA-256
//! (the token itself is not kept), for at most [`REMEMBER_FOR`] and never
//! past its own `exp`. A token ended by logging out is refused before this
//! cache is asked (`Authenticator::verify_bearer`).

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::Verified;

/// How long a verification is trusted without checking the signature again.
/// An issuer's key withdrawn from its JWKS is dropped when the broker next
/// fetches the JWKS (every 15 minutes, or when a token names an unknown
/// key); a token it signed is then refused within this minute more.
pub const REMEMBER_FOR: i64 = 60;

/// Most tokens remembered at once; past it, the table starts over.
pub const REMEMBERED_MAX: usize = 16_384;

#[derive(Default)]
pub struct VerifiedTokens {
    remembered: Mutex<HashMap<[u8; 32], Remembered>>,
}

struct Remembered {
    verified: Verified,
    /// Unix seconds: the earlier of the token's `exp` and `REMEMBER_FOR`
    /// after it was verified.
    until: i64,
}

/// What a token is looked up by.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl VerifiedTokens {
    /// A token verified before, if still within its time.
    pub fn get(&self, digest: &[u8; 32], now: i64) -> Option<Verified> {
        let remembered = self.remembered.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        remembered.get(digest).filter(|entry| now < entry.until).map(|entry| entry.verified.clone())
    }

    /// Whether a token verified before is still within its time.
    pub fn holds(&self, digest: &[u8; 32], now: i64) -> bool {
        let remembered = self.remembered.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        remembered.get(digest).is_some_and(|entry| now < entry.until)
    }

    /// Remembers a token just verified.
    pub fn remember(&self, digest: [u8; 32], verified: &Verified, now: i64) {
        let until = verified.expires_at.min(now + REMEMBER_FOR);
        if until <= now {
            return;
        }
        let mut remembered = self.remembered.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if remembered.len() >= REMEMBERED_MAX {
            remembered.retain(|_, entry| now < entry.until);
            if remembered.len() >= REMEMBERED_MAX {
                remembered.clear();
            }
        }
        remembered.insert(digest, Remembered { verified: verified.clone(), until });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice(expires_at: i64) -> Verified {
        Verified {
            principal: hourglass_core::Principal::new("alice@acme.example", ["engineers"]),
            authentication: Default::default(),
            expires_at,
            token_id: "sha256:ab".into(),
        }
    }

    #[test]
    fn verified_token_is_remembered_until_its_own_expiry() {
        let tokens = VerifiedTokens::default();
        let key = digest("a.b.c");
        tokens.remember(key, &alice(1_010), 1_000);
        assert_eq!(tokens.get(&key, 1_009), Some(alice(1_010)), "within its exp");
        assert_eq!(tokens.get(&key, 1_010), None, "never at or past its exp");
        assert_eq!(tokens.get(&digest("a.b.d"), 1_001), None, "another token is not this one");
    }

    #[test]
    fn verified_token_is_verified_again_after_a_minute() {
        let tokens = VerifiedTokens::default();
        let key = digest("a.b.c");
        tokens.remember(key, &alice(100_000), 1_000);
        assert_eq!(tokens.get(&key, 1_000 + REMEMBER_FOR - 1), Some(alice(100_000)), "remembered for a minute");
        assert_eq!(tokens.get(&key, 1_000 + REMEMBER_FOR), None, "then its signature is checked again");
    }

    #[test]
    fn verified_tokens_stay_bounded() {
        let tokens = VerifiedTokens::default();
        for n in 0..=REMEMBERED_MAX {
            tokens.remember(digest(&n.to_string()), &alice(2_000), 1_000);
        }
        let held = tokens.remembered.lock().expect("not poisoned").len();
        assert!(held <= REMEMBERED_MAX, "{held} tokens held");
        assert_eq!(tokens.get(&digest(&REMEMBERED_MAX.to_string()), 1_001), Some(alice(2_000)), "the newest is kept");
    }
}
