//! Audit events recorded on their own, committed in groups.
//!
//! A credential fetched or a refusal is audited with nothing else changing:
//! a transaction holding only an append. Each transaction costs the engine
//! a commit and a flush (on PostgreSQL: the `COMMIT`, a flush barrier of its
//! own and the chain row's turn; on SQLite: a write transaction) whatever
//! it holds, so those recorded while one group commits wait for it and
//! then commit together, in one transaction, as the next group. Every
//! caller still returns only once its events are on disk, and the chain
//! holds them in the order their groups committed.

use std::sync::Mutex;

use hourglass_core::audit::{AuditEvent, AuditRecord};
use tokio::sync::oneshot;

use super::Store;
use crate::error::{Error, Result};

#[derive(Default)]
pub(super) struct AuditGroups {
    /// Recorded and not yet taken into a group.
    pub(super) waiting: Mutex<Vec<Waiting>>,
    /// One group commits at a time: the next gathers meanwhile.
    pub(super) turn: tokio::sync::Mutex<()>,
    /// Groups committed.
    #[cfg(test)]
    pub(super) committed: std::sync::atomic::AtomicUsize,
}

pub(super) struct Waiting {
    events: Vec<AuditEvent>,
    done: oneshot::Sender<Result<Vec<AuditRecord>>>,
}

impl Store {
    /// Appends `events` to the audit chain, in one transaction with those
    /// other callers record meanwhile; returns their records once on disk.
    pub async fn record_audit(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditRecord>> {
        let (done, recorded) = oneshot::channel();
        self.audit_groups
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Waiting { events, done });
        // On a task of its own, so that a caller that goes away (its client
        // hung up) never leaves the others of its group unanswered.
        let store = self.clone();
        tokio::spawn(async move {
            let _turn = store.audit_groups.turn.lock().await;
            let group = std::mem::take(
                &mut *store.audit_groups.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            // Empty when an earlier turn took this caller's events along.
            if !group.is_empty() {
                store.commit_group(group).await;
            }
        });
        recorded.await.map_err(|_| Error::Internal("recording audit events was cut short".into()))?
    }

    async fn commit_group(&self, group: Vec<Waiting>) {
        #[cfg(test)]
        self.audit_groups.committed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let sizes: Vec<usize> = group.iter().map(|waiting| waiting.events.len()).collect();
        let (events, answers): (Vec<Vec<AuditEvent>>, Vec<_>) =
            group.into_iter().map(|waiting| (waiting.events, waiting.done)).unzip();
        let committed = async {
            let mut tx = self.begin().await?;
            for event in events.into_iter().flatten() {
                tx.audit(event).await?;
            }
            tx.commit().await
        }
        .await;
        match committed {
            Ok(records) => {
                let mut records = records.into_iter();
                for (size, answer) in sizes.into_iter().zip(answers) {
                    let _ = answer.send(Ok(records.by_ref().take(size).collect()));
                }
            }
            Err(error) => {
                // Nothing of the group was recorded: each caller hears why.
                let message = error.to_string();
                for answer in answers {
                    let _ = answer.send(Err(Error::Internal(format!("recording audit events: {message}"))));
                }
            }
        }
    }
}
