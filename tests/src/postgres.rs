//! A throwaway PostgreSQL cluster on a free loopback port, for tests: its own
//! data directory, a superuser password, password (SCRAM) logins over TCP
//! only, since trust logins ignore `VALID UNTIL`. Stopped and deleted on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The newest installed server's binaries (`/usr/lib/postgresql/<v>/bin`).
fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (scripts/setup.sh installs it)")
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL server with initdb").1
}

/// The newest installed `psql`.
pub fn psql() -> PathBuf {
    bin_dir().join("psql")
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

pub struct PostgresCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    password: String,
    /// initdb refuses to run as root: then the cluster runs as `postgres`.
    as_postgres: bool,
    /// A cluster that speaks TLS only: the CA file of its certificate.
    tls_ca: Option<PathBuf>,
    /// fsync on, as in production (benchmarks of the store); tests run
    /// without it, since nothing they prove needs the disk.
    durable: bool,
}

/// A database of its own on a cluster, owned by a role of its own that is
/// neither superuser nor REPLICATION: what a broker's store gets in
/// production (README, "Run several replicas").
pub struct StoreDatabase {
    pub name: String,
    pub owner: String,
    pub password: String,
    pub port: u16,
}

impl StoreDatabase {
    /// `postgres://owner:password@127.0.0.1:port/name`, with `query` appended.
    pub fn url(&self, query: &str) -> String {
        let query = if query.is_empty() { String::new() } else { format!("?{query}") };
        format!("postgres://{}:{}@127.0.0.1:{}/{}{query}", self.owner, self.password, self.port, self.name)
    }
}

impl PostgresCluster {
    /// One cluster for the whole test binary, started on first use and
    /// stopped (and deleted) by a watchdog once the binary's process ends:
    /// a static is never dropped. Tests stay independent by each taking a
    /// database of its own ([`PostgresCluster::new_database`]).
    pub fn shared() -> &'static PostgresCluster {
        static SHARED: std::sync::OnceLock<PostgresCluster> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| {
            let cluster = PostgresCluster::start();
            cluster.stop_when_this_process_ends();
            cluster
        })
    }

    fn stop_when_this_process_ends(&self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = if self.as_postgres {
            format!("runuser -u postgres -- {} -D {} -m immediate stop", pg_ctl.display(), self.data_dir().display())
        } else {
            format!("{} -D {} -m immediate stop", pg_ctl.display(), self.data_dir().display())
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            dir = self.dir.path().display()
        );
        // Not waited on: it outlives this process by design.
        #[allow(clippy::zombie_processes, reason = "the watchdog must outlive the test binary")]
        Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the cluster's watchdog starts");
    }

    /// A new database owned by a new, unprivileged role.
    pub fn new_database(&self) -> StoreDatabase {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("store_{}_{n}", std::process::id());
        let owner = format!("store_owner_{}_{n}", std::process::id());
        let password = format!("pw{}x{n}", std::process::id());
        self.sql(
            "postgres",
            &format!(
                "CREATE ROLE {owner} LOGIN NOSUPERUSER NOREPLICATION NOCREATEROLE NOCREATEDB PASSWORD '{password}'"
            ),
        );
        self.sql("postgres", &format!("CREATE DATABASE {name} OWNER {owner}"));
        StoreDatabase { name, owner, password, port: self.port }
    }

    /// One TLS-only cluster for the whole test binary (see [`PostgresCluster::shared`]).
    pub fn shared_tls() -> &'static PostgresCluster {
        static SHARED: std::sync::OnceLock<PostgresCluster> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| {
            let cluster = PostgresCluster::start_tls();
            cluster.stop_when_this_process_ends();
            cluster
        })
    }

    /// A cluster that accepts TCP connections over TLS only (a certificate
    /// for 127.0.0.1 and localhost, signed by a CA of its own:
    /// [`PostgresCluster::tls_ca`]); plain connections are refused.
    pub fn start_tls() -> PostgresCluster {
        Self::init(true, false)
    }

    pub fn start() -> PostgresCluster {
        Self::init(false, false)
    }

    /// A cluster that syncs its WAL to disk on commit, as a production
    /// store does: for benchmarks.
    pub fn start_durable() -> PostgresCluster {
        Self::init(false, true)
    }

    /// The CA file of a TLS cluster's certificate.
    pub fn tls_ca(&self) -> Option<&Path> {
        self.tls_ca.as_deref()
    }

    fn init(tls: bool, durable: bool) -> PostgresCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let as_postgres = is_root();
        let password = format!("admin-{}", std::process::id());
        std::fs::write(dir.path().join("pwfile"), &password).expect("pwfile");
        let tls_ca = tls.then(|| {
            let ca = crate::ca::TestCa::new("PostgreSQL test CA");
            let (cert, key) = ca.server(&["127.0.0.1", "localhost"]);
            std::fs::write(dir.path().join("server.crt"), cert).expect("server.crt");
            std::fs::write(dir.path().join("server.key"), key).expect("server.key");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path().join("server.key"), std::fs::Permissions::from_mode(0o600))
                .expect("the key private");
            let path = dir.path().join("ca.pem");
            ca.write(&path);
            path
        });
        if as_postgres {
            run(Command::new("chown").args(["-R", "postgres"]).arg(dir.path()));
        }
        let cluster =
            PostgresCluster { dir, bin: bin_dir(), port: crate::free_port(), password, as_postgres, tls_ca, durable };
        let data = cluster.data_dir();
        let pwfile = cluster.dir.path().join("pwfile");
        run(cluster
            .tool("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8"])
            .arg(format!("--pwfile={}", pwfile.display())));
        if tls {
            // TLS only over TCP: a plain connection is refused at the door.
            let hba =
                "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all 0.0.0.0/0 reject\n";
            std::fs::write(data.join("pg_hba.conf"), hba).expect("pg_hba.conf");
        }
        cluster.resume();
        cluster
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn tool(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    /// Starts the server (again, after `pause`), waiting until it accepts connections.
    pub fn resume(&self) {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync={} -c max_connections=200",
            self.port,
            self.dir.path().display(),
            if self.durable { "on" } else { "off" }
        );
        // Server settings to add, for looking inside a run (README,
        // "Benchmarks"), e.g. pg_stat_statements.
        if let Ok(extra) = std::env::var("HOURGLASS_POSTGRES_OPTIONS") {
            options.push(' ');
            options.push_str(&extra);
        }
        if self.tls_ca.is_some() {
            let dir = self.dir.path().display();
            options.push_str(&format!(" -c ssl=on -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key"));
        }
        run(self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .args(["-w", "-o", &options, "start"]));
    }

    /// Stops the server: the target is down until `resume`.
    pub fn pause(&self) {
        run(self.tool("pg_ctl").arg("-D").arg(self.data_dir()).args(["-m", "fast", "-w", "stop"]));
    }

    /// The policy TOML of the tests' `orders-db` resource on this cluster:
    /// its admin connection string read from `ORDERS_DB_ADMIN_DSN`, and a
    /// `read` role granting `orders_read`. Other roles extend
    /// `[resources.orders-db.roles.*]` after it.
    pub fn orders_db_policy(&self) -> String {
        format!(
            r#"[resources.orders-db]
provider = "postgres"
settings = {{ admin_dsn_env = "ORDERS_DB_ADMIN_DSN", host = "127.0.0.1", port = {port}, database = "orders" }}

[resources.orders-db.roles.read]
settings = {{ grant = ["orders_read"] }}
"#,
            port = self.port
        )
    }

    /// The `orders` database `orders_db_policy` points at: an `orders`
    /// table that the role `orders_read` may read.
    pub fn create_orders_db(&self) {
        self.sql("postgres", "CREATE DATABASE orders");
        self.sql(
            "orders",
            "CREATE TABLE orders (id int PRIMARY KEY); CREATE ROLE orders_read NOLOGIN; GRANT SELECT ON orders TO orders_read;",
        );
    }

    /// The superuser's connection string, as an admin would configure it.
    pub fn admin_dsn(&self) -> String {
        format!("host=127.0.0.1 port={} user=postgres password={} dbname=postgres", self.port, self.password)
    }

    /// A connection string for `user` with `password` on `database`.
    pub fn dsn(&self, user: &str, password: &str, database: &str) -> String {
        format!("host=127.0.0.1 port={} user={user} password={password} dbname={database} connect_timeout=5", self.port)
    }

    /// Runs SQL as the superuser in `database`; the rows as `a|b` lines.
    pub fn sql(&self, database: &str, sql: &str) -> String {
        let mode = if self.tls_ca.is_some() { "require" } else { "prefer" };
        let output = Command::new(self.bin.join("psql"))
            .arg(format!("host=127.0.0.1 port={} user=postgres dbname={database} sslmode={mode}", self.port))
            .args(["-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql])
            .env("PGPASSWORD", &self.password)
            .output()
            .expect("psql runs");
        assert!(output.status.success(), "psql {sql:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// The superuser's password: tests check it never leaks.
    pub fn admin_password(&self) -> &str {
        &self.password
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        let _ = self.tool("pg_ctl").arg("-D").arg(self.data_dir()).args(["-m", "immediate", "stop"]).output();
    }
}

fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?} cannot start: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
