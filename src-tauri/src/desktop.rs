//! The app's state: settings, the session, the broker's feed with the live
//! view and the local agent that share it; and the tasks that turn view
//! changes into window updates, tray updates and notifications.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use hourglass_app::agent_host::AgentHost;
use hourglass_app::alerts::{Alert, expiry_warnings, next_warning_at};
use hourglass_app::ipc::AppEvent;
use hourglass_app::settings::Settings;
use hourglass_app::sync::LiveSync;
use hourglass_app::tray::{TrayModel, tray_model};
use hourglass_app::view::{AppView, Connection, Live, Revisions};
use hourglass_client::account::{self, Resumed};
use hourglass_client::agent::Paths;
use hourglass_client::clock::local_now;
use hourglass_client::feed::Feed;
use hourglass_client::session::SessionKind;
use hourglass_client::{Client, Trust, broker_url};
use hourglass_core::Timestamp;
use tauri::{AppHandle, Manager};
use tokio::sync::watch;

use crate::notify::{self, Picked};
use crate::window;

/// What the login page says where there is no keyring: what the app will
/// do with the session instead, plainly.
const NO_KEYRING: &str = "There is no unlocked system keyring here to keep your session in. \
    Hourglass can keep it in this app's memory instead, until you quit the app (never in a file): \
    you log in again after that.";

pub struct Desktop {
    settings: RwLock<Settings>,
    settings_path: Option<PathBuf>,
    /// The client, and how its session is kept; None when logged out.
    session: RwLock<Option<(Client, SessionKind)>>,
    /// The running sync; replaced when the broker or the session changes.
    sync: Mutex<Option<SyncHandle>>,
    /// The latest of the broker, from the sync.
    live: RwLock<Live>,
    /// The views sent to the window.
    revisions: Mutex<Revisions>,
    /// The user's local agent, served by the app while it is logged in.
    pub agent: AgentHost,
    /// Wakes a login waiting for the browser, to cancel it.
    pub login_cancel: tokio::sync::Notify,
    /// Wakes the ticker when the view changes: a new grant may need a
    /// warning sooner than the ticker planned to wake.
    ticker_wake: tokio::sync::Notify,
}

struct SyncHandle {
    sync: Arc<LiveSync>,
    forwarder: tauri::async_runtime::JoinHandle<()>,
}

impl Drop for SyncHandle {
    fn drop(&mut self) {
        self.forwarder.abort();
    }
}

impl Desktop {
    /// The app's state, before it follows anything: [`start`] does, once
    /// Tauri manages it (its tasks look it up).
    pub fn new() -> Desktop {
        let settings_path = Settings::default_path();
        let mut settings = match &settings_path {
            Some(path) => Settings::load(path).unwrap_or_else(|error| {
                tracing::warn!("{error}; using the defaults");
                Settings::default()
            }),
            None => Settings::default(),
        };
        // HOURGLASS_BROKER (like the CLI) overrides the saved broker.
        if let Ok(url) = std::env::var("HOURGLASS_BROKER")
            && !url.trim().is_empty()
        {
            settings.broker_url = url;
        }
        Desktop {
            live: RwLock::new(Live::new(&settings.broker_url)),
            settings: RwLock::new(settings),
            settings_path,
            session: RwLock::new(None),
            sync: Mutex::new(None),
            revisions: Mutex::new(Revisions::default()),
            agent: AgentHost::spawn(Paths::from_env(), tauri::async_runtime::handle().inner()),
            login_cancel: tokio::sync::Notify::new(),
            ticker_wake: tokio::sync::Notify::new(),
        }
    }

    pub fn client(&self) -> Option<Client> {
        self.session.read().ok().and_then(|slot| slot.as_ref().map(|(client, _)| client.clone()))
    }

    /// How the current session is kept; None when logged out.
    pub fn session_kind(&self) -> Option<SessionKind> {
        self.session.read().ok().and_then(|slot| slot.as_ref().map(|(_, kind)| *kind))
    }

    pub fn settings(&self) -> Settings {
        self.settings.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// The broker the app follows, as the settings and the environment say.
    pub fn broker(&self) -> String {
        broker_url(Some(&self.settings().broker_url))
    }

    /// What the app trusts for that broker's certificate (`HOURGLASS_CA`).
    pub fn trust(&self) -> hourglass_client::Result<Trust> {
        Trust::for_broker(&self.broker(), None)
    }

    pub fn save_settings(&self, app: &AppHandle, settings: Settings) -> Result<Settings, String> {
        settings.validate().map_err(|e| e.to_string())?;
        if let Some(path) = &self.settings_path {
            settings.save(path).map_err(|e| e.to_string())?;
        }
        let reconnect = self.settings().broker_url != settings.broker_url;
        if let Ok(mut current) = self.settings.write() {
            *current = settings;
        }
        if reconnect {
            self.connect(app);
        } else {
            // The warning times may have changed: countdowns and the tray follow.
            self.changed(app);
        }
        Ok(self.settings())
    }

    /// (Re)creates the client for the configured broker from the keyring
    /// (or `HOURGLASS_TOKEN`) and starts following it.
    ///
    /// The keyring is read on a blocking thread: it answers over D-Bus and
    /// may first ask the user to unlock it, and the thread that called
    /// (Tauri's main thread, at start) paints the window meanwhile.
    pub fn connect(&self, app: &AppHandle) {
        let app = app.clone();
        tauri::async_runtime::spawn_blocking(move || {
            let desktop = app.state::<Desktop>();
            let resumed = desktop.trust().and_then(|trust| account::resume(&desktop.broker(), trust));
            match resumed {
                Ok(Resumed::LoggedIn { client, kind }) => desktop.use_client(&app, client, kind),
                // The CLI's advice (run `hourglass login`) does not fit here:
                // the app logs in itself.
                Ok(Resumed::LoggedOut) => {
                    desktop.sign_out(&app, "Log in with your company account to see and request access.".into(), false)
                }
                Ok(Resumed::NoKeyring(error)) => {
                    tracing::warn!("{error}");
                    desktop.sign_out(&app, NO_KEYRING.into(), true);
                }
                Err(error) => desktop.sign_out(&app, error.to_string(), false),
            }
        });
    }

    /// Follows the broker as `client`, and serves the local agent on the
    /// same feed.
    pub fn use_client(&self, app: &AppHandle, client: Client, kind: SessionKind) {
        if let Ok(mut slot) = self.session.write() {
            *slot = Some((client.clone(), kind));
        }
        // Called from a blocking thread and from commands: the feed's and the
        // sync's tasks live on Tauri's Tokio runtime.
        let runtime = tauri::async_runtime::handle();
        let _entered = runtime.inner().enter();
        let feed = Feed::start(client);
        let sync = LiveSync::start(feed.clone());
        let handle = follow(app.clone(), sync);
        if let Ok(mut slot) = self.sync.lock() {
            *slot = Some(handle);
        }
        self.agent.start(feed);
    }

    /// Forgets the client: the view says why, and the agent stops (its
    /// credentials go with it). `memory_only`: there is no keyring, and the
    /// login page says what a login will do instead.
    pub fn sign_out(&self, app: &AppHandle, reason: String, memory_only: bool) {
        if let Ok(mut slot) = self.session.write() {
            *slot = None;
        }
        if let Ok(mut slot) = self.sync.lock() {
            *slot = None;
        }
        self.set_live(Live::signed_out(&self.settings().broker_url, reason, memory_only));
        self.changed(app);
        self.agent.stop();
    }

    /// Reloads now: after the user acted, or to retry at once when offline.
    pub fn refresh(&self) {
        if let Ok(slot) = self.sync.lock()
            && let Some(handle) = slot.as_ref()
        {
            handle.sync.refresh();
        }
    }

    fn live(&self) -> Live {
        self.live.read().map(|live| live.clone()).unwrap_or_else(|_| Live::new(&self.settings().broker_url))
    }

    fn set_live(&self, mut live: Live) {
        // A session in memory cannot be renewed: when it ends, the login
        // page offers memory again.
        if let Connection::SignedOut { memory_only, .. } = &mut live.connection
            && self.session_kind() == Some(SessionKind::Memory)
        {
            *memory_only = true;
        }
        if let Ok(mut slot) = self.live.write() {
            *slot = live;
        }
    }

    /// The window's view: the last one sent, so that its revision is the
    /// one the window compares later views with.
    pub fn view(&self) -> AppView {
        let last = self.revisions.lock().ok().and_then(|revisions| revisions.last().cloned());
        last.unwrap_or_else(|| AppView::of(&self.live(), &self.settings().warnings(), local_now()))
    }

    /// The tray at this moment.
    fn tray(&self) -> TrayModel {
        let live = self.live();
        tray_model(&live, live.clock.broker_time(local_now()), &self.settings().warnings())
    }

    /// Brings the window and the tray up to date with the view now: a view
    /// that changed is sent, a grant past its deadline leaves both.
    pub fn publish(&self, app: &AppHandle) {
        let view = AppView::of(&self.live(), &self.settings().warnings(), local_now());
        // The ticker and the sync both publish: two views may cross on their
        // way, and the window keeps the one with the higher revision.
        let changed = self.revisions.lock().ok().and_then(|mut revisions| revisions.next(view));
        if let Some(view) = changed {
            window::emit(app, AppEvent::view(Box::new(view)));
        }
        crate::tray::update(app, self.tray());
    }

    /// The view or the settings changed: publish, and the ticker looks
    /// again (a new grant may need a warning sooner than it planned).
    fn changed(&self, app: &AppHandle) {
        self.publish(app);
        self.ticker_wake.notify_one();
    }

    /// The tray as the app starts.
    pub fn first_tray(&self) -> TrayModel {
        self.tray()
    }

    /// Shows `alert` if the user wants its kind; its actions act here.
    pub fn notify(&self, app: &AppHandle, alert: Alert) {
        if !alert.wanted(&self.settings().notify) {
            return;
        }
        let app = app.clone();
        notify::show(alert, move |picked| match picked {
            Picked::Open(tab) => window::open_on(&app, tab),
            Picked::Renew(grant) => {
                tauri::async_runtime::spawn(async move {
                    let desktop = app.state::<Desktop>();
                    let Some(client) = desktop.client() else { return };
                    match hourglass_client::renewal::renew_for_default(&client, &grant, None).await {
                        Ok(_) => desktop.refresh(),
                        Err(error) => tracing::warn!("renewing from a notification failed: {error}"),
                    }
                });
            }
        });
    }
}

/// Starts following the broker (when a session is kept) and the ticker;
/// Tauri manages the [`Desktop`] already.
pub fn start(app: &AppHandle) {
    app.state::<Desktop>().connect(app);
    spawn_ticker(app.clone());
}

/// Forwards the sync's views to the window and the tray, and its alerts to
/// the notification daemon.
fn follow(app: AppHandle, mut sync: LiveSync) -> SyncHandle {
    let mut views: watch::Receiver<Live> = sync.view.clone();
    let mut alerts = std::mem::replace(&mut sync.alerts, tokio::sync::mpsc::unbounded_channel().1);
    let sync = Arc::new(sync);
    let forwarder = tauri::async_runtime::spawn(async move {
        loop {
            tokio::select! {
                changed = views.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let live = views.borrow_and_update().clone();
                    let desktop = app.state::<Desktop>();
                    desktop.set_live(live);
                    desktop.changed(&app);
                }
                alert = alerts.recv() => {
                    let Some(alert) = alert else { return };
                    app.state::<Desktop>().notify(&app, alert);
                }
            }
        }
    });
    SyncHandle { sync, forwarder }
}

/// How often the tray is brought up to date: its labels show minutes.
const TRAY_REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// One timer for the whole app: expiry warnings, grants leaving the view
/// at their deadline, and the tray's countdown. Countdowns in the window
/// run on the front end's own single timer. It sleeps until the next
/// warning or deadline, the tray's refresh or a view change, not a fixed
/// second: an app in the tray should cost nothing.
fn spawn_ticker(app: AppHandle) {
    tauri::async_runtime::spawn(async move {
        let mut last = None::<Timestamp>;
        loop {
            let desktop = app.state::<Desktop>();
            let live = desktop.live();
            let warnings = desktop.settings().warnings();
            let now = live.clock.broker_time(local_now());
            let since = last.unwrap_or(now);
            last = Some(now);
            for alert in expiry_warnings(&live.grants, &warnings, since, now) {
                desktop.notify(&app, alert);
            }
            desktop.publish(&app);
            let next =
                [next_warning_at(&live.grants, &warnings, now), live.next_deadline(now)].into_iter().flatten().min();
            // Never longer than the tray's refresh: a suspended machine's
            // monotonic clock stands still, and warnings missed meanwhile
            // are given at the next wake (the nearest one only).
            let wait = next
                .map(|moment| std::time::Duration::from_millis(u64::try_from(now.millis_until(moment)).unwrap_or(0)))
                .unwrap_or(TRAY_REFRESH)
                .min(TRAY_REFRESH)
                .max(MIN_WAIT);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = desktop.ticker_wake.notified() => {}
            }
        }
    });
}

/// A floor on the ticker's sleep, so that a burst of view changes or a
/// moment just passed cannot make it spin.
const MIN_WAIT: std::time::Duration = std::time::Duration::from_millis(50);
