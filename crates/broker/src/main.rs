//! `hourglassd`: run the broker, check a policy, verify or export the audit log.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use hourglass_broker::checkpoints::{self, CheckpointCheck};
use hourglass_broker::clock::{Clock, SystemClock};
use hourglass_broker::server::{self, ServerOptions};
use hourglass_broker::settings::BrokerSettings;
use hourglass_broker::siem::settings::Format;
use hourglass_broker::store::{OpenOptions, Store, StoreLocation};
use hourglass_core::audit::{ChainVerifier, to_hex};
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
    /// List or rotate the broker's signing keys (in its store).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Print the OpenAPI document of the HTTP API.
    Openapi,
    /// Move a broker's SQLite store to PostgreSQL, for running several
    /// replicas: history, live grants, pending requests and keys. The broker
    /// must be stopped; the target must be empty. The audit chain is
    /// verified on the target afterwards.
    MigrateStore {
        /// The store to move: sqlite:PATH (its broker stopped).
        #[arg(long, value_name = "STORE")]
        from: String,
        /// Where to: a PostgreSQL URL (an empty database). Without it,
        /// HOURGLASS_STORE (keeps a password off the command line).
        #[arg(long, value_name = "STORE")]
        to: Option<String>,
        /// The source's store key (default: keys/store.key beside the
        /// store); every replica on the target needs this same key.
        #[arg(long, value_name = "FILE")]
        store_key: Option<PathBuf>,
    },
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
enum KeysCommand {
    /// Every signing key in the store: what it signs, when, and until when
    /// what it signed verifies.
    List(StoreArgs),
    /// Replace a signing key now (a suspected leak, a policy): the new key
    /// signs after --in (time for every replica to learn it), the old one
    /// stops signing then and verifies through its overlap. With a SQLite
    /// store, stop the broker first.
    Rotate {
        /// The policy directory of the broker (its [broker] table names the
        /// store, the store key and the rotation).
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        /// Overrides [broker] data_dir.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// session or grant-token.
        #[arg(long)]
        purpose: String,
        /// How soon the new key signs, in seconds (replicas read keys every 30 s).
        #[arg(long, value_name = "SECONDS", default_value_t = 60)]
        r#in: u64,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the hash chain from the first event and name the first broken
    /// link; check it against the broker's signed checkpoints (a store cut
    /// short or rewritten since fails).
    Verify(VerifyArgs),
    /// Write the audit log as JSON lines (one event with its hashes per line).
    Export {
        #[command(flatten)]
        store: StoreArgs,
        /// Only events after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// jsonl (the records as stored, with their hashes), ocsf (OCSF
        /// 1.1 events) or ecs (Elastic Common Schema documents).
        #[arg(long, default_value = "jsonl", value_parser = ["jsonl", "ocsf", "ecs"])]
        format: String,
    },
}

#[derive(Args)]
struct VerifyArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The checkpoints file (default: DATA/audit-checkpoints.jsonl, or the
    /// [broker] audit_checkpoints of --config).
    #[arg(long, value_name = "FILE")]
    checkpoints: Option<PathBuf>,
    /// The key that signed them: its .pub file or the private key (default:
    /// beside the broker's checkpoint key).
    #[arg(long, value_name = "FILE")]
    checkpoint_key: Option<PathBuf>,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct StoreArgs {
    /// The broker's data directory (its SQLite store).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A policy directory whose [broker] store (or data_dir) names the store;
    /// HOURGLASS_STORE overrides it, as for `serve`.
    #[arg(long, value_name = "DIR")]
    config: Option<PathBuf>,
    /// The store itself: sqlite:PATH or a PostgreSQL URL (a password in it
    /// is better passed in HOURGLASS_STORE with --config).
    #[arg(long, value_name = "STORE")]
    store: Option<String>,
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
                store: None,
            })
            .await?;
            eprintln!("hourglassd listening on {}", server.url);
            wait_for_signal().await;
            server.stop().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dev { listen, data_dir, config } => run_dev(listen, data_dir, config).await,
        Command::Policy(PolicyCommand::Check { dir }) => Ok(check_policy(&dir).await),
        Command::Audit(AuditCommand::Verify(args)) => {
            let checkpoints = checkpoint_check(&args)?;
            verify(&open_store(&args.store).await?, checkpoints).await
        }
        Command::Audit(AuditCommand::Export { store, after, format }) => {
            export(&open_store(&store).await?, after, &format).await
        }
        Command::MigrateStore { from, to, store_key } => migrate_store(&from, to, store_key).await,
        Command::Keys(KeysCommand::List(store)) => list_keys(&open_store(&store).await?).await,
        Command::Keys(KeysCommand::Rotate { config, data_dir, purpose, r#in }) => {
            rotate_key(&config, data_dir, &purpose, r#in).await
        }
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
        store: None,
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

async fn check_policy(dir: &Path) -> ExitCode {
    // Provider settings are part of the policy: check them as the broker
    // would, with throwaway provider state so that nothing is written.
    let providers = scratch_providers(dir).await;
    let checked = Policy::load_dir(dir).and_then(|policy| {
        let problems = match providers {
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

/// The standard providers over a throwaway store and keys: `check` reads
/// settings only, nothing is kept.
async fn scratch_providers(policy_dir: &Path) -> Result<hourglass_broker::provider::Providers, String> {
    use hourglass_broker::keys::{Ed25519Key, KeyPurpose, KeySet};
    let scratch = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
    let store = Store::open_sqlite(&scratch.path().join("hourglass.db")).await.map_err(|e| e.to_string())?;
    let token_keys = KeySet::single(KeyPurpose::GrantToken, Ed25519Key::generate().map_err(|e| e.to_string())?);
    let token = hourglass_broker::provider::token::TokenProvider::new(
        std::sync::Arc::new(token_keys),
        "http://policy-check".into(),
    );
    let ssh_ca = Ed25519Key::generate().map_err(|e| e.to_string())?;
    hourglass_broker::provider::Providers::standard(token, &ssh_ca, store, scratch.path(), policy_dir).await
}

/// Problems name files relative to the policy directory; print them as
/// paths a terminal or an editor can open.
fn prefixed(dir: &Path, problem: &str) -> String {
    format!("{}/{problem}", dir.display().to_string().trim_end_matches('/'))
}

/// The store the arguments name, opened for reading only (brokers may be
/// running on it).
async fn open_store(args: &StoreArgs) -> anyhow::Result<Store> {
    let (location, options) = if let Some(dir) = &args.data_dir {
        (StoreLocation::sqlite(dir.join("hourglass.db")), OpenOptions::default())
    } else if let Some(text) = &args.store {
        (StoreLocation::parse(text, Path::new("."))?, OpenOptions::default())
    } else {
        let Some(config) = &args.config else { bail!("pass --data-dir, --config or --store") };
        let policy = Policy::load_dir(config).with_context(|| format!("reading {}", config.display()))?;
        let settings = BrokerSettings::from_table(&policy.broker_settings)?;
        let data_dir = settings.data_dir.as_ref().map(|dir| BrokerSettings::resolve(config, dir));
        let location = match (&settings.store, &data_dir, std::env::var_os("HOURGLASS_STORE")) {
            (None, None, None) => bail!("{} sets neither [broker] store nor data_dir", config.display()),
            _ => settings.store_location(config, data_dir.as_deref().unwrap_or(Path::new(".")))?,
        };
        (location, settings.store_options(config)?)
    };
    Ok(Store::open_read_only(&location, &options).await?)
}

/// Events are read in pages so a long log never sits in memory at once.
const PAGE: usize = 10_000;

/// The checkpoints `audit verify` checks against: the files the arguments
/// name, or the broker's own beside its store; None when there are none.
fn checkpoint_check(args: &VerifyArgs) -> anyhow::Result<Option<CheckpointCheck>> {
    let defaults = match (&args.store.data_dir, &args.store.config) {
        (Some(dir), _) => Some((dir.join("keys/audit-checkpoint.pem"), dir.join("audit-checkpoints.jsonl"))),
        (None, Some(config)) => {
            let policy = Policy::load_dir(config).with_context(|| format!("reading {}", config.display()))?;
            let settings = BrokerSettings::from_table(&policy.broker_settings)?;
            let data_dir = settings.data_dir.as_ref().map(|dir| BrokerSettings::resolve(config, dir));
            data_dir.map(|data_dir| settings.checkpoint_files(config, &data_dir))
        }
        (None, None) => None,
    };
    let file = args.checkpoints.clone().or_else(|| defaults.as_ref().map(|(_, file)| file.clone()));
    let Some(file) = file.filter(|file| args.checkpoints.is_some() || file.exists()) else {
        eprintln!(
            "no audit checkpoints found: the chain is checked, but not for a cut end or a rewrite (pass --checkpoints)"
        );
        return Ok(None);
    };
    let key = match (&args.checkpoint_key, &defaults) {
        (Some(key), _) => key.clone(),
        (None, Some((key, _))) => {
            let public = checkpoints::public_key_file(key);
            if public.exists() { public } else { key.clone() }
        }
        (None, None) => bail!("pass --checkpoint-key: the key that signed {}", file.display()),
    };
    let public = checkpoints::read_public_key(&key).map_err(|e| anyhow!(e))?;
    let all = checkpoints::read_checkpoints(&file, &public).map_err(|e| anyhow!(e))?;
    Ok(Some(CheckpointCheck::new(all)))
}

/// Walks the whole chain page by page, holding one page at a time, and
/// checks it against the checkpoints.
async fn verify(store: &Store, checkpoints: Option<CheckpointCheck>) -> anyhow::Result<ExitCode> {
    let mut verifier = ChainVerifier::default();
    let mut after = 0;
    loop {
        let page = store.audit_links(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for link in &page {
            if let Err(broken) = verifier.push(link) {
                eprintln!("{broken}");
                return Ok(ExitCode::FAILURE);
            }
            if let Some(rewritten) = checkpoints.as_ref().and_then(|check| check.link(link.seq, &link.hash)) {
                eprintln!("{rewritten}");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    let (count, head) = verifier.head();
    if let Some(truncated) = checkpoints.as_ref().and_then(|check| check.end(count)) {
        eprintln!("{truncated}");
        return Ok(ExitCode::FAILURE);
    }
    match checkpoints {
        Some(check) => println!(
            "audit chain intact: {count} events, head {}; {} signed checkpoints agree",
            to_hex(&head),
            check.len()
        ),
        None => println!("audit chain intact: {count} events, head {}", to_hex(&head)),
    }
    Ok(ExitCode::SUCCESS)
}

async fn export(store: &Store, mut after: u64, format: &str) -> anyhow::Result<ExitCode> {
    let format =
        Format::parse(format).ok_or_else(|| anyhow::anyhow!("unknown format {format:?}: ocsf, ecs or jsonl"))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    loop {
        let page = store.audit_records(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.event.seq;
        for record in &page {
            out.write_all(format.render(record).as_bytes())?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

async fn migrate_store(from: &str, to: Option<String>, store_key: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    use hourglass_broker::keys::{RotationPolicy, StoreKey};
    let here = std::env::current_dir()?;
    let source_location = StoreLocation::parse(from, &here)?;
    let StoreLocation::Sqlite(path) = &source_location else { bail!("--from must be a SQLite store (sqlite:PATH)") };
    let to = match to.or_else(|| std::env::var("HOURGLASS_STORE").ok()) {
        Some(to) => to,
        None => bail!("pass --to postgres://… or set HOURGLASS_STORE"),
    };
    let target_location = StoreLocation::parse(&to, &here)?;
    if !matches!(target_location, StoreLocation::Postgres(_)) {
        bail!("--to must be a PostgreSQL store (postgres://USER@HOST/DATABASE)");
    }
    if !path.exists() {
        bail!("there is no store at {}", path.display());
    }
    // Opened as a broker opens it: refused while its broker runs (its lock).
    let source = Store::open(&source_location, &OpenOptions::default())
        .await
        .context("the source store cannot be moved while a broker uses it")?;
    let data_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let key_path = store_key.unwrap_or_else(|| data_dir.join("keys/store.key"));
    let key = std::sync::Arc::new(StoreKey::read_or_create(&key_path)?);
    // Keys an older broker kept as files move into the store first.
    let now = SystemClock.now();
    let rotation = RotationPolicy {
        period: std::time::Duration::from_secs(30 * 24 * 3600),
        publish_ahead: std::time::Duration::from_secs(24 * 3600),
        overlap: std::time::Duration::from_secs(24 * 3600),
    };
    server::SigningKeys::open_with(&source, key, rotation, &data_dir, now).await?;
    let target = Store::open(&target_location, &OpenOptions::default()).await?;
    if !target.is_empty().await? {
        bail!("{} is not empty: hourglassd migrate-store moves a store into an empty database only", target.describe());
    }
    let copied = source.copy_into(&target).await?;
    target.retire().await?;
    for (table, rows) in &copied.rows {
        println!("{table}: {rows} rows");
    }
    let verified = verify(&target, None).await?;
    if verified != ExitCode::SUCCESS {
        bail!("the audit chain does not verify on the target: it was not moved intact");
    }
    println!(
        "moved {} to {}. Give every replica the store key {} ([broker] store_key_file) and HOURGLASS_STORE (or [broker] store); keep the SQLite file as a backup until they run.",
        source.describe(),
        target.describe(),
        key_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

async fn list_keys(store: &Store) -> anyhow::Result<ExitCode> {
    let now = SystemClock.now();
    println!("{:<12} {:<18} {:<10} {:<25} {:<25} verifies until", "purpose", "kid", "now", "signs from", "signs until");
    for key in store.all_signing_keys().await? {
        let state = if key.verifies_until <= now {
            "expired"
        } else if key.signs_from > now {
            "next"
        } else if key.signs_until > now {
            "signing"
        } else {
            "verifying"
        };
        println!(
            "{:<12} {:<18} {:<10} {:<25} {:<25} {}",
            key.purpose, key.kid, state, key.signs_from, key.signs_until, key.verifies_until
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn rotate_key(config: &Path, data_dir: Option<PathBuf>, purpose: &str, after: u64) -> anyhow::Result<ExitCode> {
    use hourglass_broker::keys::KeyPurpose;
    let purpose = match KeyPurpose::parse(purpose) {
        Some(purpose @ (KeyPurpose::Session | KeyPurpose::GrantToken)) => purpose,
        _ => bail!("--purpose must be session or grant-token (the SSH CA is rotated by hand: hosts trust it)"),
    };
    let policy = Policy::load_dir(config).with_context(|| format!("reading {}", config.display()))?;
    let settings = BrokerSettings::from_table(&policy.broker_settings)?;
    let data_dir = data_dir
        .or_else(|| settings.data_dir.as_ref().map(|dir| BrokerSettings::resolve(config, dir)))
        .context("no data directory: set data_dir in [broker] or pass --data-dir")?;
    let location = settings.store_location(config, &data_dir)?;
    let store = Store::open(&location, &settings.store_options(config)?).await?;
    let now = SystemClock.now();
    let keys = server::SigningKeys::open(&settings, &policy, &store, config, &data_dir, now).await?;
    let set = if purpose == KeyPurpose::Session { &keys.session } else { &keys.grant_token };
    let window = set.rotate_now(now, std::time::Duration::from_secs(after)).await?;
    store.retire().await?;
    // The one before stops signing then and verifies for the overlap after.
    let overlap = window.verifies_until.unix_millis() - window.signs_until.unix_millis();
    println!(
        "{} key {} signs from {} (the one before stops then and verifies until {})",
        purpose.as_str(),
        window.kid,
        window.signs_from,
        window.signs_from.plus_millis(overlap)
    );
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
