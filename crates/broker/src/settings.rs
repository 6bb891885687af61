//! The `[broker]` table of `hourglass.toml`: how this broker runs, as
//! opposed to the policy it enforces. Read at start; changes need a restart
//! (the TLS certificate files are read again on SIGHUP).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hourglass_core::Duration;
use serde::Deserialize;

use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::notify::settings::ChannelSettings;
use crate::siem::settings::SiemSettings;
use crate::store::{DEFAULT_LEASE, OpenOptions, StoreLocation};
use crate::tls::TlsFiles;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7300";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSettings {
    pub listen: Option<SocketAddr>,
    /// The certificate chain the broker serves HTTPS with (PEM, leaf first;
    /// relative: to the policy directory). Read again on SIGHUP.
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address: only behind a proxy that
    /// terminates TLS. Without it, such a listen address needs `tls_cert`.
    #[serde(default)]
    pub insecure_http: bool,
    /// How clients reach this broker; also the `iss` of the tokens it signs.
    pub public_url: Option<String>,
    /// Where the store and keys live (relative paths: to the policy directory).
    pub data_dir: Option<PathBuf>,
    /// The store: `sqlite:PATH` (the default: `sqlite:DATA/hourglass.db`,
    /// one broker) or a PostgreSQL URL that several replicas share
    /// (`postgres://hourglass@db.acme.example/hourglass?sslmode=verify-full`).
    /// `HOURGLASS_STORE` in the environment overrides it (a URL with a
    /// password belongs there, or in `store_password_file`, not in policy).
    pub store: Option<String>,
    /// A file holding the store's PostgreSQL password, when the URL has none.
    pub store_password_file: Option<PathBuf>,
    /// The store key (32 random bytes, base64): seals the signing keys the
    /// store holds, so that the store and its backups hold none in the
    /// clear. Every replica needs the same file; a broker on its own
    /// SQLite store makes `DATA/keys/store.key` on first start.
    pub store_key_file: Option<PathBuf>,
    /// How long a session or grant-token signing key signs before its
    /// successor takes over (default 30d). The successor is published a
    /// day ahead; what a key signed verifies for as long as a session or
    /// grant can last after it stops signing.
    pub key_rotation: Option<Duration>,
    /// How long a replica's claimed work stays its own after it last
    /// renewed its lease (`1500ms`, `2s`; default 1500ms): a replica that
    /// dies holding work has it taken over about this soon. Renewed three
    /// times per lease.
    pub replica_lease: Option<String>,
    /// The key that signs the audit log's checkpoints (default
    /// `DATA/keys/audit-checkpoint.pem`, made if missing); never in the store.
    pub audit_checkpoint_key: Option<PathBuf>,
    /// Where the checkpoints are appended (default
    /// `DATA/audit-checkpoints.jsonl`): somewhere whoever can write to the
    /// store cannot, ideally.
    pub audit_checkpoints: Option<PathBuf>,
    /// Longest a provider may take to issue, renew or revoke.
    pub provider_timeout: Option<Duration>,
    /// How people log in: the OpenID Connect issuer whose ID tokens the
    /// broker exchanges for its own sessions (`POST /v1/auth/token`).
    pub login: Option<LoginSettings>,
    /// Further issuers whose tokens the broker accepts (a second IdP, a CI
    /// pipeline's OIDC issuer).
    #[serde(default)]
    pub issuers: Vec<IssuerSettings>,
    /// What one principal may do at once (`[broker.limits]`).
    #[serde(default)]
    pub limits: LimitSettings,
    /// Where notifications go (`[broker.channels.NAME]`, named by policy's
    /// `notify` and `notify_requester`): see `notify::channels`.
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelSettings>,
    /// Where the audit log streams as it grows (`[broker.siem.NAME]`): see
    /// `siem::settings`.
    #[serde(default)]
    pub siem: BTreeMap<String, SiemSettings>,
}

/// `[broker.limits]`: per-principal limits, so that one principal cannot
/// take the broker from the others. The defaults are far above what a
/// person or a pipeline does; a principal over one gets a 429 naming it.
///
/// ```toml
/// [broker.limits]
/// requests_per_second = 20   # sustained calls per principal
/// request_burst = 60         # calls at once after a quiet spell
/// pending_requests = 20      # requests waiting for approval
/// event_streams = 16         # open GET /v1/events
/// auth_failures_per_minute = 60   # refused tokens per client address
/// connections = 16384        # open connections, all clients together
/// header_read_seconds = 10   # to send a request's headers
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    pub requests_per_second: u32,
    pub request_burst: u32,
    pub pending_requests: u32,
    pub event_streams: u32,
    /// Tokens that fail to verify, per client address and minute; past it,
    /// that address's tokens not verified before are refused unchecked.
    pub auth_failures_per_minute: u32,
    pub connections: u32,
    pub header_read_seconds: u32,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            requests_per_second: 20,
            request_burst: 60,
            pending_requests: 20,
            event_streams: 16,
            auth_failures_per_minute: 60,
            connections: 16_384,
            header_read_seconds: 10,
        }
    }
}

impl LimitSettings {
    /// Every limit must admit something: a zero would lock everyone out.
    fn check(&self) -> Result<()> {
        let named = [
            ("requests_per_second", self.requests_per_second),
            ("request_burst", self.request_burst),
            ("pending_requests", self.pending_requests),
            ("event_streams", self.event_streams),
            ("auth_failures_per_minute", self.auth_failures_per_minute),
            ("connections", self.connections),
            ("header_read_seconds", self.header_read_seconds),
        ];
        match named.iter().find(|(_, value)| *value == 0) {
            Some((name, _)) => Err(Error::Config(format!("[broker.limits]: {name} must be at least 1"))),
            None => Ok(()),
        }
    }
}

/// `[broker.login]`: the OpenID Connect issuer of this broker's people.
///
/// ```toml
/// [broker.login]
/// issuer = "https://login.acme.example"
/// client_id = "hourglass"
/// session_lifetime = "1h"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginSettings {
    pub issuer: String,
    /// The public (native) client registered at the issuer for Hourglass;
    /// also the audience of the ID tokens the broker accepts.
    pub client_id: String,
    /// The client registered for the broker's approval page (a web client:
    /// public, PKCE, redirect `PUBLIC_URL/approve/callback`). With it the
    /// broker serves `/approve/REQUEST-ID` and links messages to it.
    pub web_client_id: Option<String>,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// How long a broker session lasts before the client renews it.
    #[serde(default = "default_session_lifetime")]
    pub session_lifetime: Duration,
    #[serde(default = "default_id_claim")]
    pub id_claim: String,
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
}

/// Whose tokens an issuer signs: people's, or machines' (CI pipelines).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssuerKind {
    #[default]
    Person,
    Machine,
}

/// `[[broker.issuers]]`: an identity provider whose tokens the broker accepts.
///
/// ```toml
/// [[broker.issuers]]              # a CI pipeline's OIDC tokens
/// issuer = "https://token.actions.githubusercontent.com"
/// audience = "hourglass"
/// kind = "machine"
/// id_claim = "sub"
/// namespace = "github"            # principals: github:repo:acme/deploy:ref:…
/// require = { repository_owner = "acme", ref = ["refs/heads/main", "refs/tags/v*"] }
/// groups_from = [{ claim = "repository", value = "acme/*", group = "ci" }]
/// attributes = ["repository", "ref", "environment"]   # principal.repository in Cedar
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSettings {
    pub issuer: String,
    #[serde(default = "default_audience")]
    pub audience: String,
    /// A JWKS file with the issuer's public keys (relative: to the policy
    /// directory). Without it the keys come from the issuer's OpenID
    /// Connect discovery document and follow its key rotation.
    pub jwks_file: Option<PathBuf>,
    #[serde(default)]
    pub kind: IssuerKind,
    #[serde(default = "default_id_claim")]
    pub id_claim: String,
    /// A claim with more groups (an array or one string); empty for none.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Groups every principal of this issuer is in (e.g. `["ci"]`).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Claims a token must carry, each with the values accepted: one or a
    /// list, exact or a glob (`*` matches any run of characters). A token
    /// that misses one is refused. A machine issuer needs at least one: an
    /// issuer such as GitHub's signs for every repository in the world.
    #[serde(default)]
    pub require: BTreeMap<String, ClaimValues>,
    /// Groups given by a claim's value.
    #[serde(default)]
    pub groups_from: Vec<GroupFromClaim>,
    /// Claims that policies read as the principal's attributes.
    #[serde(default)]
    pub attributes: Vec<String>,
    /// What this issuer's principal ids start with (`NAMESPACE:id`), so
    /// that no issuer can name another's principals. Default: none for a
    /// people's issuer, the issuer's host for a machine issuer; two
    /// issuers may not share one.
    pub namespace: Option<String>,
}

/// The values a required claim may have: one, or any of a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ClaimValues {
    One(String),
    Any(Vec<String>),
}

impl ClaimValues {
    pub fn patterns(&self) -> &[String] {
        match self {
            ClaimValues::One(one) => std::slice::from_ref(one),
            ClaimValues::Any(many) => many,
        }
    }
}

/// `{ claim = "repository", value = "acme/*", group = "ci" }`: principals
/// whose token's `claim` matches `value` (exact or a glob) are in `group`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupFromClaim {
    pub claim: String,
    pub value: String,
    pub group: String,
}

impl IssuerSettings {
    /// What this issuer's principal ids are prefixed with ("" for none).
    pub fn namespace(&self) -> String {
        match (&self.namespace, self.kind) {
            (Some(namespace), _) => namespace.trim().to_owned(),
            (None, IssuerKind::Person) => String::new(),
            (None, IssuerKind::Machine) => reqwest::Url::parse(&self.issuer)
                .ok()
                .and_then(|url| url.host_str().map(str::to_owned))
                .unwrap_or_else(|| self.issuer.clone()),
        }
    }

    fn check(&self) -> Result<()> {
        let named = |what: &str| format!("[[broker.issuers]] {}: {what}", self.issuer);
        if self.kind == IssuerKind::Machine && self.require.is_empty() {
            return Err(Error::Config(named(
                "a machine issuer needs `require` (e.g. require = { repository_owner = \"acme\" }): \
                 without it, every pipeline this issuer signs for (any repository on GitHub) gets a session",
            )));
        }
        if let Some((claim, _)) = self.require.iter().find(|(_, values)| values.patterns().is_empty()) {
            return Err(Error::Config(named(&format!("require.{claim} lists no value: nothing would be accepted"))));
        }
        if let Some(rule) = self.groups_from.iter().find(|rule| rule.claim.is_empty() || rule.group.trim().is_empty()) {
            return Err(Error::Config(named(&format!(
                "groups_from needs a claim and a group ({{ claim = {:?}, group = {:?} }})",
                rule.claim, rule.group
            ))));
        }
        if self.namespace().contains(':') {
            return Err(Error::Config(named("namespace may not contain ':' (it ends at the first one)")));
        }
        Ok(())
    }
}

fn default_audience() -> String {
    "hourglass".into()
}

fn default_id_claim() -> String {
    "email".into()
}

fn default_groups_claim() -> String {
    "groups".into()
}

fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile", "groups", "offline_access"].map(String::from).to_vec()
}

/// An hour: a client renews its session silently (a refresh token, a new
/// exchange), and each renewal reads the person's groups from the identity
/// provider again, so a group taken away stops counting within the hour.
pub const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_hours(1);

fn default_session_lifetime() -> Duration {
    DEFAULT_SESSION_LIFETIME
}

impl BrokerSettings {
    pub fn from_table(table: &toml::Table) -> Result<Self> {
        let settings: BrokerSettings = table
            .clone()
            .try_into()
            .map_err(|error: toml::de::Error| Error::Config(format!("[broker]: {}", error.message())))?;
        settings.limits.check()?;
        for issuer in &settings.issuers {
            issuer.check()?;
        }
        Ok(settings)
    }

    /// `tls_cert` and `tls_key` (relative: to `policy_dir`); both or neither.
    pub fn tls_files(&self, policy_dir: &Path) -> Result<Option<TlsFiles>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: BrokerSettings::resolve(policy_dir, cert),
                key: BrokerSettings::resolve(policy_dir, key),
            })),
            (None, None) => Ok(None),
            (Some(_), None) => Err(Error::Config("[broker]: tls_cert is set but tls_key is not".into())),
            (None, Some(_)) => Err(Error::Config("[broker]: tls_key is set but tls_cert is not".into())),
        }
    }

    /// Where the store is: `HOURGLASS_STORE` if set, else `store`, else
    /// `DATA/hourglass.db`; relative SQLite paths are taken from the
    /// policy directory.
    pub fn store_location(&self, policy_dir: &Path, data_dir: &Path) -> Result<StoreLocation> {
        let from_env = std::env::var("HOURGLASS_STORE").ok().filter(|text| !text.trim().is_empty());
        match from_env.as_deref().or(self.store.as_deref()) {
            Some(text) => StoreLocation::parse(text, policy_dir),
            None => Ok(StoreLocation::sqlite(data_dir.join("hourglass.db"))),
        }
    }

    /// How the store is opened: the replica lease, and the PostgreSQL
    /// password from `store_password_file`.
    pub fn store_options(&self, policy_dir: &Path) -> Result<OpenOptions> {
        let lease = match &self.replica_lease {
            Some(text) => parse_lease(text)?,
            None => DEFAULT_LEASE,
        };
        let password = match &self.store_password_file {
            Some(path) => {
                let path = BrokerSettings::resolve(policy_dir, path);
                let text = std::fs::read_to_string(&path).map_err(|error| {
                    Error::Config(format!("store_password_file {}: {}", path.display(), error.kind()))
                })?;
                Some(std::sync::Arc::new(Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_owned())))
            }
            None => None,
        };
        Ok(OpenOptions { lease, password })
    }

    /// The checkpoint key and file (see [`crate::checkpoints`]).
    pub fn checkpoint_files(&self, policy_dir: &Path, data_dir: &Path) -> (PathBuf, PathBuf) {
        let key = self.audit_checkpoint_key.as_ref().map_or_else(
            || data_dir.join("keys/audit-checkpoint.pem"),
            |path| BrokerSettings::resolve(policy_dir, path),
        );
        let file = self
            .audit_checkpoints
            .as_ref()
            .map_or_else(|| data_dir.join("audit-checkpoints.jsonl"), |path| BrokerSettings::resolve(policy_dir, path));
        (key, file)
    }

    /// `path` as given, or relative to `base` when it is relative.
    pub fn resolve(base: &Path, path: &Path) -> PathBuf {
        if path.is_absolute() { path.to_path_buf() } else { base.join(path) }
    }
}

/// `replica_lease`: `1500ms` or `2s`, from 500 ms to a minute.
fn parse_lease(text: &str) -> Result<std::time::Duration> {
    let text = text.trim();
    let millis = if let Some(number) = text.strip_suffix("ms") {
        number.parse::<u64>().ok()
    } else if let Some(number) = text.strip_suffix('s') {
        number.parse::<u64>().ok().map(|seconds| seconds.saturating_mul(1000))
    } else {
        None
    };
    match millis {
        Some(millis) if (500..=60_000).contains(&millis) => Ok(std::time::Duration::from_millis(millis)),
        Some(_) => Err(Error::Config(format!("[broker]: replica_lease \"{text}\" must be from 500ms to 60s"))),
        None => Err(Error::Config(format!(
            "[broker]: replica_lease \"{text}\" is not a duration: write it like 1500ms or 2s"
        ))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

    use super::*;

    fn settings(text: &str) -> Result<BrokerSettings> {
        BrokerSettings::from_table(&text.parse::<toml::Table>().expect("TOML"))
    }

    #[test]
    fn a_machine_issuer_must_say_which_of_its_tokens_it_accepts() {
        let github = "[[issuers]]\nissuer = \"https://token.actions.githubusercontent.com\"\nkind = \"machine\"\nid_claim = \"sub\"\n";
        let error = settings(github).unwrap_err().to_string();
        assert!(error.contains("needs `require`") && error.contains("any repository"), "{error}");
        let scoped = settings(&format!("{github}require = {{ repository_owner = \"acme\" }}\n")).unwrap();
        assert_eq!(
            scoped.issuers[0].namespace(),
            "token.actions.githubusercontent.com",
            "a machine's default namespace"
        );
        let error = settings(&format!("{github}require = {{ repository_owner = [] }}\n")).unwrap_err().to_string();
        assert!(error.contains("require.repository_owner lists no value"), "{error}");
        let error =
            settings(&format!("{github}require = {{ ref = \"x\" }}\nnamespace = \"gh:a\"\n")).unwrap_err().to_string();
        assert!(error.contains("may not contain ':'"), "{error}");
    }

    #[test]
    fn limits_default_when_left_out_and_are_set_one_by_one() {
        assert_eq!(settings("").unwrap().limits, LimitSettings::default(), "no [broker.limits]: the defaults");
        let limits = settings("[limits]\nrequests_per_second = 500\n").unwrap().limits;
        assert_eq!(limits.requests_per_second, 500, "the limit set");
        assert_eq!(limits.request_burst, LimitSettings::default().request_burst, "the others keep their defaults");
    }

    #[test]
    fn store_defaults_to_sqlite_in_the_data_directory_and_reads_a_postgres_url() {
        let dir = Path::new("/etc/hourglass");
        let data = Path::new("/var/lib/hourglass");
        let default = settings("").unwrap().store_location(dir, data).unwrap();
        assert_eq!(format!("{default:?}"), "sqlite:/var/lib/hourglass/hourglass.db");
        let relative = settings("store = \"sqlite:db/h.db\"").unwrap().store_location(dir, data).unwrap();
        assert_eq!(format!("{relative:?}"), "sqlite:/etc/hourglass/db/h.db", "relative to the policy directory");
        let shared = settings("store = \"postgres://hg:hunter2@db/hourglass\"").unwrap().store_location(dir, data);
        assert_eq!(format!("{:?}", shared.unwrap()), "postgres:<connection string>", "never shown");
        let bad = settings("store = \"mysql://hg:hunter2@db\"").unwrap().store_location(dir, data).unwrap_err();
        assert!(bad.to_string().contains("sqlite:PATH") && !bad.to_string().contains("hunter2"), "{bad}");
    }

    #[test]
    fn replica_lease_takes_ms_or_seconds_within_bounds() {
        assert_eq!(parse_lease("1500ms").unwrap(), std::time::Duration::from_millis(1500));
        assert_eq!(parse_lease("2s").unwrap(), std::time::Duration::from_secs(2));
        assert!(parse_lease("100ms").unwrap_err().to_string().contains("from 500ms to 60s"));
        assert!(parse_lease("2").unwrap_err().to_string().contains("like 1500ms or 2s"));
    }

    #[test]
    fn limits_refuse_zero_and_unknown_keys() {
        let zero = settings("[limits]\nevent_streams = 0\n").expect_err("a zero limit locks everyone out");
        assert!(zero.to_string().contains("event_streams must be at least 1"), "names the key: {zero}");
        let typo = settings("[limits]\npending = 3\n").expect_err("an unknown key is refused");
        assert!(typo.to_string().contains("pending"), "names the key: {typo}");
    }
}
