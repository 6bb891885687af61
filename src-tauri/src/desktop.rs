//! The app's state: settings, the broker client, the live view and the
//! local agent; and the tasks that turn view changes into window updates,
//! tray updates and notifications.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use hourglass_app::agent_host::AgentHost;
use hourglass_app::alerts::{expiry_warnings, next_warning_at};
use hourglass_app::settings::Settings;
use hourglass_app::sync::LiveSync;
use hourglass_app::view::{AppView, Connection, SessionKind};
use hourglass_client::agent::Paths;
use hourglass_client::session::SessionStore;
use hourglass_client::{Client, broker_url};
use hourglass_core::Timestamp;
use tauri::{AppHandle, Emitter, Manager};
use tokio::sync::watch;
use zeroize::Zeroizing;

pub struct Desktop {
    pub settings: RwLock<Settings>,
    settings_path: Option<PathBuf>,
    /// The client, and how its session is kept; None when logged out.
    client: RwLock<Option<(Client, SessionKind)>>,
    /// The running sync; replaced when the broker or the session changes.
    sync: Mutex<Option<SyncHandle>>,
    /// The latest view, for commands and the tray.
    pub view: Arc<RwLock<AppView>>,
    /// The user's local agent, served by the app while it is logged in.
    pub agent: AgentHost,
    /// Wakes a login waiting for the browser, to cancel it.
    pub login_cancel: tokio::sync::Notify,
    /// Wakes the ticker when the view changes: a new grant may need a
    /// warning sooner than the ticker planned to wake.
    ticker_wake: tokio::sync::Notify,
}

struct SyncHandle {
    refresh: Box<dyn Fn() + Send + Sync>,
    forwarder: tauri::async_runtime::JoinHandle<()>,
}

impl Drop for SyncHandle {
    fn drop(&mut self) {
        self.forwarder.abort();
    }
}

pub fn local_now() -> Timestamp {
    Timestamp::from_offset_date_time(time::OffsetDateTime::now_utc())
}

pub fn show_window(app: &AppHandle) {
    if let Some(window) = app.get_webview_window("main") {
        let _ = window.unminimize();
        let _ = window.show();
        let _ = window.set_focus();
    }
}

impl Desktop {
    pub fn start(app: &AppHandle) -> Result<Desktop, Box<dyn std::error::Error>> {
        let settings_path = Settings::default_path();
        let settings = match &settings_path {
            Some(path) => Settings::load(path).unwrap_or_else(|error| {
                tracing::warn!("{error}; using the defaults");
                Settings::default()
            }),
            None => Settings::default(),
        };
        // HOURGLASS_BROKER (like the CLI) overrides the saved broker.
        let mut settings = settings;
        if let Ok(url) = std::env::var("HOURGLASS_BROKER")
            && !url.trim().is_empty()
        {
            settings.broker_url = url;
        }
        let desktop = Desktop {
            view: Arc::new(RwLock::new(AppView::new(&settings.broker_url))),
            settings: RwLock::new(settings),
            settings_path,
            client: RwLock::new(None),
            sync: Mutex::new(None),
            agent: AgentHost::spawn(Paths::from_env(), tauri::async_runtime::handle().inner()),
            login_cancel: tokio::sync::Notify::new(),
            ticker_wake: tokio::sync::Notify::new(),
        };
        desktop.connect(app);
        spawn_ticker(app.clone());
        Ok(desktop)
    }

    pub fn client(&self) -> Option<Client> {
        self.client.read().ok().and_then(|slot| slot.as_ref().map(|(client, _)| client.clone()))
    }

    pub fn settings(&self) -> Settings {
        self.settings.read().map(|s| s.clone()).unwrap_or_default()
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
        }
        Ok(self.settings())
    }

    /// How the current session is kept; None when logged out.
    pub fn session_kind(&self) -> Option<SessionKind> {
        self.client.read().ok().and_then(|slot| slot.as_ref().map(|(_, kind)| *kind))
    }

    /// (Re)creates the client for the configured broker from the keyring
    /// (or `HOURGLASS_TOKEN`) and starts following it.
    pub fn connect(&self, app: &AppHandle) {
        let broker = broker_url(Some(&self.settings().broker_url));
        let token = Zeroizing::new(std::env::var("HOURGLASS_TOKEN").unwrap_or_default());
        let client = if token.trim().is_empty() {
            // The CLI's advice (run `hourglass login`) does not fit here: the
            // app logs in itself.
            let stored = SessionStore::for_broker(&broker).and_then(|store| Ok((store.load()?, store)));
            match stored {
                Ok((Some(session), store)) => {
                    Client::with_session(&broker, store, session).map(|c| (c, SessionKind::Keyring))
                }
                Ok((None, _)) => {
                    return self.sign_out(app, "Log in with your company account to see and request access.".into());
                }
                Err(error) => Err(error),
            }
        } else {
            Client::new(&broker, &token).map(|c| (c, SessionKind::Environment))
        };
        match client {
            Ok((client, kind)) => self.use_client(app, client, kind),
            Err(error) => self.sign_out(app, error.to_string()),
        }
    }

    /// Follows the broker as `client`, and serves the local agent with it.
    pub fn use_client(&self, app: &AppHandle, client: Client, kind: SessionKind) {
        if let Ok(mut slot) = self.client.write() {
            *slot = Some((client.clone(), kind));
        }
        // Called from Tauri's setup too, outside any runtime: the sync's
        // tasks live on Tauri's Tokio runtime.
        let runtime = tauri::async_runtime::handle();
        let _entered = runtime.inner().enter();
        let sync = LiveSync::start(client.clone());
        let handle = follow(app.clone(), sync, Arc::clone(&self.view));
        if let Ok(mut slot) = self.sync.lock() {
            *slot = Some(handle);
        }
        self.agent.start(client);
    }

    /// Forgets the client: the view says why, and the agent stops (its
    /// credentials go with it).
    pub fn sign_out(&self, app: &AppHandle, reason: String) {
        if let Ok(mut slot) = self.client.write() {
            *slot = None;
        }
        if let Ok(mut slot) = self.sync.lock() {
            *slot = None;
        }
        let mut view = AppView::new(&self.settings().broker_url);
        view.connection = Connection::SignedOut { reason };
        publish(app, &self.view, view);
        self.agent.stop();
    }

    /// Reloads now: after the user acted, or to retry at once when offline.
    pub fn refresh(&self) {
        if let Ok(slot) = self.sync.lock()
            && let Some(handle) = slot.as_ref()
        {
            (handle.refresh)();
        }
    }
}

/// Forwards the sync's views to the window and the tray, and its alerts to
/// the notification daemon.
fn follow(app: AppHandle, mut sync: LiveSync, latest: Arc<RwLock<AppView>>) -> SyncHandle {
    let mut views: watch::Receiver<AppView> = sync.view.clone();
    let mut alerts = std::mem::replace(&mut sync.alerts, tokio::sync::mpsc::unbounded_channel().1);
    let sync = Arc::new(sync);
    let refresher = Arc::clone(&sync);
    let forwarder = tauri::async_runtime::spawn(async move {
        let _keep_alive = sync;
        loop {
            tokio::select! {
                changed = views.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let view = views.borrow_and_update().clone();
                    publish(&app, &latest, view);
                }
                alert = alerts.recv() => {
                    let Some(alert) = alert else { return };
                    let notify = app.state::<Desktop>().settings().notify;
                    if alert.wanted(&notify) {
                        crate::notify::show(&app, alert);
                    }
                }
            }
        }
    });
    SyncHandle { refresh: Box::new(move || refresher.refresh()), forwarder }
}

fn publish(app: &AppHandle, latest: &RwLock<AppView>, view: AppView) {
    if let Ok(mut slot) = latest.write() {
        *slot = view.clone();
    }
    let _ = app.emit("view", &view);
    crate::tray::update(app);
    if let Some(desktop) = app.try_state::<Desktop>() {
        desktop.ticker_wake.notify_one();
    }
}

/// How often the tray is brought up to date: its labels show minutes.
const TRAY_REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// One timer for the whole app: expiry warnings and the tray's countdown.
/// Countdowns in the window run on the front end's own single timer. It
/// sleeps until the next warning is due, the tray needs refreshing or the
/// view changes, not a fixed second: an app in the tray should cost nothing.
fn spawn_ticker(app: AppHandle) {
    tauri::async_runtime::spawn(async move {
        let mut last = None::<Timestamp>;
        let mut tray_refreshed = tokio::time::Instant::now();
        loop {
            let desktop = app.state::<Desktop>();
            let view = desktop.view.read().map(|v| v.clone()).ok();
            let settings = desktop.settings();
            let wait = match view {
                Some(view) => {
                    let now = view.broker_now(local_now());
                    let since = last.unwrap_or(now);
                    last = Some(now);
                    for alert in expiry_warnings(&view.grants, &settings.warnings(), since, now) {
                        if alert.wanted(&settings.notify) {
                            crate::notify::show(&app, alert);
                        }
                    }
                    next_warning_at(&view.grants, &settings.warnings(), now)
                        .map(|moment| std::time::Duration::from_millis(now.millis_until(moment).max(0) as u64))
                        .unwrap_or(TRAY_REFRESH)
                }
                None => TRAY_REFRESH,
            };
            if tray_refreshed.elapsed() >= TRAY_REFRESH {
                crate::tray::update(&app);
                tray_refreshed = tokio::time::Instant::now();
            }
            // Never longer than the tray's refresh: a suspended machine's
            // monotonic clock stands still, and warnings missed meanwhile
            // are given at the next wake (the nearest one only).
            let wait = wait.min(TRAY_REFRESH.saturating_sub(tray_refreshed.elapsed())).max(MIN_WAIT);
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
