//! Keeps an [`AppView`] live: lists from the broker, changes from its event
//! stream, an offline state with reconnection and backoff when it cannot
//! be reached, and alerts for what the user should hear of.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use futures::StreamExt;
use hourglass_client::Client;
use hourglass_core::Timestamp;
use hourglass_core::api::{ErrorCode, EventKind};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::alerts::{Alert, from_event};
use crate::view::{AppView, Connection};

const FIRST_RETRY: StdDuration = StdDuration::from_secs(1);
const LAST_RETRY: StdDuration = StdDuration::from_secs(30);

/// A running sync. Dropping it stops the task.
pub struct LiveSync {
    pub view: watch::Receiver<AppView>,
    pub alerts: mpsc::UnboundedReceiver<Alert>,
    refresh: Arc<Notify>,
    task: JoinHandle<()>,
}

impl LiveSync {
    /// Starts following the broker `client` talks to.
    pub fn start(client: Client) -> LiveSync {
        let (view_tx, view) = watch::channel(AppView::new(client.base_url()));
        let (alerts_tx, alerts) = mpsc::unbounded_channel();
        let refresh = Arc::new(Notify::new());
        let task = tokio::spawn(follow(client, view_tx, alerts_tx, Arc::clone(&refresh)));
        LiveSync { view, alerts, refresh, task }
    }

    /// Reloads the lists now (after the user acted), or reconnects at once
    /// when offline.
    pub fn refresh(&self) {
        self.refresh.notify_one();
    }
}

impl Drop for LiveSync {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn local_now() -> Timestamp {
    Timestamp::from_offset_date_time(time_now())
}

fn time_now() -> ::time::OffsetDateTime {
    ::time::OffsetDateTime::now_utc()
}

enum Stop {
    SignedOut(String),
    Lost(String),
}

fn stop_of(error: hourglass_client::Error) -> Stop {
    match error.code() {
        Some(ErrorCode::Unauthenticated) => Stop::SignedOut(error.to_string()),
        _ => Stop::Lost(error.to_string()),
    }
}

async fn follow(
    client: Client,
    view: watch::Sender<AppView>,
    alerts: mpsc::UnboundedSender<Alert>,
    refresh: Arc<Notify>,
) {
    let mut retry = FIRST_RETRY;
    loop {
        let stop = connect_and_follow(&client, &view, &alerts, &refresh, &mut retry).await;
        let wait = match stop {
            Stop::SignedOut(reason) => {
                update(&view, |v| v.connection = Connection::SignedOut { reason });
                // Nothing to retry until the user logs in (a new sync starts then).
                refresh.notified().await;
                continue;
            }
            Stop::Lost(error) => {
                let since = match &view.borrow().connection {
                    Connection::Offline { since, .. } => *since,
                    _ => local_now(),
                };
                let retry_at = local_now().plus_millis(retry.as_millis() as i64);
                update(&view, |v| v.connection = Connection::Offline { since, error, retry_at });
                retry
            }
        };
        retry = (retry * 2).min(LAST_RETRY);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = refresh.notified() => {}
        }
    }
}

async fn connect_and_follow(
    client: &Client,
    view: &watch::Sender<AppView>,
    alerts: &mpsc::UnboundedSender<Alert>,
    refresh: &Notify,
    retry: &mut StdDuration,
) -> Stop {
    // Subscribe first, then load: nothing that happens in between is lost.
    let mut events = match client.events().await {
        Ok(events) => events,
        Err(error) => return stop_of(error),
    };
    let me = match client.whoami().await {
        Ok(me) => me,
        Err(error) => return stop_of(error),
    };
    update(view, |v| {
        v.principal = Some(me.principal.clone());
        v.set_clock(me.server_time, local_now());
    });
    if let Err(error) = reload(client, view).await {
        return stop_of(error);
    }
    update(view, |v| v.connection = Connection::Online);
    *retry = FIRST_RETRY;
    loop {
        tokio::select! {
            event = events.next() => {
                let event = match event {
                    Some(Ok(event)) => event,
                    Some(Err(error)) => return stop_of(error),
                    None => return Stop::Lost("the event stream ended".into()),
                };
                match event.kind {
                    EventKind::Hello => update(view, |v| v.set_clock(event.at, local_now())),
                    _ => {
                        if let Some(alert) = from_event(&event, &me.principal.id) {
                            // A closed receiver means the app is shutting down.
                            let _ = alerts.send(alert);
                        }
                        if let Err(error) = reload(client, view).await {
                            return stop_of(error);
                        }
                    }
                }
            }
            () = refresh.notified() => {
                if let Err(error) = reload(client, view).await {
                    return stop_of(error);
                }
            }
        }
    }
}

/// Loads my grants and the request lists.
async fn reload(client: &Client, view: &watch::Sender<AppView>) -> Result<(), hourglass_client::Error> {
    let (grants, requests) = tokio::try_join!(client.grants(false, false), client.requests())?;
    update(view, |v| {
        v.set_clock(requests.server_time, local_now());
        v.set_lists(grants.grants, requests.mine, requests.awaiting_me);
    });
    Ok(())
}

fn update(view: &watch::Sender<AppView>, change: impl FnOnce(&mut AppView)) {
    view.send_if_modified(|current| {
        let before = current.clone();
        change(current);
        let changed = *current != before;
        if changed {
            current.revision += 1;
        }
        changed
    });
}
