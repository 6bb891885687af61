//! [`WriteTx`]: one transaction's changes, audit events and published
//! events, committed together (see the module above for the order and the
//! claims they keep).

use std::sync::atomic::Ordering;

use hourglass_core::api::ClientMaterial;
use hourglass_core::audit::{AuditEvent, AuditRecord};
use hourglass_core::{AccessRequest, Grant, GrantId, GrantState, RequestId, Timestamp};

use super::append::{append_here, append_there, linked};
use super::postgres::PgTx;
use super::queries as q;
use super::sql::{self, Conn, Param};
use super::sqlite::SqliteTx;
use super::{Claim, DueGrant, FilingClashes, GrantRecord, NewEvent, NewNotice, Store, StoredKey};
use crate::error::Result;

pub(super) enum TxInner {
    Sqlite(SqliteTx),
    // Boxed: a pooled connection is large beside SQLite's handle.
    Postgres(Box<PgTx>),
}

/// A write transaction: changes, audit events and published events commit
/// together or not at all. Dropped without `commit`, nothing happened.
pub struct WriteTx {
    pub(super) inner: TxInner,
    pub(super) store: Store,
    pub(super) audit: Vec<AuditEvent>,
    pub(super) events: Vec<NewEvent>,
    /// Notifications to send once committed (`store/outbox.rs`).
    pub(super) outbox: Vec<NewNotice>,
}

impl WriteTx {
    pub(super) fn conn(&mut self) -> Conn<'_> {
        match &mut self.inner {
            TxInner::Sqlite(tx) => Conn::Sqlite(tx.connection()),
            TxInner::Postgres(tx) => Conn::Postgres(tx.connection()),
        }
    }

    /// A request, locked until commit.
    pub async fn request(&mut self, id: &RequestId) -> Result<Option<AccessRequest>> {
        q::request(&mut self.conn(), q::REQUEST_FOR_UPDATE, id).await
    }

    /// A grant, locked until commit.
    pub async fn grant(&mut self, id: &GrantId) -> Result<Option<GrantRecord>> {
        q::grant(&mut self.conn(), q::GRANT_FOR_UPDATE, id).await
    }

    /// Takes `name`'s turn until commit: transactions that take the same
    /// turn run one at a time, on every replica (PostgreSQL: an advisory
    /// lock; SQLite's one writer does it already). Filings of one principal
    /// take the principal's (a duplicate check, the count of requests
    /// waiting).
    pub async fn take_turn(&mut self, name: &str) -> Result<()> {
        if let TxInner::Postgres(_) = self.inner {
            self.conn().write(q::TAKE_TURN, &[name.into()]).await?;
        }
        Ok(())
    }

    pub async fn insert_request(&mut self, request: &AccessRequest, material: Option<&ClientMaterial>) -> Result<()> {
        let material = material.map(q::to_json).transpose()?;
        let doc = q::to_json(request)?;
        self.conn()
            .write(
                q::INSERT_REQUEST,
                &[
                    request.id.as_str().into(),
                    request.requester.as_str().into(),
                    request.resource.as_str().into(),
                    request.role.as_str().into(),
                    request.state.as_str().into(),
                    request.renews.as_ref().map(GrantId::as_str).into(),
                    request.created_at.unix_millis().into(),
                    request.pending_until.unix_millis().into(),
                    doc.as_str().into(),
                    material.as_deref().into(),
                ],
            )
            .await?;
        Ok(())
    }

    pub async fn update_request(&mut self, request: &AccessRequest) -> Result<()> {
        let doc = q::to_json(request)?;
        self.conn()
            .write(q::UPDATE_REQUEST, &[request.state.as_str().into(), doc.as_str().into(), request.id.as_str().into()])
            .await?;
        Ok(())
    }

    /// Inserts a grant. One still being issued is claimed by this replica,
    /// which is issuing it; and this replica keeps its deadline.
    pub async fn insert_grant(&mut self, record: &GrantRecord) -> Result<()> {
        let grant = &record.grant;
        let me = self.store.replica_id();
        let claimed_by = (grant.state == GrantState::Issuing).then_some(&me);
        let (state, doc) = (q::to_json(&record.provider_state)?, q::to_json(grant)?);
        self.conn()
            .write(
                q::INSERT_GRANT,
                &[
                    grant.id.as_str().into(),
                    grant.request_id.as_str().into(),
                    grant.owner.as_str().into(),
                    grant.resource.as_str().into(),
                    grant.role.as_str().into(),
                    grant.state.as_str().into(),
                    grant.expires_at.unix_millis().into(),
                    revocation_due(grant).into(),
                    state.as_str().into(),
                    doc.as_str().into(),
                    claimed_by.map(|me| &**me).into(),
                    awaiting_review(grant).into(),
                    Param::Text(&me),
                ],
            )
            .await?;
        Ok(())
    }

    /// Updates a grant. Moving its deadline (a renewal) makes this replica
    /// its keeper: the one that set the deadline keeps it.
    pub async fn update_grant(&mut self, record: &GrantRecord, claim: Claim) -> Result<()> {
        let grant = &record.grant;
        let (state, doc) = (q::to_json(&record.provider_state)?, q::to_json(grant)?);
        let me = self.store.replica_id();
        let mut params: Vec<Param<'_>> = vec![
            grant.state.as_str().into(),
            grant.expires_at.unix_millis().into(),
            revocation_due(grant).into(),
            state.as_str().into(),
            doc.as_str().into(),
            grant.id.as_str().into(),
            awaiting_review(grant).into(),
            Param::Text(&me),
        ];
        let sql = match claim {
            Claim::Keep => q::UPDATE_GRANT,
            Claim::Take => {
                params.push(Param::Text(&me));
                q::UPDATE_GRANT_CLAIM
            }
            Claim::Release => {
                params.push(Param::Null);
                q::UPDATE_GRANT_CLAIM
            }
        };
        self.conn().write(sql, &params).await?;
        Ok(())
    }

    /// Whether this replica still holds its claim on grant `id` (read with
    /// [`WriteTx::grant`] first, so that the row is locked): checked in the
    /// transaction that records the claimed work, so that a replica whose
    /// lease lapsed records nothing another replica took over.
    pub async fn holds_claim(&mut self, id: &GrantId) -> Result<bool> {
        let me = self.store.replica_id();
        let held = q::scalar(&mut self.conn(), q::HOLDS_CLAIM, &[id.as_str().into(), Param::Text(&me)]).await?;
        Ok(held.unwrap_or(0) > 0)
    }

    /// Of `ids`, the grants this replica still holds the claim on (its
    /// lease alive now), locked until commit: what a transaction recording
    /// claimed work may record. Work another replica took over after this
    /// one's lease lapsed is not among them.
    pub async fn claimed_grants(&mut self, ids: &[GrantId]) -> Result<Vec<GrantRecord>> {
        let me = self.store.replica_id();
        let ids = q::to_json(&ids.iter().map(GrantId::as_str).collect::<Vec<_>>())?;
        q::grants(&mut self.conn(), q::CLAIMED_GRANTS, &[ids.as_str().into(), Param::Text(&me)]).await
    }

    /// What a new filing by `requester` for `resource`/`role` clashes with
    /// at `now`, read together (one round trip on PostgreSQL): a request of
    /// theirs for the same access still pending, and a live grant they hold
    /// for it. A request past its timeout no longer waits, nor does a grant
    /// past its deadline live: neither can be approved or renewed any more,
    /// and the scheduler ends them.
    pub async fn filing_clashes(
        &mut self,
        requester: &str,
        resource: &str,
        role: &str,
        now: Timestamp,
    ) -> Result<FilingClashes> {
        let params = [requester.into(), resource.into(), role.into(), now.unix_millis().into()];
        let (pending, live) = self.conn().query_both((q::PENDING_DUPLICATE, &params), (q::LIVE_GRANT, &params)).await?;
        Ok(FilingClashes {
            pending: match pending.into_iter().next() {
                Some(row) => RequestId::parse(&row.text(0)?).ok(),
                None => None,
            },
            live: live.into_iter().next().map(q::grant_of).transpose()?,
        })
    }

    /// How many requests of `requester` wait for approval at `now`
    /// (renewals included; one past its timeout no longer waits).
    pub async fn pending_count(&mut self, requester: &str, now: Timestamp) -> Result<u64> {
        let count =
            q::scalar(&mut self.conn(), q::PENDING_COUNT, &[requester.into(), now.unix_millis().into()]).await?;
        Ok(u64::try_from(count.unwrap_or(0)).unwrap_or(0))
    }

    /// Live grants on `resource`, narrowed to a role and an owner when
    /// given; locked until commit.
    pub async fn live_grants_on(
        &mut self,
        resource: &str,
        role: Option<&str>,
        owner: Option<&str>,
    ) -> Result<Vec<GrantRecord>> {
        q::grants(&mut self.conn(), q::LIVE_GRANTS_ON, &[resource.into(), role.into(), owner.into()]).await
    }

    /// Pending renewals of `grants`, locked until commit: one round trip
    /// however many.
    pub async fn pending_renewals(&mut self, grants: &[GrantId]) -> Result<Vec<AccessRequest>> {
        if grants.is_empty() {
            return Ok(Vec::new());
        }
        let ids = q::to_json(&grants.iter().map(GrantId::as_str).collect::<Vec<_>>())?;
        q::requests(&mut self.conn(), q::PENDING_RENEWALS, &[ids.as_str().into()]).await
    }

    /// Live grants whose deadline has passed, earliest first; on
    /// PostgreSQL, those no other transaction has locked.
    pub async fn due_grants(&mut self, now: Timestamp, max: usize) -> Result<Vec<DueGrant>> {
        let rows = self.conn().query(q::DUE_GRANTS, &[now.unix_millis().into(), q::limit(max).into()]).await?;
        rows.into_iter()
            .map(|row| {
                let renewal_pending = row.int(2)? != 0;
                Ok(DueGrant { record: q::grant_of(row)?, renewal_pending })
            })
            .collect()
    }

    /// Pending requests whose timeout has passed.
    pub async fn due_requests(&mut self, now: Timestamp, max: usize) -> Result<Vec<AccessRequest>> {
        q::requests(&mut self.conn(), q::DUE_REQUESTS, &[now.unix_millis().into(), q::limit(max).into()]).await
    }

    /// Ended grants whose revocation is owed now and nobody works on.
    pub async fn due_revocations(&mut self, now: Timestamp, max: usize) -> Result<Vec<GrantRecord>> {
        q::grants(&mut self.conn(), q::DUE_REVOCATIONS, &[now.unix_millis().into(), q::limit(max).into()]).await
    }

    /// Grants left in `issuing`, before their deadline, by a replica whose
    /// claim lapsed (it died or stopped mid-issue).
    pub async fn interrupted_issues(&mut self, now: Timestamp, max: usize) -> Result<Vec<GrantRecord>> {
        q::grants(&mut self.conn(), q::INTERRUPTED_ISSUES, &[now.unix_millis().into(), q::limit(max).into()]).await
    }

    /// Pending revocations not due before `now`: waiting out a backoff, or
    /// leased by a broker before schema version 3.
    pub async fn leased_revocations(&mut self, now: Timestamp, max: usize) -> Result<Vec<GrantRecord>> {
        q::grants(&mut self.conn(), q::LEASED_REVOCATIONS, &[now.unix_millis().into(), q::limit(max).into()]).await
    }

    /// Every stored key of `purpose`, read after taking the purpose's turn
    /// (replicas making a key at the same moment make one).
    pub async fn signing_keys_for_update(&mut self, purpose: &str) -> Result<Vec<StoredKey>> {
        self.take_turn(&format!("signing-keys/{purpose}")).await?;
        let rows = self.conn().query(q::SIGNING_KEYS, &[purpose.into()]).await?;
        rows.into_iter().map(q::stored_key).collect()
    }

    pub async fn insert_signing_key(&mut self, key: &StoredKey) -> Result<()> {
        self.conn()
            .write(
                q::INSERT_SIGNING_KEY,
                &[
                    key.kid.as_str().into(),
                    key.purpose.as_str().into(),
                    key.public_key.as_str().into(),
                    key.sealed_private.as_str().into(),
                    key.sealed_with.as_str().into(),
                    key.created_at.unix_millis().into(),
                    key.signs_from.unix_millis().into(),
                    key.signs_until.unix_millis().into(),
                    key.verifies_until.unix_millis().into(),
                ],
            )
            .await?;
        Ok(())
    }

    /// Ends a key's signing window at `signs_until`; what it signed verifies
    /// until `verifies_until`.
    pub async fn retire_signing_key(
        &mut self,
        kid: &str,
        signs_until: Timestamp,
        verifies_until: Timestamp,
    ) -> Result<()> {
        self.conn()
            .write(
                q::RETIRE_SIGNING_KEY,
                &[kid.into(), signs_until.unix_millis().into(), verifies_until.unix_millis().into()],
            )
            .await?;
        Ok(())
    }

    /// Whether replica `id` holds a lease now (the database's clock).
    pub async fn replica_alive(&mut self, id: &str) -> Result<bool> {
        Ok(q::scalar(&mut self.conn(), q::REPLICA_ALIVE, &[id.into()]).await?.unwrap_or(0) > 0)
    }

    /// A provider's shared record, locked until commit.
    pub async fn document_for_update(&mut self, name: &str) -> Result<Option<String>> {
        // The row may not exist yet: take the name's turn as well.
        self.take_turn(&format!("document/{name}")).await?;
        let row = self.conn().query_opt(q::DOCUMENT_FOR_UPDATE, &[name.into()]).await?;
        row.map(|row| row.text(0)).transpose()
    }

    pub async fn put_document(&mut self, name: &str, doc: &str) -> Result<()> {
        self.conn().write(q::PUT_DOCUMENT, &[name.into(), doc.into()]).await?;
        Ok(())
    }

    /// Appends an event to the audit chain; it commits with the transaction.
    pub async fn audit(&mut self, event: AuditEvent) -> Result<()> {
        self.audit.push(event);
        Ok(())
    }

    /// Publishes an event on `/v1/events`; it commits with the transaction
    /// and reaches subscribers of every replica once committed.
    pub fn publish(&mut self, event: NewEvent) {
        self.events.push(event);
    }

    /// Commits, and returns once the commit is on disk; returns the audit
    /// records it appended.
    pub async fn commit(mut self) -> Result<Vec<AuditRecord>> {
        let notices = !self.outbox.is_empty();
        self.write_outbox().await?;
        let WriteTx { inner, store, audit, events, outbox: _ } = self;
        match inner {
            TxInner::Sqlite(mut tx) => {
                let mut conn = Conn::Sqlite(tx.connection());
                let appended = append_here(&mut conn, audit, &events).await?;
                for write in &appended.writes {
                    let params: Vec<Param<'_>> = write.params.iter().map(sql::Owned::param).collect();
                    conn.execute(write.sql, &params).await?;
                }
                tx.commit().await?;
                if notices {
                    store.events.outbox.notify_waiters();
                }
                if let Some(last) = appended.last_event {
                    store.events.durable.fetch_max(last, Ordering::AcqRel);
                    store.events.notify.notify_waiters();
                }
                Ok(appended.records)
            }
            TxInner::Postgres(tx) => {
                // Numbered and hashed by the server, with the COMMIT: the
                // chain's row is held for no round trip at all.
                let append = append_there(&audit, &events)?;
                let links = (*tx).commit(append.as_ref()).await?;
                if notices {
                    store.events.outbox.notify_waiters();
                }
                if !events.is_empty() {
                    store.events.notify.notify_waiters();
                }
                linked(audit, links)
            }
        }
    }
}

/// The `awaiting_review` column: 1 while a break-glass grant awaits its review.
fn awaiting_review(grant: &Grant) -> Option<i64> {
    grant.awaits_review().then_some(1)
}

fn revocation_due(grant: &Grant) -> Option<i64> {
    grant
        .revocation
        .as_ref()
        .filter(|r| r.status == hourglass_core::RevocationStatus::Pending)
        .and_then(|r| r.next_attempt_at)
        .map(Timestamp::unix_millis)
}
