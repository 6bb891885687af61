//! Secrets born on the client. For PostgreSQL and SSH resources the client
//! makes the secret (a password, a private key) and sends the broker only
//! its public half (a SCRAM verifier, a public key): the broker never holds
//! the secret, so it cannot leak it.

use hourglass_core::api::ClientMaterial;
use rand::RngCore;
use zeroize::Zeroizing;

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
    let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
    PostgresSecret {
        password,
        material: ClientMaterial { postgres_scram_verifier: Some(verifier), ssh_public_key: None },
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_material_is_a_scram_verifier_without_the_password() {
        let secret = postgres();
        let verifier = secret.material.postgres_scram_verifier.clone().expect("a verifier");
        assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "{verifier}");
        assert!(!verifier.contains(secret.password.as_str()), "the verifier does not carry the password");
        assert_eq!(secret.password.len(), 64, "256 bits as hex");
        assert_ne!(postgres().password, secret.password, "fresh each time");
    }

    #[test]
    fn ssh_material_is_the_public_key_only() {
        let secret = ssh().expect("a key");
        let public = secret.material.ssh_public_key.clone().expect("a public key");
        assert!(public.starts_with("ssh-ed25519 "), "{public}");
        assert!(!public.contains("PRIVATE"), "only the public half leaves");
    }
}
