//! The prompt hook: live grants' variables in the interactive shell itself,
//! added when a grant arrives and removed when it ends, like direnv.
//!
//! Cost when nothing changed is the point. The agent keeps a one-line,
//! non-secret state file (`hook-state` next to its socket) that changes
//! whenever what shells should export changes. Before each prompt the hook,
//! using builtins only (no fork, no exec):
//!
//! 1. reads that line and compares it with `_HOURGLASS_STATE`, the line it
//!    last applied;
//! 2. if it knows a deadline (`_HOURGLASS_DEADLINE`, Unix seconds on this
//!    machine's clock), compares it with the time: bash `printf '%(%s)T'`,
//!    zsh `$EPOCHSECONDS`, fish the sum of `path mtime /` and
//!    `path mtime --relative /` (fish has no clock builtin, but knows a
//!    file's age).
//!
//! Only when either says so does it run `hourglass hook-env SHELL` and
//! evaluate its output. `hook-env` asks the agent over the socket (no
//! network, no keyring, no database) and prints `export`/`unset` lines,
//! the new state line and the next deadline. The variables it set are
//! listed, with their grant and deadline, in the exported `HOURGLASS_HOOK`,
//! so they can be removed later, even by a child shell, and even when the
//! agent is down: then `hook-env` removes the variables of grants past
//! their deadline using that list alone.
//!
//! When two grants set the same variable, the newer grant's value wins
//! until it ends, then the older one's comes back. A variable the hook
//! removes is removed, not restored to a value it had before the grant.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::Path;

use hourglass_core::api::EnvVar;
use zeroize::Zeroizing;

use crate::agent::protocol::HookSnapshot;
use crate::env::{fish_quote, posix_quote};

/// The exported variable listing what the hook set:
/// `grt-…=DEADLINE:NAME,NAME;grt-…=…`.
pub const TRACK_VAR: &str = "HOURGLASS_HOOK";
const STATE_VAR: &str = "_HOURGLASS_STATE";
const DEADLINE_VAR: &str = "_HOURGLASS_DEADLINE";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookShell {
    Bash,
    Zsh,
    Fish,
}

impl HookShell {
    pub fn parse(name: &str) -> Option<HookShell> {
        match name {
            "bash" => Some(HookShell::Bash),
            "zsh" => Some(HookShell::Zsh),
            "fish" => Some(HookShell::Fish),
            _ => None,
        }
    }
}

/// The script a shell evaluates once at start (`eval "$(hourglass hook bash)"`).
pub fn script(shell: HookShell, exe: &Path, state_file: &Path) -> String {
    let exe_text = exe.to_string_lossy();
    let file_text = state_file.to_string_lossy();
    match shell {
        HookShell::Bash => {
            let (exe, file) = (posix_quote(&exe_text), posix_quote(&file_text));
            format!(
                r#"_hourglass_hook() {{
  local previous_exit_status=$? _hourglass_s= _hourglass_now
  [[ -r {file} ]] && read -r _hourglass_s < {file}
  if [[ "$_hourglass_s" != "${{{STATE_VAR}-}}" ]]; then
    eval "$({exe} hook-env bash)"
  elif [[ -n "${{{DEADLINE_VAR}-}}" ]]; then
    printf -v _hourglass_now '%(%s)T' -1
    if (( _hourglass_now >= {DEADLINE_VAR} )); then
      eval "$({exe} hook-env bash)"
    fi
  fi
  return $previous_exit_status
}}
{STATE_VAR}=${{{TRACK_VAR}:+inherited}}
if [[ ";${{PROMPT_COMMAND[*]:-}};" != *";_hourglass_hook;"* ]]; then
  if [[ "$(declare -p PROMPT_COMMAND 2>&1)" == "declare -a"* ]]; then
    PROMPT_COMMAND=(_hourglass_hook "${{PROMPT_COMMAND[@]}}")
  else
    PROMPT_COMMAND="_hourglass_hook${{PROMPT_COMMAND:+;$PROMPT_COMMAND}}"
  fi
fi
"#
            )
        }
        HookShell::Zsh => {
            let (exe, file) = (posix_quote(&exe_text), posix_quote(&file_text));
            format!(
                r#"zmodload zsh/datetime 2>/dev/null
_hourglass_hook() {{
  local _hourglass_s=
  [[ -r {file} ]] && read -r _hourglass_s < {file}
  if [[ "$_hourglass_s" != "${{{STATE_VAR}-}}" ]] || [[ -n "${{{DEADLINE_VAR}-}}" && $EPOCHSECONDS -ge ${DEADLINE_VAR} ]]; then
    eval "$({exe} hook-env zsh)"
  fi
}}
typeset -g {STATE_VAR}=${{{TRACK_VAR}:+inherited}}
typeset -ag precmd_functions
if (( ! ${{precmd_functions[(I)_hourglass_hook]}} )); then
  precmd_functions=(_hourglass_hook $precmd_functions)
fi
"#
            )
        }
        HookShell::Fish => {
            let (exe, file) = (fish_quote(&exe_text), fish_quote(&file_text));
            format!(
                r#"function __hourglass_hook --on-event fish_prompt
    set -l s ''
    if test -r {file}
        read s < {file}
    end
    set -l run 0
    if test "$s" != "${STATE_VAR}"
        set run 1
    else if set -q {DEADLINE_VAR}
        # No clock builtin in fish, but `path` knows a file's mtime and age: their sum is now.
        if test (math (path mtime /) + (path mtime --relative /)) -ge ${DEADLINE_VAR}
            set run 1
        end
    end
    if test $run = 1
        {exe} hook-env fish | source
    end
end
if set -q {TRACK_VAR}
    set -g {STATE_VAR} inherited
else
    set -g {STATE_VAR} ''
end
"#
            )
        }
    }
}

/// One grant the hook exported: its deadline and the names it set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedGrant {
    pub id: String,
    pub deadline: i64,
    pub names: Vec<String>,
}

/// What `HOURGLASS_HOOK` says the shell holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tracked(pub Vec<TrackedGrant>);

impl Tracked {
    /// Reads `HOURGLASS_HOOK`; malformed entries are skipped.
    pub fn parse(text: &str) -> Tracked {
        let entries = text
            .split(';')
            .filter_map(|entry| {
                let (id, rest) = entry.split_once('=')?;
                let (deadline, names) = rest.split_once(':')?;
                Some(TrackedGrant {
                    id: id.to_owned(),
                    deadline: deadline.parse().ok()?,
                    names: names.split(',').filter(|n| is_name(n)).map(str::to_owned).collect(),
                })
            })
            .collect();
        Tracked(entries)
    }

    pub fn render(&self) -> String {
        self.0
            .iter()
            .map(|grant| format!("{}={}:{}", grant.id, grant.deadline, grant.names.join(",")))
            .collect::<Vec<_>>()
            .join(";")
    }

    fn names(&self) -> BTreeSet<&str> {
        self.0.iter().flat_map(|grant| grant.names.iter().map(String::as_str)).collect()
    }
}

/// A name a shell can export, and not one of the hook's own.
fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name != TRACK_VAR
        && name != STATE_VAR
        && name != DEADLINE_VAR
}

/// What `hourglass hook-env SHELL` prints. `snapshot` is the agent's
/// answer, `None` when the agent is unreachable: then only the variables of
/// grants past their deadline (by `now`, Unix seconds here) are removed,
/// and `file_state` (the state file's line, if any) is recorded so the
/// hook does not ask again until it changes.
pub fn hook_env(
    shell: HookShell,
    tracked: &Tracked,
    snapshot: Option<&HookSnapshot>,
    file_state: &str,
    now: i64,
) -> Zeroizing<String> {
    let mut values: BTreeMap<&str, &EnvVar> = BTreeMap::new();
    let (kept, state) = match snapshot {
        Some(snapshot) => {
            let mut kept = Vec::new();
            for grant in snapshot.grants.iter().filter(|grant| grant.deadline > now) {
                let vars: Vec<&EnvVar> = grant.env.iter().filter(|var| is_name(&var.name)).collect();
                for var in &vars {
                    values.insert(&var.name, var); // oldest first: the newest grant wins
                }
                kept.push(TrackedGrant {
                    id: grant.id.to_string(),
                    deadline: grant.deadline,
                    names: vars.iter().map(|var| var.name.clone()).collect(),
                });
            }
            (Tracked(kept), snapshot.state.as_str())
        }
        None => (Tracked(tracked.0.iter().filter(|grant| grant.deadline > now).cloned().collect()), file_state),
    };
    let keep = kept.names();
    let mut out = Zeroizing::new(String::new());
    for name in tracked.names().difference(&keep) {
        let _ = match shell {
            HookShell::Bash | HookShell::Zsh => writeln!(out, "unset {name}"),
            HookShell::Fish => writeln!(out, "set -eg {name}"),
        };
    }
    for (name, var) in &values {
        let _ = match shell {
            HookShell::Bash | HookShell::Zsh => writeln!(out, "export {name}={}", posix_quote(&var.value)),
            HookShell::Fish => writeln!(out, "set -gx {name} {}", fish_quote(&var.value)),
        };
    }
    let rendered = kept.render();
    let deadline = kept.0.iter().map(|grant| grant.deadline).min();
    let _ = match shell {
        HookShell::Bash | HookShell::Zsh => if rendered.is_empty() {
            writeln!(out, "unset {TRACK_VAR}")
        } else {
            writeln!(out, "export {TRACK_VAR}={}", posix_quote(&rendered))
        }
        .and_then(|()| writeln!(out, "{STATE_VAR}={}", posix_quote(state)))
        .and_then(|()| match deadline {
            Some(deadline) => writeln!(out, "{DEADLINE_VAR}={deadline}"),
            None => writeln!(out, "unset {DEADLINE_VAR}"),
        }),
        HookShell::Fish => if rendered.is_empty() {
            writeln!(out, "set -eg {TRACK_VAR}")
        } else {
            writeln!(out, "set -gx {TRACK_VAR} {}", fish_quote(&rendered))
        }
        .and_then(|()| writeln!(out, "set -g {STATE_VAR} {}", fish_quote(state)))
        .and_then(|()| match deadline {
            Some(deadline) => writeln!(out, "set -g {DEADLINE_VAR} {deadline}"),
            None => writeln!(out, "set -eg {DEADLINE_VAR}"),
        }),
    };
    out
}

#[cfg(test)]
mod tests {
    use hourglass_core::GrantId;

    use super::*;
    use crate::agent::protocol::HookGrant;

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar { name: name.into(), value: value.into(), secret: true }
    }

    fn snapshot(grants: Vec<HookGrant>) -> HookSnapshot {
        HookSnapshot { state: "1:b:7".into(), grants }
    }

    fn run_bash(script: &str) -> String {
        let output = std::process::Command::new("bash").arg("-c").arg(script).output().expect("bash runs");
        assert!(output.status.success(), "bash failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    #[test]
    fn a_new_grant_is_exported_and_tracked() {
        let id = GrantId::from_random(1);
        let snap = snapshot(vec![HookGrant { id: id.clone(), deadline: 2000, env: vec![var("A_TOKEN", "it's")] }]);
        let out = hook_env(HookShell::Bash, &Tracked::default(), Some(&snap), "", 1000);
        let printed = run_bash(&format!(
            "{}printf '%s|%s|%s|%s' \"$A_TOKEN\" \"$HOURGLASS_HOOK\" \"$_HOURGLASS_STATE\" \"$_HOURGLASS_DEADLINE\"",
            *out
        ));
        assert_eq!(printed, format!("it's|{id}=2000:A_TOKEN|1:b:7|2000"), "value, tracking, state, deadline");
    }

    #[test]
    fn an_ended_grant_is_unset_and_a_shared_name_falls_back_to_the_older_grant() {
        let (old, new) = (GrantId::from_random(1), GrantId::from_random(2));
        let tracked = Tracked::parse(&format!("{old}=3000:PGUSER,OLD_ONLY;{new}=2000:PGUSER,NEW_ONLY"));
        let snap = snapshot(vec![HookGrant {
            id: old.clone(),
            deadline: 3000,
            env: vec![var("PGUSER", "old"), var("OLD_ONLY", "o")],
        }]);
        let out = hook_env(HookShell::Bash, &tracked, Some(&snap), "", 2500);
        let printed = run_bash(&format!(
            "export NEW_ONLY=n PGUSER=new\n{}printf '%s|%s|%s' \"${{NEW_ONLY-unset}}\" \"$PGUSER\" \"$HOURGLASS_HOOK\"",
            *out
        ));
        assert_eq!(printed, format!("unset|old|{old}=3000:PGUSER,OLD_ONLY"), "the newer grant's value is gone");
    }

    #[test]
    fn with_the_agent_down_only_grants_past_their_deadline_are_removed() {
        let (a, b) = (GrantId::from_random(1), GrantId::from_random(2));
        let tracked = Tracked::parse(&format!("{a}=1000:A_TOKEN;{b}=5000:B_TOKEN"));
        let out = hook_env(HookShell::Bash, &tracked, None, "1:old:3", 1000);
        let printed = run_bash(&format!(
            "export A_TOKEN=a B_TOKEN=b\n{}printf '%s|%s|%s|%s|%s' \"${{A_TOKEN-unset}}\" \"$B_TOKEN\" \"$HOURGLASS_HOOK\" \"$_HOURGLASS_STATE\" \"$_HOURGLASS_DEADLINE\"",
            *out
        ));
        assert_eq!(printed, format!("unset|b|{b}=5000:B_TOKEN|1:old:3|5000"), "a is due at 1000, b stays");
    }

    #[test]
    fn names_the_hook_uses_itself_or_shells_cannot_take_are_never_exported() {
        let id = GrantId::from_random(1);
        let snap = snapshot(vec![HookGrant {
            id,
            deadline: 2000,
            env: vec![var("HOURGLASS_HOOK", "x"), var("BAD-NAME", "x"), var("GOOD", "y")],
        }]);
        let out = hook_env(HookShell::Zsh, &Tracked::default(), Some(&snap), "", 1000);
        assert!(!out.contains("BAD-NAME") && !out.contains("HOURGLASS_HOOK='x'"), "skipped: {}", *out);
        assert!(out.contains("export GOOD='y'"), "kept: {}", *out);
    }

    #[test]
    fn fish_output_uses_fish_syntax() {
        let id = GrantId::from_random(1);
        let tracked = Tracked::parse(&format!("{id}=10:OLD"));
        let snap = snapshot(vec![HookGrant { id: id.clone(), deadline: 2000, env: vec![var("A", "x'y")] }]);
        let out = hook_env(HookShell::Fish, &tracked, Some(&snap), "", 1000);
        assert_eq!(
            out.as_str(),
            format!(
                "set -eg OLD\nset -gx A 'x\\'y'\nset -gx HOURGLASS_HOOK '{id}=2000:A'\nset -g _HOURGLASS_STATE '1:b:7'\nset -g _HOURGLASS_DEADLINE 2000\n"
            ),
            "fish lines"
        );
    }

    #[test]
    fn tracking_round_trips() {
        let text = "grt-aaaaaaaaaa=100:A,B;grt-bbbbbbbbbb=200:C";
        assert_eq!(Tracked::parse(text).render(), text, "parse and render agree");
        assert_eq!(Tracked::parse("garbage;;x=y").0, Vec::new(), "malformed entries are skipped");
    }

    #[test]
    fn the_bash_hook_installs_once_and_does_not_run_hook_env_when_nothing_changed() {
        let dir = std::env::temp_dir().join(format!("hourglass-hook-test-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("dir");
        let state = dir.join("hook-state");
        std::fs::write(&state, "1:b:7\n").expect("state");
        // A stand-in for `hourglass` that records each call.
        let exe = dir.join("fake-hourglass");
        std::fs::write(
            &exe,
            format!("#!/bin/sh\necho called >> '{}'/calls\necho \"_HOURGLASS_STATE='1:b:7'\"\n", dir.display()),
        )
        .expect("fake");
        std::process::Command::new("chmod").arg("+x").arg(&exe).status().expect("chmod");
        let hook = script(HookShell::Bash, &exe, &state);
        run_bash(&format!(
            "{hook}\n{hook}\n[ \"$PROMPT_COMMAND\" = _hourglass_hook ] || exit 3\n_hourglass_hook; _hourglass_hook; _hourglass_hook"
        ));
        let calls = std::fs::read_to_string(dir.join("calls")).unwrap_or_default();
        assert_eq!(calls.lines().count(), 1, "hook-env ran for the change only, not on every prompt");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
