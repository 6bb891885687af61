//! Notifications: from a request filed to its announcement at a signed
//! webhook (a receiver on this host, so that the figure is the broker's
//! own: the outbox written with the request, claimed and sent), one at a
//! time and under a flood of requests.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use hourglass_e2e::receiver::Receiver;

use crate::Options;
use crate::load::{LoadBroker, fresh_principals, percent};
use crate::report::Figure;
use crate::stats::Summary;

/// A resource whose requests wait for an SRE and are announced on a webhook.
fn channel(receiver: &Receiver) -> String {
    format!(
        r#"
[resources.notified]
provider = "token"
notify = ["hook"]

[resources.notified.roles.write]

[broker.channels.hook]
kind = "webhook"
url = "{}/hook"
secret_file = "webhook-secret"
"#,
        receiver.url
    )
}

const SECRET: (&str, &str) = ("webhook-secret", "bench-secret-0123456789abcdef");

pub fn figures(options: &Options) -> anyhow::Result<Vec<Figure>> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    Ok(vec![runtime.block_on(one_at_a_time(options))?, runtime.block_on(flood(options))?])
}

/// The request id a webhook announced.
fn announced(received: &hourglass_e2e::receiver::Received) -> Option<String> {
    received.json()["request"]["id"].as_str().map(str::to_owned)
}

async fn one_at_a_time(options: &Options) -> anyhow::Result<Figure> {
    let receiver = Receiver::start();
    let load = LoadBroker::start_with(&channel(&receiver), &[SECRET])?;
    let runs = options.runs(300, 30);
    eprintln!("notifications: {runs} requests, one at a time…");
    let tokens = fresh_principals(&load, "n", runs);
    let mut samples = Vec::with_capacity(runs);
    for token in tokens.iter() {
        let started = Instant::now();
        let filed = load.request_on("notified", token, "write", "10m").await?;
        let id = filed.request.id.to_string();
        let arrived = loop {
            if let Some(found) = receiver.received().iter().rev().find(|r| announced(r).as_deref() == Some(&id)) {
                break found.at;
            }
            ensure!(started.elapsed() < Duration::from_secs(10), "request {id} was not announced within 10 s");
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        samples.push(arrived.saturating_duration_since(started));
    }
    let summary = Summary::of(&mut samples);
    Ok(Figure {
        name: "Request filed to its webhook announcement".into(),
        summary: Some(summary),
        target: "p99 < 100 ms".into(),
        met: Some(summary.p99 < Duration::from_millis(100)),
        peer: "—".into(),
        note: "from the requester's POST to the signed webhook's arrival at a receiver on this host; the \
               announcement written into the outbox with the request, then claimed and sent"
            .into(),
    })
}

/// Requests filed at 1,000/s for a few seconds: how fast the outbox
/// drains, and how long each announcement took.
async fn flood(options: &Options) -> anyhow::Result<Figure> {
    const OFFERED: u32 = 1_000;
    let receiver = Receiver::start();
    let load = Arc::new(LoadBroker::start_with(&channel(&receiver), &[SECRET])?);
    let window = Duration::from_secs(if options.quick { 2 } else { 5 });
    let count = OFFERED as usize * window.as_secs() as usize;
    eprintln!("notifications: {OFFERED}/s offered for {window:?}…");
    let tokens = fresh_principals(&load, "f", count);
    let every = Duration::from_secs(1) / OFFERED;
    let started = Instant::now();
    let cpu_before = load.broker_cpu()?;
    let mut running = Vec::with_capacity(count);
    for n in 0..count {
        let due = started + every * u32::try_from(n)?;
        tokio::time::sleep_until(due.into()).await;
        let (load, tokens) = (load.clone(), tokens.clone());
        running.push(tokio::spawn(async move {
            let filed = load.request_on("notified", &tokens[n], "write", "10m").await?;
            anyhow::Ok((filed.request.id.to_string(), due))
        }));
    }
    let mut filed = HashMap::with_capacity(count);
    for request in running {
        let (id, due) = request.await??;
        filed.insert(id, due);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while receiver.count() < count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = load.broker_cpu()?.saturating_sub(cpu_before);
    let received = receiver.received();
    ensure!(received.len() >= count, "{} of {count} announcements arrived within a minute", received.len());
    let last = received.iter().map(|r| r.at).max().context("announcements")?;
    let elapsed = last.saturating_duration_since(started);
    let mut samples: Vec<Duration> =
        received.iter().filter_map(|r| Some(r.at.saturating_duration_since(*filed.get(&announced(r)?)?))).collect();
    ensure!(samples.len() == count, "every announcement names a request filed ({} of {count})", samples.len());
    let rate = count as f64 / elapsed.as_secs_f64();
    let summary = Summary::of(&mut samples);
    Ok(Figure {
        name: format!("Outbox under {OFFERED} requests/s, each announced on a webhook"),
        summary: Some(summary),
        target: format!("keeps up with {OFFERED}/s"),
        met: Some(rate >= f64::from(OFFERED) * 0.95),
        peer: "—".into(),
        note: format!(
            "{count} requests filed at {OFFERED}/s; announcements delivered at **{rate:.0}/s** (first filing to \
             last arrival), latency timed from when each filing was due; broker CPU {} of a core",
            percent(cpu, elapsed)
        ),
    })
}
