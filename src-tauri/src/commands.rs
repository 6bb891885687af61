//! The window's commands ([`hourglass_app::ipc::Commands`]), each a call of
//! `hourglass-client` or `hourglass-app`: this file adapts, it decides
//! nothing. One Tauri command, [`call`], carries them all.

use hourglass_app::integration::{HookShell, IntegrationStatus, ShellIntegration, UserDirs};
use hourglass_app::ipc::{self, Answer, AppEvent, Commands, LoginPrompt, client_error, refused};
use hourglass_app::offer::Offer;
use hourglass_app::settings::Settings;
use hourglass_app::view::{Account, AppView};
use hourglass_client::account::{self, Keeping};
use hourglass_client::agent::protocol::Selector;
use hourglass_client::env::{Shell, exports};
use hourglass_client::login::{Login, Prompt, open_browser};
use hourglass_client::session::SessionKind;
use hourglass_client::{Client, credentials, filing};
use hourglass_core::api::{CreateRequest, Credential, ErrorCode, PersonalChannel, RenewOutcome, RequestOutcome};
use hourglass_core::audit::AuditRecord;
use hourglass_core::review::ReviewVerdict;
use hourglass_core::{AccessRequest, Duration, Grant, GrantId, RequestId, Verdict};
use tauri::{AppHandle, Manager, State};

use crate::desktop::Desktop;
use crate::window;

/// The one Tauri command: runs a [`ipc::Call`] (its name is
/// [`ipc::IPC_COMMAND`]).
#[tauri::command]
pub async fn call(app: AppHandle, call: serde_json::Value) -> Answer<serde_json::Value> {
    ipc::dispatch(&App { app }, ipc::parse(call)?).await
}

struct App {
    app: AppHandle,
}

impl App {
    fn desktop(&self) -> State<'_, Desktop> {
        self.app.state::<Desktop>()
    }

    fn client(&self) -> Answer<Client> {
        self.desktop().client().ok_or_else(|| refused(ErrorCode::Unauthenticated, "not logged in"))
    }

    /// The grant's credential, complete: from the agent, with the secret
    /// this client made (the app's own agent, or `hourglass agent`).
    async fn credential(&self, grant: GrantId) -> Answer<Credential> {
        let client = self.client()?;
        let paths = self.desktop().agent.paths().clone();
        credentials::complete(&paths, Selector::Grant { grant }, || Ok(client)).await.map_err(client_error)
    }

    /// After the user acted: the view reloads now.
    fn acted<T>(&self, answer: hourglass_client::Result<T>) -> Answer<T> {
        let answer = answer.map_err(client_error)?;
        self.desktop().refresh();
        Ok(answer)
    }

    /// Policy may ask for a fresh login to decide: the browser opens for
    /// it (as for logging in), then the decision is made again.
    async fn decide(&self, id: &RequestId, verdict: Verdict, comment: Option<String>) -> Answer<RequestOutcome> {
        match self.client()?.decide(id, verdict, comment.clone()).await {
            Err(refusal) if refusal.code() == Some(ErrorCode::StepUpRequired) => {
                tracing::info!("{refusal}: logging in again");
                self.log_in(true).await?;
                self.acted(self.client()?.decide(id, verdict, comment).await)
            }
            decided => self.acted(decided),
        }
    }

    /// Logs in through the browser; `fresh`: the identity provider
    /// authenticates the person again (a step-up to decide).
    async fn log_in(&self, fresh: bool) -> Answer<()> {
        let desktop = self.desktop();
        let base = desktop.broker();
        let trust = desktop.trust().map_err(client_error)?;
        let keeping = Keeping::keyring_or_memory(&base).map_err(client_error)?;
        let mut login = Login::start(&base, &trust).await.map_err(client_error)?;
        if fresh {
            login = login.fresh();
        }
        let app = self.app.clone();
        let prompt = move |prompt: Prompt<'_>| {
            if let Prompt::Browser { url } = prompt {
                let opened = open_browser(url);
                window::emit(&app, AppEvent::login_prompt(LoginPrompt { url: url.to_owned(), opened }));
            }
        };
        let session = tokio::select! {
            session = login.with_browser(prompt) => session.map_err(client_error)?,
            () = desktop.login_cancel.notified() => {
                return Err(refused(ErrorCode::InvalidRequest, "the login was cancelled"));
            }
        };
        if keeping.kind() == SessionKind::Memory {
            tracing::warn!("no keyring: the session lives in this app's memory until it quits");
        }
        let kept = account::keep(&base, trust, session, keeping).await.map_err(client_error)?;
        for note in &kept.notes {
            tracing::warn!("{note}");
        }
        desktop.use_client(&self.app, kept.client, kept.kind);
        Ok(())
    }

    async fn account_now(&self) -> Account {
        let desktop = self.desktop();
        let broker = desktop.broker();
        let (Some(client), Some(kind)) = (desktop.client(), desktop.session_kind()) else {
            return Account { broker, session: None, idp: None, expires_at: None };
        };
        let info = client.session_info().await;
        Account { broker, session: Some(kind), idp: info.idp, expires_at: info.expires_at }
    }
}

impl Commands for App {
    async fn view(&self) -> Answer<AppView> {
        Ok(self.desktop().view())
    }

    async fn settings(&self) -> Answer<Settings> {
        Ok(self.desktop().settings())
    }

    async fn save_settings(&self, settings: Settings) -> Answer<Settings> {
        let start_at_login = settings.start_at_login;
        let saved =
            self.desktop().save_settings(&self.app, settings).map_err(|m| refused(ErrorCode::InvalidRequest, m))?;
        if let (Some(dir), Ok(exe)) = (hourglass_app::autostart::autostart_dir(), std::env::current_exe()) {
            hourglass_app::autostart::apply(&dir, start_at_login, &exe)
                .map_err(|e| refused(ErrorCode::Internal, format!("cannot update the autostart entry: {e}")))?;
        }
        Ok(saved)
    }

    async fn catalog(&self) -> Answer<Offer> {
        Ok(Offer::of(self.client()?.catalog().await.map_err(client_error)?))
    }

    async fn request_access(&self, body: CreateRequest) -> Answer<RequestOutcome> {
        let client = self.client()?;
        // The app's agent keeps a secret the request needs: it runs already.
        let filed = filing::file(&client, self.desktop().agent.paths(), body, || Ok(())).await;
        let filed = self.acted(filed)?;
        for note in &filed.notes {
            tracing::info!("{note}");
        }
        Ok(filed.outcome)
    }

    async fn approve(&self, id: RequestId, comment: Option<String>) -> Answer<RequestOutcome> {
        self.decide(&id, Verdict::Approve, comment).await
    }

    async fn deny(&self, id: RequestId, comment: Option<String>) -> Answer<RequestOutcome> {
        self.decide(&id, Verdict::Deny, comment).await
    }

    async fn cancel(&self, id: RequestId) -> Answer<AccessRequest> {
        self.acted(self.client()?.cancel(&id).await)
    }

    async fn my_channels(&self) -> Answer<Vec<PersonalChannel>> {
        self.client()?.my_channels().await.map_err(client_error)
    }

    async fn choose_channels(&self, muted: Vec<String>) -> Answer<Vec<PersonalChannel>> {
        self.client()?.choose_channels(muted).await.map_err(client_error)
    }

    async fn review(&self, grant: GrantId, verdict: ReviewVerdict, comment: String) -> Answer<Grant> {
        self.acted(self.client()?.review(&grant, verdict, comment).await)
    }

    async fn renew(&self, grant: GrantId, duration: Option<Duration>) -> Answer<RenewOutcome> {
        let client = self.client()?;
        let renewed = match duration {
            Some(duration) => client.renew(&grant, &duration.to_string(), None).await,
            None => hourglass_client::renewal::renew_for_default(&client, &grant, None).await,
        };
        self.acted(renewed)
    }

    async fn revoke(&self, grant: GrantId) -> Answer<Grant> {
        self.acted(self.client()?.revoke(&grant, None).await)
    }

    async fn history(&self, limit: u32) -> Answer<Vec<AuditRecord>> {
        self.client()?.history(limit as usize).await.map_err(client_error)
    }

    async fn shell_snippet(&self, grant: GrantId) -> Answer<String> {
        let credential = self.credential(grant).await?;
        Ok(exports(&credential, Shell::from_environment()))
    }

    async fn open_terminal(&self, grant: GrantId) -> Answer<()> {
        let credential = self.credential(grant).await?;
        let terminal = std::env::var("TERMINAL")
            .ok()
            .filter(|program| !program.is_empty())
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

    async fn hide_window(&self) -> Answer<()> {
        window::hide(&self.app);
        Ok(())
    }

    async fn reconnect(&self) -> Answer<()> {
        let desktop = self.desktop();
        if desktop.client().is_none() {
            desktop.connect(&self.app);
        } else {
            desktop.refresh();
        }
        Ok(())
    }

    /// The client's browser flow, as `hourglass login`. The session goes to
    /// the keyring; with none, it stays in this process (the login page
    /// said so), like the CLI's `--print-token` shell.
    async fn login(&self) -> Answer<Account> {
        self.log_in(false).await?;
        window::show(&self.app);
        Ok(self.account_now().await)
    }
    async fn cancel_login(&self) -> Answer<()> {
        self.desktop().login_cancel.notify_waiters();
        Ok(())
    }

    /// Logs out: the identity provider revokes the refresh token, the
    /// keyring forgets the session, the agent drops every credential it held.
    async fn logout(&self) -> Answer<Account> {
        let desktop = self.desktop();
        if desktop.session_kind() == Some(SessionKind::Keyring) {
            let trust = desktop.trust().map_err(client_error)?;
            let logged_out = account::log_out(&desktop.broker(), &trust).await.map_err(client_error)?;
            for note in &logged_out.notes {
                tracing::info!("{note}");
            }
        }
        desktop.sign_out(&self.app, "You logged out.".to_owned(), false);
        Ok(self.account_now().await)
    }

    async fn account(&self) -> Answer<Account> {
        Ok(self.account_now().await)
    }

    async fn integration(&self) -> Answer<IntegrationStatus> {
        let dirs = UserDirs::from_env().map_err(|e| refused(ErrorCode::Internal, e.to_string()))?;
        Ok(dirs.status(self.desktop().agent.state()))
    }

    async fn install_hook(&self, shell: HookShell) -> Answer<ShellIntegration> {
        let dirs = UserDirs::from_env().map_err(|e| refused(ErrorCode::Internal, e.to_string()))?;
        dirs.install(shell).map_err(|e| refused(ErrorCode::Internal, e.to_string()))
    }
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}
