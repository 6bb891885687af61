//! The one follower of the broker: its event stream, reconnected with
//! backoff, resumed where it stopped (`Last-Event-ID`), and one
//! [`BrokerClock`] for everything that reads it. Every part of a client
//! that follows the broker subscribes here: the local agent's state and the
//! desktop app's view share one stream and one clock.
//!
//! A subscriber gets [`FeedItem`]s in order: `Online` after each connection
//! (load everything then), the broker's events, `Resync` when it must load
//! everything again, clock changes, and `Offline`/`SignedOut` when the
//! connection is lost. When a load it makes fails, it calls
//! [`Feed::reconnect`], and the connection is made again.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use futures::StreamExt;
use hourglass_core::Timestamp;
use hourglass_core::api::{ErrorCode, Event, EventKind, WhoAmI};
use rand::Rng;
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use crate::clock::{BrokerClock, local_now};
use crate::{Client, Error};

/// Events can be lost without the stream noticing (a half-open
/// connection): subscribers load everything this often, which bounds how
/// long.
const RESYNC_EVERY: StdDuration = StdDuration::from_secs(300);
/// How many items a subscriber may fall behind before it is told to load
/// everything again instead.
const BACKLOG: usize = 1024;

/// What a subscriber acts on, in order.
#[derive(Debug, Clone)]
pub enum FeedItem {
    /// Connected, as the principal the broker names: load everything.
    Online(Arc<WhoAmI>),
    /// One of the broker's events.
    Event(Arc<Event>),
    /// Load everything again: the broker dropped events for this stream,
    /// this subscriber fell behind, or the periodic bound passed.
    Resync,
    /// The broker's clock moved against this machine's.
    Clock(BrokerClock),
    /// The broker cannot be reached; the next attempt is at `retry_at`
    /// (this machine's clock).
    Offline { error: String, retry_at: Timestamp },
    /// The broker refused the session: nothing works until the user logs in.
    SignedOut { reason: String },
}

/// The feed's connection, for a subscriber that starts late.
#[derive(Debug, Clone)]
enum Connection {
    Connecting,
    Online(Arc<WhoAmI>),
    Lost(FeedItem),
}

/// A running feed. Clones share it; it stops when the last one is dropped.
#[derive(Clone)]
pub struct Feed {
    running: Arc<Running>,
}

struct Running {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    client: Client,
    items: broadcast::Sender<FeedItem>,
    clock: watch::Sender<BrokerClock>,
    connection: watch::Sender<Connection>,
    /// Subscribers' reports that a load failed: the connection is made again.
    lost: mpsc::UnboundedSender<String>,
    /// Offline: try again now rather than at the end of the backoff.
    retry_now: Notify,
}

impl Shared {
    fn publish(&self, item: FeedItem) {
        // No subscriber yet is fine: a late one starts from `connection`.
        let _ = self.items.send(item);
    }

    fn observe_clock(&self, server_time: Timestamp) {
        let now = local_now();
        let mut moved = None;
        self.clock.send_if_modified(|clock| match clock.observe(server_time, now) {
            Some(new) => {
                *clock = new;
                moved = Some(new);
                true
            }
            None => false,
        });
        if let Some(clock) = moved {
            self.publish(FeedItem::Clock(clock));
        }
    }
}

impl Feed {
    /// Starts following the broker `client` talks to, on the current Tokio
    /// runtime.
    pub fn start(client: Client) -> Feed {
        let (items, _) = broadcast::channel(BACKLOG);
        let (lost, lost_reports) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            client,
            items,
            clock: watch::channel(BrokerClock::default()).0,
            connection: watch::channel(Connection::Connecting).0,
            lost,
            retry_now: Notify::new(),
        });
        let task = tokio::spawn(follow(Arc::clone(&shared), lost_reports));
        Feed { running: Arc::new(Running { shared, task }) }
    }

    fn shared(&self) -> &Shared {
        &self.running.shared
    }

    /// The client the feed follows the broker with.
    pub fn client(&self) -> &Client {
        &self.shared().client
    }

    /// The broker's clock as last measured.
    pub fn clock(&self) -> BrokerClock {
        *self.shared().clock.borrow()
    }

    /// A reply of the broker said its time was `server_time` (a list's
    /// `server_time`, say): the clock follows when it moved.
    pub fn observe_clock(&self, server_time: Timestamp) {
        self.shared().observe_clock(server_time);
    }

    /// Items from now on. A feed already online (or lost) says so first,
    /// so that a late subscriber loads everything like an early one.
    pub fn subscribe(&self) -> Subscription {
        let items = self.shared().items.subscribe();
        let first = match &*self.shared().connection.borrow() {
            Connection::Connecting => None,
            Connection::Online(me) => Some(FeedItem::Online(Arc::clone(me))),
            Connection::Lost(item) => Some(item.clone()),
        };
        Subscription { first, items }
    }

    /// A subscriber could not load what the broker said (the broker went
    /// away mid-way): the connection is dropped and made again with backoff.
    pub fn reconnect(&self, reason: String) {
        let _ = self.shared().lost.send(reason);
    }

    /// When offline, tries again now instead of at the end of the backoff.
    pub fn retry_now(&self) {
        self.shared().retry_now.notify_one();
    }
}

/// One subscriber's items.
pub struct Subscription {
    first: Option<FeedItem>,
    items: broadcast::Receiver<FeedItem>,
}

impl Subscription {
    /// The next item; `None` once the feed stopped.
    pub async fn next(&mut self) -> Option<FeedItem> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        match self.items.recv().await {
            Ok(item) => Some(item),
            // Items were dropped for this subscriber: it loads everything.
            Err(broadcast::error::RecvError::Lagged(_)) => Some(FeedItem::Resync),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// Waits between connection attempts: doubling from half a second to 30 s,
/// and back to half a second after a connection that held.
#[derive(Debug)]
struct Backoff {
    next: StdDuration,
}

impl Backoff {
    const FIRST: StdDuration = StdDuration::from_millis(500);
    const LAST: StdDuration = StdDuration::from_secs(30);
    /// A connection that lasted this long resets the backoff.
    const STABLE: StdDuration = StdDuration::from_secs(60);

    fn new() -> Backoff {
        Backoff { next: Backoff::FIRST }
    }

    /// The wait after an attempt that lasted `held`, scaled by `jitter`
    /// (0.5 to 1): many clients do not reconnect in step after a restart.
    fn after(&mut self, held: StdDuration, jitter: f64) -> StdDuration {
        if held >= Backoff::STABLE {
            self.next = Backoff::FIRST;
        }
        let wait = self.next.mul_f64(jitter.clamp(0.5, 1.0));
        self.next = (self.next * 2).min(Backoff::LAST);
        wait
    }
}

/// Why a connection ended.
enum Stop {
    Lost(String),
    SignedOut(String),
}

fn stop_of(error: &Error) -> Stop {
    match error.code() {
        Some(ErrorCode::Unauthenticated) => Stop::SignedOut(error.to_string()),
        _ => Stop::Lost(error.to_string()),
    }
}

async fn follow(shared: Arc<Shared>, mut lost: mpsc::UnboundedReceiver<String>) {
    let mut backoff = Backoff::new();
    let mut last_event_id = None;
    loop {
        // Reports about a connection that has already ended count for nothing.
        while lost.try_recv().is_ok() {}
        let started = tokio::time::Instant::now();
        let stop = connect(&shared, &mut lost, &mut last_event_id).await;
        let wait = backoff.after(started.elapsed(), rand::thread_rng().gen_range(0.5..1.0));
        let item = match stop {
            Stop::SignedOut(reason) => FeedItem::SignedOut { reason },
            Stop::Lost(error) => {
                let retry_at = local_now().plus_millis(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
                FeedItem::Offline { error, retry_at }
            }
        };
        shared.connection.send_replace(Connection::Lost(item.clone()));
        shared.publish(item);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.retry_now.notified() => {}
        }
    }
}

/// One connection: the stream first, so that nothing that happens while
/// subscribers load is missed; `hello` (the broker's clock); who we are;
/// then events as they come.
async fn connect(
    shared: &Shared,
    lost: &mut mpsc::UnboundedReceiver<String>,
    last_event_id: &mut Option<String>,
) -> Stop {
    let closed = || Stop::Lost("the broker closed the event stream".into());
    let events = match shared.client.events_since(last_event_id.as_deref()).await {
        Ok(events) => events,
        Err(error) => return stop_of(&error),
    };
    let mut events = std::pin::pin!(events);
    let mut early = None;
    match events.next().await {
        Some(Ok(delivered)) => {
            if delivered.id.is_some() {
                *last_event_id = delivered.id;
            }
            match delivered.event.kind {
                EventKind::Hello => shared.observe_clock(delivered.event.at),
                _ => early = Some(delivered.event),
            }
        }
        Some(Err(error)) => return stop_of(&error),
        None => return closed(),
    }
    let me = match shared.client.whoami().await {
        Ok(me) => Arc::new(me),
        Err(error) => return stop_of(&error),
    };
    shared.observe_clock(me.server_time);
    shared.connection.send_replace(Connection::Online(Arc::clone(&me)));
    shared.publish(FeedItem::Online(me));
    if let Some(event) = early {
        deliver(shared, event);
    }
    let mut periodic = tokio::time::interval_at(tokio::time::Instant::now() + RESYNC_EVERY, RESYNC_EVERY);
    loop {
        tokio::select! {
            delivered = events.next() => match delivered {
                None => return closed(),
                Some(Err(error)) => return stop_of(&error),
                Some(Ok(delivered)) => {
                    if delivered.id.is_some() {
                        *last_event_id = delivered.id;
                    }
                    deliver(shared, delivered.event);
                }
            },
            _ = periodic.tick() => shared.publish(FeedItem::Resync),
            reason = lost.recv() => return Stop::Lost(reason.unwrap_or_else(|| "the feed stopped".into())),
        }
    }
}

fn deliver(shared: &Shared, event: Event) {
    match event.kind {
        EventKind::Hello => shared.observe_clock(event.at),
        EventKind::Resync => shared.publish(FeedItem::Resync),
        _ => shared.publish(FeedItem::Event(Arc::new(event))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_thirty_seconds_and_resets_after_a_connection_that_held() {
        let mut backoff = Backoff::new();
        let brief = StdDuration::from_secs(1);
        let waits: Vec<u64> = (0..8).map(|_| backoff.after(brief, 1.0).as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000], "doubling, capped");
        assert_eq!(backoff.after(Backoff::STABLE, 1.0), Backoff::FIRST, "a connection that held starts over");
        assert_eq!(backoff.after(brief, 0.5), StdDuration::from_millis(500), "jitter takes up to half off");
        assert_eq!(backoff.after(brief, 0.1), StdDuration::from_millis(1000), "but never more than half");
    }

    /// A client of a broker that is not there.
    fn unreachable_client() -> Client {
        Client::new("http://127.0.0.1:9", "not-a-real-token").expect("client")
    }

    /// A broker of one trick on loopback: each event stream says `hello`
    /// with the id `7` and ends; `whoami` answers alice. Sends the
    /// `Last-Event-ID` each stream was opened with.
    async fn broker_sending_ids() -> (String, tokio::sync::mpsc::UnboundedReceiver<Option<String>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let (opened, streams) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && socket.read(&mut byte).await.is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let answer = if head.starts_with("GET /v1/events") {
                    let resume = head
                        .lines()
                        .find_map(|line| line.strip_prefix("last-event-id: ").or(line.strip_prefix("Last-Event-ID: ")))
                        .map(str::to_owned);
                    let _ = opened.send(resume);
                    let hello = r#"{"kind":"hello","at":"2026-12-01T10:00:00.000Z"}"#;
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\nid: 7\nevent: hello\ndata: {hello}\n\n"
                    )
                } else {
                    let me = r#"{"principal":{"id":"alice@acme.example","groups":[]},"server_time":"2026-12-01T10:00:00.000Z"}"#;
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{me}",
                        me.len()
                    )
                };
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        });
        (url, streams)
    }

    #[tokio::test]
    async fn feed_resumes_with_the_last_event_id_it_saw() {
        let (url, mut streams) = broker_sending_ids().await;
        let feed = Feed::start(Client::new(&url, "a-token").expect("client"));
        let mut subscription = feed.subscribe();
        assert_eq!(streams.recv().await, Some(None), "the first stream resumes from nothing");
        let mut online = subscription.next().await;
        while let Some(FeedItem::Clock(_)) = online {
            online = subscription.next().await; // the broker's clock, from hello
        }
        assert!(matches!(&online, Some(FeedItem::Online(me)) if me.principal.id == "alice@acme.example"), "{online:?}");
        assert_eq!(streams.recv().await, Some(Some("7".into())), "the next one from the id of the last event seen");
    }

    #[tokio::test]
    async fn feed_says_offline_with_the_next_attempt_when_the_broker_is_unreachable() {
        let feed = Feed::start(unreachable_client());
        let mut subscription = feed.subscribe();
        let before = local_now();
        match subscription.next().await {
            Some(FeedItem::Offline { error, retry_at }) => {
                assert!(error.contains("cannot reach the broker"), "says why: {error}");
                assert!(retry_at >= before, "the next attempt is ahead: {retry_at} vs {before}");
            }
            other => panic!("expected offline, got {other:?}"),
        }
        let late = feed.subscribe().next().await;
        assert!(matches!(late, Some(FeedItem::Offline { .. })), "a late subscriber hears it first: {late:?}");
    }
}
