//! What the agent holds, and the rules that change it. No I/O and no clock
//! here: callers pass `now` (this machine's clock) and what the broker said.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use hourglass_core::api::{ClientSecret, Credential, EnvVar};
use hourglass_core::{Grant, GrantId, GrantState, RequestId, Timestamp};
use zeroize::Zeroizing;

use crate::clock::BrokerClock;

use super::protocol::{
    AgentError, AgentErrorCode, ClientSecretValue, GitAnswer, HeldCredential, HeldGrant, HookGrant, HookSnapshot,
    Selector, VERSION,
};
use crate::pgpass;
use crate::tools;

/// Ended grants remembered, so that asking for one gets "it expired"
/// rather than "never heard of it".
const ENDED_KEPT: usize = 64;
/// A secret whose request was never decided is dropped after this long.
const WAITING_MAX_MILLIS: i64 = 24 * 3600 * 1000;

/// A client-made secret, parsed. Both variants zeroize on drop.
pub(crate) enum Secret {
    Postgres(Zeroizing<String>),
    Ssh(Box<ssh_key::PrivateKey>),
}

impl Secret {
    fn parse(value: &ClientSecretValue) -> Result<Secret, AgentError> {
        match value {
            ClientSecretValue::PostgresPassword(password) => {
                if password.is_empty() || password.contains(['\n', '\0']) {
                    return Err(invalid("the PostgreSQL password is empty or has control characters"));
                }
                Ok(Secret::Postgres(Zeroizing::new(password.clone())))
            }
            ClientSecretValue::SshPrivateKey(pem) => {
                let key = ssh_key::PrivateKey::from_openssh(pem.as_bytes())
                    .map_err(|_| invalid("the SSH private key is not an OpenSSH private key"))?;
                if key.is_encrypted() {
                    return Err(invalid("the SSH private key is encrypted; the agent needs it in the clear"));
                }
                Ok(Secret::Ssh(Box::new(key)))
            }
        }
    }

    /// Whether this secret completes credentials of `kind`.
    fn completes(&self, kind: ClientSecret) -> bool {
        matches!(
            (self, kind),
            (Secret::Postgres(_), ClientSecret::PostgresPassword) | (Secret::Ssh(_), ClientSecret::SshPrivateKey)
        )
    }

    fn provider(&self) -> &'static str {
        match self {
            Secret::Postgres(_) => "postgres",
            Secret::Ssh(_) => "ssh",
        }
    }
}

fn invalid(message: &str) -> AgentError {
    AgentError::new(AgentErrorCode::InvalidRequest, message)
}

/// One grant the agent holds.
pub(crate) struct Held {
    pub grant: Grant,
    /// `None` until fetched, and again once the deadline passed here.
    pub credential: Option<Credential>,
    /// The deadline passed on this machine's clock: the credential is
    /// dropped. The client's secret stays until the broker confirms the
    /// end, in case a renewal was missed while offline.
    pub expired_locally: bool,
    pub secret: Option<Arc<Secret>>,
    /// The agent checks the credential works and tells the broker.
    pub confirm_ready: bool,
    /// A readiness check ran (or runs) for this deadline.
    pub confirming: bool,
    /// Why the credential cannot be fetched or completed, when it cannot.
    pub problem: Option<String>,
    /// When to fetch a fresh credential while the grant lives (this
    /// machine's clock): its credential ends before the grant does
    /// ([`Credential::refresh_at`]), or the last fetch failed.
    pub refresh_at: Option<Timestamp>,
}

/// How long after a failed refresh the agent tries again.
const REFRESH_RETRY_MILLIS: i64 = 15_000;

struct Waiting {
    secret: Arc<Secret>,
    confirm_ready: bool,
    stored_at: Timestamp,
}

/// Why a grant is no longer held.
#[derive(Debug, Clone)]
pub(crate) struct Ended {
    pub id: GrantId,
    pub resource: String,
    pub role: String,
    /// `None` when the broker did not say (the grant left the list).
    pub state: Option<GrantState>,
    pub at: Timestamp,
}

/// What the effects should look like now: the hook file's line, the
/// identities in ssh-agent, the lines of the managed `.pgpass` block.
#[derive(Clone)]
pub(crate) struct Desired {
    pub hook_line: String,
    pub ssh: Vec<SshIdentity>,
    pub pgpass: Vec<pgpass::Entry>,
}

#[derive(Clone)]
pub(crate) struct SshIdentity {
    pub grant: GrantId,
    pub comment: String,
    pub key: Arc<Secret>,
    pub certificate: String,
    pub local_deadline: Timestamp,
}

/// A PostgreSQL login the agent makes once to confirm a grant works.
pub(crate) struct ReadyCheck {
    pub grant: GrantId,
    pub env: Vec<EnvVar>,
    pub password: Zeroizing<String>,
}

pub(crate) struct State {
    /// Distinguishes this agent's hook lines from a previous run's.
    boot: String,
    generation: u64,
    /// The broker's clock, as the feed measured it.
    pub clock: BrokerClock,
    pub principal: Option<String>,
    pub online: bool,
    held: BTreeMap<GrantId, Held>,
    waiting: HashMap<RequestId, Waiting>,
    ended: VecDeque<Ended>,
}

impl State {
    pub fn new(boot: String, clock: BrokerClock) -> State {
        State {
            boot,
            generation: 0,
            clock,
            principal: None,
            online: false,
            held: BTreeMap::new(),
            waiting: HashMap::new(),
            ended: VecDeque::new(),
        }
    }

    /// The hook file's content: changes whenever what shells export changes.
    pub fn hook_line(&self) -> String {
        format!("{VERSION}:{}:{}", self.boot, self.generation)
    }

    pub fn bump(&mut self) {
        self.generation += 1;
    }

    /// A broker instant on this machine's clock.
    pub fn local(&self, at: Timestamp) -> Timestamp {
        self.clock.to_local(at)
    }

    /// The broker's clock moved against this machine's: every local
    /// deadline moves with it. Returns whether it changed.
    pub fn set_clock(&mut self, clock: BrokerClock) -> bool {
        let changed = self.clock != clock;
        self.clock = clock;
        changed
    }

    pub fn is_mine(&self, grant: &Grant) -> bool {
        self.principal.as_deref() == Some(grant.owner.as_str())
    }

    pub fn held_ids(&self) -> Vec<GrantId> {
        self.held.keys().cloned().collect()
    }

    /// Whether `grant` (live on the broker) needs its credential fetched.
    pub fn needs_credential(&self, grant: &Grant) -> bool {
        match self.held.get(&grant.id) {
            None => true,
            Some(held) => {
                held.grant.expires_at != grant.expires_at || (held.credential.is_none() && !held.expired_locally)
            }
        }
    }

    /// Takes in a live grant and, when fetched, its credential. Returns
    /// whether what tools see changed.
    pub fn upsert(&mut self, grant: Grant, credential: Option<Credential>, now: Timestamp) -> bool {
        let waiting = self.waiting.remove(&grant.request_id);
        let past_deadline = grant.is_past_deadline(self.clock.broker_time(now));
        let held = self.held.entry(grant.id.clone()).or_insert_with(|| Held {
            grant: grant.clone(),
            credential: None,
            expired_locally: false,
            secret: None,
            confirm_ready: false,
            confirming: false,
            problem: None,
            refresh_at: None,
        });
        let mut changed = false;
        if let Some(waiting) = waiting
            && held.secret.is_none()
        {
            held.secret = Some(waiting.secret);
            held.confirm_ready = waiting.confirm_ready;
            changed = true;
        }
        if held.grant.expires_at != grant.expires_at {
            held.confirming = false; // a new deadline (a new certificate): check again
            changed = true;
        }
        held.grant = grant;
        if let Some(credential) = credential {
            changed |= held.credential.as_ref() != Some(&credential) || held.expired_locally;
            held.refresh_at = credential.refresh_at(self.clock.broker_time(now)).map(|at| self.clock.to_local(at));
            held.credential = Some(credential);
            held.expired_locally = false;
            held.problem = None;
        }
        if held.credential.is_some() && past_deadline {
            held.credential = None;
            held.expired_locally = true;
        }
        changed
    }

    /// Records why a grant's credential could not be fetched.
    pub fn set_problem(&mut self, id: &GrantId, problem: String) {
        if let Some(held) = self.held.get_mut(id) {
            held.problem = Some(problem);
        }
    }

    /// The broker says the grant ended: forget it, secrets and all.
    pub fn end(&mut self, id: &GrantId, state: Option<GrantState>, now: Timestamp) -> bool {
        let Some(held) = self.held.remove(id) else { return false };
        let had_credential = held.credential.is_some();
        if !held.expired_locally {
            self.remember_end(&held.grant, state, now);
        } else if let Some(state) = state
            && let Some(ended) = self.ended.iter_mut().find(|ended| ended.id == *id)
        {
            ended.state = Some(state);
        }
        had_credential
    }

    fn remember_end(&mut self, grant: &Grant, state: Option<GrantState>, at: Timestamp) {
        self.ended.retain(|ended| ended.id != grant.id);
        self.ended.push_back(Ended {
            id: grant.id.clone(),
            resource: grant.resource.clone(),
            role: grant.role.clone(),
            state,
            at,
        });
        while self.ended.len() > ENDED_KEPT {
            self.ended.pop_front();
        }
    }

    /// Drops every credential whose deadline passed on this machine's
    /// clock. Works with the broker unreachable.
    pub fn expire_due(&mut self, now: Timestamp) -> bool {
        let broker_now = self.clock.broker_time(now);
        // Keys that end before their grant and could not be refreshed in
        // time: dead, so no tool is handed them; fetched again at the
        // next refresh.
        let mut changed = false;
        for held in self.held.values_mut() {
            if let Some(credential) = &held.credential
                && credential.valid_until.is_some_and(|ends| ends <= broker_now)
                && !held.grant.is_past_deadline(broker_now)
            {
                let ended = credential.ends_at();
                held.credential = None;
                held.problem = Some(format!("its keys ended at {ended} and fresh ones could not be fetched yet"));
                held.refresh_at = Some(held.refresh_at.map_or(now, |at| at.min(now)));
                changed = true;
            }
        }
        let due: Vec<Grant> = self
            .held
            .values_mut()
            .filter(|held| held.credential.is_some() && held.grant.is_past_deadline(broker_now))
            .map(|held| {
                held.credential = None;
                held.expired_locally = true;
                held.grant.clone()
            })
            .collect();
        for grant in &due {
            self.remember_end(grant, Some(GrantState::Expired), now);
        }
        // Secrets of requests nobody decided do not wait forever.
        self.waiting.retain(|_, waiting| waiting.stored_at.millis_until(now) < WAITING_MAX_MILLIS);
        changed || !due.is_empty()
    }

    /// The next moment (this machine's clock) something held changes by
    /// itself: a credential ends, or one is due for a fresh fetch.
    pub fn next_wakeup(&self) -> Option<Timestamp> {
        let ends = self.held.values().filter_map(|held| held.credential.as_ref()).map(|c| self.local(c.ends_at()));
        let refreshes = self.held.values().filter(|held| !held.expired_locally).filter_map(|held| held.refresh_at);
        ends.chain(refreshes).min()
    }

    /// Grants whose credential is due for a fresh fetch at `now`; each is
    /// handed out once, and again [`REFRESH_RETRY_MILLIS`] later should
    /// that fetch fail (a success sets the next refresh).
    pub fn take_refreshes(&mut self, now: Timestamp) -> Vec<Grant> {
        self.held
            .values_mut()
            .filter(|held| !held.expired_locally && held.refresh_at.is_some_and(|at| at <= now))
            .map(|held| {
                held.refresh_at = Some(now.plus_millis(REFRESH_RETRY_MILLIS));
                held.grant.clone()
            })
            .collect()
    }

    /// Keeps a client-made secret for `request` (and its grant).
    pub fn store_secret(
        &mut self,
        request: RequestId,
        grant: Option<GrantId>,
        value: &ClientSecretValue,
        confirm_ready: bool,
        now: Timestamp,
    ) -> Result<bool, AgentError> {
        let secret = Arc::new(Secret::parse(value)?);
        let held = self
            .held
            .values_mut()
            .find(|held| grant.as_ref() == Some(&held.grant.id) || held.grant.request_id == request);
        match held {
            Some(held) => {
                if held.grant.provider != secret.provider() {
                    return Err(invalid(&format!(
                        "grant {} is a {} grant; a {} secret does not complete it",
                        held.grant.id,
                        held.grant.provider,
                        secret.provider()
                    )));
                }
                held.secret = Some(secret);
                held.confirm_ready = confirm_ready;
                held.confirming = false;
                Ok(held.credential.is_some())
            }
            None => {
                self.waiting.insert(request, Waiting { secret, confirm_ready, stored_at: now });
                Ok(false)
            }
        }
    }

    /// A request that will never produce a grant: its secret goes.
    pub fn forget_request(&mut self, request: &RequestId) {
        self.waiting.remove(request);
    }

    fn find(&self, selector: &Selector) -> Result<&Held, AgentError> {
        match selector {
            Selector::Grant { grant } => match self.held.get(grant) {
                Some(held) if held.credential.is_some() => Ok(held),
                Some(held) if held.expired_locally => Err(self.ended_error(grant)),
                Some(held) => Err(AgentError::new(
                    AgentErrorCode::NotFound,
                    match &held.problem {
                        Some(problem) => format!("the agent has no credential for grant {grant} yet: {problem}"),
                        None => format!("the agent has no credential for grant {grant} yet (it is being issued)"),
                    },
                )),
                None if self.ended.iter().any(|ended| ended.id == *grant) => Err(self.ended_error(grant)),
                None => Err(AgentError::new(
                    AgentErrorCode::NotFound,
                    format!("no live grant {grant} is held by the agent (see `hourglass grants`)"),
                )),
            },
            Selector::Resource { resource, role } => {
                let mut matching: Vec<&Held> = self
                    .held
                    .values()
                    .filter(|held| held.credential.is_some())
                    .filter(|held| held.grant.resource == *resource)
                    .filter(|held| role.as_ref().is_none_or(|role| held.grant.role == *role))
                    .collect();
                matching.sort_by_key(|held| held.grant.expires_at);
                match matching.as_slice() {
                    [] => Err(AgentError::new(
                        AgentErrorCode::NotFound,
                        format!(
                            "no live grant on {selector} is held by the agent (request one with `hourglass request`)"
                        ),
                    )),
                    [only] => Ok(only),
                    several => {
                        let roles: std::collections::BTreeSet<&str> =
                            several.iter().map(|held| held.grant.role.as_str()).collect();
                        if role.is_none() && roles.len() > 1 {
                            let ids: Vec<String> = several.iter().map(|held| held.grant.id.to_string()).collect();
                            return Err(AgentError::new(
                                AgentErrorCode::Ambiguous,
                                format!(
                                    "several live grants on {resource} ({}): name one, or RESOURCE/ROLE",
                                    ids.join(", ")
                                ),
                            ));
                        }
                        // Same role twice (a grant and its successor): the
                        // one that lasts longest.
                        several.last().copied().ok_or_else(|| AgentError::new(AgentErrorCode::NotFound, "none"))
                    }
                }
            }
        }
    }

    fn ended_error(&self, id: &GrantId) -> AgentError {
        let how = match self.ended.iter().find(|ended| ended.id == *id) {
            Some(ended) => {
                let what = format!("{}/{}", ended.resource, ended.role);
                match ended.state {
                    Some(GrantState::Expired) => format!("expired at {} ({what})", ended.at),
                    Some(GrantState::Revoked) => format!("was revoked ({what})"),
                    Some(GrantState::Failed) => format!("failed ({what})"),
                    _ => format!("has ended ({what})"),
                }
            }
            None => "has ended".to_owned(),
        };
        AgentError::new(
            AgentErrorCode::Ended,
            format!("grant {id} {how}: request access again with `hourglass request`"),
        )
    }

    /// The credential of `held`, completed with the client's own secret.
    fn complete(held: &Held) -> Result<Credential, AgentError> {
        let Some(credential) = held.credential.as_ref() else {
            return Err(AgentError::new(AgentErrorCode::NotFound, format!("no credential for {}", held.grant.id)));
        };
        let mut credential = credential.clone();
        let Some(kind) = credential.client_secret else { return Ok(credential) };
        match held.secret.as_deref() {
            Some(secret) if secret.completes(kind) => {
                if let Secret::Postgres(password) = secret {
                    credential.env.push(EnvVar {
                        name: "PGPASSWORD".into(),
                        value: password.to_string(),
                        secret: true,
                    });
                }
                Ok(credential)
            }
            _ => {
                let what = match kind {
                    ClientSecret::PostgresPassword => "password",
                    ClientSecret::SshPrivateKey => "SSH key",
                };
                Err(AgentError::new(
                    AgentErrorCode::Incomplete,
                    format!(
                        "the agent does not hold the {what} of grant {} (it was made by another client, or before the agent restarted): request access again from this machine",
                        held.grant.id
                    ),
                ))
            }
        }
    }

    pub fn credential(&self, selector: &Selector) -> Result<HeldCredential, AgentError> {
        let held = self.find(selector)?;
        let credential = State::complete(held)?;
        Ok(HeldCredential {
            local_expires_at: self.local(credential.ends_at()),
            credential,
            owner: held.grant.owner.clone(),
        })
    }

    /// Every complete live credential, oldest grant first: what shells export.
    pub fn hook_snapshot(&self) -> HookSnapshot {
        let mut held: Vec<&Held> = self.held.values().filter(|held| held.credential.is_some()).collect();
        held.sort_by_key(|held| (held.grant.issued_at, held.grant.id.clone()));
        let grants = held
            .into_iter()
            .filter_map(|held| {
                let credential = State::complete(held).ok()?;
                Some(HookGrant {
                    id: held.grant.id.clone(),
                    deadline: self.local(credential.ends_at()).unix_seconds(),
                    env: credential.env.clone(),
                })
            })
            .collect();
        HookSnapshot { state: self.hook_line(), grants }
    }

    pub fn held_grants(&self) -> Vec<HeldGrant> {
        self.held
            .values()
            .filter(|held| held.credential.is_some() || !held.expired_locally)
            .map(|held| {
                let complete = State::complete(held);
                HeldGrant {
                    id: held.grant.id.clone(),
                    resource: held.grant.resource.clone(),
                    role: held.grant.role.clone(),
                    provider: held.grant.provider.clone(),
                    state: held.grant.state,
                    expires_at: held.grant.expires_at,
                    local_expires_at: self.local(held.grant.expires_at),
                    ready: held.grant.ready_at.is_some(),
                    complete: complete.is_ok(),
                    env: held
                        .credential
                        .as_ref()
                        .map(|c| c.env.iter().map(|v| v.name.clone()).collect())
                        .unwrap_or_default(),
                    problem: held.problem.clone().or_else(|| complete.err().map(|e| e.message)),
                }
            })
            .collect()
    }

    pub fn waiting_secrets(&self) -> usize {
        self.waiting.len()
    }

    /// The token grant whose audience is the git server at `host`.
    pub fn git(&self, protocol: Option<&str>, host: &str) -> Option<GitAnswer> {
        let mut matching: Vec<(&Held, Credential)> = self
            .held
            .values()
            .filter_map(|held| State::complete(held).ok().map(|credential| (held, credential)))
            .filter(|(_, credential)| tools::git::serves(credential, protocol, host))
            .collect();
        matching.sort_by_key(|(held, _)| held.grant.expires_at);
        let (held, credential) = matching.pop()?;
        let token = tools::token(&credential).ok()?;
        Some(GitAnswer {
            username: held.grant.owner.clone(),
            password: token.to_owned(),
            expires: self.local(held.grant.expires_at).unix_seconds(),
            grant: held.grant.id.clone(),
        })
    }

    /// What ssh-agent, `.pgpass` and the hook file should show now.
    pub fn desired(&self) -> Desired {
        let mut ssh = Vec::new();
        let mut pgpass = Vec::new();
        for held in self.held.values() {
            let (Some(credential), Some(secret)) = (&held.credential, &held.secret) else { continue };
            match &**secret {
                Secret::Ssh(_) => {
                    if let Some(certificate) = &credential.ssh_certificate {
                        ssh.push(SshIdentity {
                            grant: held.grant.id.clone(),
                            comment: format!("hourglass {} {}/{}", held.grant.id, held.grant.resource, held.grant.role),
                            key: secret.clone(),
                            certificate: certificate.clone(),
                            local_deadline: self.local(held.grant.expires_at),
                        });
                    }
                }
                Secret::Postgres(password) => {
                    let var = |name: &str| credential.env.iter().find(|v| v.name == name).map(|v| v.value.clone());
                    if let (Some(host), Some(user)) = (var("PGHOST"), var("PGUSER")) {
                        pgpass.push(pgpass::Entry {
                            host,
                            port: var("PGPORT").unwrap_or_else(|| "5432".into()),
                            database: var("PGDATABASE").unwrap_or_else(|| "*".into()),
                            user,
                            password: password.clone(),
                            grant: held.grant.id.clone(),
                        });
                    }
                }
            }
        }
        Desired { hook_line: self.hook_line(), ssh, pgpass }
    }

    /// PostgreSQL grants the agent should log in to once and confirm
    /// ready; each is handed out once per deadline.
    pub fn take_ready_checks(&mut self) -> Vec<ReadyCheck> {
        let mut checks = Vec::new();
        for held in self.held.values_mut() {
            if !held.confirm_ready || held.confirming || held.grant.ready_at.is_some() {
                continue;
            }
            let (Some(credential), Some(secret)) = (&held.credential, &held.secret) else { continue };
            if let Secret::Postgres(password) = &**secret {
                held.confirming = true;
                checks.push(ReadyCheck {
                    grant: held.grant.id.clone(),
                    env: credential.env.clone(),
                    password: password.clone(),
                });
            }
        }
        checks
    }
}

#[cfg(test)]
mod tests {
    use hourglass_core::api::EnvVar;
    use hourglass_core::{Duration, RequestId};

    use super::*;

    const NOW: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);

    fn grant(n: u64, provider: &str, expires: Timestamp) -> Grant {
        let request = hourglass_core::AccessRequest::file(
            RequestId::from_random(n),
            hourglass_core::NewRequest {
                requester: "alice@acme.example".into(),
                resource: format!("res{n}"),
                role: "read".into(),
                duration: Duration::from_mins(5),
                reason: "r".into(),
                ticket: None,
                break_glass: false,
                renews: None,
            },
            Vec::new(),
            Duration::from_mins(5),
            NOW,
        );
        let mut grant = Grant::start(GrantId::from_random(n), &request, provider, NOW);
        grant.activate(false, NOW);
        grant.expires_at = expires;
        grant
    }

    fn credential(grant: &Grant, env: &[(&str, &str)], client_secret: Option<ClientSecret>) -> Credential {
        Credential {
            grant_id: grant.id.clone(),
            resource: grant.resource.clone(),
            role: grant.role.clone(),
            provider: grant.provider.clone(),
            expires_at: grant.expires_at,
            valid_until: None,
            env: env.iter().map(|(n, v)| EnvVar { name: (*n).into(), value: (*v).into(), secret: false }).collect(),
            ssh_certificate: None,
            client_secret,
        }
    }

    fn state() -> State {
        let mut state = State::new("boot".into(), BrokerClock::default());
        state.principal = Some("alice@acme.example".into());
        state
    }

    #[test]
    fn credentials_are_dropped_at_the_local_deadline_with_the_broker_clock_ahead() {
        let mut state = state();
        // The broker's clock is 10 s ahead of ours: its deadline comes 10 s earlier here.
        state.set_clock(BrokerClock::with_offset(10_000));
        let g = grant(1, "token", NOW.plus_millis(60_000));
        let c = credential(&g, &[("A_TOKEN", "t")], None);
        assert!(state.upsert(g.clone(), Some(c), NOW), "a new credential is a change");
        assert_eq!(state.next_wakeup(), Some(NOW.plus_millis(50_000)), "the deadline on our clock");
        assert!(!state.expire_due(NOW.plus_millis(49_999)), "not before");
        assert!(state.expire_due(NOW.plus_millis(50_000)), "dropped at the local deadline");
        let error = state.credential(&Selector::Grant { grant: g.id.clone() }).expect_err("gone");
        assert_eq!(error.code, AgentErrorCode::Ended, "says it ended: {error}");
        assert!(error.message.contains("expired"), "says how: {error}");
        assert!(state.hook_snapshot().grants.is_empty(), "shells drop it");
    }

    #[test]
    fn short_lived_keys_are_refreshed_halfway_and_dropped_at_their_own_end() {
        let mut state = state();
        let g = grant(4, "aws", NOW.plus_millis(3_600_000));
        let mut c = credential(&g, &[("AWS_ACCESS_KEY_ID", "ASIA1")], None);
        c.valid_until = Some(NOW.plus_millis(900_000));
        state.upsert(g.clone(), Some(c.clone()), NOW);
        assert_eq!(state.next_wakeup(), Some(NOW.plus_millis(450_000)), "halfway through the keys' 15 minutes");
        assert!(state.take_refreshes(NOW.plus_millis(449_999)).is_empty(), "not before");
        let due = state.take_refreshes(NOW.plus_millis(450_000));
        assert_eq!(due.len(), 1, "due once");
        assert_eq!(due[0].id, g.id, "the grant whose keys are due");
        assert!(state.take_refreshes(NOW.plus_millis(450_001)).is_empty(), "handed out once");
        let served = state.credential(&Selector::Grant { grant: g.id.clone() }).expect("still served");
        assert_eq!(served.local_expires_at, NOW.plus_millis(900_000), "tools are told the keys' own end");
        // The fetch failed; the keys end with nothing fresh: nobody gets them.
        assert!(state.expire_due(NOW.plus_millis(900_000)), "dead keys are a change");
        let error = state.credential(&Selector::Grant { grant: g.id.clone() }).expect_err("dead keys");
        assert!(error.message.contains("keys ended"), "says why: {error}");
        assert!(state.hook_snapshot().grants.is_empty(), "shells drop them");
        assert!(!state.take_refreshes(NOW.plus_millis(900_000)).is_empty(), "and the agent keeps trying");
        // A fresh copy arrives: served again, next refresh halfway through it.
        c.valid_until = Some(NOW.plus_millis(1_800_000));
        assert!(state.upsert(g.clone(), Some(c), NOW.plus_millis(900_000)), "fresh keys are a change");
        assert!(state.credential(&Selector::Grant { grant: g.id.clone() }).is_ok(), "served again");
        assert_eq!(state.next_wakeup(), Some(NOW.plus_millis(1_350_000)), "halfway through the fresh keys");
    }

    #[test]
    fn time_left_follows_the_broker_clock_whatever_this_machine_says() {
        // This machine's clock is an hour behind the broker's; then NTP
        // corrects it while a grant is held.
        let broker_now = NOW;
        let local_now = NOW.plus_millis(-3_600_000);
        let mut state = state();
        let clock = BrokerClock::default().observe(broker_now, local_now).expect("the offset is learned");
        assert!(state.set_clock(clock), "a new offset is a change");
        let g = grant(3, "token", broker_now.plus_millis(600_000));
        let c = credential(&g, &[("A_TOKEN", "t")], None);
        state.upsert(g.clone(), Some(c), local_now);
        let held = state.held_grants();
        assert_eq!(held[0].expires_at, g.expires_at, "the broker's deadline, as it said");
        assert_eq!(
            held[0].local_expires_at,
            local_now.plus_millis(600_000),
            "ten minutes left on this machine's clock, not an hour and ten"
        );
        assert_eq!(
            state.hook_snapshot().grants[0].deadline,
            local_now.plus_millis(600_000).unix_seconds(),
            "shells count down to the same instant"
        );
        assert!(!state.expire_due(local_now.plus_millis(599_999)), "not before ten minutes pass");

        // The local clock jumps to the right time: the offset follows at the next sync.
        let corrected = clock.observe(broker_now.plus_millis(60_000), broker_now.plus_millis(60_000));
        assert!(state.set_clock(corrected.expect("the clocks agree now")), "a changed offset");
        assert_eq!(state.held_grants()[0].local_expires_at, g.expires_at, "deadline re-read on the corrected clock");
        assert!(!state.expire_due(broker_now.plus_millis(599_999)), "nine minutes on");
        assert!(state.expire_due(g.expires_at), "ended at the broker's deadline");
    }

    #[test]
    fn a_renewal_seen_after_a_local_expiry_brings_the_credential_back_with_its_secret() {
        let mut state = state();
        let g = grant(2, "postgres", NOW.plus_millis(5_000));
        let value = ClientSecretValue::PostgresPassword("pw".into());
        state.store_secret(g.request_id.clone(), None, &value, false, NOW).expect("stored while pending");
        assert_eq!(state.waiting_secrets(), 1, "waits for the grant");
        let c = credential(&g, &[("PGHOST", "h"), ("PGUSER", "u")], Some(ClientSecret::PostgresPassword));
        state.upsert(g.clone(), Some(c.clone()), NOW);
        assert_eq!(state.waiting_secrets(), 0, "attached to the grant");
        let held = state.credential(&Selector::Grant { grant: g.id.clone() }).expect("complete");
        assert!(
            held.credential.env.iter().any(|v| v.name == "PGPASSWORD" && v.value == "pw" && v.secret),
            "PGPASSWORD completes it"
        );
        assert!(state.expire_due(NOW.plus_millis(6_000)), "expired here while offline");
        let mut renewed = g.clone();
        renewed.expires_at = NOW.plus_millis(600_000);
        assert!(state.needs_credential(&renewed), "a moved deadline is fetched again");
        assert!(!state.needs_credential(&g), "the same deadline is not brought back");
        let c2 = credential(&renewed, &[("PGHOST", "h"), ("PGUSER", "u")], Some(ClientSecret::PostgresPassword));
        assert!(state.upsert(renewed, Some(c2), NOW.plus_millis(7_000)), "back");
        assert!(
            state.credential(&Selector::Grant { grant: g.id.clone() }).is_ok(),
            "the password survived the local expiry"
        );
        assert!(state.end(&g.id, Some(GrantState::Revoked), NOW), "the broker's end removes it");
        let error = state.credential(&Selector::Grant { grant: g.id }).expect_err("ended");
        assert!(error.message.contains("revoked"), "{error}");
    }

    #[test]
    fn a_client_secret_grant_without_its_secret_is_incomplete_and_not_exported() {
        let mut state = state();
        let g = grant(3, "postgres", NOW.plus_millis(60_000));
        let c = credential(&g, &[("PGUSER", "u")], Some(ClientSecret::PostgresPassword));
        state.upsert(g.clone(), Some(c), NOW);
        let error = state.credential(&Selector::Grant { grant: g.id }).expect_err("incomplete");
        assert_eq!(error.code, AgentErrorCode::Incomplete, "{error}");
        assert!(state.hook_snapshot().grants.is_empty(), "no half credential in shells");
    }

    #[test]
    fn a_secret_of_the_wrong_kind_is_refused() {
        let mut state = state();
        let g = grant(4, "token", NOW.plus_millis(60_000));
        state.upsert(g.clone(), Some(credential(&g, &[], None)), NOW);
        let value = ClientSecretValue::PostgresPassword("pw".into());
        let error = state.store_secret(g.request_id.clone(), Some(g.id), &value, false, NOW).expect_err("refused");
        assert_eq!(error.code, AgentErrorCode::InvalidRequest, "{error}");
    }

    #[test]
    fn hook_snapshots_list_grants_oldest_first_and_the_line_changes_with_them() {
        let mut state = state();
        let first_line = state.hook_line();
        let mut a = grant(5, "token", NOW.plus_millis(60_000));
        let mut b = grant(6, "token", NOW.plus_millis(30_000));
        a.issued_at = NOW;
        b.issued_at = NOW.plus_millis(1);
        state.upsert(b.clone(), Some(credential(&b, &[("X", "b")], None)), NOW);
        state.upsert(a.clone(), Some(credential(&a, &[("X", "a")], None)), NOW);
        state.bump();
        let snapshot = state.hook_snapshot();
        assert_ne!(snapshot.state, first_line, "a change moves the line");
        let ids: Vec<&GrantId> = snapshot.grants.iter().map(|g| &g.id).collect();
        assert_eq!(ids, [&a.id, &b.id], "oldest first, so the newest wins a shared name");
        assert_eq!(snapshot.grants[1].deadline, NOW.plus_millis(30_000).unix_seconds(), "local deadline");
    }

    #[test]
    fn a_resource_selector_picks_the_one_live_grant_or_asks() {
        let mut state = state();
        let mut a = grant(7, "token", NOW.plus_millis(60_000));
        let mut b = grant(8, "token", NOW.plus_millis(90_000));
        a.resource = "api".into();
        b.resource = "api".into();
        b.role = "write".into();
        state.upsert(a.clone(), Some(credential(&a, &[], None)), NOW);
        let one = state.credential(&Selector::Resource { resource: "api".into(), role: None }).expect("one");
        assert_eq!(one.credential.grant_id, a.id, "the only grant on api");
        state.upsert(b.clone(), Some(credential(&b, &[], None)), NOW);
        let error = state.credential(&Selector::Resource { resource: "api".into(), role: None }).expect_err("two");
        assert_eq!(error.code, AgentErrorCode::Ambiguous, "{error}");
        let write = state
            .credential(&Selector::Resource { resource: "api".into(), role: Some("write".into()) })
            .expect("by role");
        assert_eq!(write.credential.grant_id, b.id, "the role decides");
        let none = state.credential(&Selector::Resource { resource: "nope".into(), role: None }).expect_err("none");
        assert_eq!(none.code, AgentErrorCode::NotFound, "{none}");
    }
}
