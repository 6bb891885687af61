//! `hourglass login` and `logout`. (Being written: issue 4.)

use std::process::ExitCode;

use crate::show::Output;

#[derive(clap::Args)]
pub struct LoginArgs {
    /// Use the device authorization grant (for machines without a browser).
    #[arg(long)]
    pub device: bool,
}

#[derive(clap::Args)]
pub struct LogoutArgs {}

pub async fn login(_broker: Option<&str>, _args: LoginArgs, _out: &Output) -> anyhow::Result<ExitCode> {
    anyhow::bail!("login is not available yet")
}

pub async fn logout(_broker: Option<&str>, _args: LogoutArgs, _out: &Output) -> anyhow::Result<ExitCode> {
    anyhow::bail!("logout is not available yet")
}
