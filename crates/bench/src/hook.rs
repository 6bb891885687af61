//! The prompt hook's cost per prompt when nothing changed, measured inside
//! a real bash the way a prompt runs it, against direnv's hook
//! (`eval "$(direnv export bash)"`) in the same bash, in a directory with
//! nothing for direnv to do.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hourglass_client::hook::{HookShell, script};

use crate::stats::Summary;

/// Per-prompt times of `body` run `runs` times in one bash after `setup`,
/// from bash's own microsecond clock (no process start in the figure).
fn in_bash(dir: &Path, setup: &str, body: &str, runs: usize) -> anyhow::Result<Summary> {
    let program = format!(
        "{setup}\nfor ((i = 0; i < {runs}; i++)); do\n  s=$EPOCHREALTIME\n  {body}\n  e=$EPOCHREALTIME\n  echo \"${{s/./}} ${{e/./}}\"\ndone\n"
    );
    let file = dir.join("bench.bash");
    std::fs::write(&file, program)?;
    let output = Command::new("bash")
        .arg("--noprofile")
        .arg("--norc")
        .arg(&file)
        .current_dir(dir)
        .env("HOME", dir)
        .env_remove("HOURGLASS_HOOK")
        .output()?;
    anyhow::ensure!(output.status.success(), "bash: {}", String::from_utf8_lossy(&output.stderr));
    let mut samples = Vec::with_capacity(runs);
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let mut parts = line.split(' ').map(str::parse::<u64>);
        if let (Some(Ok(start)), Some(Ok(end))) = (parts.next(), parts.next()) {
            samples.push(Duration::from_micros(end.saturating_sub(start)));
        }
    }
    anyhow::ensure!(samples.len() == runs, "bash printed {} of {runs} samples", samples.len());
    Ok(Summary::of(&mut samples))
}

/// The hook with no grant (no state file), and with grants unchanged (the
/// state line as last applied and a deadline ahead: a file read, a compare
/// and a clock read).
pub fn unchanged(runs: usize) -> anyhow::Result<(Summary, Summary)> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("hook-state");
    // The hook never runs the executable while nothing changed.
    let hook = script(HookShell::Bash, Path::new("/nonexistent/hourglass"), &state);
    std::fs::write(dir.path().join("hook.bash"), hook)?;
    let no_grant = in_bash(dir.path(), "source ./hook.bash", "_hourglass_hook", runs)?;
    std::fs::write(&state, "v1 boot-1 rev-42\n")?;
    let setup = "source ./hook.bash\n_HOURGLASS_STATE='v1 boot-1 rev-42'\n_HOURGLASS_DEADLINE=4102444800";
    let grants = in_bash(dir.path(), setup, "_hourglass_hook", runs)?;
    Ok((no_grant, grants))
}

/// direnv's hook with nothing to do, when direnv is installed.
pub fn direnv(runs: usize) -> anyhow::Result<Option<Summary>> {
    if Command::new("direnv").arg("version").output().is_err() {
        return Ok(None);
    }
    let dir = tempfile::tempdir()?;
    in_bash(dir.path(), "", "eval \"$(direnv export bash)\"", runs).map(Some)
}
