//! The local agent inside the app: while the app runs, it is the user's
//! agent (shells, ssh-agent, credential helpers all ask it), so that
//! nothing else has to be started. When an agent already serves this user
//! (`hourglass agent` in a terminal), the app leaves it alone and says so.

use std::sync::{Arc, Mutex};

use hourglass_client::agent::{self, AgentClient, Paths};
use hourglass_client::feed::Feed;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Who serves this user's agent socket, for the settings view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AgentState {
    /// Not logged in: nothing to serve.
    Off,
    /// This app serves it.
    InApp { socket: String },
    /// Another process (`hourglass agent`) serves it.
    External {
        socket: String,
        #[ts(type = "number")]
        pid: u32,
    },
    /// It could not start.
    Failed { error: String },
}

/// The agent this app runs, if any. Starts and stops are carried out in
/// order by one task, so a logout right after a login never leaves an agent
/// running, and a new agent binds the socket only after the old one let go.
pub struct AgentHost {
    commands: mpsc::UnboundedSender<Command>,
    state: Arc<Mutex<AgentState>>,
    paths: Paths,
}

enum Command {
    Start(Feed),
    Stop(Option<oneshot::Sender<()>>),
}

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl AgentHost {
    /// The host's task runs on `runtime`.
    pub fn spawn(paths: Paths, runtime: &tokio::runtime::Handle) -> AgentHost {
        let (commands, received) = mpsc::unbounded_channel();
        let state = Arc::new(Mutex::new(AgentState::Off));
        runtime.spawn(host(paths.clone(), Arc::clone(&state), received));
        AgentHost { commands, state, paths }
    }

    /// Where this user's agent is served, by the app or another process.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    pub fn state(&self) -> AgentState {
        self.state.lock().map(|s| s.clone()).unwrap_or(AgentState::Off)
    }

    /// Serves the agent following `feed` (the user logged in, or changed
    /// broker), in place of the one running. The agent shares the app's
    /// feed: one event stream, one clock.
    pub fn start(&self, feed: Feed) {
        let _ = self.commands.send(Command::Start(feed));
    }

    /// Stops the app's agent (logged out).
    pub fn stop(&self) {
        let _ = self.commands.send(Command::Stop(None));
    }

    /// Stops the app's agent and waits for its last effects (quitting).
    pub async fn stop_and_wait(&self) {
        let (done, stopped) = oneshot::channel();
        if self.commands.send(Command::Stop(Some(done))).is_ok() {
            let _ = stopped.await;
        }
    }
}

fn set(state: &Mutex<AgentState>, to: AgentState) {
    if let Ok(mut slot) = state.lock() {
        *slot = to;
    }
}

async fn host(paths: Paths, state: Arc<Mutex<AgentState>>, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut running = None;
    while let Some(command) = commands.recv().await {
        stop(&mut running).await;
        set(&state, AgentState::Off);
        match command {
            Command::Start(feed) => running = start(&paths, &state, feed).await,
            Command::Stop(done) => {
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
        }
    }
    stop(&mut running).await;
}

/// Stops a running agent and waits for its cleanup (hook file and
/// `.pgpass` lines go, the socket is removed).
async fn stop(running: &mut Option<Running>) {
    if let Some(Running { stop, task }) = running.take() {
        let _ = stop.send(());
        let _ = task.await;
    }
}

async fn start(paths: &Paths, state: &Arc<Mutex<AgentState>>, feed: Feed) -> Option<Running> {
    let socket = paths.socket().display().to_string();
    let probe = paths.clone();
    let existing = tokio::task::spawn_blocking(move || {
        AgentClient::connect_with_timeout(&probe, std::time::Duration::from_secs(1))
            .and_then(|mut agent| agent.status())
    })
    .await;
    if let Ok(Ok(status)) = existing {
        tracing::info!("an hourglass agent (pid {}) already serves {socket}; the app uses it", status.pid);
        set(state, AgentState::External { socket, pid: status.pid });
        return None;
    }
    let config = agent::Config {
        feed,
        paths: paths.clone(),
        ssh_auth_sock: std::env::var_os("SSH_AUTH_SOCK").filter(|p| !p.is_empty()).map(Into::into),
        pgpass: hourglass_client::pgpass::path(),
        notes: Arc::new(|text: &str| tracing::info!("{text}")),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    set(state, AgentState::InApp { socket });
    let failed = Arc::clone(state);
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        if let Err(error) = agent::run(config, shutdown).await {
            tracing::warn!("the local agent stopped: {error}");
            set(&failed, AgentState::Failed { error: error.to_string() });
        }
    });
    Some(Running { stop, task })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The feed of a broker that is not there: the agent runs offline.
    fn offline_feed() -> Feed {
        Feed::start(hourglass_client::Client::new("http://127.0.0.1:9", "not-a-real-token").expect("client"))
    }

    async fn until(host: &AgentHost, wanted: impl Fn(&AgentState) -> bool) -> AgentState {
        for _ in 0..200 {
            let state = host.state();
            if wanted(&state) {
                return state;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        host.state()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn agent_host_serves_the_socket_while_logged_in_and_lets_go_on_logout() {
        let dir = tempfile::tempdir().expect("dir");
        let paths = Paths::in_dir(&dir.path().join("hourglass"));
        let host = AgentHost::spawn(paths.clone(), &tokio::runtime::Handle::current());

        // Logged in twice in a row (a broker change): one agent, serving.
        host.start(offline_feed());
        host.start(offline_feed());
        let state = until(&host, |s| matches!(s, AgentState::InApp { .. })).await;
        assert!(matches!(state, AgentState::InApp { .. }), "the app serves the agent: {state:?}");
        // The state says "started"; the socket is bound a moment later.
        let mut answer = None;
        for _ in 0..200 {
            let probe = paths.clone();
            let status = tokio::task::spawn_blocking(move || AgentClient::connect(&probe).and_then(|mut a| a.status()))
                .await
                .expect("join");
            if let Ok(status) = status {
                answer = Some(status);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        let status = answer.expect("the agent answers on its socket");
        assert_eq!(status.pid, std::process::id(), "it is this process");

        // Logged out: the socket goes before stop_and_wait returns.
        host.stop_and_wait().await;
        assert_eq!(host.state(), AgentState::Off);
        assert!(!paths.socket().exists(), "the socket is removed");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn agent_host_leaves_an_agent_that_already_runs_alone() {
        let dir = tempfile::tempdir().expect("dir");
        let paths = Paths::in_dir(&dir.path().join("hourglass"));
        let (stop_other, other_stopped) = oneshot::channel::<()>();
        let config = agent::Config {
            feed: offline_feed(),
            paths: paths.clone(),
            ssh_auth_sock: None,
            pgpass: None,
            notes: Arc::new(|_: &str| {}),
        };
        let other = tokio::spawn(agent::run(config, async {
            let _ = other_stopped.await;
        }));
        for _ in 0..200 {
            if paths.socket().exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }

        let host = AgentHost::spawn(paths.clone(), &tokio::runtime::Handle::current());
        host.start(offline_feed());
        let state = until(&host, |s| matches!(s, AgentState::External { .. })).await;
        assert!(matches!(state, AgentState::External { .. }), "the running agent is used: {state:?}");
        host.stop_and_wait().await;
        assert!(paths.socket().exists(), "stopping the app's (absent) agent leaves the other one serving");

        let _ = stop_other.send(());
        other.await.expect("join").expect("the other agent ran and stopped cleanly");
    }
}
