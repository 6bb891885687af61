//! Shell integration: whether each shell's startup file loads the prompt
//! hook, and adding it in one click. Integrations that must be installed by
//! hand are integrations nobody installs; the app shows what is missing and
//! fixes it, touching nothing but one marked line at the end of the file.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::agent_host::AgentState;

/// A shell the prompt hook supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ts_rs::TS)]
#[serde(rename_all = "lowercase")]
pub enum HookShell {
    Bash,
    Zsh,
    Fish,
}

impl HookShell {
    pub const ALL: [HookShell; 3] = [HookShell::Bash, HookShell::Zsh, HookShell::Fish];

    pub fn name(self) -> &'static str {
        match self {
            HookShell::Bash => "bash",
            HookShell::Zsh => "zsh",
            HookShell::Fish => "fish",
        }
    }

    /// The line that loads the hook, as the README shows it.
    pub fn hook_line(self) -> &'static str {
        match self {
            HookShell::Bash => r#"eval "$(hourglass hook bash)""#,
            HookShell::Zsh => r#"eval "$(hourglass hook zsh)""#,
            HookShell::Fish => "hourglass hook fish | source",
        }
    }

    /// The interactive startup file the line goes in.
    pub fn startup_file(self, home: &Path, config_home: &Path) -> PathBuf {
        match self {
            HookShell::Bash => home.join(".bashrc"),
            HookShell::Zsh => home.join(".zshrc"),
            HookShell::Fish => config_home.join("fish/config.fish"),
        }
    }
}

/// One shell's integration, for the settings view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
pub struct ShellIntegration {
    pub shell: HookShell,
    /// The startup file, with the home directory as `~`.
    pub startup_file: String,
    /// The shell is installed on this machine.
    pub available: bool,
    /// Its startup file loads the hook.
    pub installed: bool,
    pub hook_line: String,
}

/// The settings view's "Shell integration".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
pub struct IntegrationStatus {
    pub agent: AgentState,
    pub shells: Vec<ShellIntegration>,
    /// `hourglass` is on PATH: the hooks and credential helpers run it.
    pub cli_installed: bool,
}

/// Where the user's files are; from the environment in the app, explicit in tests.
#[derive(Debug, Clone)]
pub struct UserDirs {
    pub home: PathBuf,
    pub config_home: PathBuf,
    /// `PATH`'s directories, to tell which shells are installed.
    pub path: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum IntegrationError {
    #[error("no home directory (HOME is not set)")]
    NoHome,
    #[error("cannot update {path}: {source}")]
    Write { path: String, source: std::io::Error },
}

impl UserDirs {
    pub fn from_env() -> Result<UserDirs, IntegrationError> {
        let home =
            std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from).ok_or(IntegrationError::NoHome)?;
        let config_home = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|c| !c.is_empty())
            .map_or_else(|| home.join(".config"), PathBuf::from);
        let path = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
        Ok(UserDirs { home, config_home, path })
    }

    fn has_program(&self, program: &str) -> bool {
        self.path.iter().any(|dir| dir.join(program).is_file())
    }

    fn display(&self, path: &Path) -> String {
        match path.strip_prefix(&self.home) {
            Ok(rest) => format!("~/{}", rest.display()),
            Err(_) => path.display().to_string(),
        }
    }

    pub fn integration(&self, shell: HookShell) -> ShellIntegration {
        let file = shell.startup_file(&self.home, &self.config_home);
        let installed = std::fs::read_to_string(&file).is_ok_and(|text| loads_hook(&text, shell));
        ShellIntegration {
            shell,
            startup_file: self.display(&file),
            available: self.has_program(shell.name()),
            installed,
            hook_line: shell.hook_line().to_owned(),
        }
    }

    /// The agent's state, each shell's hook, and whether the CLI the hooks
    /// run is installed.
    pub fn status(&self, agent: AgentState) -> IntegrationStatus {
        IntegrationStatus {
            agent,
            shells: HookShell::ALL.iter().map(|shell| self.integration(*shell)).collect(),
            cli_installed: self.has_program("hourglass"),
        }
    }

    /// Appends the hook line to the shell's startup file, unless it loads
    /// the hook already. The file keeps its other lines and its mode.
    pub fn install(&self, shell: HookShell) -> Result<ShellIntegration, IntegrationError> {
        let file = shell.startup_file(&self.home, &self.config_home);
        let current = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(IntegrationError::Write { path: self.display(&file), source }),
        };
        if !loads_hook(&current, shell) {
            let write = || -> std::io::Result<()> {
                if let Some(dir) = file.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let mut out = std::fs::OpenOptions::new().create(true).append(true).open(&file)?;
                let separator = if current.is_empty() || current.ends_with('\n') { "" } else { "\n" };
                write!(
                    out,
                    "{separator}\n# Hourglass: live grants in every prompt (added by the Hourglass app)\n{}\n",
                    shell.hook_line()
                )
            };
            write().map_err(|source| IntegrationError::Write { path: self.display(&file), source })?;
        }
        Ok(self.integration(shell))
    }
}

/// Whether a startup file loads the hook: any uncommented line that runs
/// `hourglass hook SHELL`, however the user wrote it.
fn loads_hook(text: &str, shell: HookShell) -> bool {
    let wanted = format!("hourglass hook {}", shell.name());
    text.lines().map(str::trim_start).filter(|line| !line.starts_with('#')).any(|line| line.contains(&wanted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(root: &Path) -> UserDirs {
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).expect("bin");
        std::fs::write(bin.join("zsh"), "").expect("a zsh");
        UserDirs { home: root.join("home"), config_home: root.join("home/.config"), path: vec![bin] }
    }

    #[test]
    fn hook_install_appends_one_marked_line_and_keeps_the_rest() {
        let root = tempfile::tempdir().expect("dir");
        let dirs = dirs(root.path());
        std::fs::create_dir_all(&dirs.home).expect("home");
        let bashrc = dirs.home.join(".bashrc");
        std::fs::write(&bashrc, "alias ll='ls -l'").expect("bashrc");

        assert!(!dirs.integration(HookShell::Bash).installed, "not there yet");
        let installed = dirs.install(HookShell::Bash).expect("installed");
        assert!(installed.installed);
        assert_eq!(installed.startup_file, "~/.bashrc");
        let text = std::fs::read_to_string(&bashrc).expect("read");
        assert!(text.starts_with("alias ll='ls -l'\n"), "the user's lines stay: {text:?}");
        assert!(text.ends_with("eval \"$(hourglass hook bash)\"\n"), "the hook line is last: {text:?}");

        dirs.install(HookShell::Bash).expect("again");
        assert_eq!(std::fs::read_to_string(&bashrc).expect("read"), text, "installing twice changes nothing");
    }

    #[test]
    fn hook_install_creates_fish_config_and_reports_which_shells_exist() {
        let root = tempfile::tempdir().expect("dir");
        let dirs = dirs(root.path());
        let fish = dirs.install(HookShell::Fish).expect("installed");
        assert_eq!(fish.startup_file, "~/.config/fish/config.fish");
        assert!(fish.installed && !fish.available, "installed, though fish is not on this PATH");
        let zsh = dirs.integration(HookShell::Zsh);
        assert!(zsh.available && !zsh.installed, "zsh exists, no .zshrc");
    }

    #[test]
    fn commented_out_hook_lines_do_not_count() {
        assert!(!loads_hook("# eval \"$(hourglass hook zsh)\"\n", HookShell::Zsh));
        assert!(loads_hook("  eval \"$(/opt/bin/hourglass hook zsh)\"\n", HookShell::Zsh), "a full path counts");
        assert!(loads_hook("[ -x /usr/bin/hourglass ] && eval \"$(hourglass hook zsh)\"\n", HookShell::Zsh));
        assert!(!loads_hook("eval \"$(hourglass hook bash)\"\n", HookShell::Zsh), "another shell's hook");
    }
}
