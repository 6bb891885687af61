//! OpenBao, the peer for dynamic database credentials, on loopback: its
//! dev server (storage in memory, unsealed, root token `root`) and a server
//! with its integrated storage (Raft on disk, as production runs it),
//! initialised and unsealed with one key share; and the HTTP calls of its
//! database secrets engine. `scripts/bench` installs it with pip and names
//! the real server binary (not the Python shim) in `HOURGLASS_BENCH_BAO`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use hourglass_core::Timestamp;
use serde_json::{Value, json};

/// The dev server's root token: a throwaway server, a fixed token.
const DEV_ROOT_TOKEN: &str = "root";

/// Where an OpenBao server keeps its leases.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// `-dev`: in memory, nothing written to disk.
    Memory,
    /// Integrated storage: a one-node Raft cluster in a directory, each
    /// write on disk before it is acknowledged.
    Raft,
}

/// A `bao server` process with its own ports, killed on drop (its storage
/// goes with its temporary directory).
pub struct Server {
    child: Child,
    pub url: String,
    pub storage: Storage,
    // Holds the server's log and storage until the server is gone.
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts the binary named by `HOURGLASS_BENCH_BAO`; [`Bao::connect`]
    /// waits until it answers.
    pub fn start(storage: Storage) -> anyhow::Result<Server> {
        let binary = std::env::var_os("HOURGLASS_BENCH_BAO")
            .map(PathBuf::from)
            .filter(|path| path.is_file())
            .context("HOURGLASS_BENCH_BAO does not name the OpenBao server binary (scripts/bench sets it)")?;
        let dir = tempfile::tempdir()?;
        let port = free_port_pair()?;
        let log = std::fs::File::create(dir.path().join("bao.log"))?;
        let mut command = Command::new(binary);
        command.arg("server");
        match storage {
            Storage::Memory => {
                command
                    .args(["-dev", &format!("-dev-root-token-id={DEV_ROOT_TOKEN}")])
                    .arg(format!("-dev-listen-address=127.0.0.1:{port}"));
            }
            Storage::Raft => {
                let raft = dir.path().join("raft");
                std::fs::create_dir(&raft)?;
                let config = dir.path().join("bao.hcl");
                std::fs::write(
                    &config,
                    format!(
                        r#"storage "raft" {{
  path = "{raft}"
  node_id = "bench"
}}
listener "tcp" {{
  address = "127.0.0.1:{port}"
  tls_disable = true
}}
api_addr = "http://127.0.0.1:{port}"
cluster_addr = "http://127.0.0.1:{cluster}"
disable_mlock = true
"#,
                        raft = raft.display(),
                        cluster = port + 1
                    ),
                )?;
                command.arg(format!("-config={}", config.display()));
            }
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the OpenBao server")?;
        Ok(Server { child, url: format!("http://127.0.0.1:{port}"), storage, _dir: dir })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port whose neighbour is free too: `-dev` also binds the
/// cluster port, PORT+1.
fn free_port_pair() -> anyhow::Result<u16> {
    for _ in 0..100 {
        let first = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = first.local_addr()?.port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no two adjacent free loopback ports")
}

/// A lease of a database credential: its id and the role it made.
#[derive(Debug, Clone)]
pub struct Lease {
    pub id: String,
    pub username: String,
}

/// The OpenBao HTTP API with a root token, over keep-alive connections.
#[derive(Clone)]
pub struct Bao {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Bao {
    /// Waits until `server` answers (about 0.1 s after start); a Raft
    /// server is initialised with one key share and unsealed first, and its
    /// root token used.
    pub async fn connect(http: reqwest::Client, server: &Server) -> anyhow::Result<Bao> {
        let mut bao = Bao { http, url: server.url.clone(), token: DEV_ROOT_TOKEN.into() };
        if server.storage == Storage::Raft {
            // Not initialised yet: sys/health answers 501.
            bao.wait_health(|status| status == 501).await?;
            let init = bao
                .call(reqwest::Method::PUT, "sys/init", Some(json!({ "secret_shares": 1, "secret_threshold": 1 })))
                .await?;
            let key = init["keys_base64"][0].as_str().context("sys/init without a key")?;
            bao.token = init["root_token"].as_str().context("sys/init without a root token")?.to_owned();
            bao.call(reqwest::Method::PUT, "sys/unseal", Some(json!({ "key": key }))).await?;
        }
        // Unsealed and active (for Raft: once it elected itself leader).
        bao.wait_health(|status| status == 200).await?;
        Ok(bao)
    }

    async fn wait_health(&self, wanted: impl Fn(u16) -> bool) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let health = self.http.get(format!("{}/v1/sys/health", self.url)).send().await;
            if health.is_ok_and(|response| wanted(response.status().as_u16())) {
                return Ok(());
            }
            anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "OpenBao did not answer within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut request = self.http.request(method.clone(), format!("{}/v1/{path}", self.url));
        request = request.header("X-Vault-Token", &self.token);
        if let Some(body) = body {
            request = request.header("Content-Type", "application/json").body(body.to_string());
        }
        let response = request.send().await.with_context(|| format!("OpenBao {method} {path}"))?;
        let status = response.status();
        let text = response.text().await?;
        // The error body names what went wrong; request bodies (which may
        // carry the admin password) are never echoed.
        anyhow::ensure!(status.is_success(), "OpenBao {method} {path}: HTTP {status}: {}", text.trim());
        Ok(if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text)? })
    }

    /// Mounts the database secrets engine and points it at `database` as
    /// the superuser `postgres` with `admin_password`, allowing every role.
    pub async fn configure_postgres(&self, port: u16, database: &str, admin_password: &str) -> anyhow::Result<()> {
        self.call(reqwest::Method::POST, "sys/mounts/database", Some(json!({ "type": "database" }))).await?;
        let url = format!("postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{port}/{database}?sslmode=disable");
        self.call(
            reqwest::Method::POST,
            "database/config/bench",
            Some(json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": url,
                "username": "postgres",
                "password": admin_password,
                "allowed_roles": "*",
                "verify_connection": true,
            })),
        )
        .await?;
        Ok(())
    }

    /// A role whose credentials last `ttl` and belong to `member_of`.
    /// Revocation ends the role's sessions before dropping it, as
    /// Hourglass does (OpenBao's default leaves open sessions running).
    pub async fn create_role(&self, name: &str, ttl: Duration, member_of: &str) -> anyhow::Result<()> {
        let creation = format!(
            "CREATE ROLE \"{{{{name}}}}\" WITH LOGIN PASSWORD '{{{{password}}}}' VALID UNTIL '{{{{expiration}}}}'; \
             GRANT \"{member_of}\" TO \"{{{{name}}}}\";"
        );
        let revocation = format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{{{name}}}}'; \
             REVOKE \"{member_of}\" FROM \"{{{{name}}}}\"; DROP ROLE IF EXISTS \"{{{{name}}}}\";"
        );
        self.call(
            reqwest::Method::POST,
            &format!("database/roles/{name}"),
            Some(json!({
                "db_name": "bench",
                "creation_statements": [creation],
                "revocation_statements": [revocation],
                "default_ttl": format!("{}s", ttl.as_secs()),
                "max_ttl": "1h",
            })),
        )
        .await?;
        Ok(())
    }

    /// `GET database/creds/ROLE`: returns once the role exists in PostgreSQL.
    pub async fn issue(&self, role: &str) -> anyhow::Result<Lease> {
        let body = self.call(reqwest::Method::GET, &format!("database/creds/{role}"), None).await?;
        let id = body["lease_id"].as_str().context("creds without lease_id")?.to_owned();
        let username = body["data"]["username"].as_str().context("creds without a username")?.to_owned();
        // The password in the body is dropped with it, unprinted.
        Ok(Lease { id, username })
    }

    /// When the lease ends, as OpenBao scheduled it (to the nanosecond;
    /// `VALID UNTIL` on the role is rounded to the second).
    pub async fn expire_time(&self, lease: &Lease) -> anyhow::Result<Timestamp> {
        let body = self.call(reqwest::Method::PUT, "sys/leases/lookup", Some(json!({ "lease_id": lease.id }))).await?;
        let text = body["data"]["expire_time"].as_str().context("lease lookup without expire_time")?;
        Timestamp::parse(text).map_err(|_| anyhow::anyhow!("lease expire_time {text:?} is not RFC 3339"))
    }

    /// `PUT sys/leases/revoke-prefix/PREFIX`: synchronous over HTTP, so the
    /// roles are dropped when it returns.
    pub async fn revoke_prefix(&self, prefix: &str) -> anyhow::Result<()> {
        self.call(reqwest::Method::PUT, &format!("sys/leases/revoke-prefix/{prefix}"), None).await?;
        Ok(())
    }
}
