//! Statements written once for both engines.
//!
//! A statement is [`Sql`]: one text when SQLite and PostgreSQL read it
//! alike ([`both`]), two when they differ (`FOR UPDATE SKIP LOCKED`, say).
//! Placeholders are PostgreSQL's `$1`, `$2`, …, which SQLite reads as named
//! parameters; they are bound here by name, so their order in the text does
//! not matter. Values are [`Param`]s in and [`Value`]s out: integers (unix
//! milliseconds, counts), text (ids, JSON documents) and NULL, the only
//! types the schema uses.

use std::collections::HashMap;

use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use crate::error::{Error, Result};

/// A statement, as each engine reads it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sql {
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

/// A statement both engines read the same way.
pub(super) const fn both(text: &'static str) -> Sql {
    Sql { sqlite: text, postgres: text }
}

/// A value bound to a placeholder.
#[derive(Debug, Clone, Copy)]
pub(super) enum Param<'a> {
    Int(i64),
    Text(&'a str),
    Null,
}

impl From<i64> for Param<'_> {
    fn from(value: i64) -> Self {
        Param::Int(value)
    }
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(value: &'a str) -> Self {
        Param::Text(value)
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(value: &'a String) -> Self {
        Param::Text(value)
    }
}

impl<'a, T: Into<Param<'a>>> From<Option<T>> for Param<'a> {
    fn from(value: Option<T>) -> Self {
        value.map_or(Param::Null, Into::into)
    }
}

/// A value read from a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Value {
    Int(i64),
    Text(String),
    Null,
}

/// One row read, its columns in the order selected.
#[derive(Debug)]
pub(super) struct Row(Vec<Value>);

impl Row {
    /// The value of column `index`, as read.
    pub fn value(&self, index: usize) -> Result<&Value> {
        self.column(index)
    }

    fn column(&self, index: usize) -> Result<&Value> {
        self.0.get(index).ok_or_else(|| Error::Internal(format!("a stored row has no column {index}")))
    }

    pub fn text(&self, index: usize) -> Result<String> {
        self.opt_text(index)?.ok_or_else(|| Error::Internal(format!("stored column {index} is NULL")))
    }

    pub fn opt_text(&self, index: usize) -> Result<Option<String>> {
        match self.column(index)? {
            Value::Text(text) => Ok(Some(text.clone())),
            Value::Null => Ok(None),
            Value::Int(_) => Err(Error::Internal(format!("stored column {index} is a number, not text"))),
        }
    }

    /// Takes the text out of the row (no copy of a large document).
    pub fn take_text(&mut self, index: usize) -> Result<String> {
        let value = self.0.get_mut(index).map(|value| std::mem::replace(value, Value::Null));
        match value {
            Some(Value::Text(text)) => Ok(text),
            Some(Value::Null) => Err(Error::Internal(format!("stored column {index} is NULL"))),
            Some(Value::Int(_)) => Err(Error::Internal(format!("stored column {index} is a number, not text"))),
            None => Err(Error::Internal(format!("a stored row has no column {index}"))),
        }
    }

    pub fn int(&self, index: usize) -> Result<i64> {
        self.opt_int(index)?.ok_or_else(|| Error::Internal(format!("stored column {index} is NULL")))
    }

    pub fn opt_int(&self, index: usize) -> Result<Option<i64>> {
        match self.column(index)? {
            Value::Int(value) => Ok(Some(*value)),
            Value::Null => Ok(None),
            Value::Text(_) => Err(Error::Internal(format!("stored column {index} is text, not a number"))),
        }
    }
}

/// A statement that commits synchronously after taking a transaction id:
/// its commit record follows every commit already written to the WAL, and
/// it returns once the WAL is flushed past it, so once they are on disk.
/// Concurrent barriers share one flush (PostgreSQL's group commit).
pub(super) const FLUSH_BARRIER: &str = "SELECT pg_current_xact_id()";

/// With [`COMMIT`], ends a transaction without waiting for its flush (the
/// chain's row is released at once); [`FLUSH_BARRIER`] then waits for it.
const COMMIT_UNFLUSHED: &str = "SET LOCAL synchronous_commit TO off";
const BEGIN: &str = "BEGIN";
const COMMIT: &str = "COMMIT";

/// A value to bind that owns its text: for statements built ahead of the
/// moment they are sent together ([`Write`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Owned {
    Int(i64),
    Text(String),
    Null,
}

impl From<Param<'_>> for Owned {
    fn from(param: Param<'_>) -> Owned {
        match param {
            Param::Int(value) => Owned::Int(value),
            Param::Text(text) => Owned::Text(text.to_owned()),
            Param::Null => Owned::Null,
        }
    }
}

impl Owned {
    pub fn param(&self) -> Param<'_> {
        match self {
            Owned::Int(value) => Param::Int(*value),
            Owned::Text(text) => Param::Text(text),
            Owned::Null => Param::Null,
        }
    }
}

/// A statement to run with its values, as one of several sent together.
#[derive(Debug, Clone)]
pub(super) struct Write {
    pub sql: Sql,
    pub params: Vec<Owned>,
}

/// A PostgreSQL connection and the statements prepared on it: planning a
/// statement costs a round trip, so each is prepared once per connection.
pub(super) struct PgConnection {
    pub client: tokio_postgres::Client,
    prepared: HashMap<&'static str, tokio_postgres::Statement>,
    /// A transaction was asked for and its `BEGIN` not sent yet: it goes
    /// out with the transaction's first statement, in the same round trip.
    begin_pending: bool,
    /// Writes of the transaction not sent yet ([`Conn::write`]): they go
    /// out in order ahead of its next statement, in the same round trip.
    deferred: Vec<Write>,
}

impl PgConnection {
    pub fn new(client: tokio_postgres::Client) -> PgConnection {
        PgConnection { client, prepared: HashMap::new(), begin_pending: false, deferred: Vec::new() }
    }

    pub async fn prepared(&mut self, text: &'static str) -> Result<tokio_postgres::Statement> {
        if let Some(statement) = self.prepared.get(text) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(text).await?;
        self.prepared.insert(text, statement.clone());
        Ok(statement)
    }

    /// Starts a transaction with the next statement sent.
    pub fn begin_with_next(&mut self) {
        self.begin_pending = true;
    }

    /// Whether a transaction was asked for and nothing sent yet.
    pub fn begin_pending(&self) -> bool {
        self.begin_pending
    }

    /// Forgets what a transaction has not sent: its `BEGIN`, if pending,
    /// and its deferred writes.
    pub fn discard_unsent(&mut self) {
        self.begin_pending = false;
        self.deferred.clear();
    }

    /// What goes out ahead of the next statement: the pending `BEGIN` and
    /// the deferred writes, prepared.
    async fn take_queued(&mut self) -> Result<Queued> {
        let mut statements = Vec::with_capacity(self.deferred.len());
        for index in 0..self.deferred.len() {
            statements.push(self.prepared(self.deferred[index].sql.postgres).await?);
        }
        let begin = if self.begin_pending { Some(self.prepared(BEGIN).await?) } else { None };
        self.begin_pending = false;
        Ok(Queued { begin, writes: std::mem::take(&mut self.deferred), statements })
    }

    /// Runs `append` (a statement returning rows), then `COMMIT`, sent
    /// together with the statements queued before them: one round trip
    /// however many statements. Returns `append`'s rows. If one fails, the
    /// server rolls the transaction back and the error is returned.
    ///
    /// Group commit: the transaction commits without waiting for its WAL
    /// flush (`synchronous_commit = off`, local to it), so its locks are
    /// released at once, and a [`FLUSH_BARRIER`] sent right behind the
    /// `COMMIT` returns only once the WAL is on disk past it. Concurrent
    /// commits share that flush; none is acknowledged before.
    pub async fn append_and_commit(&mut self, append: Option<&Write>) -> Result<Vec<Row>> {
        if append.is_none() && self.deferred.is_empty() && self.begin_pending {
            // Nothing was asked: there is no transaction to end.
            self.begin_pending = false;
            return Ok(Vec::new());
        }
        let statement = match append {
            Some(write) => Some(self.prepared(write.sql.postgres).await?),
            None => None,
        };
        // Prepared like the rest: sent as text, each would be parsed (and
        // the barrier planned) again on every commit.
        let unflushed = self.prepared(COMMIT_UNFLUSHED).await?;
        let commit = self.prepared(COMMIT).await?;
        let barrier = self.prepared(FLUSH_BARRIER).await?;
        let queued = self.take_queued().await?;
        let params: Vec<Param<'_>> = append.map(|w| w.params.iter().map(Owned::param).collect()).unwrap_or_default();
        let bound: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let client = &self.client;
        let rows = queued
            .send_before(client, async {
                // Polled in this order on the first poll, so sent in this order.
                let (appended, unflushed, committed, flushed) = tokio::join!(
                    async {
                        match &statement {
                            Some(statement) => client.query(statement, &bound).await,
                            None => Ok(Vec::new()),
                        }
                    },
                    client.execute(&unflushed, &[]),
                    client.execute(&commit, &[]),
                    // In a transaction of its own, after the commit.
                    client.execute(&barrier, &[]),
                );
                // The first failure is the one to name: what follows it was
                // refused because of it. (A transaction that failed is
                // rolled back by its COMMIT, without an error of its own:
                // the statement before it, at the latest, names the failure.)
                let rows = appended?;
                unflushed?;
                committed?;
                flushed?;
                Ok(rows)
            })
            .await?;
        rows.iter().map(pg_row).collect()
    }

    /// Returns once every commit visible to this connection is on disk
    /// (see [`FLUSH_BARRIER`]).
    pub async fn flushed(&self) -> Result<()> {
        Ok(self.client.batch_execute(FLUSH_BARRIER).await?)
    }
}

/// The statements a transaction has queued ahead of its next one.
struct Queued {
    /// `BEGIN`, prepared, when the transaction starts with these.
    begin: Option<tokio_postgres::Statement>,
    writes: Vec<Write>,
    statements: Vec<tokio_postgres::Statement>,
}

impl Queued {
    /// Sends the queued statements and then `work`'s, all at once (one
    /// round trip), and returns `work`'s outcome, or the first error: a
    /// failed write aborts the transaction, so what follows it fails too.
    async fn send_before<T>(
        self,
        client: &tokio_postgres::Client,
        work: impl std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    ) -> Result<T> {
        if self.begin.is_none() && self.writes.is_empty() {
            return Ok(work.await?);
        }
        let params: Vec<Vec<Param<'_>>> =
            self.writes.iter().map(|w| w.params.iter().map(Owned::param).collect()).collect();
        let bound: Vec<Vec<&(dyn ToSql + Sync)>> =
            params.iter().map(|p| p.iter().map(|x| x as &(dyn ToSql + Sync)).collect()).collect();
        // Polled in this order on the first poll, so sent in this order.
        let (begun, written, done) = tokio::join!(
            async {
                match &self.begin {
                    Some(begin) => client.execute(begin, &[]).await.map(drop),
                    None => Ok(()),
                }
            },
            futures::future::try_join_all(
                self.statements.iter().zip(&bound).map(|(statement, params)| client.execute(statement, params))
            ),
            work,
        );
        begun?;
        written?;
        Ok(done?)
    }
}

/// A connection of either engine, for the statements of one call or
/// transaction.
pub(super) enum Conn<'a> {
    /// `&mut`, not `&`: a connection is Send but not Sync, and a future
    /// holding a shared reference to it would not be Send.
    Sqlite(&'a mut rusqlite::Connection),
    Postgres(&'a mut PgConnection),
}

impl Conn<'_> {
    pub async fn query(&mut self, sql: Sql, params: &[Param<'_>]) -> Result<Vec<Row>> {
        match self {
            Conn::Sqlite(connection) => {
                let mut statement = connection.prepare_cached(sql.sqlite)?;
                sqlite_rows(&mut statement, params)
            }
            Conn::Postgres(connection) => {
                let statement = connection.prepared(sql.postgres).await?;
                let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                let queued = connection.take_queued().await?;
                let rows = queued.send_before(&connection.client, connection.client.query(&statement, &params)).await?;
                rows.iter().map(pg_row).collect()
            }
        }
    }

    /// Two statements, neither depending on the other, sent together on
    /// PostgreSQL (one round trip); their rows.
    pub async fn query_both(
        &mut self,
        (first, first_params): (Sql, &[Param<'_>]),
        (second, second_params): (Sql, &[Param<'_>]),
    ) -> Result<(Vec<Row>, Vec<Row>)> {
        match self {
            Conn::Sqlite(_) => Ok((self.query(first, first_params).await?, self.query(second, second_params).await?)),
            Conn::Postgres(connection) => {
                let first = connection.prepared(first.postgres).await?;
                let second = connection.prepared(second.postgres).await?;
                let first_bound: Vec<&(dyn ToSql + Sync)> =
                    first_params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                let second_bound: Vec<&(dyn ToSql + Sync)> =
                    second_params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                let queued = connection.take_queued().await?;
                let client = &connection.client;
                let (first_rows, second_rows) = queued
                    .send_before(client, async {
                        // Polled in this order on the first poll, so sent in this order.
                        let (a, b) =
                            tokio::join!(client.query(&first, &first_bound), client.query(&second, &second_bound));
                        Ok((a?, b?))
                    })
                    .await?;
                Ok((
                    first_rows.iter().map(pg_row).collect::<Result<_>>()?,
                    second_rows.iter().map(pg_row).collect::<Result<_>>()?,
                ))
            }
        }
    }

    pub async fn query_opt(&mut self, sql: Sql, params: &[Param<'_>]) -> Result<Option<Row>> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    /// A statement made at run time (both engines read it alike), not kept
    /// prepared: for what runs once, such as moving a store.
    pub async fn query_text(&mut self, text: &str, params: &[Param<'_>]) -> Result<Vec<Row>> {
        match self {
            Conn::Sqlite(connection) => sqlite_rows(&mut connection.prepare(text)?, params),
            Conn::Postgres(connection) => {
                let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                let queued = connection.take_queued().await?;
                let rows = queued.send_before(&connection.client, connection.client.query(text, &params)).await?;
                rows.iter().map(pg_row).collect()
            }
        }
    }

    /// [`Conn::query_text`] for a statement that returns no rows.
    pub async fn execute_text(&mut self, text: &str, params: &[Param<'_>]) -> Result<u64> {
        match self {
            Conn::Sqlite(connection) => {
                let mut statement = connection.prepare(text)?;
                bind_by_name(&mut statement, params)?;
                Ok(u64::try_from(statement.raw_execute()?).unwrap_or(0))
            }
            Conn::Postgres(connection) => {
                let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                let queued = connection.take_queued().await?;
                queued.send_before(&connection.client, connection.client.execute(text, &params)).await
            }
        }
    }

    /// Runs a statement; returns the rows it changed.
    pub async fn execute(&mut self, sql: Sql, params: &[Param<'_>]) -> Result<u64> {
        match self {
            Conn::Sqlite(connection) => {
                let mut statement = connection.prepare_cached(sql.sqlite)?;
                bind_by_name(&mut statement, params)?;
                Ok(u64::try_from(statement.raw_execute()?).unwrap_or(0))
            }
            Conn::Postgres(connection) => {
                let statement = connection.prepared(sql.postgres).await?;
                let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                let queued = connection.take_queued().await?;
                queued.send_before(&connection.client, connection.client.execute(&statement, &params)).await
            }
        }
    }

    /// Runs a statement whose outcome nobody waits on, in a transaction: on
    /// PostgreSQL it goes out with the transaction's next statement (or its
    /// commit), in the same round trip, and an error it meets is that
    /// statement's error; SQLite runs it now.
    pub async fn write(&mut self, sql: Sql, params: &[Param<'_>]) -> Result<()> {
        match self {
            Conn::Sqlite(_) => self.execute(sql, params).await.map(drop),
            Conn::Postgres(connection) => {
                connection.deferred.push(Write { sql, params: params.iter().copied().map(Owned::from).collect() });
                Ok(())
            }
        }
    }
}

/// The rows of a SQLite statement run with `params`.
fn sqlite_rows(statement: &mut rusqlite::Statement<'_>, params: &[Param<'_>]) -> Result<Vec<Row>> {
    bind_by_name(statement, params)?;
    let columns = statement.column_count();
    let mut rows = statement.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let mut values = Vec::with_capacity(columns);
        for index in 0..columns {
            values.push(sqlite_value(row.get_ref(index)?)?);
        }
        out.push(Row(values));
    }
    Ok(out)
}

/// Binds `$N` to `params[N - 1]`, whatever order SQLite numbered them in.
fn bind_by_name(statement: &mut rusqlite::Statement<'_>, params: &[Param<'_>]) -> Result<()> {
    for index in 1..=statement.parameter_count() {
        let name = statement.parameter_name(index).unwrap_or_default();
        let position = name
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| (1..=params.len()).contains(n))
            .ok_or_else(|| {
                Error::Internal(format!("statement placeholder {name:?} has no value ({} given)", params.len()))
            })?;
        statement.raw_bind_parameter(index, params[position - 1])?;
    }
    Ok(())
}

fn sqlite_value(value: rusqlite::types::ValueRef<'_>) -> Result<Value> {
    use rusqlite::types::ValueRef;
    Ok(match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(value) => Value::Int(value),
        ValueRef::Text(text) => Value::Text(
            String::from_utf8(text.to_vec()).map_err(|_| Error::Internal("stored text is not UTF-8".into()))?,
        ),
        ValueRef::Real(_) | ValueRef::Blob(_) => {
            return Err(Error::Internal("the store holds a value of a type it never writes".into()));
        }
    })
}

fn pg_row(row: &tokio_postgres::Row) -> Result<Row> {
    let mut values = Vec::with_capacity(row.len());
    for (index, column) in row.columns().iter().enumerate() {
        let value = match *column.type_() {
            Type::INT8 => row.try_get::<_, Option<i64>>(index)?.map_or(Value::Null, Value::Int),
            Type::INT4 => row.try_get::<_, Option<i32>>(index)?.map_or(Value::Null, |v| Value::Int(i64::from(v))),
            Type::INT2 => row.try_get::<_, Option<i16>>(index)?.map_or(Value::Null, |v| Value::Int(i64::from(v))),
            Type::BOOL => row.try_get::<_, Option<bool>>(index)?.map_or(Value::Null, |v| Value::Int(i64::from(v))),
            Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => {
                row.try_get::<_, Option<String>>(index)?.map_or(Value::Null, Value::Text)
            }
            ref other => {
                return Err(Error::Internal(format!("the store read a column of type {other}, which it never writes")));
            }
        };
        values.push(value);
    }
    Ok(Row(values))
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Param::Int(value) => ToSqlOutput::Borrowed(ValueRef::Integer(*value)),
            Param::Text(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
            Param::Null => ToSqlOutput::Borrowed(ValueRef::Null),
        })
    }
}

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match (self, ty) {
            (Param::Null, _) => Ok(IsNull::Yes),
            (Param::Int(value), &Type::INT8) => value.to_sql(ty, out),
            (Param::Int(value), &Type::INT4) => i32::try_from(*value)?.to_sql(ty, out),
            (Param::Int(value), &Type::INT2) => i16::try_from(*value)?.to_sql(ty, out),
            (Param::Text(text), &(Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR | Type::UNKNOWN)) => {
                text.to_sql(ty, out)
            }
            // The kind only: a value may be a document nobody should read in a log.
            (Param::Int(_), ty) => Err(format!("a number cannot fill a parameter of type {ty}").into()),
            (Param::Text(_), ty) => Err(format!("text cannot fill a parameter of type {ty}").into()),
        }
    }

    fn accepts(ty: &Type) -> bool {
        // Which variant is bound is known only at run time: accept the
        // types any of them can fill, and let `to_sql` check the rest.
        matches!(
            *ty,
            Type::INT8
                | Type::INT4
                | Type::INT2
                | Type::TEXT
                | Type::VARCHAR
                | Type::NAME
                | Type::BPCHAR
                | Type::UNKNOWN
        )
    }

    to_sql_checked!();
}
