//! Live events for `/v1/events`. A change writes its events into the store
//! in the commit that makes it (`WriteTx::publish`), numbered in commit
//! order; each broker follows that table (`follower.rs`) and
//! hands every event, once, to its subscribers, each of which keeps only
//! what concerns its principal. Events therefore reach a client whichever
//! replica it is connected to, and a client that reconnects with the last
//! number it saw (`Last-Event-ID`) is sent what it missed, from any replica.

use std::sync::Arc;

use hourglass_core::api::{Event, EventKind};
use hourglass_core::{AccessRequest, Grant, Principal, Timestamp};
use hourglass_policy::Policy;
use tokio::sync::broadcast;

use crate::error::{Error, Result};
use crate::store::{EventAudience, NewEvent, StoredEvent};

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
    /// The event's number: its place in commit order, its SSE `id`.
    pub seq: u64,
    pub kind: String,
    /// The event as JSON, as stored: serialized once for all subscribers.
    pub json: Arc<str>,
    pub audience: Audience,
}

impl Published {
    /// An event read back from the store.
    pub fn from_stored(stored: StoredEvent) -> Result<Published> {
        let audience = if stored.audience.deciders {
            let event: Event = serde_json::from_str(&stored.json)
                .map_err(|error| Error::Internal(format!("stored event {} does not parse: {error}", stored.seq)))?;
            match event.request {
                Some(request) => {
                    Audience::WithDeciders { principals: stored.audience.principals, request: Box::new(request) }
                }
                None => Audience::Principals(stored.audience.principals),
            }
        } else {
            Audience::Principals(stored.audience.principals)
        };
        Ok(Published { seq: stored.seq, kind: stored.kind, json: stored.json.into(), audience })
    }

    pub fn concerns(&self, principal: &Principal, policy: &Policy, now: Timestamp) -> bool {
        match &self.audience {
            Audience::Principals(principals) => principals.contains(&principal.id),
            Audience::WithDeciders { principals, request } => {
                principals.contains(&principal.id) || policy.may_decide(principal, request, now)
            }
        }
    }
}

/// An event to publish with a change, for `WriteTx::publish`.
pub fn new_event(
    kind: EventKind,
    at: Timestamp,
    request: Option<&AccessRequest>,
    grant: Option<&Grant>,
    principals: Vec<String>,
    deciders: bool,
) -> NewEvent {
    let event = Event { kind, at, request: request.cloned(), grant: grant.cloned(), session: None };
    publishable(&event, principals, deciders)
}

/// `event`, for `principals` (and, `deciders`, whoever may decide its
/// request), ready for `WriteTx::publish`.
pub fn publishable(event: &Event, principals: Vec<String>, deciders: bool) -> NewEvent {
    NewEvent {
        kind: event.kind,
        at: event.at,
        // Serializing domain types of strings, numbers and maps cannot fail.
        json: serde_json::to_string(event).unwrap_or_default(),
        audience: EventAudience { principals, deciders },
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

    pub(crate) fn publish(&self, published: Published) {
        // An error only means nobody is listening.
        let _ = self.sender.send(Arc::new(published));
    }
}

/// The first message of every stream: the broker's clock for the client
/// to measure its skew against.
pub fn hello(now: Timestamp) -> String {
    serde_json::to_string(&Event::new(EventKind::Hello, now)).unwrap_or_default()
}

pub fn resync(now: Timestamp) -> String {
    serde_json::to_string(&Event::new(EventKind::Resync, now)).unwrap_or_default()
}
