//! The audit log against someone who can write to the store: the broker
//! signs checkpoints of the chain's head with a key the store never holds,
//! and `hourglassd audit verify` catches a log cut short or rewritten with
//! every hash recomputed — which the hash chain alone cannot.

use std::path::Path;
use std::time::Duration;

use hourglass_core::audit::{AuditEvent, chain_hash, from_hex, to_hex};
use hourglass_e2e::{DevBroker, Run, eventually};

/// The last event number in the store.
fn head(db: &Path) -> u64 {
    let db = rusqlite::Connection::open(db).expect("the store opens");
    let seq: i64 = db.query_row("SELECT coalesce(max(seq), 0) FROM audit", [], |row| row.get(0)).expect("the head");
    u64::try_from(seq).expect("a number")
}

/// The last checkpoint's event number, if there is one.
fn last_checkpoint(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let line: serde_json::Value = serde_json::from_str(text.lines().last()?).ok()?;
    line["seq"].as_u64()
}

/// Folds the write-ahead log into the store's file, so that the file is
/// the whole store (to copy it, or after an edit).
fn settle(db: &rusqlite::Connection) {
    db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).expect("the WAL folded in");
}

/// Keeps only events up to `keep`, and the chain row with them: the chain verifies.
fn truncate(db: &Path, keep: u64) {
    let db = rusqlite::Connection::open(db).expect("the store opens");
    let keep = i64::try_from(keep).expect("a number");
    db.execute("DELETE FROM audit WHERE seq > ?1", [keep]).expect("cut");
    db.execute("UPDATE chain SET audit_seq = ?1, audit_hash = (SELECT hash FROM audit WHERE seq = ?1)", [keep])
        .expect("the chain row follows");
    settle(&db);
}

/// Changes event `seq`'s reason and recomputes every hash from it on: the
/// chain verifies.
fn rewrite(db: &Path, seq: u64) {
    let db = rusqlite::Connection::open(db).expect("the store opens");
    let rows: Vec<(i64, String)> = {
        let mut statement = db.prepare("SELECT seq, event FROM audit WHERE seq >= ?1 ORDER BY seq").expect("a query");
        let rows = statement.query_map([i64::try_from(seq).unwrap()], |row| Ok((row.get(0)?, row.get(1)?)));
        rows.expect("rows").collect::<Result<_, _>>().expect("rows")
    };
    let prev: String = db
        .query_row("SELECT prev_hash FROM audit WHERE seq = ?1", [i64::try_from(seq).unwrap()], |row| row.get(0))
        .expect("prev");
    let mut prev = from_hex(&prev).expect("a hash");
    for (at, text) in rows {
        let mut event: AuditEvent = serde_json::from_str(&text).expect("an event");
        if at == i64::try_from(seq).unwrap() {
            event.reason = Some("nothing to see here".into());
        }
        let canonical = event.canonical();
        let hash = chain_hash(&prev, &canonical);
        db.execute(
            "UPDATE audit SET event = ?1, prev_hash = ?2, hash = ?3 WHERE seq = ?4",
            rusqlite::params![canonical, to_hex(&prev), to_hex(&hash), at],
        )
        .expect("rewritten");
        db.execute("UPDATE chain SET audit_hash = ?1 WHERE audit_seq = ?2", rusqlite::params![to_hex(&hash), at])
            .expect("the chain row follows");
        prev = hash;
    }
    settle(&db);
}

fn verify(data: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["audit", "verify", "--data-dir", data.to_str().unwrap()];
    args.extend_from_slice(extra);
    Run::from(std::process::Command::new(hourglass_e2e::bin("hourglassd")).args(&args).output().expect("runs"))
}

#[test]
fn audit_verify_catches_a_log_cut_short_or_rewritten_against_the_signed_checkpoints() {
    let mut broker = DevBroker::start();
    for (who, resource, role) in
        [("alice", "orders-api", "read"), ("dave", "orders-api", "read"), ("alice", "staging-api", "deploy")]
    {
        broker.json(who, &["request", resource, "--role", role, "--for", "10m", "--reason", "look at order 1"]);
    }
    let data = broker.data_dir.clone();
    let db = data.join("hourglass.db");
    let file = data.join("audit-checkpoints.jsonl");
    let signed = eventually(Duration::from_secs(30), || last_checkpoint(&file).filter(|seq| *seq == head(&db)));
    let signed = signed.expect("the broker signs a checkpoint of the head within seconds");
    broker.kill();
    let intact = verify(&data, &[]);
    assert!(intact.ok && intact.stdout.contains("signed checkpoints agree"), "{}{}", intact.stdout, intact.stderr);

    // The same log for a SIEM: OCSF events and ECS documents, a line each.
    let export = |format: &str| -> Vec<serde_json::Value> {
        let run = Run::from(
            std::process::Command::new(hourglass_e2e::bin("hourglassd"))
                .args(["audit", "export", "--data-dir", data.to_str().unwrap(), "--format", format])
                .output()
                .expect("runs"),
        );
        assert!(run.ok, "export --format {format}: {}", run.stderr);
        run.stdout.lines().map(|line| serde_json::from_str(line).expect("a JSON line")).collect()
    };
    let ocsf = export("ocsf");
    assert_eq!(ocsf.len() as u64, signed, "one OCSF event per record");
    let issued = ocsf.iter().find(|e| e["unmapped"]["action"] == "grant.issued").expect("a grant was issued");
    assert_eq!((issued["class_uid"].as_u64(), issued["type_uid"].as_u64()), (Some(3005), Some(300_501)), "{issued}");
    assert_eq!(issued["user"]["name"], "alice@acme.example", "to its owner: {issued}");
    let ecs = export("ecs");
    assert!(
        ecs.iter().any(|d| d["event"]["action"] == "grant.issued" && d["event"]["outcome"] == "success"),
        "ECS too"
    );
    settle(&rusqlite::Connection::open(&db).expect("the store opens"));
    let pristine = std::fs::read(&db).expect("the store's file");
    let no_checkpoints = data.join("none.jsonl");
    std::fs::write(&no_checkpoints, "").expect("an empty checkpoints file");

    // The last events deleted, the chain row set back: the chain alone verifies.
    truncate(&db, signed - 2);
    let chain_only = verify(&data, &["--checkpoints", no_checkpoints.to_str().unwrap()]);
    assert!(chain_only.ok, "a cut end is invisible to the chain alone: {}{}", chain_only.stdout, chain_only.stderr);
    let cut = verify(&data, &[]);
    assert!(!cut.ok, "verify fails on a truncated log: {}", cut.stdout);
    assert!(
        cut.stderr.contains(&format!("covers event {signed}, but the store ends at event {}", signed - 2)),
        "it says the log was cut and where: {}",
        cut.stderr
    );

    // An early event rewritten and every hash after it recomputed.
    std::fs::write(&db, &pristine).expect("the store restored");
    for side in ["hourglass.db-wal", "hourglass.db-shm"] {
        let _ = std::fs::remove_file(data.join(side));
    }
    rewrite(&db, 2);
    let chain_only = verify(&data, &["--checkpoints", no_checkpoints.to_str().unwrap()]);
    assert!(chain_only.ok, "a recomputed chain verifies alone: {}{}", chain_only.stdout, chain_only.stderr);
    let rewritten = verify(&data, &[]);
    assert!(!rewritten.ok && rewritten.stderr.contains("audit log rewritten"), "{}", rewritten.stderr);

    // A checkpoint file edited to match is refused: the signature does not verify.
    let text = std::fs::read_to_string(&file).expect("the checkpoints");
    let forged = text.replacen("\"seq\":", "\"seq\":1", 1);
    std::fs::write(&file, forged).expect("forged");
    let refused = verify(&data, &[]);
    assert!(!refused.ok && refused.stderr.contains("signature does not verify"), "{}", refused.stderr);
}
