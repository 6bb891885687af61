//! Connections kept for reuse: the store's on PostgreSQL and the PostgreSQL
//! provider's admin connections to each target.
//!
//! A pool opens one connection at a time, in the background. A new
//! connection costs a login (SCRAM: milliseconds of CPU on both sides), a
//! server process, and a cold start for that process's first statements; a
//! connection in use is usually free again within a few milliseconds. So
//! when a burst asks for more connections than are idle (a replica's
//! scheduler revoking 64 grants at once, say), the next connection is
//! opened while every caller, the one that asked for it included, takes
//! whichever comes first: a connection given back or the new one. The pool
//! grows with the demand that stays, not with every burst. Opening them
//! all at once, each caller waiting for its own, made the first burst of
//! revocations on a replica wait well over 100 ms for logins competing for
//! the CPU.
//!
//! Once an opening fails (the server is down or refuses), each caller
//! without a connection tries its own until one succeeds, and hears its own
//! error, rather than queueing behind each other's attempts.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{Notify, oneshot};

/// A connection a pool can tell is broken.
pub trait Connection {
    fn is_closed(&self) -> bool;
}

pub struct Pool<C> {
    max: usize,
    state: Mutex<State<C>>,
    /// A connection came back or was opened, or one may be opened now.
    changed: Notify,
}

struct State<C> {
    idle: Vec<C>,
    /// Connections idle, in use or being opened.
    open: usize,
    /// A connection is being opened in the background.
    opening: bool,
    /// The last opening failed: callers open their own until one succeeds.
    failing: bool,
}

impl<C: Connection + Send + 'static> Pool<C> {
    /// A pool of at most `max` connections (at least one).
    pub fn new(max: usize) -> Arc<Pool<C>> {
        Arc::new(Pool {
            max: max.max(1),
            state: Mutex::new(State { idle: Vec::new(), open: 0, opening: false, failing: false }),
            changed: Notify::new(),
        })
    }

    /// An idle connection, else the first to come: one given back, or one
    /// `connect` opens (called when none is idle, fewer than the most are
    /// open and none is being opened). If the opening this caller started
    /// fails before another connection came, its error is this caller's.
    pub async fn get<F, E>(self: &Arc<Self>, connect: impl Fn() -> F) -> Result<Pooled<C>, E>
    where
        F: Future<Output = Result<C, E>> + Send + 'static,
        E: Send + 'static,
    {
        // The opening this caller started: its failure, should it fail.
        let mut started: Option<oneshot::Receiver<E>> = None;
        loop {
            // Registered before looking, so a change meanwhile wakes it.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let open_here = {
                let mut state = self.state();
                let before = state.idle.len();
                state.idle.retain(|connection| !connection.is_closed());
                state.open -= before - state.idle.len();
                if let Some(connection) = state.idle.pop() {
                    return Ok(self.lend(connection));
                }
                let may_open = started.is_none() && state.open < self.max && (state.failing || !state.opening);
                if may_open {
                    state.open += 1;
                }
                if may_open && !state.failing {
                    state.opening = true;
                    let (failed, failure) = oneshot::channel();
                    tokio::spawn(Arc::clone(self).open_in_background(connect(), failed));
                    started = Some(failure);
                }
                may_open && state.failing
            };
            if open_here {
                return self.open_here(connect()).await;
            }
            match &mut started {
                Some(failure) => tokio::select! {
                    () = &mut changed => {}
                    failed = failure => match failed {
                        Ok(error) => return Err(error),
                        // Opened: idle, for the first to take it.
                        Err(_) => started = None,
                    },
                },
                None => changed.await,
            }
        }
    }

    fn lend(self: &Arc<Self>, connection: C) -> Pooled<C> {
        Pooled { connection: Some(connection), pool: Arc::clone(self) }
    }

    /// Opens a connection for whoever asks first; a failure goes to the
    /// caller that started it, and lets every caller try its own.
    async fn open_in_background<E>(
        self: Arc<Self>,
        opening: impl Future<Output = Result<C, E>>,
        failed: oneshot::Sender<E>,
    ) {
        let slot = Slot { pool: &self, background: true, taken: false };
        match opening.await {
            Ok(connection) => {
                slot.filled(Some(connection));
                // All of them: one takes it, and should others find none,
                // one of those opens the next (the demand stayed).
                self.changed.notify_waiters();
            }
            Err(error) => {
                drop(slot);
                let _ = failed.send(error);
            }
        }
    }

    /// Opens a connection for this caller (the pool is failing).
    async fn open_here<E>(self: &Arc<Self>, opening: impl Future<Output = Result<C, E>>) -> Result<Pooled<C>, E> {
        let slot = Slot { pool: self, background: false, taken: false };
        let connection = opening.await?;
        slot.filled(None);
        Ok(self.lend(connection))
    }
}

/// What needs no opening: the state, and connections coming back.
impl<C: Connection> Pool<C> {
    fn state(&self) -> MutexGuard<'_, State<C>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn give_back(&self, connection: C) {
        let mut state = self.state();
        if connection.is_closed() {
            state.open -= 1;
        } else {
            state.idle.push(connection);
        }
        drop(state);
        // One waiter: it takes the connection, or opens one in its place.
        // (A waiter dropped after being woken passes the wake-up on.)
        self.changed.notify_one();
    }

    fn forget(&self) {
        self.state().open -= 1;
        self.changed.notify_one();
    }

    /// Connections idle, in use or being opened.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.state().open
    }

    #[cfg(test)]
    fn idle(&self) -> usize {
        self.state().idle.len()
    }
}

/// A place in the pool taken for a connection being opened: given back if
/// the opening fails or is cancelled.
struct Slot<'a, C: Connection> {
    pool: &'a Pool<C>,
    background: bool,
    taken: bool,
}

impl<C: Connection> Slot<'_, C> {
    /// The opening succeeded: the pool is healthy; `idle` goes to the idle
    /// connections.
    fn filled(mut self, idle: Option<C>) {
        self.taken = true;
        let mut state = self.pool.state();
        state.failing = false;
        if self.background {
            state.opening = false;
        }
        state.idle.extend(idle);
    }
}

impl<C: Connection> Drop for Slot<'_, C> {
    fn drop(&mut self) {
        if self.taken {
            return;
        }
        let mut state = self.pool.state();
        state.open -= 1;
        state.failing = true;
        if self.background {
            state.opening = false;
        }
        drop(state);
        // Everyone waiting may now try its own.
        self.pool.changed.notify_waiters();
    }
}

/// A connection taken from a pool; back to it when dropped, unless it broke
/// or was [`Pooled::discard`]ed.
pub struct Pooled<C: Connection> {
    connection: Option<C>,
    pool: Arc<Pool<C>>,
}

impl<C: Connection> Pooled<C> {
    /// Closes the connection instead of giving it back (it may be in a
    /// state the next user must not inherit).
    pub fn discard(mut self) {
        self.connection = None;
        self.pool.forget();
    }
}

impl<C: Connection> std::ops::Deref for Pooled<C> {
    type Target = C;
    fn deref(&self) -> &C {
        // INVARIANT: `connection` is Some until dropped or discarded.
        self.connection.as_ref().unwrap_or_else(|| unreachable!("a pooled connection is taken only on drop"))
    }
}

impl<C: Connection> std::ops::DerefMut for Pooled<C> {
    fn deref_mut(&mut self) -> &mut C {
        self.connection.as_mut().unwrap_or_else(|| unreachable!("a pooled connection is taken only on drop"))
    }
}

impl<C: Connection> Drop for Pooled<C> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            self.pool.give_back(connection);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    struct Fake {
        closed: Arc<AtomicBool>,
    }

    impl Connection for Fake {
        fn is_closed(&self) -> bool {
            self.closed.load(Ordering::SeqCst)
        }
    }

    fn fake() -> Fake {
        Fake { closed: Arc::new(AtomicBool::new(false)) }
    }

    async fn opened() -> Result<Fake, String> {
        Ok(fake())
    }

    async fn eventually(what: &str, check: impl Fn() -> bool) {
        let waited = tokio::time::Instant::now();
        while !check() {
            assert!(waited.elapsed() < Duration::from_secs(10), "{what}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn pool_burst_takes_returned_connections_while_one_opens() {
        let pool = Pool::<Fake>::new(8);
        // Two connections, used once.
        drop((pool.get(opened).await, pool.get(opened).await));
        // A burst of 20 callers. Opening a connection takes until the test
        // lets it: until all 20 callers are done. Had each caller without
        // an idle connection waited for a login, its own or another's,
        // some of them would never finish.
        let logins = Arc::new(AtomicUsize::new(0));
        let login = Arc::new(tokio::sync::Semaphore::new(0));
        let done = AtomicUsize::new(0);
        let calls = futures::future::join_all((0..20).map(|_| async {
            let connection = pool
                .get(|| {
                    let (logins, login) = (Arc::clone(&logins), Arc::clone(&login));
                    async move {
                        logins.fetch_add(1, Ordering::SeqCst);
                        let _ = login.acquire().await;
                        Ok::<_, String>(fake())
                    }
                })
                .await
                .expect("a connection");
            tokio::task::yield_now().await;
            drop(connection);
            done.fetch_add(1, Ordering::SeqCst);
        }));
        tokio::time::timeout(Duration::from_secs(10), calls)
            .await
            .expect("the burst was served by the two connections while a third opened");
        assert_eq!(logins.load(Ordering::SeqCst), 1, "one login, not one per caller");
        assert_eq!(done.load(Ordering::SeqCst), 20);
        // The third joins the pool once opened.
        login.add_permits(1);
        eventually("the opened connection is kept", || pool.idle() == 3).await;
        assert_eq!(pool.open(), 3);
    }

    #[tokio::test]
    async fn pool_opens_no_more_than_its_most_and_waiters_get_returned_ones() {
        let pool = Pool::<Fake>::new(2);
        let first = pool.get(opened).await.expect("one");
        let second = pool.get(opened).await.expect("two");
        let third = {
            let pool = Arc::clone(&pool);
            tokio::spawn(
                async move { pool.get(|| async { Err::<Fake, _>("opened a third".to_owned()) }).await.map(drop) },
            )
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!third.is_finished(), "waits while both are in use");
        drop(first);
        assert_eq!(third.await.expect("no panic"), Ok(()), "got the returned one");
        drop(second);
        assert_eq!(pool.open(), 2);
    }

    #[tokio::test]
    async fn pool_failing_to_open_tells_each_caller_without_queueing_them() {
        let pool = Pool::<Fake>::new(8);
        // The server is down: an opening fails after 50 ms.
        let (attempts, at_once, most_at_once) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let refused = || {
            let (attempts, at_once, most) = (Arc::clone(&attempts), Arc::clone(&at_once), Arc::clone(&most_at_once));
            async move {
                attempts.fetch_add(1, Ordering::SeqCst);
                most.fetch_max(at_once.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                at_once.fetch_sub(1, Ordering::SeqCst);
                Err::<Fake, _>("connection refused".to_owned())
            }
        };
        let outcomes = futures::future::join_all((0..5).map(|_| pool.get(refused))).await;
        assert!(outcomes.iter().all(|o| o.as_ref().err().map(String::as_str) == Some("connection refused")));
        // The first attempt alone, then the four others each their own, at once.
        assert_eq!(attempts.load(Ordering::SeqCst), 5);
        assert_eq!(most_at_once.load(Ordering::SeqCst), 4, "the others tried together, not one after another");
        assert_eq!(pool.open(), 0, "failed openings give their places back");
        // The server is back: the pool opens again, and is healthy.
        let connection = pool.get(opened).await.expect("opened");
        assert!(!pool.state().failing);
        drop(connection);
        assert_eq!((pool.open(), pool.idle()), (1, 1));
    }

    #[tokio::test]
    async fn pool_replaces_broken_and_discarded_connections() {
        let pool = Pool::<Fake>::new(1);
        let connection = pool.get(opened).await.expect("one");
        connection.closed.store(true, Ordering::SeqCst);
        drop(connection);
        assert_eq!(pool.open(), 0, "a broken connection is not kept");
        let connection = pool.get(opened).await.expect("opened again");
        connection.discard();
        assert_eq!(pool.open(), 0);
        // A caller cancelled while its connection opens leaves it to the pool.
        let cancelled = tokio::time::timeout(
            Duration::from_millis(5),
            pool.get(|| async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                opened().await
            }),
        )
        .await;
        assert!(cancelled.is_err());
        eventually("the connection opened for nobody is kept", || pool.idle() == 1).await;
        assert!(pool.get(|| async { Err::<Fake, _>("opened another".to_owned()) }).await.is_ok());
    }
}
