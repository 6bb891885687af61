//! `hourglass login` and `logout`: OpenID Connect through the broker's
//! configured issuer, the session kept in the OS keyring (or, with
//! `--print-token`, only in the shell that evaluates the output).

use std::process::ExitCode;

use anyhow::Context;
use hourglass_client::Client;
use hourglass_client::account::{self, Keeping};
use hourglass_client::login::{Login, Prompt, open_browser};
use zeroize::Zeroizing;

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
    /// Authenticate again at the identity provider even if it remembers
    /// you: what deciding a request may need (policy's approval_max_auth_age).
    #[arg(long)]
    pub fresh: bool,
}

#[derive(clap::Args)]
pub struct LogoutArgs {}

pub async fn login(broker: Broker<'_>, args: LoginArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let done = log_in(broker, &args, out).await?;
    if !done.in_keyring {
        // The session lives in the shell that evaluates this line only.
        println!("export HOURGLASS_TOKEN={}", done.token.as_str());
    }
    let session = done.client.session_info().await;
    out.logged_in(&done.me, &session, &done.issuer, done.in_keyring);
    Ok(ExitCode::SUCCESS)
}

/// A login done: the client with its session, and what to tell the user.
struct LoggedIn {
    client: Client,
    me: hourglass_core::api::WhoAmI,
    issuer: String,
    in_keyring: bool,
    token: Zeroizing<String>,
}

async fn log_in(broker: Broker<'_>, args: &LoginArgs, out: &Output) -> anyhow::Result<LoggedIn> {
    let base = broker.url();
    let trust = broker.trust()?;
    // Know before the browser dance whether the session can be kept.
    let keeping = if args.print_token { Keeping::Memory } else { Keeping::keyring(&base)? };
    let mut login = Login::start(&base, &trust).await.with_context(|| format!("cannot log in to {base}"))?;
    if args.fresh {
        login = login.fresh();
    }
    if login.config().dev {
        out.note("This broker runs `hourglassd dev`: its issuer is a DEVELOPMENT user picker, no passwords.");
    }
    let no_browser = args.no_browser;
    let prompt = move |prompt: Prompt<'_>| show_prompt(prompt, no_browser);
    let session = if args.device { login.with_device(prompt).await? } else { login.with_browser(prompt).await? };

    let token = Zeroizing::new(session.session_token.clone());
    let me = Client::with_trust(&base, trust.clone(), &token)?.whoami().await?;
    let kept = account::keep(&base, trust, session, keeping).await?;
    for note in &kept.notes {
        out.note(note);
    }
    let in_keyring = kept.kind == hourglass_client::session::SessionKind::Keyring;
    Ok(LoggedIn { client: kept.client, me, issuer: login.metadata().issuer.clone(), in_keyring, token })
}

/// After the broker refused a decision for want of a fresh login
/// (`step_up_required`): logs in again at the identity provider, the
/// person authenticating anew, keeps the new session and returns a client
/// with it, for the caller to decide again. A session from
/// `HOURGLASS_TOKEN` cannot be replaced from here: the user is told how.
pub async fn step_up(broker: Broker<'_>, refusal: &hourglass_client::Error, out: &Output) -> anyhow::Result<Client> {
    if std::env::var("HOURGLASS_TOKEN").is_ok_and(|token| !token.trim().is_empty()) {
        anyhow::bail!(
            "{refusal}\nYour session comes from HOURGLASS_TOKEN: log in again with \
             eval \"$(hourglass login --fresh --print-token)\", then decide again"
        );
    }
    out.note(&format!("{refusal}\nLogging in again at your identity provider…"));
    let args = LoginArgs { device: false, no_browser: false, print_token: false, fresh: true };
    let done = log_in(broker, &args, out).await?;
    out.note(&format!("Logged in again as {}; deciding.", done.me.principal.id));
    Ok(done.client)
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
    let logged_out = account::log_out(&base, &broker.trust()?).await?;
    if !logged_out.was_logged_in {
        out.note(&format!("Not logged in to {base}; nothing to do."));
        return Ok(ExitCode::SUCCESS);
    }
    for note in &logged_out.notes {
        out.note(note);
    }
    out.note(&format!("Logged out of {base}: the session is removed from the keyring."));
    Ok(ExitCode::SUCCESS)
}
