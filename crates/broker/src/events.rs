//! Live events for `/v1/events`: each change is published once, serialized
//! once, and every subscriber keeps only what concerns its principal.

use std::sync::Arc;

use hourglass_core::api::{Event, EventKind};
use hourglass_core::{AccessRequest, Grant, Principal, Timestamp};
use hourglass_policy::Policy;
use tokio::sync::broadcast;

/// Who an event is for.
#[derive(Debug, Clone)]
pub enum Audience {
    /// These principals (a requester, a grant's owner, whoever acted).
    Principals(Vec<String>),
    /// These principals and everyone who may decide `request`: approvers
    /// learn of a new request, and of its end when another approver decided.
    WithDeciders { principals: Vec<String>, request: Box<AccessRequest> },
}

#[derive(Debug)]
pub struct Published {
    pub kind: EventKind,
    /// The event as JSON, serialized once for all subscribers.
    pub json: Arc<str>,
    pub audience: Audience,
}

impl Published {
    pub fn concerns(&self, principal: &Principal, policy: &Policy, now: Timestamp) -> bool {
        match &self.audience {
            Audience::Principals(principals) => principals.contains(&principal.id),
            Audience::WithDeciders { principals, request } => {
                principals.contains(&principal.id) || policy.may_decide(principal, request, now)
            }
        }
    }
}

#[derive(Clone)]
pub struct EventHub {
    sender: broadcast::Sender<Arc<Published>>,
}

/// Events buffered per subscriber before a slow one is told to resync.
const BUFFER: usize = 4096;

impl Default for EventHub {
    fn default() -> Self {
        EventHub { sender: broadcast::channel(BUFFER).0 }
    }
}

impl EventHub {
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.sender.subscribe()
    }

    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }

    pub fn publish(
        &self,
        kind: EventKind,
        at: Timestamp,
        request: Option<&AccessRequest>,
        grant: Option<&Grant>,
        audience: Audience,
    ) {
        if self.sender.receiver_count() == 0 {
            return;
        }
        let event = Event { kind, at, request: request.cloned(), grant: grant.cloned() };
        let json: Arc<str> = serde_json::to_string(&event).unwrap_or_default().into();
        // An error only means nobody is listening any more.
        let _ = self.sender.send(Arc::new(Published { kind, json, audience }));
    }
}

/// The first message of every stream: the broker's clock for the client
/// to measure its skew against.
pub fn hello(now: Timestamp) -> String {
    serde_json::to_string(&Event { kind: EventKind::Hello, at: now, request: None, grant: None }).unwrap_or_default()
}

pub fn resync(now: Timestamp) -> String {
    serde_json::to_string(&Event { kind: EventKind::Resync, at: now, request: None, grant: None }).unwrap_or_default()
}
