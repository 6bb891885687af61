//! Handing credentials to shells and tools: `env`, `exec`, the prompt hook,
//! the local agent, the AWS, Kubernetes and git credential helpers, the
//! `.pgpass` block, and filing requests whose secret the client makes.
//! Thin: the logic lives in `hourglass_client::{agent, hook, tools, …}`.

use std::io::{Read, Write};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use anyhow::{Context, anyhow, bail};
use hourglass_client::agent::protocol::{HeldCredential, Selector, Status};
use hourglass_client::agent::{self, AgentClient, AgentErrorCode, Paths};
use hourglass_client::clock::local_now;
use hourglass_client::env::{Shell, exports};
use hourglass_client::feed::Feed;
use hourglass_client::hook::{self, HookShell, Tracked};
use hourglass_client::tools::{aws, git, kube};
use hourglass_client::{Client, Error, pgpass};
use hourglass_client::{credentials, filing};
use hourglass_core::Timestamp;
use hourglass_core::api::{CreateRequest, Credential, RequestOutcome};

use crate::Broker;
use crate::show::Output;

#[derive(clap::Args)]
pub struct AgentArgs {
    /// Start the agent in the background and return once it answers.
    #[arg(long, conflicts_with_all = ["status", "stop"])]
    pub daemon: bool,
    /// Show whether an agent runs for you, and what it holds (no secrets).
    #[arg(long, conflicts_with = "stop")]
    pub status: bool,
    /// Ask the running agent to stop.
    #[arg(long)]
    pub stop: bool,
    /// Run in the foreground but outlive the terminal (how --daemon starts it).
    #[arg(long, hide = true)]
    pub detached: bool,
}

#[derive(clap::Args)]
pub struct EnvArgs {
    /// A grant id, or RESOURCE[/ROLE] for your live grant on it.
    pub grant: String,
    /// bash, zsh, fish or powershell (default: from $SHELL).
    #[arg(long)]
    pub shell: Option<String>,
}

#[derive(clap::Args)]
pub struct ExecArgs {
    /// A grant id, or RESOURCE[/ROLE] for your live grant on it.
    pub grant: String,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(clap::Args)]
pub struct HookArgs {
    /// bash, zsh or fish.
    pub shell: String,
}

#[derive(clap::Args)]
pub struct HookEnvArgs {
    /// bash, zsh or fish.
    pub shell: String,
}

#[derive(clap::Args)]
pub struct CredentialProcessArgs {
    /// A grant id, or RESOURCE[/ROLE] (an exec grant carrying AWS keys).
    pub grant: String,
}

#[derive(clap::Args)]
pub struct KubeCredentialArgs {
    /// A grant id, or RESOURCE[/ROLE] (a token grant).
    pub grant: String,
}

#[derive(clap::Args)]
pub struct GitCredentialArgs {
    /// What git asks: get, store or erase.
    pub action: String,
}

#[derive(clap::Args)]
pub struct PgpassArgs {
    #[arg(value_enum)]
    pub action: PgpassAction,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum PgpassAction {
    /// Add the managed block: the agent keeps your live grants' lines in it.
    Enable,
    /// Remove the block and its lines.
    Disable,
    /// Say whether the block is on.
    Status,
}

fn agent_code(error: &Error) -> Option<AgentErrorCode> {
    match error {
        Error::Agent(error) => Some(error.code),
        _ => None,
    }
}

/// Time left until a local instant, for people.
fn left(until: Timestamp) -> String {
    local_now().until(until).to_string()
}

pub async fn agent(broker: Broker<'_>, args: AgentArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let paths = Paths::from_env();
    if args.status {
        let status = AgentClient::connect(&paths)?.status()?;
        print_status(&status, out);
        return Ok(ExitCode::SUCCESS);
    }
    if args.stop {
        AgentClient::connect(&paths)?.stop()?;
        out.note("hourglass agent: asked to stop");
        return Ok(ExitCode::SUCCESS);
    }
    let client = broker.client()?;
    if args.daemon {
        let status = ensure_agent(&client, &paths, out)?;
        if out.json {
            out.json_value(&status);
        } else {
            println!("hourglass agent pid {} serving {}", status.pid, paths.socket().display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let config = agent::Config {
        feed: Feed::start(client),
        paths,
        ssh_auth_sock: std::env::var_os("SSH_AUTH_SOCK").filter(|p| !p.is_empty()).map(Into::into),
        pgpass: pgpass::path(),
        notes: Arc::new(|text: &str| eprintln!("{text}")),
    };
    agent::run(config, stop_signal(args.detached)).await?;
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C and SIGTERM stop the agent; so does SIGHUP (the terminal closed),
/// unless it runs detached.
#[cfg(unix)]
async fn stop_signal(detached: bool) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hangup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            _ = hangup.recv() => if !detached { return },
        }
    }
}

/// Elsewhere (no Unix signals): Ctrl-C.
#[cfg(not(unix))]
async fn stop_signal(_detached: bool) {
    let _ = tokio::signal::ctrl_c().await;
}

fn print_status(status: &Status, out: &Output) {
    if out.json {
        return out.json_value(status);
    }
    let who = status.principal.as_deref().unwrap_or("(not yet known)");
    let online = if status.online { "online" } else { "offline: deadlines are kept by this machine's clock" };
    println!("hourglass agent pid {} for {} as {who}, {online}", status.pid, status.broker);
    if status.grants.is_empty() {
        println!("  no live grants held");
    }
    for grant in &status.grants {
        let health = match (&grant.problem, grant.complete) {
            (Some(problem), _) => format!("  ({problem})"),
            (None, true) => format!("  {}", grant.env.join(" ")),
            (None, false) => String::new(),
        };
        println!(
            "  {}  {}/{}  {} left{}{health}",
            grant.id,
            grant.resource,
            grant.role,
            left(grant.local_expires_at),
            if grant.ready { "" } else { "  not yet confirmed working" }
        );
    }
    if status.waiting_secrets > 0 {
        println!("  {} secret(s) waiting for their request's approval", status.waiting_secrets);
    }
    println!(
        "  ssh-agent: {}; ~/.pgpass block: {}",
        status.ssh_auth_sock.as_deref().unwrap_or("none"),
        if status.pgpass { "on" } else { "off" }
    );
}

/// The running agent's status; starts one in the background first when
/// none runs. Refuses an agent that follows another broker.
pub fn ensure_agent(client: &Client, paths: &Paths, out: &Output) -> anyhow::Result<Status> {
    match AgentClient::connect(paths).and_then(|mut agent| agent.status()) {
        Ok(status) if status.broker == client.base_url() => return Ok(status),
        Ok(status) => bail!(
            "the running hourglass agent follows {}, not {}: stop it (`hourglass agent --stop`) or use its broker",
            status.broker,
            client.base_url()
        ),
        Err(error) if agent_code(&error) == Some(AgentErrorCode::NotRunning) => {}
        Err(error) => return Err(error.into()),
    }
    paths.prepare()?;
    let mut log = std::fs::OpenOptions::new();
    log.create(true).append(true);
    // The agent's notes are its user's only.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut log, 0o600);
    let log = log.open(paths.log()).with_context(|| format!("opening {}", paths.log().display()))?;
    let exe = std::env::current_exe().context("finding the hourglass executable")?;
    let mut command = std::process::Command::new(exe);
    command.args(["agent", "--detached", "--broker", client.base_url()]);
    if let Some(ca) = client.trust().ca_file() {
        command.arg("--ca").arg(ca);
    }
    command.stdin(Stdio::null()).stdout(log.try_clone().context("agent log")?).stderr(log);
    // Its own process group: Ctrl-C in this terminal does not reach it.
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().context("starting the hourglass agent")?;
    let started = Instant::now();
    loop {
        if let Ok(status) = AgentClient::connect(paths).and_then(|mut agent| agent.status()) {
            out.note(&format!(
                "started the hourglass agent (pid {}) in the background; it holds your live credentials in memory (notes in {}; `hourglass agent --stop` ends it)",
                status.pid,
                paths.log().display()
            ));
            return Ok(status);
        }
        if let Ok(Some(exit)) = child.try_wait() {
            let log = std::fs::read_to_string(paths.log()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            bail!(
                "the hourglass agent did not start ({exit}): {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
            );
        }
        if started.elapsed() > StdDuration::from_secs(15) {
            bail!("the hourglass agent did not answer within 15 s (see {})", paths.log().display());
        }
        std::thread::sleep(StdDuration::from_millis(25));
    }
}

/// Files a request. For PostgreSQL and SSH resources the secret is made
/// here and kept by the agent, started first if none runs
/// (`hourglass_client::filing`).
pub async fn file_request(client: &Client, body: CreateRequest, out: &Output) -> anyhow::Result<RequestOutcome> {
    let paths = Paths::from_env();
    let start_agent = || {
        ensure_agent(client, &paths, out).map(drop).map_err(|error| {
            Error::Config(format!(
                "the secret of this grant is kept by the hourglass agent, which is not available: {error:#}"
            ))
        })
    };
    let filed = filing::file(client, &paths, body, start_agent).await?;
    for note in &filed.notes {
        out.note(note);
    }
    Ok(filed.outcome)
}

/// A credential, from the agent when it runs (completed with the client's
/// own secret, no network), else from the broker by grant id.
async fn credential_for(broker: Broker<'_>, grant: &str) -> anyhow::Result<Credential> {
    let selector = Selector::parse(grant)?;
    Ok(credentials::complete(&Paths::from_env(), selector, || Client::from_env(broker.url, broker.ca)).await?)
}

fn shell_of(name: Option<String>) -> anyhow::Result<Shell> {
    match name {
        Some(name) => {
            Shell::parse(&name).ok_or_else(|| anyhow!("unknown shell \"{name}\": use bash, zsh, fish or powershell"))
        }
        None => Ok(Shell::from_environment()),
    }
}

pub async fn env(broker: Broker<'_>, args: EnvArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let shell = shell_of(args.shell)?;
    let credential = credential_for(broker, &args.grant).await?;
    if out.json {
        out.json_value(&credential);
    } else {
        print!("{}", *zeroize::Zeroizing::new(exports(&credential, shell)));
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the command with the credential in its environment only.
pub async fn exec(broker: Broker<'_>, args: ExecArgs, _out: &Output) -> anyhow::Result<ExitCode> {
    let credential = credential_for(broker, &args.grant).await?;
    let Some((program, rest)) = args.command.split_first() else { bail!("name a command after --") };
    let mut command = std::process::Command::new(program);
    command.args(rest);
    for var in &credential.env {
        command.env(&var.name, &var.value);
    }
    let error = become_command(&mut command);
    drop(credential);
    let error = match error {
        Ok(code) => return Ok(code),
        Err(error) => error,
    };
    if error.kind() == std::io::ErrorKind::NotFound {
        bail!("{program}: command not found");
    }
    Err(anyhow!(error).context(format!("running {program}")))
}

/// On Unix this process becomes the command (`exec`): its exit status and
/// signals are the command's own. Returns only when that failed.
#[cfg(unix)]
fn become_command(command: &mut std::process::Command) -> std::io::Result<ExitCode> {
    Err(std::os::unix::process::CommandExt::exec(command))
}

/// Elsewhere there is no `exec`: the command runs as a child, and its exit
/// code is this process's.
#[cfg(not(unix))]
fn become_command(command: &mut std::process::Command) -> std::io::Result<ExitCode> {
    let status = command.status()?;
    Ok(ExitCode::from(u8::try_from(status.code().unwrap_or(1)).unwrap_or(1)))
}

pub fn hook(args: HookArgs, _out: &Output) -> anyhow::Result<ExitCode> {
    let shell = HookShell::parse(&args.shell)
        .ok_or_else(|| anyhow!("unknown shell \"{}\": the hook supports bash, zsh and fish", args.shell))?;
    let exe = std::env::current_exe().context("finding the hourglass executable")?;
    print!("{}", hook::script(shell, &exe, &Paths::from_env().hook_state()));
    Ok(ExitCode::SUCCESS)
}

/// What the prompt hook runs when the state line or a deadline says
/// something changed. Never touches the network: the agent answers, or
/// (agent down) `HOURGLASS_HOOK` and the clock decide alone.
pub async fn hook_env(args: HookEnvArgs, _out: &Output) -> anyhow::Result<ExitCode> {
    let shell = HookShell::parse(&args.shell)
        .ok_or_else(|| anyhow!("unknown shell \"{}\": the hook supports bash, zsh and fish", args.shell))?;
    let tracked = Tracked::parse(&std::env::var(hook::TRACK_VAR).unwrap_or_default());
    let paths = Paths::from_env();
    let snapshot = match AgentClient::connect_with_timeout(&paths, StdDuration::from_secs(2))
        .and_then(|mut agent| agent.hook_state())
    {
        Ok(snapshot) => Some(snapshot),
        Err(error) => {
            if agent_code(&error) != Some(AgentErrorCode::NotRunning) {
                eprintln!("hourglass hook: {error}");
            }
            None
        }
    };
    let file_state = std::fs::read_to_string(paths.hook_state()).unwrap_or_default();
    let now = local_now().unix_seconds();
    let text = hook::hook_env(shell, &tracked, snapshot.as_ref(), file_state.trim_end(), now);
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes()).context("writing to the shell")?;
    Ok(ExitCode::SUCCESS)
}

/// The helpers answer from the agent only: no network round trip, no
/// broker audit entry per call, and they work offline until the deadline.
fn held_from_agent(grant: &str) -> anyhow::Result<HeldCredential> {
    let selector = Selector::parse(grant)?;
    Ok(AgentClient::connect(&Paths::from_env())?.credential(selector)?)
}

pub async fn credential_process(
    _broker: Broker<'_>,
    args: CredentialProcessArgs,
    _out: &Output,
) -> anyhow::Result<ExitCode> {
    let held = held_from_agent(&args.grant)?;
    let json = aws::credential_process(&held.credential, held.local_expires_at)?;
    println!("{}", *json);
    Ok(ExitCode::SUCCESS)
}

pub async fn kube_credential(_broker: Broker<'_>, args: KubeCredentialArgs, _out: &Output) -> anyhow::Result<ExitCode> {
    let api_version = kube::api_version(std::env::var("KUBERNETES_EXEC_INFO").ok().as_deref())?;
    let held = held_from_agent(&args.grant)?;
    let json = kube::exec_credential(&held.credential, held.local_expires_at, api_version)?;
    println!("{}", *json);
    Ok(ExitCode::SUCCESS)
}

/// git's helper protocol: answers `get` from the agent; `store` and `erase`
/// have nothing to do (the token is not git's to keep). When nothing
/// answers, prints nothing so git asks its next helper.
pub async fn git_credential(_broker: Broker<'_>, args: GitCredentialArgs, _out: &Output) -> anyhow::Result<ExitCode> {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).context("reading git's question")?;
    if args.action != "get" {
        return Ok(ExitCode::SUCCESS);
    }
    let question = git::parse(&input);
    let Some(host) = question.host else { return Ok(ExitCode::SUCCESS) };
    let answer =
        AgentClient::connect(&Paths::from_env()).and_then(|mut agent| agent.git_credential(question.protocol, host));
    match answer {
        Ok(Some(answer)) => {
            if let Some(lines) = git::answer(&answer) {
                std::io::stdout().lock().write_all(lines.as_bytes()).context("answering git")?;
            }
        }
        Ok(None) => {}
        Err(error) => eprintln!("hourglass git-credential: {error}"),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn pgpass(_broker: Broker<'_>, args: PgpassArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let path = pgpass::path().context("neither PGPASSFILE nor HOME is set: no .pgpass to manage")?;
    let paths = Paths::from_env();
    let agent = AgentClient::connect(&paths);
    let running = agent.is_ok();
    match (args.action, agent) {
        (PgpassAction::Status, _) => {}
        (action, Ok(mut agent)) => agent.pgpass(matches!(action, PgpassAction::Enable))?,
        (PgpassAction::Enable, Err(_)) => {
            pgpass::enable(&path).with_context(|| format!("updating {}", path.display()))?;
        }
        (PgpassAction::Disable, Err(_)) => {
            pgpass::disable(&path).with_context(|| format!("updating {}", path.display()))?;
        }
    }
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let enabled = pgpass::is_enabled(&text);
    if out.json {
        out.json_value(&serde_json::json!({ "path": path, "enabled": enabled, "agent_running": running }));
    } else if enabled {
        println!(
            "the managed block in {} is on: the agent keeps your live PostgreSQL grants' lines there",
            path.display()
        );
        if !running {
            println!("(the agent is not running: lines appear once it runs and holds a grant)");
        }
    } else {
        println!("the managed block in {} is off", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
