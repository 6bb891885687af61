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
}

impl PostgresCluster {
    pub fn start() -> PostgresCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let as_postgres = is_root();
        let password = format!("admin-{}", std::process::id());
        std::fs::write(dir.path().join("pwfile"), &password).expect("pwfile");
        if as_postgres {
            run(Command::new("chown").args(["-R", "postgres"]).arg(dir.path()));
        }
        let cluster = PostgresCluster { dir, bin: bin_dir(), port: crate::free_port(), password, as_postgres };
        let data = cluster.data_dir();
        let pwfile = cluster.dir.path().join("pwfile");
        run(cluster
            .tool("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8"])
            .arg(format!("--pwfile={}", pwfile.display())));
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
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
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
        let output = Command::new(self.bin.join("psql"))
            .arg(format!("host=127.0.0.1 port={} user=postgres dbname={database}", self.port))
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
