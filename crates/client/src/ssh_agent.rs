//! A client of the user's ssh-agent (`SSH_AUTH_SOCK`), speaking the agent
//! protocol (draft-miller-ssh-agent) directly: the key and certificate go
//! over the socket, never through a file.
//!
//! Adding uses `SSH_AGENTC_ADD_ID_CONSTRAINED` with a lifetime constraint,
//! so ssh-agent itself forgets the identity at the grant's deadline even
//! when the Hourglass agent is gone by then.

use std::path::{Path, PathBuf};
use std::time::Duration as StdDuration;

use ssh_key::{Certificate, PrivateKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroizing;

const SSH_AGENT_FAILURE: u8 = 5;
const SSH_AGENT_SUCCESS: u8 = 6;
const SSH_AGENTC_REQUEST_IDENTITIES: u8 = 11;
const SSH_AGENT_IDENTITIES_ANSWER: u8 = 12;
const SSH_AGENTC_REMOVE_IDENTITY: u8 = 18;
const SSH_AGENTC_ADD_ID_CONSTRAINED: u8 = 25;
const SSH_AGENT_CONSTRAIN_LIFETIME: u8 = 1;

/// Answers longer than this are not an ssh-agent talking.
const MAX_MESSAGE: usize = 256 * 1024;
const TIMEOUT: StdDuration = StdDuration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SshAgentError {
    #[error("ssh-agent at {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("ssh-agent refused to {0}")]
    Refused(&'static str),
    #[error("{0}")]
    Key(String),
}

/// SSH wire encoding: big-endian lengths and length-prefixed strings.
struct Wire(Zeroizing<Vec<u8>>);

impl Wire {
    fn new(kind: u8) -> Wire {
        Wire(Zeroizing::new(vec![kind]))
    }

    fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }

    fn string(&mut self, bytes: &[u8]) {
        self.u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(bytes);
    }

    fn byte(&mut self, value: u8) {
        self.0.push(value);
    }

    /// The message with its length prefix, ready to send.
    fn framed(self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(self.0.len() + 4));
        out.extend_from_slice(&u32::try_from(self.0.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(&self.0);
        out
    }
}

/// `SSH_AGENTC_ADD_ID_CONSTRAINED` for an Ed25519 key and its certificate:
/// the certificate's type name, the certificate blob, the public key, the
/// private key (seed ‖ public, as OpenSSH keeps it), a comment, and the
/// lifetime constraint in seconds.
fn add_message(
    key: &PrivateKey,
    certificate: &Certificate,
    comment: &str,
    lifetime_secs: u32,
) -> Result<Zeroizing<Vec<u8>>, SshAgentError> {
    let keypair = key
        .key_data()
        .ed25519()
        .ok_or_else(|| SshAgentError::Key("only Ed25519 keys are added to ssh-agent".into()))?;
    if certificate.public_key().ed25519() != Some(&keypair.public) {
        return Err(SshAgentError::Key("the certificate is not for this key".into()));
    }
    let blob =
        certificate.to_bytes().map_err(|error| SshAgentError::Key(format!("encoding the certificate: {error}")))?;
    let mut wire = Wire::new(SSH_AGENTC_ADD_ID_CONSTRAINED);
    wire.string(certificate.algorithm().to_certificate_type().as_bytes());
    wire.string(&blob);
    wire.string(keypair.public.as_ref());
    let secret = Zeroizing::new(keypair.to_bytes());
    wire.string(secret.as_ref());
    wire.string(comment.as_bytes());
    wire.byte(SSH_AGENT_CONSTRAIN_LIFETIME);
    wire.u32(lifetime_secs);
    Ok(wire.framed())
}

/// One identity ssh-agent holds: its key blob and comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub blob: Vec<u8>,
    pub comment: String,
}

pub struct SshAgent {
    path: PathBuf,
}

/// ssh-agent listens on a Unix domain socket (`SSH_AUTH_SOCK`).
#[cfg(unix)]
async fn connect(path: &Path) -> std::io::Result<tokio::net::UnixStream> {
    tokio::net::UnixStream::connect(path).await
}

/// Windows' OpenSSH agent listens on a named pipe, which this client does
/// not speak: no keys go to an agent there.
#[cfg(not(unix))]
async fn connect(_path: &Path) -> std::io::Result<tokio::io::DuplexStream> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "ssh-agent is reached over a Unix socket only"))
}

impl SshAgent {
    pub fn new(path: &Path) -> SshAgent {
        SshAgent { path: path.to_path_buf() }
    }

    /// `$SSH_AUTH_SOCK`, if set.
    pub fn from_env() -> Option<SshAgent> {
        std::env::var_os("SSH_AUTH_SOCK").filter(|p| !p.is_empty()).map(|p| SshAgent::new(Path::new(&p)))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, reason: impl std::fmt::Display) -> SshAgentError {
        SshAgentError::Io { path: self.path.display().to_string(), reason: reason.to_string() }
    }

    async fn exchange(&self, message: &[u8]) -> Result<Vec<u8>, SshAgentError> {
        let work = async {
            let mut stream = connect(&self.path).await.map_err(|e| self.io(e))?;
            stream.write_all(message).await.map_err(|e| self.io(e))?;
            let mut length = [0u8; 4];
            stream.read_exact(&mut length).await.map_err(|e| self.io(e))?;
            let length = u32::from_be_bytes(length) as usize;
            if length == 0 || length > MAX_MESSAGE {
                return Err(self.io(format!("an answer of {length} bytes")));
            }
            let mut answer = vec![0u8; length];
            stream.read_exact(&mut answer).await.map_err(|e| self.io(e))?;
            Ok(answer)
        };
        tokio::time::timeout(TIMEOUT, work).await.map_err(|_| self.io("no answer"))?
    }

    async fn expect_success(&self, message: &[u8], what: &'static str) -> Result<(), SshAgentError> {
        match self.exchange(message).await?.first() {
            Some(&SSH_AGENT_SUCCESS) => Ok(()),
            Some(&SSH_AGENT_FAILURE) => Err(SshAgentError::Refused(what)),
            other => Err(self.io(format!("unexpected answer {other:?} to {what}"))),
        }
    }

    /// Adds `key` with `certificate`, forgotten by ssh-agent after
    /// `lifetime_secs`. Returns the certificate blob, which names the
    /// identity for [`SshAgent::remove`].
    pub async fn add(
        &self,
        key: &PrivateKey,
        certificate: &str,
        comment: &str,
        lifetime_secs: u32,
    ) -> Result<Vec<u8>, SshAgentError> {
        let certificate = Certificate::from_openssh(certificate)
            .map_err(|error| SshAgentError::Key(format!("the certificate is unreadable: {error}")))?;
        let message = add_message(key, &certificate, comment, lifetime_secs.max(1))?;
        self.expect_success(&message, "add the key").await?;
        certificate.to_bytes().map_err(|error| SshAgentError::Key(error.to_string()))
    }

    /// Removes the identity whose key blob is `blob`. An identity already
    /// gone (its lifetime ran out) counts as removed.
    pub async fn remove(&self, blob: &[u8]) -> Result<(), SshAgentError> {
        let mut wire = Wire::new(SSH_AGENTC_REMOVE_IDENTITY);
        wire.string(blob);
        match self.expect_success(&wire.framed(), "remove the key").await {
            Err(SshAgentError::Refused(_)) => Ok(()),
            other => other,
        }
    }

    /// The identities ssh-agent holds.
    pub async fn list(&self) -> Result<Vec<Identity>, SshAgentError> {
        let answer = self.exchange(&Wire::new(SSH_AGENTC_REQUEST_IDENTITIES).framed()).await?;
        let mut reader = Reader { bytes: &answer, at: 0 };
        if reader.byte() != Some(SSH_AGENT_IDENTITIES_ANSWER) {
            return Err(self.io("not an identities answer"));
        }
        let count = reader.u32().ok_or_else(|| self.io("truncated answer"))?;
        let mut identities = Vec::new();
        for _ in 0..count {
            let blob = reader.string().ok_or_else(|| self.io("truncated answer"))?.to_vec();
            let comment = String::from_utf8_lossy(reader.string().ok_or_else(|| self.io("truncated answer"))?);
            identities.push(Identity { blob, comment: comment.into_owned() });
        }
        Ok(identities)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let byte = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    fn u32(&mut self) -> Option<u32> {
        let bytes = self.bytes.get(self.at..self.at + 4)?;
        self.at += 4;
        Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn string(&mut self) -> Option<&'a [u8]> {
        let length = self.u32()? as usize;
        let bytes = self.bytes.get(self.at..self.at.checked_add(length)?)?;
        self.at += length;
        Some(bytes)
    }
}

#[cfg(test)]
mod tests {
    use ssh_key::certificate::{Builder, CertType};

    use super::*;

    #[test]
    fn the_add_message_frames_certificate_key_comment_and_lifetime() {
        let key = PrivateKey::random(&mut rand::rngs::OsRng, ssh_key::Algorithm::Ed25519).expect("key");
        let ca = PrivateKey::random(&mut rand::rngs::OsRng, ssh_key::Algorithm::Ed25519).expect("ca");
        let mut builder =
            Builder::new_with_random_nonce(&mut rand::rngs::OsRng, key.public_key(), 0, u64::MAX / 2).expect("builder");
        builder.cert_type(CertType::User).expect("type");
        builder.valid_principal("ops").expect("principal");
        let certificate = builder.sign(&ca).expect("signed");

        let message = add_message(&key, &certificate, "hourglass grt-x", 300).expect("encoded");
        let mut reader = Reader { bytes: &message, at: 0 };
        let length = reader.u32().expect("length") as usize;
        assert_eq!(length, message.len() - 4, "the length prefix covers the rest");
        assert_eq!(reader.byte(), Some(SSH_AGENTC_ADD_ID_CONSTRAINED), "the constrained add");
        assert_eq!(reader.string(), Some(&b"ssh-ed25519-cert-v01@openssh.com"[..]), "the certificate type");
        assert_eq!(reader.string().map(<[u8]>::to_vec), certificate.to_bytes().ok(), "the certificate blob");
        let public = reader.string().expect("public key");
        assert_eq!(public.len(), 32, "Ed25519 public key");
        let secret = reader.string().expect("private key");
        assert_eq!(secret.len(), 64, "seed and public key, as OpenSSH keeps them");
        assert_eq!(&secret[32..], public, "the private half ends with the public key");
        assert_eq!(reader.string(), Some(&b"hourglass grt-x"[..]), "the comment");
        assert_eq!(reader.byte(), Some(SSH_AGENT_CONSTRAIN_LIFETIME), "a lifetime constraint");
        assert_eq!(reader.u32(), Some(300), "seconds left");
        assert_eq!(reader.at, message.len(), "nothing else");
    }

    #[test]
    fn a_certificate_for_another_key_is_refused() {
        let key = PrivateKey::random(&mut rand::rngs::OsRng, ssh_key::Algorithm::Ed25519).expect("key");
        let other = PrivateKey::random(&mut rand::rngs::OsRng, ssh_key::Algorithm::Ed25519).expect("other");
        let mut builder = Builder::new_with_random_nonce(&mut rand::rngs::OsRng, other.public_key(), 0, u64::MAX / 2)
            .expect("builder");
        builder.valid_principal("ops").expect("principal");
        let certificate = builder.sign(&other).expect("signed");
        assert!(add_message(&key, &certificate, "c", 1).is_err(), "mismatched key and certificate");
    }
}
