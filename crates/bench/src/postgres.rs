//! PostgreSQL credentials, Hourglass against OpenBao, on one throwaway
//! cluster: Hourglass's roles live in database `hourglass_bench` and are
//! named `hg_…`, OpenBao's in `openbao_bench` and named `v-…`; both become
//! members of the same NOLOGIN role `bench_read`.
//!
//! - Issue: Hourglass files `POST /v1/requests` under a policy that
//!   approves at once and answers with an active grant whose role exists
//!   (the timed part includes making the client's SCRAM verifier, as the
//!   CLI does); OpenBao answers `GET database/creds/ROLE` once its role
//!   exists. At 1 client and at 4 concurrent clients, on keep-alive
//!   connections.
//! - Revocation lag: grants whose deadlines fall within one second, each
//!   role's disappearance from `pg_roles` (polled every few ms) against its
//!   own deadline.
//! - Mass revoke: from the first call until the calls returned and every
//!   role is gone.
//!
//! Hourglass needs one principal per live grant of a role (a second
//! request is refused as a duplicate): the broker runs in `serve` mode
//! trusting a JWKS-file issuer, and the benchmark mints a token per
//! principal.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::panic::AssertUnwindSafe;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use hourglass_client::material;
use hourglass_core::api::{CreateRequest, RequestOutcome, RevokeMatchingBody, RevokedGrants};
use hourglass_core::{GrantState, RevocationStatus, Timestamp};
use hourglass_e2e::DevBroker;
use hourglass_e2e::issuer::JwtIssuer;
use hourglass_e2e::postgres::{PostgresCluster, psql};

use crate::Options;
use crate::openbao::{self, Bao, Lease};
use crate::report::Figure;
use crate::stats::{Summary, human};

/// Concurrent clients in the multi-client figures.
const CLIENTS: usize = 4;
/// How often the benchmark looks at `pg_roles` while roles are dropped.
const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// The NOLOGIN role both systems make their login roles members of.
const MAPPED_ROLE: &str = "bench_read";
/// Blocks each side's issue figures are measured in, taking turns.
const TURNS: usize = 5;
/// Samples of PostgreSQL's own `CREATE ROLE`, spread over the turns.
const FLOOR_SAMPLES: usize = 30;

/// How much of each figure a run measures.
struct Sizes {
    one_client: usize,
    concurrent: usize,
    expiring: usize,
    revoked: usize,
    /// Repetitions of the expiry and mass-revoke figures.
    rounds: usize,
    /// Shortest time from the first issue to the deadlines of the expiry figure.
    min_lead: Duration,
}

pub fn figures(options: &Options) -> anyhow::Result<Vec<Figure>> {
    let sizes = Sizes {
        one_client: options.runs(300, 20),
        concurrent: options.runs(800, 40),
        expiring: options.runs(500, 50),
        revoked: options.runs(700, 50),
        rounds: options.runs(3, 1),
        min_lead: Duration::from_secs(options.runs(10, 4) as u64),
    };
    let cluster = std::panic::catch_unwind(PostgresCluster::start)
        .map_err(|_| anyhow::anyhow!("the throwaway PostgreSQL cluster did not start"))?;
    let grant_table = format!("CREATE TABLE orders (id int); GRANT SELECT ON orders TO {MAPPED_ROLE}");
    // One statement per psql call: CREATE DATABASE refuses a transaction block.
    for (database, sql) in [
        ("postgres", "CREATE DATABASE hourglass_bench"),
        ("postgres", "CREATE DATABASE openbao_bench"),
        ("postgres", &format!("CREATE ROLE {MAPPED_ROLE} NOLOGIN")),
        ("hourglass_bench", &grant_table),
        ("openbao_bench", &grant_table),
    ] {
        std::panic::catch_unwind(AssertUnwindSafe(|| cluster.sql(database, sql)))
            .map_err(|_| anyhow::anyhow!("preparing the cluster failed"))?;
    }
    let bao_server = openbao::Server::start(openbao::Storage::Memory)?;
    let raft_server = openbao::Server::start(openbao::Storage::Raft)?;
    let hourglass = Arc::new(Hourglass::start(&cluster)?);
    let store = std::panic::catch_unwind(PostgresCluster::start_durable)
        .map_err(|_| anyhow::anyhow!("the store's PostgreSQL cluster did not start"))?;
    let replicas = Arc::new(Hourglass::replicas(&cluster, &store, 3)?);
    let watch: Watch = Arc::new(Mutex::new(RoleWatch::start(&cluster)?));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let bao = Arc::new(Bao::connect(http_client()?, &bao_server).await?);
        let bao_raft = Arc::new(Bao::connect(http_client()?, &raft_server).await?);
        for bao in [&bao, &bao_raft] {
            bao.configure_postgres(cluster.port, "openbao_bench", cluster.admin_password()).await?;
            bao.create_role(HELD, Duration::from_secs(600), MAPPED_ROLE).await?;
        }
        let sides = Sides { hourglass, replicas, bao, bao_raft };
        let mut figures = sides.issue_figures(&sizes, &watch).await?;
        figures.extend(sides.expiry_figure(&sizes, &watch).await?);
        figures.push(sides.mass_revoke_figure(&sizes, &watch).await?);
        Ok(figures)
    })
}

/// The OpenBao role whose credentials last 10 minutes: held until revoked.
const HELD: &str = "held";

/// A reqwest client on keep-alive connections. reqwest is built without a
/// TLS crypto provider; `hourglass_client::Client::new` installs ring's
/// once per process, and building a reqwest client needs one even for
/// plain HTTP.
fn http_client() -> anyhow::Result<reqwest::Client> {
    hourglass_client::Client::new("http://127.0.0.1", "").map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(reqwest::Client::builder().pool_max_idle_per_host(64).build()?)
}

// ---------------------------------------------------------------------------
// Hourglass

/// `hourglassd serve` with a policy that approves `bench-db/read` at once
/// for engineers, trusting `issuer` for any principal's token.
struct Hourglass {
    /// Where calls go, in turn (one broker, or each replica).
    urls: Vec<String>,
    next: AtomicUsize,
    brokers: Brokers,
    http: reqwest::Client,
}

/// One broker on SQLite, or replicas on a PostgreSQL store.
enum Brokers {
    Single {
        // Dropped (killed) before its configuration directory is deleted.
        _broker: DevBroker,
        _config: tempfile::TempDir,
        issuer: JwtIssuer,
    },
    Replicas(hourglass_e2e::replicas::Replicas),
}

/// A grant Hourglass issued: its id, its role in PostgreSQL, its deadline.
#[derive(Clone)]
struct IssuedGrant {
    id: String,
    role: String,
    deadline: Timestamp,
}

impl Hourglass {
    fn start(cluster: &PostgresCluster) -> anyhow::Result<Hourglass> {
        let config = tempfile::tempdir()?;
        // The admin connection string reaches the broker through a file
        // readable by it only, never through the policy.
        let dsn_file = config.path().join("admin-dsn");
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&dsn_file)?;
            file.write_all(cluster.admin_dsn().as_bytes())?;
        }
        let toml = format!(
            r#"
[defaults]
workflow = "review"
min_duration = "1s"
max_duration = "1h"

[workflows.review]
approvals = [{{ group = "sre", count = 1 }}]

[resources.bench-db]
provider = "postgres"
settings = {{ admin_dsn_file = "{dsn}", host = "127.0.0.1", port = {port}, database = "hourglass_bench" }}

[resources.bench-db.roles.read]
settings = {{ grant = ["{MAPPED_ROLE}"] }}
"#,
            dsn = dsn_file.display(),
            port = cluster.port
        );
        let cedar = r#"permit (principal in Group::"engineers", action in [Action::"request", Action::"auto_approve"], resource);
permit (principal in Group::"security", action == Action::"revoke", resource);"#;
        std::fs::write(config.path().join("hourglass.toml"), toml)?;
        std::fs::write(config.path().join("policy.cedar"), cedar)?;
        let issuer = JwtIssuer::new("bench");
        issuer.trust_in(config.path());
        let broker = std::panic::catch_unwind(|| DevBroker::serve(config.path(), BTreeMap::new()))
            .map_err(|_| anyhow::anyhow!("hourglassd serve did not start"))?;
        Ok(Hourglass {
            urls: vec![broker.url.clone()],
            next: AtomicUsize::new(0),
            brokers: Brokers::Single { _broker: broker, _config: config, issuer },
            http: http_client()?,
        })
    }

    /// `count` replicas on a store in `store` (a cluster of its own), with
    /// the same resource on `cluster`.
    fn replicas(cluster: &PostgresCluster, store: &PostgresCluster, count: usize) -> anyhow::Result<Hourglass> {
        let policy = format!(
            "[defaults]\nworkflow = \"review\"\nmin_duration = \"1s\"\nmax_duration = \"1h\"\n\n\
             [workflows.review]\napprovals = [{{ group = \"sre\", count = 1 }}]\n\n\
             [resources.bench-db]\nprovider = \"postgres\"\n\
             settings = {{ admin_dsn_env = \"BENCH_DB_ADMIN_DSN\", host = \"127.0.0.1\", port = {port}, database = \"hourglass_bench\" }}\n\n\
             [resources.bench-db.roles.read]\nsettings = {{ grant = [\"{MAPPED_ROLE}\"] }}\n",
            port = cluster.port
        );
        let cedar = r#"permit (principal in Group::"engineers", action in [Action::"request", Action::"auto_approve"], resource);
permit (principal in Group::"security", action == Action::"revoke", resource);"#;
        let admin = cluster.admin_dsn();
        let set = std::panic::catch_unwind(|| {
            hourglass_e2e::replicas::Replicas::start(store, count, &policy, cedar, &[("BENCH_DB_ADMIN_DSN", &admin)])
        })
        .map_err(|_| anyhow::anyhow!("the replicas did not start"))?;
        Ok(Hourglass {
            urls: (0..count).map(|i| set.replica(i).url.clone()).collect(),
            next: AtomicUsize::new(0),
            brokers: Brokers::Replicas(set),
            http: http_client()?,
        })
    }

    fn issuer(&self) -> &JwtIssuer {
        match &self.brokers {
            Brokers::Single { issuer, .. } => issuer,
            Brokers::Replicas(set) => &set.idp,
        }
    }

    /// The next broker's URL, in turn.
    fn url(&self) -> &str {
        &self.urls[self.next.fetch_add(1, Ordering::Relaxed) % self.urls.len()]
    }

    /// A token for a principal of its own, `NAME@bench.example`, in `engineers`.
    fn token(&self, name: &str) -> Arc<str> {
        self.issuer().token(&format!("{name}@bench.example"), &["engineers"], "hourglass", 3600).into()
    }

    /// Tokens for `count` principals named `prefix-N`, minted before any timing.
    fn tokens(&self, prefix: &str, count: usize) -> Arc<Vec<Arc<str>>> {
        Arc::new((0..count).map(|n| self.token(&format!("{prefix}-{n}"))).collect())
    }

    /// Asks for `bench-db/read` for `duration` with a fresh client-made
    /// password (its verifier only is sent); returns once the grant is active.
    async fn issue(&self, token: Arc<str>, duration: &str) -> anyhow::Result<IssuedGrant> {
        let secret = material::postgres();
        let body = CreateRequest {
            resource: "bench-db".into(),
            role: "read".into(),
            duration: duration.into(),
            reason: "benchmark".into(),
            ticket: None,
            break_glass: false,
            client_material: Some(secret.material.clone()),
        };
        let response =
            self.http.post(format!("{}/v1/requests", self.url())).bearer_auth(&*token).json(&body).send().await?;
        let status = response.status();
        anyhow::ensure!(status.is_success(), "POST /v1/requests: HTTP {status}: {}", response.text().await?);
        let outcome: RequestOutcome = response.json().await?;
        let grant = outcome.grant.context("the request was not approved at once")?;
        anyhow::ensure!(grant.state == GrantState::Active, "grant {} is {}", grant.id, grant.state);
        Ok(IssuedGrant {
            id: grant.id.as_str().to_owned(),
            role: hourglass_broker::provider::postgres::role_name(&grant.owner, &grant),
            deadline: grant.expires_at,
        })
    }

    /// Revokes every live grant of `bench-db` in one call by a security
    /// administrator, as in an incident; checks it ended all of `grants` and
    /// returns how many revocations were left to the scheduler's retries.
    async fn revoke_all(&self, grants: Vec<IssuedGrant>) -> anyhow::Result<usize> {
        let admin = self.issuer().token("incident@bench.example", &["security"], "hourglass", 3600);
        let body = RevokeMatchingBody {
            resource: "bench-db".into(),
            role: None,
            owner: None,
            reason: "benchmark incident".into(),
        };
        let response =
            self.http.post(format!("{}/v1/grants/revoke", self.url())).bearer_auth(admin).json(&body).send().await?;
        let status = response.status();
        anyhow::ensure!(status.is_success(), "POST /v1/grants/revoke: HTTP {status}: {}", response.text().await?);
        let revoked: RevokedGrants = response.json().await?;
        let ended: HashSet<&str> = revoked.grants.iter().map(|grant| grant.id.as_str()).collect();
        let missed = grants.iter().filter(|grant| !ended.contains(grant.id.as_str())).count();
        anyhow::ensure!(missed == 0, "{missed} of {} grants were not in the bulk revocation", grants.len());
        Ok(revoked
            .grants
            .iter()
            .filter(|g| g.revocation.as_ref().is_none_or(|r| r.status != RevocationStatus::Done))
            .count())
    }
}

// ---------------------------------------------------------------------------
// The figures

struct Sides {
    hourglass: Arc<Hourglass>,
    /// Three replicas on a PostgreSQL store, for the expiry figure.
    replicas: Arc<Hourglass>,
    /// The dev server: the peer of every figure.
    bao: Arc<Bao>,
    /// With its leases on disk, as Hourglass's grants are: beside the
    /// issue figures, for a like-for-like reading.
    bao_raft: Arc<Bao>,
}

/// One OpenBao server's blocks of the issue figures.
struct BaoTurns {
    bao: Arc<Bao>,
    warm_up: Driven<Lease>,
    one: Driven<Lease>,
    four: Driven<Lease>,
}

impl BaoTurns {
    fn new(bao: &Arc<Bao>) -> BaoTurns {
        BaoTurns { bao: bao.clone(), warm_up: Driven::empty(), one: Driven::empty(), four: Driven::empty() }
    }

    fn run(mut self) -> IssueRun {
        IssueRun {
            one: Summary::of(&mut self.one.latencies),
            four: Summary::of(&mut self.four.latencies),
            per_second: self.four.per_second(),
        }
    }
}

/// Issue latencies and throughput of one side.
struct IssueRun {
    one: Summary,
    four: Summary,
    per_second: f64,
}

impl Sides {
    async fn issue_figures(&self, sizes: &Sizes, watch: &Watch) -> anyhow::Result<Vec<Figure>> {
        eprintln!(
            "postgres: issue latency, {} grants at 1 client and {} at {CLIENTS}, Hourglass and two OpenBao servers in turns…",
            sizes.one_client, sizes.concurrent
        );
        let warm_up = 10;
        let tokens = self.hourglass.tokens("issue", warm_up + sizes.one_client + sizes.concurrent);
        let used = Arc::new(AtomicUsize::new(0));
        let hourglass_issue = || {
            let (hourglass, tokens, used) = (self.hourglass.clone(), tokens.clone(), used.clone());
            move |_: usize| {
                let (hourglass, token) = (hourglass.clone(), tokens[used.fetch_add(1, Ordering::Relaxed)].clone());
                async move { hourglass.issue(token, "10m").await }
            }
        };
        let bao_issue = |bao: &Arc<Bao>| {
            let bao = bao.clone();
            move |_: usize| {
                let bao = bao.clone();
                async move { bao.issue(HELD).await }
            }
        };
        // All warmed up first; then they take turns, a block each, so that
        // a machine whose speed drifts during the run (seen here: 2x within
        // an hour) weighs on all alike. PostgreSQL's floor is sampled
        // between the blocks for the same reason.
        let mut hourglass = drive(warm_up, 1, hourglass_issue()).await?;
        let mut baos = [&self.bao, &self.bao_raft].map(BaoTurns::new);
        for side in &mut baos {
            side.warm_up = drive(warm_up, 1, bao_issue(&side.bao)).await?;
        }
        let (mut hourglass_one, mut hourglass_four) = (Driven::empty(), Driven::empty());
        let mut floor = Floor::default();
        for block in blocks(sizes.one_client, TURNS) {
            hourglass_one.append(drive(block, 1, hourglass_issue()).await?);
            for side in &mut baos {
                side.one.append(drive(block, 1, bao_issue(&side.bao)).await?);
            }
            tokio::task::block_in_place(|| floor.sample(watch, FLOOR_SAMPLES / TURNS))?;
        }
        for block in blocks(sizes.concurrent, TURNS) {
            hourglass_four.append(drive(block, CLIENTS, hourglass_issue()).await?);
            for side in &mut baos {
                side.four.append(drive(block, CLIENTS, bao_issue(&side.bao)).await?);
            }
        }

        let issued: Vec<IssuedGrant> = [&mut hourglass, &mut hourglass_one, &mut hourglass_four]
            .into_iter()
            .flat_map(|driven| std::mem::take(&mut driven.outputs))
            .collect();
        lock(watch)?.ensure_present("hg\\_%", issued.iter().map(|g| g.role.as_str()))?;
        let leases = baos.iter().flat_map(|side| [&side.warm_up, &side.one, &side.four]).flat_map(|d| &d.outputs);
        lock(watch)?.ensure_present("v-%", leases.map(|l| l.username.as_str()))?;
        let left = self.hourglass.revoke_all(issued).await?;
        anyhow::ensure!(left == 0, "{left} revocations after the issue figures were left to retries");
        for side in &baos {
            side.bao.revoke_prefix(&format!("database/creds/{HELD}")).await?;
        }

        let hourglass = IssueRun {
            one: Summary::of(&mut hourglass_one.latencies),
            four: Summary::of(&mut hourglass_four.latencies),
            per_second: hourglass_four.per_second(),
        };
        let [bao, bao_raft] = baos.map(BaoTurns::run);
        let (floor, hashing_floor) = (Summary::of(&mut floor.verifier), Summary::of(&mut floor.plaintext));
        let verifier = verifier_cost();
        let latency = |clients: &str, ours: Summary, theirs: Summary, durable: Summary| Figure {
            name: format!("PostgreSQL grant issue, {clients} (request → role ready)"),
            summary: Some(ours),
            target: "median and p99 ≤ OpenBao's".into(),
            met: Some(ours.median <= theirs.median && ours.p99 <= theirs.p99),
            peer: format!(
                "OpenBao `database/creds`: median {}, p99 {} (dev server, leases in memory); with its leases on disk \
                 (Raft): median {}, p99 {}",
                human(theirs.median),
                human(theirs.p99),
                human(durable.median),
                human(durable.p99)
            ),
            note: format!(
                "auto-approved; Hourglass and the two OpenBao servers in turns, {TURNS} blocks each; includes making the client's \
                 SCRAM verifier ({} median: one PBKDF2 round over a 256-bit random password); keep-alive HTTP; Hourglass \
                 flushes its store to disk before it answers; PostgreSQL's own `CREATE ROLE` and membership: {} median \
                 with that verifier (it derives the verifier's key once more, for the empty password it refuses), {} with \
                 a password in plain text as OpenBao sends it (hashed at PostgreSQL's 4,096 rounds)",
                human(verifier.median),
                human(floor.median),
                human(hashing_floor.median)
            ),
        };
        Ok(vec![
            latency("1 client", hourglass.one, bao.one, bao_raft.one),
            latency(&format!("{CLIENTS} concurrent clients"), hourglass.four, bao.four, bao_raft.four),
            Figure {
                name: format!("PostgreSQL grant throughput, {CLIENTS} clients"),
                summary: None,
                target: "≥ OpenBao's".into(),
                met: Some(hourglass.per_second >= bao.per_second),
                peer: format!(
                    "OpenBao: {:.0} grants/s (dev server); {:.0} grants/s with its leases on disk (Raft)",
                    bao.per_second, bao_raft.per_second
                ),
                note: format!("Hourglass: **{:.0} grants/s** ({} grants)", hourglass.per_second, sizes.concurrent),
            },
        ])
    }

    /// `sizes.expiring` grants whose deadlines fall within one second; the
    /// worst lag of a role's disappearance behind its grant's deadline.
    async fn expiry_figure(&self, sizes: &Sizes, watch: &Watch) -> anyhow::Result<Vec<Figure>> {
        let n = sizes.expiring;
        // Long enough to issue them all first, whoever is slower.
        let lead = sizes.min_lead.max(Duration::from_secs(3 + 2 * n as u64 / 60));
        let lead_secs = lead.as_secs() + 1;
        // OpenBao's creds take their TTL from the role: one role per TTL.
        for ttl in 1..=lead_secs {
            self.bao.create_role(&format!("expiry-{ttl}"), Duration::from_secs(ttl), MAPPED_ROLE).await?;
        }
        eprintln!("postgres: revocation lag, {n} grants expiring in one second, {} rounds…", sizes.rounds);
        let (mut ours, mut theirs, mut replicated) = (Vec::new(), Vec::new(), Vec::new());
        let mut notes = Vec::new();
        for round in 0..sizes.rounds {
            // Hourglass: one broker on SQLite, then three replicas on PostgreSQL.
            for (side, broker, worst) in [
                ("Hourglass", &self.hourglass, &mut ours),
                ("Hourglass, three replicas", &self.replicas, &mut replicated),
            ] {
                let tokens = broker.tokens(&format!("expiry{round}-{}", broker.urls.len()), n);
                let window = now().plus_millis(lead.as_millis() as i64);
                let hourglass = broker.clone();
                let issued = drive(n, CLIENTS, move |i| {
                    let (hourglass, token) = (hourglass.clone(), tokens[i].clone());
                    async move { hourglass.issue(token, &format!("{}s", seconds_until(window))).await }
                })
                .await?;
                let deadlines: HashMap<String, Timestamp> =
                    issued.outputs.iter().map(|g| (g.role.clone(), g.deadline)).collect();
                let lags = watch_expiry(watch, "hg\\_%", deadlines).await?;
                notes.push(format!("{side}: {lags}"));
                worst.push(lags.worst);
            }

            // OpenBao.
            let window = now().plus_millis(lead.as_millis() as i64);
            let bao = self.bao.clone();
            let issued = drive(n, CLIENTS, move |_| {
                let bao = bao.clone();
                async move { bao.issue(&format!("expiry-{}", seconds_until(window))).await }
            })
            .await?;
            // The exact deadlines, as OpenBao scheduled them.
            let leases = Arc::new(issued.outputs);
            let (bao, list) = (self.bao.clone(), leases.clone());
            let looked_up = drive(leases.len(), CLIENTS, move |i| {
                let (bao, list) = (bao.clone(), list.clone());
                async move { bao.expire_time(&list[i]).await }
            })
            .await?;
            let deadlines = leases.iter().map(|l| l.username.clone()).zip(looked_up.outputs).collect();
            let lags = watch_expiry(watch, "v-%", deadlines).await?;
            notes.push(format!("OpenBao: {lags}"));
            theirs.push(lags.worst);
        }
        let ours = Summary::of(&mut ours);
        let theirs = Summary::of(&mut theirs);
        let replicated = Summary::of(&mut replicated);
        let note = format!(
            "per round, the largest lag from a grant's deadline to its role gone from pg_roles (polled every {} ms); {}",
            POLL_INTERVAL.as_millis(),
            notes.join("; ")
        );
        let peer = format!("OpenBao, same runs: median {}, worst {}", human(theirs.median), human(theirs.p99));
        Ok(vec![
            Figure {
                name: format!("Revocation lag: {n} PostgreSQL grants expiring in the same second, last role dropped"),
                summary: Some(ours),
                target: "≤ 1 s after its deadline, at most OpenBao's".into(),
                met: Some(ours.p99 <= Duration::from_secs(1) && ours.p99 <= theirs.p99),
                peer: peer.clone(),
                note: note.clone(),
            },
            Figure {
                name: format!("Revocation lag: {n} PostgreSQL grants expiring together, three replicas on PostgreSQL"),
                summary: Some(replicated),
                target: "at most OpenBao's".into(),
                met: Some(replicated.p99 <= theirs.p99),
                peer,
                note: "the same, with the grants filed across three replicas sharing one store; each replica expires and revokes a share".into(),
            },
        ])
    }

    /// `sizes.revoked` live grants revoked at once: from the first call
    /// until the calls returned and every role is gone.
    async fn mass_revoke_figure(&self, sizes: &Sizes, watch: &Watch) -> anyhow::Result<Figure> {
        let n = sizes.revoked;
        eprintln!("postgres: mass revoke of {n} grants, {} rounds…", sizes.rounds);
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        let mut retried = 0;
        for round in 0..sizes.rounds {
            // Hourglass.
            let tokens = self.hourglass.tokens(&format!("revoke{round}"), n);
            let hourglass = self.hourglass.clone();
            let issued = drive(n, CLIENTS, move |i| {
                let (hourglass, token) = (hourglass.clone(), tokens[i].clone());
                async move { hourglass.issue(token, "10m").await }
            })
            .await?;
            let roles: HashSet<String> = issued.outputs.iter().map(|g| g.role.clone()).collect();
            let started = now();
            let (gone, left) =
                tokio::join!(wait_gone(watch, "hg\\_%", roles), self.hourglass.revoke_all(issued.outputs));
            retried += left?;
            let returned = now();
            ours.push(elapsed(started, returned.max(last(&gone?))));

            // OpenBao.
            let bao = self.bao.clone();
            let issued = drive(n, CLIENTS, move |_| {
                let bao = bao.clone();
                async move { bao.issue(HELD).await }
            })
            .await?;
            let roles: HashSet<String> = issued.outputs.iter().map(|l| l.username.clone()).collect();
            let started = now();
            let prefix = format!("database/creds/{HELD}");
            let (gone, revoked) = tokio::join!(wait_gone(watch, "v-%", roles), self.bao.revoke_prefix(&prefix));
            revoked?;
            let returned = now();
            theirs.push(elapsed(started, returned.max(last(&gone?))));
        }
        let ours = Summary::of(&mut ours);
        let theirs = Summary::of(&mut theirs);
        Ok(Figure {
            name: format!("Mass revoke of {n} PostgreSQL grants"),
            summary: Some(ours),
            target: "< 4 s (OpenBao: 16.4 s)".into(),
            met: Some(ours.p99 < Duration::from_secs(4)),
            peer: format!(
                "OpenBao `revoke-prefix` (sync): median {}, worst {}",
                human(theirs.median),
                human(theirs.p99)
            ),
            note: format!(
                "one `POST /v1/grants/revoke` for the resource by a security administrator; until it returned and every \
                 role is gone{}",
                if retried > 0 { format!("; {retried} left to the scheduler's retries") } else { String::new() }
            ),
        })
    }
}

/// How the roles of grants expiring together went.
struct ExpiryLags {
    /// The largest lag: the last role dropped, against its own deadline.
    worst: Duration,
    median: Duration,
    /// From the earliest deadline to the latest.
    spread: Duration,
    count: usize,
}

impl std::fmt::Display for ExpiryLags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} deadlines within {}, lag median {} worst {}",
            self.count,
            human(self.spread),
            human(self.median),
            human(self.worst)
        )
    }
}

/// Waits until every role in `deadlines` is gone; each one's lag behind
/// its deadline.
async fn watch_expiry(watch: &Watch, like: &str, deadlines: HashMap<String, Timestamp>) -> anyhow::Result<ExpiryLags> {
    let first = deadlines.values().min().copied().context("no grants")?;
    let latest = deadlines.values().max().copied().context("no grants")?;
    anyhow::ensure!(now() < first, "issuing took past the first deadline; the lead is too short");
    let roles = deadlines.keys().cloned().collect();
    let gone = wait_gone(watch, like, roles).await?;
    let mut lags: Vec<Duration> = gone.iter().map(|(role, at)| elapsed(deadlines[role], *at)).collect();
    let summary = Summary::of(&mut lags);
    let worst = lags.last().copied().unwrap_or_default();
    Ok(ExpiryLags { worst, median: summary.median, spread: elapsed(first, latest), count: lags.len() })
}

// ---------------------------------------------------------------------------
// Driving calls and watching roles

/// What [`drive`] measured: each call's latency and output (in call
/// order), and the wall time of the whole.
struct Driven<T> {
    latencies: Vec<Duration>,
    outputs: Vec<T>,
    wall: Duration,
}

impl<T> Driven<T> {
    fn empty() -> Driven<T> {
        Driven { latencies: Vec::new(), outputs: Vec::new(), wall: Duration::ZERO }
    }

    /// Adds a later run's calls, as if made in one run (wall times summed).
    fn append(&mut self, mut later: Driven<T>) {
        self.latencies.append(&mut later.latencies);
        self.outputs.append(&mut later.outputs);
        self.wall += later.wall;
    }

    fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }
}

/// `total` split into `turns` blocks as even as can be (none empty).
fn blocks(total: usize, turns: usize) -> impl Iterator<Item = usize> {
    let turns = turns.clamp(1, total.max(1));
    (0..turns).map(move |turn| total / turns + usize::from(turn < total % turns)).filter(|&block| block > 0)
}

/// Makes `count` calls of `call(n)` from `clients` concurrent clients,
/// each making its next call when its last one returned.
async fn drive<T, F, Fut>(count: usize, clients: usize, call: F) -> anyhow::Result<Driven<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients.min(count) {
        let (call, next) = (call.clone(), next.clone());
        tasks.spawn(async move {
            let mut done = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return anyhow::Ok(done);
                }
                let sent = Instant::now();
                let output = call(n).await?;
                done.push((n, sent.elapsed(), output));
            }
        });
    }
    let mut all = Vec::with_capacity(count);
    while let Some(done) = tasks.join_next().await {
        all.extend(done??);
    }
    let wall = started.elapsed();
    all.sort_by_key(|(n, _, _)| *n);
    let (latencies, outputs) = all.into_iter().map(|(_, latency, output)| (latency, output)).unzip();
    Ok(Driven { latencies, outputs, wall })
}

/// A `psql` session kept open as the superuser over the cluster's socket,
/// so that `pg_roles` can be read every few milliseconds. Killed on drop.
struct RoleWatch {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

/// What psql prints after each answer, so that the end of one is known.
const END_OF_ANSWER: &str = "-- end of answer --";

impl RoleWatch {
    fn start(cluster: &PostgresCluster) -> anyhow::Result<RoleWatch> {
        let mut child = Command::new(psql())
            .arg("-h")
            .arg(cluster.socket_dir())
            .args([
                "-p",
                &cluster.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-qAtX",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting psql")?;
        let input = child.stdin.take().context("psql's stdin")?;
        let output = BufReader::new(child.stdout.take().context("psql's stdout")?);
        Ok(RoleWatch { child, input, output })
    }

    /// Runs `sql`; the rows it printed.
    fn answer(&mut self, sql: &str) -> anyhow::Result<Vec<String>> {
        writeln!(self.input, "{sql};\n\\echo '{END_OF_ANSWER}'")?;
        self.input.flush()?;
        let mut rows = Vec::new();
        loop {
            let mut line = String::new();
            anyhow::ensure!(self.output.read_line(&mut line)? > 0, "psql ended");
            let line = line.trim_end();
            if line == END_OF_ANSWER {
                return Ok(rows);
            }
            rows.push(line.to_owned());
        }
    }

    /// The roles whose names are `LIKE like` now.
    fn roles(&mut self, like: &str) -> anyhow::Result<HashSet<String>> {
        Ok(self.answer(&format!("SELECT rolname FROM pg_roles WHERE rolname LIKE '{like}'"))?.into_iter().collect())
    }

    /// Fails unless every one of `names` is a role now.
    fn ensure_present<'a>(&mut self, like: &str, names: impl Iterator<Item = &'a str>) -> anyhow::Result<()> {
        let present = self.roles(like)?;
        let missing = names.filter(|name| !present.contains(*name)).count();
        anyhow::ensure!(missing == 0, "{missing} issued roles are missing from pg_roles");
        Ok(())
    }

    /// Polls until none of `roles` is left (at most 5 minutes); when each
    /// was first seen gone.
    fn wait_gone(&mut self, like: &str, mut roles: HashSet<String>) -> anyhow::Result<HashMap<String, Timestamp>> {
        let limit = Instant::now() + Duration::from_secs(300);
        let mut gone = HashMap::with_capacity(roles.len());
        while !roles.is_empty() {
            anyhow::ensure!(Instant::now() < limit, "{} roles still there after 5 minutes", roles.len());
            // Gone by the time this poll started reading at the latest.
            let polled = now();
            let present = self.roles(like)?;
            roles.retain(|role| {
                let left = present.contains(role);
                if !left {
                    gone.insert(role.clone(), polled);
                }
                left
            });
            std::thread::sleep(POLL_INTERVAL);
        }
        Ok(gone)
    }
}

/// The one [`RoleWatch`], shared with the blocking thread that polls.
type Watch = Arc<Mutex<RoleWatch>>;

fn lock(watch: &Watch) -> anyhow::Result<MutexGuard<'_, RoleWatch>> {
    watch.lock().map_err(|_| anyhow::anyhow!("the role watch failed earlier"))
}

/// [`RoleWatch::wait_gone`] on a blocking thread, so that the calls
/// removing the roles run meanwhile.
async fn wait_gone(watch: &Watch, like: &str, roles: HashSet<String>) -> anyhow::Result<HashMap<String, Timestamp>> {
    let (watch, like) = (watch.clone(), like.to_owned());
    tokio::task::spawn_blocking(move || lock(&watch)?.wait_gone(&like, roles)).await?
}

impl Drop for RoleWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// Time

fn now() -> Timestamp {
    Timestamp::from_offset_date_time(time::OffsetDateTime::now_utc())
}

/// From `from` to `to`, zero if `to` is earlier.
fn elapsed(from: Timestamp, to: Timestamp) -> Duration {
    Duration::from_millis(u64::try_from(from.millis_until(to)).unwrap_or(0))
}

/// Whole seconds from now to the window starting at `window`, rounded up:
/// a grant that long, issued now, ends within the window's second.
fn seconds_until(window: Timestamp) -> u64 {
    u64::try_from(now().millis_until(window)).unwrap_or(0).div_ceil(1000).max(1)
}

fn last(gone: &HashMap<String, Timestamp>) -> Timestamp {
    gone.values().max().copied().unwrap_or_else(now)
}

/// What PostgreSQL alone spends on an issue, `CREATE ROLE` then the
/// membership over the psql session: with a client's verifier, as
/// Hourglass sends it, and with a password in plain text, as OpenBao does.
#[derive(Default)]
struct Floor {
    verifier: Vec<Duration>,
    plaintext: Vec<Duration>,
}

impl Floor {
    /// `count` more samples of each.
    fn sample(&mut self, watch: &Watch, count: usize) -> anyhow::Result<()> {
        let mut watch = lock(watch)?;
        let mut timed = |password: &str, into: &mut Vec<Duration>| {
            let started = Instant::now();
            watch.answer(&format!(
                "CREATE ROLE floor_probe LOGIN PASSWORD '{password}'; GRANT {MAPPED_ROLE} TO floor_probe"
            ))?;
            into.push(started.elapsed());
            watch.answer("DROP ROLE floor_probe").map(drop)
        };
        for _ in 0..count {
            let secret = material::postgres();
            timed(secret.material.postgres_scram_verifier.as_deref().context("no verifier")?, &mut self.verifier)?;
            timed(&secret.password, &mut self.plaintext)?;
        }
        Ok(())
    }
}

/// What making a client's secret and its SCRAM verifier costs.
fn verifier_cost() -> Summary {
    let mut samples: Vec<Duration> = (0..50)
        .map(|_| {
            let started = Instant::now();
            drop(material::postgres());
            started.elapsed()
        })
        .collect();
    Summary::of(&mut samples)
}
