//! The commands the front end calls. Each wraps one `hourglass-client` call;
//! errors cross to the front end as `{code, message}`.

use hourglass_app::integration::{HookShell, IntegrationStatus, ShellIntegration, UserDirs};
use hourglass_app::settings::Settings;
use hourglass_app::view::{Account, AppView, SessionKind};
use hourglass_client::env::{Shell, exports};
use hourglass_client::filing;
use hourglass_client::login::{Login, Prompt, open_browser};
use hourglass_client::session::SessionStore;
use hourglass_client::{Client, Trust, broker_url};
use hourglass_core::api::{ApiError, Catalog, CreateRequest, ErrorCode, RenewOutcome, RequestOutcome};
use hourglass_core::audit::AuditRecord;
use hourglass_core::{AccessRequest, Grant, GrantId, RequestId};
use serde::Serialize;
use tauri::{AppHandle, Emitter, Manager, State};

use crate::desktop::Desktop;

type Answer<T> = Result<T, ApiError>;

fn error(error: hourglass_client::Error) -> ApiError {
    let code = match &error {
        hourglass_client::Error::Api(api) => return api.clone(),
        hourglass_client::Error::Unreachable { .. } => ErrorCode::Unavailable,
        hourglass_client::Error::Protocol(_) => ErrorCode::Internal,
        hourglass_client::Error::Config(_) => ErrorCode::InvalidRequest,
        hourglass_client::Error::Agent(_) => ErrorCode::Unavailable,
    };
    ApiError { code, message: error.to_string() }
}

fn refused(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError { code, message: message.into() }
}

fn client(desktop: &Desktop) -> Answer<Client> {
    desktop.client().ok_or_else(|| refused(ErrorCode::Unauthenticated, "not logged in"))
}

fn request_id(text: &str) -> Answer<RequestId> {
    RequestId::parse(text).map_err(|e| refused(ErrorCode::InvalidRequest, e.to_string()))
}

fn grant_id(text: &str) -> Answer<GrantId> {
    GrantId::parse(text).map_err(|e| refused(ErrorCode::InvalidRequest, e.to_string()))
}

#[tauri::command]
pub fn view(desktop: State<'_, Desktop>) -> AppView {
    desktop.view.read().map(|v| v.clone()).unwrap_or_else(|_| AppView::new(""))
}

#[tauri::command]
pub fn settings(desktop: State<'_, Desktop>) -> Settings {
    desktop.settings()
}

#[tauri::command]
pub fn save_settings(app: AppHandle, desktop: State<'_, Desktop>, settings: Settings) -> Answer<Settings> {
    let start_at_login = settings.start_at_login;
    let saved = desktop.save_settings(&app, settings).map_err(|m| refused(ErrorCode::InvalidRequest, m))?;
    if let (Some(dir), Ok(exe)) = (hourglass_app::autostart::autostart_dir(), std::env::current_exe()) {
        hourglass_app::autostart::apply(&dir, start_at_login, &exe)
            .map_err(|e| refused(ErrorCode::Internal, format!("cannot update the autostart entry: {e}")))?;
    }
    Ok(saved)
}

/// What the login page shows while the browser is out.
#[derive(Clone, Serialize)]
struct LoginPrompt {
    url: String,
    /// The system browser was started (else the user must open the URL).
    opened: bool,
}

/// Logs in through the broker's OpenID Connect issuer in the system browser
/// (code + PKCE, loopback redirect): the client's flow, as `hourglass login`.
/// The session goes to the OS keyring; with no Secret Service it lives in
/// this process only, and the account says so.
#[tauri::command]
pub async fn login(app: AppHandle, desktop: State<'_, Desktop>) -> Answer<Account> {
    let base = broker_url(Some(&desktop.settings().broker_url));
    let store = SessionStore::for_broker(&base).map_err(error)?;
    let keyring = store.check();
    let trust = Trust::for_broker(&base, None).map_err(error)?;
    let login = Login::start(&base, &trust).await.map_err(error)?;
    let emitter = app.clone();
    let prompt = move |prompt: Prompt<'_>| {
        if let Prompt::Browser { url } = prompt {
            let opened = open_browser(url);
            let _ = emitter.emit("login-prompt", LoginPrompt { url: url.to_owned(), opened });
        }
    };
    let session = tokio::select! {
        session = login.with_browser(prompt) => session.map_err(error)?,
        () = desktop.login_cancel.notified() => return Err(refused(ErrorCode::InvalidRequest, "the login was cancelled")),
    };
    match keyring {
        Ok(()) => {
            store.save(&session).map_err(error)?;
            let client = Client::with_session(&base, store, session).map_err(error)?;
            desktop.use_client(&app, client, SessionKind::Keyring);
        }
        Err(no_keyring) => {
            tracing::warn!("{no_keyring}: the session lives in memory until the app quits");
            // Nothing keeps the refresh token: end it at the identity provider.
            let _ = hourglass_client::login::revoke(&session, &trust).await;
            let client = Client::new(&base, &session.session_token).map_err(error)?;
            desktop.use_client(&app, client, SessionKind::Memory);
        }
    }
    crate::desktop::show_window(&app);
    Ok(account_of(&desktop).await)
}

#[tauri::command]
pub fn cancel_login(desktop: State<'_, Desktop>) {
    desktop.login_cancel.notify_waiters();
}

/// Logs out: the identity provider revokes the refresh token, the keyring
/// forgets the session, the agent drops every credential it held.
#[tauri::command]
pub async fn logout(app: AppHandle, desktop: State<'_, Desktop>) -> Answer<Account> {
    let base = broker_url(Some(&desktop.settings().broker_url));
    if desktop.session_kind() == Some(SessionKind::Keyring) {
        let store = SessionStore::for_broker(&base).map_err(error)?;
        if let Some(session) = store.load().map_err(error)? {
            let trust = Trust::for_broker(&base, None).map_err(error)?;
            if let Err(failed) = hourglass_client::login::revoke(&session, &trust).await {
                tracing::warn!("the refresh token was not revoked at the identity provider: {failed}");
            }
            store.delete().map_err(error)?;
        }
    }
    desktop.sign_out(&app, "You logged out.".to_owned());
    Ok(account_of(&desktop).await)
}

/// Who the app is logged in as, and how the session is kept.
#[tauri::command]
pub async fn account(desktop: State<'_, Desktop>) -> Answer<Account> {
    Ok(account_of(&desktop).await)
}

async fn account_of(desktop: &Desktop) -> Account {
    let broker = broker_url(Some(&desktop.settings().broker_url));
    let (Some(client), Some(kind)) = (desktop.client(), desktop.session_kind()) else {
        return Account { broker, session: None, idp: None, expires_at: None };
    };
    let info = client.session_info().await;
    Account { broker, session: Some(kind), idp: info.idp, expires_at: info.expires_at }
}

/// The agent and the shells' prompt hooks, for the settings view.
#[tauri::command]
pub async fn integration(desktop: State<'_, Desktop>) -> Answer<IntegrationStatus> {
    let dirs = UserDirs::from_env().map_err(|e| refused(ErrorCode::Internal, e.to_string()))?;
    let agent = desktop.agent.state();
    Ok(dirs.status(agent))
}

/// Adds the prompt hook to a shell's startup file.
#[tauri::command]
pub fn install_hook(shell: HookShell) -> Answer<ShellIntegration> {
    let dirs = UserDirs::from_env().map_err(|e| refused(ErrorCode::Internal, e.to_string()))?;
    dirs.install(shell).map_err(|e| refused(ErrorCode::Internal, e.to_string()))
}

#[tauri::command]
pub async fn catalog(desktop: State<'_, Desktop>) -> Answer<Catalog> {
    client(&desktop)?.catalog().await.map_err(error)
}

/// Files a request. For a PostgreSQL or SSH resource the app makes the
/// secret and its agent keeps it, as the CLI does.
#[tauri::command]
pub async fn request_access(desktop: State<'_, Desktop>, body: CreateRequest) -> Answer<RequestOutcome> {
    let client = client(&desktop)?;
    let outcome = match filing::secret_kind(&client, &body.resource).await.map_err(error)? {
        None => client.create_request(&body).await.map_err(error)?,
        Some(kind) => {
            let filed = filing::file_with_secret(&client, desktop.agent.paths(), body, kind).await.map_err(error)?;
            for note in &filed.notes {
                tracing::info!("{note}");
            }
            filed.outcome
        }
    };
    desktop.refresh();
    Ok(outcome)
}

#[tauri::command]
pub async fn approve(desktop: State<'_, Desktop>, id: String, comment: Option<String>) -> Answer<RequestOutcome> {
    let outcome = client(&desktop)?.approve(&request_id(&id)?, comment).await.map_err(error)?;
    desktop.refresh();
    Ok(outcome)
}

#[tauri::command]
pub async fn deny(desktop: State<'_, Desktop>, id: String, comment: Option<String>) -> Answer<RequestOutcome> {
    let outcome = client(&desktop)?.deny(&request_id(&id)?, comment).await.map_err(error)?;
    desktop.refresh();
    Ok(outcome)
}

#[tauri::command]
pub async fn cancel(desktop: State<'_, Desktop>, id: String) -> Answer<AccessRequest> {
    let request = client(&desktop)?.cancel(&request_id(&id)?).await.map_err(error)?;
    desktop.refresh();
    Ok(request)
}

#[tauri::command]
pub async fn renew(desktop: State<'_, Desktop>, grant: String, duration: String) -> Answer<RenewOutcome> {
    let outcome = client(&desktop)?.renew(&grant_id(&grant)?, &duration, None).await.map_err(error)?;
    desktop.refresh();
    Ok(outcome)
}

/// Renews for the role's default duration (the notification's "Renew").
pub async fn renew_by_default(app: &AppHandle, grant: &GrantId) -> Answer<RenewOutcome> {
    let desktop = app.state::<Desktop>();
    let client = client(&desktop)?;
    let current = client.grant(grant).await.map_err(error)?;
    let catalog = client.catalog().await.map_err(error)?;
    let duration = catalog
        .resources
        .iter()
        .find(|r| r.name == current.resource)
        .and_then(|r| r.roles.iter().find(|role| role.name == current.role))
        .map(|role| role.default_duration.to_string())
        .ok_or_else(|| {
            refused(ErrorCode::UnknownRole, format!("{}/{} is no longer offered", current.resource, current.role))
        })?;
    let outcome = client.renew(grant, &duration, None).await.map_err(error)?;
    desktop.refresh();
    Ok(outcome)
}

#[tauri::command]
pub async fn revoke(desktop: State<'_, Desktop>, grant: String) -> Answer<Grant> {
    let revoked = client(&desktop)?.revoke(&grant_id(&grant)?, None).await.map_err(error)?;
    desktop.refresh();
    Ok(revoked)
}

#[tauri::command]
pub async fn history(desktop: State<'_, Desktop>, limit: u32) -> Answer<Vec<AuditRecord>> {
    client(&desktop)?.history(limit as usize).await.map_err(error)
}

/// The shell lines that set a grant's credentials, for the clipboard.
#[tauri::command]
pub async fn shell_snippet(desktop: State<'_, Desktop>, grant: String) -> Answer<String> {
    let credential = client(&desktop)?.credential(&grant_id(&grant)?).await.map_err(error)?;
    Ok(exports(&credential, Shell::from_environment()))
}

/// Opens a terminal whose shell has the grant's credentials in its
/// environment (and nowhere else).
#[tauri::command]
pub async fn open_terminal(desktop: State<'_, Desktop>, grant: String) -> Answer<()> {
    let credential = client(&desktop)?.credential(&grant_id(&grant)?).await.map_err(error)?;
    let terminal = std::env::var("TERMINAL")
        .ok()
        .into_iter()
        .chain(["x-terminal-emulator", "gnome-terminal", "konsole", "xfce4-terminal", "xterm"].map(String::from))
        .find(|program| which(program))
        .ok_or_else(|| refused(ErrorCode::Unavailable, "no terminal emulator found (set $TERMINAL)"))?;
    let mut command = std::process::Command::new(&terminal);
    for var in &credential.env {
        command.env(&var.name, &var.value);
    }
    command.env("HOURGLASS_GRANT", credential.grant_id.as_str());
    command.spawn().map_err(|e| refused(ErrorCode::Internal, format!("cannot start {terminal}: {e}")))?;
    Ok(())
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

#[tauri::command]
pub fn hide_window(window: tauri::WebviewWindow) {
    let _ = window.hide();
}

/// Retries the broker now (the offline banner's "Retry").
#[tauri::command]
pub fn reconnect(app: AppHandle, desktop: State<'_, Desktop>) {
    if desktop.client().is_none() {
        desktop.connect(&app);
    } else {
        desktop.refresh();
    }
}
