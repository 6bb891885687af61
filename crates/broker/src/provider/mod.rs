//! Credential providers: what turns an approved request into a credential on
//! a real target, moves its deadline, and removes it.
//!
//! The lifecycle code knows only this trait. A provider keeps a non-secret
//! record of what it created (`state`, stored with the grant) so that it can
//! renew and revoke after a restart, even if the resource has since left the
//! policy. Secrets are never in that record: either the client made them
//! (and sent only a verifier or public key) or the provider derives them on
//! demand for the owner ([`Provider::credential`]).

pub mod aws;
pub mod exec;
pub mod postgres;
pub mod ssh;
pub mod token;

use std::collections::BTreeMap;
use std::sync::Arc;

use hourglass_core::Grant;
use hourglass_core::api::{ClientMaterial, Credential};
use hourglass_policy::{POLICY_FILE, Policy, Problem, Resource, Role};

pub use crate::error::ProviderError;

/// What a provider checked on the target, recorded in the audit log with the
/// step it belongs to (for example: the role exists with the right deadline,
/// no session of it remains).
pub type Verification = serde_json::Map<String, serde_json::Value>;

/// What a provider created or extended for a grant.
#[derive(Debug, Clone, PartialEq)]
pub struct Issued {
    /// The provider's non-secret record, stored with the grant.
    pub state: serde_json::Value,
    /// Whether the provider itself confirmed the credential works. When it
    /// cannot (the secret is the client's), the client confirms it.
    pub ready: bool,
    pub verification: Verification,
}

/// Which public half of a client-made secret a provider needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaterialKind {
    None,
    PostgresScramVerifier,
    SshPublicKey,
}

/// Everything a provider may need: adding a field here does not change any
/// provider's signature.
#[derive(Clone, Copy)]
pub struct IssueInput<'a> {
    pub grant: &'a Grant,
    pub resource: &'a Resource,
    pub role: &'a Role,
    /// The broker's clock: providers never read their own.
    pub now: hourglass_core::Timestamp,
    /// What the client sent with the request (checked by `check_material`).
    pub material: Option<&'a ClientMaterial>,
    /// The request's ticket, where the request is at hand (filing,
    /// approval, issue); a provider that needs it later keeps it in its
    /// state.
    pub ticket: Option<&'a str>,
}

#[async_trait::async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The name used in `hourglass.toml` (`provider = "token"`).
    fn kind(&self) -> &'static str;

    /// Checks a resource's and its roles' `settings` when a policy loads.
    fn check(&self, resource: &Resource) -> Result<(), String>;

    /// The client-made material a request for this provider must carry.
    fn material(&self) -> MaterialKind {
        MaterialKind::None
    }

    /// Checks the material of a request when it is filed, so that a bad key
    /// is refused then, not when an approver approves.
    fn check_material(&self, material: Option<&ClientMaterial>) -> Result<(), String> {
        check_material_present(self.material(), material)
    }

    /// The state [`Provider::issue`] will record, known before it runs
    /// (no I/O), for providers whose credential can be found and removed
    /// from it alone. The broker stores it with the grant before issuing,
    /// so that an issue that fails, times out or is cut short by a crash
    /// can still be revoked: whatever it may have created at the target
    /// (now or later, by a statement the target finishes after the broker
    /// gave up) is removed, never orphaned.
    fn planned_state(&self, _input: IssueInput<'_>) -> Result<Option<serde_json::Value>, ProviderError> {
        Ok(None)
    }

    /// Whether the credential is made entirely inside the broker (signed
    /// here, nothing created on a target). Such a grant is issued before it
    /// is first stored and recorded in the commit that files its request: if
    /// the broker dies first, nothing exists anywhere and nobody was told.
    /// A provider that touches a target must say `false`, so the grant is on
    /// disk as `issuing` before the target changes and a crash is recovered.
    fn issues_in_broker(&self) -> bool {
        false
    }

    /// Creates the credential, bound to `grant.expires_at`. Must be
    /// idempotent: after a crash the broker calls it again for the same
    /// grant. On error nothing may be left half-created.
    async fn issue(&self, input: IssueInput<'_>) -> Result<Issued, ProviderError>;

    /// Moves the credential's deadline to `input.grant.expires_at`.
    async fn renew(&self, input: IssueInput<'_>, state: &serde_json::Value) -> Result<Issued, ProviderError>;

    /// Removes the credential. `Ok` only once it is confirmed gone, with what
    /// was checked; an error is retried with backoff until it succeeds.
    async fn revoke(
        &self,
        grant: &Grant,
        state: &serde_json::Value,
        now: hourglass_core::Timestamp,
    ) -> Result<Verification, ProviderError>;

    /// The owner's credential for a live grant.
    async fn credential(&self, input: IssueInput<'_>, state: &serde_json::Value) -> Result<Credential, ProviderError>;

    /// A public document the provider serves at `/v1/providers/{kind}/{name}`
    /// (the SSH user CA key, the SSH KRL), for targets to fetch; `resource`:
    /// the one `?resource=NAME` names, for documents that differ by resource.
    async fn document(&self, _name: &str, _resource: Option<&Resource>) -> Option<Document> {
        None
    }

    /// Work the provider does by itself from time to time, every replica
    /// alike (AWS: removing the denies of revoked sessions whose keys have
    /// ended). Called every minute; must be harmless when two replicas do
    /// it at once.
    async fn tidy(&self, _now: hourglass_core::Timestamp) -> Result<(), String> {
        Ok(())
    }
}

/// A public document a provider serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// The default material check: exactly the kind a provider needs.
pub fn check_material_present(kind: MaterialKind, material: Option<&ClientMaterial>) -> Result<(), String> {
    let verifier = material.and_then(|m| m.postgres_scram_verifier.as_ref());
    let public_key = material.and_then(|m| m.ssh_public_key.as_ref());
    match (kind, verifier, public_key) {
        (MaterialKind::None, None, None)
        | (MaterialKind::PostgresScramVerifier, Some(_), None)
        | (MaterialKind::SshPublicKey, None, Some(_)) => Ok(()),
        (MaterialKind::None, _, _) => Err("this resource takes no client material".into()),
        (MaterialKind::PostgresScramVerifier, None, _) => Err(
            "a PostgreSQL resource needs client_material.postgres_scram_verifier: the SCRAM-SHA-256 verifier of a password \
             your client generated (the hourglass client does this)"
                .into(),
        ),
        (MaterialKind::SshPublicKey, _, None) => Err(
            "an SSH resource needs client_material.ssh_public_key: the public key the certificate is for".into(),
        ),
        _ => Err("send only the material this resource needs".into()),
    }
}

/// A record a provider shares with every replica: one JSON document in the
/// store, read by anyone, changed only under its lock (read, change, write
/// in one transaction), so that replicas changing it at once lose nothing.
#[derive(Clone)]
pub struct SharedRecord {
    store: crate::store::Store,
    name: &'static str,
}

impl SharedRecord {
    pub fn new(store: crate::store::Store, name: &'static str) -> SharedRecord {
        SharedRecord { store, name }
    }

    pub async fn read(&self) -> Result<Option<String>, String> {
        self.store.document(self.name).await.map_err(|error| format!("reading {}: {error}", self.name))
    }

    /// Applies `change` to the record as stored (`None`: none yet) and
    /// stores what it returns (`None`: unchanged). Returns the record now.
    pub async fn update(
        &self,
        change: impl FnOnce(Option<String>) -> Result<Option<String>, String>,
    ) -> Result<Option<String>, String> {
        let failed = |error: crate::error::Error| format!("updating {}: {error}", self.name);
        let mut tx = self.store.begin().await.map_err(failed)?;
        let current = tx.document_for_update(self.name).await.map_err(failed)?;
        match change(current.clone())? {
            Some(next) => {
                tx.put_document(self.name, &next).await.map_err(failed)?;
                tx.commit().await.map_err(failed)?;
                Ok(Some(next))
            }
            None => Ok(current),
        }
    }
}

/// The providers this broker runs, by kind.
#[derive(Clone, Default)]
pub struct Providers {
    by_kind: BTreeMap<&'static str, Arc<dyn Provider>>,
}

impl Providers {
    pub fn with(mut self, provider: Arc<dyn Provider>) -> Self {
        self.by_kind.insert(provider.kind(), provider);
        self
    }

    /// The standard set: token, AWS (its revoked sessions listed in the
    /// store), PostgreSQL, SSH (with its user CA `ssh_ca`,
    /// its revocation list in the store, `user_ca.pub` in `data_dir/ssh`)
    /// and exec hooks (commands relative to `policy_dir`).
    pub async fn standard(
        token: token::TokenProvider,
        ssh_ca: &crate::keys::Ed25519Key,
        store: crate::store::Store,
        data_dir: &std::path::Path,
        policy_dir: &std::path::Path,
    ) -> Result<Providers, String> {
        let ssh =
            ssh::SshProvider::open(ssh_ca, SharedRecord::new(store.clone(), "ssh/revocations"), &data_dir.join("ssh"))
                .await?;
        let aws = aws::AwsProvider::new(SharedRecord::new(store.clone(), "aws/revocations"))?;
        Ok(Providers::default()
            .with(Arc::new(token))
            .with(Arc::new(aws))
            .with(Arc::new(postgres::PostgresProvider::default()))
            .with(Arc::new(ssh))
            .with(Arc::new(exec::ExecProvider::new(policy_dir.to_path_buf()))))
    }

    /// Each provider's own periodic work ([`Provider::tidy`]).
    pub async fn tidy(&self, now: hourglass_core::Timestamp) {
        for provider in self.by_kind.values() {
            if let Err(error) = provider.tidy(now).await {
                tracing::warn!(provider = provider.kind(), "{error}");
            }
        }
    }

    pub fn get(&self, kind: &str) -> Result<&Arc<dyn Provider>, ProviderError> {
        self.by_kind.get(kind).ok_or_else(|| ProviderError::UnknownKind(kind.to_owned()))
    }

    /// Problems with the providers and settings a policy names.
    pub fn check(&self, policy: &Policy) -> Vec<Problem> {
        let kinds = self.by_kind.keys().copied().collect::<Vec<_>>().join(", ");
        policy
            .resources
            .values()
            .filter_map(|resource| {
                let message = match self.by_kind.get(resource.provider.as_str()) {
                    None => format!(
                        "resource \"{}\": unknown provider \"{}\" (available: {kinds})",
                        resource.name, resource.provider
                    ),
                    Some(provider) => {
                        provider.check(resource).err().map(|e| format!("resource \"{}\": {e}", resource.name))?
                    }
                };
                Some(Problem { file: POLICY_FILE.into(), line: Some(resource.line), column: None, message })
            })
            .collect()
    }
}

/// `orders-api` → `ORDERS_API`: a default prefix for environment variables.
pub fn env_prefix(resource: &str) -> String {
    resource.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

pub fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.as_bytes()[0].is_ascii_digit()
        && name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}
