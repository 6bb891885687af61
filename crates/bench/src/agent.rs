//! The agent's hot paths as a user meets them, each through the real
//! `hourglass` binary, a real `hourglass agent` and a real dev broker:
//!
//! - the bash prompt hook when something changed, so that it runs
//!   `hourglass hook-env` and asks the agent: with the broker up (a grant
//!   issued or revoked before each prompt) and with the broker killed;
//! - the AWS `credential_process` and Kubernetes `ExecCredential` helpers
//!   answered from the agent, process start included.
//!
//! Peers in the same run: direnv loading an allowed `.envrc` for the hook,
//! and a process that does nothing (`true`) as the floor under the helpers.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use hourglass_client::agent::protocol::Status;
use hourglass_client::agent::{AgentClient, Paths};
use hourglass_e2e::DevBroker;
use hourglass_e2e::shell::{Workstation, helpers_policy};
use serde_json::Value;

use crate::Options;
use crate::report::Figure;
use crate::stats::{Summary, human};

/// What the issue asks of a prompt that applies a change, every prompt.
const HOOK_TARGET: Duration = Duration::from_millis(25);
/// What the issue asks of a credential helper's median.
pub(crate) const HELPER_TARGET: Duration = Duration::from_millis(10);
/// A generous bound on the agent taking in a change; never a figure.
const SETTLE_LIMIT: Duration = Duration::from_secs(20);

pub fn figures(options: &Options) -> anyhow::Result<Vec<Figure>> {
    let changes = options.runs(300, 20);
    let prompts = options.runs(1_000, 50);
    let helper_runs = options.runs(1_000, 50);

    let policy = helpers_policy();
    // One engineer asks for hundreds of grants a minute here, which no
    // person does: the per-principal rate limit (20/s) would measure the
    // limiter instead of the agent.
    let mut toml = std::fs::OpenOptions::new().append(true).open(policy.path().join("hourglass.toml"))?;
    std::io::Write::write_all(&mut toml, b"\n[broker.limits]\nrequests_per_second = 100000\nrequest_burst = 100000\n")?;
    let mut broker = DevBroker::start_with_policy(policy.path(), &[]);
    let mut station = Workstation::new(&broker, "alice");
    station.start_agent();
    let agent = Paths::in_dir(&station.agent_dir());
    for (resource, role) in [("cloud", "admin"), ("k8s", "view")] {
        let id = issue(&station, resource, role)?;
        settle(&agent, |status| holds(status, &id))?;
    }

    eprintln!("credential helpers from the agent: {helper_runs} runs each, and as many of `true`…");
    let aws = process_runs(
        helper_runs,
        || station.command(&["credential-process", "cloud"]),
        |answer| answer["Version"] == 1 && answer["AccessKeyId"].is_string() && answer["SecretAccessKey"].is_string(),
    )?;
    let kube = process_runs(
        helper_runs,
        || station.command(&["kube-credential", "k8s"]),
        |answer| answer["kind"] == "ExecCredential" && answer["status"]["token"].is_string(),
    )?;
    let floor = process_runs(helper_runs, || Command::new("true"), |_| true)?;

    eprintln!("prompt hook with a change: {changes} grants issued or revoked, then {prompts} prompts, broker down…");
    let hook = run_hourglass(&station, &["hook", "bash"])?;
    let mut bash = PromptBash::start(station.home(), station.vars(), &hook)?;
    // The first prompt takes in the grants held so far.
    bash.prompt("", "_hourglass_hook", "$_HOURGLASS_STATE")?;
    let broker_up = prompts_after_changes(&station, &agent, &mut bash, changes)?;
    broker.kill();
    settle(&agent, |status| !status.online)?;
    let broker_down = prompts_after_reset(&agent, &mut bash, prompts)?;
    drop(bash);

    eprintln!("direnv loading an allowed .envrc: {changes} prompts…");
    let direnv = direnv_loads(changes)?;
    let peer = match direnv {
        Some(d) => format!("direnv loading an allowed .envrc: median {}, p99 {}", human(d.median), human(d.p99)),
        None => "direnv not installed (scripts/bench installs it)".into(),
    };
    let floor_note = format!("— (floor: `true`, median {}, p99 {})", human(floor.median), human(floor.p99));

    Ok(vec![
        Figure {
            name: "Prompt hook (bash), with a change, broker up".into(),
            summary: Some(broker_up),
            target: "p99 < 25 ms".into(),
            met: Some(broker_up.p99 < HOOK_TARGET),
            peer: peer.clone(),
            note: "a grant issued or revoked before each prompt; `hook-env` process and agent round trip included"
                .into(),
        },
        Figure {
            name: "Prompt hook (bash), with a change, broker down".into(),
            summary: Some(broker_down),
            target: "p99 < 25 ms".into(),
            met: Some(broker_down.p99 < HOOK_TARGET),
            peer,
            note: "broker killed, agent serving from memory; the shell's applied state cleared before each prompt \
                   so `hook-env` runs through the agent"
                .into(),
        },
        Figure {
            name: "AWS `credential_process` from the agent".into(),
            summary: Some(aws),
            target: "median < 10 ms".into(),
            met: Some(aws.median < HELPER_TARGET),
            peer: floor_note.clone(),
            note: "`hourglass credential-process`, process start to exit".into(),
        },
        Figure {
            name: "Kubernetes `ExecCredential` from the agent".into(),
            summary: Some(kube),
            target: "median < 10 ms".into(),
            met: Some(kube.median < HELPER_TARGET),
            peer: floor_note,
            note: "`hourglass kube-credential`, process start to exit".into(),
        },
    ])
}

/// `hourglass ARGS` on the workstation, which must succeed; its output.
fn run_hourglass(station: &Workstation, args: &[&str]) -> anyhow::Result<String> {
    let run = station.hourglass(args);
    ensure!(run.ok, "hourglass {}: {}", args.join(" "), run.stderr.trim());
    Ok(run.stdout)
}

/// Requests `resource/role` (approved at once by the helpers' policy); the grant's id.
fn issue(station: &Workstation, resource: &str, role: &str) -> anyhow::Result<String> {
    let text = run_hourglass(station, &["request", resource, "--role", role, "--for", "30m", "--json"])?;
    let outcome: Value = serde_json::from_str(&text).context("`hourglass request --json` printed no JSON")?;
    ensure!(outcome["grant"]["state"] == "active", "{resource}/{role} was not issued at once");
    outcome["grant"]["id"].as_str().map(str::to_owned).context("no grant id in the request's outcome")
}

fn holds(status: &Status, grant: &str) -> bool {
    status.grants.iter().any(|held| held.id.to_string() == grant)
}

/// Waits until the agent's status satisfies `done` and its hook file shows
/// the state that status describes, so the next prompt sees it; that state.
fn settle(agent: &Paths, mut done: impl FnMut(&Status) -> bool) -> anyhow::Result<String> {
    let start = Instant::now();
    loop {
        let status = AgentClient::connect(agent)?.status()?;
        let file = std::fs::read_to_string(agent.hook_state()).unwrap_or_default();
        if done(&status) && file.trim_end() == status.hook_state {
            return Ok(status.hook_state);
        }
        if start.elapsed() > SETTLE_LIMIT {
            bail!("the agent did not settle within {} s", SETTLE_LIMIT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Prompts that each apply a real change: before each, `git/push` is
/// issued or revoked (alternately) and the agent has written its new state.
fn prompts_after_changes(
    station: &Workstation,
    agent: &Paths,
    bash: &mut PromptBash,
    runs: usize,
) -> anyhow::Result<Summary> {
    let mut samples = Vec::with_capacity(runs);
    let mut held: Option<String> = None;
    for _ in 0..runs {
        let expected = match held.take() {
            None => {
                let id = issue(station, "git", "push")?;
                let state = settle(agent, |status| holds(status, &id))?;
                held = Some(id);
                state
            }
            Some(id) => {
                run_hourglass(station, &["revoke", &id])?;
                settle(agent, |status| !holds(status, &id))?
            }
        };
        let (time, report) = bash.prompt("", "_hourglass_hook", "$_HOURGLASS_STATE ${GIT_TOKEN:+exported}")?;
        let exported = held.is_some();
        ensure!(
            report == format!("{expected}{}", if exported { " exported" } else { "" }),
            "the prompt did not apply the change (GIT_TOKEN should be {}): {report}",
            if exported { "exported" } else { "gone" }
        );
        samples.push(time);
    }
    Ok(Summary::of(&mut samples))
}

/// Prompts that each run `hook-env` through the agent with nothing new to
/// apply: the line the shell last applied is cleared before each, the
/// cheapest honest stand-in for a change when the broker, the source of
/// changes, is down.
fn prompts_after_reset(agent: &Paths, bash: &mut PromptBash, runs: usize) -> anyhow::Result<Summary> {
    let expected = settle(agent, |_| true)?;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (time, report) =
            bash.prompt("_HOURGLASS_STATE=", "_hourglass_hook", "$_HOURGLASS_STATE ${K8S_TOKEN:+exported}")?;
        ensure!(report == format!("{expected} exported"), "the prompt did not apply the agent's state: {report}");
        samples.push(time);
    }
    Ok(Summary::of(&mut samples))
}

/// direnv's hook loading an allowed `.envrc` at each prompt. What direnv
/// keeps in the shell (`DIRENV_*`) and what the file exported are cleared
/// before each prompt, as when entering the directory, so each prompt
/// evaluates the file. `HOME` is a temporary directory, so `direnv allow`
/// stays there.
fn direnv_loads(runs: usize) -> anyhow::Result<Option<Summary>> {
    if Command::new("direnv").arg("version").output().is_err() {
        return Ok(None);
    }
    let home = tempfile::tempdir()?;
    let project = home.path().join("project");
    std::fs::create_dir(&project)?;
    std::fs::write(project.join(".envrc"), "export BENCH_GREETING=hello\n")?;
    let env: Vec<(String, String)> = vec![
        ("PATH".into(), std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())),
        ("HOME".into(), home.path().display().to_string()),
        ("LANG".into(), "C.UTF-8".into()),
        // Silences direnv's "loading" lines.
        ("DIRENV_LOG_FORMAT".into(), String::new()),
    ];
    let allowed = Command::new("direnv")
        .args(["allow", "."])
        .current_dir(&project)
        .env_clear()
        .envs(env.iter().map(|(n, v)| (n, v)))
        .output()?;
    ensure!(allowed.status.success(), "direnv allow: {}", String::from_utf8_lossy(&allowed.stderr).trim());
    let mut bash = PromptBash::start(&project, &env, "")?;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (time, report) = bash.prompt(
            "unset BENCH_GREETING DIRENV_DIFF DIRENV_DIR DIRENV_FILE DIRENV_WATCHES",
            "eval \"$(direnv export bash)\"",
            "${BENCH_GREETING:-}",
        )?;
        ensure!(report == "hello", "direnv did not load the .envrc: {report:?}");
        samples.push(time);
    }
    Ok(Some(Summary::of(&mut samples)))
}

/// Times `runs` runs of a command from spawn to exit (its output read, as
/// a tool reads it), after a few untimed ones. Each run must succeed and
/// print JSON that `valid` accepts (nothing at all when it takes anything);
/// the output is never shown, it holds secrets.
pub(crate) fn process_runs(
    runs: usize,
    mut command: impl FnMut() -> Command,
    valid: impl Fn(&Value) -> bool,
) -> anyhow::Result<Summary> {
    const WARM_UP: usize = 5;
    let mut samples = Vec::with_capacity(runs);
    for run in 0..WARM_UP + runs {
        let mut command = command();
        command.stdin(Stdio::null());
        let start = Instant::now();
        let output = command.output()?;
        let time = start.elapsed();
        check_output(&command, &output, &valid)?;
        if run >= WARM_UP {
            samples.push(time);
        }
    }
    Ok(Summary::of(&mut samples))
}

fn check_output(command: &Command, output: &Output, valid: impl Fn(&Value) -> bool) -> anyhow::Result<()> {
    let program = command.get_program().to_string_lossy();
    ensure!(output.status.success(), "{program} failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    let answer = if output.stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&output.stdout).with_context(|| format!("{program} printed no JSON"))?
    };
    ensure!(valid(&answer), "{program} printed JSON without the expected fields");
    Ok(())
}

/// A bash with a prompt hook sourced, driven one prompt at a time over
/// pipes, so that things can change between prompts. Each prompt is timed
/// inside bash with `$EPOCHREALTIME`, as `hook.rs` times the unchanged
/// case. Killed on drop.
struct PromptBash {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl PromptBash {
    /// Starts `bash` in `dir` with exactly `env`, and runs `setup` in it.
    fn start(dir: &Path, env: &[(String, String)], setup: &str) -> anyhow::Result<PromptBash> {
        let mut child = Command::new("bash")
            .args(["--noprofile", "--norc"])
            .current_dir(dir)
            .env_clear()
            .envs(env.iter().map(|(n, v)| (n, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting bash")?;
        let input = child.stdin.take().context("bash's stdin")?;
        let output = BufReader::new(child.stdout.take().context("bash's stdout")?);
        let mut bash = PromptBash { child, input, output };
        bash.send(&format!("{setup}\necho ready\n"))?;
        let ready = bash.line()?;
        ensure!(ready == "ready", "bash did not take the setup: {ready:?}");
        Ok(bash)
    }

    fn send(&mut self, text: &str) -> anyhow::Result<()> {
        self.input.write_all(text.as_bytes()).context("writing to bash")?;
        self.input.flush().context("writing to bash")
    }

    fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        ensure!(self.output.read_line(&mut line).context("reading from bash")? > 0, "bash exited");
        Ok(line.trim_end_matches('\n').to_owned())
    }

    /// Runs `untimed`, then `timed` between two reads of bash's clock; the
    /// time between them and `report` expanded afterwards (one line).
    fn prompt(&mut self, untimed: &str, timed: &str, report: &str) -> anyhow::Result<(Duration, String)> {
        self.send(&format!(
            "{untimed}\n_bench_s=$EPOCHREALTIME; {timed}; _bench_e=$EPOCHREALTIME; \
             printf '%s %s %s\\n' \"${{_bench_s/./}}\" \"${{_bench_e/./}}\" \"{report}\"\n"
        ))?;
        let line = self.line()?;
        let mut parts = line.splitn(3, ' ');
        let (Some(Ok(start)), Some(Ok(end))) =
            (parts.next().map(str::parse::<u64>), parts.next().map(str::parse::<u64>))
        else {
            bail!("bash printed no times: {line:?}");
        };
        // An empty expansion at the end leaves a space: not part of the report.
        let report = parts.next().unwrap_or("").trim_end().to_owned();
        Ok((Duration::from_micros(end.saturating_sub(start)), report))
    }
}

impl Drop for PromptBash {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
