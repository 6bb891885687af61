//! AWS credentials and the standard credential chain the broker finds its
//! own identity with.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::endpoints::Endpoints;
use crate::error::{Error, Result, with_causes};
use crate::query::sensitive;
use crate::sts::{AssumeRole, Sts};

/// An access key, with its session token and expiry when temporary.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Zeroizing<String>,
    pub session_token: Option<Zeroizing<String>>,
    pub expiration: Option<OffsetDateTime>,
}

impl Credentials {
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Credentials {
        Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: Zeroizing::new(secret_access_key.into()),
            session_token: session_token.map(Zeroizing::new),
            expiration: None,
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// The environment the chain reads, as a value: tests fill one in rather
/// than set process-wide variables, which would race between tests. Only
/// `AWS_*` variables and the home directory are kept; values are zeroized
/// on drop, as `AWS_SECRET_ACCESS_KEY` is one of them.
#[derive(Clone, Default)]
pub struct Env {
    vars: HashMap<String, Zeroizing<String>>,
}

impl Env {
    /// A snapshot of this process's environment.
    pub fn process() -> Env {
        Env::from_vars(std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))))
    }

    pub fn from_vars<I, K, V>(vars: I) -> Env
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let vars = vars
            .into_iter()
            .map(|(k, v)| (k.into(), Zeroizing::new(v.into())))
            .filter(|(k, _)| k.starts_with("AWS_") || k == "HOME" || k == "USERPROFILE")
            .collect();
        Env { vars }
    }

    /// A variable's value; set but empty counts as unset, as in the SDKs.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(|v| v.as_str()).filter(|v| !v.is_empty())
    }

    fn home(&self) -> Option<PathBuf> {
        self.get("HOME").or_else(|| self.get("USERPROFILE")).map(PathBuf::from)
    }

    /// A path from `var`, else `default` under the home directory; `~/`
    /// expanded as the SDKs do.
    fn path(&self, var: &str, default: &str) -> Option<PathBuf> {
        match self.get(var) {
            Some(p) => match (p.strip_prefix("~/"), self.home()) {
                (Some(rest), Some(home)) => Some(home.join(rest)),
                _ => Some(PathBuf::from(p)),
            },
            None => self.home().map(|home| home.join(default)),
        }
    }
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.vars.keys()).finish()
    }
}

/// Where the chain found its credentials, for logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    Fixed,
    Environment,
    WebIdentity { role_arn: String },
    Profile { name: String },
    ProfileRole { name: String, role_arn: String },
    Container,
    InstanceMetadata { role: String },
}

impl fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialSource::Fixed => write!(f, "fixed credentials"),
            CredentialSource::Environment => write!(f, "environment (AWS_ACCESS_KEY_ID)"),
            CredentialSource::WebIdentity { role_arn } => write!(f, "web identity for {role_arn}"),
            CredentialSource::Profile { name } => write!(f, "profile {name:?}"),
            CredentialSource::ProfileRole { name, role_arn } => {
                write!(f, "profile {name:?} assuming {role_arn}")
            }
            CredentialSource::Container => write!(f, "container credentials endpoint"),
            CredentialSource::InstanceMetadata { role } => {
                write!(f, "ec2 instance metadata (role {role})")
            }
        }
    }
}

/// Temporary credentials are renewed this long before they expire, and
/// static ones re-read this often, so a rotated file is picked up.
const REFRESH_MARGIN: time::Duration = time::Duration::minutes(5);
/// After a failed refresh, still-valid credentials are used this long
/// before the next try.
const RETRY_AFTER_FAILURE: time::Duration = time::Duration::seconds(30);
const IMDS_TOKEN_TIMEOUT: Duration = Duration::from_secs(1);
const LOCAL_HTTP_TIMEOUT: Duration = Duration::from_secs(3);
const ECS_HOST: &str = "http://169.254.170.2";

/// The broker's own AWS identity: fixed, or found through the standard
/// chain and cached.
pub struct CredentialChain {
    provider: Provider,
    cache: tokio::sync::Mutex<Option<Cached>>,
    source: std::sync::Mutex<Option<CredentialSource>>,
}

enum Provider {
    Fixed(Credentials),
    Chain(Box<Chain>),
}

struct Cached {
    credentials: Credentials,
    next_check: OffsetDateTime,
}

impl CredentialChain {
    /// The chain, reading this process's environment.
    pub fn new(http: reqwest::Client, endpoints: Endpoints) -> CredentialChain {
        CredentialChain::with_env(http, endpoints, Env::process())
    }

    pub fn with_env(http: reqwest::Client, endpoints: Endpoints, env: Env) -> CredentialChain {
        let sts = Sts::new(http.clone(), endpoints);
        CredentialChain {
            provider: Provider::Chain(Box::new(Chain { http, env, sts })),
            cache: tokio::sync::Mutex::new(None),
            source: std::sync::Mutex::new(None),
        }
    }

    pub fn fixed(credentials: Credentials) -> CredentialChain {
        CredentialChain {
            provider: Provider::Fixed(credentials),
            cache: tokio::sync::Mutex::new(None),
            source: std::sync::Mutex::new(Some(CredentialSource::Fixed)),
        }
    }

    /// Where the current credentials came from; `None` before the first
    /// successful resolution.
    pub fn source(&self) -> Option<CredentialSource> {
        match self.source.lock() {
            Ok(source) => source.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Current credentials. Concurrent callers wait for one refresh (the
    /// lock is held across it) rather than each calling STS or IMDS.
    pub async fn credentials(&self) -> Result<Credentials> {
        let chain = match &self.provider {
            Provider::Fixed(credentials) => return Ok(credentials.clone()),
            Provider::Chain(chain) => chain,
        };
        let mut cache = self.cache.lock().await;
        let now = OffsetDateTime::now_utc();
        if let Some(cached) = cache.as_ref()
            && now < cached.next_check
        {
            return Ok(cached.credentials.clone());
        }
        match chain.resolve(now).await {
            Ok((credentials, source)) => {
                let mut current = match self.source.lock() {
                    Ok(guard) => guard,
                    Err(poisoned) => poisoned.into_inner(),
                };
                if current.as_ref() != Some(&source) {
                    tracing::info!(%source, access_key_id = %credentials.access_key_id, "aws credentials found");
                }
                *current = Some(source);
                let next_check = match credentials.expiration {
                    Some(expiration) => expiration - REFRESH_MARGIN,
                    None => now + REFRESH_MARGIN,
                };
                *cache = Some(Cached { credentials: credentials.clone(), next_check });
                Ok(credentials)
            }
            // A transient failure (a file being rewritten, STS briefly
            // down) should not fail calls while the credentials in hand
            // still work.
            Err(error) => match cache.as_mut() {
                Some(cached) if cached.credentials.expiration.is_none_or(|e| now < e) => {
                    tracing::warn!(%error, "refreshing aws credentials failed; using the current ones");
                    cached.next_check = now + RETRY_AFTER_FAILURE;
                    Ok(cached.credentials.clone())
                }
                _ => Err(error),
            },
        }
    }
}

struct Chain {
    http: reqwest::Client,
    env: Env,
    sts: Sts,
}

fn source_error(source_name: impl Into<String>, detail: impl Into<String>) -> Error {
    Error::CredentialSource { source_name: source_name.into(), detail: detail.into() }
}

type Found = Option<(Credentials, CredentialSource)>;

impl Chain {
    /// The first configured source wins; a configured but broken one is an
    /// error rather than a reason to try the next, which would silently
    /// give the broker another identity.
    async fn resolve(&self, now: OffsetDateTime) -> Result<(Credentials, CredentialSource)> {
        if let Some(found) = self.environment()? {
            return Ok(found);
        }
        if let Some(found) = self.web_identity_env(now).await? {
            return Ok(found);
        }
        if let Some(found) = self.profile(now).await? {
            return Ok(found);
        }
        if let Some(found) = self.container().await? {
            return Ok(found);
        }
        match self.instance_metadata().await? {
            Ok(found) => Ok(found),
            Err(why_not) => Err(Error::NoCredentials(format!(
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_WEB_IDENTITY_TOKEN_FILE and \
                 AWS_ROLE_ARN, a profile in the shared credentials or config file, or \
                 AWS_CONTAINER_CREDENTIALS_RELATIVE_URI; {why_not}"
            ))),
        }
    }

    fn environment(&self) -> Result<Found> {
        let env = &self.env;
        match (env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")) {
            (None, None) => Ok(None),
            (Some(id), Some(secret)) => Ok(Some((
                Credentials::new(id, secret, env.get("AWS_SESSION_TOKEN").map(str::to_owned)),
                CredentialSource::Environment,
            ))),
            (Some(_), None) => {
                Err(source_error("environment", "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"))
            }
            (None, Some(_)) => {
                Err(source_error("environment", "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not"))
            }
        }
    }

    async fn web_identity_env(&self, now: OffsetDateTime) -> Result<Found> {
        let Some(token_file) = self.env.get("AWS_WEB_IDENTITY_TOKEN_FILE") else {
            return Ok(None);
        };
        let name = "web identity (AWS_WEB_IDENTITY_TOKEN_FILE)";
        let role_arn = self
            .env
            .get("AWS_ROLE_ARN")
            .ok_or_else(|| source_error(name, "AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not"))?;
        let session = self.env.get("AWS_ROLE_SESSION_NAME");
        let credentials = self.web_identity(name, Path::new(token_file), role_arn, session, now).await?;
        let source = CredentialSource::WebIdentity { role_arn: role_arn.to_owned() };
        Ok(Some((credentials, source)))
    }

    /// The token file is read at each refresh: Kubernetes rotates it.
    async fn web_identity(
        &self,
        source_name: &str,
        token_file: &Path,
        role_arn: &str,
        session_name: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Credentials> {
        let token = Zeroizing::new(tokio::fs::read_to_string(token_file).await.map_err(|e| {
            source_error(source_name, format!("cannot read the token file {}: {e}", token_file.display()))
        })?);
        if token.trim().is_empty() {
            let detail = format!("the token file {} is empty", token_file.display());
            return Err(source_error(source_name, detail));
        }
        let session = session_name.map(str::to_owned).unwrap_or_else(|| default_session_name(now));
        self.sts
            .assume_role_with_web_identity(role_arn, &session, token.trim(), None)
            .await
            .map(|assumed| assumed.credentials)
            .map_err(|error| Error::CredentialCall { source_name: source_name.to_owned(), error: Box::new(error) })
    }

    async fn profile(&self, now: OffsetDateTime) -> Result<Found> {
        let explicit = self.env.get("AWS_PROFILE");
        let name = explicit.unwrap_or("default");
        let credentials_path = self.env.path("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
        let config_path = self.env.path("AWS_CONFIG_FILE", ".aws/config");
        let files = SharedFiles {
            credentials: read_profiles(credentials_path.as_deref(), false).await?,
            config: read_profiles(config_path.as_deref(), true).await?,
        };
        let source_name = format!("profile {name:?}");
        let Some(profile) = files.profile(name) else {
            return match explicit {
                // A profile asked for by name and missing is a mistake to
                // report, not a reason to use some other identity.
                Some(_) => Err(source_error(
                    source_name,
                    format!(
                        "not found in {} or {}",
                        display(credentials_path.as_deref()),
                        display(config_path.as_deref())
                    ),
                )),
                None => Ok(None),
            };
        };
        let get = |key: &str| profile.get(key).map(|v| v.as_str()).filter(|v| !v.is_empty());

        if let Some(role_arn) = get("role_arn") {
            let source = CredentialSource::ProfileRole { name: name.to_owned(), role_arn: role_arn.to_owned() };
            let session = get("role_session_name");
            if let Some(token_file) = get("web_identity_token_file") {
                let credentials =
                    self.web_identity(&source_name, Path::new(token_file), role_arn, session, now).await?;
                return Ok(Some((credentials, source)));
            }
            if get("mfa_serial").is_some() {
                return Err(source_error(
                    source_name,
                    "mfa_serial is not supported (the broker cannot prompt for a code)",
                ));
            }
            let Some(source_profile) = get("source_profile") else {
                return Err(source_error(
                    source_name,
                    "role_arn needs source_profile or web_identity_token_file (credential_source is not supported)",
                ));
            };
            let caller = files
                .profile(source_profile)
                .ok_or_else(|| source_error(&source_name, format!("source_profile {source_profile:?} not found")))?;
            if caller.contains_key("role_arn") && source_profile != name {
                return Err(source_error(
                    source_name,
                    format!(
                        "source_profile {source_profile:?} itself assumes a role; chained role profiles are not supported"
                    ),
                ));
            }
            let caller = static_keys(&caller)
                .map_err(|detail| source_error(&source_name, format!("source_profile {source_profile:?}: {detail}")))?
                .ok_or_else(|| {
                    source_error(&source_name, format!("source_profile {source_profile:?} has no aws_access_key_id"))
                })?;
            let mut request =
                AssumeRole::new(role_arn, session.map_or_else(|| default_session_name(now), str::to_owned));
            if let Some(duration) = get("duration_seconds") {
                request.duration_seconds =
                    duration.parse().map_err(|_| source_error(&source_name, "duration_seconds is not a number"))?;
            }
            request.external_id = get("external_id").map(str::to_owned);
            let assumed = self
                .sts
                .assume_role(&caller, &request)
                .await
                .map_err(|error| Error::CredentialCall { source_name: source_name.clone(), error: Box::new(error) })?;
            return Ok(Some((assumed.credentials, source)));
        }
        if let Some(credentials) = static_keys(&profile).map_err(|d| source_error(&source_name, d))? {
            return Ok(Some((credentials, CredentialSource::Profile { name: name.to_owned() })));
        }
        for unsupported in ["credential_process", "sso_session", "sso_start_url", "credential_source"] {
            if get(unsupported).is_some() {
                return Err(source_error(source_name, format!("{unsupported} is not supported")));
            }
        }
        // Settings only (region, output): not a credential source.
        Ok(None)
    }

    async fn container(&self) -> Result<Found> {
        let name = "container";
        let url = if let Some(relative) = self.env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
            format!("{ECS_HOST}{relative}")
        } else if let Some(full) = self.env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
            full.to_owned()
        } else {
            return Ok(None);
        };
        let url =
            Url::parse(&url).map_err(|e| source_error(name, format!("the credentials url {url:?} is invalid: {e}")))?;
        if !container_url_allowed(&url) {
            return Err(source_error(
                name,
                format!("{url} is neither https nor http to a loopback or the ecs/eks agent address"),
            ));
        }
        let authorization = match (
            self.env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
            self.env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
        ) {
            (Some(file), _) => {
                let token = Zeroizing::new(
                    tokio::fs::read_to_string(file)
                        .await
                        .map_err(|e| source_error(name, format!("cannot read {file}: {e}")))?,
                );
                Some(Zeroizing::new(token.trim().to_owned()))
            }
            (None, Some(token)) => Some(Zeroizing::new(token.to_owned())),
            (None, None) => None,
        };
        let mut request = self.http.get(url.clone()).timeout(LOCAL_HTTP_TIMEOUT);
        if let Some(authorization) = &authorization {
            request = request.header(reqwest::header::AUTHORIZATION, sensitive(authorization)?);
        }
        let body = fetch(name, request).await?;
        let credentials = parse_json_credentials(name, &body)?;
        Ok(Some((credentials, CredentialSource::Container)))
    }

    /// `Ok(Err(why))` when there is no instance metadata to use: off EC2,
    /// disabled, or no role attached.
    async fn instance_metadata(&self) -> Result<std::result::Result<(Credentials, CredentialSource), String>> {
        let name = "ec2 instance metadata";
        if self.env.get("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(Err("instance metadata is disabled by AWS_EC2_METADATA_DISABLED".into()));
        }
        let base = self.env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT").unwrap_or("http://169.254.169.254");
        let url = |path: &str| {
            Url::parse(&format!("{}{path}", base.trim_end_matches('/')))
                .map_err(|e| source_error(name, format!("the endpoint {base:?} is invalid: {e}")))
        };
        // The short timeout makes a machine off EC2 fail fast.
        let token = self
            .http
            .put(url("/latest/api/token")?)
            .header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
            .timeout(IMDS_TOKEN_TIMEOUT)
            .send()
            .await;
        let token = match token {
            Ok(response) if response.status().is_success() => match response.text().await {
                Ok(token) => Zeroizing::new(token),
                Err(e) => return Err(source_error(name, format!("reading the session token: {}", with_causes(&e)))),
            },
            Ok(response) => {
                return Ok(Err(format!(
                    "instance metadata at {base} refused a session token (http {})",
                    response.status().as_u16()
                )));
            }
            Err(_) => return Ok(Err(format!("instance metadata at {base} is unreachable (not on ec2?)"))),
        };
        let get = |path: &str| -> Result<reqwest::RequestBuilder> {
            Ok(self
                .http
                .get(url(path)?)
                .header("x-aws-ec2-metadata-token", sensitive(&token)?)
                .timeout(LOCAL_HTTP_TIMEOUT))
        };
        let roles_path = "/latest/meta-data/iam/security-credentials/";
        let roles = get(roles_path)?
            .send()
            .await
            .map_err(|e| source_error(name, format!("listing roles: {}", with_causes(&e))))?;
        if roles.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Err("the ec2 instance has no iam role attached".into()));
        }
        let roles = checked_text(name, roles).await?;
        let Some(role) = roles.lines().map(str::trim).find(|l| !l.is_empty()) else {
            return Ok(Err("the ec2 instance has no iam role attached".into()));
        };
        let body = fetch(name, get(&format!("{roles_path}{role}"))?).await?;
        let credentials = parse_json_credentials(name, &body)?;
        Ok(Ok((credentials, CredentialSource::InstanceMetadata { role: role.to_owned() })))
    }
}

fn default_session_name(now: OffsetDateTime) -> String {
    format!("hourglass-{}", now.unix_timestamp())
}

fn display(path: Option<&Path>) -> String {
    path.map_or_else(|| "(no home directory)".into(), |p| p.display().to_string())
}

/// https anywhere; plain http only to this machine or the ECS/EKS agent's
/// link-local addresses, where nothing on the network can read the token.
fn container_url_allowed(url: &Url) -> bool {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let Some(host) = url.host_str() else {
        return false;
    };
    match url.scheme() {
        "https" => true,
        "http" => match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => {
                ip.is_loopback() || ip == Ipv4Addr::new(169, 254, 170, 2) || ip == Ipv4Addr::new(169, 254, 170, 23)
            }
            Ok(IpAddr::V6(ip)) => ip.is_loopback() || ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23),
            Err(_) => host == "localhost",
        },
        _ => false,
    }
}

async fn fetch(source_name: &str, request: reqwest::RequestBuilder) -> Result<Zeroizing<String>> {
    let response = request.send().await.map_err(|e| source_error(source_name, with_causes(&e)))?;
    checked_text(source_name, response).await
}

async fn checked_text(source_name: &str, response: reqwest::Response) -> Result<Zeroizing<String>> {
    let status = response.status();
    let body = Zeroizing::new(
        response
            .text()
            .await
            .map_err(|e| source_error(source_name, format!("reading the answer: {}", with_causes(&e))))?,
    );
    if !status.is_success() {
        // Error answers hold no credentials.
        let start: String = body.trim().chars().take(200).collect();
        return Err(source_error(source_name, format!("http {}: {start}", status.as_u16())));
    }
    Ok(body)
}

/// The container endpoint's and IMDS's JSON.
#[derive(Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(rename_all = "PascalCase")]
struct JsonCredentials {
    access_key_id: String,
    secret_access_key: String,
    token: Option<String>,
    expiration: Option<String>,
}

fn parse_json_credentials(source_name: &str, body: &str) -> Result<Credentials> {
    let json: JsonCredentials = serde_json::from_str(body).map_err(|e| {
        // serde's messages can quote values; only "missing field" ones are
        // known not to.
        let message = e.to_string();
        let detail = if message.starts_with("missing field") {
            message
        } else {
            format!("malformed credentials json ({:?} error at line {} column {})", e.classify(), e.line(), e.column())
        };
        source_error(source_name, detail)
    })?;
    let expiration = match &json.expiration {
        Some(text) => Some(
            OffsetDateTime::parse(text, &Rfc3339)
                .map_err(|e| source_error(source_name, format!("bad Expiration {text:?}: {e}")))?,
        ),
        None => None,
    };
    Ok(Credentials {
        access_key_id: json.access_key_id.clone(),
        secret_access_key: Zeroizing::new(json.secret_access_key.clone()),
        session_token: json.token.clone().map(Zeroizing::new),
        expiration,
    })
}

type Profile = HashMap<String, Zeroizing<String>>;

struct SharedFiles {
    credentials: HashMap<String, Profile>,
    config: HashMap<String, Profile>,
}

impl SharedFiles {
    /// A profile's settings from both files; the credentials file wins, as
    /// in the AWS CLI.
    fn profile(&self, name: &str) -> Option<Profile> {
        let config = self.config.get(name);
        let credentials = self.credentials.get(name);
        if config.is_none() && credentials.is_none() {
            return None;
        }
        let mut merged = config.cloned().unwrap_or_default();
        merged.extend(credentials.cloned().unwrap_or_default());
        Some(merged)
    }
}

fn static_keys(profile: &Profile) -> std::result::Result<Option<Credentials>, String> {
    let get = |key: &str| profile.get(key).map(|v| v.as_str()).filter(|v| !v.is_empty());
    match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (None, _) => Ok(None),
        (Some(_), None) => Err("aws_access_key_id is set but aws_secret_access_key is not".into()),
        (Some(id), Some(secret)) => Ok(Some(Credentials::new(id, secret, get("aws_session_token").map(str::to_owned)))),
    }
}

/// A shared file's profiles; an absent file has none.
async fn read_profiles(path: Option<&Path>, config_file: bool) -> Result<HashMap<String, Profile>> {
    let Some(path) = path else {
        return Ok(HashMap::new());
    };
    let name = format!("shared {} file {}", if config_file { "config" } else { "credentials" }, path.display());
    match tokio::fs::read_to_string(path).await {
        Ok(text) => parse_profiles(&Zeroizing::new(text), config_file).map_err(|detail| source_error(name, detail)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashMap::new()),
        Err(e) => Err(source_error(name, format!("cannot read: {e}"))),
    }
}

/// The INI dialect of `~/.aws/credentials` and `~/.aws/config`. In the
/// config file, sections are `[profile NAME]`, except `[default]`; other
/// config sections (`[sso-session x]`, `[services x]`) are not profiles.
/// Indented lines are sub-settings (`s3 =` blocks) and are skipped. Errors
/// name the line, never its content, which may be a key.
pub(crate) fn parse_profiles(text: &str, config_file: bool) -> std::result::Result<HashMap<String, Profile>, String> {
    let mut profiles: HashMap<String, Profile> = HashMap::new();
    let mut current: Option<String> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[') {
            let section = section
                .split(['#', ';'])
                .next()
                .unwrap_or_default()
                .trim_end()
                .strip_suffix(']')
                .ok_or_else(|| format!("line {}: unclosed section header", index + 1))?
                .trim();
            current = if !config_file || section == "default" {
                Some(section.to_owned())
            } else {
                section
                    .strip_prefix("profile")
                    .filter(|rest| rest.starts_with(char::is_whitespace))
                    .map(|rest| rest.trim().to_owned())
            };
            if let Some(name) = &current {
                profiles.entry(name.clone()).or_default();
            }
            continue;
        }
        if raw.starts_with(char::is_whitespace) {
            continue;
        }
        let (key, value) = line.split_once('=').ok_or_else(|| format!("line {}: expected `key = value`", index + 1))?;
        let Some(name) = &current else {
            continue;
        };
        if let Some(profile) = profiles.get_mut(name) {
            profile.insert(key.trim().to_ascii_lowercase(), Zeroizing::new(value.trim().to_owned()));
        }
    }
    Ok(profiles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_secret() {
        let mut credentials = Credentials::new("AKIAEXAMPLE", "s3cr3t-key", Some("s3ss10n-token".into()));
        credentials.expiration = Some(time::macros::datetime!(2030-01-01 0:00 UTC));
        let debug = format!("{credentials:?}");
        assert!(debug.contains("AKIAEXAMPLE"));
        assert!(!debug.contains("s3cr3t") && !debug.contains("s3ss10n"), "{debug}");
        let env = Env::from_vars([("AWS_SECRET_ACCESS_KEY", "s3cr3t-key")]);
        assert!(!format!("{env:?}").contains("s3cr3t"));
    }

    #[test]
    fn config_sections_are_profile_prefixed_and_credentials_sections_are_not() {
        let config = "# comment\n[default]\nregion = eu-west-1\n[profile dev]\nrole_arn = arn:aws:iam::123456789012:role/dev\nsource_profile = default\ns3 =\n  max_concurrent_requests = 10\n[sso-session corp]\nsso_region = us-east-1\n[prod]\nregion = x\n";
        let profiles = parse_profiles(config, true).unwrap();
        let mut names: Vec<_> = profiles.keys().cloned().collect();
        names.sort();
        assert_eq!(names, ["default", "dev"], "[sso-session] and bare [prod] are not config profiles");
        assert_eq!(profiles["dev"]["source_profile"].as_str(), "default");
        assert!(!profiles["dev"].contains_key("max_concurrent_requests"));

        let credentials = "[default]\naws_access_key_id = AKIA1\naws_secret_access_key = abc=def\n\n[profile dev]\naws_access_key_id=AKIA2\n";
        let profiles = parse_profiles(credentials, false).unwrap();
        assert_eq!(profiles["default"]["aws_secret_access_key"].as_str(), "abc=def");
        assert!(profiles.contains_key("profile dev"), "the credentials file takes section names as they are");
    }

    #[test]
    fn malformed_line_names_its_number_not_its_content() {
        let error = parse_profiles("[default]\naws_secret_access_key\n", false).unwrap_err();
        assert_eq!(error, "line 2: expected `key = value`");
    }

    #[tokio::test]
    async fn profile_from_files_in_a_temp_home() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".aws")).unwrap();
        std::fs::write(
            home.path().join(".aws/credentials"),
            "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = d\n[dev]\naws_access_key_id = AKIADEV\naws_secret_access_key = s\naws_session_token = t\n",
        )
        .unwrap();
        std::fs::write(
            home.path().join(".aws/config"),
            "[profile settings-only]\nregion = eu-west-1\n[profile sso]\nsso_session = corp\n",
        )
        .unwrap();
        let chain = |vars: Vec<(&str, String)>| {
            let mut all = vec![("HOME", home.path().display().to_string())];
            all.extend(vars);
            let _ = rustls::crypto::ring::default_provider().install_default();
            Chain {
                http: reqwest::Client::new(),
                env: Env::from_vars(all),
                sts: Sts::new(
                    reqwest::Client::new(),
                    Endpoints::new("us-east-1", "http://127.0.0.1:9", "http://127.0.0.1:9"),
                ),
            }
        };
        let now = OffsetDateTime::now_utc();
        let (credentials, source) = chain(vec![]).profile(now).await.unwrap().unwrap();
        assert_eq!(
            (credentials.access_key_id.as_str(), source),
            ("AKIADEFAULT", CredentialSource::Profile { name: "default".into() })
        );
        let (credentials, _) = chain(vec![("AWS_PROFILE", "dev".into())]).profile(now).await.unwrap().unwrap();
        assert_eq!(credentials.session_token.as_deref().map(String::as_str), Some("t"));
        assert!(chain(vec![("AWS_PROFILE", "settings-only".into())]).profile(now).await.unwrap().is_none());
        let missing = chain(vec![("AWS_PROFILE", "nope".into())]).profile(now).await.unwrap_err();
        assert!(missing.to_string().starts_with("profile \"nope\" credentials: not found in"), "{missing}");
        let sso = chain(vec![("AWS_PROFILE", "sso".into())]).profile(now).await.unwrap_err();
        assert!(sso.to_string().contains("sso_session is not supported"), "{sso}");
        let elsewhere = home.path().join("other");
        std::fs::write(&elsewhere, "[default]\naws_access_key_id = AKIAOTHER\n").unwrap();
        let broken = chain(vec![("AWS_SHARED_CREDENTIALS_FILE", elsewhere.display().to_string())])
            .profile(now)
            .await
            .unwrap_err();
        assert!(broken.to_string().contains("aws_secret_access_key is not"), "{broken}");
    }

    #[test]
    fn container_urls_must_be_https_or_local() {
        let allowed = |u: &str| container_url_allowed(&Url::parse(u).unwrap());
        assert!(allowed("http://169.254.170.2/v2/credentials/x"));
        assert!(allowed("http://127.0.0.1:8080/creds"));
        assert!(allowed("http://[fd00:ec2::23]/v1/credentials"));
        assert!(allowed("http://localhost/creds"));
        assert!(allowed("https://creds.example.com/"));
        assert!(!allowed("http://creds.example.com/"), "plain http off the machine would leak the token");
        assert!(!allowed("http://10.0.0.1/"));
    }

    #[test]
    fn container_json_is_parsed_without_quoting_values() {
        let c = parse_json_credentials("container", r#"{"AccessKeyId":"ASIA1","SecretAccessKey":"sec","Token":"tok","Expiration":"2030-01-01T00:00:00Z","RoleArn":"x"}"#).unwrap();
        assert_eq!(c.access_key_id, "ASIA1");
        assert_eq!(c.expiration, Some(time::macros::datetime!(2030-01-01 0:00 UTC)));
        let error =
            parse_json_credentials("container", r#"{"AccessKeyId":"ASIA1","SecretAccessKey":"sec""#).unwrap_err();
        assert!(!error.to_string().contains("sec"), "{error}");
        let missing = parse_json_credentials("container", r#"{"AccessKeyId":"ASIA1"}"#).unwrap_err();
        assert!(missing.to_string().contains("missing field `SecretAccessKey`"), "{missing}");
    }
}
