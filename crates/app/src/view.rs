//! What the app shows: the broker as this user sees it, kept live.

use hourglass_core::{AccessRequest, Grant, Principal, Timestamp};
use serde::Serialize;

/// How the app is connected to its broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Connection {
    Connecting,
    Online,
    /// The broker is unreachable; countdowns and warnings go on locally.
    Offline {
        since: Timestamp,
        error: String,
        retry_at: Timestamp,
    },
    /// No valid session: the user must log in.
    SignedOut {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
#[ts(optional_fields = nullable)]
pub struct AppView {
    pub broker: String,
    pub connection: Connection,
    pub principal: Option<Principal>,
    /// The broker's clock minus this machine's, in milliseconds: deadlines
    /// are the broker's, so countdowns add this to the local clock.
    #[ts(type = "number")]
    pub clock_offset_ms: i64,
    /// My live grants, soonest deadline first.
    pub grants: Vec<Grant>,
    /// My requests, newest first.
    pub requests: Vec<AccessRequest>,
    /// Teammates' requests waiting for my decision, oldest first.
    pub awaiting_me: Vec<AccessRequest>,
    /// Bumped on every change, so the front end can skip identical updates.
    #[ts(type = "number")]
    pub revision: u64,
}

impl AppView {
    pub fn new(broker: &str) -> Self {
        AppView {
            broker: broker.to_owned(),
            connection: Connection::Connecting,
            principal: None,
            clock_offset_ms: 0,
            grants: Vec::new(),
            requests: Vec::new(),
            awaiting_me: Vec::new(),
            revision: 0,
        }
    }

    /// The broker's time now, from this machine's clock and the offset.
    pub fn broker_now(&self, local_now: Timestamp) -> Timestamp {
        local_now.plus_millis(self.clock_offset_ms)
    }

    /// Records the broker's clock as seen at `local_now`.
    pub fn set_clock(&mut self, server_time: Timestamp, local_now: Timestamp) {
        self.clock_offset_ms = local_now.millis_until(server_time);
    }

    /// Replaces the lists with fresh ones from the broker.
    pub fn set_lists(
        &mut self,
        mut grants: Vec<Grant>,
        requests: Vec<AccessRequest>,
        mut awaiting_me: Vec<AccessRequest>,
    ) {
        grants.retain(|grant| grant.state.is_live());
        grants.sort_by_key(|grant| grant.expires_at);
        awaiting_me.sort_by_key(|request| request.created_at);
        self.grants = grants;
        self.requests = requests;
        self.awaiting_me = awaiting_me;
    }

    /// Drops grants past their deadline at the broker's `now`: the app does
    /// not wait for the broker (it may be unreachable) to stop showing them.
    pub fn drop_expired(&mut self, now: Timestamp) -> bool {
        let before = self.grants.len();
        self.grants.retain(|grant| grant.expires_at > now);
        before != self.grants.len()
    }
}

/// How the app's session is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
pub enum SessionKind {
    /// In the OS keyring, renewed silently.
    Keyring,
    /// Only in this process: there is no Secret Service to keep it in.
    Memory,
    /// `HOURGLASS_TOKEN` from the environment.
    Environment,
}

/// Who the app is logged in as, for the settings view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
#[ts(optional_fields = nullable)]
pub struct Account {
    pub broker: String,
    /// None: not logged in.
    pub session: Option<SessionKind>,
    /// The identity provider the session came from.
    pub idp: Option<String>,
    /// When the session ends unless it is renewed.
    pub expires_at: Option<Timestamp>,
}
