//! AWS: a role session per grant, with STS `AssumeRole`.
//!
//! A resource is an AWS account (`provider = "aws"`); each of its roles
//! names an IAM role (`role_arn`). The broker assumes the role with its own
//! identity (the standard AWS credential chain: `hourglass_aws`), as a
//! session named after the grant's owner and the grant
//! (`alice@acme.example.7k2m9x4q3t`, [`session_name`]) and tagged with
//! the principal, the grant and the request's ticket, so CloudTrail says
//! who did what under which grant.
//!
//! Nothing is created at AWS on issue: the keys are minted on demand for
//! the owner ([`Provider::credential`]), kept in memory only (the agent's),
//! each set lasting `session_duration` (15 minutes unless set) or less, and
//! fetched again by the agent while the grant lives. Each set carries the
//! grant's deadline in its session policy (a `Deny` of everything once
//! `aws:CurrentTime` is past it), so keys minted for a grant stop working
//! at its deadline at AWS itself, whatever the broker does then: expiry
//! needs no call. A renewal mints keys with the new deadline; the old ones
//! keep working until the old deadline, so there is no gap.
//!
//! Revocation before the deadline cannot wait for that: the broker puts an
//! inline policy on the role (`hourglass-revoked-GRANT`) that denies every
//! action to that session (`aws:userid` is `ROLEID:SESSION`), reads it back,
//! and removes it once the session's keys would have ended anyway (at the
//! grant's deadline by their session policy, at most 12 hours on)
//! ([`Provider::tidy`], from a list of such policies in the store).
//! Other sessions of the role, other grants of the same person among them,
//! are untouched: each grant has its own session name.
//!
//! Ready means verified: on issue and renew the broker assumes the role and
//! calls `GetCallerIdentity` with the keys it got, and the grant is shown
//! ready only if AWS answers with the session it asked for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hourglass_aws::{AssumeRole, CredentialChain, Credentials, Endpoints, Iam, Sts};
use hourglass_core::api::{Credential, EnvVar};
use hourglass_core::{Duration, Grant, Timestamp};
use hourglass_policy::Resource;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{IssueInput, Issued, Provider, ProviderError, SharedRecord, Verification};

pub const KIND: &str = "aws";

/// STS's shortest session, and the default length of each set of keys.
const SHORTEST_SESSION: Duration = Duration::from_mins(15);
/// STS's longest role session (a role's `MaxSessionDuration` can be lower).
const LONGEST_SESSION: Duration = Duration::from_hours(12);
/// Clocks of the broker and AWS may differ by this much: a revoked
/// session's deny stays this much longer than its keys could last.
const CLOCK_MARGIN_MILLIS: i64 = 60_000;
/// STS accepts at most this many managed session policies.
const MOST_POLICY_ARNS: usize = 10;
/// The store document listing the deny policies to remove, and when.
const REVOCATIONS: &str = "aws/revocations";

/// `[resources.NAME.settings]` for `provider = "aws"`.
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The region of the STS endpoint, exported to clients as `AWS_REGION`.
    region: Option<String>,
    /// How long each set of keys lasts (15 minutes to 12 hours, and at most
    /// the role's maximum session duration): a revoked grant's keys die
    /// this long after the revocation at worst, should the deny fail too.
    session_duration: Option<Duration>,
    /// Where STS and IAM are (an `https://` URL, or `http://` on
    /// loopback); AWS's own by default.
    sts_endpoint: Option<String>,
    iam_endpoint: Option<String>,
    /// Sent as `ExternalId` when the role's trust policy asks for one.
    external_id: Option<String>,
}

/// `[resources.NAME.roles.ROLE.settings]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleSettings {
    role_arn: String,
    /// An inline session policy (JSON): the session may do only what both
    /// it and the role's own policies allow.
    session_policy: Option<String>,
    /// Managed policies that further limit the session.
    #[serde(default)]
    policy_arns: Vec<String>,
}

impl Settings {
    fn parse(resource: &Resource) -> Result<Settings, String> {
        let settings: Settings =
            resource.settings.clone().try_into().map_err(|e: toml::de::Error| e.message().to_owned())?;
        if let Some(region) = &settings.region
            && (region.is_empty() || !region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
        {
            return Err(format!("region \"{region}\" is not an AWS region name (like eu-west-1)"));
        }
        let duration = settings.duration();
        if duration < SHORTEST_SESSION || duration > LONGEST_SESSION {
            return Err(format!("session_duration {duration} must be between 15m and 12h (what STS accepts)"));
        }
        for (name, url) in [("sts_endpoint", &settings.sts_endpoint), ("iam_endpoint", &settings.iam_endpoint)] {
            if let Some(url) = url {
                check_endpoint(url).map_err(|why| format!("{name} \"{url}\": {why}"))?;
            }
        }
        Ok(settings)
    }

    fn duration(&self) -> Duration {
        self.session_duration.unwrap_or(SHORTEST_SESSION)
    }

    fn endpoints(&self) -> Endpoints {
        let mut endpoints = Endpoints::resolve(self.region.as_deref());
        if let Some(sts) = &self.sts_endpoint {
            endpoints.sts = sts.clone();
        }
        if let Some(iam) = &self.iam_endpoint {
            endpoints.iam = iam.clone();
        }
        endpoints
    }
}

/// An endpoint is `https://`, or plain HTTP to this machine (a test
/// server, a local proxy): AWS's answers carry keys.
fn check_endpoint(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|error| format!("not a URL ({error})"))?;
    if crate::roots::is_https_or_loopback(&parsed) {
        Ok(())
    } else {
        Err("must be https:// (or http:// on loopback)".into())
    }
}

impl RoleSettings {
    fn parse(settings: &toml::Table) -> Result<RoleSettings, String> {
        let parsed: RoleSettings = settings.clone().try_into().map_err(|e: toml::de::Error| e.message().to_owned())?;
        hourglass_aws::parse_role_arn(&parsed.role_arn).map_err(|error| format!("role_arn: {error}"))?;
        if let Some(policy) = &parsed.session_policy {
            statements(policy).map_err(|why| format!("session_policy: {why}"))?;
        }
        if parsed.policy_arns.len() > MOST_POLICY_ARNS {
            return Err(format!(
                "policy_arns names {} policies; STS takes at most {MOST_POLICY_ARNS}",
                parsed.policy_arns.len()
            ));
        }
        if let Some(bad) = parsed.policy_arns.iter().find(|arn| !is_policy_arn(arn)) {
            return Err(format!(
                "policy_arns: \"{bad}\" is not a managed policy ARN (arn:aws:iam::ACCOUNT:policy/NAME)"
            ));
        }
        Ok(parsed)
    }
}

fn is_policy_arn(arn: &str) -> bool {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(rest)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    partition.starts_with("aws")
        && (account == "aws" || (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())))
        && rest.strip_prefix("policy/").is_some_and(|name| !name.is_empty())
}

/// The statements of a policy document, which must be a JSON object with
/// a `Statement` (one or a list).
fn statements(document: &str) -> Result<Vec<Value>, String> {
    let value: Value = serde_json::from_str(document).map_err(|error| format!("not JSON ({error})"))?;
    match value.get("Statement") {
        Some(Value::Array(list)) if !list.is_empty() => Ok(list.clone()),
        Some(one @ Value::Object(_)) => Ok(vec![one.clone()]),
        _ => Err("a policy document needs a \"Statement\" (an object or a non-empty list)".into()),
    }
}

/// The session policy of keys minted for a grant ending at `deadline`:
/// the role's own session policy, or managed ones, or everything the role
/// allows; and in every case nothing after the deadline.
///
/// Session policies passed together (inline and managed) are one set: a
/// session may do what any of them allows and none denies. So with managed
/// policies and no inline one, the inline policy is the deadline's deny
/// alone: an `Allow` of everything there would undo the managed ones.
fn session_policy(role: &RoleSettings, deadline: Timestamp) -> Result<String, String> {
    // Whole seconds, rounded down: the deny starts at the deadline or
    // up to a second before it, never after.
    let at = Timestamp::from_unix_millis(deadline.unix_seconds() * 1000).to_string().replace(".000Z", "Z");
    let deny = json!({
        "Sid": "HourglassDeadline",
        "Effect": "Deny",
        "Action": "*",
        "Resource": "*",
        "Condition": {"DateGreaterThan": {"aws:CurrentTime": at}},
    });
    let mut list = match &role.session_policy {
        Some(document) => statements(document)?,
        None if !role.policy_arns.is_empty() => Vec::new(),
        None => vec![json!({"Sid": "HourglassRole", "Effect": "Allow", "Action": "*", "Resource": "*"})],
    };
    list.push(deny);
    Ok(json!({"Version": "2012-10-17", "Statement": list}).to_string())
}

/// How long a set of keys minted at `now` lasts: the resource's
/// `session_duration`, less when the grant ends sooner, never below STS's
/// 15 minutes (the session policy ends those at the deadline).
fn session_seconds(duration: Duration, now: Timestamp, deadline: Timestamp) -> u32 {
    let left = u64::try_from(now.millis_until(deadline).max(0)).unwrap_or(0).div_ceil(1000);
    let seconds = left.clamp(SHORTEST_SESSION.as_secs(), duration.as_secs().max(SHORTEST_SESSION.as_secs()));
    u32::try_from(seconds).unwrap_or(u32::MAX)
}

/// `alice@acme.example.7k2m9x4q3t`: the owner, then the grant, in the
/// characters STS allows (`[\w+=,.@-]`, at most 64), the owner cut short
/// when long so that the grant is always there.
pub fn session_name(owner: &str, grant: &Grant) -> String {
    let suffix = grant.id.as_str().trim_start_matches(hourglass_core::GrantId::PREFIX);
    let allowed = |c: char| c.is_ascii_alphanumeric() || "+=,.@-_".contains(c);
    let owner: String = owner.chars().map(|c| if allowed(c) { c } else { '-' }).collect();
    let room = 64 - 1 - suffix.len().min(62);
    format!("{}.{suffix}", &owner[..owner.len().min(room)])
}

/// A session tag's value in the characters AWS allows, at most 256.
fn tag_value(text: &str) -> String {
    let allowed = |c: char| c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c);
    text.chars().map(|c| if allowed(c) { c } else { '_' }).take(256).collect()
}

/// What the provider keeps with a grant: how to find its session again,
/// whatever the policy says by then.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct State {
    role_arn: String,
    session_name: String,
    #[serde(default)]
    ticket: Option<String>,
    settings: Settings,
}

impl State {
    fn parse(resource: &str, value: &Value) -> Result<State, ProviderError> {
        serde_json::from_value(value.clone())
            .map_err(|error| failed(resource, format!("the grant's AWS state does not parse: {error}")))
    }

    fn role_name(&self) -> String {
        hourglass_aws::parse_role_arn(&self.role_arn).map(|arn| arn.name).unwrap_or_default()
    }
}

/// A deny policy on a role, to remove once the revoked session's keys
/// have ended: the list in the store ([`REVOCATIONS`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Denial {
    role_arn: String,
    policy: String,
    until: Timestamp,
    settings: Settings,
}

fn failed(resource: &str, message: impl Into<String>) -> ProviderError {
    ProviderError::failed(resource, message)
}

/// An AWS client: STS, IAM, and the broker's own identity.
struct Aws {
    sts: Sts,
    iam: Iam,
    identity: CredentialChain,
}

impl Aws {
    async fn identity(&self, resource: &str) -> Result<Credentials, ProviderError> {
        self.identity
            .credentials()
            .await
            .map_err(|error| failed(resource, format!("the broker's own AWS identity: {error}")))
    }
}

pub struct AwsProvider {
    http: reqwest::Client,
    /// Clients by endpoints: one credential chain (and its cached keys) each.
    clients: Mutex<HashMap<String, Arc<Aws>>>,
    revocations: SharedRecord,
    /// Where the broker's identity is read from: this process's
    /// environment, unless given (tests, benchmarks).
    env: Option<hourglass_aws::Env>,
}

impl AwsProvider {
    pub fn new(revocations: SharedRecord) -> Result<AwsProvider, String> {
        AwsProvider::with_env(revocations, None)
    }

    /// A provider whose own identity comes from `env` rather than this
    /// process's environment.
    pub fn with_env(revocations: SharedRecord, env: Option<hourglass_aws::Env>) -> Result<AwsProvider, String> {
        let http = crate::roots::http_client(std::time::Duration::from_secs(15), false)
            .map_err(|error| format!("building the AWS HTTP client: {error}"))?;
        Ok(AwsProvider { http, clients: Mutex::new(HashMap::new()), revocations, env })
    }

    fn client(&self, settings: &Settings) -> Arc<Aws> {
        let endpoints = settings.endpoints();
        let key = format!("{}|{}|{}", endpoints.region, endpoints.sts, endpoints.iam);
        let mut clients = self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        clients
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Aws {
                    sts: Sts::new(self.http.clone(), endpoints.clone()),
                    iam: Iam::new(self.http.clone(), endpoints.clone()),
                    identity: match &self.env {
                        Some(env) => CredentialChain::with_env(self.http.clone(), endpoints, env.clone()),
                        None => CredentialChain::new(self.http.clone(), endpoints),
                    },
                })
            })
            .clone()
    }

    fn plan(input: &IssueInput<'_>) -> Result<(State, RoleSettings), ProviderError> {
        let resource = &input.resource.name;
        let settings = Settings::parse(input.resource).map_err(|message| failed(resource, message))?;
        let role = RoleSettings::parse(&input.role.settings)
            .map_err(|message| failed(resource, format!("role {}: {message}", input.role.name)))?;
        let state = State {
            role_arn: role.role_arn.clone(),
            session_name: session_name(&input.grant.owner, input.grant),
            ticket: input.ticket.map(str::to_owned),
            settings,
        };
        Ok((state, role))
    }

    /// [`AwsProvider::plan`] for a grant already issued: the policy in force
    /// now, but the session keeps its name (a revocation denies it by name)
    /// and the request's ticket, from `state`.
    fn plan_existing(input: &IssueInput<'_>, state: &Value) -> Result<(State, RoleSettings), ProviderError> {
        let (mut planned, role) = Self::plan(input)?;
        let stored = State::parse(&input.resource.name, state)?;
        planned.session_name = stored.session_name;
        planned.ticket = stored.ticket;
        Ok((planned, role))
    }

    /// Assumes the grant's role for keys that end at the grant's deadline
    /// at the latest.
    async fn assume(
        &self,
        input: &IssueInput<'_>,
        state: &State,
        role: &RoleSettings,
    ) -> Result<(Arc<Aws>, hourglass_aws::AssumedRole, u32), ProviderError> {
        let resource = &input.resource.name;
        let aws = self.client(&state.settings);
        let caller = aws.identity(resource).await?;
        let policy = session_policy(role, input.grant.expires_at).map_err(|message| failed(resource, message))?;
        let duration = session_seconds(state.settings.duration(), input.now, input.grant.expires_at);
        let mut tags = vec![
            ("hourglass:principal".to_owned(), tag_value(&input.grant.owner)),
            ("hourglass:grant".to_owned(), input.grant.id.to_string()),
        ];
        if let Some(ticket) = &state.ticket {
            tags.push(("hourglass:ticket".to_owned(), tag_value(ticket)));
        }
        let request = AssumeRole {
            role_arn: state.role_arn.clone(),
            role_session_name: state.session_name.clone(),
            duration_seconds: duration,
            policy: Some(policy),
            policy_arns: role.policy_arns.clone(),
            tags,
            transitive_tag_keys: Vec::new(),
            external_id: state.settings.external_id.clone(),
            source_identity: None,
        };
        let assumed = aws.sts.assume_role(&caller, &request).await.map_err(|error| {
            failed(resource, format!("STS refused to assume {} as {}: {error}", state.role_arn, state.session_name))
        })?;
        Ok((aws, assumed, duration))
    }

    /// Assumes the role and checks, with the keys AWS handed out, that AWS
    /// knows them as the grant's session.
    async fn issue_verified(
        &self,
        input: IssueInput<'_>,
        state: State,
        role: &RoleSettings,
    ) -> Result<Issued, ProviderError> {
        let resource = &input.resource.name;
        let (aws, assumed, duration) = self.assume(&input, &state, role).await?;
        let identity = aws.sts.get_caller_identity(&assumed.credentials).await.map_err(|error| {
            failed(resource, format!("the keys of session {} do not work: {error}", state.session_name))
        })?;
        let expected = format!(":assumed-role/{}/{}", state.role_name(), state.session_name);
        if !identity.arn.ends_with(&expected) {
            return Err(failed(
                resource,
                format!("AWS says the new keys are {}, not the session {}", identity.arn, state.session_name),
            ));
        }
        let mut verification = Verification::new();
        verification.insert("caller_identity".into(), identity.arn.into());
        verification.insert("user_id".into(), assumed.assumed_role_id.clone().into());
        verification.insert("duration_seconds".into(), duration.into());
        verification.insert("session_policy_denies_after".into(), input.grant.expires_at.to_string().into());
        if !role.policy_arns.is_empty() {
            verification.insert("policy_arns".into(), role.policy_arns.clone().into());
        }
        let state = serde_json::to_value(&state).map_err(|error| failed(resource, error.to_string()))?;
        Ok(Issued { state, ready: true, verification })
    }

    /// Removes the deny policies of revoked sessions whose keys have ended;
    /// returns how many.
    async fn remove_ended_denials(&self, now: Timestamp) -> Result<usize, String> {
        let Some(text) = self.revocations.read().await? else { return Ok(0) };
        let denials: Vec<Denial> = serde_json::from_str(&text).map_err(|error| format!("{REVOCATIONS}: {error}"))?;
        let mut removed = Vec::new();
        for denial in denials.iter().filter(|denial| denial.until <= now) {
            let aws = self.client(&denial.settings);
            let role = hourglass_aws::parse_role_arn(&denial.role_arn).map(|arn| arn.name).unwrap_or_default();
            let outcome = match aws.identity(&denial.role_arn).await {
                Ok(caller) => {
                    aws.iam.delete_role_policy(&caller, &role, &denial.policy).await.map_err(|e| e.to_string())
                }
                Err(error) => Err(error.to_string()),
            };
            match outcome {
                Ok(_) => removed.push((denial.role_arn.clone(), denial.policy.clone())),
                Err(error) => {
                    tracing::warn!(role = %denial.role_arn, policy = %denial.policy, "removing a revoked session's deny failed: {error}")
                }
            }
        }
        if removed.is_empty() {
            return Ok(0);
        }
        let count = removed.len();
        self.revocations
            .update(|current| {
                let mut list: Vec<Denial> = match current {
                    Some(text) => serde_json::from_str(&text).map_err(|error| format!("{REVOCATIONS}: {error}"))?,
                    None => return Ok(None),
                };
                list.retain(|denial| !removed.contains(&(denial.role_arn.clone(), denial.policy.clone())));
                serde_json::to_string(&list).map(Some).map_err(|error| error.to_string())
            })
            .await?;
        Ok(count)
    }

    async fn remember_denial(&self, denial: Denial) -> Result<(), String> {
        self.revocations
            .update(|current| {
                let mut list: Vec<Denial> = match current {
                    Some(text) => serde_json::from_str(&text).map_err(|error| format!("{REVOCATIONS}: {error}"))?,
                    None => Vec::new(),
                };
                if list.iter().any(|known| known.role_arn == denial.role_arn && known.policy == denial.policy) {
                    return Ok(None);
                }
                list.push(denial);
                serde_json::to_string(&list).map(Some).map_err(|error| error.to_string())
            })
            .await
            .map(|_| ())
    }
}

/// The deny policy that ends one session of a role: every action refused
/// to `ROLEID:SESSION`.
fn deny_document(session_name: &str) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "HourglassRevoked",
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {"StringLike": {"aws:userid": format!("*:{session_name}")}},
        }],
    })
    .to_string()
}

/// `hourglass-revoked-7k2m9x4q3t`: one inline policy per revoked grant,
/// so that two revocations never edit the same document.
fn deny_policy_name(grant: &Grant) -> String {
    format!("hourglass-revoked-{}", grant.id.as_str().trim_start_matches(hourglass_core::GrantId::PREFIX))
}

#[async_trait::async_trait]
impl Provider for AwsProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn check(&self, resource: &Resource) -> Result<(), String> {
        Settings::parse(resource)?;
        for role in resource.roles.values() {
            RoleSettings::parse(&role.settings).map_err(|message| format!("role \"{}\": {message}", role.name))?;
        }
        Ok(())
    }

    /// The session is named before it exists: an issue cut short is revoked
    /// from this (it denies the session, should keys have left the broker).
    fn planned_state(&self, input: IssueInput<'_>) -> Result<Option<Value>, ProviderError> {
        let (state, _) = Self::plan(&input)?;
        serde_json::to_value(&state).map(Some).map_err(|error| failed(&input.resource.name, error.to_string()))
    }

    async fn issue(&self, input: IssueInput<'_>) -> Result<Issued, ProviderError> {
        let (state, role) = Self::plan(&input)?;
        self.issue_verified(input, state, &role).await
    }

    async fn renew(&self, input: IssueInput<'_>, state: &Value) -> Result<Issued, ProviderError> {
        let (planned, role) = Self::plan_existing(&input, state)?;
        self.issue_verified(input, planned, &role).await
    }

    async fn revoke(&self, grant: &Grant, state: &Value, now: Timestamp) -> Result<Verification, ProviderError> {
        let resource = &grant.resource;
        let mut verification = Verification::new();
        if state.is_null() {
            verification.insert("nothing_issued".into(), true.into());
            return Ok(verification);
        }
        let state = State::parse(resource, state)?;
        // Keys minted before now end by their session policy at the
        // deadline, and at STS's longest session after they were minted
        // (not the resource's `session_duration` as it was at issue: the
        // policy may have raised it since, for keys minted later).
        let longest = i64::try_from(LONGEST_SESSION.as_secs() * 1000).unwrap_or(i64::MAX);
        let keys_end = grant.expires_at.min(now.plus_millis(longest)).plus_millis(CLOCK_MARGIN_MILLIS);
        verification.insert("session".into(), state.session_name.clone().into());
        verification.insert("session_policy_denies_after".into(), grant.expires_at.to_string().into());
        if grant.ready_at.is_none() || grant.is_past_deadline(now) {
            // Never handed out (keys made to verify the issue stayed in the
            // broker), or past the deadline their session policy ends them at.
            verification.insert("denied".into(), false.into());
            return Ok(verification);
        }
        let aws = self.client(&state.settings);
        let caller = aws.identity(resource).await?;
        let role_name = state.role_name();
        let policy = deny_policy_name(grant);
        let document = deny_document(&state.session_name);
        // Listed first: should the broker stop after the put, the deny is
        // still removed in time.
        self.remember_denial(Denial {
            role_arn: state.role_arn.clone(),
            policy: policy.clone(),
            until: keys_end,
            settings: state.settings.clone(),
        })
        .await
        .map_err(|message| failed(resource, message))?;
        aws.iam.put_role_policy(&caller, &role_name, &policy, &document).await.map_err(|error| {
            failed(resource, format!("denying session {} on {}: {error}", state.session_name, state.role_arn))
        })?;
        let read_back = aws.iam.get_role_policy(&caller, &role_name, &policy).await.map_err(|error| {
            failed(resource, format!("reading back the deny of session {}: {error}", state.session_name))
        })?;
        let expected: Value = serde_json::from_str(&document).unwrap_or(Value::Null);
        if read_back.as_deref().and_then(|text| serde_json::from_str::<Value>(text).ok()) != Some(expected) {
            return Err(failed(
                resource,
                format!(
                    "the deny of session {} on {} did not read back as written",
                    state.session_name, state.role_arn
                ),
            ));
        }
        verification.insert("denied".into(), true.into());
        verification.insert("deny_policy".into(), format!("{}:{policy}", state.role_arn).into());
        verification.insert("deny_until".into(), keys_end.to_string().into());
        Ok(verification)
    }

    async fn tidy(&self, now: Timestamp) -> Result<(), String> {
        self.remove_ended_denials(now).await.map(|_| ())
    }

    async fn credential(&self, input: IssueInput<'_>, state: &Value) -> Result<Credential, ProviderError> {
        let (planned, role) = Self::plan_existing(&input, state)?;
        let (_, assumed, _) = self.assume(&input, &planned, &role).await?;
        let keys = assumed.credentials;
        let ends = keys
            .expiration
            .map(|at| Timestamp::from_unix_millis(i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)));
        let secret = |name: &str, value: &str| EnvVar { name: name.into(), value: value.into(), secret: true };
        let public = |name: &str, value: String| EnvVar { name: name.into(), value, secret: false };
        let mut env = vec![
            secret("AWS_ACCESS_KEY_ID", &keys.access_key_id),
            secret("AWS_SECRET_ACCESS_KEY", &keys.secret_access_key),
        ];
        if let Some(token) = &keys.session_token {
            env.push(secret("AWS_SESSION_TOKEN", token));
        }
        let valid_until = ends.map_or(input.grant.expires_at, |ends| ends.min(input.grant.expires_at));
        env.push(public("AWS_CREDENTIAL_EXPIRATION", valid_until.to_string()));
        if let Some(region) = &planned.settings.region {
            env.push(public("AWS_REGION", region.clone()));
            env.push(public("AWS_DEFAULT_REGION", region.clone()));
        }
        Ok(Credential {
            grant_id: input.grant.id.clone(),
            resource: input.grant.resource.clone(),
            role: input.grant.role.clone(),
            provider: KIND.into(),
            expires_at: input.grant.expires_at,
            valid_until: Some(valid_until),
            env,
            ssh_certificate: None,
            client_secret: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Timestamp = Timestamp::from_unix_millis(1_800_000_000_500);

    fn role(session_policy: Option<&str>, policy_arns: &[&str]) -> RoleSettings {
        RoleSettings {
            role_arn: "arn:aws:iam::123456789012:role/operator".into(),
            session_policy: session_policy.map(str::to_owned),
            policy_arns: policy_arns.iter().map(|arn| (*arn).to_owned()).collect(),
        }
    }

    fn statements_of(policy: &str) -> Vec<Value> {
        statements(policy).expect("a policy document")
    }

    #[test]
    fn every_session_policy_denies_everything_after_the_deadline() {
        let deny = |list: &[Value]| list.iter().find(|s| s["Sid"] == "HourglassDeadline").cloned().expect("the deny");
        let plain = statements_of(&session_policy(&role(None, &[]), DEADLINE).expect("made"));
        assert_eq!(plain.len(), 2, "allow what the role allows, deny after the deadline: {plain:?}");
        assert_eq!(plain[0]["Effect"], "Allow");
        let condition = &deny(&plain)["Condition"]["DateGreaterThan"]["aws:CurrentTime"];
        assert_eq!(condition, "2027-01-15T08:00:00Z", "whole seconds, rounded down: never after the deadline");

        let own = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:Get*","Resource":"*"}}"#;
        let narrowed = statements_of(&session_policy(&role(Some(own), &[]), DEADLINE).expect("made"));
        assert_eq!(narrowed.len(), 2, "the role's own statement, then the deny: {narrowed:?}");
        assert_eq!(narrowed[0]["Action"], "s3:Get*", "kept as written");

        let managed = statements_of(
            &session_policy(&role(None, &["arn:aws:iam::aws:policy/ReadOnlyAccess"]), DEADLINE).expect("made"),
        );
        assert_eq!(managed.len(), 1, "with managed policies, no Allow of everything to undo them: {managed:?}");
        assert_eq!(managed[0]["Sid"], "HourglassDeadline");
    }

    #[test]
    fn keys_last_the_session_duration_or_until_the_deadline_never_under_sts_minimum() {
        let now = Timestamp::from_unix_millis(0);
        let minutes = |m: i64| now.plus_millis(m * 60_000);
        let fifteen = Duration::from_mins(15);
        assert_eq!(session_seconds(fifteen, now, minutes(60)), 900, "the set duration");
        assert_eq!(session_seconds(Duration::from_hours(1), now, minutes(20)), 1200, "the grant ends sooner");
        assert_eq!(session_seconds(fifteen, now, minutes(2)), 900, "STS's floor: the session policy ends them");
        assert_eq!(session_seconds(fifteen, minutes(5), minutes(2)), 900, "past the deadline: still the floor");
    }

    #[test]
    fn session_names_carry_owner_and_grant_within_sts_limits() {
        let request = hourglass_core::AccessRequest::file(
            hourglass_core::RequestId::from_random(1),
            hourglass_core::NewRequest {
                requester: "alice@acme.example".into(),
                resource: "aws-prod".into(),
                role: "operator".into(),
                duration: Duration::from_mins(30),
                reason: String::new(),
                ticket: None,
                break_glass: false,
                renews: None,
            },
            Vec::new(),
            Duration::from_mins(5),
            DEADLINE,
        );
        let grant = Grant::start(hourglass_core::GrantId::from_random(7), &request, KIND, DEADLINE);
        let suffix = grant.id.as_str().trim_start_matches(hourglass_core::GrantId::PREFIX).to_owned();
        let name = session_name("alice@acme.example", &grant);
        assert_eq!(name, format!("alice@acme.example.{suffix}"));
        assert!(hourglass_aws::session_name_is_valid(&name), "{name}");
        let long = session_name(&format!("{}:with spaces/{}", "x".repeat(80), "y"), &grant);
        assert!(long.len() <= 64 && long.ends_with(&suffix), "cut from the owner, never the grant: {long}");
        assert!(hourglass_aws::session_name_is_valid(&long), "only characters STS takes: {long}");
        assert_eq!(deny_policy_name(&grant), format!("hourglass-revoked-{suffix}"));
        let deny: Value = serde_json::from_str(&deny_document(&name)).expect("JSON");
        assert_eq!(deny["Statement"][0]["Condition"]["StringLike"]["aws:userid"], format!("*:{name}"), "{deny}");
    }

    /// The provider against moto's server (IAM authentication on): an
    /// early revocation denies that session on the role, read back; the
    /// other grant's session of the role is not named; an expiry denies
    /// nothing; the deny goes once the session's keys have ended, not
    /// before.
    #[tokio::test(flavor = "multi_thread")]
    async fn aws_revoked_session_is_denied_on_the_role_until_its_keys_end() {
        let moto = tokio::task::spawn_blocking(hourglass_e2e::moto::Moto::start).await.expect("moto starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let store = crate::store::Store::open_sqlite(&dir.path().join("hourglass.db")).await.expect("a store");
        let env = hourglass_aws::Env::from_vars(moto.broker_env());
        let provider = AwsProvider::with_env(SharedRecord::new(store, REVOCATIONS), Some(env)).expect("provider");
        let toml = format!(
            "[workflows.w]\napprovals = [{{ group = \"g\", count = 1 }}]\n[resources.aws]\nprovider = \"aws\"\n\
             workflow = \"w\"\nsettings = {{ region = \"us-east-1\", sts_endpoint = \"{url}\", iam_endpoint = \"{url}\" }}\n\
             [resources.aws.roles.operator]\nsettings = {{ role_arn = \"{arn}\" }}\n",
            url = moto.url,
            arn = moto.role_arn("operator"),
        );
        let policy = hourglass_policy::Policy::from_sources(vec![("hourglass.toml".into(), toml)]).expect("policy");
        let resource = &policy.resources["aws"];
        let role = &resource.roles["operator"];
        // Whole seconds, as the session policy writes the deadline.
        let now = crate::clock::Clock::now(&crate::clock::SystemClock);
        let now = Timestamp::from_unix_millis(now.unix_seconds() * 1000);
        let mut grants = Vec::new();
        for n in 0..2 {
            let request = hourglass_core::AccessRequest::file(
                hourglass_core::RequestId::from_random(n),
                hourglass_core::NewRequest {
                    requester: "alice@acme.example".into(),
                    resource: "aws".into(),
                    role: "operator".into(),
                    duration: Duration::from_hours(1),
                    reason: String::new(),
                    ticket: Some("OPS-7".into()),
                    break_glass: false,
                    renews: None,
                },
                Vec::new(),
                Duration::from_mins(5),
                now,
            );
            let mut grant = Grant::start(hourglass_core::GrantId::from_random(n + 10), &request, KIND, now);
            let input = IssueInput { grant: &grant, resource, role, now, material: None, ticket: Some("OPS-7") };
            let issued = provider.issue(input).await.expect("issued and verified");
            assert!(issued.ready, "verified with GetCallerIdentity");
            grant.activate(true, now);
            grants.push((grant, issued.state));
        }
        let policies = |role: &'static str| {
            let moto = &moto;
            tokio::task::block_in_place(move || moto.role_policies(role))
        };

        // The first grant revoked early: its session denied, the other's not.
        let (first, first_state) = &grants[0];
        let verification = provider.revoke(first, first_state, now).await.expect("revoked");
        assert_eq!(verification["denied"], true, "{verification:?}");
        let denies: Vec<(String, Value)> =
            policies("operator").into_iter().filter(|(name, _)| name.starts_with("hourglass-revoked-")).collect();
        assert_eq!(denies.len(), 1, "one deny, for the revoked grant: {denies:?}");
        let named = denies[0].1["Statement"][0]["Condition"]["StringLike"]["aws:userid"].to_string();
        let (second, second_state) = &grants[1];
        assert!(named.contains(&session_name(&first.owner, first)), "the revoked session: {named}");
        assert!(!named.contains(&session_name(&second.owner, second)), "never the other grant's: {named}");

        // The second reaches its deadline: its keys end by their session
        // policy, nothing goes on the role.
        let verification =
            provider.revoke(second, second_state, second.expires_at.plus_millis(1)).await.expect("expired");
        assert_eq!(verification["denied"], false, "an expiry denies nothing: {verification:?}");

        // The deny stays while the revoked session's keys may live (to the
        // grant's deadline, an hour, and a minute for clocks), then goes.
        assert_eq!(provider.remove_ended_denials(now.plus_millis(60 * 60_000)).await, Ok(0), "not before");
        assert_eq!(policies("operator").len(), 2, "the role's own policy and the deny");
        assert_eq!(provider.remove_ended_denials(now.plus_millis(61 * 60_000 + 1)).await, Ok(1), "then removed");
        let left: Vec<String> = policies("operator").into_iter().map(|(name, _)| name).collect();
        assert_eq!(left, ["work"], "only the role's own policy is left");
        assert_eq!(provider.remove_ended_denials(now.plus_millis(20 * 60_000)).await, Ok(0), "and forgotten");
    }

    #[test]
    fn settings_that_aws_would_refuse_are_refused_when_the_policy_loads() {
        let cases: &[(&str, &str, &str)] = &[
            ("role_arn = \"arn:aws:iam::123456789012:user/bob\"", "role_arn", "a user is not a role"),
            ("role_arn = \"operator\"", "role_arn", "a name is not an ARN"),
            (
                "role_arn = \"arn:aws:iam::123456789012:role/op\"\nsession_policy = \"{}\"",
                "Statement",
                "a session policy needs statements",
            ),
            (
                "role_arn = \"arn:aws:iam::123456789012:role/op\"\npolicy_arns = [\"ReadOnlyAccess\"]",
                "managed policy ARN",
                "managed policies by ARN",
            ),
            ("role_arn = \"arn:aws:iam::123456789012:role/op\"\nmystery = 1", "mystery", "typos are refused"),
        ];
        for (settings, expected, why) in cases {
            let table: toml::Table = settings.parse().expect("TOML");
            let error = RoleSettings::parse(&table).err().unwrap_or_default();
            assert!(error.contains(expected), "{why}: {error:?}");
        }
        assert!(check_endpoint("http://sts.example.com").is_err(), "keys never over plain HTTP off this machine");
        assert!(check_endpoint("http://127.0.0.1:5000").is_ok(), "a local test server");
        assert!(check_endpoint("https://sts.eu-west-1.amazonaws.com").is_ok());
    }
}
