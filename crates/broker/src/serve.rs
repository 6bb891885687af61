//! The accept loop: what every connection gets before the router sees a
//! request. At most `[broker.limits] connections` at once (the next client
//! waits in the kernel's backlog until one closes), `header_read_seconds`
//! to send a request's headers (a client that trickles them, slowloris,
//! cannot hold a connection open: axum's own loop sets no timer, so hyper's
//! timeout never fired), and the peer's address for per-address limits.
//! HTTP/1.1 only, as the TLS configuration offers. On stop, connections
//! finish what they are answering, within a few seconds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tower::ServiceExt;

/// How long connections get to finish when the broker stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until `stop` completes.
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    connections: usize,
    header_read_timeout: Duration,
    stop: impl Future<Output = ()>,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let permits = Arc::new(tokio::sync::Semaphore::new(connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(header_read_timeout).keep_alive(true);
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        // A permit first: past the cap, connections wait to be accepted.
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit,
            () = &mut stop => break,
        };
        let Ok(permit) = permit else { break };
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        let service = app.clone().map_request(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        });
        let connection = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A connection that ends badly (reset, timed out) is the client's business.
            let _ = connection.await;
            drop(permit);
        });
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open {}s after the stop were dropped", SHUTDOWN_GRACE.as_secs());
    }
}
