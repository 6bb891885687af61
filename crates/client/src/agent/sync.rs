//! What the broker's feed ([`crate::feed`]) means for the agent: a full
//! resync after each (re)connect, on `resync` and every few minutes,
//! credential fetches on issue and renew, readiness checks; and the expiry
//! timer that ends credentials by this machine's clock.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use hourglass_core::api::{ErrorCode, Event, EventKind, WhoAmI};
use hourglass_core::{Grant, GrantState};

use super::Shared;
use super::state::ReadyCheck;
use crate::clock::local_now;
use crate::feed::FeedItem;

/// The expiry timer wakes at least this often, to notice wall-clock jumps
/// (suspend, NTP) that a monotonic sleep does not see.
const EXPIRY_TICK: StdDuration = StdDuration::from_secs(30);

pub(crate) async fn follow(shared: Arc<Shared>) {
    let mut subscription = shared.feed.subscribe();
    // Said once while the broker stays down, not at every retry.
    let mut last_note = String::new();
    while let Some(item) = subscription.next().await {
        let loaded = match item {
            FeedItem::Online(me) => online(&shared, &me, &mut last_note).await,
            FeedItem::Event(event) => handle(&shared, &event).await,
            FeedItem::Resync => resync(&shared).await,
            FeedItem::Clock(clock) => {
                shared.update(|state| (state.set_clock(clock), ()));
                Ok(())
            }
            FeedItem::Offline { error: why, .. } | FeedItem::SignedOut { reason: why } => {
                offline(&shared, &format!("broker: {why}; retrying"), &mut last_note);
                Ok(())
            }
        };
        if let Err(error) = loaded {
            shared.feed.reconnect(error.to_string());
        }
    }
}

/// Connected: who we are, then a full resync.
async fn online(shared: &Arc<Shared>, me: &WhoAmI, last_note: &mut String) -> crate::Result<()> {
    shared.lock().principal = Some(me.principal.id.clone());
    resync(shared).await?;
    last_note.clear();
    shared.update(|state| {
        state.online = true;
        (false, ())
    });
    Ok(())
}

fn offline(shared: &Arc<Shared>, note: &str, last_note: &mut String) {
    if note != last_note.as_str() {
        shared.note(note);
        note.clone_into(last_note);
    }
    shared.update(|state| {
        state.online = false;
        (false, ())
    });
}

async fn handle(shared: &Arc<Shared>, event: &Event) -> crate::Result<()> {
    match event.kind {
        EventKind::GrantIssued | EventKind::GrantRenewed | EventKind::GrantReady => {
            if let Some(grant) = event.grant.clone().filter(|g| shared.lock().is_mine(g)) {
                take_in(shared, grant).await;
            }
            Ok(())
        }
        EventKind::GrantRevoked | EventKind::GrantExpired | EventKind::GrantFailed => {
            if let Some(grant) = event.grant.as_ref().filter(|g| shared.lock().is_mine(g)) {
                shared.update(|state| (state.end(&grant.id, Some(grant.state), local_now()), ()));
            }
            Ok(())
        }
        EventKind::RequestDenied | EventKind::RequestCancelled | EventKind::RequestExpired => {
            if let Some(request) = &event.request {
                shared.update(|state| {
                    state.forget_request(&request.id);
                    (false, ())
                });
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Brings one live grant in: fetches its credential when it is new or its
/// deadline moved.
async fn take_in(shared: &Arc<Shared>, grant: Grant) {
    if !grant.state.is_live() {
        shared.update(|state| (state.end(&grant.id, Some(grant.state), local_now()), ()));
        return;
    }
    if grant.state != GrantState::Active {
        return; // issuing: the grant.issued event follows
    }
    if !shared.lock().needs_credential(&grant) {
        shared.update(|state| (state.upsert(grant, None, local_now()), ()));
        return;
    }
    fetch(shared, grant).await;
}

/// Fetches a live grant's credential from the broker and holds it: when it
/// is new, its deadline moved, or its keys are due for a fresh copy.
async fn fetch(shared: &Arc<Shared>, grant: Grant) {
    match shared.client().credential(&grant.id).await {
        Ok(credential) => {
            shared.update(|state| (state.upsert(grant, Some(credential), local_now()), ()));
        }
        Err(error) if matches!(error.code(), Some(ErrorCode::NotActive | ErrorCode::NotFound)) => {
            shared.update(|state| (state.end(&grant.id, None, local_now()), ()));
        }
        Err(error) => {
            let id = grant.id.clone();
            shared.update(|state| {
                let changed = state.upsert(grant, None, local_now());
                state.set_problem(&id, format!("fetching its credential failed: {error}"));
                (changed, ())
            });
            shared.note(&format!("fetching the credential of {id} failed: {error}"));
        }
    }
}

/// Reloads the list of my live grants: takes in new and renewed ones and
/// forgets those that ended while events were missed.
async fn resync(shared: &Arc<Shared>) -> crate::Result<()> {
    let list = shared.client().grants(false, false).await?;
    shared.feed.observe_clock(list.server_time);
    shared.update(|state| (state.set_clock(shared.feed.clock()), ()));
    let mine: Vec<Grant> = {
        let state = shared.lock();
        list.grants.into_iter().filter(|g| state.is_mine(g) && g.state.is_live()).collect()
    };
    let gone: Vec<_> =
        shared.lock().held_ids().into_iter().filter(|id| !mine.iter().any(|grant| &grant.id == id)).collect();
    for grant in mine {
        take_in(shared, grant).await;
    }
    for id in gone {
        let ended = shared.client().grant(&id).await.ok().map(|grant| grant.state).filter(|state| !state.is_live());
        shared.update(|state| (state.end(&id, ended, local_now()), ()));
    }
    Ok(())
}

/// Ends credentials at their deadline on this machine's clock, whatever
/// the broker's reachability, and fetches fresh keys for grants whose
/// keys end before they do (short-lived cloud credentials).
pub(crate) async fn expire(shared: Arc<Shared>) {
    loop {
        let next = shared.lock().next_wakeup();
        let wait = next.map_or(EXPIRY_TICK, |deadline| {
            let millis = local_now().millis_until(deadline).max(0);
            StdDuration::from_millis(u64::try_from(millis).unwrap_or(0)).min(EXPIRY_TICK)
        });
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.deadlines_moved.notified() => {}
        }
        shared.update(|state| (state.expire_due(local_now()), ()));
        let due = shared.update(|state| (false, state.take_refreshes(local_now())));
        for grant in due {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move { fetch(&shared, grant).await });
        }
    }
}

/// Logs in once with the client's password and tells the broker the grant
/// is ready.
pub(crate) fn spawn_ready_check(shared: Arc<Shared>, check: ReadyCheck) {
    tokio::spawn(async move {
        let ReadyCheck { grant, env, password } = check;
        let result = match crate::readiness::postgres(&env, &password).await {
            Ok(what) => shared.client().confirm_ready(&grant, Some(what)).await.map_err(|error| error.to_string()),
            Err(error) => Err(format!("the login with the grant's password failed: {error}")),
        };
        match result {
            Ok(confirmed) => {
                shared.note(&format!("{grant} is ready: logged in with its password"));
                take_in(&shared, confirmed).await;
            }
            Err(error) => {
                shared.note(&format!("{grant} could not be confirmed ready: {error}"));
                shared.update(|state| {
                    state.set_problem(&grant, format!("not confirmed ready: {error}"));
                    (false, ())
                });
            }
        }
    });
}
