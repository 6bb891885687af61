//! The local agent: holds the user's live grants and their credentials in
//! memory, keeps them fresh from the broker's event stream, drops them at
//! their deadline by its own clock, and serves them to shells and tools over
//! a Unix socket only this user can use.
//!
//! The CLI runs it in the foreground (`hourglass agent`); the desktop app
//! will run the same [`run`] inside itself. Either way there is one per user,
//! at [`Paths::from_env`].
//!
//! - `state.rs` — what is held and the rules that change it (no I/O).
//! - `sync.rs` — what the broker's feed ([`crate::feed`]) means for the
//!   state: credential fetches, resyncs, readiness checks, and the expiry
//!   timer.
//! - `effects.rs` — what the state implies outside the agent: the hook
//!   state file, identities in ssh-agent, the managed `.pgpass` block.
//! - `server.rs` — the socket: peer uid check, JSON lines ([`protocol`]).
//! - `client.rs` — [`AgentClient`], the blocking client the CLI uses.
//!
//! Time: the broker's clock is the reference for every deadline. The feed
//! measures it ([`crate::clock::BrokerClock`]) and the agent converts each
//! deadline to this machine's clock, so expiry works with the broker
//! unreachable.

mod client;
mod effects;
mod paths;
pub mod protocol;
// The socket: Unix only (see `paths::unsupported`).
#[cfg(unix)]
mod server;
mod state;
mod sync;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, watch};

pub use client::AgentClient;
pub use paths::Paths;
#[cfg(unix)]
pub use paths::my_uid;
pub use protocol::{AgentError, AgentErrorCode};

use crate::Client;
use crate::clock::local_now;
use crate::feed::Feed;
use state::{Desired, State};

/// Where the agent's notes go (the CLI prints them; the app may show them).
pub type Notes = Arc<dyn Fn(&str) + Send + Sync>;

pub struct Config {
    /// The broker, followed: the app shares its feed with the agent it runs.
    pub feed: Feed,
    pub paths: Paths,
    /// The user's ssh-agent (`SSH_AUTH_SOCK`), where SSH keys go.
    pub ssh_auth_sock: Option<PathBuf>,
    /// The libpq password file whose managed block the agent keeps.
    pub pgpass: Option<PathBuf>,
    pub notes: Notes,
}

/// What the agent's tasks share.
pub(crate) struct Shared {
    state: Mutex<State>,
    pub feed: Feed,
    pub paths: Paths,
    pub ssh_auth_sock: Option<PathBuf>,
    pub pgpass: Option<PathBuf>,
    pub notes: Notes,
    desired: watch::Sender<Desired>,
    /// Deadlines may have moved: the expiry timer looks again.
    pub deadlines_moved: Notify,
    /// A client asked the agent to stop.
    pub stop: Notify,
    /// Held around each read-modify-write of the `.pgpass` file.
    pub pgpass_file: Mutex<()>,
}

impl Shared {
    pub fn note(&self, text: &str) {
        (self.notes)(text);
    }

    pub fn client(&self) -> &Client {
        self.feed.client()
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state as it was between
        // two steps, which every step keeps consistent.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `change` on the state. When it reports a change, the hook line
    /// moves, the effects are brought up to date and the expiry timer looks
    /// again; readiness checks that became due are started.
    pub fn update<R>(self: &Arc<Self>, change: impl FnOnce(&mut State) -> (bool, R)) -> R {
        let (desired, checks, result) = {
            let mut state = self.lock();
            let (changed, result) = change(&mut state);
            if changed {
                state.bump();
            }
            let checks = state.take_ready_checks();
            (changed.then(|| state.desired()), checks, result)
        };
        if let Some(desired) = desired {
            self.desired.send_replace(desired);
            self.deadlines_moved.notify_one();
        }
        for check in checks {
            sync::spawn_ready_check(self.clone(), check);
        }
        result
    }

    /// Re-applies the effects without a state change (the `.pgpass` block
    /// was just turned on, say).
    pub fn refresh_effects(&self) {
        let desired = self.lock().desired();
        self.desired.send_replace(desired);
    }
}

/// Runs the agent until `shutdown` completes or a client sends `stop`.
/// Fails if another agent already serves this user's socket.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> crate::Result<()> {
    let Config { feed, paths, ssh_auth_sock, pgpass, notes } = config;
    paths.prepare()?;
    #[cfg(unix)]
    let listener = server::bind(&paths)?;
    let boot = format!("{:x}", local_now().unix_millis());
    let state = State::new(boot, feed.clock());
    let (desired, desired_rx) = watch::channel(state.desired());
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        feed,
        paths: paths.clone(),
        ssh_auth_sock,
        pgpass,
        notes,
        desired,
        deadlines_moved: Notify::new(),
        stop: Notify::new(),
        pgpass_file: Mutex::new(()),
    });
    shared.note(&format!(
        "hourglass agent: serving {} for {} (pid {})",
        paths.socket().display(),
        shared.client().base_url(),
        std::process::id()
    ));
    let (effects_done, effects_done_rx) = watch::channel(false);
    let effects = tokio::spawn(effects::run(shared.clone(), desired_rx, effects_done_rx));
    let tasks = [
        #[cfg(unix)]
        tokio::spawn(server::serve(shared.clone(), listener)),
        tokio::spawn(sync::follow(shared.clone())),
        tokio::spawn(sync::expire(shared.clone())),
    ];
    tokio::select! {
        () = shutdown => {}
        () = shared.stop.notified() => {}
    }
    for task in &tasks {
        task.abort();
    }
    // Last effects: the hook file goes, the .pgpass lines go (nobody would
    // remove them at their deadline otherwise).
    let _ = effects_done.send(true);
    let _ = effects.await;
    let _ = std::fs::remove_file(paths.socket());
    shared.note("hourglass agent: stopped");
    Ok(())
}
