//! `GET /v1/events`: server-sent events, filtered per principal.

use std::convert::Infallible;
use std::time::Duration as StdDuration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use hourglass_core::Principal;
use hourglass_core::api::ApiError;
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use super::error::AppError;
use super::extract::Caller;
use crate::events::{hello, resync};
use crate::limits::StreamPermit;

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

/// Live events about my requests and grants, and requests I may decide.
/// The first event, `hello`, carries the broker's clock. After `resync`,
/// reload lists: events were dropped because this stream fell behind.
#[utoipa::path(get, path = "/v1/events", tag = "access", security(("bearer" = [])),
    responses(
        (status = 200, content_type = "text/event-stream", description = "`event:` is the kind (e.g. `request.approved`), `data:` an Event as JSON"),
        (status = 401, body = ApiError),
        (status = 429, body = ApiError, description = "too many calls, or as many streams open as one principal may hold")))]
pub async fn events(
    State(broker): State<AppState>,
    Caller(who): Caller,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, AppError> {
    let subscription = Subscription::open(broker, &who)?;
    let broker = &subscription.broker;
    let receiver = broker.events.subscribe();
    let first = SseEvent::default().event("hello").data(hello(broker.now()));
    let live = futures::stream::unfold((receiver, subscription, who), |(mut receiver, subscription, who)| async move {
        loop {
            let broker = &subscription.broker;
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
    Ok(Sse::new(futures::stream::once(async move { Ok(first) }).chain(live))
        .keep_alive(KeepAlive::new().interval(StdDuration::from_secs(15))))
}
