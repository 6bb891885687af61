//! The broker under load, over HTTP, from another process on the same
//! host: a release `hourglassd serve` with a token resource and an issuer
//! the bench signs ID tokens for, so that thousands of distinct principals
//! can each hold a grant.
//!
//! - token lifecycle: request → auto-approve → token: the most a few
//!   clients complete, and latency at the rate the target names;
//! - approval latency: an approver's POST until the requester's event
//!   stream delivers the grant;
//! - fan-out: one request filed, every one of thousands of approvers'
//!   streams told; the broker's memory per idle stream;
//! - revocation lag: thousands of grants with deadlines in the same second,
//!   each deadline against the broker's own record of the revocation;
//! - audit append: the store's write transaction with one audit event, at
//!   the durability the broker ships (group commit: on disk before it returns).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use hourglass_core::api::{CreateRequest, RequestOutcome};
use hourglass_core::audit::{AuditAction, AuditEvent, AuditResult};
use hourglass_core::{GrantState, Timestamp};
use hourglass_e2e::DevBroker;
use hourglass_e2e::issuer::JwtIssuer;

use crate::Options;
use crate::report::Figure;
use crate::stats::{Summary, human};

const POLICY: &str = r#"
[defaults]
workflow = "review"
min_duration = "1s"
max_duration = "1h"
default_duration = "15m"
reason_required = false
renewals_without_approval = 0

[workflows.review]
approvals = [{ group = "sre", count = 1 }]

[resources.api]
description = "A service API"
provider = "token"

[resources.api.roles.read]
description = "Approved at once"

[resources.api.roles.write]
description = "One SRE approves"

# The approval benchmark has one requester and one approver call hundreds
# of times a second, which no person does: the default per-principal rate
# limit (20/s) would measure the limiter instead of the broker.
[broker.limits]
requests_per_second = 100000
request_burst = 100000
"#;

const CEDAR: &str = r#"
@id("engineers-request")
permit (principal in Group::"engineers", action == Action::"request", resource);

@id("read-is-automatic")
permit (principal in Group::"engineers", action == Action::"auto_approve", resource == Role::"api/read");

@id("sre-approve")
permit (principal in Group::"sre", action == Action::"approve", resource);
"#;

/// A release broker with the bench policy, and the issuer it trusts.
pub(crate) struct LoadBroker {
    broker: DevBroker,
    issuer: JwtIssuer,
    pub(crate) http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl LoadBroker {
    fn start() -> anyhow::Result<LoadBroker> {
        LoadBroker::start_with("", &[])
    }

    /// A broker with the bench policy and `more` appended to its
    /// `hourglass.toml` (`[broker.channels]`, say), `files` beside it.
    pub(crate) fn start_with(more: &str, files: &[(&str, &str)]) -> anyhow::Result<LoadBroker> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("hourglass.toml"), format!("{POLICY}\n{more}"))?;
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text)?;
        }
        std::fs::write(dir.path().join("bench.cedar"), CEDAR)?;
        let issuer = JwtIssuer::new("bench");
        issuer.trust_in(dir.path());
        let broker = DevBroker::serve(dir.path(), BTreeMap::new());
        // reqwest is built without a TLS crypto provider (plain HTTP here,
        // but the builder insists on one).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder().pool_max_idle_per_host(10_000).build()?;
        Ok(LoadBroker { broker, issuer, http, _dir: dir })
    }

    pub(crate) fn token(&self, user: &str, group: &str) -> String {
        self.issuer.token(&format!("{user}@bench.example"), &[group], "hourglass", 3_600)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.broker.url)
    }

    pub(crate) async fn request(&self, token: &str, role: &str, duration: &str) -> anyhow::Result<RequestOutcome> {
        self.request_on("api", token, role, duration).await
    }

    pub(crate) async fn request_on(
        &self,
        resource: &str,
        token: &str,
        role: &str,
        duration: &str,
    ) -> anyhow::Result<RequestOutcome> {
        let body = CreateRequest {
            resource: resource.into(),
            role: role.into(),
            duration: duration.into(),
            reason: "benchmark".into(),
            ticket: None,
            break_glass: false,
            client_material: None,
        };
        let response = self.http.post(self.url("/v1/requests")).bearer_auth(token).json(&body).send().await?;
        ok_json(response).await
    }

    async fn post<T: serde::de::DeserializeOwned>(&self, token: &str, path: &str) -> anyhow::Result<T> {
        let response = self.http.post(self.url(path)).bearer_auth(token).json(&serde_json::json!({})).send().await?;
        ok_json(response).await
    }

    /// Opens `GET /v1/events` and waits for its `hello`.
    async fn subscribe(&self, token: &str) -> anyhow::Result<EventStream> {
        let response = self.http.get(self.url("/v1/events")).bearer_auth(token).send().await?;
        ensure!(response.status().is_success(), "events: {}", response.status());
        let mut stream = EventStream { body: Box::pin(response.bytes_stream()), buffer: Vec::new() };
        let hello = stream.next_event().await?;
        ensure!(hello.0 == "hello", "the first event is {}", hello.0);
        Ok(stream)
    }

    /// CPU time the broker has used so far.
    pub(crate) fn broker_cpu(&self) -> anyhow::Result<Duration> {
        let pid = self.broker.pid().context("the broker runs")?;
        cpu_time(pid)
    }

    fn broker_pss_kib(&self) -> anyhow::Result<u64> {
        let pid = self.broker.pid().context("the broker runs")?;
        pss_kib(pid)
    }
}

async fn ok_json<T: serde::de::DeserializeOwned>(response: reqwest::Response) -> anyhow::Result<T> {
    let status = response.status();
    if !status.is_success() {
        bail!("{status}: {}", response.text().await.unwrap_or_default());
    }
    Ok(response.json().await?)
}

/// A server-sent event stream, read event by event.
struct EventStream {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: Vec<u8>,
}

impl EventStream {
    /// The next event's kind and data.
    async fn next_event(&mut self) -> anyhow::Result<(String, String)> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&block);
                let mut kind = String::new();
                let mut data = String::new();
                for line in text.lines() {
                    if let Some(k) = line.strip_prefix("event:") {
                        kind = k.trim().to_owned();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                if kind.is_empty() && data.is_empty() {
                    continue; // a keep-alive comment
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

/// User and system CPU time of a process (clock ticks of 10 ms).
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).context("malformed stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse::<u64>().ok()).context("no utime")?
        + fields.get(12).and_then(|v| v.parse::<u64>().ok()).context("no stime")?;
    Ok(Duration::from_millis(ticks * 10))
}

/// Proportional set size of a process, KiB.
fn pss_kib(pid: u32) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no Pss in smaps_rollup")
}

pub fn figures(options: &Options) -> anyhow::Result<Vec<Figure>> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut figures = Vec::new();
    figures.push(runtime.block_on(token_lifecycle_throughput(options))?);
    figures.push(runtime.block_on(token_lifecycle_at_rate(options))?);
    figures.push(runtime.block_on(approval_latency(options))?);
    figures.extend(runtime.block_on(fan_out(options))?);
    figures.push(runtime.block_on(token_revocation_lag(options))?);
    figures.extend(runtime.block_on(audit_append(options))?);
    Ok(figures)
}

/// Clients in flight at once for the lifecycle throughput figure.
const CLIENTS: usize = 8;
/// The rate the latency figure offers, as the target names it.
const OFFERED_PER_SECOND: u32 = 1_000;

/// One token lifecycle for a principal of its own (one live grant per
/// principal and role): request, auto-approved, then the credential.
async fn lifecycle(load: &LoadBroker, token: &str) -> anyhow::Result<()> {
    let outcome = load.request(token, "read", "10m").await?;
    let grant = outcome.grant.context("an auto-approved request carries its grant")?;
    ensure!(grant.state == GrantState::Active, "grant {} is {}", grant.id, grant.state);
    let response =
        load.http.get(load.url(&format!("/v1/grants/{}/credential", grant.id))).bearer_auth(token).send().await?;
    let credential: serde_json::Value = ok_json(response).await?;
    ensure!(credential.get("env").is_some(), "no credential: {credential}");
    Ok(())
}

/// Tokens for `count` new principals, signed before anything is timed.
pub(crate) fn fresh_principals(load: &LoadBroker, prefix: &str, count: usize) -> Arc<Vec<String>> {
    Arc::new((0..count).map(|n| load.token(&format!("{prefix}{n}"), "engineers")).collect())
}

/// The most lifecycles the broker completes: `CLIENTS` closed-loop clients,
/// each starting the next lifecycle when the last one is answered.
async fn token_lifecycle_throughput(options: &Options) -> anyhow::Result<Figure> {
    let load = Arc::new(LoadBroker::start()?);
    let window = Duration::from_secs(if options.quick { 2 } else { 10 });
    eprintln!("token lifecycle: {CLIENTS} clients for {window:?}…");
    // More than the broker can do in the window: a client never runs out.
    let tokens = fresh_principals(&load, "u", 2_500 * window.as_secs() as usize);
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..CLIENTS {
        let (load, tokens, next, done) = (load.clone(), tokens.clone(), next.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let token = tokens.get(next.fetch_add(1, Ordering::Relaxed)).context("out of principals")?;
                let started = Instant::now();
                lifecycle(&load, token).await?;
                samples.push(started.elapsed());
            }
            anyhow::Ok(samples)
        }));
    }
    let started = Instant::now();
    let cpu_before = load.broker_cpu()?;
    tokio::time::sleep(window).await;
    done.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    for worker in workers {
        samples.extend(worker.await??);
    }
    let elapsed = started.elapsed();
    let cpu = load.broker_cpu()?.saturating_sub(cpu_before);
    let cpu_each = cpu / u32::try_from(samples.len().max(1)).unwrap_or(u32::MAX);
    let rate = samples.len() as f64 / elapsed.as_secs_f64();
    let summary = Summary::of(&mut samples);
    Ok(Figure {
        name: format!("Token lifecycle throughput over HTTP, {CLIENTS} clients"),
        summary: Some(summary),
        target: "≥ 1,000/s".into(),
        met: Some(rate >= 1_000.0),
        peer: "—".into(),
        note: format!(
            "**{rate:.0}/s**, as fast as {CLIENTS} clients go (latency here is queueing at saturation); request → \
             auto-approve → credential: 2 calls, 2 commits, each on disk before the answer; broker CPU {} per lifecycle",
            human(cpu_each)
        ),
    })
}

/// Latency under the load the target names: lifecycles started at a fixed
/// `OFFERED_PER_SECOND`, whether or not earlier ones were answered, each
/// timed from when it was due (so a stall counts against every lifecycle
/// it delayed, not only the one it hit).
async fn token_lifecycle_at_rate(options: &Options) -> anyhow::Result<Figure> {
    let load = Arc::new(LoadBroker::start()?);
    let window = Duration::from_secs(if options.quick { 2 } else { 10 });
    let count = OFFERED_PER_SECOND as usize * window.as_secs() as usize;
    eprintln!("token lifecycle: {OFFERED_PER_SECOND}/s offered for {window:?}…");
    let tokens = fresh_principals(&load, "r", count);
    let every = Duration::from_secs(1) / OFFERED_PER_SECOND;
    let started = Instant::now();
    let cpu_before = load.broker_cpu()?;
    let mut running = Vec::with_capacity(count);
    for n in 0..count {
        let due = started + every * u32::try_from(n)?;
        tokio::time::sleep_until(due.into()).await;
        let (load, tokens) = (load.clone(), tokens.clone());
        running.push(tokio::spawn(async move {
            lifecycle(&load, &tokens[n]).await?;
            anyhow::Ok(due.elapsed())
        }));
    }
    let mut samples = Vec::with_capacity(count);
    for lifecycle in running {
        samples.push(lifecycle.await??);
    }
    let elapsed = started.elapsed();
    let cpu = load.broker_cpu()?.saturating_sub(cpu_before);
    let rate = samples.len() as f64 / elapsed.as_secs_f64();
    let summary = Summary::of(&mut samples);
    Ok(Figure {
        name: format!("Token lifecycle latency over HTTP at {OFFERED_PER_SECOND}/s offered"),
        summary: Some(summary),
        target: "p99 < 10 ms".into(),
        met: Some(summary.p99 < Duration::from_millis(10)),
        peer: "—".into(),
        note: format!(
            "{count} lifecycles, one due every {}, timed from when due; completed at {rate:.0}/s; broker CPU {} of a core",
            human(every),
            percent(cpu, elapsed)
        ),
    })
}

pub(crate) fn percent(cpu: Duration, over: Duration) -> String {
    format!("{:.0}%", cpu.as_secs_f64() / over.as_secs_f64() * 100.0)
}

async fn approval_latency(options: &Options) -> anyhow::Result<Figure> {
    let load = LoadBroker::start()?;
    let runs = options.runs(300, 30);
    eprintln!("approval latency: {runs} approvals…");
    let requester = load.token("requester", "engineers");
    let approver = load.token("approver", "sre");
    let mut events = load.subscribe(&requester).await?;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let filed = load.request(&requester, "write", "10m").await?;
        let id = filed.request.id.clone();
        let started = Instant::now();
        let _: RequestOutcome = load.post(&approver, &format!("/v1/requests/{id}/approve")).await?;
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
        let _: hourglass_core::Grant = load.post(&requester, &format!("/v1/grants/{grant_id}/revoke")).await?;
    }
    let summary = Summary::of(&mut samples);
    Ok(Figure {
        name: "Approval to the requester's event stream".into(),
        summary: Some(summary),
        target: "p99 < 20 ms".into(),
        met: Some(summary.p99 < Duration::from_millis(20)),
        peer: "—".into(),
        note: "from the approver's POST to `grant.issued` on the requester's stream".into(),
    })
}

async fn fan_out(options: &Options) -> anyhow::Result<Vec<Figure>> {
    let load = Arc::new(LoadBroker::start()?);
    let subscribers = options.runs(5_000, 200);
    let rounds = options.runs(5, 2);
    eprintln!("fan-out: {subscribers} subscribers, {rounds} requests…");
    // Let the broker settle before its baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = load.broker_pss_kib()?;
    let mut streams = Vec::with_capacity(subscribers);
    let mut opening = std::pin::pin!(
        futures::stream::iter(0..subscribers)
            .map(|i| {
                let load = load.clone();
                async move { load.subscribe(&load.token(&format!("approver{i}"), "sre")).await }
            })
            .buffer_unordered(64)
    );
    while let Some(stream) = opening.next().await {
        streams.push(stream?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let connected = load.broker_pss_kib()?;
    let per_subscriber = (connected.saturating_sub(baseline)) as f64 / subscribers as f64;

    let (sender, mut received) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    for mut stream in streams {
        let sender = sender.clone();
        tokio::spawn(async move {
            while let Ok((kind, data)) = stream.next_event().await {
                if kind == "request.filed" {
                    let at = Instant::now();
                    let event: hourglass_core::api::Event = match serde_json::from_str(&data) {
                        Ok(event) => event,
                        Err(_) => continue,
                    };
                    if let Some(request) = event.request {
                        let _ = sender.send((request.id.to_string(), at));
                    }
                }
            }
        });
    }
    drop(sender);
    let mut samples = Vec::with_capacity(subscribers * rounds);
    let mut reached_all = true;
    for round in 0..rounds {
        let token = load.token(&format!("asker{round}"), "engineers");
        let started = Instant::now();
        let filed = load.request(&token, "write", "10m").await?;
        let id = filed.request.id.to_string();
        let mut reached = 0;
        let deadline = started + Duration::from_secs(10);
        while reached < subscribers {
            match tokio::time::timeout_at(deadline.into(), received.recv()).await {
                Ok(Some((request, at))) if request == id => {
                    samples.push(at.duration_since(started));
                    reached += 1;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        if reached < subscribers {
            eprintln!("fan-out: round {round} reached {reached} of {subscribers} in 10 s");
            reached_all = false;
        }
    }
    let summary = Summary::of(&mut samples);
    Ok(vec![
        Figure {
            name: format!("Event fan-out, {subscribers} subscribers"),
            summary: Some(summary),
            target: "all reached, p99 < 500 ms".into(),
            met: Some(reached_all && summary.p99 < Duration::from_millis(500)),
            peer: "—".into(),
            note: format!(
                "one request filed, each SRE's stream told ({rounds} rounds){}",
                if reached_all { "" } else { "; **some not reached in 10 s**" }
            ),
        },
        Figure {
            name: "Broker memory per idle event stream".into(),
            summary: None,
            target: "reported".into(),
            met: None,
            peer: "—".into(),
            note: format!(
                "**{per_subscriber:.1} KiB** per stream (PSS {} MiB idle, {} MiB with {subscribers} open)",
                baseline / 1024,
                connected / 1024
            ),
        },
    ])
}

async fn token_revocation_lag(options: &Options) -> anyhow::Result<Figure> {
    let load = Arc::new(LoadBroker::start()?);
    let grants = options.runs(10_000, 300);
    // The deadline is far enough ahead for every grant to be filed first.
    let lead = Duration::from_secs(if options.quick { 8 } else { 40 });
    let deadline = SystemTime::now() + lead;
    eprintln!("revocation lag: {grants} token grants with deadlines in the same second…");
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..CLIENTS {
        let (load, next) = (load.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= grants {
                    return anyhow::Ok(());
                }
                let token = load.token(&format!("expiring{i}"), "engineers");
                // Whole seconds to the common deadline: every deadline lands
                // in [deadline, deadline + 1 s).
                let left = deadline.duration_since(SystemTime::now()).context("filing took longer than the lead")?;
                load.request(&token, "read", &format!("{}s", left.as_secs().max(1))).await?;
            }
        }));
    }
    for worker in workers {
        worker.await??;
    }
    let filed_by = SystemTime::now();
    ensure!(filed_by < deadline, "filing {grants} grants outran the deadline");
    // Wait for the deadlines, then for the scheduler to finish.
    tokio::time::sleep(deadline.duration_since(SystemTime::now()).unwrap_or_default() + Duration::from_secs(5)).await;
    let location = hourglass_broker::store::StoreLocation::sqlite(load.broker.data_dir.join("hourglass.db"));
    let store = hourglass_broker::store::Store::open_read_only(&location, &Default::default()).await?;
    let mut deadlines: HashMap<String, Timestamp> = HashMap::new();
    let mut lags = Vec::with_capacity(grants);
    let mut after = 0;
    loop {
        let page = store.audit_records(after, 5_000).await?;
        let Some(last) = page.last() else { break };
        after = last.event.seq;
        for record in page {
            let event = record.event;
            match event.action {
                AuditAction::GrantExpired => {
                    if let Some(at) = event.details.get("expires_at").and_then(|v| v.as_str()) {
                        deadlines
                            .insert(event.target.clone(), Timestamp::parse(at).map_err(|e| anyhow::anyhow!("{e}"))?);
                    }
                }
                AuditAction::RevocationAttempt if event.result == AuditResult::Ok => {
                    if let Some(expires) = deadlines.get(&event.target) {
                        let millis = expires.millis_until(event.at).max(0);
                        lags.push(Duration::from_millis(u64::try_from(millis).unwrap_or(0)));
                    }
                }
                _ => {}
            }
        }
    }
    let revoked = lags.len();
    ensure!(revoked > 0, "no revocation recorded");
    let slowest = lags.iter().max().copied().unwrap_or_default();
    let summary = Summary::of(&mut lags);
    Ok(Figure {
        name: format!("Revocation lag, {grants} token grants due in the same second"),
        summary: Some(summary),
        target: "all revoked within 1 s".into(),
        met: Some(revoked == grants && slowest < Duration::from_secs(1)),
        peer: "—".into(),
        note: format!(
            "deadline → revocation recorded, from the audit log; {revoked} of {grants} revoked, the last after {}",
            human(slowest)
        ),
    })
}

async fn audit_append(options: &Options) -> anyhow::Result<Vec<Figure>> {
    let appends = options.runs(5_000, 300);
    let mut figures = Vec::new();
    for writers in [1, CLIENTS] {
        eprintln!("audit append: {appends} events, one transaction each, {writers} at a time…");
        let dir = tempfile::tempdir()?;
        let store = hourglass_broker::store::Store::open_sqlite(&dir.path().join("hourglass.db")).await?;
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..writers {
            let (store, next) = (store.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let mut samples = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < appends {
                    let one = Instant::now();
                    let mut tx = store.begin().await?;
                    let now = Timestamp::from_unix_millis(1_800_000_000_000);
                    let event =
                        AuditEvent::new(now, "alice@acme.example", AuditAction::RequestFiled, "req-1", AuditResult::Ok);
                    tx.audit(event).await?;
                    tx.commit().await?;
                    samples.push(one.elapsed());
                }
                anyhow::Ok(samples)
            }));
        }
        let mut samples = Vec::with_capacity(appends);
        for task in tasks {
            samples.extend(task.await??);
        }
        let rate = appends as f64 / started.elapsed().as_secs_f64();
        let summary = Summary::of(&mut samples);
        figures.push(Figure {
            name: format!(
                "Audit append, one event per transaction, {writers} writer{}",
                if writers == 1 { "" } else { "s" }
            ),
            summary: Some(summary),
            target: "ops/s reported".into(),
            met: None,
            peer: "—".into(),
            note: format!("**{rate:.0}/s**; acknowledged only once on disk (WAL fsync, shared by concurrent commits)"),
        });
    }
    Ok(figures)
}
