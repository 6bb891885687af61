//! Several brokers on one PostgreSQL store, beside one broker on SQLite, in
//! one run, all on this machine (so replicas, PostgreSQL and the load share
//! its cores: three replicas compete for CPU rather than add it):
//!
//! - token lifecycle (request → auto-approve → credential) throughput with
//!   8 clients, and latency at 1,000/s offered: SQLite, PostgreSQL with one
//!   replica, with three (calls spread over them);
//! - approval on one replica → `grant.issued` on the requester's stream on
//!   another;
//! - 10,000 token grants expiring in the same second on three replicas, and
//!   again with one replica killed at the deadline: each grant's revocation
//!   against its deadline;
//! - failover: the replica holding a batch of revocations in flight killed,
//!   until another replica has done them;
//! - a large store (100,000 live grants, 10,000 requests waiting, 1,000,000
//!   audit events): my grants, an approver's inbox, a history, and
//!   `hourglassd audit verify` (time and peak memory).
//!
//! The store's PostgreSQL syncs its WAL on commit, as in production.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use hourglass_core::api::{CreateRequest, RequestOutcome};
use hourglass_core::{GrantState, Timestamp};
use hourglass_e2e::DevBroker;
use hourglass_e2e::issuer::JwtIssuer;
use hourglass_e2e::postgres::PostgresCluster;
use hourglass_e2e::replicas::{CEDAR, POLICY, Replicas};

use crate::Options;
use crate::report::Figure;
use crate::stats::{Summary, human};

/// Clients in flight at once for the throughput figures.
const CLIENTS: usize = 8;
const OFFERED_PER_SECOND: u32 = 1_000;

pub fn figures(options: &Options) -> anyhow::Result<Vec<Figure>> {
    let cluster = std::panic::catch_unwind(PostgresCluster::start_durable)
        .map_err(|_| anyhow::anyhow!("the PostgreSQL cluster for the store did not start"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let mut figures = Vec::new();
        for (label, replicas) in
            [("SQLite, one broker", 0), ("PostgreSQL, one replica", 1), ("PostgreSQL, three replicas", 3)]
        {
            let deployment = Deployment::start(&cluster, replicas)?;
            figures.push(throughput(&deployment, label, options).await?);
            figures.push(at_rate(&deployment, label, options).await?);
        }
        let three = Deployment::start(&cluster, 3)?;
        figures.push(approval_across(&three, options).await?);
        drop(three);
        figures.push(mass_expiry(&cluster, options, false).await?);
        figures.push(mass_expiry(&cluster, options, true).await?);
        figures.push(failover(&cluster, options).await?);
        figures.extend(large_store(&cluster, options).await?);
        Ok(figures)
    })
}

/// Brokers to send calls to: one on SQLite, or replicas on PostgreSQL.
struct Deployment {
    urls: Vec<String>,
    http: reqwest::Client,
    brokers: Brokers,
}

/// What keeps the brokers running, and the IdP they trust.
enum Brokers {
    Sqlite { _broker: DevBroker, _config: tempfile::TempDir, idp: JwtIssuer },
    Replicas(Replicas),
}

impl Deployment {
    /// `replicas` brokers on a new database of `cluster`; 0: one broker on SQLite.
    fn start(cluster: &PostgresCluster, replicas: usize) -> anyhow::Result<Deployment> {
        let http = http_client()?;
        if replicas == 0 {
            let (config, idp) = Replicas::config(POLICY, CEDAR);
            let broker = DevBroker::serve(config.path(), BTreeMap::new());
            return Ok(Deployment {
                urls: vec![broker.url.clone()],
                http,
                brokers: Brokers::Sqlite { _broker: broker, _config: config, idp },
            });
        }
        let set = std::panic::catch_unwind(|| Replicas::start(cluster, replicas, POLICY, CEDAR, &[]))
            .map_err(|_| anyhow::anyhow!("the replicas did not start"))?;
        let urls = (0..replicas).map(|i| set.replica(i).url.clone()).collect();
        Ok(Deployment { urls, http, brokers: Brokers::Replicas(set) })
    }

    /// CPU time the brokers have used so far.
    fn broker_cpu(&self) -> Duration {
        let pids: Vec<u32> = match &self.brokers {
            Brokers::Sqlite { _broker, .. } => _broker.pid().into_iter().collect(),
            Brokers::Replicas(set) => (0..set.count()).filter_map(|i| set.replica(i).pid()).collect(),
        };
        pids.into_iter().map(cpu_time).sum()
    }

    fn idp(&self) -> &JwtIssuer {
        match &self.brokers {
            Brokers::Sqlite { idp, .. } => idp,
            Brokers::Replicas(set) => &set.idp,
        }
    }

    /// PostgreSQL with one replica: the configuration the targets are for.
    fn one_replica(&self) -> bool {
        matches!(&self.brokers, Brokers::Replicas(set) if set.count() == 1)
    }

    fn token(&self, user: &str, group: &str) -> String {
        self.idp().token(&format!("{user}@bench.example"), &[group], "hourglass", 3_600)
    }

    fn url(&self, n: usize, path: &str) -> String {
        format!("{}{path}", self.urls[n % self.urls.len()])
    }

    async fn request(&self, n: usize, token: &str, role: &str, duration: &str) -> anyhow::Result<RequestOutcome> {
        let body = CreateRequest {
            resource: "api".into(),
            role: role.into(),
            duration: duration.into(),
            reason: "benchmark".into(),
            ticket: None,
            break_glass: false,
            client_material: None,
        };
        let response = self.http.post(self.url(n, "/v1/requests")).bearer_auth(token).json(&body).send().await?;
        ok_json(response).await
    }

    /// Request, auto-approve, credential: one token lifecycle, spread over
    /// the brokers.
    async fn lifecycle(&self, n: usize, token: &str) -> anyhow::Result<()> {
        let outcome = self.request(n, token, "read", "10m").await?;
        let grant = outcome.grant.context("an auto-approved request carries its grant")?;
        ensure!(grant.state == GrantState::Active, "grant {} is {}", grant.id, grant.state);
        let response = self
            .http
            .get(self.url(n + 1, &format!("/v1/grants/{}/credential", grant.id)))
            .bearer_auth(token)
            .send()
            .await?;
        let credential: serde_json::Value = ok_json(response).await?;
        ensure!(credential.get("env").is_some(), "no credential: {credential}");
        Ok(())
    }
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    // reqwest needs a TLS provider installed even for plain HTTP.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder().pool_max_idle_per_host(1_000).build()?)
}

async fn ok_json<T: serde::de::DeserializeOwned>(response: reqwest::Response) -> anyhow::Result<T> {
    let status = response.status();
    if !status.is_success() {
        bail!("{status}: {}", response.text().await.unwrap_or_default());
    }
    Ok(response.json().await?)
}

fn tokens(deployment: &Deployment, prefix: &str, count: usize) -> Arc<Vec<String>> {
    Arc::new((0..count).map(|n| deployment.token(&format!("{prefix}{n}"), "engineers")).collect())
}

async fn throughput(deployment: &Deployment, label: &str, options: &Options) -> anyhow::Result<Figure> {
    let window = Duration::from_secs(if options.quick { 2 } else { 10 });
    eprintln!("replicas: token lifecycle, {label}, {CLIENTS} clients for {window:?}…");
    let tokens = tokens(deployment, &format!("t{}-", deployment.urls.len()), 3_000 * window.as_secs() as usize);
    let next = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let started = Instant::now();
    let workers = (0..CLIENTS).map(|_| async {
        let mut samples = Vec::new();
        while !done.load(Ordering::Relaxed) {
            let n = next.fetch_add(1, Ordering::Relaxed);
            let token = tokens.get(n).context("out of principals")?;
            let began = Instant::now();
            deployment.lifecycle(n, token).await?;
            samples.push(began.elapsed());
        }
        anyhow::Ok(samples)
    });
    let stop = async {
        tokio::time::sleep(window).await;
        done.store(true, Ordering::Relaxed);
    };
    let cpu_before = (deployment.broker_cpu(), postgres_cpu());
    let (results, ()) = tokio::join!(futures::future::join_all(workers), stop);
    let mut samples = Vec::new();
    for result in results {
        samples.extend(result?);
    }
    let rate = samples.len() as f64 / started.elapsed().as_secs_f64();
    let per = |total: Duration| total / u32::try_from(samples.len().max(1)).unwrap_or(u32::MAX);
    let (broker_cpu, store_cpu) =
        (per(deployment.broker_cpu().saturating_sub(cpu_before.0)), per(postgres_cpu().saturating_sub(cpu_before.1)));
    let summary = Summary::of(&mut samples);
    let postgres_one = deployment.one_replica();
    Ok(Figure {
        name: format!("Token lifecycle throughput, {label}"),
        summary: Some(summary),
        target: if postgres_one { "≥ 1,000/s".into() } else { "— (beside the others)".into() },
        met: postgres_one.then_some(rate >= 1_000.0),
        peer: "—".into(),
        note: format!(
            "**{rate:.0}/s** with {CLIENTS} clients; request → auto-approve → credential, 2 commits; CPU per lifecycle: brokers {}, PostgreSQL {}",
            human(broker_cpu),
            human(store_cpu)
        ),
    })
}

async fn at_rate(deployment: &Deployment, label: &str, options: &Options) -> anyhow::Result<Figure> {
    let window = Duration::from_secs(if options.quick { 2 } else { 10 });
    let count = OFFERED_PER_SECOND as usize * window.as_secs() as usize;
    eprintln!("replicas: token lifecycle, {label}, {OFFERED_PER_SECOND}/s offered for {window:?}…");
    let tokens = tokens(deployment, &format!("r{}-", deployment.urls.len()), count);
    let every = Duration::from_secs(1) / OFFERED_PER_SECOND;
    let started = Instant::now();
    let running = futures::stream::iter(0..count)
        .map(|n| {
            let due = started + every * u32::try_from(n).unwrap_or(u32::MAX);
            let tokens = &tokens;
            async move {
                tokio::time::sleep_until(due.into()).await;
                deployment.lifecycle(n, &tokens[n]).await?;
                anyhow::Ok(due.elapsed())
            }
        })
        .buffer_unordered(count);
    let results: Vec<anyhow::Result<Duration>> = running.collect().await;
    let mut samples = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let rate = samples.len() as f64 / started.elapsed().as_secs_f64();
    let summary = Summary::of(&mut samples);
    let postgres_one = deployment.one_replica();
    Ok(Figure {
        name: format!("Token lifecycle latency at {OFFERED_PER_SECOND}/s offered, {label}"),
        summary: Some(summary),
        target: if postgres_one { "p99 < 10 ms".into() } else { "— (beside the others)".into() },
        met: postgres_one.then_some(summary.p99 < Duration::from_millis(10)),
        peer: "—".into(),
        note: format!("{count} lifecycles timed from when due; completed at {rate:.0}/s"),
    })
}

/// The approver's POST on replica 0 until `grant.issued` reaches the
/// requester's stream on replica 1.
async fn approval_across(deployment: &Deployment, options: &Options) -> anyhow::Result<Figure> {
    let runs = options.runs(300, 30);
    eprintln!("replicas: approval to another replica's stream, {runs} approvals…");
    let requester = deployment.token("requester", "engineers");
    let approver = deployment.token("approver", "sre");
    let response = deployment.http.get(deployment.url(1, "/v1/events")).bearer_auth(&requester).send().await?;
    ensure!(response.status().is_success(), "events: {}", response.status());
    let mut events = EventStream { body: Box::pin(response.bytes_stream()), buffer: Vec::new() };
    ensure!(events.next_event().await?.0 == "hello", "the stream starts with hello");
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let filed = deployment.request(0, &requester, "write", "10m").await?;
        let id = filed.request.id.clone();
        let started = Instant::now();
        let response = deployment
            .http
            .post(deployment.url(0, &format!("/v1/requests/{id}/approve")))
            .bearer_auth(&approver)
            .json(&serde_json::json!({}))
            .send()
            .await?;
        let _: RequestOutcome = ok_json(response).await?;
        let grant_id = loop {
            let (kind, data) = events.next_event().await?;
            if kind == "grant.issued" {
                let event: hourglass_core::api::Event = serde_json::from_str(&data)?;
                if let Some(grant) = event.grant.filter(|g| g.request_id == id) {
                    break grant.id;
                }
            }
        };
        samples.push(started.elapsed());
        let response = deployment
            .http
            .post(deployment.url(0, &format!("/v1/grants/{grant_id}/revoke")))
            .bearer_auth(&requester)
            .json(&serde_json::json!({}))
            .send()
            .await?;
        let _: serde_json::Value = ok_json(response).await?;
    }
    let summary = Summary::of(&mut samples);
    Ok(Figure {
        name: "Approval on one replica to the requester's stream on another".into(),
        summary: Some(summary),
        target: "p99 < 20 ms".into(),
        met: Some(summary.p99 < Duration::from_millis(20)),
        peer: "—".into(),
        note: "three replicas; the event crosses the store (written with the approval, followed by each replica)"
            .into(),
    })
}

/// A server-sent event stream, read event by event.
struct EventStream {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: Vec<u8>,
}

impl EventStream {
    async fn next_event(&mut self) -> anyhow::Result<(String, String)> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&block);
                let (mut kind, mut data) = (String::new(), String::new());
                for line in text.lines() {
                    if let Some(k) = line.strip_prefix("event:") {
                        kind = k.trim().to_owned();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                if kind.is_empty() && data.is_empty() {
                    continue;
                }
                return Ok((kind, data));
            }
            match self.body.next().await {
                Some(chunk) => self.buffer.extend_from_slice(&chunk?),
                None => bail!("the event stream ended"),
            }
        }
    }
}

fn now() -> Timestamp {
    Timestamp::from_offset_date_time(time::OffsetDateTime::now_utc())
}

/// Each grant's revocation, from the store, against its deadline (ms),
/// once every grant is revoked; `None` if some are not within `limit`.
fn revocation_lags(set: &Replicas, cluster: &PostgresCluster, limit: Duration) -> Option<Vec<i64>> {
    let settled = hourglass_e2e::eventually(limit, || {
        let left = set
            .store_sql(cluster, "SELECT count(*) FROM grants WHERE state <> 'expired' OR revocation_due IS NOT NULL");
        (left == "0").then_some(())
    });
    settled?;
    let rows = set.store_sql(cluster, "SELECT (doc::json -> 'revocation' ->> 'completed_at'), expires_at FROM grants");
    Some(
        rows.lines()
            .filter_map(|line| {
                let (done, deadline) = line.split_once('|')?;
                Some(Timestamp::parse(done).ok()?.unix_millis() - deadline.parse::<i64>().ok()?)
            })
            .collect(),
    )
}

/// 10,000 token grants whose deadlines fall in the same second, on three
/// replicas; with `kill`, replica 0 killed at the deadline.
async fn mass_expiry(cluster: &PostgresCluster, options: &Options, kill: bool) -> anyhow::Result<Figure> {
    let grants = options.runs(10_000, 500);
    let deployment = Deployment::start(cluster, 3)?;
    eprintln!(
        "replicas: {grants} token grants expiring in the same second{}…",
        if kill { ", one replica killed" } else { "" }
    );
    let tokens = tokens(&deployment, "e", grants);
    // The deadline: a whole second after filing is done (about 2,000/s here).
    let lead = Duration::from_secs(5 + grants as u64 / 1_000);
    let target = now().plus_millis(i64::try_from(lead.as_millis())?);
    let target = Timestamp::from_unix_millis(target.unix_millis() / 1000 * 1000);
    let filed = futures::stream::iter(0..grants)
        .map(|n| {
            let (deployment, tokens) = (&deployment, &tokens);
            async move {
                let seconds = ((target.unix_millis() - now().unix_millis()).max(1_000) + 999) / 1_000;
                deployment.request(n, &tokens[n], "read", &format!("{seconds}s")).await
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    for outcome in filed {
        outcome?;
    }
    let Brokers::Replicas(mut set) = deployment.brokers else { bail!("replicas expected") };
    if kill {
        let wait = target.unix_millis() - now().unix_millis();
        tokio::time::sleep(Duration::from_millis(u64::try_from(wait.max(0))?)).await;
        set.kill(0);
    }
    let lease = Duration::from_millis(1_500);
    let lags = tokio::task::block_in_place(|| revocation_lags(&set, cluster, Duration::from_secs(60)))
        .context("not every grant was revoked within 60 s")?;
    let mut samples: Vec<Duration> =
        lags.iter().map(|ms| Duration::from_millis(u64::try_from((*ms).max(0)).unwrap_or(0))).collect();
    let worst = samples.iter().max().copied().unwrap_or_default();
    let summary = Summary::of(&mut samples);
    let bound = if kill { lease + Duration::from_secs(1) } else { Duration::from_secs(1) };
    Ok(Figure {
        name: format!(
            "{grants} token grants expiring in the same second, three replicas{}",
            if kill { ", one killed at the deadline" } else { "" }
        ),
        summary: Some(summary),
        target: if kill {
            "all revoked within the lease (1.5 s) + 1 s".into()
        } else {
            "all revoked within 1 s".into()
        },
        met: Some(worst <= bound),
        peer: "—".into(),
        note: format!("each grant's revocation after its own deadline; the last {}", human(worst)),
    })
}

/// A batch of revocations in flight on one replica, which is killed: from
/// the kill until every revocation of the batch is done by another.
async fn failover(cluster: &PostgresCluster, options: &Options) -> anyhow::Result<Figure> {
    let rounds = options.runs(5, 1);
    let batch = 50;
    eprintln!("replicas: failover of a batch of {batch} revocations, {rounds} rounds…");
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let hooks = tempfile::tempdir()?;
        let slow = hooks.path().join("slow");
        std::fs::write(&slow, "")?;
        // Revoke waits while `slow` exists: the first replica's attempts stay
        // in flight; the survivors', after the kill, return at once.
        let hook = hooks.path().join("hook.sh");
        std::fs::write(
            &hook,
            format!(
                "#!/bin/sh\nread input\ncase \"$1\" in\n  issue|renew) echo '{{\"state\": {{\"n\": 1}}, \"env\": {{\"X_TOKEN\": \"t\"}}}}' ;;\n  \
                 revoke) while [ -e {slow} ]; do sleep 0.05; done ;;\nesac\n",
                slow = slow.display()
            ),
        )?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))?;
        let policy = format!(
            "{POLICY}\n[resources.cloud]\nprovider = \"exec\"\nsettings = {{ command = [\"{}\"] }}\n[resources.cloud.roles.read]\n",
            hook.display()
        );
        let cedar = format!(
            "{CEDAR}\npermit (principal in Group::\"engineers\", action == Action::\"auto_approve\", resource == Role::\"cloud/read\");\n"
        );
        let mut set = std::panic::catch_unwind(|| Replicas::start(cluster, 3, &policy, &cedar, &[]))
            .map_err(|_| anyhow::anyhow!("the replicas did not start"))?;
        let http = http_client()?;
        let deadline_in = 4;
        for n in 0..batch {
            let token = set.idp.token(&format!("f{n}@bench.example"), &["engineers"], "hourglass", 3_600);
            let body = CreateRequest {
                resource: "cloud".into(),
                role: "read".into(),
                duration: format!("{deadline_in}s"),
                reason: "benchmark".into(),
                ticket: None,
                break_glass: false,
                client_material: None,
            };
            let response = http
                .post(format!("{}/v1/requests", set.replica(n % 3).url))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await?;
            let _: RequestOutcome = ok_json(response).await?;
        }
        // Wait for one replica to claim the expired batch, then kill it.
        let holder = tokio::task::block_in_place(|| {
            hourglass_e2e::eventually(Duration::from_secs(30), || {
                let claims = set.store_sql(
                    cluster,
                    "SELECT claimed_by, count(*) FROM grants WHERE claimed_by IS NOT NULL AND state = 'expired' GROUP BY 1 ORDER BY 2 DESC LIMIT 1",
                );
                let (replica, count) = claims.split_once('|')?;
                (count.trim().parse::<usize>().ok()? > 0).then(|| replica.to_owned())
            })
        })
        .context("no replica claimed the batch")?;
        let index = (0..3)
            .find(|i| holder.contains(&format!("-{}-", set.replica(*i).pid().unwrap_or(0))))
            .context("the holder is one of the replicas")?;
        let killed = Instant::now();
        set.kill(index);
        std::fs::remove_file(&slow)?;
        let done = tokio::task::block_in_place(|| {
            hourglass_e2e::eventually(Duration::from_secs(60), || {
                let left = set.store_sql(
                    cluster,
                    "SELECT count(*) FROM grants WHERE revocation_due IS NOT NULL OR state <> 'expired'",
                );
                (left == "0").then_some(())
            })
        });
        done.context("the batch was not done by the survivors within 60 s")?;
        samples.push(killed.elapsed());
    }
    let summary = Summary::of(&mut samples);
    Ok(Figure {
        name: format!("Failover: the replica holding {batch} revocations in flight killed, until another did them"),
        summary: Some(summary),
        target: "< 2 s".into(),
        met: Some(summary.p99 < Duration::from_secs(2)),
        peer: "OpenBao's PostgreSQL HA lock: 15 s TTL (its `storage \"postgresql\"` HA, not run here)".into(),
        note: "replica lease 1.5 s; from SIGKILL until every revocation of the batch is recorded by a survivor".into(),
    })
}

/// A store the size of a large team's after a long while, and what people
/// read from it.
async fn large_store(cluster: &PostgresCluster, options: &Options) -> anyhow::Result<Vec<Figure>> {
    let (grants, waiting, events) =
        (options.runs(100_000, 2_000), options.runs(10_000, 200), options.runs(1_000_000, 20_000));
    eprintln!("replicas: a store of {grants} live grants, {waiting} waiting requests, {events} audit events…");
    let set = std::panic::catch_unwind(|| Replicas::start(cluster, 1, POLICY, CEDAR, &[]))
        .map_err(|_| anyhow::anyhow!("the replica did not start"))?;
    let store_url = set.store_url();
    let location = hourglass_broker::store::StoreLocation::postgres(store_url.clone());
    let store = hourglass_broker::store::Store::open(&location, &Default::default()).await?;
    let filled = Instant::now();
    fill(&store, grants, waiting, events).await?;
    eprintln!("replicas: filled in {}", human(filled.elapsed()));
    store.retire().await?;
    // As a store that grew over months is: vacuumed and analyzed, rather
    // than measured while autovacuum works through a million new rows.
    cluster.sql(&set.database.name, "VACUUM (ANALYZE)");
    let http = http_client()?;
    let url = set.replica(0).url.clone();
    let measure = |path: &'static str, token: String| {
        let (http, url) = (&http, &url);
        async move {
            let mut samples = Vec::new();
            for _ in 0..options.runs(200, 20) {
                let started = Instant::now();
                let response = http.get(format!("{url}{path}")).bearer_auth(&token).send().await?;
                let _: serde_json::Value = ok_json(response).await?;
                samples.push(started.elapsed());
            }
            anyhow::Ok(Summary::of(&mut samples))
        }
    };
    let owner = set.idp.token("owner7@bench.example", &["engineers"], "hourglass", 3_600);
    let approver = set.idp.token("approver@bench.example", &["sre"], "hourglass", 3_600);
    let mine = measure("/v1/grants", owner.clone()).await?;
    let inbox = measure("/v1/requests", approver).await?;
    let history = measure("/v1/history?limit=100", owner).await?;
    let (verify_time, peak_kib) = verify_with_peak(&store_url)?;
    let figure = |name: String, summary: Summary, target: &str, met: bool, note: String| Figure {
        name,
        summary: Some(summary),
        target: target.into(),
        met: Some(met),
        peer: "—".into(),
        note,
    };
    Ok(vec![
        figure(
            format!("My grants, among {grants} live grants"),
            mine,
            "p99 < 50 ms",
            mine.p99 < Duration::from_millis(50),
            "GET /v1/grants of a principal holding 10".into(),
        ),
        figure(
            format!("An approver's inbox, {waiting} requests waiting"),
            inbox,
            "p99 < 100 ms",
            inbox.p99 < Duration::from_millis(100),
            "GET /v1/requests (its first page) as an SRE who may decide them".into(),
        ),
        figure(
            format!("A history, among {events} audit events"),
            history,
            "p99 < 50 ms",
            history.p99 < Duration::from_millis(50),
            "GET /v1/history?limit=100 of a principal".into(),
        ),
        Figure {
            name: format!("`hourglassd audit verify`, {events} events"),
            summary: Some(Summary { runs: 1, min: verify_time, median: verify_time, p99: verify_time }),
            target: "memory bounded".into(),
            met: Some(peak_kib < 200 * 1024),
            peer: "—".into(),
            note: format!("peak resident memory {:.1} MiB (streams the chain page by page)", peak_kib as f64 / 1024.0),
        },
    ])
}

/// Fills `store` through its own API (so the audit chain is a real one):
/// live grants for 10,000 principals, requests waiting, audit events.
async fn fill(
    store: &hourglass_broker::store::Store,
    grants: usize,
    waiting: usize,
    events: usize,
) -> anyhow::Result<()> {
    use hourglass_core::audit::{AuditAction, AuditEvent, AuditResult};
    use hourglass_core::{AccessRequest, Duration as Span, Grant, GrantId, NewRequest, RequestId};
    let start = now();
    let request = |n: usize, owner: &str, role: &str| {
        AccessRequest::file(
            RequestId::from_random(rand::random()),
            NewRequest {
                requester: owner.to_owned(),
                resource: "api".into(),
                role: role.into(),
                duration: Span::from_mins(50),
                reason: format!("fill {n}"),
                ticket: None,
                break_glass: false,
                renews: None,
            },
            vec![hourglass_core::ApprovalRule { group: "sre".into(), count: 1 }],
            Span::from_hours(12),
            start,
        )
    };
    for chunk in (0..grants).collect::<Vec<_>>().chunks(1_000) {
        let mut tx = store.begin().await?;
        for &n in chunk {
            let owner = format!("owner{}@bench.example", n % 10_000);
            let mut request = request(n, &owner, "read");
            request.approve_by_policy(start);
            let mut grant = Grant::start(GrantId::from_random(rand::random()), &request, "token", start);
            grant.activate(true, start);
            tx.insert_grant(&hourglass_broker::store::GrantRecord { grant, provider_state: serde_json::json!({}) })
                .await?;
        }
        tx.commit().await?;
    }
    for chunk in (0..waiting).collect::<Vec<_>>().chunks(1_000) {
        let mut tx = store.begin().await?;
        for &n in chunk {
            tx.insert_request(&request(n, &format!("asker{n}@bench.example"), "write"), None).await?;
        }
        tx.commit().await?;
    }
    for chunk in (0..events).collect::<Vec<_>>().chunks(2_000) {
        let mut tx = store.begin().await?;
        for &n in chunk {
            let who = format!("owner{}@bench.example", n % 10_000);
            let event =
                AuditEvent::new(start, &who, AuditAction::CredentialFetched, "grt-fill", AuditResult::Ok).subject(&who);
            tx.audit(event).await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// `hourglassd audit verify` on the store: its time and peak resident memory.
fn verify_with_peak(store_url: &str) -> anyhow::Result<(Duration, u64)> {
    let started = Instant::now();
    let mut child = std::process::Command::new(hourglass_e2e::bin("hourglassd"))
        .args(["audit", "verify", "--store", store_url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let mut peak = 0;
    loop {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            && let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait()? {
            let elapsed = started.elapsed();
            let output = child.wait_with_output()?;
            ensure!(
                status.success(),
                "audit verify failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            return Ok((elapsed, peak));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// User and system CPU time of a process (clock ticks of 10 ms); zero if gone.
fn cpu_time(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return Duration::ZERO };
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|i| fields.get(*i)?.parse::<u64>().ok()).sum();
    Duration::from_millis(ticks * 10)
}

/// CPU time of every PostgreSQL server process on this machine so far.
fn postgres_cpu() -> Duration {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Duration::ZERO };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres"))
        .map(cpu_time)
        .sum()
}
