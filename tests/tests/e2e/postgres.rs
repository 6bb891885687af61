//! The PostgreSQL provider against a real server: a throwaway cluster, the
//! broker as a process, and logins as the granted role over TCP with the
//! password only the client knows.

use std::time::Duration;

use hourglass_client::Client;
use hourglass_client::material::{self, PostgresSecret};
use hourglass_core::api::{ClientSecret, CreateRequest, ErrorCode, RequestOutcome};
use hourglass_core::{Grant, GrantState, RevocationStatus};
use hourglass_e2e::postgres::PostgresCluster;
use hourglass_e2e::{DevBroker, eventually, policy_dir};

const CEDAR: &str = r#"
permit (principal in Group::"engineers", action in [Action::"request", Action::"auto_approve"], resource);
"#;

/// A cluster with an `orders` database, read and write roles, and a broker
/// whose `orders-db` resource maps them.
struct Setup {
    cluster: PostgresCluster,
    broker: DevBroker,
    _policy: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let cluster = PostgresCluster::start();
        cluster.sql("postgres", "CREATE DATABASE orders");
        cluster.sql(
            "orders",
            "CREATE TABLE orders (id int PRIMARY KEY, note text);
             INSERT INTO orders VALUES (42, 'the answer');
             CREATE ROLE orders_read NOLOGIN; GRANT SELECT ON orders TO orders_read;
             CREATE ROLE orders_write NOLOGIN; GRANT INSERT, UPDATE ON orders TO orders_write;
             CREATE ROLE orders_builder NOLOGIN; GRANT CREATE ON SCHEMA public TO orders_builder;
             CREATE ROLE orders_owner NOLOGIN;",
        );
        let toml = format!(
            r#"
[defaults]
workflow = "review"
min_duration = "5s"
max_duration = "1h"
renewals_without_approval = 5

[workflows.review]
approvals = [{{ group = "sre", count = 1 }}]

{orders_db}

[resources.orders-db.roles.write]
settings = {{ grant = ["orders_read", "orders_write"] }}

[resources.orders-db.roles.ghost]
settings = {{ grant = ["no_such_role"] }}

[resources.orders-db.roles.build]
settings = {{ grant = ["orders_builder"] }}

[resources.orders-db-keep]
provider = "postgres"
settings = {{ admin_dsn_env = "ORDERS_DB_ADMIN_DSN", host = "127.0.0.1", port = {port}, database = "orders", owned_objects = "reassign:orders_owner" }}

[resources.orders-db-keep.roles.build]
settings = {{ grant = ["orders_builder"] }}

[resources.dead-db]
provider = "postgres"
settings = {{ admin_dsn_env = "DEAD_DB_ADMIN_DSN" }}

[resources.dead-db.roles.read]
settings = {{ grant = ["orders_read"] }}
"#,
            port = cluster.port,
            orders_db = cluster.orders_db_policy()
        );
        let policy = policy_dir(&toml, CEDAR);
        let dead =
            format!("host=127.0.0.1 port={} user=postgres password=x dbname=postgres", hourglass_e2e::free_port());
        let broker = DevBroker::start_with_policy(
            policy.path(),
            &[("ORDERS_DB_ADMIN_DSN", &cluster.admin_dsn()), ("DEAD_DB_ADMIN_DSN", &dead)],
        );
        Setup { cluster, broker, _policy: policy }
    }

    fn client(&self, user: &str) -> Client {
        self.broker.client(user)
    }

    /// Asks for `role` with a fresh client-made password.
    async fn request(&self, role: &str, duration: &str) -> (RequestOutcome, PostgresSecret) {
        let secret = material::postgres();
        let outcome = self
            .client("alice")
            .create_request(&request("orders-db", role, duration, Some(secret.material.clone())))
            .await
            .unwrap_or_else(|e| panic!("requesting orders-db/{role}: {e}"));
        (outcome, secret)
    }

    /// Logs in as the grant's role with the client's password.
    async fn login(&self, grant: &Grant, secret: &PostgresSecret) -> Result<tokio_postgres::Client, String> {
        let credential = self.client("alice").credential(&grant.id).await.map_err(|e| e.to_string())?;
        let user = credential.env.iter().find(|v| v.name == "PGUSER").expect("PGUSER").value.clone();
        let dsn = self.cluster.dsn(&user, &secret.password, "orders");
        let (client, connection) =
            tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        Ok(client)
    }

    fn roles_left(&self) -> String {
        self.cluster.sql("postgres", "SELECT string_agg(rolname, ',') FROM pg_roles WHERE rolname LIKE 'hg\\_%'")
    }
}

fn request(
    resource: &str,
    role: &str,
    duration: &str,
    material: Option<hourglass_core::api::ClientMaterial>,
) -> CreateRequest {
    CreateRequest {
        resource: resource.into(),
        role: role.into(),
        duration: duration.into(),
        reason: "investigating order 42".into(),
        ticket: None,
        break_glass: false,
        client_material: material,
    }
}

/// Tries a login with a fresh connection; whether the server accepted it.
async fn can_log_in(setup: &Setup, role: &str, secret: &PostgresSecret) -> bool {
    let dsn = setup.cluster.dsn(role, &secret.password, "orders");
    tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await.is_ok()
}

async fn grant_of(setup: &Setup, id: &hourglass_core::GrantId) -> Grant {
    setup.client("alice").grant(id).await.expect("the grant")
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_granted_role_logs_in_with_the_mapped_privileges() {
    let setup = Setup::new();
    let (outcome, secret) = setup.request("read", "10m").await;
    let grant = outcome.grant.expect("read is approved at once and issued");
    assert_eq!(grant.state, GrantState::Active, "issued: {grant:?}");
    assert!(grant.ready_at.is_none(), "not shown ready until a login with the client's password worked");

    let credential = setup.client("alice").credential(&grant.id).await.expect("credential");
    assert_eq!(credential.client_secret, Some(ClientSecret::PostgresPassword), "the client adds its own password");
    assert!(
        credential.env.iter().all(|v| !v.secret && !v.value.contains(secret.password.as_str())),
        "no secret from the broker"
    );
    let names: Vec<&str> = credential.env.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["PGHOST", "PGPORT", "PGDATABASE", "PGUSER"], "libpq's variables");

    let db = setup.login(&grant, &secret).await.expect("the granted role logs in with the client's password");
    let row = db.query_one("SELECT note FROM orders WHERE id = 42", &[]).await.expect("orders_read can SELECT");
    assert_eq!(row.get::<_, String>(0), "the answer");
    let insert = db.execute("INSERT INTO orders VALUES (43, 'no')", &[]).await;
    let denied = insert.expect_err("read does not write");
    let message = denied.as_db_error().map(|db| db.message().to_owned()).unwrap_or_default();
    assert!(message.contains("permission denied"), "refused for lack of privilege: {message}");

    // Becoming the mapped role (to create objects it owns, which would
    // outlive the grant) is refused from PostgreSQL 16 on: the membership
    // is granted WITH SET FALSE. Older servers have no such option.
    let version: u32 = setup.cluster.sql("postgres", "SHOW server_version_num").parse().expect("a version number");
    let set_role = db.batch_execute("SET ROLE orders_read").await;
    if version >= 160_000 {
        assert!(set_role.is_err(), "PostgreSQL {version}: the granted role cannot SET ROLE to the mapped role");
    } else {
        assert!(set_role.is_ok(), "PostgreSQL {version} cannot refuse SET ROLE (SECURITY.md says so)");
        db.batch_execute("RESET ROLE").await.expect("back to the granted role");
    }

    let ready =
        setup.client("alice").confirm_ready(&grant.id, Some("logged in and ran SELECT".into())).await.expect("ready");
    assert!(ready.ready_at.is_some(), "ready once the client confirmed the login");

    let role = credential.env.iter().find(|v| v.name == "PGUSER").expect("PGUSER").value.clone();
    let stored = setup.cluster.sql("postgres", &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'"));
    assert!(stored.starts_with("SCRAM-SHA-256$"), "PostgreSQL holds the client's verifier as sent");
    let until = setup.cluster.sql(
        "postgres",
        &format!("SELECT (extract(epoch FROM rolvaliduntil) * 1000)::bigint FROM pg_roles WHERE rolname = '{role}'"),
    );
    assert_eq!(until, grant.expires_at.unix_millis().to_string(), "VALID UNTIL is the grant's deadline");
    let wrong = PostgresSecret { password: "wrong".to_owned().into(), material: secret.material.clone() };
    assert!(!can_log_in(&setup, &role, &wrong).await, "a wrong password is refused");
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_revoke_terminates_open_sessions_and_drops_the_role() {
    let setup = Setup::new();
    let (outcome, secret) = setup.request("write", "10m").await;
    let grant = outcome.grant.expect("issued");
    let open = setup.login(&grant, &secret).await.expect("logs in");
    open.execute("INSERT INTO orders VALUES (7, 'mine')", &[]).await.expect("write can insert");
    let credential = setup.client("alice").credential(&grant.id).await.expect("credential");
    let role = credential.env.iter().find(|v| v.name == "PGUSER").expect("PGUSER").value.clone();

    let revoked = setup.client("alice").revoke(&grant.id, Some("done".into())).await.expect("revoke");
    let revocation = revoked.revocation.expect("a revocation");
    assert_eq!(revocation.status, RevocationStatus::Done, "revoked at once: {revocation:?}");

    assert!(open.simple_query("SELECT 1").await.is_err(), "the session open before the revoke was terminated");
    assert!(!can_log_in(&setup, &role, &secret).await, "no new login after the revoke");
    assert_eq!(setup.roles_left(), "", "the role is dropped");
    assert_eq!(setup.cluster.sql("orders", "SELECT note FROM orders WHERE id = 7"), "mine", "data written stays");

    let export = setup.broker.hourglassd(&["audit", "export", "--data-dir", setup.broker.data_dir.to_str().unwrap()]);
    let attempt = export
        .stdout
        .lines()
        .find(|line| line.contains("grant.revocation_attempt") && line.contains(grant.id.as_str()))
        .expect("the revocation attempt is audited");
    assert!(
        attempt.contains("\"role_exists\":false") && attempt.contains("\"sessions_remaining\":0"),
        "both checks audited: {attempt}"
    );
    assert!(attempt.contains("\"sessions_terminated\":1"), "the open session was counted: {attempt}");
    for secret in [secret.password.as_str(), setup.cluster.admin_password()] {
        assert!(!export.stdout.contains(secret), "no password in the audit log");
    }
    // The store and its write-ahead log, where the latest writes are.
    let mut store = std::fs::read(setup.broker.data_dir.join("hourglass.db")).expect("the store file");
    store.extend(std::fs::read(setup.broker.data_dir.join("hourglass.db-wal")).unwrap_or_default());
    let store = String::from_utf8_lossy(&store);
    assert!(!store.contains(secret.password.as_str()), "the client's password never reaches the broker's store");
    assert!(!store.contains(setup.cluster.admin_password()), "nor does the admin password");
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_role_dropped_at_deadline_and_open_session_terminated() {
    let setup = Setup::new();
    let (outcome, secret) = setup.request("read", "5s").await;
    let grant = outcome.grant.expect("issued");
    let open = setup.login(&grant, &secret).await.expect("logs in before the deadline");
    let role = setup.role_of(&grant).await;

    let ended = eventually(Duration::from_secs(30), || {
        let grant =
            tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(grant_of(&setup, &grant.id)));
        (grant.revocation.as_ref().is_some_and(|r| r.status == RevocationStatus::Done)).then_some(grant)
    })
    .expect("the broker revokes the grant after its deadline");
    assert_eq!(ended.state, GrantState::Expired, "ended by its deadline");
    assert!(open.simple_query("SELECT 1").await.is_err(), "the session outliving VALID UNTIL was terminated");
    assert!(!can_log_in(&setup, &role, &secret).await, "no login after the deadline");
    assert_eq!(setup.roles_left(), "", "the role is dropped");
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_renewed_role_keeps_working_past_the_old_deadline() {
    let setup = Setup::new();
    let (outcome, secret) = setup.request("read", "5s").await;
    let grant = outcome.grant.expect("issued");
    let old_deadline = grant.expires_at;
    let renewed = setup.client("alice").renew(&grant.id, "2m", None).await.expect("renew");
    assert!(renewed.grant.expires_at > old_deadline, "the deadline moved");

    // Wait for the old deadline to pass, then log in afresh.
    let passed =
        eventually(Duration::from_secs(20), || (setup_now() > old_deadline.unix_millis() + 1000).then_some(()));
    assert!(passed.is_some(), "the old deadline passes");
    assert!(setup.login(&grant, &secret).await.is_ok(), "a renewed role logs in past its old deadline");
    let grant = grant_of(&setup, &grant.id).await;
    assert_eq!(grant.state, GrantState::Active, "still active after the old deadline");
}

fn setup_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_revocation_waits_out_a_server_outage() {
    let setup = Setup::new();
    let (outcome, secret) = setup.request("read", "10m").await;
    let grant = outcome.grant.expect("issued");
    let role = setup.role_of(&grant).await;

    setup.cluster.pause();
    let revoked =
        setup.client("alice").revoke(&grant.id, None).await.expect("the revoke is accepted while the server is down");
    assert_eq!(revoked.state, GrantState::Revoked, "revoked in the broker at once");
    let pending = revoked.revocation.expect("a revocation");
    assert_eq!(pending.status, RevocationStatus::Pending, "the role cannot be dropped yet: {pending:?}");
    assert!(pending.last_error.as_deref().is_some_and(|e| e.contains("cannot connect")), "says why: {pending:?}");

    setup.cluster.resume();
    let done = eventually(Duration::from_secs(40), || {
        let grant =
            tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(grant_of(&setup, &grant.id)));
        (grant.revocation.as_ref().is_some_and(|r| r.status == RevocationStatus::Done)).then_some(grant)
    })
    .expect("the revocation is retried until the server is back");
    assert!(done.revocation.expect("revocation").attempts >= 2, "it took more than one attempt");
    assert!(!can_log_in(&setup, &role, &secret).await, "the role is gone once the server is back");
    assert_eq!(setup.roles_left(), "", "nothing left behind");
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_objects_a_grant_created_are_dropped_or_reassigned_as_configured() {
    let setup = Setup::new();
    for (resource, table) in [("orders-db", "scratch_dropped"), ("orders-db-keep", "scratch_kept")] {
        let secret = material::postgres();
        let outcome = setup
            .client("alice")
            .create_request(&request(resource, "build", "10m", Some(secret.material.clone())))
            .await
            .expect("build role");
        let grant = outcome.grant.expect("issued");
        let db = setup.login(&grant, &secret).await.expect("logs in");
        db.batch_execute(&format!("CREATE TABLE {table} (x int)")).await.expect("the role creates a table");
        setup.client("alice").revoke(&grant.id, None).await.expect("revoke");
    }
    let tables = setup.cluster.sql(
        "orders",
        "SELECT string_agg(tablename || ':' || tableowner, ',') FROM pg_tables WHERE tablename LIKE 'scratch%'",
    );
    assert_eq!(tables, "scratch_kept:orders_owner", "dropped by default, reassigned where configured");
    assert_eq!(setup.roles_left(), "", "both roles are gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_bad_input_gets_a_clear_error_and_leaves_nothing_behind() {
    let setup = Setup::new();
    let alice = setup.client("alice");

    // A mapped role the database does not have: nothing is half-created.
    let error = setup.request_error("ghost", Some(material::postgres().material)).await;
    assert!(error.contains("no_such_role") && error.contains("does not exist"), "names the missing role: {error}");
    assert_eq!(setup.roles_left(), "", "the login role was rolled back with the failed GRANT");
    let grants = alice.grants(true, false).await.expect("grants").grants;
    assert!(grants.iter().any(|g| g.state == GrantState::Failed), "the grant ended as failed: {grants:?}");

    // An unreachable server.
    let unreachable =
        alice.create_request(&request("dead-db", "read", "10m", Some(material::postgres().material))).await;
    let message = unreachable.expect_err("the server is down").to_string();
    assert!(message.contains("dead-db") && message.contains("cannot connect"), "names resource and cause: {message}");

    // Client material that is missing or is a password instead of a verifier.
    let missing = alice.create_request(&request("orders-db", "read", "10m", None)).await.expect_err("no verifier");
    assert_eq!(missing.code(), Some(ErrorCode::InvalidRequest), "{missing}");
    assert!(missing.to_string().contains("postgres_scram_verifier"), "{missing}");
    let password =
        hourglass_core::api::ClientMaterial { postgres_scram_verifier: Some("hunter2".into()), ssh_public_key: None };
    let plain =
        alice.create_request(&request("orders-db", "read", "10m", Some(password))).await.expect_err("a password");
    assert!(plain.to_string().contains("never the password") && !plain.to_string().contains("hunter2"), "{plain}");
    // A verifier asking every login to the role for 2^31 rounds.
    let mut costly = material::postgres().material;
    let verifier = costly.postgres_scram_verifier.take().expect("a verifier");
    let rounds = verifier.split(['$', ':']).nth(1).expect("the round count").to_owned();
    costly.postgres_scram_verifier = Some(verifier.replacen(&format!("${rounds}:"), "$2147483648:", 1));
    let refused =
        alice.create_request(&request("orders-db", "read", "10m", Some(costly))).await.expect_err("too many rounds");
    assert_eq!(refused.code(), Some(ErrorCode::InvalidRequest), "{refused}");
    assert!(refused.to_string().contains("2147483648") && refused.to_string().contains("at most 4096"), "{refused}");
    assert_eq!(setup.roles_left(), "", "nothing was created for refused requests");
}

impl Setup {
    /// The database role a grant logs in as (`PGUSER`).
    async fn role_of(&self, grant: &Grant) -> String {
        let credential = self.client("alice").credential(&grant.id).await.expect("credential");
        credential.env.iter().find(|v| v.name == "PGUSER").expect("PGUSER").value.clone()
    }

    async fn request_error(&self, role: &str, material: Option<hourglass_core::api::ClientMaterial>) -> String {
        let outcome = self.client("alice").create_request(&request("orders-db", role, "10m", material)).await;
        outcome.expect_err("the request fails").to_string()
    }
}

/// The broker's admin connection to a target that takes TLS only: the
/// admin connection string's `sslmode` is honoured (libpq's meaning), a
/// plain connection is refused by the server, a CA that did not sign the
/// server's certificate by the broker: each named in the grant's failure.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_admin_connection_honours_sslmode_against_a_tls_only_server() {
    let cluster = PostgresCluster::shared_tls();
    let database = format!("orders_tls_{}", std::process::id());
    cluster.sql("postgres", &format!("CREATE DATABASE {database}"));
    cluster.sql(&database, "CREATE ROLE orders_tls_read NOLOGIN");
    let ca = cluster.tls_ca().expect("a TLS cluster").display().to_string();
    let other = tempfile::tempdir().expect("temp dir");
    let other_ca = other.path().join("other.pem");
    hourglass_e2e::ca::TestCa::new("Not the server's CA").write(&other_ca);
    let admin = |mode: &str| format!("{} sslmode={mode}", cluster.admin_dsn());
    let resources: String = [("verify-full", "verified"), ("require", "encrypted"), ("disable", "plain"), ("verify-full", "wrong-ca")]
        .iter()
        .map(|(_, name)| {
            format!(
                "[resources.db-{name}]\nprovider = \"postgres\"\nsettings = {{ admin_dsn_env = \"DSN_{env}\", host = \"127.0.0.1\", port = {port}, database = \"{database}\" }}\n\
                 [resources.db-{name}.roles.read]\nsettings = {{ grant = [\"orders_tls_read\"] }}\n",
                env = name.to_uppercase().replace('-', "_"),
                port = cluster.port,
            )
        })
        .collect();
    let toml = format!(
        "[defaults]\nworkflow = \"w\"\n[workflows.w]\napprovals = [{{ group = \"sre\", count = 1 }}]\n{resources}"
    );
    let policy = policy_dir(&toml, CEDAR);
    let verified = format!("{} sslrootcert={ca}", admin("verify-full"));
    let wrong = format!("{} sslrootcert={}", admin("verify-full"), other_ca.display());
    let broker = DevBroker::start_with_policy(
        policy.path(),
        &[
            ("DSN_VERIFIED", verified.as_str()),
            ("DSN_ENCRYPTED", admin("require").as_str()),
            ("DSN_PLAIN", admin("disable").as_str()),
            ("DSN_WRONG_CA", wrong.as_str()),
        ],
    );
    let alice = broker.client("alice");
    let ask = |name: &str| request(&format!("db-{name}"), "read", "5m", Some(material::postgres().material));
    for name in ["verified", "encrypted"] {
        let grant = alice.create_request(&ask(name)).await.expect("issued").grant.expect("a grant");
        assert_eq!(grant.state, GrantState::Active, "{name}: the role is made over TLS");
        alice.revoke(&grant.id, None).await.expect("revoked over TLS");
    }
    for (name, expected) in [("plain", "pg_hba.conf"), ("wrong-ca", "certificate")] {
        let error = alice.create_request(&ask(name)).await.expect_err("refused").to_string();
        assert!(error.contains(expected), "{name}: {error}");
        assert!(!error.contains(cluster.admin_password()), "{name}: never the admin password: {error}");
    }
    assert_eq!(cluster.sql("postgres", "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'hg\\_%'"), "0");
}
