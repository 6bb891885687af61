//! A bound on a whole test. libtest has none: a test stuck on a peer that
//! stopped answering (a WebDriver that dropped a command, a child that never
//! prints its address) would hold the run until CI's own limit and say
//! nothing about where. Armed at a test's start, the watchdog says which
//! test overran, then stops every process the test binary started, so that
//! what the test waits on fails and the test panics like any other failure;
//! if even that does not end it, it ends the test binary.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// How long the test binary is given, after its children are stopped, to
/// fail the overrunning test on its own.
const GRACE: Duration = Duration::from_secs(30);

/// Disarmed when dropped: at the end of the test, or as it unwinds.
pub struct Watchdog {
    _disarm: mpsc::Sender<()>,
}

/// What any one test is given: the slowest take a few minutes on a busy
/// machine.
pub const TEST_LIMIT: Duration = Duration::from_secs(600);

impl Watchdog {
    /// Arms a watchdog for the calling test for [`TEST_LIMIT`].
    pub fn for_test() -> Watchdog {
        Watchdog::arm(TEST_LIMIT)
    }

    /// Arms a watchdog for the calling test (named after its thread, as
    /// libtest names it) for `limit`.
    pub fn arm(limit: Duration) -> Watchdog {
        let test = std::thread::current().name().unwrap_or("a test").to_owned();
        let (disarm, disarmed) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if disarmed.recv_timeout(limit) != Err(RecvTimeoutError::Timeout) {
                return;
            }
            eprintln!(
                "WATCHDOG: {test} did not finish within {}s; stopping the processes the tests started",
                limit.as_secs()
            );
            for pid in descendants(std::process::id()) {
                let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
            if disarmed.recv_timeout(GRACE) == Err(RecvTimeoutError::Timeout) {
                eprintln!("WATCHDOG: {test} still runs; ending the test binary");
                std::process::exit(101);
            }
        });
        Watchdog { _disarm: disarm }
    }
}

/// Every process below `root`, children before their own children (read
/// from /proc: a process's fourth `stat` field is its parent).
fn descendants(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // The command name (second field) is in parentheses and may hold spaces.
        let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
        if let Some(parent) = after_name.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) {
            parents.push((pid, parent));
        }
    }
    let mut found = vec![root];
    let mut next = 0;
    while next < found.len() {
        let parent = found[next];
        found.extend(parents.iter().filter(|(_, p)| *p == parent).map(|(pid, _)| *pid));
        next += 1;
    }
    found.remove(0);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_finds_the_processes_a_test_started_and_their_children() {
        let mut child = std::process::Command::new("sh").args(["-c", "sleep 30 & wait"]).spawn().expect("sh starts");
        let sleep = crate::eventually(Duration::from_secs(10), || descendants(child.id()).first().copied());
        let below = descendants(std::process::id());
        if let Some(sleep) = sleep {
            let _ = std::process::Command::new("kill").arg(sleep.to_string()).status();
        }
        let _ = child.kill();
        let _ = child.wait();
        let sleep = sleep.expect("the shell's own child is found");
        assert!(below.contains(&child.id()) && below.contains(&sleep), "the child and its child: {below:?}");
    }
}
