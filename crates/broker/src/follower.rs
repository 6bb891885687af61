//! The event follower: each broker reads the store's events in order and
//! hands each, once, to its subscribers (`events.rs`), and to the
//! scheduler when it brings a time to look again.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use hourglass_core::api::{Event, EventKind};

use crate::broker::Broker;
use crate::error::Result;
use crate::events::Published;
use crate::expiry::KEEPER_GRACE;

/// Events read from the store at a time.
const PAGE: usize = 1000;

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
                                self.apply_session_event(&published);
                                self.events.publish(published);
                            }
                            Err(error) => tracing::error!("skipping an event: {error}"),
                        }
                    }
                    self.store.followed(cursor);
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
    /// that replica fall behind or stop: look a grace after it (the keeper
    /// looks at it on time; this replica's own deadlines were asked for
    /// when it set them). Work another replica just claimed (a revocation,
    /// an issue) is this one's to take over if its lease lapses: look again
    /// then.
    fn schedule_from(&self, published: &Published) {
        let Ok(event) = serde_json::from_str::<Event>(&published.json) else { return };
        let lease_from_now = self.now().plus_millis(i64::try_from(self.store.lease().as_millis()).unwrap_or(i64::MAX));
        if let Some(grant) = &event.grant {
            if grant.state.is_live() {
                self.schedule(grant.expires_at.plus_millis(i64::try_from(KEEPER_GRACE.as_millis()).unwrap_or(0)));
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
