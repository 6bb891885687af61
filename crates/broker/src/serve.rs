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

/// Descriptors kept for everything but clients' connections: the listener,
/// the store's and the providers' connections, files, hooks' pipes.
const DESCRIPTORS_KEPT: u64 = 256;

/// The connections this process can hold at once: its open-file limit
/// raised to the most it may be (a service manager's soft limit is often
/// 1,024 whatever the hard one), and `configured` cut to fit under it, so
/// that an accept never fails for want of a descriptor (the loop would
/// stall on it). Returns the cap and the open-file limit it fits under.
pub fn connection_cap(configured: usize) -> (usize, Option<u64>) {
    let open_files = raise_open_file_limit();
    (fit_connections(configured, open_files), open_files)
}

/// `configured`, or fewer: what `open_files` descriptors leave room for.
fn fit_connections(configured: usize, open_files: Option<u64>) -> usize {
    match open_files {
        Some(limit) => {
            let room = usize::try_from(limit.saturating_sub(DESCRIPTORS_KEPT)).unwrap_or(usize::MAX);
            configured.min(room.max(1))
        }
        None => configured,
    }
}

/// Raises the soft open-file limit to the hard one; the soft limit now
/// (`None`: unlimited).
fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        // Refused (a system capping it below the hard limit): keep what was.
        let _ = setrlimit(Resource::Nofile, limit);
    }
    getrlimit(Resource::Nofile).current
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_fit_under_the_open_file_limit() {
        assert_eq!(fit_connections(16_384, Some(1_024)), 768, "a service manager's 1,024 leaves room for 768");
        assert_eq!(fit_connections(16_384, Some(1_048_576)), 16_384, "as configured when there is room");
        assert_eq!(fit_connections(16_384, None), 16_384, "unlimited");
        assert_eq!(fit_connections(16_384, Some(100)), 1, "never none at all");
    }

    #[test]
    fn the_open_file_limit_is_raised_to_its_maximum() {
        use rustix::process::{Resource, getrlimit, setrlimit};
        // Lowered first (always allowed), as a service manager leaves it, so
        // that the raise has something to do wherever this runs.
        let mut lowered = getrlimit(Resource::Nofile);
        if let Some(hard) = lowered.maximum {
            lowered.current = Some(hard / 2);
            setrlimit(Resource::Nofile, lowered).expect("the soft limit lowered");
            assert_ne!(getrlimit(Resource::Nofile).current, getrlimit(Resource::Nofile).maximum);
        }
        let raised = raise_open_file_limit();
        assert_eq!(raised, getrlimit(Resource::Nofile).current);
        assert_eq!(getrlimit(Resource::Nofile).current, getrlimit(Resource::Nofile).maximum, "soft = hard");
    }
}
