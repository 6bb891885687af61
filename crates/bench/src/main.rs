//! `hourglass-bench`: measures the hot paths and writes BENCHMARKS.md.
//! Benchmarks, not tests: nothing here fails on a slow figure; every figure
//! is reported, including those that miss their target.
//!
//! `hourglass-bench [--out FILE] [--quick] [--only TOPIC,...]`
//! Topics: policy, ssh, hook, agent, load, postgres, replicas, desktop.

mod agent;
mod aws;
mod desktop;
mod hook;
mod load;
mod notify;
mod openbao;
mod policy;
mod postgres;
mod replicas;
mod report;
mod ssh;
mod stats;

use std::time::Duration;

use anyhow::Context;
use report::Figure;

/// How a run was asked for.
pub struct Options {
    /// Fewer repetitions: a smoke run of every benchmark, not figures to publish.
    pub quick: bool,
}

impl Options {
    /// `full` repetitions, or `quick` for a smoke run.
    pub fn runs(&self, full: usize, quick: usize) -> usize {
        if self.quick { quick } else { full }
    }
}

/// A benchmark topic: measures, and returns its figures.
type Topic = fn(&Options) -> anyhow::Result<Vec<Figure>>;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = Options { quick: args.iter().any(|a| a == "--quick") };
    let out = args.iter().position(|a| a == "--out").and_then(|i| args.get(i + 1)).cloned();
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|list| list.split(',').map(str::to_owned).collect());
    let wanted = |topic: &str| only.as_ref().is_none_or(|list| list.iter().any(|t| t == topic));

    let mut figures = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    let topics: [(&str, Topic); 10] = [
        ("policy", policy_figures),
        ("ssh", ssh_figures),
        ("hook", hook_figures),
        ("agent", agent::figures),
        ("aws", aws::figures),
        ("load", load::figures),
        ("notify", notify::figures),
        ("postgres", postgres::figures),
        ("replicas", replicas::figures),
        ("desktop", desktop::figures),
    ];
    for (topic, run) in topics {
        if !wanted(topic) {
            continue;
        }
        eprintln!("bench: {topic}…");
        match run(&options) {
            Ok(mut found) => figures.append(&mut found),
            // A benchmark that cannot run is reported, and the others still run.
            Err(error) => {
                eprintln!("bench: {topic} failed: {error:#}");
                pending.push(format!("{topic}: did not run ({error:#})"));
            }
        }
    }

    let date = time::OffsetDateTime::now_utc().date().to_string();
    let text = report::render(&date, &report::machine(), &figures, &pending);
    match out {
        Some(path) => std::fs::write(&path, &text).with_context(|| format!("writing {path}"))?,
        None => print!("{text}"),
    }
    Ok(())
}

fn policy_figures(options: &Options) -> anyhow::Result<Vec<Figure>> {
    let runs = options.runs(100_000, 2_000);
    eprintln!("policy decision with {} Cedar policies ({runs} decisions)…", policy::POLICIES);
    let decisions = policy::decisions(runs)?;
    Ok(vec![Figure {
        name: "Policy decision, 1,000 Cedar policies".into(),
        summary: Some(decisions),
        target: "p99 < 100 µs".into(),
        met: Some(decisions.p99 < Duration::from_micros(100)),
        // Not a peer run here: the figure the issue reports for one unsliced set.
        peer: "— (one unsliced policy set: 1.5 ms p99, measured before)".into(),
        note: "policies sliced per resource at load".into(),
    }])
}

fn ssh_figures(options: &Options) -> anyhow::Result<Vec<Figure>> {
    let signs = options.runs(2_000, 50);
    eprintln!("SSH certificates: {signs} in-process issues and {} ssh-keygen -s runs…", signs / 10);
    let issued = ssh::in_process(signs)?;
    let keygen = ssh::ssh_keygen((signs / 10).max(20))?;
    Ok(vec![Figure {
        name: "SSH user certificate, issued in-process".into(),
        summary: Some(issued),
        target: "median < 0.2 ms".into(),
        met: Some(issued.median < Duration::from_micros(200)),
        peer: format!("`ssh-keygen -s`: median {}, p99 {}", stats::human(keygen.median), stats::human(keygen.p99)),
        note: "sign, then verify as sshd would".into(),
    }])
}

fn hook_figures(options: &Options) -> anyhow::Result<Vec<Figure>> {
    let prompts = options.runs(5_000, 200);
    eprintln!("prompt hook: {prompts} prompts each with no grant, grants unchanged, and direnv…");
    let (no_grant, unchanged) = hook::unchanged(prompts)?;
    let direnv = hook::direnv(prompts / 5)?;
    let peer = match direnv {
        Some(d) => format!("direnv, nothing to do: median {}, p99 {}", stats::human(d.median), stats::human(d.p99)),
        None => "direnv not installed (scripts/bench installs it)".into(),
    };
    let mut figures = Vec::new();
    for (name, summary) in [("no grant", no_grant), ("grants unchanged", unchanged)] {
        figures.push(Figure {
            name: format!("Prompt hook (bash), {name}"),
            summary: Some(summary),
            target: "median ≤ direnv's, aiming at 1.2 ms".into(),
            met: direnv.map(|d| summary.median <= d.median && summary.median <= Duration::from_micros(1_200)),
            peer: peer.clone(),
            note: "per prompt, in bash, builtins only".into(),
        });
    }
    Ok(figures)
}
