//! The AWS provider against moto's server (IAM authentication on), through
//! a real dev broker and the real `hourglass` binary and agent:
//!
//! - a grant's issue, from the request to the grant shown ready: the
//!   broker assumes the role and checks the keys with `GetCallerIdentity`
//!   (two calls to moto, which answers from Python, in every figure);
//! - `credential_process` for an AWS grant, answered by the agent from
//!   memory, process start included, beside a process that does nothing.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, ensure};
use hourglass_e2e::DevBroker;
use hourglass_e2e::moto::Moto;
use hourglass_e2e::shell::Workstation;
use serde_json::Value;

use crate::Options;
use crate::agent::{HELPER_TARGET, process_runs};
use crate::report::Figure;
use crate::stats::{Summary, human};

const CEDAR: &str = r#"
permit (principal in Group::"engineers", action in [Action::"request", Action::"auto_approve"], resource);
"#;

pub fn figures(options: &Options) -> anyhow::Result<Vec<Figure>> {
    let issues = options.runs(200, 10);
    let helper_runs = options.runs(1_000, 50);
    let moto = Moto::start();
    let toml = format!(
        "[defaults]\nworkflow = \"review\"\nreason_required = false\n\n[workflows.review]\napprovals = [{{ group = \"sre\", count = 1 }}]\n\n\
         [broker.limits]\nrequests_per_second = 100000\nrequest_burst = 100000\n\n{}",
        moto.resource_toml("aws-prod", &[("operator", "operator")])
    );
    let policy = hourglass_e2e::policy_dir(&toml, CEDAR);
    let env = moto.broker_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(name, value)| (*name, value.as_str())).collect();
    let broker = DevBroker::start_with_policy(policy.path(), &env);
    let mut station = Workstation::new(&broker, "alice");

    eprintln!("AWS grant issue against moto: {issues} requests, each revoked before the next…");
    let mut samples = Vec::with_capacity(issues);
    for _ in 0..issues {
        let start = Instant::now();
        let outcome = json(&station, &["request", "aws-prod", "--role", "operator", "--for", "30m"])?;
        let time = start.elapsed();
        let grant = &outcome["grant"];
        ensure!(grant["ready_at"].is_string(), "the grant was not shown ready: {}", grant["state"]);
        samples.push(time);
        let id = grant["id"].as_str().context("no grant id")?;
        json(&station, &["revoke", id, "--reason", "bench"])?;
    }
    let issued = Summary::of(&mut samples);

    station.start_agent();
    let outcome = json(&station, &["request", "aws-prod", "--role", "operator", "--for", "1h"])?;
    let id = outcome["grant"]["id"].as_str().context("no grant id")?.to_owned();
    let held = std::time::Instant::now();
    while station.hourglass(&["credential-process", &id]).stdout.is_empty() {
        ensure!(held.elapsed().as_secs() < 20, "the agent did not take the grant in");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    eprintln!("credential_process for an AWS grant: {helper_runs} runs, and as many of `true`…");
    let helper = process_runs(
        helper_runs,
        || station.command(&["credential-process", "aws-prod"]),
        |answer| answer["Version"] == 1 && answer["SessionToken"].is_string() && answer["Expiration"].is_string(),
    )?;
    let floor = process_runs(helper_runs, || Command::new("true"), |_| true)?;

    Ok(vec![
        Figure {
            name: "AWS grant issue, request to verified ready (moto)".into(),
            summary: Some(issued),
            target: "p99 < 1 s".into(),
            met: Some(issued.p99 < std::time::Duration::from_secs(1)),
            peer: "—".into(),
            note: "`hourglass request`, process start to exit: AssumeRole and GetCallerIdentity at moto, the grant \
                   committed ready"
                .into(),
        },
        Figure {
            name: "AWS `credential_process` from the agent, an AWS grant".into(),
            summary: Some(helper),
            target: "median < 10 ms".into(),
            met: Some(helper.median < HELPER_TARGET),
            peer: format!("— (floor: `true`, median {}, p99 {})", human(floor.median), human(floor.p99)),
            note: "keys held by the agent, refreshed from the broker halfway through their life".into(),
        },
    ])
}

/// `hourglass ARGS --json` on the workstation, which must succeed.
fn json(station: &Workstation, args: &[&str]) -> anyhow::Result<Value> {
    let mut args = args.to_vec();
    args.push("--json");
    let run = station.hourglass(&args);
    ensure!(run.ok, "hourglass {}: {}", args.join(" "), run.stderr.trim());
    serde_json::from_str(&run.stdout).with_context(|| format!("hourglass {} printed no JSON", args.join(" ")))
}
