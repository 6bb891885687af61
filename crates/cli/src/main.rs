//! `hourglass`: ask for access, decide teammates' requests, use and end grants.
//! Thin: every call goes through `hourglass-client`. This file parses
//! arguments and runs the access commands; `login.rs` logs in and out,
//! `inject.rs` hands credentials to shells and tools (through the local
//! agent), `show.rs` prints results and `wait.rs` follows a request.

mod inject;
mod login;
mod show;
mod wait;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use clap::{Parser, Subcommand};
use hourglass_client::{Client, Trust, broker_url};
use hourglass_core::api::{CreateRequest, ErrorCode, RevokeMatchingBody};
use hourglass_core::review::ReviewVerdict;
use hourglass_core::{GrantId, RequestId, RequestState, Verdict};

use crate::show::Output;

#[derive(Parser)]
#[command(name = "hourglass", version, about = "Just-in-time access: request, approve, renew, revoke, use")]
struct Cli {
    /// The broker's URL (default: $HOURGLASS_BROKER, else https://127.0.0.1:7300).
    #[arg(long, global = true, value_name = "URL")]
    broker: Option<String>,
    /// Trust only this CA (PEM) for the broker's certificate, not the
    /// system's roots (default: $HOURGLASS_CA, else the system's roots).
    #[arg(long, global = true, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Who the broker thinks you are.
    Whoami,
    /// What you can request: resources, roles, durations, approvals.
    Resources,
    /// Ask for a role on a resource for a while.
    Request {
        resource: String,
        #[arg(long)]
        role: String,
        /// How long, e.g. 30m or 1h30m. The clock starts when access is granted.
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long, value_name = "ID")]
        ticket: Option<String>,
        /// Access at once under a break-glass policy (flagged for review).
        #[arg(long)]
        break_glass: bool,
        /// Wait until the request is decided and the grant is ready.
        #[arg(long)]
        wait: bool,
    },
    /// Your requests, and teammates' requests waiting for your decision.
    Requests,
    /// Approve a teammate's request.
    Approve {
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Deny a teammate's request.
    Deny {
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Withdraw your pending request.
    Cancel { id: String },
    /// Break-glass grants waiting for your review.
    Reviews,
    /// Review a break-glass grant after the fact: was taking it justified?
    Review {
        grant: String,
        #[arg(long, value_enum)]
        verdict: ReviewChoice,
        /// Why (required).
        #[arg(long)]
        comment: String,
    },
    /// Your live grants.
    Grants {
        /// Include grants that have ended.
        #[arg(long)]
        ended: bool,
        /// Everyone's grants that policy lets you see.
        #[arg(long)]
        all: bool,
    },
    /// Extend a grant: it runs DURATION from now (approved again if policy says so).
    Renew {
        grant: String,
        /// How long from now (default: the role's default duration).
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        /// Wait for the renewal's approval when it needs one.
        #[arg(long)]
        wait: bool,
    },
    /// End a grant now; or, with --resource, every live grant on a resource
    /// (narrowed by --role and --owner), as in an incident.
    Revoke {
        #[arg(required_unless_present = "resource", conflicts_with = "resource")]
        grant: Option<String>,
        /// Revoke every live grant on this resource (needs --reason).
        #[arg(long, requires = "reason")]
        resource: Option<String>,
        /// With --resource: only grants of this role.
        #[arg(long, requires = "resource")]
        role: Option<String>,
        /// With --resource: only this principal's grants.
        #[arg(long, requires = "resource")]
        owner: Option<String>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Log in with your company identity (OpenID Connect); the session is kept in the OS keyring.
    Login(login::LoginArgs),
    /// Forget the session: removes it from the keyring.
    Logout(login::LogoutArgs),
    /// Run the local agent that holds your live credentials and serves them to shells and tools.
    Agent(inject::AgentArgs),
    /// Print shell commands that set a grant's credentials: eval "$(hourglass env GRANT)".
    Env(inject::EnvArgs),
    /// Run a command with a grant's credentials in its environment only: hourglass exec GRANT -- CMD...
    Exec(inject::ExecArgs),
    /// Print the prompt hook for a shell: eval "$(hourglass hook bash)" in ~/.bashrc.
    Hook(inject::HookArgs),
    /// What the prompt hook runs when grants changed (not for direct use).
    #[command(hide = true)]
    HookEnv(inject::HookEnvArgs),
    /// AWS credential_process: prints a grant's AWS credentials as the SDKs expect.
    CredentialProcess(inject::CredentialProcessArgs),
    /// Kubernetes exec credential plugin: prints an ExecCredential for kubectl.
    KubeCredential(inject::KubeCredentialArgs),
    /// git credential helper: `git config credential.helper "hourglass git-credential"`.
    GitCredential(inject::GitCredentialArgs),
    /// Manage the opt-in block in ~/.pgpass that database IDEs read.
    Pgpass(inject::PgpassArgs),
    /// Your access history from the audit log.
    History {
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Print a demo user's token from a running `hourglassd dev` (development only).
    DevToken {
        /// alice, bob, carol, dave or erin.
        user: String,
        /// The dev broker's data directory (default: the one `hourglassd dev` uses).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
}

/// A review's verdict, as typed.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ReviewChoice {
    Justified,
    Unjustified,
}

fn main() -> ExitCode {
    // Read the local offset before any thread exists: afterwards the time
    // crate refuses to (the environment could change under it).
    let offset = time::UtcOffset::current_local_offset().unwrap_or(time::UtcOffset::UTC);
    let cli = Cli::parse();
    let output = Output::new(cli.json, offset);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hourglass: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, &output)) {
        Ok(code) => code,
        Err(error) => {
            output.error(&error);
            ExitCode::FAILURE
        }
    }
}

/// The broker a command talks to, and the CA pinned for it (`--ca`).
#[derive(Clone, Copy)]
pub(crate) struct Broker<'a> {
    pub url: Option<&'a str>,
    pub ca: Option<&'a Path>,
}

impl Broker<'_> {
    /// `--broker`, else `HOURGLASS_BROKER`, else the default.
    pub fn url(self) -> String {
        broker_url(self.url)
    }

    /// `--ca`, else `HOURGLASS_CA`, else the system's roots.
    pub fn trust(self) -> anyhow::Result<Trust> {
        Ok(Trust::for_broker(&self.url(), self.ca)?)
    }

    /// A client of this broker with the session from the environment or the keyring.
    pub fn client(self) -> anyhow::Result<Client> {
        Ok(Client::from_env(self.url, self.ca)?)
    }
}

/// Approves or denies; where policy asks for a fresher login to decide,
/// logs in again at the identity provider and decides again.
async fn decide(
    client: &hourglass_client::Client,
    broker: Broker<'_>,
    out: &Output,
    id: &RequestId,
    verdict: Verdict,
    comment: Option<String>,
) -> anyhow::Result<hourglass_core::api::RequestOutcome> {
    match client.decide(id, verdict, comment.clone()).await {
        Err(refusal) if refusal.code() == Some(ErrorCode::StepUpRequired) => {
            Ok(login::step_up(broker, &refusal, out).await?.decide(id, verdict, comment).await?)
        }
        decided => Ok(decided?),
    }
}

fn request_id(text: &str) -> anyhow::Result<RequestId> {
    RequestId::parse(text).map_err(|error| anyhow!(error))
}

pub(crate) fn grant_id(text: &str) -> anyhow::Result<GrantId> {
    GrantId::parse(text).map_err(|error| anyhow!(error))
}

async fn run(cli: Cli, out: &Output) -> anyhow::Result<ExitCode> {
    // Commands that do not need a session first.
    let broker = Broker { url: cli.broker.as_deref(), ca: cli.ca.as_deref() };
    let command = match cli.command {
        Command::DevToken { user, data_dir } => return dev_token(&user, data_dir.as_deref()),
        Command::Login(args) => return login::login(broker, args, out).await,
        Command::Logout(args) => return login::logout(broker, args, out).await,
        Command::Agent(args) => return inject::agent(broker, args, out).await,
        Command::Env(args) => return inject::env(broker, args, out).await,
        Command::Exec(args) => return inject::exec(broker, args, out).await,
        Command::Hook(args) => return inject::hook(args, out),
        Command::HookEnv(args) => return inject::hook_env(args, out).await,
        Command::CredentialProcess(args) => return inject::credential_process(broker, args, out).await,
        Command::KubeCredential(args) => return inject::kube_credential(broker, args, out).await,
        Command::GitCredential(args) => return inject::git_credential(broker, args, out).await,
        Command::Pgpass(args) => return inject::pgpass(broker, args, out).await,
        command => command,
    };
    // Every other command talks to the broker.
    let client = broker.client()?;
    match command {
        Command::Whoami => out.whoami(&client.whoami().await?, &client.session_info().await),
        Command::Resources => out.catalog(&client.catalog().await?),
        Command::Request { resource, role, duration, reason, ticket, break_glass, wait } => {
            let body = CreateRequest { resource, role, duration, reason, ticket, break_glass, client_material: None };
            // PostgreSQL and SSH: the secret is made here and kept by the agent.
            let outcome = inject::file_request(&client, body, out).await?;
            if wait && outcome.request.state == RequestState::Pending {
                out.outcome(&outcome, true);
                let done = wait::until_decided(&client, out, &outcome.request, None).await?;
                out.outcome(&done, false);
                return Ok(exit_for(done.request.state));
            }
            out.outcome(&outcome, false);
        }
        Command::Requests => out.requests(&client.requests().await?),
        Command::Approve { id, comment } => {
            out.outcome(&decide(&client, broker, out, &request_id(&id)?, Verdict::Approve, comment).await?, false);
        }
        Command::Deny { id, comment } => {
            out.outcome(&decide(&client, broker, out, &request_id(&id)?, Verdict::Deny, comment).await?, false);
        }
        Command::Cancel { id } => out.request(&client.cancel(&request_id(&id)?).await?),
        Command::Reviews => out.reviews(&client.reviews().await?),
        Command::Review { grant, verdict, comment } => {
            let verdict = match verdict {
                ReviewChoice::Justified => ReviewVerdict::Justified,
                ReviewChoice::Unjustified => ReviewVerdict::Unjustified,
            };
            out.reviewed(&client.review(&grant_id(&grant)?, verdict, comment).await?);
        }
        Command::Grants { ended, all } => out.grants(&client.grants(ended, all).await?),
        Command::Renew { grant, duration, reason, wait } => {
            let grant = grant_id(&grant)?;
            let renewed = match duration {
                Some(duration) => client.renew(&grant, &duration, reason).await?,
                None => hourglass_client::renewal::renew_for_default(&client, &grant, reason).await?,
            };
            if wait && renewed.request.state == RequestState::Pending {
                out.renewal(&renewed);
                let done = wait::until_decided(&client, out, &renewed.request, Some(renewed.grant.expires_at)).await?;
                out.outcome(&done, false);
                return Ok(exit_for(done.request.state));
            }
            out.renewal(&renewed);
        }
        Command::Revoke { grant: Some(grant), reason, .. } => {
            out.revoked(&client.revoke(&grant_id(&grant)?, reason).await?);
        }
        Command::Revoke { grant: None, resource, role, owner, reason } => {
            let body = RevokeMatchingBody {
                resource: resource.unwrap_or_default(),
                role,
                owner,
                reason: reason.unwrap_or_default(),
            };
            out.revoked_all(&client.revoke_matching(&body).await?.grants);
        }
        Command::History { limit } => out.history(&client.history(limit).await?),
        _ => {} // answered above
    }
    Ok(ExitCode::SUCCESS)
}

/// Denied, cancelled or expired requests end a `--wait` with a failure.
fn exit_for(state: RequestState) -> ExitCode {
    if state == RequestState::Approved { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn dev_token(user: &str, data_dir: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let path = match data_dir {
        Some(dir) => dir.join("dev-users.json"),
        None => {
            let base = std::env::var_os("XDG_STATE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/state")))
                .context("neither XDG_STATE_HOME nor HOME is set: pass --data-dir")?;
            base.join("hourglass/dev/dev-users.json")
        }
    };
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("reading {} (is `hourglassd dev` running with that data directory?)", path.display())
    })?;
    let tokens: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&text).with_context(|| format!("{} is not a dev token file", path.display()))?;
    let token = tokens.get(user).ok_or_else(|| {
        anyhow!("no dev user \"{user}\" (known: {})", tokens.keys().cloned().collect::<Vec<_>>().join(", "))
    })?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}
