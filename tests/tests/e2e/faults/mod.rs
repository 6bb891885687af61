//! Faults survived: the broker killed (SIGKILL) at any point of the
//! lifecycle, targets down or hanging, the store's disk full, the client
//! cut off from the broker. Each test injects the fault into real
//! components and checks the promises afterwards from the outside: the
//! store, the audit chain, the target, the agent. SECURITY.md ("Faults")
//! lists what is injected and what is proven.

mod agent;
mod crash;
mod store;
mod targets;

use std::path::Path;

use hourglass_core::{AccessRequest, Grant};

/// Copies a test hook into the policy directory, where the policy's
/// relative `hooks/NAME` resolves, and makes it executable.
fn install_hook(policy: &Path, name: &str) {
    use std::os::unix::fs::PermissionsExt;
    let hook = policy.join("hooks").join(name);
    std::fs::create_dir_all(hook.parent().expect("hooks dir")).expect("hooks dir");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("hooks").join(name), &hook).expect("hook copied");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("hook made executable");
}

/// The broker's store as it is on disk, read with a connection of our own
/// (read-only: the broker may be running on it).
struct StoreFile {
    connection: rusqlite::Connection,
}

impl StoreFile {
    fn open(data_dir: &Path) -> StoreFile {
        let connection = rusqlite::Connection::open_with_flags(
            data_dir.join("hourglass.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .expect("the store opens read-only");
        connection.busy_timeout(std::time::Duration::from_secs(10)).expect("busy timeout");
        StoreFile { connection }
    }

    fn docs<T: serde::de::DeserializeOwned>(&self, sql: &str) -> Vec<T> {
        let mut statement = self.connection.prepare(sql).expect("query prepares");
        let rows = statement.query_map([], |row| row.get::<_, String>(0)).expect("query runs");
        rows.map(|doc| serde_json::from_str(&doc.expect("row")).expect("a stored document parses")).collect()
    }

    fn grants(&self) -> Vec<Grant> {
        self.docs("SELECT doc FROM grants ORDER BY expires_at")
    }

    fn requests(&self) -> Vec<AccessRequest> {
        self.docs("SELECT doc FROM requests ORDER BY created_at")
    }

    fn count(&self, sql: &str) -> i64 {
        self.connection.query_row(sql, [], |row| row.get(0)).expect("count")
    }

    /// `PRAGMA integrity_check`: "ok" for a sound database file.
    fn integrity(&self) -> String {
        self.connection.query_row("PRAGMA integrity_check", [], |row| row.get(0)).expect("integrity_check runs")
    }
}

/// `hourglassd audit verify` on the data directory must find the chain intact.
pub(crate) fn assert_audit_intact(data_dir: &Path) {
    let output = std::process::Command::new(hourglass_e2e::bin("hourglassd"))
        .args(["audit", "verify", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("hourglassd audit verify runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("intact"),
        "the audit chain verifies: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The audit log, one JSON event per line.
pub(crate) fn audit_events(data_dir: &Path) -> Vec<serde_json::Value> {
    let output = std::process::Command::new(hourglass_e2e::bin("hourglassd"))
        .args(["audit", "export", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("hourglassd audit export runs");
    assert!(output.status.success(), "audit export: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect()
}

fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The seed of a test's random fault schedule: `HOURGLASS_FAULT_SEED` to
/// replay one, else a fresh one. Printed, so that a failure names it.
fn seed(test: &str) -> u64 {
    let seed = std::env::var("HOURGLASS_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_millis().unsigned_abs() ^ u64::from(std::process::id()));
    eprintln!("{test}: fault schedule seed {seed} (HOURGLASS_FAULT_SEED={seed} replays it)");
    seed
}
