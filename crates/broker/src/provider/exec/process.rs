//! Running a hook: its own process group (killed on timeout and after it
//! exits), stdout read up to a cap, the tail of stderr kept for errors.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt};
use zeroize::{Zeroize, Zeroizing};

/// A hook's process group: killed on drop unless disarmed, so that a hook
/// abandoned mid-run (the broker's own timeout, shutdown) leaves nothing.
///
/// Killing a group needs `kill(2)` with a negative id, which safe `std`
/// does not offer; the shell's `kill` builtin does it without a dependency.
pub(super) struct ProcessGroup {
    pub(super) id: Option<u32>,
    pub(super) armed: AtomicBool,
}

pub(super) const KILL_SCRIPT: &str = "kill -s KILL -- \"-$1\" 2>/dev/null";

impl ProcessGroup {
    pub(super) fn new(id: Option<u32>) -> ProcessGroup {
        ProcessGroup { id, armed: AtomicBool::new(true) }
    }

    pub(super) async fn kill(&self) {
        let Some(id) = self.id else { return };
        let _ = tokio::process::Command::new("/bin/sh")
            .args(["-c", KILL_SCRIPT, "hourglass-kill", &id.to_string()])
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }

    pub(super) fn disarm(&self) {
        self.armed.store(false, Ordering::SeqCst);
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(id) = self.id
            && self.armed.load(Ordering::SeqCst)
        {
            // Blocks for the few milliseconds a shell takes: drop cannot await.
            let _ = std::process::Command::new("/bin/sh")
                .args(["-c", KILL_SCRIPT, "hourglass-kill", &id.to_string()])
                .env_clear()
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Reads all of `reader`, killing the hook if it prints more than `cap`.
pub(super) async fn read_capped(
    mut reader: impl AsyncRead + Unpin,
    cap: usize,
    group: &ProcessGroup,
) -> Result<Zeroizing<Vec<u8>>, String> {
    let mut out = Zeroizing::new(Vec::with_capacity(16 * 1024));
    let mut chunk = [0_u8; 8192];
    let result = loop {
        let read = match reader.read(&mut chunk).await {
            Ok(0) => break Ok(()),
            Ok(read) => read,
            Err(error) => break Err(format!("failed: its stdout could not be read: {}", error.kind())),
        };
        if out.len() + read > cap {
            group.kill().await;
            break Err(format!("printed more than {} KiB on stdout and was killed", cap / 1024));
        }
        if out.len() + read > out.capacity() {
            // Grow by copying into a new buffer, so that the old one is zeroized.
            let mut bigger = Zeroizing::new(Vec::with_capacity((out.capacity() * 2).max(out.len() + read)));
            bigger.extend_from_slice(&out);
            out = bigger;
        }
        out.extend_from_slice(&chunk[..read]);
    };
    chunk.zeroize();
    result.map(|()| out)
}

/// The end of a hook's stderr.
#[derive(Default)]
pub(super) struct Tail {
    pub(super) bytes: Vec<u8>,
    pub(super) truncated: bool,
}

impl Tail {
    /// `": <stderr>"` for an error message, or `""` when there was none.
    pub(super) fn describe(&self) -> String {
        let text = clean_stderr(&self.bytes);
        if text.is_empty() {
            String::new()
        } else if self.truncated {
            format!(": …{text}")
        } else {
            format!(": {text}")
        }
    }
}

pub(super) async fn read_tail(mut reader: impl AsyncRead + Unpin, keep: usize) -> Tail {
    let mut tail = Tail::default();
    let mut chunk = [0_u8; 8192];
    while let Ok(read) = reader.read(&mut chunk).await
        && read > 0
    {
        tail.bytes.extend_from_slice(&chunk[..read]);
        if tail.bytes.len() > keep {
            let excess = tail.bytes.len() - keep;
            tail.bytes.drain(..excess);
            tail.truncated = true;
        }
    }
    tail
}

/// Stderr as text safe for an error message, a terminal and the audit log:
/// UTF-8 (lossy), escape sequences and control characters removed except
/// line breaks and tabs, blank lines and outer space trimmed.
pub(super) fn clean_stderr(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI (`ESC [ … final`): skip it whole; other escapes lose the ESC.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for next in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&next) {
                            break;
                        }
                    }
                }
            }
            '\n' | '\t' => out.push(c),
            '\r' => {}
            // Bidirectional overrides could make the text read differently.
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {}
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    let lines: Vec<&str> = out.lines().map(str::trim_end).filter(|line| !line.trim().is_empty()).collect();
    lines.join("\n").trim().to_owned()
}

/// The local user a hook runs as (`run_as`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RunAs {
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) home: String,
}

impl RunAs {
    /// `user` as /etc/passwd names it, or `UID` (its group from
    /// /etc/passwd when listed there, else the same number), or `UID:GID`.
    pub(super) fn look_up(user: &str) -> Result<RunAs, String> {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        RunAs::from_passwd(user, &passwd)
    }

    fn from_passwd(user: &str, passwd: &str) -> Result<RunAs, String> {
        let entries = passwd.lines().filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let (uid, gid) = (fields.get(2)?.parse::<u32>().ok()?, fields.get(3)?.parse::<u32>().ok()?);
            Some((*fields.first()?, uid, gid, fields.get(5).copied().unwrap_or("/")))
        });
        let numbers = match user.split_once(':') {
            Some((uid, gid)) => uid.parse::<u32>().ok().zip(gid.parse::<u32>().ok()),
            None => user.parse::<u32>().ok().map(|uid| (uid, uid)),
        };
        let found = match numbers {
            Some((uid, gid)) => {
                let listed = entries.clone().find(|(_, listed, _, _)| *listed == uid);
                let gid = if user.contains(':') { gid } else { listed.map_or(gid, |(_, _, gid, _)| gid) };
                Some(RunAs { uid, gid, home: listed.map_or("/", |(_, _, _, home)| home).to_owned() })
            }
            None => entries.clone().find(|(name, ..)| *name == user).map(|(_, uid, gid, home)| RunAs {
                uid,
                gid,
                home: home.to_owned(),
            }),
        };
        match found {
            // The point is to be someone else than the broker: never root.
            Some(run_as) if run_as.uid == 0 => {
                Err(format!("run_as \"{user}\" is root: name a user of its own for the hook"))
            }
            Some(run_as) => Ok(run_as),
            None => Err(format!("run_as \"{user}\" is no local user (not in /etc/passwd; a number works too)")),
        }
    }

    /// setpriv's arguments that switch to this user, without its groups.
    pub(super) fn setpriv_args(&self) -> [String; 3] {
        [format!("--reuid={}", self.uid), format!("--regid={}", self.gid), "--clear-groups".to_owned()]
    }
}

/// `setpriv --pdeathsig KILL`, when this system has it: a hook then dies
/// with the broker (killed, crashed) instead of changing the target after a
/// restarted broker has already revoked the grant it acts for. (The parent
/// is the runtime worker thread that spawned it, which lives as long as the
/// broker.) A hook's own children are still killed with its process group
/// on timeout and exit.
pub(super) fn dies_with_broker() -> Option<&'static std::path::Path> {
    static SETPRIV: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    SETPRIV
        .get_or_init(|| ["/usr/bin/setpriv", "/bin/setpriv"].into_iter().map(PathBuf::from).find(|path| path.is_file()))
        .as_deref()
}

#[cfg(test)]
mod run_as_tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use super::RunAs;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\nhooks:x:990:985::/var/lib/hooks:/bin/false\n";

    #[test]
    fn run_as_names_a_local_user_by_name_or_number_and_never_root() {
        let hooks = RunAs { uid: 990, gid: 985, home: "/var/lib/hooks".into() };
        assert_eq!(RunAs::from_passwd("hooks", PASSWD).unwrap(), hooks);
        assert_eq!(RunAs::from_passwd("990", PASSWD).unwrap(), hooks, "a listed uid takes its group and home");
        assert_eq!(RunAs::from_passwd("4000:4000", PASSWD).unwrap(), RunAs { uid: 4000, gid: 4000, home: "/".into() });
        assert!(RunAs::from_passwd("ghost", PASSWD).unwrap_err().contains("no local user"));
        assert!(RunAs::from_passwd("root", PASSWD).unwrap_err().contains("is root"));
        assert!(RunAs::from_passwd("0", PASSWD).unwrap_err().contains("is root"));
    }
}
