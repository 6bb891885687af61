//! Moving a store to another engine (`hourglassd migrate-store`, SQLite to
//! PostgreSQL): every table copied row by row, unchanged, in one transaction
//! on the target, so that a move that fails leaves the target as empty as it
//! was. Signing keys move sealed, as they are: the target's brokers need the
//! same store key. Claims do not move: the source's broker is stopped.

use super::sql::{Param, Row, Value};
use super::{Store, TxInner};
use crate::error::{Error, Result};

/// A table, the columns that move, and the key it is read in order of.
struct Table {
    name: &'static str,
    columns: &'static [&'static str],
    key: &'static str,
}

const TABLES: &[Table] = &[
    Table {
        name: "requests",
        columns: &[
            "id",
            "requester",
            "resource",
            "role",
            "state",
            "renews",
            "created_at",
            "pending_until",
            "doc",
            "client_material",
        ],
        key: "id",
    },
    Table {
        name: "grants",
        columns: &[
            "id",
            "request_id",
            "owner",
            "resource",
            "role",
            "state",
            "expires_at",
            "revocation_due",
            "provider_state",
            "doc",
            "awaiting_review",
        ],
        key: "id",
    },
    Table {
        name: "audit",
        columns: &["seq", "at", "actor", "action", "target", "subject", "event", "prev_hash", "hash"],
        key: "seq",
    },
    Table { name: "events", columns: &["seq", "at", "kind", "audience", "event"], key: "seq" },
    Table {
        name: "signing_keys",
        columns: &[
            "kid",
            "purpose",
            "public_key",
            "sealed_private",
            "sealed_with",
            "created_at",
            "signs_from",
            "signs_until",
            "verifies_until",
        ],
        key: "kid",
    },
    Table { name: "documents", columns: &["name", "doc"], key: "name" },
    // Notifications still to send move with the rest (claims do not).
    Table {
        name: "outbox",
        columns: &[
            "seq",
            "id",
            "channel",
            "topic",
            "created_at",
            "due_at",
            "attempts",
            "notice",
            "last_error",
            "done_at",
            "outcome",
            "reference",
        ],
        key: "seq",
    },
];

/// Rows read and written at a time.
const PAGE: usize = 500;

/// What a move copied: rows by table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub rows: Vec<(&'static str, u64)>,
}

impl Store {
    /// Whether the store holds nothing a broker wrote: no request, grant,
    /// audit event or key.
    pub async fn is_empty(&self) -> Result<bool> {
        let mut reader = self.reader().await?;
        for table in ["requests", "grants", "audit", "signing_keys"] {
            let sql = format!("SELECT count(*) FROM {table}");
            let rows = reader.conn().query_text(&sql, &[]).await?;
            if rows.first().map(|row| row.int(0)).transpose()?.unwrap_or(0) > 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Copies every row of this store into `target`, which must be empty and
    /// at the same schema version, in one transaction on the target.
    pub async fn copy_into(&self, target: &Store) -> Result<Copied> {
        if !target.is_empty().await? {
            return Err(Error::Config(format!(
                "the target store {} is not empty: a store is moved into an empty one only",
                target.describe()
            )));
        }
        let mut tx = target.begin().await?;
        let mut copied = Vec::new();
        for table in TABLES {
            let mut count = 0u64;
            let mut after: Option<Value> = None;
            loop {
                let page = self.page(table, after.as_ref()).await?;
                let Some(last) = page.last() else { break };
                after = Some(last.value(0)?.clone());
                count += u64::try_from(page.len()).unwrap_or(0);
                let full = page.len() == PAGE;
                insert(&mut tx.conn(), table, &page).await?;
                if !full {
                    break;
                }
            }
            copied.push((table.name, count));
        }
        // The chain's head and the event stream's number carry on from the source's.
        let head =
            self.reader().await?.conn().query_text("SELECT audit_seq, audit_hash, event_seq FROM chain", &[]).await?;
        let head = head.first().ok_or_else(|| Error::Internal("the source store has no chain head".into()))?;
        let (audit_seq, audit_hash, event_seq) = (head.int(0)?, head.text(1)?, head.int(2)?);
        tx.conn()
            .execute_text(
                "UPDATE chain SET audit_seq = $1, audit_hash = $2, event_seq = $3 WHERE id = 1",
                &[Param::Int(audit_seq), Param::Text(&audit_hash), Param::Int(event_seq)],
            )
            .await?;
        if let TxInner::Postgres(_) = tx.inner {
            // The outbox's counter carries on after the rows copied with their numbers.
            tx.conn()
                .execute_text("SELECT setval(pg_get_serial_sequence('outbox', 'seq'), MAX(seq)) FROM outbox", &[])
                .await?;
            // Bulk writes read better with fresh statistics.
            for table in TABLES {
                tx.conn().execute_text(&format!("ANALYZE {}", table.name), &[]).await?;
            }
        }
        tx.commit().await?;
        Ok(Copied { rows: copied })
    }

    /// The next page of `table` after the key `after`.
    async fn page(&self, table: &Table, after: Option<&Value>) -> Result<Vec<Row>> {
        let columns = table.columns.join(", ");
        let mut reader = self.reader().await?;
        match after {
            None => {
                let sql = format!("SELECT {columns} FROM {} ORDER BY {} LIMIT {PAGE}", table.name, table.key);
                reader.conn().query_text(&sql, &[]).await
            }
            Some(key) => {
                let sql = format!(
                    "SELECT {columns} FROM {} WHERE {} > $1 ORDER BY {} LIMIT {PAGE}",
                    table.name, table.key, table.key
                );
                reader.conn().query_text(&sql, &[param(key)]).await
            }
        }
    }
}

fn param(value: &Value) -> Param<'_> {
    match value {
        Value::Int(value) => Param::Int(*value),
        Value::Text(text) => Param::Text(text),
        Value::Null => Param::Null,
    }
}

/// One multi-row `INSERT` for a page.
async fn insert(conn: &mut super::sql::Conn<'_>, table: &Table, rows: &[Row]) -> Result<()> {
    let width = table.columns.len();
    let mut values = Vec::with_capacity(rows.len());
    let mut params = Vec::with_capacity(rows.len() * width);
    for (r, row) in rows.iter().enumerate() {
        let placeholders: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
        values.push(format!("({})", placeholders.join(", ")));
        for c in 0..width {
            params.push(param(row.value(c)?));
        }
    }
    let sql = format!("INSERT INTO {} ({}) VALUES {}", table.name, table.columns.join(", "), values.join(", "));
    conn.execute_text(&sql, &params).await?;
    Ok(())
}
