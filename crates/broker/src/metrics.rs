//! Prometheus metrics at `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = [(&'static str, &'static str); 1];

pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    grants: Family<Labels, Counter>,
    revocation_attempts: Family<Labels, Counter>,
    /// Seconds from a grant's end (deadline or revoke) to the provider
    /// confirming the credential is gone.
    pub revocation_lag: Histogram,
    pub subscribers: Gauge,
    policy_loads: Family<Labels, Counter>,
    notifications: Family<[(&'static str, &'static str); 2], Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hourglass");
        let requests = Family::<Labels, Counter>::default();
        let grants = Family::<Labels, Counter>::default();
        let revocation_attempts = Family::<Labels, Counter>::default();
        let revocation_lag = Histogram::new(exponential_buckets(0.005, 2.0, 16));
        let subscribers = Gauge::default();
        let policy_loads = Family::<Labels, Counter>::default();
        let notifications = Family::<[(&'static str, &'static str); 2], Counter>::default();
        registry.register("requests", "Access requests by outcome", requests.clone());
        registry.register("grants", "Grant lifecycle events", grants.clone());
        registry.register("revocation_attempts", "Provider revocation attempts by result", revocation_attempts.clone());
        registry.register(
            "revocation_lag_seconds",
            "Time from a grant's end to its credential confirmed gone",
            revocation_lag.clone(),
        );
        registry.register("event_subscribers", "Open event streams", subscribers.clone());
        registry.register("policy_loads", "Policy loads by result", policy_loads.clone());
        registry.register(
            "notifications",
            "Notification attempts by channel kind and outcome (sent, retry, skipped, abandoned)",
            notifications.clone(),
        );
        Metrics {
            registry,
            requests,
            grants,
            revocation_attempts,
            revocation_lag,
            subscribers,
            policy_loads,
            notifications,
        }
    }
}

impl Metrics {
    pub fn request(&self, outcome: &'static str) {
        self.requests.get_or_create(&[("outcome", outcome)]).inc();
    }

    pub fn grant(&self, event: &'static str) {
        self.grants.get_or_create(&[("event", event)]).inc();
    }

    pub fn revocation_attempt(&self, ok: bool) {
        self.revocation_attempts.get_or_create(&[("result", if ok { "ok" } else { "failed" })]).inc();
    }

    pub fn notification(&self, kind: &'static str, outcome: &'static str) {
        self.notifications.get_or_create(&[("kind", kind), ("outcome", outcome)]).inc();
    }

    pub fn policy_load(&self, ok: bool) {
        self.policy_loads.get_or_create(&[("result", if ok { "ok" } else { "refused" })]).inc();
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}
