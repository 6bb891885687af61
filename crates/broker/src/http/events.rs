//! `GET /v1/events`: server-sent events, filtered per principal.

use std::convert::Infallible;
use std::time::Duration as StdDuration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use hourglass_core::api::ApiError;
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use super::extract::Caller;
use crate::events::{hello, resync};

/// Keeps the subscriber gauge true however the stream ends.
struct Subscription(AppState);

impl Subscription {
    fn new(broker: AppState) -> Self {
        broker.metrics.subscribers.inc();
        Subscription(broker)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.0.metrics.subscribers.dec();
    }
}

/// Live events about my requests and grants, and requests I may decide.
/// The first event, `hello`, carries the broker's clock. After `resync`,
/// reload lists: events were dropped because this stream fell behind.
#[utoipa::path(get, path = "/v1/events", tag = "access", security(("bearer" = [])),
    responses(
        (status = 200, content_type = "text/event-stream", description = "`event:` is the kind (e.g. `request.approved`), `data:` an Event as JSON"),
        (status = 401, body = ApiError)))]
pub async fn events(
    State(broker): State<AppState>,
    Caller(who): Caller,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let receiver = broker.events.subscribe();
    let first = SseEvent::default().event("hello").data(hello(broker.now()));
    let subscription = Subscription::new(broker);
    let live = futures::stream::unfold((receiver, subscription, who), |(mut receiver, subscription, who)| async move {
        loop {
            let broker = &subscription.0;
            let received = tokio::select! {
                received = receiver.recv() => received,
                () = broker.stopping() => return None,
            };
            match received {
                Ok(published) => {
                    if published.concerns(&who, &broker.policy(), broker.now()) {
                        let event = SseEvent::default().event(published.kind.as_str()).data(&*published.json);
                        return Some((Ok(event), (receiver, subscription, who)));
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    let event = SseEvent::default().event("resync").data(resync(broker.now()));
                    return Some((Ok(event), (receiver, subscription, who)));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(futures::stream::once(async move { Ok(first) }).chain(live))
        .keep_alive(KeepAlive::new().interval(StdDuration::from_secs(15)))
}
