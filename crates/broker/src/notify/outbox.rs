//! The outbox's sender, run by every replica: claims what is due (a claim
//! holds while the replica's lease does, so two replicas never send the
//! same message at once, and a dead replica's are taken over), sends each
//! on its own task, and records how it went: sent (with the message's
//! place, for the updates after it), retried with backoff, skipped (a
//! reminder that no longer applies) or, after about a day of failures,
//! abandoned and audited. Delivery is at least once: a replica that dies
//! between sending and recording sends again from another; receivers
//! deduplicate by the message id (`Idempotency-Key`, the Message-ID).

use std::sync::Arc;
use std::time::Duration as StdDuration;

use hourglass_core::Timestamp;
use hourglass_core::audit::{AuditAction, AuditEvent, AuditResult};
use hourglass_core::principal::SYSTEM_ACTOR;
use tokio::sync::Semaphore;

use super::channels::Channel;
use super::email::Mailed;
use super::http::{Failed, HttpSender};
use super::{Notice, NoticeKind, render};
use crate::broker::Broker;
use crate::store::{ClaimedNotice, NoticeOutcome};

/// Messages claimed at a time.
const BATCH: usize = 64;
/// Messages being sent at once.
const IN_FLIGHT: usize = 64;
/// The longest wait between two looks at the outbox: what another
/// replica enqueued and could not send (it died) is found this soon.
const POLL: StdDuration = StdDuration::from_secs(5);
/// Attempts before a message is abandoned: backoff doubles from a second
/// to five minutes, so about a day of trying.
const MAX_ATTEMPTS: u32 = 300;
const MAX_BACKOFF_SECS: u64 = 300;

/// Sends the outbox until the broker stops.
pub async fn run(broker: Arc<Broker>) {
    let http = match HttpSender::new() {
        Ok(http) => http,
        Err(error) => {
            tracing::error!("notifications cannot be sent: {error}");
            return;
        }
    };
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        // Registered before looking, so that a commit while looking wakes the wait below.
        let committed = broker.store.notices_committed();
        tokio::pin!(committed);
        committed.as_mut().enable();
        let claimed = if broker.store.may_act() { claim(&broker).await } else { Ok(Vec::new()) };
        let wait = match claimed {
            Ok(claimed) if !claimed.is_empty() => {
                for notice in claimed {
                    let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else { return };
                    let (broker, http) = (Arc::clone(&broker), http.clone());
                    tokio::spawn(async move {
                        send_and_record(&broker, &http, notice).await;
                        drop(permit);
                    });
                }
                continue;
            }
            Ok(_) => until_next_due(&broker).await,
            Err(error) => {
                tracing::warn!("reading the outbox failed: {error}");
                StdDuration::from_secs(1)
            }
        };
        tokio::select! {
            () = committed => {}
            () = tokio::time::sleep(wait) => {}
            () = broker.stopping() => return,
        }
    }
}

async fn claim(broker: &Broker) -> crate::error::Result<Vec<ClaimedNotice>> {
    let mut tx = broker.store.begin().await?;
    let claimed = tx.claim_notices(broker.now(), BATCH).await?;
    tx.commit().await?;
    Ok(claimed)
}

/// How long to sleep when nothing was due: until the next message falls
/// due, at least a moment (it may be another replica's, or behind one
/// being sent) and at most [`POLL`].
async fn until_next_due(broker: &Broker) -> StdDuration {
    match broker.store.next_notice_due().await {
        Ok(Some(due)) => {
            let millis = broker.now().millis_until(due).clamp(200, i64::try_from(POLL.as_millis()).unwrap_or(5000));
            StdDuration::from_millis(u64::try_from(millis).unwrap_or(200))
        }
        Ok(None) => POLL,
        Err(_) => StdDuration::from_secs(1),
    }
}

async fn send_and_record(broker: &Broker, http: &HttpSender, claimed: ClaimedNotice) {
    let kind = broker.channels.get(&claimed.channel).map_or("none", Channel::kind);
    let outcome = send(broker, http, &claimed).await;
    let now = broker.now();
    let label = match &outcome {
        NoticeOutcome::Sent { .. } => "sent",
        NoticeOutcome::Skipped { .. } => "skipped",
        NoticeOutcome::Abandoned { .. } => "abandoned",
        NoticeOutcome::Retry { .. } => "retry",
    };
    broker.metrics.notification(kind, label);
    match &outcome {
        NoticeOutcome::Retry { error, next } => tracing::warn!(
            channel = %claimed.channel, id = %claimed.id, attempt = claimed.attempts + 1,
            "notification not sent, tried again at {next}: {error}"
        ),
        NoticeOutcome::Abandoned { error } => {
            tracing::error!(channel = %claimed.channel, id = %claimed.id, "notification abandoned: {error}");
        }
        _ => {}
    }
    let recorded = async {
        let mut tx = broker.store.begin().await?;
        let held = tx.notice_done(claimed.seq, now, &outcome).await?;
        if let (true, NoticeOutcome::Abandoned { error }) = (held, &outcome) {
            tx.audit(
                AuditEvent::new(
                    now,
                    SYSTEM_ACTOR,
                    AuditAction::NotificationAbandoned,
                    &claimed.id,
                    AuditResult::Failed,
                )
                .detail("channel", claimed.channel.as_str())
                .detail("topic", claimed.topic.as_str())
                .detail("attempts", claimed.attempts + 1)
                .reason(error.clone()),
            )
            .await?;
        }
        tx.commit().await?;
        crate::error::Result::Ok(held)
    };
    match recorded.await {
        Ok(true) => {}
        // Another replica took it over (this one's lease lapsed): it sends it.
        Ok(false) => tracing::info!(id = %claimed.id, "notification taken over by another replica"),
        Err(error) => tracing::warn!(id = %claimed.id, "recording a notification failed (it is sent again): {error}"),
    }
}

/// Sends one message and says how it went.
async fn send(broker: &Broker, http: &HttpSender, claimed: &ClaimedNotice) -> NoticeOutcome {
    let Some(channel) = broker.channels.get(&claimed.channel) else {
        return NoticeOutcome::Abandoned {
            error: format!("channel \"{}\" is no longer configured in [broker.channels]", claimed.channel),
        };
    };
    let notice: Notice = match serde_json::from_str(&claimed.notice) {
        Ok(notice) => notice,
        Err(error) => return NoticeOutcome::Abandoned { error: format!("the stored notice does not read: {error}") },
    };
    if let Some(why) = reminder_obsolete(broker, &notice).await {
        return NoticeOutcome::Skipped { why };
    }
    if notice.audience == super::Audience::Requester
        && let Some(person) = notice.request.as_ref().map(|r| &r.requester).or(notice.grant.as_ref().map(|g| &g.owner))
        && broker.muted_channels(person).await.is_ok_and(|muted| muted.contains(&claimed.channel))
    {
        return NoticeOutcome::Skipped { why: format!("{person} turned channel \"{}\" off", claimed.channel) };
    }
    let thread = if notice.kind.starts_thread() {
        None
    } else {
        match broker.store.notice_thread(&claimed.channel, &claimed.topic).await {
            Ok(thread) => thread,
            Err(error) => return retry(broker.now(), claimed, &Failed { error: error.to_string(), retry_after: None }),
        }
    };
    let mut summary = render::summarize(&notice);
    // Approvers asked to decide get the approval page's link, where there is one.
    let decidable = matches!(notice.kind, NoticeKind::Filed | NoticeKind::Progress)
        && notice.request.as_ref().is_some_and(|request| request.is_pending());
    if notice.audience == super::Audience::Approvers && decidable {
        summary.link = broker
            .web_login
            .as_ref()
            .zip(notice.request.as_ref())
            .map(|(web, request)| format!("{}/approve/{}", web.public_url, request.id));
    }
    let keep = |reference: String| NoticeOutcome::Sent { reference: notice.kind.starts_thread().then_some(reference) };
    let sent = match channel {
        Channel::SlackBot { api_url, channel, token } => {
            http.slack_bot(api_url, channel, token, render::slack(&summary), thread.as_deref()).await.map(keep)
        }
        Channel::SlackWebhook { url } => {
            http.post_secret_url("slack webhook", url, &render::slack(&summary)).await.map(|()| sent_alone())
        }
        Channel::Teams { url } => {
            http.post_secret_url("teams webhook", url, &render::teams(&summary)).await.map(|()| sent_alone())
        }
        Channel::Webhook { url, secret } => {
            let body = render::webhook(&claimed.id, &claimed.topic, &notice, summary.link.as_deref());
            http.webhook(url, secret, &claimed.id, body, broker.now().unix_seconds()).await.map(|()| sent_alone())
        }
        Channel::Email(email) => match email.send(&claimed.id, &notice, &summary, thread.as_deref()).await {
            Ok(Mailed::Sent(message_id)) => Ok(keep(message_id)),
            Ok(Mailed::NoRecipient) => {
                return NoticeOutcome::Skipped { why: "the requester's id is not an email address".into() };
            }
            Err(error) => Err(Failed { error, retry_after: None }),
        },
    };
    match sent {
        Ok(outcome) => outcome,
        Err(failed) => retry(broker.now(), claimed, &failed),
    }
}

fn sent_alone() -> NoticeOutcome {
    NoticeOutcome::Sent { reference: None }
}

/// Tried again after a backoff (1 s doubling to 5 min, or longer if the
/// receiver asked), abandoned after [`MAX_ATTEMPTS`].
fn retry(now: Timestamp, claimed: &ClaimedNotice, failed: &Failed) -> NoticeOutcome {
    let attempt = claimed.attempts + 1;
    if attempt >= MAX_ATTEMPTS {
        return NoticeOutcome::Abandoned { error: format!("{} (after {attempt} attempts)", failed.error) };
    }
    let backoff = 1u64.checked_shl(claimed.attempts).unwrap_or(u64::MAX).min(MAX_BACKOFF_SECS);
    let asked = failed.retry_after.map_or(0, |after| after.as_secs().min(3600));
    let wait = backoff.max(asked);
    NoticeOutcome::Retry {
        next: now.plus_millis(i64::try_from(wait.saturating_mul(1000)).unwrap_or(i64::MAX)),
        error: failed.error.clone(),
    }
}

/// Why a reminder no longer applies: a grant's end drawing near, when it
/// ended or was renewed (the renewal set a reminder of its own); a
/// break-glass review, when it was done.
async fn reminder_obsolete(broker: &Broker, notice: &Notice) -> Option<String> {
    match notice.kind {
        NoticeKind::Expiring => expiry_reminder_obsolete(broker, notice).await,
        NoticeKind::ReviewReminder => {
            let grant = notice.request.as_ref()?.grant_id.as_ref()?;
            match broker.store.grant(grant).await {
                Ok(Some(record)) if !record.grant.awaits_review() => Some("the grant was reviewed".into()),
                _ => None,
            }
        }
        _ => None,
    }
}

async fn expiry_reminder_obsolete(broker: &Broker, notice: &Notice) -> Option<String> {
    let announced = notice.grant.as_ref()?;
    match broker.store.grant(&announced.id).await {
        Ok(Some(record)) if !record.grant.is_usable_at(broker.now()) => Some("the grant has ended".into()),
        Ok(Some(record)) if record.grant.expires_at != announced.expires_at => {
            Some("the grant's deadline moved (renewed)".into())
        }
        Ok(Some(_)) | Err(_) => None,
        Ok(None) => Some("the grant is gone".into()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic, reason = "a test fails by panicking")]

    use super::*;

    fn claimed(attempts: u32) -> ClaimedNotice {
        ClaimedNotice {
            seq: 1,
            id: "ntf_1".into(),
            channel: "c".into(),
            topic: "t".into(),
            created_at: Timestamp::from_unix_millis(0),
            due_at: Timestamp::from_unix_millis(0),
            attempts,
            notice: String::new(),
        }
    }

    #[test]
    fn retries_back_off_from_a_second_to_five_minutes_then_give_up() {
        let now = Timestamp::from_unix_millis(0);
        let failed = Failed { error: "HTTP 503".into(), retry_after: None };
        let next = |attempts| match retry(now, &claimed(attempts), &failed) {
            NoticeOutcome::Retry { next, .. } => now.millis_until(next),
            other => panic!("{other:?}"),
        };
        assert_eq!([next(0), next(1), next(2), next(8)], [1_000, 2_000, 4_000, 256_000]);
        assert_eq!(next(9), 300_000, "at most five minutes");
        assert_eq!(next(64), 300_000, "no overflow");
        let asked = Failed { error: "HTTP 429".into(), retry_after: Some(StdDuration::from_secs(30)) };
        assert!(
            matches!(retry(now, &claimed(0), &asked), NoticeOutcome::Retry { next, .. } if next.unix_millis() == 30_000)
        );
        assert!(matches!(retry(now, &claimed(MAX_ATTEMPTS - 1), &failed), NoticeOutcome::Abandoned { .. }));
    }
}
