//! The audit log streamed to a SIEM as it grows: syslog (RFC 5424 over
//! TLS) or an HTTP Event Collector, each record in a standard schema
//! (OCSF by default: see `settings.rs`). Each sink keeps its cursor (the
//! last record it delivered) in the store, so that a restart or a failover
//! resumes where it stopped; one replica at a time streams a sink (its
//! claim lives in the cursor, under the replica's lease, as for due work).
//! A batch is delivered, then the cursor moves: a broker killed between the
//! two sends that batch again, and every record carries its sequence number
//! for the SIEM to drop a repeat by.

mod hec;
pub mod settings;
mod syslog;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Serialize};

use self::settings::{Format, SiemSettings};
use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::notify::settings::Secret;
use crate::settings::BrokerSettings;

/// Records sent at a time.
const BATCH: usize = 500;
/// How often an idle sink looks for new records, and a sink another
/// replica streams looks whether it still does.
const POLL: StdDuration = StdDuration::from_secs(1);
const MAX_BACKOFF: StdDuration = StdDuration::from_secs(60);

/// A sink ready to send.
pub struct Sink {
    pub name: String,
    format: Format,
    to: Destination,
}

enum Destination {
    // Boxed: a TLS connection is large beside an HTTP client.
    Syslog(Box<syslog::Syslog>),
    Hec(hec::Hec),
}

/// Reads `[broker.siem]` (files relative to the policy directory).
pub fn sinks(settings: &BrokerSettings, policy_dir: &Path) -> Result<Vec<Sink>> {
    let mut sinks = Vec::new();
    for (name, sink) in &settings.siem {
        let what = format!("[broker.siem.{name}]");
        let to = match sink {
            SiemSettings::Syslog { address, ca_file, .. } => {
                let ca = ca_file.as_ref().map(|path| BrokerSettings::resolve(policy_dir, path));
                Destination::Syslog(Box::new(syslog::Syslog::new(&what, address, ca.as_deref())?))
            }
            SiemSettings::Hec { url, token_file, .. } => {
                let token =
                    Secret::read(&BrokerSettings::resolve(policy_dir, token_file), &format!("{what} token_file"))?;
                Destination::Hec(hec::Hec::new(&what, url, token)?)
            }
        };
        sinks.push(Sink { name: name.clone(), format: sink.format(), to });
    }
    Ok(sinks)
}

/// Where a sink stands, in the store's `documents` (`siem/NAME`).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Cursor {
    /// The last record delivered.
    seq: u64,
    /// The replica streaming the sink, while its lease holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    claimed_by: Option<String>,
}

fn document(sink: &str) -> String {
    format!("siem/{sink}")
}

/// Streams the audit log to `sink` until the broker stops.
pub async fn run(broker: Arc<Broker>, mut sink: Sink) {
    let mut backoff = StdDuration::from_secs(1);
    loop {
        let wait = match step(&broker, &mut sink).await {
            Ok(Step::Sent) => {
                backoff = StdDuration::from_secs(1);
                continue;
            }
            Ok(Step::Idle) => POLL,
            Err(error) => {
                tracing::warn!(sink = %sink.name, "streaming the audit log failed, retried in {backoff:?}: {error}");
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = broker.stopping() => return,
        }
    }
}

enum Step {
    /// A batch went out: look again at once.
    Sent,
    /// Nothing new, or another replica streams this sink.
    Idle,
}

async fn step(broker: &Broker, sink: &mut Sink) -> Result<Step> {
    if !broker.store.may_act() {
        return Ok(Step::Idle);
    }
    let Some(from) = claim(broker, &sink.name).await? else { return Ok(Step::Idle) };
    let records = broker.store.audit_records(from, BATCH).await?;
    let Some(last) = records.last().map(|record| record.event.seq) else { return Ok(Step::Idle) };
    let lines: Vec<(u64, String)> =
        records.iter().map(|record| (record.event.seq, sink.format.render(record))).collect();
    match &mut sink.to {
        Destination::Syslog(syslog) => syslog.send(&records, &lines).await?,
        Destination::Hec(hec) => hec.send(&records, &lines, sink.format).await?,
    }
    advance(broker, &sink.name, from, last).await?;
    Ok(Step::Sent)
}

/// Takes (or keeps) the sink for this replica: where its cursor stands, or
/// none while another live replica streams it.
async fn claim(broker: &Broker, sink: &str) -> Result<Option<u64>> {
    let me = broker.store.replica_id().to_string();
    let mut tx = broker.store.begin().await?;
    let mut cursor: Cursor = match tx.document_for_update(&document(sink)).await? {
        Some(text) => serde_json::from_str(&text)
            .map_err(|error| Error::Internal(format!("the cursor of [broker.siem.{sink}] does not read: {error}")))?,
        None => Cursor::default(),
    };
    match &cursor.claimed_by {
        Some(holder) if *holder == me => return Ok(Some(cursor.seq)),
        Some(holder) if tx.replica_alive(holder).await? => return Ok(None),
        _ => {}
    }
    cursor.claimed_by = Some(me);
    tx.put_document(&document(sink), &serde_json::to_string(&cursor).unwrap_or_default()).await?;
    tx.commit().await?;
    Ok(Some(cursor.seq))
}

/// Moves the cursor from `from` to `to`, if this replica still holds the
/// sink and nobody moved it meanwhile.
async fn advance(broker: &Broker, sink: &str, from: u64, to: u64) -> Result<()> {
    let me = broker.store.replica_id().to_string();
    let mut tx = broker.store.begin().await?;
    let text = tx.document_for_update(&document(sink)).await?.unwrap_or_default();
    let mut cursor: Cursor = serde_json::from_str(&text).unwrap_or_default();
    if cursor.claimed_by.as_deref() != Some(me.as_str()) || cursor.seq != from {
        tracing::info!(sink, "another replica took the stream over: it carries on from its own cursor");
        return Ok(());
    }
    cursor.seq = to;
    tx.put_document(&document(sink), &serde_json::to_string(&cursor).unwrap_or_default()).await?;
    tx.commit().await?;
    Ok(())
}
