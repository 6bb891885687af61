//! `--wait`: follow a pending request over the event stream until it is
//! decided and, if approved, until its grant is issued or extended.

use std::time::Duration as StdDuration;

use futures::StreamExt;
use hourglass_client::Client;
use hourglass_core::api::{EventKind, RequestOutcome};
use hourglass_core::{AccessRequest, GrantState, RequestState, Timestamp};

use crate::show::Output;

/// Waits for `request` to leave `pending`. For a renewal, `previous_deadline`
/// is the grant's deadline before it, to tell when the extension landed.
pub async fn until_decided(
    client: &Client,
    out: &Output,
    request: &AccessRequest,
    previous_deadline: Option<Timestamp>,
) -> anyhow::Result<RequestOutcome> {
    let id = request.id.clone();
    let mut remaining = request.approvals_remaining;
    let mut backoff = StdDuration::from_millis(500);
    loop {
        let mut events = match client.events().await {
            Ok(events) => events,
            Err(error) => {
                out.note(&format!("event stream unavailable ({error}); retrying"));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(StdDuration::from_secs(10));
                continue;
            }
        };
        backoff = StdDuration::from_millis(500);
        // Subscribed first, then read the state: a decision between filing
        // and subscribing is not missed.
        let mut current = client.request(&id).await?;
        loop {
            if current.state != RequestState::Pending {
                if let Some(done) = finished(client, &current, previous_deadline).await? {
                    return Ok(done);
                }
            } else if current.approvals_remaining != remaining {
                remaining = current.approvals_remaining;
                out.progress(&current);
            }
            let Some(event) = events.next().await else { break };
            let Ok(event) = event else { break };
            match (event.kind, &event.request, &event.grant) {
                (_, Some(changed), _) if changed.id == id => current = changed.clone(),
                (EventKind::GrantIssued | EventKind::GrantRenewed | EventKind::GrantFailed, _, Some(grant))
                    if current.grant_id.as_ref() == Some(&grant.id) => {}
                (EventKind::Resync, _, _) => current = client.request(&id).await?,
                _ => continue,
            }
        }
        // The stream ended (broker restarted, network): reconnect and resync.
        tokio::time::sleep(backoff).await;
    }
}

/// The outcome once the decided request's effect is visible, or `None` while
/// its grant is still being issued or extended.
async fn finished(
    client: &Client,
    request: &AccessRequest,
    previous_deadline: Option<Timestamp>,
) -> anyhow::Result<Option<RequestOutcome>> {
    let Some(grant_id) = request.grant_id.as_ref().filter(|_| request.state == RequestState::Approved) else {
        return Ok(Some(RequestOutcome { request: request.clone(), grant: None }));
    };
    let grant = client.grant(grant_id).await?;
    let landed = match previous_deadline {
        None => grant.state != GrantState::Issuing,
        Some(previous) => grant.expires_at != previous || grant.state != GrantState::Active,
    };
    Ok(landed.then(|| RequestOutcome { request: request.clone(), grant: Some(grant) }))
}
