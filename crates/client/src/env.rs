//! How a credential's environment variables are written for each shell.

use std::fmt::Write;

use hourglass_core::api::Credential;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    /// bash, zsh and other POSIX shells.
    Posix,
    Fish,
    PowerShell,
}

impl Shell {
    pub fn parse(name: &str) -> Option<Shell> {
        match name {
            "bash" | "zsh" | "sh" | "posix" => Some(Shell::Posix),
            "fish" => Some(Shell::Fish),
            "powershell" | "pwsh" => Some(Shell::PowerShell),
            _ => None,
        }
    }

    /// The shell this process was started from, by `$SHELL`; POSIX otherwise.
    pub fn from_environment() -> Shell {
        std::env::var("SHELL")
            .ok()
            .and_then(|path| path.rsplit('/').next().and_then(Shell::parse))
            .unwrap_or(Shell::Posix)
    }
}

/// Lines that set every variable of `credential` in `shell`.
pub fn exports(credential: &Credential, shell: Shell) -> String {
    let mut out = String::new();
    for var in &credential.env {
        // Writing into a String cannot fail.
        let _ = match shell {
            Shell::Posix => writeln!(out, "export {}={}", var.name, posix_quote(&var.value)),
            Shell::Fish => writeln!(out, "set -gx {} {}", var.name, fish_quote(&var.value)),
            Shell::PowerShell => writeln!(out, "$Env:{} = {}", var.name, powershell_quote(&var.value)),
        };
    }
    out
}

/// Single quotes keep everything literal; a quote inside ends the string,
/// adds an escaped quote and starts a new one.
pub fn posix_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

pub fn fish_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', r"\\").replace('\'', r"\'"))
}

fn powershell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use hourglass_core::api::EnvVar;
    use hourglass_core::{GrantId, Timestamp};

    use super::*;

    fn credential(value: &str) -> Credential {
        Credential {
            grant_id: GrantId::from_random(1),
            resource: "r".into(),
            role: "x".into(),
            provider: "token".into(),
            expires_at: Timestamp::from_unix_millis(0),
            valid_until: None,
            env: vec![EnvVar { name: "R_TOKEN".into(), value: value.into(), secret: true }],
            ssh_certificate: None,
            client_secret: None,
        }
    }

    #[test]
    fn values_are_quoted_for_each_shell() {
        let tricky = r"it's $HOME `x` \n";
        assert_eq!(exports(&credential(tricky), Shell::Posix), "export R_TOKEN='it'\\''s $HOME `x` \\n'\n");
        assert_eq!(exports(&credential(tricky), Shell::Fish), "set -gx R_TOKEN 'it\\'s $HOME `x` \\\\n'\n");
        assert_eq!(exports(&credential(tricky), Shell::PowerShell), "$Env:R_TOKEN = 'it''s $HOME `x` \\n'\n");
    }

    #[test]
    fn posix_quoting_survives_a_real_shell() {
        let tricky = "a'b\"c$(echo pwned)`d`\\e";
        let script = format!("{}printf %s \"$R_TOKEN\"", exports(&credential(tricky), Shell::Posix));
        let output = std::process::Command::new("sh").arg("-c").arg(script).output().expect("sh runs");
        assert_eq!(String::from_utf8_lossy(&output.stdout), tricky, "the shell sees the exact value");
    }
}
