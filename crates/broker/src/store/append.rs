//! Appending a commit's audit events and published events after the
//! chain's head: numbered and hashed by the broker on SQLite (its one
//! writer holds the head), by the server on PostgreSQL (`hourglass_append`,
//! sent with the COMMIT), by core's rule either way.

use hourglass_core::audit::{AuditEvent, AuditRecord, chain_hash, from_hex, to_hex};

use super::NewEvent;
use super::queries as q;
use super::sql::{self, Conn};
use crate::error::{Error, Result};

/// What a commit appends on SQLite: the audit records and the last event
/// number, and the statements that write them.
#[derive(Default)]
pub(super) struct Appended {
    pub records: Vec<AuditRecord>,
    pub last_event: Option<u64>,
    pub writes: Vec<sql::Write>,
}

/// Reads the `chain` row and numbers and hashes the audit events and
/// published events after it (SQLite: its one writer holds the row): the
/// statements that append them, to run last in the transaction.
pub(super) async fn append_here(conn: &mut Conn<'_>, audit: Vec<AuditEvent>, events: &[NewEvent]) -> Result<Appended> {
    use sql::Owned;
    if audit.is_empty() && events.is_empty() {
        return Ok(Appended::default());
    }
    let head = conn
        .query_opt(q::CHAIN_HEAD, &[])
        .await?
        .ok_or_else(|| Error::Internal("the store has no chain head (schema version 3 missing?)".into()))?;
    let mut seq = u64::try_from(head.int(0)?).unwrap_or(0);
    let head_hash = head.text(1)?;
    let mut prev =
        from_hex(&head_hash).ok_or_else(|| Error::Internal(format!("audit event {seq} has a malformed hash")))?;
    let mut event_seq = u64::try_from(head.int(2)?).unwrap_or(0);
    let mut records = Vec::with_capacity(audit.len());
    let mut writes = Vec::with_capacity(audit.len() + events.len() + 1);
    for mut event in audit {
        seq += 1;
        event.seq = seq;
        let canonical = event.canonical();
        let hash = chain_hash(&prev, &canonical);
        let (prev_hex, hash_hex) = (to_hex(&prev), to_hex(&hash));
        let params = vec![
            Owned::Int(q::seq_param(seq)),
            Owned::Int(event.at.unix_millis()),
            Owned::Text(event.actor.clone()),
            Owned::Text(event.action.as_str().to_owned()),
            Owned::Text(event.target.clone()),
            event.subject.clone().map_or(Owned::Null, Owned::Text),
            Owned::Text(canonical),
            Owned::Text(prev_hex.clone()),
            Owned::Text(hash_hex.clone()),
        ];
        writes.push(sql::Write { sql: q::INSERT_AUDIT, params });
        prev = hash;
        records.push(AuditRecord { event, prev_hash: prev_hex, hash: hash_hex });
    }
    for event in events {
        event_seq += 1;
        let params = vec![
            Owned::Int(q::seq_param(event_seq)),
            Owned::Int(event.at.unix_millis()),
            Owned::Text(event.kind.as_str().to_owned()),
            Owned::Text(q::to_json(&event.audience)?),
            Owned::Text(event.json.clone()),
        ];
        writes.push(sql::Write { sql: q::INSERT_EVENT, params });
    }
    let head = vec![Owned::Int(q::seq_param(seq)), Owned::Text(to_hex(&prev)), Owned::Int(q::seq_param(event_seq))];
    writes.push(sql::Write { sql: q::UPDATE_CHAIN, params: head });
    let last_event = (!events.is_empty()).then_some(event_seq);
    Ok(Appended { records, last_event, writes })
}

/// The call that appends the audit events and published events on
/// PostgreSQL, numbered and hashed by the server (`hourglass_append`, in
/// schema version 5) where it takes the chain's row; none if there is
/// nothing to append.
pub(super) fn append_there(audit: &[AuditEvent], events: &[NewEvent]) -> Result<Option<sql::Write>> {
    use sql::Owned;
    if audit.is_empty() && events.is_empty() {
        return Ok(None);
    }
    let audit_rows: Vec<AuditRow<'_>> = audit
        .iter()
        .map(|event| AuditRow {
            at: event.at.unix_millis(),
            actor: &event.actor,
            action: event.action.as_str(),
            target: &event.target,
            subject: event.subject.as_deref(),
            tail: event.canonical_after_seq(),
        })
        .collect();
    let event_rows = events
        .iter()
        .map(|event| {
            Ok(EventRow {
                at: event.at.unix_millis(),
                kind: event.kind.as_str(),
                audience: q::to_json(&event.audience)?,
                event: &event.json,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let params = vec![Owned::Text(q::to_json(&audit_rows)?), Owned::Text(q::to_json(&event_rows)?)];
    Ok(Some(sql::Write { sql: q::APPEND, params }))
}

/// An audit event as `hourglass_append` reads it (`json_to_recordset`).
#[derive(serde::Serialize)]
struct AuditRow<'a> {
    at: i64,
    actor: &'a str,
    action: &'a str,
    target: &'a str,
    subject: Option<&'a str>,
    /// The canonical text after its number, which the server assigns.
    tail: String,
}

/// A published event as `hourglass_append` reads it.
#[derive(serde::Serialize)]
struct EventRow<'a> {
    at: i64,
    kind: &'a str,
    audience: String,
    event: &'a str,
}

/// The audit records of `audit` as the server appended them: `links` is
/// each one's number and link, in order. Each hash is checked against
/// core's rule, so that the server's copy of it never drifts unseen.
pub(super) fn linked(audit: Vec<AuditEvent>, links: Vec<sql::Row>) -> Result<Vec<AuditRecord>> {
    if links.len() != audit.len() {
        return Err(Error::Internal(format!("{} audit events appended, {} links returned", audit.len(), links.len())));
    }
    audit
        .into_iter()
        .zip(links)
        .map(|(mut event, link)| {
            event.seq = u64::try_from(link.int(0)?).unwrap_or(0);
            let (prev_hash, hash) = (link.text(1)?, link.text(2)?);
            let expected = from_hex(&prev_hash).map(|prev| to_hex(&chain_hash(&prev, &event.canonical())));
            if expected.as_deref() != Some(hash.as_str()) {
                // Committed already: the chain's verification will name it.
                tracing::error!(seq = event.seq, "the store hashed audit event {} unlike core's rule", event.seq);
            }
            Ok(AuditRecord { event, prev_hash, hash })
        })
        .collect()
}
