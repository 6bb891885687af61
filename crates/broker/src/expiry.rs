//! Expiry and revocation: every grant is revoked at its deadline, every
//! undecided request expires, and every failed revocation is retried with
//! backoff until the provider confirms it. The store is the schedule: after
//! a crash or downtime the first pass catches up with everything overdue.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use futures::StreamExt;
use hourglass_core::GrantId;
use hourglass_core::api::EventKind;
use hourglass_core::audit::{AuditAction, AuditEvent, AuditResult};
use hourglass_core::principal::SYSTEM_ACTOR;
use rand::Rng;

use crate::broker::Broker;
use crate::error::Result;
use crate::provider::Verification;
use crate::store::{Claim, DueGrant, GrantRecord};

/// Grants or requests handled per transaction.
const BATCH: usize = 1000;
/// Interrupted issues finished at once.
const ISSUES_IN_FLIGHT: usize = 64;
/// Longest sleep: a safety net should a wake-up ever be missed.
const MAX_SLEEP: StdDuration = StdDuration::from_secs(30);
/// How long after a deadline another live replica keeps (it set it) this
/// one looks at it too: time enough for the keeper to have expired it, so
/// that replicas do not all wake and race for every deadline, and short
/// enough that a keeper fallen behind (or stopped, its lease not yet
/// lapsed) delays the grant's end by no more than this.
pub(crate) const KEEPER_GRACE: StdDuration = StdDuration::from_millis(250);

impl Broker {
    /// Runs until the broker stops.
    pub async fn run_scheduler(self: Arc<Self>) {
        loop {
            self.alarm.pass_begins();
            if let Err(error) = self.due_pass(Revocations::Detached).await {
                tracing::error!("expiry pass failed, retrying in 1s: {error}");
                tokio::select! {
                    () = tokio::time::sleep(StdDuration::from_secs(1)) => continue,
                    () = self.stopping() => return,
                }
            }
            let sleep = match self.store.next_work(KEEPER_GRACE).await {
                Ok((next, takeover)) => {
                    let until_next = next.map(|next| {
                        let millis = self.now().millis_until(next).max(0);
                        StdDuration::from_millis(u64::try_from(millis).unwrap_or(0))
                    });
                    // Another replica's claim lapsing is work for this one.
                    [until_next, takeover].into_iter().flatten().min().unwrap_or(MAX_SLEEP).min(MAX_SLEEP)
                }
                Err(error) => {
                    tracing::error!("reading the next deadline failed: {error}");
                    StdDuration::from_secs(1)
                }
            };
            let planned = self.now().plus_millis(i64::try_from(sleep.as_millis()).unwrap_or(i64::MAX));
            // Until the planned pass, or an earlier one asked for meanwhile.
            loop {
                let millis = self.now().millis_until(self.alarm.next(planned)).max(0);
                tokio::select! {
                    () = tokio::time::sleep(StdDuration::from_millis(u64::try_from(millis).unwrap_or(0))) => break,
                    () = self.alarm.changed() => {}
                    () = self.stopping() => return,
                }
            }
        }
    }

    /// Everything overdue now: expire grants and revoke them, expire
    /// requests, retry revocations, take over issues a stopped replica left.
    /// Returns when nothing is due and every revocation it started is
    /// recorded. Every replica runs it; each takes a share of the due work
    /// (rows another is taking are skipped).
    pub async fn run_due_work(self: &Arc<Self>) -> Result<()> {
        self.due_pass(Revocations::Awaited).await
    }

    /// [`Broker::run_due_work`], with the provider revocations it starts
    /// awaited or left running.
    async fn due_pass(self: &Arc<Self>, revocations: Revocations) -> Result<()> {
        loop {
            // The grants' transaction finds whether any are due: a keeper's
            // pass nearly always has some, and waits for no read ahead of
            // them. One read after it says which other kinds have work, so
            // that a kind without any costs no transaction.
            let expired = self.expire_due_grants(revocations).await?;
            let due = self.store.due_work(self.now()).await?;
            let requests = if due.requests { self.expire_due_requests().await? } else { 0 };
            let retried = if due.revocations { self.retry_due_revocations(revocations).await? } else { 0 };
            let resumed = if due.issues { self.resume_interrupted_issues().await? } else { 0 };
            if expired < BATCH && requests < BATCH && retried < BATCH && resumed < BATCH {
                return Ok(());
            }
        }
    }

    /// Revokes grants this replica just claimed (their claims committed):
    /// awaited, or on a task of their own so that the scheduler goes on
    /// keeping deadlines meanwhile. A slow target (or every replica busy
    /// with a batch) then delays its own grants' removal, never the
    /// expiry of grants that come due after them.
    async fn revoke_claimed(self: &Arc<Self>, records: Vec<GrantRecord>, revocations: Revocations) -> Result<()> {
        match revocations {
            Revocations::Awaited => self.attempt_revocations(records).await.map(drop),
            Revocations::Detached => {
                let broker = Arc::clone(self);
                tokio::spawn(async move {
                    if let Err(error) = broker.attempt_revocations(records).await {
                        // Claimed and not recorded: the claims lapse with this
                        // replica's lease (a restart, on SQLite) and the
                        // revocations are due again.
                        tracing::error!("recording revocations failed: {error}");
                    }
                });
                Ok(())
            }
        }
    }

    /// Ends live grants past their deadline, then revokes them.
    async fn expire_due_grants(self: &Arc<Self>, revocations: Revocations) -> Result<usize> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let due = tx.due_grants(now, BATCH).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let mut expired = Vec::with_capacity(due.len());
        // Those of them a renewal waits on: it is withdrawn with its grant.
        let mut with_renewal_pending = Vec::new();
        for DueGrant { mut record, renewal_pending } in due {
            if record.grant.expire_if_due(now) {
                if renewal_pending {
                    with_renewal_pending.push(record.grant.id.clone());
                }
                // This replica revokes it: its claim keeps the others off.
                tx.update_grant(&record, Claim::Take).await?;
                tx.audit(
                    AuditEvent::new(
                        now,
                        SYSTEM_ACTOR,
                        AuditAction::GrantExpired,
                        record.grant.id.as_str(),
                        AuditResult::Ok,
                    )
                    .subject(&record.grant.owner)
                    .reason("reached its deadline")
                    .detail("resource", record.grant.resource.as_str())
                    .detail("role", record.grant.role.as_str())
                    .detail("expires_at", record.grant.expires_at.to_string()),
                )
                .await?;
                self.publish_grant(&mut tx, &record.grant, EventKind::GrantExpired, &[]);
                expired.push(record);
            }
        }
        self.withdraw_renewals(&mut tx, &with_renewal_pending, now).await?;
        tx.commit().await?;
        let count = expired.len();
        for _ in &expired {
            self.metrics.grant("expired");
        }
        self.revoke_claimed(expired, revocations).await?;
        Ok(count)
    }

    async fn expire_due_requests(&self) -> Result<usize> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let due = tx.due_requests(now, BATCH).await?;
        if due.is_empty() {
            return Ok(0); // nothing changed: no commit, no flush
        }
        let count = due.len();
        for request in due {
            self.expire_request(&mut tx, request, now).await?;
        }
        tx.commit().await?;
        Ok(count)
    }

    /// Claims revocations whose retry time has come (and those a stopped
    /// replica had claimed) and attempts them.
    async fn retry_due_revocations(self: &Arc<Self>, revocations: Revocations) -> Result<usize> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let due = tx.due_revocations(now, BATCH).await?;
        if due.is_empty() {
            return Ok(0);
        }
        for record in &due {
            tx.update_grant(record, Claim::Take).await?;
        }
        tx.commit().await?;
        let count = due.len();
        self.revoke_claimed(due, revocations).await?;
        Ok(count)
    }

    /// Asks each grant's provider to remove its credential, concurrently,
    /// and records every attempt. Returns the updated grants: those this
    /// replica still held the claim on when it recorded them.
    pub(crate) async fn attempt_revocations(&self, records: Vec<GrantRecord>) -> Result<Vec<GrantRecord>> {
        let started = self.now();
        let attempts: Vec<(GrantId, std::result::Result<Verification, String>)> = futures::stream::iter(records)
            .map(|record| async move {
                // INVARIANT: the semaphore is never closed.
                let _permit = self.revocations_in_flight.acquire().await.ok()?;
                // A replica whose lease lapsed (paused past it) leaves the
                // work to whoever took it over.
                if !self.store.may_act() {
                    return None;
                }
                tracing::debug!(grant = %record.grant.id, "revoking at the provider");
                let outcome = match self.providers.get(&record.grant.provider) {
                    Ok(provider) => self
                        .with_timeout(
                            &record.grant.resource,
                            provider.revoke(&record.grant, &record.provider_state, started),
                        )
                        .await
                        .map_err(|error| error.to_string()),
                    Err(error) => Err(error.to_string()),
                };
                tracing::debug!(grant = %record.grant.id, ok = outcome.is_ok(), "the provider answered");
                Some((record.grant.id, outcome))
            })
            // As many as there are; the semaphore bounds those in flight.
            .buffer_unordered(usize::MAX)
            .filter_map(|attempt| async move { attempt })
            .collect()
            .await;
        if attempts.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let ids: Vec<GrantId> = attempts.iter().map(|(id, _)| id.clone()).collect();
        // INVARIANT: only what this replica still holds is recorded, checked
        // in this transaction: a revocation another replica took over is
        // recorded by that one, once.
        let mut held: std::collections::HashMap<GrantId, GrantRecord> =
            tx.claimed_grants(&ids).await?.into_iter().map(|record| (record.grant.id.clone(), record)).collect();
        let mut updated = Vec::with_capacity(attempts.len());
        for (id, outcome) in attempts {
            let Some(mut current) = held.remove(&id) else {
                tracing::info!(grant = %id, "revocation taken over by another replica; not recorded here");
                continue;
            };
            let ok = outcome.is_ok();
            let (verification, error) = match outcome {
                Ok(verification) => (Some(verification), None),
                Err(error) => (None, Some(error)),
            };
            let jitter = rand::thread_rng().gen_range(0..250);
            current.grant.record_revocation_attempt(error.clone().map_or(Ok(()), Err), now, jitter);
            tx.update_grant(&current, Claim::Release).await?;
            let attempt = current.grant.revocation.as_ref().map_or(0, |r| r.attempts);
            let mut event = AuditEvent::new(
                now,
                SYSTEM_ACTOR,
                AuditAction::RevocationAttempt,
                current.grant.id.as_str(),
                if ok { AuditResult::Ok } else { AuditResult::Failed },
            )
            .subject(&current.grant.owner)
            .detail("resource", current.grant.resource.as_str())
            .detail("role", current.grant.role.as_str())
            .detail("attempt", attempt)
            .detail("replica", &*self.store.replica_id());
            if let Some(verification) = verification {
                event = event.detail("verified", verification);
            }
            if let Some(error) = error {
                let next = current.grant.revocation.as_ref().and_then(|r| r.next_attempt_at).map(|t| t.to_string());
                event = event.reason(error).detail("next_attempt_at", next);
                tracing::warn!(grant = %current.grant.id, attempt, "revocation failed; will retry");
            }
            tx.audit(event).await?;
            self.metrics.revocation_attempt(ok);
            if ok && let Some(ended) = current.grant.ended_at {
                let lag = ended.millis_until(now).max(0) as f64 / 1000.0;
                self.metrics.revocation_lag.observe(lag);
            }
            updated.push(current);
        }
        tx.commit().await?;
        // A failed attempt is due again at its next attempt time.
        let retry = updated.iter().filter_map(|r| r.grant.revocation.as_ref()?.next_attempt_at).min();
        if let Some(retry) = retry {
            self.schedule(retry);
        }
        Ok(updated)
    }

    /// Makes revocations a previous run left due now. On SQLite (one
    /// broker) every revocation waiting for its time was leased by a run
    /// that is gone, or waits out a backoff that a restart may cut short:
    /// waiting would only let a credential live past its deadline longer.
    /// Replicas on PostgreSQL never do this: their claims lapse on their own.
    pub async fn reclaim_revocations(&self) -> Result<usize> {
        if self.store.is_shared() {
            return Ok(0);
        }
        let now = self.now();
        let mut reclaimed = 0;
        loop {
            let mut tx = self.store.begin().await?;
            let leased = tx.leased_revocations(now, BATCH).await?;
            let count = leased.len();
            for mut record in leased {
                record.grant.lease_revocation(now);
                tx.update_grant(&record, Claim::Release).await?;
            }
            tx.commit().await?;
            reclaimed += count;
            if count < BATCH {
                return Ok(reclaimed);
            }
        }
    }

    /// Takes over grants left in `issuing` by a replica that stopped
    /// mid-issue (its claim lapsed; after a restart on SQLite, the previous
    /// run's), still before their deadline, and finishes them beside the
    /// scheduler (providers are idempotent): a target that hangs delays
    /// these grants, never the expiry of others. Past their deadline they
    /// are left to the expiry pass.
    async fn resume_interrupted_issues(self: &Arc<Self>) -> Result<usize> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let interrupted = tx.interrupted_issues(now, BATCH).await?;
        if interrupted.is_empty() {
            return Ok(0);
        }
        for record in &interrupted {
            tx.update_grant(record, Claim::Take).await?;
        }
        tx.commit().await?;
        let count = interrupted.len();
        tracing::info!("{count} issue(s) interrupted by a stopped broker are finished now");
        let broker = Arc::clone(self);
        tokio::spawn(async move {
            futures::stream::iter(interrupted)
                .for_each_concurrent(ISSUES_IN_FLIGHT, |record| {
                    let broker = &broker;
                    async move {
                        let id = record.grant.id.clone();
                        if let Err(error) = broker.issue(record, SYSTEM_ACTOR).await {
                            tracing::warn!(grant = %id, "finishing an interrupted issue failed: {error}");
                        }
                    }
                })
                .await;
        });
        Ok(count)
    }
}

/// Whether a pass of due work waits for the provider revocations it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Revocations {
    /// Recorded before the pass returns (`run_due_work`: tests, a caller
    /// that needs everything done).
    Awaited,
    /// Left running (the scheduler), each batch recording its own.
    Detached,
}
