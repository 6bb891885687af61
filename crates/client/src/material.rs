//! Secrets born on the client. For PostgreSQL and SSH resources the client
//! makes the secret (a password, a private key) and sends the broker only
//! its public half (a SCRAM verifier, a public key): the broker never holds
//! the secret, so it cannot leak it.

use hourglass_core::api::ClientMaterial;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::agent::protocol::ClientSecretValue;

/// A fresh PostgreSQL password and its SCRAM-SHA-256 verifier.
pub struct PostgresSecret {
    pub password: Zeroizing<String>,
    pub material: ClientMaterial,
}

/// 32 random bytes, hex encoded: 256 bits, and nothing a connection string
/// or a `.pgpass` line would need to escape.
pub fn postgres() -> PostgresSecret {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut());
    let password = Zeroizing::new(hourglass_core::audit::to_hex(bytes.as_ref()));
    let mut salt = [0u8; SCRAM_SALT_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let verifier = scram_verifier(password.as_bytes(), &salt, SCRAM_ITERATIONS);
    PostgresSecret {
        password,
        material: ClientMaterial { postgres_scram_verifier: Some(verifier), ssh_public_key: None },
    }
}

/// PBKDF2 rounds in the verifier: one. Rounds slow down guessing a
/// password a person chose; ours is 256 random bits, which no number of
/// guesses reaches, so PostgreSQL's default of 4,096 would protect nothing
/// and cost twice over: about 5 ms of the database's CPU in every
/// `CREATE ROLE` (it checks the verifier against the empty password) and
/// as much again in every login of every client (libpq derives the key per
/// connection). NIST SP 800-63B (5.1.2.2) keeps secrets of 112 bits or more
/// under one approved hash for the same reason, and PostgreSQL 16's own
/// `scram_iterations` goes down to 1.
const SCRAM_ITERATIONS: u32 = 1;
/// PostgreSQL's salt length.
const SCRAM_SALT_BYTES: usize = 16;

/// The SCRAM-SHA-256 verifier of `password` as PostgreSQL stores it
/// (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, RFC 5802
/// and 7677). `password` is ASCII without controls (our hex), which
/// SASLprep leaves as it is.
///
/// `postgres_protocol::password::scram_sha_256` makes the same string with
/// PostgreSQL's 4,096 rounds and keys HMAC afresh in each of them; here the
/// keyed state is made once and copied, which halves a round's cost for
/// any count.
fn scram_verifier(password: &[u8], salt: &[u8; SCRAM_SALT_BYTES], iterations: u32) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};

    // INVARIANT: HMAC takes keys of any length.
    let keyed = Hmac::<Sha256>::new_from_slice(password).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    // PBKDF2 (RFC 8018) with one block: U1 = HMAC(salt ‖ 1), Ui = HMAC(Ui-1).
    let mut round = keyed.clone();
    round.update(salt);
    round.update(&1u32.to_be_bytes());
    let mut previous = Zeroizing::new(<[u8; 32]>::from(round.finalize().into_bytes()));
    let mut salted = previous.clone();
    for _ in 1..iterations {
        let mut round = keyed.clone();
        round.update(previous.as_ref());
        *previous = round.finalize().into_bytes().into();
        salted.iter_mut().zip(previous.iter()).for_each(|(into, from)| *into ^= from);
    }
    let key = |label: &[u8]| {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(salted.as_ref()).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
        mac.update(label);
        Zeroizing::new(<[u8; 32]>::from(mac.finalize().into_bytes()))
    };
    // The client key logs in as the role: it is hashed, then wiped.
    let stored_key = Sha256::digest(key(b"Client Key").as_ref());
    let server_key = key(b"Server Key");
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key),
        STANDARD.encode(server_key.as_ref())
    )
}

/// A fresh Ed25519 key pair for SSH: the private key stays here, the public
/// key goes to the broker to be certified.
pub struct SshSecret {
    pub private_key: ssh_key::PrivateKey,
    pub material: ClientMaterial,
}

pub fn ssh() -> Result<SshSecret, String> {
    let private_key = ssh_key::PrivateKey::random(&mut rand::rngs::OsRng, ssh_key::Algorithm::Ed25519)
        .map_err(|error| format!("generating an SSH key: {error}"))?;
    let public = private_key.public_key().to_openssh().map_err(|error| format!("encoding an SSH key: {error}"))?;
    Ok(SshSecret {
        private_key,
        material: ClientMaterial { postgres_scram_verifier: None, ssh_public_key: Some(public) },
    })
}

impl From<&PostgresSecret> for ClientSecretValue {
    fn from(secret: &PostgresSecret) -> Self {
        ClientSecretValue::PostgresPassword(secret.password.as_str().to_owned())
    }
}

impl TryFrom<&SshSecret> for ClientSecretValue {
    type Error = crate::Error;

    fn try_from(secret: &SshSecret) -> crate::Result<Self> {
        let pem = secret
            .private_key
            .to_openssh(ssh_key::LineEnding::LF)
            .map_err(|error| crate::Error::Config(format!("encoding the SSH key: {error}")))?;
        Ok(ClientSecretValue::SshPrivateKey(pem.as_str().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_material_is_a_scram_verifier_without_the_password() {
        let secret = postgres();
        let verifier = secret.material.postgres_scram_verifier.clone().expect("a verifier");
        assert!(verifier.starts_with("SCRAM-SHA-256$1:"), "one round for 256 random bits: {verifier}");
        assert!(!verifier.contains(secret.password.as_str()), "the verifier does not carry the password");
        assert_eq!(secret.password.len(), 64, "256 bits as hex");
        assert_ne!(postgres().password, secret.password, "fresh each time");
    }

    #[test]
    fn scram_verifier_is_the_one_postgres_computes() {
        // Made independently (Python's hashlib.pbkdf2_hmac and hmac) for
        // this password and salt, at PostgreSQL's count and at ours.
        let password = "0123456789abcdef".repeat(4);
        let salt: [u8; 16] = std::array::from_fn(|n| n as u8);
        assert_eq!(
            scram_verifier(password.as_bytes(), &salt, 4096),
            "SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==$TX7+UsrUBzwTduL9bIMwpuJPwYfRDYpqrxHg2uTRAgE=:\
             aYgdktib+LCYPSZ1/ognnmdY1b6RltHVRA6R52w9gcg="
        );
        assert_eq!(
            scram_verifier(password.as_bytes(), &salt, SCRAM_ITERATIONS),
            "SCRAM-SHA-256$1:AAECAwQFBgcICQoLDA0ODw==$lhnGm64SfIhCBvUxEhA9yY+7JVS7//r4Dtuaipile4g=:\
             HzFTDfRal26RAPRVjVPT3YdpEpV06UwLY3lPq2aRou4="
        );
    }

    #[test]
    fn ssh_material_is_the_public_key_only() {
        let secret = ssh().expect("a key");
        let public = secret.material.ssh_public_key.clone().expect("a public key");
        assert!(public.starts_with("ssh-ed25519 "), "{public}");
        assert!(!public.contains("PRIVATE"), "only the public half leaves");
    }
}
