//! Where the agent lives on this machine: one private directory per user,
//! `$XDG_RUNTIME_DIR/hourglass` (or `/tmp/hourglass-$UID` without one),
//! mode 0700, holding the socket (0600), the hook state file and the log.

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::protocol::{AgentError, AgentErrorCode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub dir: PathBuf,
}

/// This process's user id: whose agent this is, and the one peer it answers.
#[cfg(unix)]
pub fn my_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

fn failed(message: String) -> crate::Error {
    crate::Error::Agent(AgentError::new(AgentErrorCode::Failed, message))
}

impl Paths {
    /// `$XDG_RUNTIME_DIR/hourglass`, else `/tmp/hourglass-$UID`.
    pub fn from_env() -> Paths {
        let runtime = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).filter(|dir| dir.is_absolute());
        match runtime {
            Some(dir) => Paths { dir: dir.join("hourglass") },
            #[cfg(unix)]
            None => Paths { dir: PathBuf::from(format!("/tmp/hourglass-{}", my_uid())) },
            #[cfg(not(unix))]
            None => Paths { dir: std::env::temp_dir().join("hourglass") },
        }
    }

    pub fn in_dir(dir: &Path) -> Paths {
        Paths { dir: dir.to_path_buf() }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }

    /// The prompt hook's state file: one non-secret line that changes
    /// whenever what the hook exports changes.
    pub fn hook_state(&self) -> PathBuf {
        self.dir.join("hook-state")
    }

    /// Where a self-started agent writes its notes.
    pub fn log(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    /// Creates the directory (0700) if needed, then checks it.
    #[cfg(unix)]
    pub fn prepare(&self) -> crate::Result<()> {
        match std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir) {
            Ok(()) => {}
            Err(error) => return Err(failed(format!("cannot create {}: {error}", self.dir.display()))),
        }
        let meta = std::fs::symlink_metadata(&self.dir)
            .map_err(|error| failed(format!("cannot read {}: {error}", self.dir.display())))?;
        if meta.is_dir() && meta.uid() == my_uid() && meta.mode() & 0o077 != 0 {
            std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|error| failed(format!("cannot make {} private: {error}", self.dir.display())))?;
        }
        self.verify()
    }

    /// Checks that the directory is ours and private: a directory (not a
    /// link), owned by this user, with no access for anyone else. Under a
    /// shared `/tmp` this is what stops another user from planting a socket
    /// that would collect our secrets.
    #[cfg(unix)]
    pub fn verify(&self) -> crate::Result<()> {
        let meta = match std::fs::symlink_metadata(&self.dir) {
            Ok(meta) => meta,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(crate::Error::Agent(not_running(self, "no agent directory for")));
            }
            Err(error) => return Err(failed(format!("cannot read {}: {error}", self.dir.display()))),
        };
        if !meta.is_dir() {
            return Err(failed(format!("{} is not a directory (a link?): refusing to use it", self.dir.display())));
        }
        if meta.uid() != my_uid() {
            return Err(crate::Error::Agent(AgentError::new(
                AgentErrorCode::Forbidden,
                format!(
                    "{} belongs to uid {}, not to you (uid {}): refusing to use it",
                    self.dir.display(),
                    meta.uid(),
                    my_uid()
                ),
            )));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(failed(format!(
                "{} is open to other users (mode {:o}); it must be 0700",
                self.dir.display(),
                meta.mode() & 0o777
            )));
        }
        Ok(())
    }
}

/// The agent is Unix only: it serves over a Unix domain socket and checks
/// each peer's uid, which other platforms' sockets do not offer alike.
#[cfg(not(unix))]
impl Paths {
    pub fn prepare(&self) -> crate::Result<()> {
        Err(crate::Error::Agent(unsupported()))
    }

    pub fn verify(&self) -> crate::Result<()> {
        Err(crate::Error::Agent(unsupported()))
    }
}

/// Why there is no agent on this platform. `not_running`'s code: a caller
/// that can do without it (a token grant's credential from the broker) does.
#[cfg(not(unix))]
pub(crate) fn unsupported() -> AgentError {
    AgentError::new(
        AgentErrorCode::NotRunning,
        "the hourglass agent runs on Unix only (a Unix domain socket whose peer it checks): not on this platform",
    )
}

pub(crate) fn not_running(paths: &Paths, why: &str) -> AgentError {
    AgentError::new(
        AgentErrorCode::NotRunning,
        format!(
            "the hourglass agent is not running ({why} {}): start it with `hourglass agent --daemon`",
            paths.socket().display()
        ),
    )
}
