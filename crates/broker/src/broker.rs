//! The broker: policy, store, providers and event hub behind one handle.
//! The lifecycle operations are in `lifecycle.rs`, expiry in `expiry.rs`.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration as StdDuration;

use hourglass_core::audit::{AuditAction, AuditEvent, AuditResult};
use hourglass_core::principal::SYSTEM_ACTOR;
use hourglass_core::{GrantId, RequestId, Timestamp};
use hourglass_policy::{Policy, Problem};
use tokio::sync::watch;

use crate::alarm::Alarm;
use crate::auth::Authenticator;
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::events::EventHub;
use crate::keys::KeySet;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::notify::channels::Channels;
use crate::provider::Providers;
use crate::settings::LimitSettings;
use crate::store::Store;
use crate::web_login::WebLogin;

pub struct BrokerParts {
    pub store: Store,
    pub policy: Policy,
    /// Where the policy was loaded from, for reloads.
    pub policy_dir: Option<PathBuf>,
    pub providers: Providers,
    pub authenticator: Authenticator,
    /// Sign grant tokens; their public halves are served as the JWKS.
    pub token_keys: Arc<KeySet>,
    pub clock: Arc<dyn Clock>,
    pub provider_timeout: StdDuration,
    /// Per-principal limits (`[broker.limits]`).
    pub limits: LimitSettings,
    /// Where notifications go (`[broker.channels]`).
    pub channels: Channels,
    /// The approval page's login (`[broker.login] web_client_id`); none:
    /// no page.
    pub web_login: Option<WebLogin>,
}

/// Provider revocations in flight at once, across every batch.
const REVOCATIONS_IN_FLIGHT: usize = 64;

pub struct Broker {
    pub(crate) store: Store,
    policy: RwLock<Arc<Policy>>,
    policy_dir: Option<PathBuf>,
    pub(crate) providers: Providers,
    pub(crate) channels: Channels,
    pub(crate) web_login: Option<WebLogin>,
    pub(crate) auth: Authenticator,
    pub(crate) token_keys: Arc<KeySet>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) events: EventHub,
    pub(crate) metrics: Metrics,
    pub(crate) provider_timeout: StdDuration,
    pub(crate) limits: Limits,
    /// When the expiry scheduler looks at the store next.
    pub(crate) alarm: Alarm,
    /// Refusals repeated within a minute, counted rather than each audited.
    pub(crate) refusals: crate::refusals::RefusalLog,
    /// Provider revocations in flight at once, whoever started them (the
    /// scheduler's batches, which it does not wait for, and revocations by
    /// people).
    pub(crate) revocations_in_flight: tokio::sync::Semaphore,
    /// Set once when the broker shuts down; long-lived tasks and event
    /// streams end on it.
    stopping: watch::Sender<bool>,
}

/// What a policy reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    Loaded {
        digest: String,
    },
    /// The new policy was refused; the previous one stays in force.
    Refused {
        problems: Vec<String>,
    },
}

impl Broker {
    /// Assembles a broker. Refuses a policy naming providers or channels
    /// this broker does not have, or settings they do not accept.
    pub fn new(parts: BrokerParts) -> Result<Arc<Broker>> {
        let mut problems = parts.providers.check(&parts.policy);
        problems.extend(parts.channels.check(&parts.policy));
        if !problems.is_empty() {
            return Err(Error::Policy(hourglass_policy::Error::Invalid(problems)));
        }
        Ok(Arc::new(Broker {
            store: parts.store,
            policy: RwLock::new(Arc::new(parts.policy)),
            policy_dir: parts.policy_dir,
            providers: parts.providers,
            channels: parts.channels,
            web_login: parts.web_login,
            auth: parts.authenticator,
            token_keys: parts.token_keys,
            clock: parts.clock,
            events: EventHub::default(),
            metrics: Metrics::default(),
            provider_timeout: parts.provider_timeout,
            limits: Limits::new(parts.limits),
            alarm: Alarm::default(),
            refusals: crate::refusals::RefusalLog::default(),
            revocations_in_flight: tokio::sync::Semaphore::new(REVOCATIONS_IN_FLIGHT),
            stopping: watch::channel(false).0,
        }))
    }

    /// Ends event streams and background tasks.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Has the scheduler look again by `at` (see [`Alarm`]).
    pub(crate) fn schedule(&self, at: Timestamp) {
        self.alarm.ask(at);
    }

    /// Resolves once [`Broker::stop`] was called.
    pub async fn stopping(&self) {
        let mut receiver = self.stopping.subscribe();
        // An error means the sender is gone, which also means stopping.
        let _ = receiver.wait_for(|stopping| *stopping).await;
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The policy in force. Callers keep the `Arc` for the whole operation,
    /// so one decision never mixes two policies.
    pub fn policy(&self) -> Arc<Policy> {
        match self.policy.read() {
            Ok(policy) => Arc::clone(&policy),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn metrics_text(&self) -> String {
        self.metrics.render()
    }

    /// Every grant-token key that verifies now: the signing one, its
    /// successor published ahead, and predecessors in their overlap.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": self.token_keys.jwks(self.now()) })
    }

    /// Records the start of this broker and the policy it enforces.
    pub async fn record_start(&self) -> Result<()> {
        let now = self.now();
        let policy = self.policy();
        let mut tx = self.store.begin().await?;
        tx.audit(
            AuditEvent::new(now, SYSTEM_ACTOR, AuditAction::BrokerStarted, "broker", AuditResult::Ok)
                .detail("version", env!("CARGO_PKG_VERSION")),
        )
        .await?;
        tx.audit(policy_event(now, AuditAction::PolicyLoaded, &policy.digest, AuditResult::Ok)).await?;
        tx.commit().await?;
        self.metrics.policy_load(true);
        Ok(())
    }

    /// Loads the policy directory again. An invalid policy is refused with
    /// every problem named, and the policy in force stays.
    pub async fn reload_policy(&self) -> Result<Reload> {
        let Some(dir) = &self.policy_dir else { return Ok(Reload::Unchanged) };
        let loaded = Policy::load_dir(dir).map_err(problems_of).and_then(|policy| {
            let mut problems = self.providers.check(&policy);
            problems.extend(self.channels.check(&policy));
            if problems.is_empty() { Ok(policy) } else { Err(problems.iter().map(Problem::to_string).collect()) }
        });
        let now = self.now();
        match loaded {
            Ok(policy) if policy.digest == self.policy().digest => Ok(Reload::Unchanged),
            Ok(policy) => {
                let digest = policy.digest.clone();
                let mut tx = self.store.begin().await?;
                tx.audit(policy_event(now, AuditAction::PolicyLoaded, &digest, AuditResult::Ok)).await?;
                tx.commit().await?;
                match self.policy.write() {
                    Ok(mut slot) => *slot = Arc::new(policy),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(policy),
                }
                self.metrics.policy_load(true);
                tracing::info!(digest = %digest, "policy reloaded");
                Ok(Reload::Loaded { digest })
            }
            Err(problems) => {
                let mut tx = self.store.begin().await?;
                tx.audit(
                    policy_event(now, AuditAction::PolicyRefused, &self.policy().digest, AuditResult::Refused)
                        .reason(problems.join("\n")),
                )
                .await?;
                tx.commit().await?;
                self.metrics.policy_load(false);
                for problem in &problems {
                    tracing::error!("policy change refused, previous policy stays in force: {problem}");
                }
                Ok(Reload::Refused { problems })
            }
        }
    }

    pub(crate) fn new_request_id() -> RequestId {
        RequestId::from_random(rand::random())
    }

    pub(crate) fn new_grant_id() -> GrantId {
        GrantId::from_random(rand::random())
    }
}

fn problems_of(error: hourglass_policy::Error) -> Vec<String> {
    match error {
        hourglass_policy::Error::Invalid(problems) => problems.iter().map(Problem::to_string).collect(),
        other => vec![other.to_string()],
    }
}

fn policy_event(now: Timestamp, action: AuditAction, digest: &str, result: AuditResult) -> AuditEvent {
    AuditEvent::new(now, SYSTEM_ACTOR, action, "policy", result).detail("digest", digest)
}
