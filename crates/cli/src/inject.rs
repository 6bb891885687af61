//! Handing credentials to shells and tools: `env`, `exec`, the prompt hook,
//! the local agent, and the AWS, Kubernetes and git credential helpers.
//! (Being written: issue 4.)

use std::process::ExitCode;

use anyhow::anyhow;
use hourglass_client::Client;
use hourglass_client::env::{Shell, exports};

use crate::show::Output;

#[derive(clap::Args)]
pub struct AgentArgs {}

#[derive(clap::Args)]
pub struct EnvArgs {
    pub grant: String,
    /// bash, zsh, fish or powershell (default: from $SHELL).
    #[arg(long)]
    pub shell: Option<String>,
}

#[derive(clap::Args)]
pub struct ExecArgs {}

#[derive(clap::Args)]
pub struct HookArgs {}

#[derive(clap::Args)]
pub struct HookEnvArgs {}

#[derive(clap::Args)]
pub struct CredentialProcessArgs {}

#[derive(clap::Args)]
pub struct KubeCredentialArgs {}

#[derive(clap::Args)]
pub struct GitCredentialArgs {}

#[derive(clap::Args)]
pub struct PgpassArgs {}

fn unavailable() -> anyhow::Result<ExitCode> {
    anyhow::bail!("not available yet")
}

pub async fn agent(_broker: Option<&str>, _args: AgentArgs, _out: &Output) -> anyhow::Result<ExitCode> {
    unavailable()
}

pub async fn env(broker: Option<&str>, args: EnvArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let client = Client::from_env(broker)?;
    let shell = match args.shell {
        Some(name) => {
            Shell::parse(&name).ok_or_else(|| anyhow!("unknown shell \"{name}\": use bash, zsh, fish or powershell"))?
        }
        None => Shell::from_environment(),
    };
    let credential = client.credential(&crate::grant_id(&args.grant)?).await?;
    if out.json {
        out.json_value(&credential);
    } else {
        print!("{}", exports(&credential, shell));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn exec(_broker: Option<&str>, _args: ExecArgs, _out: &Output) -> anyhow::Result<ExitCode> {
    unavailable()
}

pub fn hook(_args: HookArgs, _out: &Output) -> anyhow::Result<ExitCode> {
    unavailable()
}

pub async fn hook_env(_args: HookEnvArgs, _out: &Output) -> anyhow::Result<ExitCode> {
    unavailable()
}

pub async fn credential_process(
    _broker: Option<&str>,
    _args: CredentialProcessArgs,
    _out: &Output,
) -> anyhow::Result<ExitCode> {
    unavailable()
}

pub async fn kube_credential(
    _broker: Option<&str>,
    _args: KubeCredentialArgs,
    _out: &Output,
) -> anyhow::Result<ExitCode> {
    unavailable()
}

pub async fn git_credential(
    _broker: Option<&str>,
    _args: GitCredentialArgs,
    _out: &Output,
) -> anyhow::Result<ExitCode> {
    unavailable()
}

pub async fn pgpass(_broker: Option<&str>, _args: PgpassArgs, _out: &Output) -> anyhow::Result<ExitCode> {
    unavailable()
}
