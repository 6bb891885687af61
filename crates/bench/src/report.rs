//! BENCHMARKS.md: the machine, the date, and each figure beside its target
//! and the peer measured in the same run.

use std::fmt::Write;

use crate::stats::{Summary, human};

/// One row of the report.
pub struct Figure {
    pub name: String,
    pub summary: Option<Summary>,
    /// What the figure should be, in words (`p99 < 100 µs`).
    pub target: String,
    /// Whether the figure meets it.
    pub met: Option<bool>,
    /// The peer's figure from the same run, in words.
    pub peer: String,
    pub note: String,
}

/// This machine, as the report's header says it.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let kib: u64 = text.lines().find(|l| l.starts_with("MemTotal"))?.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.0} GiB", kib as f64 / 1024.0 / 1024.0))
        })
        .unwrap_or_else(|| "unknown memory".into());
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")).map(|v| v.trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| "unknown OS".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|k| k.trim().to_owned()).unwrap_or_default();
    format!("{cpu}, {cores} cores, {memory}; {os}, Linux {kernel}")
}

/// The report: a table of `figures`, then the figures `pending` (targets
/// with no measurement yet), named so that nobody mistakes them for met.
pub fn render(date: &str, machine: &str, figures: &[Figure], pending: &[String]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Written by `./scripts/bench` on {date}.\n\nMachine: {machine}. Broker, load and peers run on the same host.\n"
    );
    let _ = writeln!(out, "| Figure | min | median | p99 | runs | target | met | peer, same run | note |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for figure in figures {
        let (min, median, p99, runs) = match figure.summary {
            Some(s) => (human(s.min), human(s.median), human(s.p99), s.runs.to_string()),
            None => ("—".into(), "—".into(), "—".into(), "—".into()),
        };
        let met = match figure.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        let _ = writeln!(
            out,
            "| {} | {min} | {median} | {p99} | {runs} | {} | {met} | {} | {} |",
            figure.name, figure.target, figure.peer, figure.note
        );
    }
    if !pending.is_empty() {
        let _ = writeln!(out, "\nNot measured yet:\n");
        for name in pending {
            let _ = writeln!(out, "- {name}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn report_lists_each_figure_with_target_and_verdict() {
        let figures = [Figure {
            name: "Policy decision".into(),
            summary: Some(Summary {
                runs: 3,
                min: Duration::from_micros(10),
                median: Duration::from_micros(20),
                p99: Duration::from_micros(30),
            }),
            target: "p99 < 100 µs".into(),
            met: Some(true),
            peer: "—".into(),
            note: "1,000 policies".into(),
        }];
        let text = render("2026-11-23", "a machine", &figures, &["Prompt hook vs direnv".to_owned()]);
        assert!(
            text.contains(
                "| Policy decision | 10.0 µs | 20.0 µs | 30.0 µs | 3 | p99 < 100 µs | yes | — | 1,000 policies |"
            ),
            "{text}"
        );
        assert!(text.contains("Machine: a machine."));
        assert!(text.contains("Not measured yet:\n\n- Prompt hook vs direnv\n"), "{text}");
    }
}
