//! Expiry and revocation: every grant is revoked at its deadline, every
//! undecided request expires, and every failed revocation is retried with
//! backoff until the provider confirms it. The store is the schedule: after
//! a crash or downtime the first pass catches up with everything overdue.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use futures::StreamExt;
use hourglass_core::api::EventKind;
use hourglass_core::audit::{AuditAction, AuditEvent, AuditResult};
use hourglass_core::principal::SYSTEM_ACTOR;
use hourglass_core::{GrantId, Timestamp};
use rand::Rng;

use std::sync::atomic::Ordering;

use crate::broker::{Broker, SCHEDULER_RUNNING};
use crate::error::Result;
use crate::lifecycle::lease;
use crate::provider::Verification;
use crate::store::GrantRecord;

/// Grants or requests handled per transaction.
const BATCH: usize = 1000;
/// Provider revocations in flight at once.
const CONCURRENCY: usize = 64;
/// Longest sleep: a safety net should a wake-up ever be missed.
const MAX_SLEEP: StdDuration = StdDuration::from_secs(30);

impl Broker {
    /// Runs until the broker stops.
    pub async fn run_scheduler(self: Arc<Self>) {
        loop {
            self.planned_wake.store(SCHEDULER_RUNNING, Ordering::SeqCst);
            if let Err(error) = self.run_due_work().await {
                tracing::error!("expiry pass failed, retrying in 1s: {error}");
                tokio::select! {
                    () = tokio::time::sleep(StdDuration::from_secs(1)) => continue,
                    () = self.stopping() => return,
                }
            }
            let sleep = match self.store.next_deadline().await {
                Ok(Some(next)) => {
                    let millis = self.now().millis_until(next).max(0);
                    StdDuration::from_millis(u64::try_from(millis).unwrap_or(0)).min(MAX_SLEEP)
                }
                Ok(None) => MAX_SLEEP,
                Err(error) => {
                    tracing::error!("reading the next deadline failed: {error}");
                    StdDuration::from_secs(1)
                }
            };
            let wake_at = self.now().plus_millis(i64::try_from(sleep.as_millis()).unwrap_or(i64::MAX));
            self.planned_wake.store(wake_at.unix_millis(), Ordering::SeqCst);
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = self.wake.notified() => {}
                () = self.stopping() => return,
            }
        }
    }

    /// Everything overdue now: expire grants and revoke them, expire
    /// requests, retry revocations. Returns when nothing is due.
    pub async fn run_due_work(&self) -> Result<()> {
        loop {
            let expired = self.expire_due_grants().await?;
            let requests = self.expire_due_requests().await?;
            let retried = self.retry_due_revocations().await?;
            if expired < BATCH && requests < BATCH && retried < BATCH {
                return Ok(());
            }
        }
    }

    /// Ends live grants past their deadline, then revokes them.
    async fn expire_due_grants(&self) -> Result<usize> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let due = tx.due_grants(now, BATCH).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let lease_until = now.plus_millis(lease(self.provider_timeout));
        let mut expired = Vec::with_capacity(due.len());
        for mut record in due {
            if record.grant.expire_if_due(now) {
                record.grant.lease_revocation(lease_until);
                tx.update_grant(&record).await?;
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
                expired.push(record);
            }
        }
        let ids: Vec<GrantId> = expired.iter().map(|r| r.grant.id.clone()).collect();
        let withdrawn = self.withdraw_renewals(&mut tx, &ids, now).await?;
        tx.commit().await?;
        let count = expired.len();
        for record in &expired {
            self.metrics.grant("expired");
            self.publish_grant(&record.grant, EventKind::GrantExpired, &[]);
        }
        for request in &withdrawn {
            self.publish_request(request, EventKind::RequestCancelled, &[]);
        }
        self.attempt_revocations(expired).await?;
        Ok(count)
    }

    async fn expire_due_requests(&self) -> Result<usize> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let due = tx.due_requests(now, BATCH).await?;
        if due.is_empty() {
            return Ok(0); // nothing changed: no commit, no flush
        }
        let mut expired = Vec::with_capacity(due.len());
        for request in due {
            expired.push(self.expire_request(&mut tx, request, now).await?);
        }
        tx.commit().await?;
        for request in &expired {
            self.publish_request(request, EventKind::RequestExpired, &[]);
        }
        Ok(expired.len())
    }

    /// Claims revocations whose retry time has come and attempts them.
    async fn retry_due_revocations(&self) -> Result<usize> {
        let now = self.now();
        let lease_until = now.plus_millis(lease(self.provider_timeout));
        let mut tx = self.store.begin().await?;
        let mut due = tx.due_revocations(now, BATCH).await?;
        if due.is_empty() {
            return Ok(0);
        }
        for record in &mut due {
            record.grant.lease_revocation(lease_until);
            tx.update_grant(record).await?;
        }
        tx.commit().await?;
        let count = due.len();
        if count > 0 {
            self.attempt_revocations(due).await?;
        }
        Ok(count)
    }

    /// Asks each grant's provider to remove its credential, concurrently,
    /// and records every attempt. Returns the updated grants.
    pub(crate) async fn attempt_revocations(&self, records: Vec<GrantRecord>) -> Result<Vec<GrantRecord>> {
        let started = self.now();
        let attempts: Vec<(GrantRecord, std::result::Result<Verification, String>)> = futures::stream::iter(records)
            .map(|record| async move {
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
                (record, outcome)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let mut updated = Vec::with_capacity(attempts.len());
        for (record, outcome) in attempts {
            let Some(mut current) = tx.grant(&record.grant.id).await? else { continue };
            let ok = outcome.is_ok();
            let (verification, error) = match outcome {
                Ok(verification) => (Some(verification), None),
                Err(error) => (None, Some(error)),
            };
            let jitter = rand::thread_rng().gen_range(0..250);
            current.grant.record_revocation_attempt(error.clone().map_or(Ok(()), Err), now, jitter);
            tx.update_grant(&current).await?;
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
            .detail("attempt", attempt);
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

    /// Takes back revocations a previous run had claimed. Their lease kept
    /// a second attempt from starting while the first was in flight; after
    /// a restart no attempt of this process is, so waiting out the lease
    /// (the provider timeout and more) would only let a credential live
    /// past its deadline longer. Run before the scheduler starts.
    pub async fn reclaim_revocations(&self) -> Result<usize> {
        let now = self.now();
        let mut reclaimed = 0;
        loop {
            let mut tx = self.store.begin().await?;
            let leased = tx.leased_revocations(now, BATCH).await?;
            let count = leased.len();
            for mut record in leased {
                record.grant.lease_revocation(now);
                tx.update_grant(&record).await?;
            }
            tx.commit().await?;
            reclaimed += count;
            if count < BATCH {
                return Ok(reclaimed);
            }
        }
    }

    /// Grants a stop left in `issuing`, still before their deadline: work
    /// a crash interrupted. Read before the server accepts requests, so
    /// that none of this run's issues is among them.
    pub async fn interrupted_issues(&self) -> Result<Vec<GrantRecord>> {
        let now: Timestamp = self.now();
        Ok(self.store.issuing_grants().await?.into_iter().filter(|r| r.grant.expires_at > now).collect())
    }

    /// Finishes issues a crash interrupted, concurrently (providers are
    /// idempotent). Grants past their deadline meanwhile are left to the
    /// expiry pass. Runs beside the server: a target that hangs delays
    /// these grants, never the broker's start.
    pub async fn recover(&self, interrupted: Vec<GrantRecord>) {
        futures::stream::iter(interrupted)
            .for_each_concurrent(CONCURRENCY, |record| async move {
                let id = record.grant.id.clone();
                if let Err(error) = self.issue(record, SYSTEM_ACTOR).await {
                    tracing::warn!(grant = %id, "re-issuing after restart failed: {error}");
                }
            })
            .await;
    }
}
