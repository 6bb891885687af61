//! The store's disk full: the broker's data directory on a small tmpfs the
//! test fills. The broker refuses new work with a clear `unavailable`
//! (503) naming the store, keeps serving reads and the event stream, and
//! once space returns carries on where it was, the store sound and the
//! audit chain intact. Then the disk read-only: the audit chain verifies,
//! and no broker starts on it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hourglass_core::api::{ErrorCode, EventKind};
use hourglass_e2e::{DevBroker, eventually};

use super::{StoreFile, assert_audit_intact};

/// A tmpfs of `size` mounted on a fresh directory; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` where mounting is not allowed (not root, no CAP_SYS_ADMIN).
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "hourglass-test"])
            .arg(dir.path())
            .output()
            .is_ok_and(|o| o.status.success());
        mounted.then_some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Remounts it read-only (refused while a file is open for writing).
    fn read_only(&self) {
        let output = Command::new("mount").args(["-o", "remount,ro"]).arg(self.path()).output().expect("mount runs");
        assert!(output.status.success(), "remounted read-only: {}", String::from_utf8_lossy(&output.stderr));
    }

    /// Writes zeros to `name` until the disk is full.
    fn fill(&self, name: &str) -> PathBuf {
        let path = self.path().join(name);
        let mut file = std::fs::File::create(&path).expect("filler file");
        let block = vec![0_u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        let mut small = [0_u8; 512];
        small.fill(0);
        while file.write_all(&small).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn store_disk_full_refuses_writes_and_serves_reads_then_read_only_refuses_to_start() {
    let Some(disk) = Tmpfs::mount("16m") else {
        eprintln!(
            "store_disk_full_refuses_writes_and_serves_reads_then_read_only_refuses_to_start: SKIPPED, cannot mount a tmpfs (needs root)"
        );
        return;
    };
    let data = disk.path().join("data");
    let mut broker = DevBroker::start_in(&data);
    let alice = broker.client("alice");
    let bob = broker.client("bob");
    let dave = broker.client("dave");
    let body = |resource: &str, role: &str, duration: &str| hourglass_core::api::CreateRequest {
        resource: resource.into(),
        role: role.into(),
        duration: duration.into(),
        reason: "disk full test".into(),
        ticket: None,
        break_glass: false,
        client_material: None,
    };
    let live = alice.create_request(&body("orders-api", "read", "1h")).await.expect("a grant").grant.expect("issued");
    let waiting = alice.create_request(&body("orders-api", "write", "30m")).await.expect("a pending request").request;
    let short = alice.create_request(&body("staging-api", "deploy", "5s")).await.expect("short").grant.expect("issued");
    let mut events = std::pin::pin!(alice.events().await.expect("the event stream"));
    let _ = futures::StreamExt::next(&mut events).await;

    let filler = disk.fill("filler");
    // New work is refused with a clear error; nothing is half-done.
    let requests_before = StoreFile::open(&data).count("SELECT COUNT(*) FROM requests");
    let refused = [
        dave.create_request(&body("staging-api", "deploy", "10m")).await.map(|_| ()),
        bob.approve(&waiting.id, None).await.map(|_| ()),
        alice.revoke(&live.id, None).await.map(|_| ()),
    ];
    for outcome in refused {
        let error = outcome.expect_err("a write on a full disk is refused");
        assert_eq!(error.code(), Some(ErrorCode::Unavailable), "503 unavailable: {error}");
        assert!(
            error.to_string().contains("the broker's store refuses writes (its disk is full)"),
            "names the store and why: {error}"
        );
    }
    let cli = broker.hourglass("dave", &["request", "staging-api", "--role", "deploy", "--for", "10m"]);
    assert!(!cli.ok && cli.stderr.contains("store refuses writes"), "the CLI says so: {}", cli.stderr);
    assert_eq!(
        StoreFile::open(&data).count("SELECT COUNT(*) FROM requests"),
        requests_before,
        "a refused request left nothing behind"
    );

    // Reads go on: grants, requests, the event stream, health.
    let grants = alice.grants(false, false).await.expect("grants are listed on a full disk").grants;
    assert!(grants.iter().any(|g| g.id == live.id), "the live grant is listed: {grants:?}");
    let mine = alice.requests().await.expect("requests are listed on a full disk").mine;
    assert!(mine.iter().any(|r| r.id == waiting.id), "the pending request is listed");
    assert_eq!(alice.grant(&live.id).await.expect("one grant").id, live.id, "one grant is read");
    alice.health().await.expect("healthy enough to answer");
    let fresh = alice.events().await.expect("a new event stream opens on a full disk");
    let mut fresh = std::pin::pin!(fresh);
    let hello = futures::StreamExt::next(&mut fresh).await.expect("an event").expect("hello");
    assert_eq!(hello.kind, EventKind::Hello, "the stream says hello");

    // The short grant's deadline passes while nothing can be written.
    let passed = eventually(Duration::from_secs(15), || {
        (super::now_millis() > short.expires_at.unix_millis() + 1500).then_some(())
    });
    assert!(passed.is_some(), "the short grant's deadline passes on a full disk");

    // Space returns: the broker carries on, and catches up with the expiry.
    std::fs::remove_file(filler).expect("space freed");
    let approved = eventually(Duration::from_secs(10), || {
        tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(bob.approve(&waiting.id, None))).ok()
    })
    .expect("writes work again once space returns");
    assert!(approved.grant.is_some(), "the approval issued its grant: {approved:?}");
    dave.create_request(&body("staging-api", "deploy", "10m")).await.expect("new requests work again");
    let expired = eventually(Duration::from_secs(10), || {
        let grant =
            tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(alice.grant(&short.id))).ok()?;
        grant.revocation.clone().filter(|r| r.status == hourglass_core::RevocationStatus::Done).map(|_| grant)
    })
    .expect("the expiry missed while the disk was full is caught up");
    assert_eq!(expired.ended_at, Some(short.expires_at), "ended at its deadline: {expired:?}");

    assert_eq!(StoreFile::open(&data).integrity(), "ok", "the store's file is sound");
    assert_audit_intact(&data);
    broker.restart();
    assert_audit_intact(&data);

    // Read-only (Linux remounts read-only only once no file is open for
    // writing, so with the broker stopped): the audit log still verifies,
    // and a broker refuses to start on it, saying why.
    broker.kill();
    disk.read_only();
    assert_audit_intact(&data);
    let mut start = Command::new(hourglass_e2e::bin("hourglassd"))
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("hourglassd runs");
    let exited = eventually(Duration::from_secs(20), || start.try_wait().ok().flatten());
    if exited.is_none() {
        let _ = start.kill();
    }
    let output = start.wait_with_output().expect("hourglassd output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(exited.is_some_and(|status| !status.success()), "no broker on a read-only store: {stderr}");
    // The first file it cannot write (a key or the store) is named, with why.
    let named = stderr.contains(data.to_str().expect("a UTF-8 path"));
    let why = stderr.contains("Read-only file system") || stderr.contains("for writing");
    assert!(named && why, "names the file and what failed: {stderr}");
}
