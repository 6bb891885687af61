//! `hourglass login` and `logout`: OpenID Connect through the broker's
//! configured issuer, the session kept in the OS keyring (or, with
//! `--print-token`, only in the shell that evaluates the output).

use std::process::ExitCode;

use anyhow::Context;
use hourglass_client::Client;
use hourglass_client::login::{Login, Prompt, open_browser};
use hourglass_client::session::SessionStore;

use crate::Broker;
use crate::show::Output;

#[derive(clap::Args)]
pub struct LoginArgs {
    /// Use the device authorization grant (for machines without a browser).
    #[arg(long)]
    pub device: bool,
    /// Print the login URL instead of opening the system browser.
    #[arg(long)]
    pub no_browser: bool,
    /// Keep the session out of the keyring: print `export HOURGLASS_TOKEN=…`
    /// for `eval "$(hourglass login --print-token)"`; it lives only in that shell.
    #[arg(long)]
    pub print_token: bool,
}

#[derive(clap::Args)]
pub struct LogoutArgs {}

pub async fn login(broker: Broker<'_>, args: LoginArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let base = broker.url();
    let trust = broker.trust()?;
    // Know before the browser dance whether the session can be kept.
    let store = if args.print_token {
        None
    } else {
        let store = SessionStore::for_broker(&base)?;
        store.check()?;
        Some(store)
    };
    let login = Login::start(&base, &trust).await.with_context(|| format!("cannot log in to {base}"))?;
    if login.config().dev {
        out.note("This broker runs `hourglassd dev`: its issuer is a DEVELOPMENT user picker, no passwords.");
    }
    let no_browser = args.no_browser;
    let prompt = move |prompt: Prompt<'_>| show_prompt(prompt, no_browser);
    let session = if args.device { login.with_device(prompt).await? } else { login.with_browser(prompt).await? };

    let client = Client::with_trust(&base, trust.clone(), &session.session_token)?;
    let me = client.whoami().await?;
    match store {
        Some(store) => {
            store.save(&session)?;
            out.logged_in(&me, &client.session_info().await, login.metadata().issuer.as_str(), true);
        }
        None => {
            // The refresh token is not kept anywhere: end it at the IdP.
            if let Err(error) = hourglass_client::login::revoke(&session, &trust).await {
                out.note(&format!("note: the identity provider's refresh token was not revoked: {error}"));
            }
            println!("export HOURGLASS_TOKEN={}", session.session_token);
            out.logged_in(&me, &client.session_info().await, login.metadata().issuer.as_str(), false);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Tells the user what to do; opens the system browser unless asked not to.
/// Everything goes to stderr, so that `--print-token` output stays clean.
fn show_prompt(prompt: Prompt<'_>, no_browser: bool) {
    match prompt {
        Prompt::Browser { url } => {
            if no_browser || !open_browser(url) {
                eprintln!("Open this URL in a browser to log in:\n\n  {url}\n");
            } else {
                eprintln!("Your browser was opened to log in. If it was not, open this URL:\n\n  {url}\n");
            }
            eprintln!("Waiting for the login to complete…");
        }
        Prompt::Device { verification_uri, verification_uri_complete, user_code } => {
            eprintln!("On any device, open\n\n  {verification_uri}\n\nand enter the code\n\n  {user_code}\n");
            if let Some(complete) = verification_uri_complete {
                eprintln!("(or open {complete} directly)");
            }
            eprintln!("Waiting for the login to complete…");
        }
    }
}

pub async fn logout(broker: Broker<'_>, _args: LogoutArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let base = broker.url();
    let trust = broker.trust()?;
    let store = SessionStore::for_broker(&base)?;
    let Some(session) = store.load()? else {
        out.note(&format!("Not logged in to {base}; nothing to do."));
        return Ok(ExitCode::SUCCESS);
    };
    match hourglass_client::login::revoke(&session, &trust).await {
        Ok(true) => out.note("The identity provider revoked the refresh token."),
        Ok(false) => {}
        Err(error) => out.note(&format!("note: the refresh token was not revoked at the identity provider: {error}")),
    }
    store.delete()?;
    out.note(&format!("Logged out of {base}: the session is removed from the keyring."));
    Ok(ExitCode::SUCCESS)
}
