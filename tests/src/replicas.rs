//! Several `hourglassd serve` processes on one PostgreSQL store, as a team
//! runs them behind a load balancer: each replica its own process, port and
//! data directory; all of them the same policy directory, store key and
//! store. A test reaches each replica by index, kills one (SIGKILL), pauses
//! one (SIGSTOP), restarts one on its port, and reads the store directly.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::issuer::{ISSUER, JwtIssuer};
use crate::postgres::{PostgresCluster, StoreDatabase};
use crate::{DevBroker, Run, bin, eventually};

/// The people of replica tests: name, groups.
pub const PEOPLE: &[(&str, &[&str])] = &[
    ("alice", &["engineers"]),
    ("dave", &["engineers"]),
    ("bob", &["sre"]),
    ("erin", &["sre"]),
    ("frank", &["sre"]),
    ("carol", &["security"]),
];

/// Who may do what in replica tests: engineers request anything, `api/read`
/// is approved at once, SRE approve, security revokes anyone's grants.
pub const CEDAR: &str = r#"
permit (principal in Group::"engineers", action == Action::"request", resource);
permit (principal in Group::"engineers", action == Action::"auto_approve", resource == Role::"api/read");
permit (principal in Group::"sre", action == Action::"approve", resource);
permit (principal in Group::"security", action in [Action::"view", Action::"revoke"], resource);
"#;

/// A token resource: `read` at once, `write` after one SRE approval, `deploy`
/// after two.
pub const POLICY: &str = r#"
[defaults]
workflow = "one-sre"
min_duration = "1s"
max_duration = "1h"
default_duration = "15m"
reason_required = false
renewals_without_approval = 3

[workflows.one-sre]
approvals = [{ group = "sre", count = 1 }]

[workflows.two-sre]
approvals = [{ group = "sre", count = 2 }]

[resources.api]
description = "A service API"
provider = "token"

[resources.api.roles.read]
description = "Approved at once"

[resources.api.roles.write]
description = "One SRE approves"

[resources.api.roles.deploy]
description = "Two SRE approve"
workflow = "two-sre"
"#;

pub struct Replicas {
    pub database: StoreDatabase,
    pub config: tempfile::TempDir,
    pub idp: JwtIssuer,
    brokers: Vec<Option<DevBroker>>,
    /// Where each replica listens: any free port at first (the replica
    /// binds it itself, so no other test can take it in between), then the
    /// one it got, kept across restarts.
    listen: Vec<String>,
    env: Vec<(String, String)>,
    tokens: BTreeMap<String, String>,
}

impl Replicas {
    /// `count` replicas on a new database of `cluster`, enforcing `policy`
    /// (hourglass.toml without `[broker]`) and `cedar`, with `env` added to
    /// each one's environment.
    pub fn start(cluster: &PostgresCluster, count: usize, policy: &str, cedar: &str, env: &[(&str, &str)]) -> Replicas {
        let (config, idp) = Replicas::config(policy, cedar);
        Replicas::start_on(cluster.new_database(), config, idp, count, env)
    }

    /// A policy directory for replicas: `policy` and `cedar`, the store key
    /// (`store.key`), an IdP's JWKS, and a `[broker]` table naming them
    /// (`data_dir = "source"` for a broker started on it alone, with SQLite).
    pub fn config(policy: &str, cedar: &str) -> (tempfile::TempDir, JwtIssuer) {
        let config = tempfile::tempdir().expect("temp dir");
        let idp = JwtIssuer::new("replicas");
        let broker = format!(
            "[broker]\ndata_dir = \"source\"\nstore_key_file = \"store.key\"\nreplica_lease = \"1500ms\"\nprovider_timeout = \"10s\"\n\n\
             [broker.limits]\nrequests_per_second = 100000\nrequest_burst = 100000\npending_requests = 10000\n\n\
             [[broker.issuers]]\nissuer = \"{ISSUER}\"\njwks_file = \"idp-jwks.json\"\n\n"
        );
        std::fs::write(config.path().join("hourglass.toml"), broker + policy).expect("hourglass.toml");
        std::fs::write(config.path().join("policy.cedar"), cedar).expect("policy.cedar");
        std::fs::write(config.path().join("idp-jwks.json"), idp.jwks()).expect("the IdP's JWKS");
        let key: [u8; 32] = rand::random();
        use base64::Engine;
        std::fs::write(config.path().join("store.key"), base64::engine::general_purpose::STANDARD.encode(key))
            .expect("the store key");
        (config, idp)
    }

    /// The tokens of [`PEOPLE`] from `idp`, valid for four hours.
    pub fn tokens(idp: &JwtIssuer) -> BTreeMap<String, String> {
        PEOPLE
            .iter()
            .map(|(name, groups)| {
                ((*name).to_owned(), idp.token(&format!("{name}@acme.example"), groups, "hourglass", 4 * 3600))
            })
            .collect()
    }

    /// `count` replicas on `database` with the policy directory `config`.
    pub fn start_on(
        database: StoreDatabase,
        config: tempfile::TempDir,
        idp: JwtIssuer,
        count: usize,
        env: &[(&str, &str)],
    ) -> Replicas {
        let tokens = Replicas::tokens(&idp);
        let mut replicas = Replicas {
            database,
            config,
            idp,
            brokers: Vec::new(),
            listen: vec!["127.0.0.1:0".into(); count],
            env: env.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect(),
            tokens,
        };
        for index in 0..count {
            let broker = replicas.launch(index);
            replicas.brokers.push(Some(broker));
        }
        replicas
    }

    /// The store's URL, as every replica is given it (`HOURGLASS_STORE`).
    pub fn store_url(&self) -> String {
        self.database.url("sslmode=disable")
    }

    fn data_dir(&self, index: usize) -> PathBuf {
        self.config.path().join(format!("replica-{index}"))
    }

    pub fn log_path(&self, index: usize) -> PathBuf {
        self.config.path().join(format!("replica-{index}.log"))
    }

    /// Everything replica `index` logged, over all its runs.
    pub fn log(&self, index: usize) -> String {
        std::fs::read_to_string(self.log_path(index)).unwrap_or_default()
    }

    fn launch(&mut self, index: usize) -> DevBroker {
        let log_path = self.log_path(index);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).expect("the replica's log");
        let start = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
        let child = Command::new(bin("hourglassd"))
            .args(["serve", "--listen", &self.listen[index], "--config"])
            .arg(self.config.path())
            .arg("--data-dir")
            .arg(self.data_dir(index))
            // What the caller asked to see (HOURGLASS_LOG=hourglass_broker::expiry=debug), info unless set.
            .env("HOURGLASS_LOG", std::env::var("HOURGLASS_LOG").unwrap_or_else(|_| "info".into()))
            .envs(self.env.iter().map(|(n, v)| (n.as_str(), v.as_str())))
            .env("HOURGLASS_STORE", self.store_url())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("hourglassd starts");
        let mut broker = DevBroker {
            child: Some(child),
            url: String::new(),
            ca: None,
            data_dir: self.data_dir(index),
            _temp: None,
            tokens: self.tokens.clone(),
            policy_dir: None,
            env: Vec::new(),
            _watchdog: crate::watchdog::Watchdog::for_test(),
        };
        let listening = eventually(Duration::from_secs(30), || {
            let text = std::fs::read(&log_path).ok()?;
            let text = String::from_utf8_lossy(text.get(usize::try_from(start).unwrap_or(0)..)?).into_owned();
            let line = text.lines().find_map(|line| line.strip_prefix("hourglassd listening on "))?;
            Some(line.trim().to_owned())
        });
        match listening {
            Some(url) => {
                let address = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
                self.listen[index] = address.expect("an http(s):// URL").to_owned();
                broker.url = url;
            }
            None => {
                broker.kill();
                panic!("replica {index} did not start:\n{}", self.log(index));
            }
        }
        broker
    }

    /// Replica `index`, which must be running.
    pub fn replica(&self, index: usize) -> &DevBroker {
        self.brokers[index].as_ref().unwrap_or_else(|| panic!("replica {index} is not running"))
    }

    pub fn count(&self) -> usize {
        self.brokers.len()
    }

    /// Kills replica `index` with SIGKILL: no shutdown work at all.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut broker) = self.brokers[index].take() {
            broker.kill();
        }
    }

    /// Starts replica `index` again, on its address.
    pub fn restart(&mut self, index: usize) {
        self.kill(index);
        let broker = self.launch(index);
        self.brokers[index] = Some(broker);
    }

    /// Sends `signal` (`STOP`, `CONT`) to replica `index`.
    pub fn signal(&self, index: usize, signal: &str) {
        let pid = self.replica(index).pid().expect("running").to_string();
        let status = Command::new("kill").args([&format!("-{signal}"), &pid]).status().expect("kill runs");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// A bearer token for one of [`PEOPLE`].
    pub fn token(&self, user: &str) -> &str {
        self.tokens.get(user).unwrap_or_else(|| panic!("no person {user}"))
    }

    /// Runs SQL in the store's database as its owner; rows as `a|b` lines.
    pub fn store_sql(&self, cluster: &PostgresCluster, sql: &str) -> String {
        cluster.sql(&self.database.name, sql)
    }

    /// `hourglassd audit verify` on the store.
    pub fn verify(&self) -> Run {
        Run::from(
            Command::new(bin("hourglassd"))
                .args(["audit", "verify", "--store", &self.store_url()])
                .output()
                .expect("hourglassd runs"),
        )
    }
}
