//! Live events for `/v1/events`. A change writes its events into the store
//! in the commit that makes it (`WriteTx::publish`), numbered in commit
//! order; each broker follows that table ([`Broker::follow_events`]) and
//! hands every event, once, to its subscribers, each of which keeps only
//! what concerns its principal. Events therefore reach a client whichever
//! replica it is connected to, and a client that reconnects with the last
//! number it saw (`Last-Event-ID`) is sent what it missed, from any replica.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use hourglass_core::api::{Event, EventKind};
use hourglass_core::{AccessRequest, Grant, Principal, Timestamp};
use hourglass_policy::Policy;
use tokio::sync::broadcast;

use crate::broker::Broker;
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
    let event = Event { kind, at, request: request.cloned(), grant: grant.cloned() };
    NewEvent {
        kind,
        at,
        // Serializing domain types of strings, numbers and maps cannot fail.
        json: serde_json::to_string(&event).unwrap_or_default(),
        audience: EventAudience { principals, deciders },
    }
}

#[derive(Clone)]
pub struct EventHub {
    sender: broadcast::Sender<Arc<Published>>,
}

/// Events buffered per subscriber before a slow one is told to resync.
const BUFFER: usize = 4096;
/// Events read from the store at a time.
const PAGE: usize = 1000;

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

    fn publish(&self, published: Published) {
        // An error only means nobody is listening.
        let _ = self.sender.send(Arc::new(published));
    }
}

impl Broker {
    /// Where [`Broker::follow_events`] starts: the last event committed.
    /// Read before anything can commit more (before the server serves), so
    /// that no event falls between it and the follower.
    pub async fn event_cursor(&self) -> Result<u64> {
        self.store.last_event().await
    }

    /// Follows the store's events after `cursor`, handing each to this
    /// broker's subscribers in order, and to the scheduler when it brings a
    /// deadline (a grant or request of another replica). Runs until the
    /// broker stops.
    pub async fn follow_events(self: Arc<Self>, cursor: u64) {
        let mut cursor = cursor;
        let commits = {
            let broker = Arc::clone(&self);
            let store = self.store.clone();
            tokio::spawn(async move { store.follow_commits(broker.stopping()).await })
        };
        loop {
            // Registered before reading, so a commit during the read wakes the next turn.
            let committed = self.store.events_committed();
            tokio::pin!(committed);
            committed.as_mut().enable();
            match self.store.events_after(cursor, PAGE).await {
                Ok(events) if !events.is_empty() => {
                    let full = events.len() == PAGE;
                    for stored in events {
                        cursor = stored.seq;
                        match Published::from_stored(stored) {
                            Ok(published) => {
                                self.schedule_from(&published);
                                self.events.publish(published);
                            }
                            Err(error) => tracing::error!("skipping an event: {error}"),
                        }
                    }
                    if full {
                        continue;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!("reading events failed, retrying in 1s: {error}");
                    tokio::select! {
                        () = tokio::time::sleep(StdDuration::from_secs(1)) => continue,
                        () = self.stopping() => break,
                    }
                }
            }
            tokio::select! {
                () = &mut committed => {}
                // A safety net should a wake-up ever be missed (another
                // replica's, while the notification connection was down).
                () = tokio::time::sleep(StdDuration::from_secs(5)) => {}
                () = self.stopping() => break,
            }
        }
        commits.abort();
    }

    /// A deadline another replica set is this one's to keep too, should
    /// that replica stop; and work it just claimed (a revocation, an issue)
    /// is this one's to take over if its lease lapses: look again then.
    fn schedule_from(&self, published: &Published) {
        let Ok(event) = serde_json::from_str::<Event>(&published.json) else { return };
        let lease_from_now = self.now().plus_millis(i64::try_from(self.store.lease().as_millis()).unwrap_or(i64::MAX));
        if let Some(grant) = &event.grant {
            if grant.state.is_live() {
                self.schedule(grant.expires_at);
            }
            if grant.revocation_pending() {
                self.schedule(lease_from_now);
            }
        }
        if let Some(request) = &event.request {
            if request.is_pending() {
                self.schedule(request.pending_until);
            }
            if event.kind == EventKind::RequestApproved {
                self.schedule(lease_from_now);
            }
        }
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
