//! A target that hangs during issue and revocation: PostgreSQL with its
//! role catalog locked by the test, so that `CREATE ROLE` and `ALTER ROLE`
//! wait, and the broker killed while they do. Issue fails cleanly (the
//! grant `failed`, no role left behind, now or once the lock is gone), an
//! issue the kill interrupted is finished after the restart with one role,
//! and revocation is retried with backoff, each attempt audited, until the
//! role is gone.

use std::time::{Duration, Instant};

use hourglass_client::Client;
use hourglass_client::material;
use hourglass_core::api::{CreateRequest, ErrorCode};
use hourglass_core::{GrantState, RevocationStatus};
use hourglass_e2e::postgres::PostgresCluster;
use hourglass_e2e::{DevBroker, eventually, policy_dir};

use super::{StoreFile, assert_audit_intact, audit_events};

const CEDAR: &str = r#"
permit (principal in Group::"engineers", action in [Action::"request", Action::"auto_approve"], resource);
"#;

/// Seconds the broker gives the target per step.
const PROVIDER_TIMEOUT: u64 = 3;

struct Target {
    cluster: PostgresCluster,
    broker: DevBroker,
    _policy: tempfile::TempDir,
    _data: tempfile::TempDir,
}

impl Target {
    fn start() -> Target {
        let cluster = PostgresCluster::start();
        cluster.sql("postgres", "CREATE DATABASE orders");
        cluster.sql("orders", "CREATE ROLE orders_read NOLOGIN");
        let toml = format!(
            r#"
[broker]
provider_timeout = "{PROVIDER_TIMEOUT}s"

[defaults]
workflow = "review"
min_duration = "5s"
max_duration = "1h"

[workflows.review]
approvals = [{{ group = "sre", count = 1 }}]

{orders_db}
"#,
            orders_db = cluster.orders_db_policy()
        );
        let policy = policy_dir(&toml, CEDAR);
        let data = tempfile::tempdir().expect("data dir");
        let broker = DevBroker::start_at(data.path(), policy.path(), &[("ORDERS_DB_ADMIN_DSN", &cluster.admin_dsn())]);
        Target { cluster, broker, _policy: policy, _data: data }
    }

    fn client(&self) -> Client {
        self.broker.client("alice")
    }

    fn roles_left(&self) -> String {
        self.cluster.sql("postgres", "SELECT string_agg(rolname, ',') FROM pg_roles WHERE rolname LIKE 'hg\\_%'")
    }

    /// Statements of the broker's waiting for a lock, whose text starts with `prefix`.
    fn waiting(&self, prefix: &str) -> i64 {
        let count = self.cluster.sql(
            "postgres",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '{prefix}%'"),
        );
        count.parse().expect("a count")
    }

    /// The server process of a session waiting on a lock in a statement
    /// beginning with `prefix`, if there is one.
    fn session_waiting(&self, prefix: &str) -> Option<i64> {
        let pid = self.cluster.sql(
            "postgres",
            &format!(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '{prefix}%' LIMIT 1"
            ),
        );
        pid.parse().ok()
    }

    /// Whether the session of server process `pid` is still connected.
    fn session_alive(&self, pid: i64) -> bool {
        self.cluster.sql("postgres", &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}")) != "0"
    }

    /// Holds `SHARE` on the role catalog: reads (and logins) go on, every
    /// `CREATE`, `ALTER` and `DROP ROLE` waits until [`Lock::release`].
    async fn lock_roles(&self) -> Lock {
        let (client, connection) =
            tokio_postgres::connect(&self.cluster.admin_dsn(), tokio_postgres::NoTls).await.expect("admin connects");
        tokio::spawn(connection);
        client.batch_execute("BEGIN; LOCK TABLE pg_authid IN SHARE MODE").await.expect("the role catalog locks");
        Lock(client)
    }
}

struct Lock(tokio_postgres::Client);

impl Lock {
    async fn release(self) {
        self.0.batch_execute("COMMIT").await.expect("the lock is released");
    }
}

fn read_request(duration: &str) -> CreateRequest {
    CreateRequest {
        resource: "orders-db".into(),
        role: "read".into(),
        duration: duration.into(),
        reason: "fault test".into(),
        ticket: None,
        break_glass: false,
        client_material: Some(material::postgres().material),
    }
}

/// Polls in a blocking section of a multi-threaded test runtime.
fn wait<T>(limit: Duration, check: impl FnMut() -> Option<T>) -> Option<T> {
    tokio::task::block_in_place(|| eventually(limit, check))
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_hanging_at_issue_fails_cleanly_and_leaves_no_role() {
    let target = Target::start();
    let lock = target.lock_roles().await;
    let started = Instant::now();
    let client = target.client();
    let filing = tokio::spawn(async move { client.create_request(&read_request("10m")).await });
    let session = wait(Duration::from_secs(10), || target.session_waiting("CREATE ROLE"));
    let session = session.expect("the issue waits on the locked catalog");
    let error = filing.await.expect("task").expect_err("the issue cannot finish");
    assert_eq!(error.code(), Some(ErrorCode::ProviderFailed), "{error}");
    assert!(error.to_string().contains(&format!("no answer within {PROVIDER_TIMEOUT}s")), "says why: {error}");
    assert!(started.elapsed() < Duration::from_secs(PROVIDER_TIMEOUT + 10), "fails at the provider timeout");

    // The abandoned statement is cancelled at the server, not left to
    // commit a role once the lock goes.
    let cancelled = wait(Duration::from_secs(5), || (target.waiting("CREATE ROLE") == 0).then_some(()));
    assert!(cancelled.is_some(), "the broker cancels the CREATE ROLE it gave up on");
    // And closes its connection, rather than lending it, a cancel request
    // perhaps still on its way, to the next caller.
    let closed = wait(Duration::from_secs(5), || (!target.session_alive(session)).then_some(()));
    assert!(closed.is_some(), "the connection of the abandoned CREATE ROLE is closed, not kept in the pool");
    lock.release().await;
    let grants = target.client().grants(true, false).await.expect("grants").grants;
    let grant = grants.first().expect("the failed grant is listed");
    assert_eq!(grant.state, GrantState::Failed, "{grant:?}");
    let cleaned = wait(Duration::from_secs(20), || {
        let grant = tokio::runtime::Handle::current().block_on(target.client().grant(&grant.id)).ok()?;
        grant.revocation.filter(|r| r.status == RevocationStatus::Done)
    });
    assert!(cleaned.is_some(), "the failed issue is cleaned up at the target");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(target.roles_left(), "", "no half-created role, even after the lock is gone");
    let events = audit_events(&target.broker.data_dir);
    assert!(
        events.iter().any(|e| e["action"] == "grant.issue_failed" && e["target"] == grant.id.as_str()),
        "the failed issue is audited"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_killed_mid_issue_never_issues_twice() {
    let mut target = Target::start();
    let lock = target.lock_roles().await;
    let client = target.client();
    let filing = tokio::spawn(async move { client.create_request(&read_request("8s")).await });
    let waiting = wait(Duration::from_secs(10), || (target.waiting("CREATE ROLE") > 0).then_some(()));
    assert!(waiting.is_some(), "the issue waits on the locked catalog");
    target.broker.kill();
    assert!(filing.await.expect("task").is_err(), "the killed broker never answered");

    // The server notices nobody waits for the statement and rolls it back.
    let dropped = wait(Duration::from_secs(10), || (target.waiting("CREATE ROLE") == 0).then_some(()));
    assert!(dropped.is_some(), "the dead broker's CREATE ROLE is abandoned at the server");
    lock.release().await;
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(target.roles_left(), "", "nothing the killed broker began committed later");

    // After the restart the interrupted issue is finished: one grant, one role.
    target.broker.restart();
    let store = StoreFile::open(&target.broker.data_dir);
    let active = wait(Duration::from_secs(10), || {
        (store.count("SELECT COUNT(*) FROM grants WHERE state = 'active'") == 1).then_some(())
    });
    assert!(active.is_some(), "the restarted broker finishes the issue");
    let grants = store.grants();
    assert_eq!(grants.len(), 1, "one grant for the one approved request: {grants:?}");
    let roles = target.roles_left();
    assert_eq!(roles.split(',').count(), 1, "one role for the grant: {roles}");
    assert!(roles.ends_with(grants[0].id.as_str().trim_start_matches("grt-")), "the grant's own role: {roles}");
    let issued = audit_events(&target.broker.data_dir)
        .into_iter()
        .filter(|e| e["action"] == "grant.issued" && e["target"] == grants[0].id.as_str())
        .count();
    assert_eq!(issued, 1, "issued once");

    // And its deadline holds: the role goes at expiry.
    let gone = wait(Duration::from_secs(20), || (target.roles_left().is_empty()).then_some(()));
    assert!(gone.is_some(), "the role is dropped at the grant's deadline");
    assert_audit_intact(&target.broker.data_dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_hanging_at_revocation_retried_until_role_dropped_across_a_kill() {
    let mut target = Target::start();
    let outcome = target.client().create_request(&read_request("10m")).await.expect("issued");
    let grant = outcome.grant.expect("a grant");
    assert_eq!(target.roles_left().split(',').count(), 1, "its role exists");

    let lock = target.lock_roles().await;
    let revoked = target.client().revoke(&grant.id, Some("fault test".into())).await.expect("revoked in the broker");
    assert_eq!(revoked.state, GrantState::Revoked, "revoked at once: {revoked:?}");
    let pending = revoked.revocation.expect("a revocation");
    assert_eq!(pending.status, RevocationStatus::Pending, "the role cannot be dropped yet: {pending:?}");
    assert!(
        pending.last_error.as_deref().is_some_and(|e| e.contains(&format!("no answer within {PROVIDER_TIMEOUT}s"))),
        "says why: {pending:?}"
    );

    // Retried with backoff while the target hangs; then killed mid-attempt.
    let store = StoreFile::open(&target.broker.data_dir);
    let attempts =
        || store.grants().first().and_then(|g| g.revocation.as_ref().map(|r| r.attempts)).unwrap_or_default();
    let retried = wait(Duration::from_secs(30), || (attempts() >= 2).then_some(()));
    assert!(retried.is_some(), "the scheduler retries the hanging revocation");
    let mid = wait(Duration::from_secs(20), || (target.waiting("ALTER ROLE").max(0) > 0).then_some(()));
    assert!(mid.is_some(), "an attempt is waiting on the target");
    target.broker.kill();
    let before_kill = attempts();
    lock.release().await;

    let restarted = Instant::now();
    target.broker.restart();
    let done = wait(Duration::from_secs(20), || {
        let grant = store.grants().into_iter().next()?;
        grant.revocation.clone().filter(|r| r.status == RevocationStatus::Done).map(|r| (grant, r))
    });
    let (grant, revocation) = done.expect("the revocation completes once the target answers");
    let took = restarted.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "the attempt the kill interrupted is taken up at once after the restart, not after its lease: {took:?}"
    );
    assert_eq!(target.roles_left(), "", "the role is dropped");
    assert!(revocation.attempts > before_kill, "{revocation:?}");

    let attempts: Vec<serde_json::Value> = audit_events(&target.broker.data_dir)
        .into_iter()
        .filter(|e| e["action"] == "grant.revocation_attempt" && e["target"] == grant.id.as_str())
        .collect();
    assert_eq!(attempts.len() as u32, revocation.attempts, "every attempt recorded is audited: {attempts:?}");
    let (last, failures) = attempts.split_last().expect("attempts");
    assert!(
        failures
            .iter()
            .all(|e| e["result"] == "failed" && e["reason"].as_str().is_some_and(|r| r.contains("no answer"))),
        "each failure says why: {failures:?}"
    );
    assert!(last.to_string().contains("\"role_exists\":false"), "the last one verified the role gone: {last}");
    assert_audit_intact(&target.broker.data_dir);
}
