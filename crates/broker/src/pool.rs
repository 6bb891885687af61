//! Connections kept for reuse: the store's on PostgreSQL and the PostgreSQL
//! provider's admin connections to each target.
//!
//! A pool opens one connection at a time. A new connection costs a login
//! (SCRAM: milliseconds of CPU on both sides), a server process, and a cold
//! start for that process's first statements; a connection in use is
//! usually free again within a few milliseconds. So when a burst asks for
//! more connections than are idle (a replica's scheduler revoking 64
//! grants at once, say), one caller opens the next connection while the
//! others take connections as they come back, whichever comes first,
//! instead of each opening its own: the pool grows with the demand that
//! stays, not with every burst. Opening them all at once made the first
//! burst of revocations on a replica wait well over 100 ms for logins
//! competing for the CPU.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// A connection a pool can tell is broken.
pub trait Connection {
    fn is_closed(&self) -> bool;
}

pub struct Pool<C> {
    max: usize,
    state: Mutex<State<C>>,
    /// A connection came back, or one may be opened now.
    changed: Notify,
}

struct State<C> {
    idle: Vec<C>,
    /// Connections idle, in use or being opened.
    open: usize,
    /// A caller is opening a connection.
    opening: bool,
}

impl<C: Connection> Pool<C> {
    /// A pool of at most `max` connections (at least one).
    pub fn new(max: usize) -> Arc<Pool<C>> {
        Arc::new(Pool {
            max: max.max(1),
            state: Mutex::new(State { idle: Vec::new(), open: 0, opening: false }),
            changed: Notify::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State<C>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An idle connection, or one `connect` opens when none is idle, fewer
    /// than the most are open and nobody else is opening one; otherwise
    /// waits for whichever of those comes first. `connect`'s error is this
    /// caller's.
    pub async fn get<E>(self: &Arc<Self>, connect: impl AsyncFnOnce() -> Result<C, E>) -> Result<Pooled<C>, E> {
        loop {
            // Registered before looking, so a change meanwhile wakes it.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = self.state();
                let before = state.idle.len();
                state.idle.retain(|connection| !connection.is_closed());
                state.open -= before - state.idle.len();
                if let Some(connection) = state.idle.pop() {
                    return Ok(Pooled { connection: Some(connection), pool: Arc::clone(self) });
                }
                if !state.opening && state.open < self.max {
                    state.opening = true;
                    state.open += 1;
                    break;
                }
            }
            changed.await;
        }
        // Cancelled or failed, the slot goes back and the next waiter may
        // open one.
        let opening = Opening { pool: self, opened: false };
        let connection = connect().await?;
        opening.done();
        Ok(Pooled { connection: Some(connection), pool: Arc::clone(self) })
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
}

/// A slot taken to open a connection.
struct Opening<'a, C: Connection> {
    pool: &'a Pool<C>,
    opened: bool,
}

impl<C: Connection> Opening<'_, C> {
    fn done(mut self) {
        self.opened = true;
        self.pool.state().opening = false;
        // Someone else may be waiting to open the next one.
        self.pool.changed.notify_one();
    }
}

impl<C: Connection> Drop for Opening<'_, C> {
    fn drop(&mut self) {
        if !self.opened {
            let mut state = self.pool.state();
            state.opening = false;
            state.open -= 1;
            drop(state);
            self.pool.changed.notify_one();
        }
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

    #[tokio::test]
    async fn pool_burst_takes_returned_connections_while_one_opens() {
        let pool = Pool::<Fake>::new(8);
        // Two connections, used once.
        let (a, b) = (pool.get(async || Ok::<_, ()>(fake())).await, pool.get(async || Ok::<_, ()>(fake())).await);
        drop((a, b));
        // A burst of 20 callers. Opening a connection takes until the test
        // lets it: until 19 callers are done. Had each caller without an
        // idle connection opened its own, none of those would finish.
        let opened = AtomicUsize::new(0);
        let (done, login) = (AtomicUsize::new(0), tokio::sync::Semaphore::new(0));
        let finished = Notify::new();
        let calls = futures::future::join_all((0..20).map(|_| async {
            let connection = pool
                .get(async || {
                    opened.fetch_add(1, Ordering::SeqCst);
                    let _ = login.acquire().await;
                    Ok::<_, ()>(fake())
                })
                .await
                .expect("a connection");
            tokio::task::yield_now().await;
            drop(connection);
            done.fetch_add(1, Ordering::SeqCst);
            finished.notify_one();
        }));
        let gate = async {
            while done.load(Ordering::SeqCst) < 19 {
                finished.notified().await;
            }
            login.add_permits(1);
        };
        tokio::time::timeout(Duration::from_secs(10), futures::future::join(calls, gate))
            .await
            .expect("19 calls were served by the two connections while the third opened");
        assert_eq!(opened.load(Ordering::SeqCst), 1, "one login, not one per caller");
        assert_eq!(pool.open(), 3);
    }

    #[tokio::test]
    async fn pool_opens_no_more_than_its_most_and_waiters_get_returned_ones() {
        let pool = Pool::<Fake>::new(2);
        let first = pool.get(async || Ok::<_, ()>(fake())).await.expect("one");
        let second = pool.get(async || Ok::<_, ()>(fake())).await.expect("two");
        let third = {
            let pool = Arc::clone(&pool);
            tokio::spawn(
                async move { pool.get(async || -> Result<Fake, ()> { panic!("opened a third") }).await.is_ok() },
            )
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!third.is_finished(), "waits while both are in use");
        drop(first);
        assert!(third.await.expect("no panic"), "got the returned one");
        drop(second);
        assert_eq!(pool.open(), 2);
    }

    #[tokio::test]
    async fn pool_replaces_broken_and_discarded_connections_and_a_failed_open_frees_its_slot() {
        let pool = Pool::<Fake>::new(1);
        let connection = pool.get(async || Ok::<_, ()>(fake())).await.expect("one");
        connection.closed.store(true, Ordering::SeqCst);
        drop(connection);
        assert_eq!(pool.open(), 0, "a broken connection is not kept");
        assert!(pool.get(async || Err::<Fake, _>("refused")).await.is_err());
        assert_eq!(pool.open(), 0, "a failed open gives its slot back");
        let connection = pool.get(async || Ok::<_, ()>(fake())).await.expect("opened again");
        connection.discard();
        assert_eq!(pool.open(), 0);
        // A caller cancelled while opening gives its slot back too.
        let cancelled = tokio::time::timeout(
            Duration::from_millis(5),
            pool.get(async || {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok::<_, ()>(fake())
            }),
        )
        .await;
        assert!(cancelled.is_err());
        assert!(pool.get(async || Ok::<_, ()>(fake())).await.is_ok(), "the slot is free again");
    }
}
