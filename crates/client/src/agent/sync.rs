//! Following the broker: the event stream with reconnects and backoff, a
//! full resync after each (re)connect, on `resync` and every few minutes,
//! credential fetches on issue and renew, readiness checks, and the expiry
//! timer that ends credentials by this machine's clock.

use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use futures::StreamExt;
use hourglass_core::api::{ErrorCode, Event, EventKind};
use hourglass_core::{Grant, GrantState};
use rand::Rng;

use super::state::ReadyCheck;
use super::{Shared, local_now};

const MIN_BACKOFF: StdDuration = StdDuration::from_millis(500);
const MAX_BACKOFF: StdDuration = StdDuration::from_secs(30);
/// A connection that lasted this long resets the backoff.
const STABLE: StdDuration = StdDuration::from_secs(60);
/// Events can be lost without the stream noticing (a half-open
/// connection): a full resync this often bounds how long.
const RESYNC_EVERY: StdDuration = StdDuration::from_secs(300);
/// The expiry timer wakes at least this often, to notice wall-clock jumps
/// (suspend, NTP) that a monotonic sleep does not see.
const EXPIRY_TICK: StdDuration = StdDuration::from_secs(30);

pub(crate) async fn follow(shared: Arc<Shared>) {
    let mut backoff = MIN_BACKOFF;
    let mut last_note = String::new();
    loop {
        let started = Instant::now();
        let note = match session(&shared).await {
            Ok(()) => "the broker closed the event stream; reconnecting".to_owned(),
            Err(error) => format!("broker: {error}; retrying"),
        };
        // Said once while the broker stays down, not at every retry.
        if note != last_note || started.elapsed() > STABLE {
            shared.note(&note);
            last_note = note;
        }
        shared.update(|state| {
            state.online = false;
            (false, ())
        });
        if started.elapsed() > STABLE {
            backoff = MIN_BACKOFF;
        }
        // Jitter keeps many agents from reconnecting in step after a restart.
        let jitter = rand::thread_rng().gen_range(0.5..1.0);
        tokio::time::sleep(backoff.mul_f64(jitter)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection: hello (the broker's clock), who we are, a full resync,
/// then events as they come.
async fn session(shared: &Arc<Shared>) -> crate::Result<()> {
    let events = shared.client.events().await?;
    let mut events = std::pin::pin!(events);
    match events.next().await {
        Some(Ok(event)) if event.kind == EventKind::Hello => set_skew(shared, event.at),
        Some(Ok(_)) => {}
        Some(Err(error)) => return Err(error),
        None => return Ok(()),
    }
    if shared.lock().principal.is_none() {
        let me = shared.client.whoami().await?;
        shared.lock().principal = Some(me.principal.id.clone());
        set_skew(shared, me.server_time);
    }
    resync(shared).await?;
    shared.update(|state| {
        state.online = true;
        (false, ())
    });
    let mut periodic = tokio::time::interval_at(tokio::time::Instant::now() + RESYNC_EVERY, RESYNC_EVERY);
    loop {
        tokio::select! {
            event = events.next() => match event {
                None => return Ok(()),
                Some(Err(error)) => return Err(error),
                Some(Ok(event)) => handle(shared, event).await?,
            },
            _ = periodic.tick() => resync(shared).await?,
        }
    }
}

fn set_skew(shared: &Arc<Shared>, server_time: hourglass_core::Timestamp) {
    shared.update(|state| (state.set_skew(server_time, local_now()), ()));
}

async fn handle(shared: &Arc<Shared>, event: Event) -> crate::Result<()> {
    match event.kind {
        EventKind::Resync => resync(shared).await,
        EventKind::GrantIssued | EventKind::GrantRenewed | EventKind::GrantReady => {
            if let Some(grant) = event.grant.filter(|g| shared.lock().is_mine(g)) {
                take_in(shared, grant).await;
            }
            Ok(())
        }
        EventKind::GrantRevoked | EventKind::GrantExpired | EventKind::GrantFailed => {
            if let Some(grant) = event.grant.filter(|g| shared.lock().is_mine(g)) {
                shared.update(|state| (state.end(&grant.id, Some(grant.state), local_now()), ()));
            }
            Ok(())
        }
        EventKind::RequestDenied | EventKind::RequestCancelled | EventKind::RequestExpired => {
            if let Some(request) = event.request {
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
    match shared.client.credential(&grant.id).await {
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
    let list = shared.client.grants(false, false).await?;
    set_skew(shared, list.server_time);
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
        let ended = shared.client.grant(&id).await.ok().map(|grant| grant.state).filter(|state| !state.is_live());
        shared.update(|state| (state.end(&id, ended, local_now()), ()));
    }
    Ok(())
}

/// Ends credentials at their deadline on this machine's clock, whatever
/// the broker's reachability.
pub(crate) async fn expire(shared: Arc<Shared>) {
    loop {
        let next = shared.lock().next_deadline();
        let wait = next.map_or(EXPIRY_TICK, |deadline| {
            let millis = local_now().millis_until(deadline).max(0);
            StdDuration::from_millis(u64::try_from(millis).unwrap_or(0)).min(EXPIRY_TICK)
        });
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.deadlines_moved.notified() => {}
        }
        shared.update(|state| (state.expire_due(local_now()), ()));
    }
}

/// Logs in once with the client's password and tells the broker the grant
/// is ready.
pub(crate) fn spawn_ready_check(shared: Arc<Shared>, check: ReadyCheck) {
    tokio::spawn(async move {
        let ReadyCheck { grant, env, password } = check;
        let result = match crate::readiness::postgres(&env, &password).await {
            Ok(what) => shared.client.confirm_ready(&grant, Some(what)).await.map_err(|error| error.to_string()),
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
