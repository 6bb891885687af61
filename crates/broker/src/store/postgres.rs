//! The shared engine: one PostgreSQL database for several brokers.
//!
//! Transactions run at READ COMMITTED. What SQLite's single writer
//! serializes is serialized here by row locks: a read-modify-write reads
//! its row `FOR UPDATE`, timed work is claimed `FOR UPDATE SKIP LOCKED`
//! (replicas split due work instead of waiting on each other), filings of
//! one principal take an advisory lock on the principal, and appends to the
//! audit chain and the event stream lock the one `chain` row, taken last,
//! just before `COMMIT`, so that it is held for the commit only.
//!
//! Connections come from a small pool (`pool.rs`), each with its
//! statements prepared once. A session that sits inside a transaction
//! longer than the replica lease (a replica stopped by SIGSTOP, say) is
//! ended by the server (`idle_in_transaction_session_timeout`), so its row
//! locks never hold up the replicas that take its work over.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use super::migrations::{MIGRATIONS, stored_version};
use super::sql::{PgConnection, Row, Write};
use crate::error::{Error, Result};
use crate::pg::{PgTarget, describe_error};
use crate::pool::{self, Pool};

/// Connections a broker holds to the store at most.
const CONNECTIONS: usize = 16;
/// The channel a commit with events notifies: a wake-up only, the events
/// themselves are read from the table.
pub(super) const EVENTS_CHANNEL: &str = "hourglass_events";
/// Serializes migrations of brokers starting together (any constant will
/// do, as long as every hourglassd uses the same one).
const MIGRATION_LOCK: i64 = 0x686f_7572_676c_6173; // "hourglas"

pub(super) struct PgStore {
    target: PgTarget,
    pool: Arc<Pool<PgConnection>>,
    /// `idle_in_transaction_session_timeout` of every connection, ms.
    idle_in_transaction_ms: u64,
    /// The connection the lease is renewed on, apart from the pool: a
    /// replica busy with every pooled connection must still renew its lease
    /// on time, or it would lose its claims to the others while it works.
    lease_connection: tokio::sync::Mutex<Option<PgConnection>>,
}

impl PgStore {
    /// Connects, and brings the schema to this binary's version (unless
    /// `read_only`, when an older schema is only read).
    pub async fn open(target: PgTarget, lease: StdDuration, read_only: bool) -> Result<PgStore> {
        let store = PgStore {
            target,
            pool: Pool::new(CONNECTIONS),
            idle_in_transaction_ms: u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1000),
            lease_connection: tokio::sync::Mutex::new(None),
        };
        let mut connection = store.pool.get(|| store.connect()).await.map_err(|error| {
            Error::Config(format!(
                "cannot connect to the store at {}: {}",
                store.target.describe(),
                describe_error(&error)
            ))
        })?;
        if read_only {
            let version = read_version(&connection).await?;
            stored_version(version.as_deref(), &store.describe())?;
        } else {
            store.migrate(&mut connection).await?;
        }
        drop(connection);
        Ok(store)
    }

    pub fn describe(&self) -> String {
        format!("postgres {}", self.target.describe())
    }

    /// Opens a connection (owning what it needs: the pool may open it in
    /// the background).
    fn connect(
        &self,
    ) -> impl Future<Output = std::result::Result<PgConnection, tokio_postgres::Error>> + Send + 'static {
        let (target, idle_in_transaction_ms) = (self.target.clone(), self.idle_in_transaction_ms);
        async move {
            let client = target.connect().await?;
            // Per session: a transaction left idle (its broker stopped) is
            // ended by the server, releasing its locks; UTC for anything
            // that formats time (nothing should, but logs read better).
            client
                .batch_execute(&format!(
                    "SET idle_in_transaction_session_timeout = {idle_in_transaction_ms}; SET TIME ZONE 'UTC'; \
                     SET client_min_messages = warning"
                ))
                .await?;
            Ok(PgConnection::new(client))
        }
    }

    /// A connection from the pool (opened if need be, see `pool.rs`).
    pub async fn get(&self) -> Result<Pooled> {
        Ok(self.pool.get(|| self.connect()).await?)
    }

    /// Runs `work` on the lease's own connection (opened again if it broke).
    pub async fn with_lease_connection<T>(&self, work: impl AsyncFnOnce(&mut PgConnection) -> Result<T>) -> Result<T> {
        let mut slot = self.lease_connection.lock().await;
        if slot.as_ref().is_none_or(|connection| connection.client.is_closed()) {
            *slot = Some(self.connect().await?);
        }
        let connection = slot.as_mut().unwrap_or_else(|| unreachable!("set just above"));
        let result = work(connection).await;
        if result.is_err() {
            *slot = None;
        }
        result
    }

    /// A transaction; its `BEGIN` goes out with its first statement.
    pub async fn begin(&self) -> Result<PgTx> {
        let mut connection = self.get().await?;
        connection.begin_with_next();
        Ok(PgTx { connection: Some(connection) })
    }

    /// Migrations run under a session advisory lock: brokers starting
    /// together take turns, and the second finds the work done.
    async fn migrate(&self, connection: &mut PgConnection) -> Result<()> {
        let client = &connection.client;
        client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
        let migrated = async {
            client.batch_execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)").await?;
            let version = stored_version(read_version(connection).await?.as_deref(), &self.describe())?;
            for (index, step) in MIGRATIONS.iter().enumerate().skip(usize::try_from(version).unwrap_or(0)) {
                let mut script = String::from("BEGIN;\n");
                for text in step.postgres {
                    script.push_str(text);
                    script.push('\n');
                }
                script.push_str(&format!(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', '{}') \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value;\nCOMMIT;",
                    index + 1
                ));
                if let Err(error) = client.batch_execute(&script).await {
                    let _ = client.batch_execute("ROLLBACK").await;
                    return Err(Error::Config(format!(
                        "migrating the store at {} to version {} failed (does its role own the database's \
                         schema? README: \"Run several replicas\"): {}",
                        self.target.describe(),
                        index + 1,
                        describe_error(&error)
                    )));
                }
            }
            Ok(())
        }
        .await;
        let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await;
        migrated?;
        unlocked?;
        Ok(())
    }

    /// A connection of its own that listens on [`EVENTS_CHANNEL`]: each
    /// notification comes out of the receiver, which ends when the
    /// connection does. Keep the client: dropping it closes the connection.
    pub async fn listen(
        &self,
    ) -> Result<(tokio_postgres::Client, tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>)> {
        let (client, notifications) = self.target.connect_with_notifications().await?;
        client.batch_execute(&format!("LISTEN {EVENTS_CHANNEL}")).await?;
        Ok((client, notifications))
    }
}

async fn read_version(connection: &PgConnection) -> Result<Option<String>> {
    let exists = connection.client.query_one("SELECT to_regclass('meta') IS NOT NULL", &[]).await?;
    if !exists.get::<_, bool>(0) {
        return Ok(None);
    }
    let row = connection.client.query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[]).await?;
    Ok(row.map(|row| row.get(0)))
}

/// A connection taken from the pool; back to it when dropped, unless it
/// broke.
pub(super) type Pooled = pool::Pooled<PgConnection>;

impl pool::Connection for PgConnection {
    fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

/// A transaction on a pooled connection: `BEGIN` sent, `COMMIT` or
/// `ROLLBACK` to come. Dropped uncommitted, it is rolled back before its
/// connection serves anyone else.
pub(super) struct PgTx {
    connection: Option<Pooled>,
}

impl PgTx {
    pub fn connection(&mut self) -> &mut PgConnection {
        self.connection.as_mut().unwrap_or_else(|| unreachable!("a transaction's connection is taken only on drop"))
    }

    /// Runs the append (if any) and `COMMIT`, sent together with whatever
    /// the transaction has not sent yet: one round trip. Returns the
    /// append's rows. Any failure rolls everything back.
    pub async fn commit(mut self, append: Option<&Write>) -> Result<Vec<Row>> {
        let mut connection = self.connection.take().unwrap_or_else(|| unreachable!("committed once"));
        let outcome = connection.append_and_commit(append).await;
        if outcome.is_err() {
            // The connection may be mid-transaction: never reuse it.
            connection.discard();
        }
        outcome
    }
}

impl Drop for PgTx {
    fn drop(&mut self) {
        let Some(mut connection) = self.connection.take() else { return };
        // Writes not sent yet never will be: not with the next transaction.
        let nothing_sent = connection.begin_pending();
        connection.discard_unsent();
        if nothing_sent {
            // No transaction to roll back.
            return;
        }
        // Not committed: nothing of it happened. The connection goes back
        // to the pool once the server has rolled it back; without a runtime
        // (shutting down) it is simply closed.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if connection.client.batch_execute("ROLLBACK").await.is_err() {
                        connection.discard();
                    }
                });
            }
            Err(_) => connection.discard(),
        }
    }
}
