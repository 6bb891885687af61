//! `hourglass-bench`: measures the hot paths and writes BENCHMARKS.md.
//! Benchmarks, not tests: nothing here fails on a slow figure; every figure
//! is reported, including those that miss their target.
//!
//! `hourglass-bench [--out FILE] [--quick]`

mod policy;
mod report;
mod stats;

use std::time::Duration;

use anyhow::Context;
use report::Figure;

/// The targets this suite does not measure yet.
const PENDING: &[&str] = &[
    "PostgreSQL grant issue at 1 and 4 clients, and throughput, against OpenBao's database secrets engine",
    "Revocation lag: 500 PostgreSQL grants and 10,000 token grants expiring in the same second; mass revoke of 700",
    "Token lifecycle throughput over HTTP (target ≥ 1,000/s, p99 < 10 ms)",
    "Approval latency to the requester's event stream (p99 < 20 ms); fan-out to 5,000 subscribers",
    "SSH certificate signing in-process against `ssh-keygen -s`",
    "Audit append at the shipped durability",
    "Prompt hook with nothing changed against direnv; with a change; credential helpers from the agent",
    "Desktop app memory (PSS), idle CPU and cold start against a Chromium --app window; binary and .deb sizes",
];

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let out = args.iter().position(|a| a == "--out").and_then(|i| args.get(i + 1)).cloned();
    let runs = if quick { 2_000 } else { 100_000 };

    let mut figures = Vec::new();

    eprintln!("policy decision with {} Cedar policies ({runs} decisions)…", policy::POLICIES);
    let decisions = policy::decisions(runs)?;
    figures.push(Figure {
        name: "Policy decision, 1,000 Cedar policies".into(),
        summary: Some(decisions),
        target: "p99 < 100 µs".into(),
        met: Some(decisions.p99 < Duration::from_micros(100)),
        // Not a peer run here: the figure the issue reports for one unsliced set.
        peer: "— (one unsliced policy set: 1.5 ms p99, measured before)".into(),
        note: "policies sliced per resource at load".into(),
    });

    let date = time::OffsetDateTime::now_utc().date().to_string();
    let text = report::render(&date, &report::machine(), &figures, PENDING);
    match out {
        Some(path) => std::fs::write(&path, &text).with_context(|| format!("writing {path}"))?,
        None => print!("{text}"),
    }
    Ok(())
}
