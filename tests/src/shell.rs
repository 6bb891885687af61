//! One user's machine for agent tests ([`Workstation`]: a private runtime
//! directory and home, the real `hourglass agent` as a process) and real
//! interactive shells driven through tmux ([`TmuxShell`]) for prompt-hook
//! tests.

use std::cell::Cell;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{DevBroker, Run, bin, eventually, policy_dir};

/// A user's machine: its own `XDG_RUNTIME_DIR` (so its own agent socket)
/// and `HOME`, and the broker and token in the environment. Every command
/// runs with exactly this environment. The agent it runs (or that a
/// command started in the background) is killed on drop.
pub struct Workstation {
    runtime: tempfile::TempDir,
    home: tempfile::TempDir,
    vars: Vec<(String, String)>,
    agent: Option<Child>,
    agent_log: PathBuf,
}

impl Workstation {
    pub fn new(broker: &DevBroker, user: &str) -> Workstation {
        let runtime = tempfile::tempdir().expect("runtime dir");
        let home = tempfile::tempdir().expect("home");
        let mut vars = vec![
            ("PATH".to_owned(), std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())),
            ("HOME".to_owned(), home.path().display().to_string()),
            ("XDG_RUNTIME_DIR".to_owned(), runtime.path().display().to_string()),
            ("HOURGLASS_TOKEN".to_owned(), broker.token(user).to_owned()),
            ("LANG".to_owned(), "C.UTF-8".to_owned()),
        ];
        vars.extend(broker.env());
        let agent_log = home.path().join("agent.log");
        Workstation { runtime, home, vars, agent: None, agent_log }
    }

    /// Adds (or replaces) a variable of this machine's environment.
    pub fn set_var(&mut self, name: &str, value: &str) {
        self.vars.retain(|(n, _)| n != name);
        self.vars.push((name.to_owned(), value.to_owned()));
    }

    pub fn vars(&self) -> &[(String, String)] {
        &self.vars
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub fn runtime_dir(&self) -> &Path {
        self.runtime.path()
    }

    /// Where the agent keeps its socket and hook state file.
    pub fn agent_dir(&self) -> PathBuf {
        self.runtime.path().join("hourglass")
    }

    /// `hourglass ARGS` with this machine's environment and nothing else.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(bin("hourglass"));
        command.args(args).env_clear().envs(self.vars.iter().map(|(n, v)| (n, v)));
        command
    }

    pub fn hourglass(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).stdin(Stdio::null()).output().expect("hourglass runs"))
    }

    /// `hourglass ARGS --json`, which must succeed; its JSON output.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let run = self.hourglass(&args);
        assert!(run.ok, "hourglass {args:?} failed: {}\n--- agent log ---\n{}", run.stderr, self.agent_log());
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("hourglass {args:?} printed no JSON ({e}): {}", run.stdout))
    }

    /// Runs `hourglass agent` in the foreground (as a child of the test)
    /// and waits until it answers.
    pub fn start_agent(&mut self) {
        let log = std::fs::File::create(&self.agent_log).expect("agent log");
        let child = self
            .command(&["agent"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("hourglass agent starts");
        self.agent = Some(child);
        let ready = eventually(Duration::from_secs(20), || self.status().filter(|s| s["online"] == true));
        assert!(ready.is_some(), "the agent comes up and reaches the broker:\n{}", self.agent_log());
    }

    /// Kills the agent the hard way (SIGKILL): no clean-up happens.
    pub fn kill_agent(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        } else if let Some(pid) = self.status().and_then(|s| s["pid"].as_u64()) {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    }

    pub fn agent_log(&self) -> String {
        let mut log = std::fs::read_to_string(&self.agent_log).unwrap_or_default();
        log.push_str(&std::fs::read_to_string(self.agent_dir().join("agent.log")).unwrap_or_default());
        log
    }

    /// `hourglass agent --status --json`, if an agent answers.
    pub fn status(&self) -> Option<Value> {
        let run = self.hourglass(&["agent", "--status", "--json"]);
        if !run.ok {
            return None;
        }
        serde_json::from_str(&run.stdout).ok()
    }

    /// The state line in the hook file, as a shell reads it.
    pub fn hook_file(&self) -> String {
        std::fs::read_to_string(self.agent_dir().join("hook-state")).unwrap_or_default().trim_end().to_owned()
    }

    /// Waits until the agent's status satisfies `check` and its hook file
    /// shows the state that status describes (so the next prompt sees it).
    pub fn wait_for(&self, what: &str, mut check: impl FnMut(&Value) -> bool) -> Value {
        eventually(Duration::from_secs(30), || {
            let status = self.status()?;
            (check(&status) && status["hook_state"].as_str() == Some(self.hook_file().as_str())).then_some(status)
        })
        .unwrap_or_else(|| {
            panic!(
                "the agent never got to: {what}\nstatus: {:?}\n--- agent log ---\n{}",
                self.status(),
                self.agent_log()
            )
        })
    }

    /// The grant the agent holds with id `id`, if it does.
    pub fn held(status: &Value, id: &str) -> Option<Value> {
        status["grants"].as_array()?.iter().find(|g| g["id"] == id).cloned()
    }
}

impl Drop for Workstation {
    fn drop(&mut self) {
        self.kill_agent();
    }
}

/// A policy with one grant per credential helper, approved at once for
/// engineers: `cloud/admin` (an exec hook that prints fixed AWS-style
/// keys: `AKIAHOURGLASSTEST`, `wJalr/secret+key`, `session-token-1`),
/// `git/push` (a token whose audience is `https://git.example.test`) and
/// `k8s/view` (a token in `K8S_TOKEN`).
pub fn helpers_policy() -> tempfile::TempDir {
    const TOML: &str = r#"
[defaults]
workflow = "review"
min_duration = "5s"
max_duration = "1h"
reason_required = false

[workflows.review]
approvals = [{ group = "sre", count = 1 }]

[resources.cloud]
provider = "exec"
settings = { command = ["./aws-hook.sh"] }

[resources.cloud.roles.admin]
description = "AWS keys"

[resources.git]
provider = "token"
settings = { audience = "https://git.example.test" }

[resources.git.roles.push]
description = "push"

[resources.k8s]
provider = "token"
settings = { audience = "https://k8s.example.test", env_prefix = "K8S" }

[resources.k8s.roles.view]
description = "view"
"#;
    const CEDAR: &str = r#"
permit (principal in Group::"engineers", action in [Action::"request", Action::"auto_approve"], resource);
"#;
    const AWS_HOOK: &str = r#"#!/bin/sh
cat > /dev/null
case "$HOURGLASS_ACTION" in
    issue|renew)
        echo '{"state": {"key": 1}, "env": {"AWS_ACCESS_KEY_ID": "AKIAHOURGLASSTEST", "AWS_SECRET_ACCESS_KEY": "wJalr/secret+key", "AWS_SESSION_TOKEN": "session-token-1"}, "public": ["AWS_ACCESS_KEY_ID"]}' ;;
    revoke) echo '{}' ;;
esac
"#;
    let policy = policy_dir(TOML, CEDAR);
    let hook = policy.path().join("aws-hook.sh");
    std::fs::write(&hook, AWS_HOOK).expect("aws-hook.sh");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod aws-hook.sh");
    policy
}

/// An interactive bash, zsh or fish in its own tmux server, with the
/// Hourglass prompt hook installed from its startup file.
pub struct TmuxShell {
    pub kind: String,
    socket: PathBuf,
    counter: Cell<u32>,
    _dir: tempfile::TempDir,
}

const TMUX: &str = "tmux";

impl TmuxShell {
    pub fn start(kind: &str, station: &Workstation) -> TmuxShell {
        let dir = tempfile::tempdir().expect("temp dir");
        let exe = bin("hourglass");
        let exe = exe.display();
        let command: Vec<String> = match kind {
            "bash" => {
                let rc = dir.path().join("bashrc");
                std::fs::write(&rc, format!("PS1='hg$ '\neval \"$('{exe}' hook bash)\"\n")).expect("bashrc");
                vec!["bash".into(), "--noprofile".into(), "--rcfile".into(), rc.display().to_string(), "-i".into()]
            }
            "zsh" => {
                std::fs::write(dir.path().join(".zshrc"), format!("PROMPT='hg> '\neval \"$('{exe}' hook zsh)\"\n"))
                    .expect("zshrc");
                vec!["env".into(), format!("ZDOTDIR={}", dir.path().display()), "zsh".into(), "-i".into()]
            }
            "fish" => vec![
                "fish".into(),
                "--no-config".into(),
                "--init-command".into(),
                format!("function fish_prompt; echo -n 'hg> '; end; '{exe}' hook fish | source"),
            ],
            other => panic!("no shell {other}"),
        };
        let socket = dir.path().join("tmux.sock");
        let status = Command::new(TMUX)
            .arg("-S")
            .arg(&socket)
            .args(["-f", "/dev/null", "new-session", "-d", "-s", "hg", "-x", "220", "-y", "50", "--"])
            .args(&command)
            .env_clear()
            .envs(station.vars().iter().map(|(n, v)| (n, v)))
            .env("TERM", "xterm-256color")
            .status()
            .expect("tmux runs (install tmux)");
        assert!(status.success(), "tmux starts a {kind} session");
        let shell = TmuxShell { kind: kind.to_owned(), socket, counter: Cell::new(0), _dir: dir };
        shell.run("true");
        shell
    }

    fn tmux(&self, args: &[&str]) -> Run {
        Run::from(Command::new(TMUX).arg("-S").arg(&self.socket).args(args).output().expect("tmux runs"))
    }

    fn next(&self) -> u32 {
        self.counter.set(self.counter.get() + 1);
        self.counter.get()
    }

    fn type_line(&self, line: &str) {
        let typed = self.tmux(&["send-keys", "-t", "hg", "-l", "--", line]);
        assert!(typed.ok, "typing into {}: {}", self.kind, typed.stderr);
        let entered = self.tmux(&["send-keys", "-t", "hg", "Enter"]);
        assert!(entered.ok, "pressing Enter in {}: {}", self.kind, entered.stderr);
    }

    /// What the terminal shows, wrapped lines joined, with its history.
    pub fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-J", "-t", "hg", "-S", "-"]).stdout
    }

    /// The line of output starting with `marker`, once the shell printed it.
    fn wait_line(&self, marker: &str) -> String {
        eventually(Duration::from_secs(30), || {
            self.screen().lines().find(|line| line.starts_with(marker)).map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("{} never printed {marker}; its screen:\n{}", self.kind, self.screen()))
    }

    /// Types `command` at the prompt and waits until it has run. (The
    /// marker is printed in two halves so the typed line never matches.)
    pub fn run(&self, command: &str) {
        let n = self.next();
        self.type_line(&format!("{command}; printf 'HG%s_%s\\n' D {n}"));
        self.wait_line(&format!("HGD_{n}"));
    }

    /// The value of `name` in the shell at a prompt drawn now: a first
    /// command makes the shell draw a fresh prompt (running the hook), the
    /// second prints the variable.
    pub fn var(&self, name: &str) -> String {
        self.run("true");
        let n = self.next();
        self.type_line(&format!("printf 'HG%s_%s=[%s]\\n' V {n} \"${name}\""));
        let line = self.wait_line(&format!("HGV_{n}=["));
        let value = line.split_once("=[").map(|(_, rest)| rest).unwrap_or_default();
        value.strip_suffix(']').unwrap_or(value).to_owned()
    }
}

impl Drop for TmuxShell {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}
