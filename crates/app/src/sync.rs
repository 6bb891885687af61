//! Keeps a [`Live`] view up to date from the broker's feed
//! ([`hourglass_client::feed`], shared with the app's agent): lists loaded
//! on every connection and event, the connection's state, and alerts for
//! what the user should hear of.

use std::sync::Arc;

use hourglass_client::Client;
use hourglass_client::clock::local_now;
use hourglass_client::feed::{Feed, FeedItem};
use hourglass_core::Principal;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::alerts::{Alert, from_event};
use crate::view::{Connection, Live};

/// A running sync. Dropping it stops the task.
pub struct LiveSync {
    pub view: watch::Receiver<Live>,
    pub alerts: mpsc::UnboundedReceiver<Alert>,
    feed: Feed,
    refresh: Arc<Notify>,
    task: JoinHandle<()>,
}

impl LiveSync {
    /// Starts following the broker through `feed`.
    pub fn start(feed: Feed) -> LiveSync {
        let (view_tx, view) = watch::channel(Live::new(feed.client().base_url()));
        let (alerts_tx, alerts) = mpsc::unbounded_channel();
        let refresh = Arc::new(Notify::new());
        let task = tokio::spawn(follow(feed.clone(), view_tx, alerts_tx, Arc::clone(&refresh)));
        LiveSync { view, alerts, feed, refresh, task }
    }

    /// Reloads the lists now (after the user acted), or reconnects at once
    /// when offline.
    pub fn refresh(&self) {
        if self.view.borrow().connection == Connection::Online {
            self.refresh.notify_one();
        } else {
            self.feed.retry_now();
        }
    }
}

impl Drop for LiveSync {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn follow(feed: Feed, view: watch::Sender<Live>, alerts: mpsc::UnboundedSender<Alert>, refresh: Arc<Notify>) {
    let mut subscription = feed.subscribe();
    let mut me: Option<Principal> = None;
    loop {
        let item = tokio::select! {
            item = subscription.next() => match item {
                Some(item) => item,
                None => return,
            },
            () = refresh.notified() => FeedItem::Resync,
        };
        let loaded = match item {
            FeedItem::Online(whoami) => {
                me = Some(whoami.principal.clone());
                update(&view, |live| live.principal = Some(whoami.principal.clone()));
                let loaded = reload(&feed, &view).await;
                if loaded.is_ok() {
                    update(&view, |live| live.connection = Connection::Online);
                }
                loaded
            }
            FeedItem::Event(event) => {
                if let Some(alert) = me.as_ref().and_then(|me| from_event(&event, &me.id)) {
                    // A closed receiver means the app is shutting down.
                    let _ = alerts.send(alert);
                }
                reload(&feed, &view).await
            }
            FeedItem::Resync => reload(&feed, &view).await,
            FeedItem::Clock(clock) => {
                update(&view, |live| live.clock = clock);
                Ok(())
            }
            FeedItem::Offline { error, retry_at } => {
                update(&view, |live| {
                    let since = match &live.connection {
                        Connection::Offline { since, .. } => *since,
                        _ => local_now(),
                    };
                    live.connection = Connection::Offline { since, error, retry_at };
                });
                Ok(())
            }
            FeedItem::SignedOut { reason } => {
                update(&view, |live| live.connection = Connection::SignedOut { reason, memory_only: false });
                Ok(())
            }
        };
        if let Err(error) = loaded {
            feed.reconnect(error.to_string());
        }
    }
}

/// Loads my grants and the request lists.
async fn reload(feed: &Feed, view: &watch::Sender<Live>) -> Result<(), hourglass_client::Error> {
    let client: &Client = feed.client();
    let (grants, requests, to_review) =
        tokio::try_join!(client.grants(false, false), client.requests(), client.reviews())?;
    feed.observe_clock(requests.server_time);
    let clock = feed.clock();
    update(view, |live| {
        live.clock = clock;
        live.set_lists(grants.grants, requests.mine, requests.awaiting_me, to_review);
    });
    Ok(())
}

fn update(view: &watch::Sender<Live>, change: impl FnOnce(&mut Live)) {
    view.send_if_modified(|current| {
        let before = current.clone();
        change(current);
        *current != before
    });
}
