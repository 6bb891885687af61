//! SSH: OpenSSH user certificates signed by each resource's user CA.
//!
//! The client makes a key pair and sends only its public key. Issue signs a
//! user certificate for that key: key id `hourglass:<grant id>:<owner>`, the
//! role's principals, `valid_before` = the grant's deadline. Each resource
//! has its own user CA, derived from the broker's (HKDF-SHA256 of its seed
//! with the resource's name: the same on every replica, never stored), and
//! its hosts' sshd trusts only that one (`TrustedUserCAKeys`, the key served
//! at `/v1/providers/ssh/ca.pub?resource=NAME`): a staging role's
//! certificate never logs in to production hosts that have the same user.
//! `ca = "shared"` signs with the broker's one CA (`ca.pub`, no resource)
//! instead, for hosts set up that way. The KRL revokes key ids for any CA.
//! Nothing is created on the target and the certificate dies on its own at
//! the deadline. Renew signs a new certificate with the new deadline and the
//! same key id. Revoke lists the key id in the broker's KRL (OpenSSH key
//! revocation list, `RevokedKeys`), served at `/v1/providers/ssh/krl` and
//! written to the `krl_file`s of the resources that name one.
//!
//! ```toml
//! [resources.bastion]
//! provider = "ssh"
//! settings = { host = "bastion.acme.example", port = 22, krl_file = "/etc/ssh/hourglass.krl" }
//!
//! [resources.bastion.roles.ops]
//! settings = { principals = ["ops"], extensions = ["permit-pty", "permit-port-forwarding"] }
//! ```
//!
//! Where its state lives:
//! - the CA's Ed25519 private key: in the store, sealed with the store key,
//!   the same on every replica (`keys/set.rs`, purpose `ssh_user_ca`); it
//!   never reaches a log, an error or a file. An older broker's
//!   `DATA/ssh/user_ca` is moved into the store on first start.
//! - `DATA/ssh/user_ca.pub`: its public key, the same text as `ca.pub`.
//! - the revocation list (revoked key ids with the `valid_before` of their
//!   latest certificate, the KRL's version and date, the `krl_file`s written
//!   so far): a document in the store every replica reads and changes under
//!   its lock (`revocations.rs`), so every replica serves the same KRL.
//!
//! Why the KRL revokes key ids rather than serials: every certificate of a
//! grant (the first one and one per renewal) carries the same key id, so one
//! entry revokes all of them, including any a client still holds from before
//! a renewal. The entry names the grant and its owner, so the KRL reads as
//! what it revokes (`ssh-keygen -Ql -f FILE`). Serials are random per
//! certificate and recorded in the grant's state for the audit trail.
//!
//! When a `krl_file` is written: sshd refuses every key while the file named
//! by `RevokedKeys` is missing, and `check` has no side effects, so the
//! provider learns a resource's `krl_file` only when it first issues for it.
//! Issue and renew therefore write the current KRL to the resource's
//! `krl_file` before the certificate is handed out; every revocation writes
//! it to every `krl_file` written before (on the machine of the replica
//! that revokes); a start rewrites them (best effort). To have the file
//! before the first grant, fetch it (`curl -o FILE
//! BROKER/v1/providers/ssh/krl`) or make an empty one (`ssh-keygen -k -f
//! FILE`). Hosts other than the brokers' own, and every host when brokers
//! run as several replicas, fetch the KRL over HTTP (from any replica).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hourglass_core::api::{ClientMaterial, ClientSecret, Credential, EnvVar};
use hourglass_core::{Grant, Timestamp};
use hourglass_policy::{Resource, Role};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use ssh_key::certificate::{Builder, CertType};
use ssh_key::public::KeyData;
use ssh_key::{Certificate, Fingerprint, HashAlg, PrivateKey, PublicKey};
use zeroize::Zeroizing;

use super::{
    Document, IssueInput, Issued, MaterialKind, Provider, ProviderError, SharedRecord, Verification,
    check_material_present, env_prefix, is_env_name,
};
use crate::keys::Ed25519Key;

mod krl;
mod revocations;

use revocations::RevocationList;

use crate::files::{Access, write_atomic};

pub const KIND: &str = "ssh";

/// Where an older broker kept its CA's private key and revocation list
/// (`DATA/ssh`); both live in the store now.
const LEGACY_CA_FILE: &str = "user_ca";
const LEGACY_REVOCATIONS_FILE: &str = "revocations.json";
const CA_PUBLIC_FILE: &str = "user_ca.pub";
const CA_COMMENT: &str = "hourglass-user-ca";

/// Certificates are valid from a minute before issue: a target whose clock
/// runs a little behind the broker's would otherwise refuse a fresh
/// certificate as "not yet valid". Only the start is moved back; the end is
/// the grant's deadline, never later.
const CLOCK_SKEW_SECS: i64 = 60;

/// The certificate extensions OpenSSH defines (PROTOCOL.certkeys).
const EXTENSIONS: [&str; 5] =
    ["permit-X11-forwarding", "permit-agent-forwarding", "permit-port-forwarding", "permit-pty", "permit-user-rc"];
const DEFAULT_EXTENSIONS: [&str; 1] = ["permit-pty"];

/// Longer than any real public key (an RSA-16384 line is about 2.8 KB).
const MAX_PUBLIC_KEY_LEN: usize = 16 * 1024;
const MIN_RSA_BITS: usize = 2048;
const KEY_ADVICE: &str = "use ssh-ed25519 (or ecdsa-sha2-nistp256/384/521, or RSA of at least 2048 bits)";

/// `[resources.NAME] settings` for `provider = "ssh"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Where clients connect: exported as `{PREFIX}_SSH_HOST` and `{PREFIX}_SSH_PORT`.
    host: Option<String>,
    /// Default 22; only meaningful with `host`.
    port: Option<u16>,
    /// Where the broker keeps the KRL for an sshd on its own machine
    /// (`RevokedKeys`). Absolute.
    krl_file: Option<PathBuf>,
    /// Prefix of the environment variables; defaults to the resource name.
    env_prefix: Option<String>,
    /// Which user CA signs: `"resource"` (the default), this resource's own,
    /// so that hosts of another resource, which trust only theirs, refuse
    /// its certificates; or `"shared"`, the broker's one CA (`ca.pub`),
    /// for hosts set up before resources had their own.
    #[serde(default)]
    ca: CaScope,
}

/// Which user CA signs a resource's certificates.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum CaScope {
    #[default]
    Resource,
    Shared,
}

/// `[resources.NAME.roles.ROLE] settings`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleSettings {
    /// The login names the certificate is valid for.
    principals: Vec<String>,
    /// Certificate extensions; `["permit-pty"]` unless set.
    #[serde(default = "default_extensions")]
    extensions: Vec<String>,
    /// The `force-command` critical option: the only command sshd runs.
    force_command: Option<String>,
    /// The `source-address` critical option: addresses or CIDR ranges the
    /// certificate may be used from.
    source_address: Option<Vec<String>>,
}

fn default_extensions() -> Vec<String> {
    DEFAULT_EXTENSIONS.iter().map(|e| (*e).to_owned()).collect()
}

impl Settings {
    fn parse(resource: &Resource) -> Result<Settings, String> {
        let settings: Settings =
            resource.settings.clone().try_into().map_err(|e: toml::de::Error| e.message().to_owned())?;
        if let Some(host) = &settings.host
            && (host.is_empty() || !host.chars().all(|c| c.is_ascii_graphic()) || host.starts_with('-'))
        {
            return Err(format!("host \"{}\" is not a host name or address", host.escape_debug()));
        }
        if settings.port == Some(0) {
            return Err("port must be between 1 and 65535".into());
        }
        if settings.port.is_some() && settings.host.is_none() {
            return Err("port is set without host: set host too (clients are told both)".into());
        }
        if let Some(path) = &settings.krl_file
            && (!path.is_absolute() || path.file_name().is_none())
        {
            return Err(format!("krl_file \"{}\" must be an absolute path to a file", path.display()));
        }
        if let Some(prefix) = &settings.env_prefix
            && !is_env_name(prefix)
        {
            return Err(format!("env_prefix \"{prefix}\" must be upper case letters, digits and '_'"));
        }
        Ok(settings)
    }
}

impl RoleSettings {
    fn parse(role: &Role) -> Result<RoleSettings, String> {
        Self::parse_table(&role.settings).map_err(|e| format!("role \"{}\": {e}", role.name))
    }

    fn parse_table(table: &toml::Table) -> Result<RoleSettings, String> {
        let settings: RoleSettings = table.clone().try_into().map_err(|e: toml::de::Error| e.message().to_owned())?;
        if settings.principals.is_empty() {
            return Err("settings.principals must name the login names the certificate is valid for".into());
        }
        let mut seen = BTreeSet::new();
        for principal in &settings.principals {
            let valid = !principal.is_empty()
                && principal.len() <= 256
                && principal.chars().all(|c| !c.is_whitespace() && !c.is_control() && c != ',');
            if !valid {
                return Err(format!(
                    "principal \"{}\" must be a login name (no spaces, commas or control characters)",
                    principal.escape_debug()
                ));
            }
            if !seen.insert(principal) {
                return Err(format!("principal \"{principal}\" is listed twice"));
            }
        }
        let mut seen = BTreeSet::new();
        for extension in &settings.extensions {
            if !EXTENSIONS.contains(&extension.as_str()) {
                return Err(format!(
                    "extension \"{}\" is not an OpenSSH certificate extension (known: {})",
                    extension.escape_debug(),
                    EXTENSIONS.join(", ")
                ));
            }
            if !seen.insert(extension) {
                return Err(format!("extension \"{extension}\" is listed twice"));
            }
        }
        if let Some(command) = &settings.force_command
            && (command.trim().is_empty() || command.chars().any(|c| c == '\0' || c == '\n' || c == '\r'))
        {
            return Err("force_command must be a non-empty command on one line".into());
        }
        if let Some(addresses) = &settings.source_address {
            if addresses.is_empty() {
                return Err("source_address must list at least one address or CIDR range (or be left out)".into());
            }
            if let Some(bad) = addresses.iter().find(|a| !is_address_or_cidr(a)) {
                return Err(format!("source_address \"{}\" is not an IP address or CIDR range", bad.escape_debug()));
            }
        }
        Ok(settings)
    }
}

/// `192.0.2.1`, `192.0.2.0/24`, `2001:db8::/32`.
fn is_address_or_cidr(text: &str) -> bool {
    let (address, bits) = match text.split_once('/') {
        Some((address, bits)) => (address, Some(bits)),
        None => (text, None),
    };
    let Ok(ip) = address.parse::<IpAddr>() else { return false };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    match bits {
        None => true,
        Some(bits) => {
            !bits.is_empty() && bits.bytes().all(|b| b.is_ascii_digit()) && bits.parse::<u32>().is_ok_and(|b| b <= max)
        }
    }
}

/// Parses a client's public key and refuses what is not a strong user key.
/// Messages never quote the input: it may be a private key sent by mistake.
fn parse_public_key(text: &str) -> Result<PublicKey, String> {
    let text = text.trim();
    if text.contains("PRIVATE KEY") {
        return Err("ssh_public_key holds a private key: send only the public key (the .pub line) and keep the \
                    private key to yourself"
            .into());
    }
    if text.len() > MAX_PUBLIC_KEY_LEN {
        return Err("ssh_public_key is too long to be a public key".into());
    }
    if text.contains(['\n', '\r']) {
        return Err("ssh_public_key must be a single line (\"ssh-ed25519 AAAA… comment\")".into());
    }
    if text.split_whitespace().next().is_some_and(|kind| kind.ends_with("-cert-v01@openssh.com")) {
        return Err("ssh_public_key is a certificate: send the public key itself".into());
    }
    let key = PublicKey::from_openssh(text).map_err(|_| {
        "ssh_public_key is not an OpenSSH public key (expected one line like \"ssh-ed25519 AAAA… comment\")".to_owned()
    })?;
    match key.key_data() {
        KeyData::Ed25519(_) | KeyData::Ecdsa(_) => Ok(key),
        KeyData::Rsa(rsa) => {
            let modulus = rsa.n.as_positive_bytes().unwrap_or_default();
            let bits = modulus.first().map_or(0, |top| modulus.len() * 8 - top.leading_zeros() as usize);
            if bits < MIN_RSA_BITS {
                return Err(format!("ssh_public_key is a {bits}-bit RSA key, too weak: {KEY_ADVICE}"));
            }
            Ok(key)
        }
        _ => Err(format!("ssh_public_key is a {} key, which is not accepted: {KEY_ADVICE}", key.algorithm())),
    }
}

/// What the provider records for a grant (stored with it; not secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CertState {
    /// The client's public key, as certified.
    public_key: String,
    /// The certificate in force (OpenSSH one-line form).
    certificate: String,
    key_id: String,
    principals: Vec<String>,
    /// Every certificate issued for the grant, oldest first.
    serials: Vec<u64>,
    /// The current certificate's `valid_before`.
    valid_before: Timestamp,
    /// The latest `valid_before` of any certificate issued for the grant: a
    /// renewal may shorten the deadline while an older certificate lives on.
    latest_valid_before: Timestamp,
    /// The SHA-256 fingerprint of the CA that signed it.
    ca: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    krl_file: Option<PathBuf>,
}

impl CertState {
    fn from_value(resource: &str, state: &serde_json::Value) -> Result<CertState, ProviderError> {
        serde_json::from_value(state.clone())
            .map_err(|_| ProviderError::failed(resource, "the grant's stored SSH certificate record is unreadable"))
    }
}

pub struct SshProvider {
    /// The broker's one CA (`ca = "shared"`), from the store.
    shared: Arc<UserCa>,
    /// Its seed, from which each resource's own CA is derived.
    seed: Zeroizing<[u8; 32]>,
    /// Resources' CAs, derived once each.
    derived: Mutex<HashMap<String, Arc<UserCa>>>,
    revocations: RevocationList,
}

/// A user CA: its key, public half and fingerprint.
struct UserCa {
    key: PrivateKey,
    public: PublicKey,
    fingerprint: Fingerprint,
}

impl UserCa {
    fn from_seed(seed: &[u8; 32], comment: &str) -> Result<UserCa, String> {
        let keypair = ssh_key::private::Ed25519Keypair::from_seed(seed);
        let key = PrivateKey::new(ssh_key::private::KeypairData::Ed25519(keypair), comment)
            .map_err(|_| "building an SSH user CA key failed".to_owned())?;
        let public = PublicKey::new(key.public_key().key_data().clone(), comment);
        Ok(UserCa { fingerprint: public.fingerprint(HashAlg::Sha256), key, public })
    }

    fn line(&self) -> String {
        self.public.to_openssh().unwrap_or_default()
    }
}

/// A resource's own CA seed: HKDF-SHA256 of the broker's CA seed with the
/// resource's name, so that every replica derives the same CA and none is
/// stored, and no resource's CA tells anything of another's.
fn resource_seed(shared: &[u8; 32], resource: &str) -> Result<Zeroizing<[u8; 32]>, String> {
    let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, RESOURCE_CA_SALT);
    let info = [resource.as_bytes()];
    let mut seed = Zeroizing::new([0u8; 32]);
    salt.extract(shared)
        .expand(&info, ring::hkdf::HKDF_SHA256)
        .and_then(|okm| okm.fill(&mut *seed))
        .map_err(|_| "deriving a resource's SSH user CA failed".to_owned())?;
    Ok(seed)
}

const RESOURCE_CA_SALT: &[u8] = b"hourglass ssh user ca per resource v1";

impl SshProvider {
    /// The provider with the user CA `ca` (the store's `ssh_user_ca` key,
    /// the same on every replica) and the revocation list every replica
    /// shares (`record`). `dir` (`DATA/ssh`) gets the CA's public key as
    /// `user_ca.pub`, for admins to copy to their hosts, and may hold the
    /// list an older broker kept there (imported once).
    pub async fn open(ca: &Ed25519Key, record: SharedRecord, dir: &Path) -> Result<Self, String> {
        let seed = ca.seed();
        let shared = UserCa::from_seed(&seed, CA_COMMENT)?;
        let public_path = dir.join(CA_PUBLIC_FILE);
        write_atomic(&public_path, format!("{}\n", shared.line()).as_bytes(), Access::Everyone)
            .map_err(|error| format!("writing {}: {error}", public_path.display()))?;
        // Key ids are revoked for any CA (an empty CA key in the KRL's
        // section): one list serves every resource's hosts.
        let revocations = RevocationList::open(record, Vec::new(), Some(&dir.join(LEGACY_REVOCATIONS_FILE))).await?;
        Ok(SshProvider { shared: Arc::new(shared), seed, derived: Mutex::new(HashMap::new()), revocations })
    }

    /// The CA that signs `resource`'s certificates, as its `ca` says.
    fn ca_of(&self, resource: &str, scope: CaScope) -> Result<Arc<UserCa>, String> {
        if scope == CaScope::Shared {
            return Ok(Arc::clone(&self.shared));
        }
        let mut derived = self.derived.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(ca) = derived.get(resource) {
            return Ok(Arc::clone(ca));
        }
        let seed = resource_seed(&self.seed, resource)?;
        let ca = Arc::new(UserCa::from_seed(&seed, &format!("{CA_COMMENT}:{resource}"))?);
        derived.insert(resource.to_owned(), Arc::clone(&ca));
        Ok(ca)
    }

    /// The user CA an older broker kept in `dir` (`user_ca`, OpenSSH
    /// format), to be moved into the store: certificates it signed, and
    /// hosts that trust it, keep working.
    pub fn legacy_ca(dir: &Path) -> Result<Option<Ed25519Key>, String> {
        let key_path = dir.join(LEGACY_CA_FILE);
        if !key_path.exists() {
            return Ok(None);
        }
        let text = Zeroizing::new(
            std::fs::read_to_string(&key_path)
                .map_err(|error| format!("reading {}: {}", key_path.display(), error.kind()))?,
        );
        let key = PrivateKey::from_openssh(text.as_bytes())
            .map_err(|_| format!("{} is not an OpenSSH private key", key_path.display()))?;
        let keypair = match key.key_data().ed25519() {
            Some(keypair) if !key.is_encrypted() => keypair,
            _ => return Err(format!("{} must be an unencrypted Ed25519 key", key_path.display())),
        };
        let seed = Zeroizing::new(keypair.private.to_bytes());
        Ed25519Key::from_seed(&seed).map(Some).map_err(|error| error.to_string())
    }

    /// Signs a user certificate valid from shortly before `now` until `deadline`.
    fn sign(
        ca: &UserCa,
        public_key: &PublicKey,
        key_id: &str,
        role: &RoleSettings,
        now: Timestamp,
        deadline: Timestamp,
    ) -> Result<(Certificate, u64), String> {
        let now_secs = u64::try_from(now.unix_seconds()).map_err(|_| "the broker's clock is before 1970")?;
        let valid_after = u64::try_from(now.unix_seconds().saturating_sub(CLOCK_SKEW_SECS)).unwrap_or(0);
        let valid_before = u64::try_from(deadline.unix_seconds()).unwrap_or(0);
        if valid_before <= now_secs {
            return Err(format!("the grant's deadline {deadline} has passed"));
        }
        let serial = rand::rngs::OsRng.next_u64().max(1);
        let failed = |error: ssh_key::Error| format!("building the certificate failed: {error}");
        let mut builder = Builder::new_with_random_nonce(
            &mut rand::rngs::OsRng,
            public_key.key_data().clone(),
            valid_after,
            valid_before,
        )
        .map_err(failed)?;
        builder.serial(serial).map_err(failed)?;
        builder.cert_type(CertType::User).map_err(failed)?;
        builder.key_id(key_id).map_err(failed)?;
        for principal in &role.principals {
            builder.valid_principal(principal).map_err(failed)?;
        }
        for extension in &role.extensions {
            builder.extension(extension, "").map_err(failed)?;
        }
        if let Some(command) = &role.force_command {
            builder.critical_option("force-command", command).map_err(failed)?;
        }
        if let Some(addresses) = &role.source_address {
            builder.critical_option("source-address", addresses.join(",")).map_err(failed)?;
        }
        let certificate = builder.sign(&ca.key).map_err(|_| "signing the certificate failed".to_owned())?;
        Ok((certificate, serial))
    }

    /// Checks a freshly signed certificate the way sshd will: signature by
    /// this CA, inside its validity window now, for these principals and key.
    fn verify(
        ca: &UserCa,
        certificate: &Certificate,
        public_key: &PublicKey,
        key_id: &str,
        principals: &[String],
        now: Timestamp,
    ) -> Result<Verification, String> {
        let now_secs = u64::try_from(now.unix_seconds()).unwrap_or(0);
        certificate
            .validate_at(now_secs, [&ca.fingerprint])
            .map_err(|_| "the signed certificate does not validate against the user CA".to_owned())?;
        if certificate.public_key() != public_key.key_data()
            || certificate.key_id() != key_id
            || certificate.valid_principals() != principals
            || certificate.cert_type() != CertType::User
        {
            return Err("the signed certificate does not carry the key, key id and principals asked for".into());
        }
        let mut verification = Verification::new();
        verification.insert(
            "certificate".into(),
            format!("user certificate validates against the user CA {}", ca.fingerprint).into(),
        );
        verification.insert("key_id".into(), key_id.into());
        verification.insert("serial".into(), certificate.serial().into());
        verification.insert("principals".into(), principals.to_vec().into());
        verification.insert("valid_after".into(), unix_timestamp(certificate.valid_after()).to_string().into());
        verification.insert("valid_before".into(), unix_timestamp(certificate.valid_before()).to_string().into());
        verification.insert("extensions".into(), certificate.extensions().keys().cloned().collect::<Vec<_>>().into());
        if !certificate.critical_options().is_empty() {
            verification.insert(
                "critical_options".into(),
                certificate.critical_options().keys().cloned().collect::<Vec<_>>().into(),
            );
        }
        Ok(verification)
    }

    /// Signs, checks and records a certificate for a grant; the KRL is in
    /// the resource's `krl_file` before the certificate leaves the broker.
    async fn certify(
        &self,
        input: &IssueInput<'_>,
        public_key: &PublicKey,
        previous: Option<&CertState>,
    ) -> Result<Issued, String> {
        let settings = Settings::parse(input.resource)?;
        let role = RoleSettings::parse(input.role)?;
        let key_id = key_id(input.grant);
        let ca = self.ca_of(&input.resource.name, settings.ca)?;
        let (certificate, serial) = Self::sign(&ca, public_key, &key_id, &role, input.now, input.grant.expires_at)?;
        let mut verification = Self::verify(&ca, &certificate, public_key, &key_id, &role.principals, input.now)?;
        if let Some(path) = &settings.krl_file {
            let version = self.revocations.register_file(path).await?;
            verification.insert("krl_file".into(), format!("{} (KRL version {version})", path.display()).into());
        }
        let valid_before = unix_timestamp(certificate.valid_before());
        let mut serials = previous.map(|p| p.serials.clone()).unwrap_or_default();
        serials.push(serial);
        let latest_valid_before = previous.map_or(valid_before, |p| p.latest_valid_before.max(valid_before));
        let state = CertState {
            public_key: public_key.to_openssh().map_err(|_| "encoding the public key failed")?,
            certificate: certificate.to_openssh().map_err(|_| "encoding the certificate failed")?,
            key_id,
            principals: role.principals,
            serials,
            valid_before,
            latest_valid_before,
            ca: ca.fingerprint.to_string(),
            krl_file: settings.krl_file,
        };
        let state = serde_json::to_value(&state).map_err(|_| "recording the certificate failed")?;
        // sshd trusts the CA, so a certificate that validates against it
        // works on every target that trusts it: the broker confirms it here.
        Ok(Issued { state, ready: true, verification })
    }
}

/// `hourglass:<grant id>:<owner>`: the same for every certificate of a
/// grant, so that one KRL entry revokes them all.
fn key_id(grant: &Grant) -> String {
    format!("hourglass:{}:{}", grant.id, grant.owner)
}

fn unix_timestamp(secs: u64) -> Timestamp {
    Timestamp::from_unix_millis(i64::try_from(secs).unwrap_or(i64::MAX / 1000).saturating_mul(1000))
}

#[async_trait::async_trait]
impl Provider for SshProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn check(&self, resource: &Resource) -> Result<(), String> {
        Settings::parse(resource)?;
        for role in resource.roles.values() {
            RoleSettings::parse(role)?;
        }
        Ok(())
    }

    fn material(&self) -> MaterialKind {
        MaterialKind::SshPublicKey
    }

    fn check_material(&self, material: Option<&ClientMaterial>) -> Result<(), String> {
        check_material_present(MaterialKind::SshPublicKey, material)?;
        let key = material.and_then(|m| m.ssh_public_key.as_deref()).unwrap_or_default();
        parse_public_key(key).map(drop)
    }

    fn issues_in_broker(&self) -> bool {
        true
    }

    async fn issue(&self, input: IssueInput<'_>) -> Result<Issued, ProviderError> {
        let failed = |message: String| ProviderError::Failed { resource: input.resource.name.clone(), message };
        let text = input
            .material
            .and_then(|m| m.ssh_public_key.as_deref())
            .ok_or_else(|| failed("the request carries no SSH public key".into()))?;
        let public_key = parse_public_key(text).map_err(failed)?;
        self.certify(&input, &public_key, None).await.map_err(failed)
    }

    async fn renew(&self, input: IssueInput<'_>, state: &serde_json::Value) -> Result<Issued, ProviderError> {
        let failed = |message: String| ProviderError::Failed { resource: input.resource.name.clone(), message };
        let previous = CertState::from_value(&input.resource.name, state)?;
        let public_key = PublicKey::from_openssh(&previous.public_key)
            .map_err(|_| failed("the grant's stored public key is unreadable".into()))?;
        let mut issued = self.certify(&input, &public_key, Some(&previous)).await.map_err(failed)?;
        if let Some(serial) = previous.serials.last() {
            issued.verification.insert("previous_serial".into(), (*serial).into());
        }
        Ok(issued)
    }

    async fn revoke(
        &self,
        grant: &Grant,
        state: &serde_json::Value,
        now: Timestamp,
    ) -> Result<Verification, ProviderError> {
        let mut verification = Verification::new();
        if state.is_null() {
            // Issue failed or never ran: no certificate left the broker.
            verification.insert("certificate".into(), "none was issued".into());
            return Ok(verification);
        }
        let record = CertState::from_value(&grant.resource, state)?;
        if now >= record.latest_valid_before {
            // sshd refuses a certificate past valid_before by itself.
            verification.insert(
                "certificate".into(),
                format!("past valid_before {}: refused by sshd without a KRL entry", record.latest_valid_before).into(),
            );
            verification.insert("key_id".into(), record.key_id.into());
            return Ok(verification);
        }
        let valid_before = u64::try_from(record.latest_valid_before.unix_seconds()).unwrap_or(0);
        self.revocations
            .revoke(&record.key_id, valid_before, record.krl_file.as_deref(), now)
            .await
            .map_err(|message| ProviderError::Failed { resource: grant.resource.clone(), message })
    }

    async fn credential(&self, input: IssueInput<'_>, state: &serde_json::Value) -> Result<Credential, ProviderError> {
        let failed = |message: String| ProviderError::Failed { resource: input.resource.name.clone(), message };
        let record = CertState::from_value(&input.resource.name, state)?;
        let settings = Settings::parse(input.resource).map_err(failed)?;
        let grant = input.grant;
        let prefix = settings.env_prefix.unwrap_or_else(|| env_prefix(&input.resource.name));
        let mut env = Vec::new();
        if let Some(host) = settings.host {
            env.push(EnvVar { name: format!("{prefix}_SSH_HOST"), value: host, secret: false });
            let port = settings.port.unwrap_or(22).to_string();
            env.push(EnvVar { name: format!("{prefix}_SSH_PORT"), value: port, secret: false });
        }
        if let Some(user) = record.principals.first() {
            env.push(EnvVar { name: format!("{prefix}_SSH_USER"), value: user.clone(), secret: false });
        }
        Ok(Credential {
            grant_id: grant.id.clone(),
            resource: grant.resource.clone(),
            role: grant.role.clone(),
            provider: KIND.into(),
            expires_at: grant.expires_at,
            valid_until: None,
            env,
            ssh_certificate: Some(record.certificate),
            client_secret: Some(ClientSecret::SshPrivateKey),
        })
    }

    async fn document(&self, name: &str, resource: Option<&Resource>) -> Option<Document> {
        match name {
            // A resource's hosts trust its CA (`?resource=NAME`); without a
            // resource, the shared one (`ca = "shared"`).
            "ca.pub" => {
                let ca = match resource {
                    Some(resource) => self.ca_of(&resource.name, Settings::parse(resource).ok()?.ca).ok()?,
                    None => Arc::clone(&self.shared),
                };
                Some(Document {
                    content_type: "text/plain; charset=utf-8",
                    body: format!("{}\n", ca.line()).into_bytes(),
                })
            }
            "krl" => {
                let (krl, _) = self.revocations.krl().await;
                Some(Document { content_type: "application/octet-stream", body: krl.as_ref().clone() })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
