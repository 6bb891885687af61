//! `GET /v1/events`: server-sent events, filtered per principal. Each event
//! carries its number as the SSE `id`; a client that reconnects with
//! `Last-Event-ID` (to this replica or another) is first sent what it
//! missed, then the live stream, with nothing twice.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use hourglass_core::Principal;
use hourglass_core::api::ApiError;
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use super::error::AppError;
use super::extract::CallerToken;
use crate::auth::Verified;
use crate::events::{Published, hello, resync};
use crate::limits::StreamPermit;

/// Events read from the store at a time when catching a client up.
const REPLAY_PAGE: usize = 1000;
/// A client further behind than this many events is told to resync (reload
/// its lists) rather than sent them one by one.
const REPLAY_MAX: u64 = 20_000;

/// One open stream: keeps the subscriber gauge and the principal's count
/// of open streams true however the stream ends.
struct Subscription {
    broker: AppState,
    _permit: StreamPermit,
}

impl Subscription {
    /// Refused when the principal holds as many streams as the limit allows.
    fn open(broker: AppState, who: &Principal) -> Result<Self, AppError> {
        let permit = broker.limits.open_stream(&who.id)?;
        broker.metrics.subscribers.inc();
        Ok(Subscription { broker, _permit: permit })
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.broker.metrics.subscribers.dec();
    }
}

fn sse(published: &Published) -> SseEvent {
    SseEvent::default().id(published.seq.to_string()).event(&published.kind).data(&*published.json)
}

/// What a reconnecting client missed: the events after `after` that
/// concern it, or `None` when it is too far behind (or they were pruned)
/// and must resync instead.
async fn missed(broker: &AppState, who: &Principal, after: u64) -> Result<Option<Vec<Arc<Published>>>, AppError> {
    let last = broker.store.last_event().await?;
    if last <= after {
        return Ok(Some(Vec::new()));
    }
    let oldest = broker.store.oldest_event().await?;
    if last - after > REPLAY_MAX || oldest.is_none_or(|oldest| oldest > after + 1) {
        return Ok(None);
    }
    let policy = broker.policy();
    let now = broker.now();
    let mut missed = Vec::new();
    let mut cursor = after;
    while cursor < last {
        let page = broker.store.events_after(cursor, REPLAY_PAGE).await?;
        let Some(end) = page.last().map(|event| event.seq) else { break };
        cursor = end;
        for stored in page {
            let published = Published::from_stored(stored)?;
            if published.concerns(who, &policy, now) {
                missed.push(Arc::new(published));
            }
        }
    }
    Ok(Some(missed))
}

/// Live events about my requests and grants, and requests I may decide.
/// The first event, `hello`, carries the broker's clock. After `resync`,
/// reload lists: events were dropped because this stream fell behind.
#[utoipa::path(get, path = "/v1/events", tag = "access", security(("bearer" = [])),
    params(("Last-Event-ID" = Option<u64>, Header,
        description = "the `id` of the last event received: the events after it are sent first (or `resync` when they are no longer kept)")),
    responses(
        (status = 200, content_type = "text/event-stream", description = "`event:` is the kind (e.g. `request.approved`), `id:` its number, `data:` an Event as JSON"),
        (status = 401, body = ApiError),
        (status = 429, body = ApiError, description = "too many calls, or as many streams open as one principal may hold")))]
pub async fn events(
    State(broker): State<AppState>,
    CallerToken(caller): CallerToken,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, AppError> {
    let ends_at = tokio::time::Instant::now() + caller.remaining();
    let Verified { principal: who, token_id, .. } = caller;
    let subscription = Subscription::open(broker, &who)?;
    let broker = &subscription.broker;
    // Subscribed before reading what was missed: nothing falls between.
    let receiver = broker.events.subscribe();
    let last_seen = headers.get("last-event-id").and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok());
    let mut first = vec![SseEvent::default().event("hello").data(hello(broker.now()))];
    // A new stream starts now: what was committed before it is in the lists
    // the client reads after `hello`, not in the stream.
    let mut sent_up_to = broker.store.last_event().await?;
    if let Some(after) = last_seen {
        match missed(broker, &who, after).await? {
            Some(missed) => {
                sent_up_to = after;
                for published in missed {
                    sent_up_to = published.seq;
                    first.push(sse(&published));
                }
            }
            None => first.push(SseEvent::default().event("resync").data(resync(broker.now()))),
        }
    }
    // The stream lasts as long as the token it was opened with: it ends at
    // the token's expiry, and when its holder ends it (logs out).
    let token = (token_id, ends_at);
    let live = futures::stream::unfold(
        (receiver, subscription, who, sent_up_to, token),
        |(mut receiver, subscription, who, sent_up_to, token)| async move {
            loop {
                let broker = &subscription.broker;
                let received = tokio::select! {
                    received = receiver.recv() => received,
                    () = tokio::time::sleep_until(token.1) => return None,
                    () = broker.stopping() => return None,
                };
                match received {
                    Ok(published) if ends(&published, &token.0) => return None,
                    // Already sent while catching up.
                    Ok(published) if published.seq <= sent_up_to => {}
                    Ok(published) => {
                        if published.concerns(&who, &broker.policy(), broker.now()) {
                            let event = sse(&published);
                            return Some((Ok(event), (receiver, subscription, who, sent_up_to, token)));
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        let event = SseEvent::default().event("resync").data(resync(broker.now()));
                        return Some((Ok(event), (receiver, subscription, who, sent_up_to, token)));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    );
    Ok(Sse::new(futures::stream::iter(first.into_iter().map(Ok)).chain(live))
        .keep_alive(KeepAlive::new().interval(StdDuration::from_secs(15))))
}

/// Whether `published` ends the token `token_id` (its holder logged out).
fn ends(published: &Published, token_id: &str) -> bool {
    published.kind == hourglass_core::api::EventKind::SessionEnded.as_str()
        && serde_json::from_str::<hourglass_core::api::Event>(&published.json)
            .ok()
            .and_then(|event| event.session)
            .is_some_and(|session| session.id == token_id)
}
