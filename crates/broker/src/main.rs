//! `hourglassd`: run the broker, check a policy, verify or export the audit log.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use hourglass_broker::server::{self, ServerOptions};
use hourglass_broker::settings::BrokerSettings;
use hourglass_broker::store::Store;
use hourglass_core::audit::{to_hex, verify_chain};
use hourglass_policy::Policy;

#[derive(Parser)]
#[command(
    name = "hourglassd",
    version,
    about = "Hourglass access broker: just-in-time access with approvals, expiry and audit"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker from a policy directory.
    Serve {
        /// The policy directory: hourglass.toml and *.cedar files.
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        /// Overrides [broker] listen.
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Overrides [broker] data_dir.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Run a development broker: demo policy, demo users, printed tokens, HTTPS with a
    /// local CA (DATA/tls/ca.pem, for HOURGLASS_CA). Not for production.
    Dev {
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7300")]
        listen: SocketAddr,
        /// Store, keys and the editable copy of the demo policy.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Use this policy directory instead of the demo policy.
        #[arg(long, value_name = "DIR")]
        config: Option<PathBuf>,
    },
    /// Work with policy directories.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Verify or export the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Print the OpenAPI document of the HTTP API.
    Openapi,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy directory as the broker would, for CI pipelines.
    Check {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the hash chain from the first event and name the first broken link.
    Verify(StoreArgs),
    /// Write the audit log as JSON lines (one event with its hashes per line).
    Export {
        #[command(flatten)]
        store: StoreArgs,
        /// Only events after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct StoreArgs {
    /// The broker's data directory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A policy directory whose [broker] data_dir names the store.
    #[arg(long, value_name = "DIR")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("HOURGLASS_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("hourglassd: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config, listen, data_dir } => {
            let server = server::start(ServerOptions {
                policy_dir: config,
                data_dir,
                listen,
                tls: None,
                dev: false,
                clock: None,
            })
            .await?;
            eprintln!("hourglassd listening on {}", server.url);
            wait_for_signal().await;
            server.stop().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dev { listen, data_dir, config } => run_dev(listen, data_dir, config).await,
        Command::Policy(PolicyCommand::Check { dir }) => Ok(check_policy(&dir)),
        Command::Audit(AuditCommand::Verify(store)) => verify(&store_path(&store)?).await,
        Command::Audit(AuditCommand::Export { store, after }) => export(&store_path(&store)?, after).await,
        Command::Openapi => {
            println!("{}", hourglass_broker::http::openapi_json());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn default_dev_dir() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/state")));
    base.unwrap_or_else(|| PathBuf::from(".")).join("hourglass/dev")
}

async fn run_dev(listen: SocketAddr, data_dir: Option<PathBuf>, config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let data_dir = data_dir.unwrap_or_else(default_dev_dir);
    let policy_dir = match config {
        Some(dir) => dir,
        None => {
            let dir = data_dir.join("policy");
            hourglass_broker::dev::materialize_policy(&dir)?;
            dir
        }
    };
    // HTTPS like production, with a CA of its own that clients pin.
    let tls = hourglass_broker::dev::tls::DevTls::prepare(&data_dir, listen.ip())?;
    let server = server::start(ServerOptions {
        policy_dir: policy_dir.clone(),
        data_dir: Some(data_dir.clone()),
        listen: Some(listen),
        tls: Some(tls.server.clone()),
        dev: true,
        clock: None,
    })
    .await?;
    let mut text = String::new();
    text.push_str("# Hourglass DEVELOPMENT broker: demo identities, no passwords. Not for production.\n");
    text.push_str(&format!("# policy: {} (edit it: changes reload live)\n", policy_dir.display()));
    text.push_str(&format!("# tokens: {}\n", data_dir.join("dev-users.json").display()));
    text.push_str(&format!("# tls: {} is the local CA of this broker's certificate\n", tls.ca_cert.display()));
    text.push_str(&format!("export HOURGLASS_BROKER={}\n", server.url));
    text.push_str(&format!("export HOURGLASS_CA={}\n", tls.ca_cert.display()));
    for (user, token) in &server.dev_tokens {
        text.push_str(&format!("export HOURGLASS_TOKEN={token}  # {} ({})\n", user.id, user.groups.join(", ")));
    }
    // Whoever started us may stop reading stdout: keep serving regardless.
    let mut out = std::io::stdout().lock();
    if out.write_all(text.as_bytes()).and_then(|()| out.flush()).is_err() {
        tracing::warn!("stdout is closed; the dev tokens are in {}", data_dir.join("dev-users.json").display());
    }
    drop(out);
    wait_for_signal().await;
    server.stop().await;
    Ok(ExitCode::SUCCESS)
}

fn check_policy(dir: &Path) -> ExitCode {
    // Provider settings are part of the policy: check them as the broker
    // would, with throwaway provider state so that nothing is written.
    let checked = Policy::load_dir(dir).and_then(|policy| {
        let problems = match scratch_providers(dir) {
            Ok(providers) => providers.check(&policy),
            Err(message) => {
                vec![hourglass_policy::Problem { file: "<providers>".into(), line: None, column: None, message }]
            }
        };
        if problems.is_empty() { Ok(policy) } else { Err(hourglass_policy::Error::Invalid(problems)) }
    });
    match checked {
        Ok(policy) => {
            for warning in &policy.warnings {
                eprintln!("warning: {warning}");
            }
            let roles: usize = policy.resources.values().map(|r| r.roles.len()).sum();
            println!(
                "{}: valid ({} resources, {roles} roles, {} workflows, {} Cedar policies; digest {})",
                dir.display(),
                policy.resources.len(),
                policy.workflows.len(),
                policy.cedar_policy_count,
                &policy.digest[..12]
            );
            ExitCode::SUCCESS
        }
        Err(hourglass_policy::Error::Invalid(problems)) => {
            for problem in &problems {
                eprintln!("{}", prefixed(dir, &problem.to_string()));
            }
            eprintln!("{}: {} problem(s); the policy is refused", dir.display(), problems.len());
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// The standard providers over a temporary data directory.
fn scratch_providers(policy_dir: &Path) -> Result<hourglass_broker::provider::Providers, String> {
    let scratch = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
    let key = hourglass_broker::keys::Ed25519Key::load_or_create(&scratch.path().join("token.pem"))
        .map_err(|e| e.to_string())?;
    let token =
        hourglass_broker::provider::token::TokenProvider::new(std::sync::Arc::new(key), "http://policy-check".into());
    hourglass_broker::provider::Providers::standard(token, scratch.path(), policy_dir)
}

/// Problems name files relative to the policy directory; print them as
/// paths a terminal or an editor can open.
fn prefixed(dir: &Path, problem: &str) -> String {
    format!("{}/{problem}", dir.display().to_string().trim_end_matches('/'))
}

fn store_path(args: &StoreArgs) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &args.data_dir {
        return Ok(dir.join("hourglass.db"));
    }
    let Some(config) = &args.config else { bail!("pass --data-dir or --config") };
    let policy = Policy::load_dir(config).with_context(|| format!("reading {}", config.display()))?;
    let settings = BrokerSettings::from_table(&policy.broker_settings)?;
    let Some(data_dir) = settings.data_dir else { bail!("{} sets no [broker] data_dir", config.display()) };
    Ok(BrokerSettings::resolve(config, &data_dir).join("hourglass.db"))
}

/// Events are read in pages so a long log never sits in memory at once.
const PAGE: usize = 10_000;

async fn verify(path: &Path) -> anyhow::Result<ExitCode> {
    let store = Store::open_read_only(path).await?;
    let mut links = Vec::new();
    let mut after = 0;
    loop {
        let page = store.audit_links(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        links.extend(page);
    }
    match verify_chain(links) {
        Ok((count, head)) => {
            println!("audit chain intact: {count} events, head {}", to_hex(&head));
            Ok(ExitCode::SUCCESS)
        }
        Err(broken) => {
            eprintln!("{broken}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn export(path: &Path, mut after: u64) -> anyhow::Result<ExitCode> {
    let store = Store::open_read_only(path).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    loop {
        let page = store.audit_records(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.event.seq;
        for record in &page {
            serde_json::to_writer(&mut out, record)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut terminate) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
