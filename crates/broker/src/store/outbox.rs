//! The outbox: notifications written in the commit of what they announce
//! (`WriteTx::enqueue`), then claimed by one replica at a time and sent
//! (`crate::notify::outbox`). A claim is the replica's lease, as for grants:
//! a message a dead replica held is anyone's once its lease lapses. A
//! message waits for those before it on its channel and topic, so that an
//! update never overtakes what it updates.

use hourglass_core::Timestamp;

use super::queries::{self as q, limit};
use super::sql::{Param, Row, Sql, both};
use super::{Store, WriteTx};
use crate::error::Result;

/// A notification to send, as the lifecycle writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotice {
    /// Unique: receivers see it as the idempotency key.
    pub id: String,
    pub channel: String,
    pub topic: String,
    pub created_at: Timestamp,
    /// Not sent before (a reminder before a deadline).
    pub due_at: Timestamp,
    /// What to say (JSON), rendered for the channel when sent.
    pub notice: String,
}

/// A notification claimed for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedNotice {
    pub seq: i64,
    pub id: String,
    pub channel: String,
    pub topic: String,
    pub created_at: Timestamp,
    pub due_at: Timestamp,
    /// Attempts before this one.
    pub attempts: u32,
    pub notice: String,
}

/// How sending a claimed notification ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoticeOutcome {
    /// Sent; `reference` is the channel's id of the message, for the later
    /// messages on its topic.
    Sent { reference: Option<String> },
    /// Not to be sent any more (a reminder whose grant was renewed or ended).
    Skipped { why: String },
    /// Failed for good (its channel is gone, or it kept failing too long).
    Abandoned { error: String },
    /// Failed this time: tried again at `next`.
    Retry { next: Timestamp, error: String },
}

const INSERT_NOTICE: Sql = both(
    "INSERT INTO outbox (id, channel, topic, created_at, due_at, attempts, notice) VALUES ($1, $2, $3, $4, $5, 0, $6)",
);

/// Due messages no live replica holds, in order, claimed by `$1`; none
/// behind an earlier one of its topic not done that has fallen due (tried
/// already, or due now): a reminder set for later holds nothing up.
const CLAIM_NOTICES: Sql = Sql {
    sqlite: "UPDATE outbox SET claimed_by = $1 WHERE seq IN (
               SELECT o.seq FROM outbox o
               WHERE o.done_at IS NULL AND o.due_at <= $2
                 AND (o.claimed_by IS NULL OR o.claimed_by NOT IN (SELECT id FROM replicas WHERE alive_until > hourglass_now_ms()))
                 AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.channel = o.channel AND e.topic = o.topic
                                 AND e.seq < o.seq AND e.done_at IS NULL AND (e.due_at <= $2 OR e.attempts > 0))
               ORDER BY o.seq LIMIT $3)
             RETURNING seq, id, channel, topic, created_at, due_at, attempts, notice",
    postgres: "UPDATE outbox SET claimed_by = $1 WHERE seq IN (
                 SELECT o.seq FROM outbox o
                 WHERE o.done_at IS NULL AND o.due_at <= $2
                   AND (o.claimed_by IS NULL OR o.claimed_by NOT IN (SELECT id FROM replicas WHERE alive_until > hourglass_now_ms()))
                   AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.channel = o.channel AND e.topic = o.topic
                                   AND e.seq < o.seq AND e.done_at IS NULL AND (e.due_at <= $2 OR e.attempts > 0))
                 ORDER BY o.seq LIMIT $3 FOR UPDATE SKIP LOCKED)
               RETURNING seq, id, channel, topic, created_at, due_at, attempts, notice",
};

/// Records how a message went, if `$4` (this replica) still holds it.
const NOTICE_DONE: Sql = both(
    "UPDATE outbox SET done_at = $2, outcome = $3, reference = $5, last_error = $6, attempts = attempts + $7,
                       claimed_by = NULL
     WHERE seq = $1 AND claimed_by = $4",
);
const NOTICE_RETRY: Sql = both(
    "UPDATE outbox SET due_at = $2, last_error = $3, attempts = attempts + 1, claimed_by = NULL
     WHERE seq = $1 AND claimed_by = $4",
);
/// The reference of the first message sent on a channel's topic.
const THREAD: Sql = both(
    "SELECT reference FROM outbox WHERE channel = $1 AND topic = $2 AND reference IS NOT NULL ORDER BY seq LIMIT 1",
);
/// When the next message not done is due.
const NEXT_NOTICE_DUE: Sql = both("SELECT MIN(due_at) FROM outbox WHERE done_at IS NULL");
const PRUNE_NOTICES: Sql = both("DELETE FROM outbox WHERE done_at < $1");

impl WriteTx {
    /// Adds a notification to send once this transaction commits.
    pub fn enqueue(&mut self, notice: NewNotice) {
        self.outbox.push(notice);
    }

    /// Claims up to `max` messages due at `now` for this replica.
    pub async fn claim_notices(&mut self, now: Timestamp, max: usize) -> Result<Vec<ClaimedNotice>> {
        let me = self.store.replica_id();
        let rows =
            self.conn().query(CLAIM_NOTICES, &[Param::Text(&me), now.unix_millis().into(), limit(max).into()]).await?;
        let mut claimed = rows.into_iter().map(claimed_of).collect::<Result<Vec<_>>>()?;
        // RETURNING follows no ORDER BY.
        claimed.sort_by_key(|notice| notice.seq);
        Ok(claimed)
    }

    /// Records how sending `seq` went, if this replica still holds it (one
    /// whose lease lapsed records nothing: the message is another's now).
    pub async fn notice_done(&mut self, seq: i64, now: Timestamp, outcome: &NoticeOutcome) -> Result<bool> {
        let changed = match outcome {
            NoticeOutcome::Retry { next, error } => {
                let me = self.store.replica_id();
                let params = [seq.into(), next.unix_millis().into(), error.as_str().into(), Param::Text(&me)];
                self.conn().execute(NOTICE_RETRY, &params).await?
            }
            NoticeOutcome::Sent { reference } => {
                self.mark_done(seq, now, "sent", reference.as_deref(), None, 1).await?
            }
            NoticeOutcome::Skipped { why } => self.mark_done(seq, now, "skipped", None, Some(why), 0).await?,
            NoticeOutcome::Abandoned { error } => self.mark_done(seq, now, "abandoned", None, Some(error), 1).await?,
        };
        Ok(changed > 0)
    }

    async fn mark_done(
        &mut self,
        seq: i64,
        now: Timestamp,
        outcome: &str,
        reference: Option<&str>,
        error: Option<&str>,
        attempted: i64,
    ) -> Result<u64> {
        let me = self.store.replica_id();
        let params = [
            seq.into(),
            now.unix_millis().into(),
            outcome.into(),
            Param::Text(&me),
            reference.into(),
            error.into(),
            Param::Int(attempted),
        ];
        self.conn().execute(NOTICE_DONE, &params).await
    }

    /// Writes the notifications enqueued, at commit.
    pub(super) async fn write_outbox(&mut self) -> Result<()> {
        for notice in std::mem::take(&mut self.outbox) {
            let params = [
                notice.id.as_str().into(),
                notice.channel.as_str().into(),
                notice.topic.as_str().into(),
                notice.created_at.unix_millis().into(),
                notice.due_at.unix_millis().into(),
                notice.notice.as_str().into(),
            ];
            self.conn().write(INSERT_NOTICE, &params).await?;
        }
        Ok(())
    }
}

impl Store {
    /// The reference of the first message sent on `channel`'s `topic`.
    pub async fn notice_thread(&self, channel: &str, topic: &str) -> Result<Option<String>> {
        let mut reader = self.reader().await?;
        match reader.conn().query_opt(THREAD, &[channel.into(), topic.into()]).await? {
            Some(row) => row.opt_text(0),
            None => Ok(None),
        }
    }

    /// When the next message not yet done is due (it may be held by
    /// another replica, or wait behind an earlier one).
    pub async fn next_notice_due(&self) -> Result<Option<Timestamp>> {
        let due = q::scalar(&mut self.reader().await?.conn(), NEXT_NOTICE_DUE, &[]).await?;
        Ok(due.map(Timestamp::from_unix_millis))
    }

    /// Forgets messages done before `before`.
    pub async fn prune_notices(&self, before: Timestamp) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.conn().execute(PRUNE_NOTICES, &[before.unix_millis().into()]).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Wakes the outbox's sender: this replica committed messages.
    pub fn notices_committed(&self) -> tokio::sync::futures::Notified<'_> {
        self.events.outbox.notified()
    }
}

fn claimed_of(mut row: Row) -> Result<ClaimedNotice> {
    Ok(ClaimedNotice {
        seq: row.int(0)?,
        id: row.take_text(1)?,
        channel: row.take_text(2)?,
        topic: row.take_text(3)?,
        created_at: Timestamp::from_unix_millis(row.int(4)?),
        due_at: Timestamp::from_unix_millis(row.int(5)?),
        attempts: u32::try_from(row.int(6)?).unwrap_or(u32::MAX),
        notice: row.take_text(7)?,
    })
}
