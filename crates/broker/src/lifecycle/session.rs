//! Logging out: the caller's session (or bearer token) ends at once on every
//! replica, not when it would have expired. The ended tokens are one shared
//! record in the store (read at start), and each end is a `session.ended`
//! event every replica's follower applies and that closes the caller's
//! event streams.

use std::collections::BTreeMap;

use hourglass_core::api::{EndedSession, Event, EventKind};
use hourglass_core::audit::{AuditAction, AuditEvent, AuditResult};

use crate::auth::Verified;
use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::events::{Published, publishable};

/// The store's record of ended tokens: token id → when it would have
/// expired (Unix seconds). Entries past that are dropped as it changes.
const ENDED_RECORD: &str = "auth/ended-sessions";

fn parse_record(text: Option<&str>) -> Result<BTreeMap<String, i64>> {
    match text {
        Some(text) => serde_json::from_str(text)
            .map_err(|error| Error::Internal(format!("the store's {ENDED_RECORD} does not parse: {error}"))),
        None => Ok(BTreeMap::new()),
    }
}

impl Broker {
    /// Ends the caller's token: recorded, audited and announced in one
    /// transaction, then refused here at once (and on other replicas as
    /// soon as their follower reads the event).
    pub async fn end_session(&self, caller: &Verified) -> Result<()> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let mut ended = parse_record(tx.document_for_update(ENDED_RECORD).await?.as_deref())?;
        ended.retain(|_, until| *until > now.unix_seconds());
        ended.insert(caller.token_id.clone(), caller.expires_at);
        let text =
            serde_json::to_string(&ended).map_err(|e| Error::Internal(format!("encoding {ENDED_RECORD}: {e}")))?;
        tx.put_document(ENDED_RECORD, &text).await?;
        let id = &caller.principal.id;
        tx.audit(AuditEvent::new(now, id, AuditAction::SessionEnded, &caller.token_id, AuditResult::Ok).subject(id))
            .await?;
        let mut event = Event::new(EventKind::SessionEnded, now);
        event.session = Some(EndedSession { id: caller.token_id.clone(), expires_at: caller.expires_at });
        tx.publish(publishable(&event, vec![id.clone()], false));
        tx.commit().await?;
        self.auth.end(&caller.token_id, caller.expires_at);
        Ok(())
    }

    /// At start: every token ended before, refused from the first call.
    pub async fn load_ended_sessions(&self) -> Result<()> {
        for (token_id, until) in parse_record(self.store.document(ENDED_RECORD).await?.as_deref())? {
            self.auth.end(&token_id, until);
        }
        Ok(())
    }

    /// A `session.ended` event (this replica's or another's): refuse it here too.
    pub(crate) fn apply_session_event(&self, published: &Published) {
        if published.kind != EventKind::SessionEnded.as_str() {
            return;
        }
        match serde_json::from_str::<Event>(&published.json).ok().and_then(|event| event.session) {
            Some(session) => self.auth.end(&session.id, session.expires_at),
            None => tracing::error!(seq = published.seq, "a session.ended event names no session"),
        }
    }
}
