//! What the state implies outside the agent, kept up to date by one task
//! that reconciles: the hook state file, identities in ssh-agent, the
//! managed `.pgpass` block. Every step is idempotent, so a failed one is
//! simply tried again at the next change or tick.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use hourglass_core::GrantId;
use tokio::sync::watch;

use super::Shared;
use super::state::{Desired, Secret};
use crate::atomic_write::{self, Durability};
use crate::clock::local_now;
use crate::pgpass;
use crate::ssh_agent::SshAgent;

/// Failed effects are retried at least this often.
const RETRY: StdDuration = StdDuration::from_secs(30);

struct Added {
    blob: Vec<u8>,
    certificate: String,
}

struct Effects {
    ssh: Option<SshAgent>,
    added: HashMap<GrantId, Added>,
    hook_written: Option<String>,
    warned_no_ssh_agent: bool,
    last_error: HashMap<&'static str, String>,
}

pub(crate) async fn run(shared: Arc<Shared>, mut desired: watch::Receiver<Desired>, mut done: watch::Receiver<bool>) {
    let mut effects = Effects {
        ssh: shared.ssh_auth_sock.as_deref().map(SshAgent::new),
        added: HashMap::new(),
        hook_written: None,
        warned_no_ssh_agent: false,
        last_error: HashMap::new(),
    };
    let mut tick = tokio::time::interval(RETRY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let current = desired.borrow_and_update().clone();
        effects.apply(&shared, &current).await;
        tokio::select! {
            changed = desired.changed() => if changed.is_err() { break },
            _ = tick.tick() => {}
            _ = done.changed() => break,
        }
    }
    effects.finish(&shared);
}

impl Effects {
    fn report(&mut self, shared: &Shared, what: &'static str, result: Result<(), String>) {
        match result {
            Ok(()) => {
                if self.last_error.remove(what).is_some() {
                    shared.note(&format!("{what}: working again"));
                }
            }
            Err(error) => {
                // Said once per distinct failure, not at every retry.
                if self.last_error.get(what) != Some(&error) {
                    shared.note(&format!("{what}: {error}"));
                    self.last_error.insert(what, error);
                }
            }
        }
    }

    async fn apply(&mut self, shared: &Shared, desired: &Desired) {
        if self.hook_written.as_deref() != Some(desired.hook_line.as_str()) {
            let written = write_hook_file(&shared.paths.hook_state(), &desired.hook_line);
            if written.is_ok() {
                self.hook_written = Some(desired.hook_line.clone());
            }
            self.report(shared, "hook state file", written);
        }
        let ssh = self.sync_ssh(shared, desired).await;
        self.report(shared, "ssh-agent", ssh);
        if let Some(path) = &shared.pgpass {
            let _file = shared.pgpass_file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let filled = pgpass::fill(path, &desired.pgpass)
                .map(|_| ())
                .map_err(|error| format!("cannot update {}: {error}", path.display()));
            self.report(shared, "pgpass", filled);
        }
    }

    async fn sync_ssh(&mut self, shared: &Shared, desired: &Desired) -> Result<(), String> {
        let Some(agent) = &self.ssh else {
            if !desired.ssh.is_empty() && !self.warned_no_ssh_agent {
                self.warned_no_ssh_agent = true;
                shared.note("no ssh-agent (SSH_AUTH_SOCK is not set): SSH grants' keys cannot be added to one");
            }
            return Ok(());
        };
        let mut problems = Vec::new();
        // Identities whose grant ended (or whose certificate changed) go first.
        let stale: Vec<GrantId> = self
            .added
            .iter()
            .filter(|(grant, added)| {
                !desired.ssh.iter().any(|id| &id.grant == *grant && id.certificate == added.certificate)
            })
            .map(|(grant, _)| grant.clone())
            .collect();
        for grant in stale {
            if let Some(added) = self.added.get(&grant) {
                match agent.remove(&added.blob).await {
                    Ok(()) => {
                        self.added.remove(&grant);
                    }
                    Err(error) => problems.push(format!("removing the key of {grant}: {error}")),
                }
            }
        }
        let now = local_now();
        for identity in &desired.ssh {
            if self.added.contains_key(&identity.grant) {
                continue;
            }
            let Secret::Ssh(key) = &*identity.key else { continue };
            // Rounded up: ssh-agent counts whole seconds from a clock it
            // rounds down, and the certificate's own valid_before is the
            // hard limit anyway.
            let millis = now.millis_until(identity.local_deadline);
            if millis < 1000 {
                continue;
            }
            let left = (millis + 999) / 1000;
            let lifetime = u32::try_from(left).unwrap_or(u32::MAX);
            match agent.add(key, &identity.certificate, &identity.comment, lifetime).await {
                Ok(blob) => {
                    shared.note(&format!("added the key of {} to ssh-agent for {lifetime}s", identity.grant));
                    self.added
                        .insert(identity.grant.clone(), Added { blob, certificate: identity.certificate.clone() });
                }
                Err(error) => problems.push(format!("adding the key of {}: {error}", identity.grant)),
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }

    /// On the way out: no hook file (shells fall back to their deadlines),
    /// no `.pgpass` lines (nobody would remove them at their deadline).
    /// Keys in ssh-agent stay: their lifetime removes them.
    fn finish(&mut self, shared: &Shared) {
        let _ = std::fs::remove_file(shared.paths.hook_state());
        let _file = shared.pgpass_file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(path) = &shared.pgpass
            && let Err(error) = pgpass::fill(path, &[])
        {
            shared.note(&format!("pgpass: cannot clear the managed block in {}: {error}", path.display()));
        }
    }
}

/// Writes the hook state line atomically (see [`crate::atomic_write`]), so
/// a shell reads either the old line or the new one. Not flushed: the
/// directory is a runtime one and the line is rewritten at every start.
fn write_hook_file(path: &Path, line: &str) -> Result<(), String> {
    atomic_write::write(path, format!("{line}\n").as_bytes(), Durability::Volatile)
        .map_err(|error| format!("cannot write {}: {error}", path.display()))
}
