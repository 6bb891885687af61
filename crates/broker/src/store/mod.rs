//! The broker's store: requests, grants, the audit chain and the event
//! stream, on one of two engines — SQLite, embedded, for one broker
//! (`sqlite.rs`), or PostgreSQL, shared by several replicas
//! (`postgres.rs`). One schema for both (`migrations.rs`), statements
//! written once (`queries.rs`, `sql.rs`).
//!
//! Every change goes through a [`WriteTx`]: a state change, its audit
//! events and the events it publishes commit together or not at all, and a
//! commit returns once it is on disk. Audit events and published events
//! are appended at commit, under the `chain` row: the one place where
//! commits of every replica take turns, so that the audit chain has one
//! order and event numbers follow commit order.
//!
//! Timed work (a revocation in flight, a grant being issued) is *claimed*
//! by the replica doing it (`grants.claimed_by`). A claim holds while that
//! replica's lease does (`replicas.alive_until`, on the database's clock,
//! renewed by [`Store::renew_lease`]); the replica checks its claim in the
//! transaction that records the work ([`WriteTx::holds_claim`]), and once
//! its lease lapses it acts on nothing it had claimed ([`Store::may_act`]).

mod append;
mod audit_groups;
mod copy;
mod durability;
mod lock;
mod migrations;
mod outbox;
mod postgres;
mod queries;
mod sql;
mod sqlite;
#[cfg(test)]
mod tests;
mod write;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use hourglass_core::api::{ClientMaterial, EventKind};
use hourglass_core::audit::{AuditRecord, StoredLink};
use hourglass_core::{AccessRequest, Grant, GrantId, RequestId, Timestamp};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::pg::PgTarget;
use postgres::PgStore;
use queries as q;
use sql::{Conn, Param};
use sqlite::SqliteStore;

pub use copy::Copied;
pub use outbox::{ClaimedNotice, NewNotice, NoticeOutcome};
use write::TxInner;
pub use write::WriteTx;

pub use crate::error::StoreError;

/// Where the store is: `sqlite:PATH` or a PostgreSQL connection string
/// (`postgres://…`, `postgresql://…`).
#[derive(Clone)]
pub enum StoreLocation {
    Sqlite(PathBuf),
    /// The connection string (it may hold a password: wiped when dropped,
    /// never shown).
    Postgres(Arc<Zeroizing<String>>),
}

impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            StoreLocation::Postgres(_) => f.write_str("postgres:<connection string>"),
        }
    }
}

impl StoreLocation {
    /// Reads `store = "…"`; a relative SQLite path is taken from `base`.
    pub fn parse(text: &str, base: &Path) -> Result<StoreLocation> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix("sqlite:") {
            if path.is_empty() {
                return Err(Error::Config(
                    "store = \"sqlite:\" needs a path (sqlite:/var/lib/hourglass/hourglass.db)".into(),
                ));
            }
            return Ok(StoreLocation::Sqlite(base.join(path)));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(StoreLocation::Postgres(Arc::new(Zeroizing::new(text.to_owned()))));
        }
        // Not echoed: it may be a connection string with a password in it.
        Err(Error::Config(
            "store must be \"sqlite:PATH\" or a PostgreSQL URL (\"postgres://USER@HOST/DATABASE?sslmode=verify-full\")"
                .into(),
        ))
    }

    pub fn sqlite(path: impl Into<PathBuf>) -> StoreLocation {
        StoreLocation::Sqlite(path.into())
    }

    pub fn postgres(dsn: impl Into<String>) -> StoreLocation {
        StoreLocation::Postgres(Arc::new(Zeroizing::new(dsn.into())))
    }
}

/// How a broker opens its store.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// How long this replica's claims outlive its last renewal (PostgreSQL;
    /// a SQLite store has one broker, whose claims last while it runs).
    pub lease: StdDuration,
    /// PostgreSQL: the password, when the connection string has none.
    pub password: Option<Arc<Zeroizing<String>>>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions { lease: DEFAULT_LEASE, password: None }
    }
}

/// A replica's claims outlive its last renewal by this much: a replica
/// killed holding work has it taken over by another about this soon.
pub const DEFAULT_LEASE: StdDuration = StdDuration::from_millis(1500);

/// What a new filing clashes with ([`WriteTx::filing_clashes`]).
#[derive(Debug, Default)]
pub struct FilingClashes {
    /// A request of the same person for the same access, still waiting.
    pub pending: Option<RequestId>,
    /// A grant of the same person for the same access, still live.
    pub live: Option<GrantRecord>,
}

/// A grant with the provider's (non-secret) record of what it created.
#[derive(Debug, Clone, PartialEq)]
pub struct GrantRecord {
    pub grant: Grant,
    pub provider_state: serde_json::Value,
}

/// What an update does to a grant's claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Left as it is.
    Keep,
    /// This replica works on the grant now (issues or revokes it).
    Take,
    /// Nobody does: the work is done, or waits for its next attempt.
    Release,
}

/// A live grant past its deadline, as the expiry pass takes it.
#[derive(Debug, Clone)]
pub struct DueGrant {
    pub record: GrantRecord,
    /// A renewal of it waits for approval (read with it, at no extra
    /// round trip): the expiry withdraws it.
    pub renewal_pending: bool,
}

/// Which kinds of timed work besides expiring grants are due: the
/// scheduler's pass opens a transaction for those only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DueWork {
    /// Pending requests past their timeout.
    pub requests: bool,
    /// Revocations due that nobody works on.
    pub revocations: bool,
    /// Issues a stopped replica left.
    pub issues: bool,
}

/// An event for `/v1/events`, as written with the change it reports.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: EventKind,
    pub at: Timestamp,
    /// The event as sent (JSON).
    pub json: String,
    pub audience: EventAudience,
}

/// Who an event is for: these principals, and (`deciders`) whoever may
/// decide the request it carries.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventAudience {
    pub principals: Vec<String>,
    #[serde(default)]
    pub deciders: bool,
}

/// An event as stored, numbered in commit order.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: u64,
    pub kind: String,
    pub audience: EventAudience,
    pub json: String,
}

/// A signing key as stored: its private half sealed with the store key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub kid: String,
    pub purpose: String,
    /// Base64 of the raw public key.
    pub public_key: String,
    pub sealed_private: String,
    /// The id of the store key that sealed it.
    pub sealed_with: String,
    pub created_at: Timestamp,
    pub signs_from: Timestamp,
    pub signs_until: Timestamp,
    pub verifies_until: Timestamp,
}

#[derive(Clone)]
enum Engine {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PgStore>),
}

#[derive(Clone)]
pub struct Store {
    engine: Engine,
    replica: Arc<Replica>,
    events: Arc<EventSignal>,
    audit_groups: Arc<audit_groups::AuditGroups>,
}

/// This broker as the store knows it.
struct Replica {
    /// Its id in `replicas`; a new one after a lease lapsed, so that no
    /// claim of the old one is ever taken for its own.
    id: Mutex<Arc<str>>,
    lease: StdDuration,
    /// Until when its lease certainly holds, on this machine's monotonic
    /// clock (taken before the renewal was sent); `None`: while it runs.
    valid_until: Mutex<Option<Instant>>,
}

impl Replica {
    fn id(&self) -> Arc<str> {
        Arc::clone(&self.id.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// Tells the event follower that events were committed.
struct EventSignal {
    /// SQLite: the last event known on disk (another connection can read a
    /// commit before its fsync, and nothing is published before it).
    durable: AtomicU64,
    /// The last event the follower has handed on: a wake-up announcing no
    /// later one (PostgreSQL's notification of this replica's own commit,
    /// arriving after the follower read it) wakes nobody.
    followed: AtomicU64,
    notify: tokio::sync::Notify,
    /// This replica committed notifications: its outbox sender looks now.
    outbox: tokio::sync::Notify,
}

fn new_replica_id() -> Arc<str> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
    let host: String = host.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(32).collect();
    let random: u32 = rand::random();
    format!("{}-{}-{random:08x}", if host.is_empty() { "broker" } else { &host }, std::process::id()).into()
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default()
}

fn millis(duration: StdDuration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A connection to read with.
enum Reader<'a> {
    Sqlite(tokio::sync::MutexGuard<'a, rusqlite::Connection>),
    // Boxed: a pooled connection is much larger than a guard.
    Postgres(Box<postgres::Pooled>),
}

impl Reader<'_> {
    fn conn(&mut self) -> Conn<'_> {
        match self {
            Reader::Sqlite(connection) => Conn::Sqlite(connection),
            Reader::Postgres(connection) => Conn::Postgres(connection),
        }
    }
}

impl Store {
    /// Opens the store for a broker: creates or migrates its schema and
    /// registers this broker as a replica. A SQLite file is this broker's
    /// alone (a second broker on it is refused); its previous run's claims
    /// are released at once.
    pub async fn open(location: &StoreLocation, options: &OpenOptions) -> Result<Store> {
        let store = match location {
            StoreLocation::Sqlite(path) => {
                let engine = Engine::Sqlite(Arc::new(SqliteStore::open(path).await?));
                Store::assemble(engine, options.lease, None)
            }
            StoreLocation::Postgres(dsn) => {
                let target = postgres_target(dsn, options)?;
                let engine = Engine::Postgres(Arc::new(PgStore::open(target, options.lease, false).await?));
                Store::assemble(engine, options.lease, Some(Instant::now()))
            }
        };
        store.register().await?;
        // Every commit read back at open is on disk (the registration's
        // flush covered them).
        let last = store.last_event().await?;
        store.events.durable.fetch_max(last, Ordering::AcqRel);
        Ok(store)
    }

    /// A SQLite store at `path`, for one broker (tests, tools).
    pub async fn open_sqlite(path: &Path) -> Result<Store> {
        Store::open(&StoreLocation::sqlite(path), &OpenOptions::default()).await
    }

    /// Opens a store for reading only (audit verify and export while
    /// brokers run on it): no migration, no replica, no lock.
    pub async fn open_read_only(location: &StoreLocation, options: &OpenOptions) -> Result<Store> {
        let engine = match location {
            StoreLocation::Sqlite(path) => Engine::Sqlite(Arc::new(SqliteStore::open_read_only(path)?)),
            StoreLocation::Postgres(dsn) => {
                let target = postgres_target(dsn, options)?;
                Engine::Postgres(Arc::new(PgStore::open(target, options.lease, true).await?))
            }
        };
        Ok(Store::assemble(engine, options.lease, None))
    }

    fn assemble(engine: Engine, lease: StdDuration, valid_until: Option<Instant>) -> Store {
        Store {
            engine,
            replica: Arc::new(Replica {
                id: Mutex::new(new_replica_id()),
                lease,
                valid_until: Mutex::new(valid_until),
            }),
            audit_groups: Arc::default(),
            events: Arc::new(EventSignal {
                durable: AtomicU64::new(0),
                followed: AtomicU64::new(0),
                notify: tokio::sync::Notify::new(),
                outbox: tokio::sync::Notify::new(),
            }),
        }
    }

    /// Where the store is, for messages (no password).
    pub fn describe(&self) -> String {
        match &self.engine {
            Engine::Sqlite(store) => store.describe(),
            Engine::Postgres(store) => store.describe(),
        }
    }

    pub fn is_shared(&self) -> bool {
        matches!(self.engine, Engine::Postgres(_))
    }

    /// This broker's replica id.
    pub fn replica_id(&self) -> Arc<str> {
        self.replica.id()
    }

    pub fn lease(&self) -> StdDuration {
        self.replica.lease
    }

    /// Whether this replica's lease certainly holds now: work it claimed is
    /// still its own to do. A replica stopped (SIGSTOP, a long pause) past
    /// its lease acts on nothing it had claimed; another replica may have
    /// taken it over.
    pub fn may_act(&self) -> bool {
        match *self.replica.valid_until.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
            None => true,
            Some(until) => Instant::now() < until,
        }
    }

    /// Registers this broker in `replicas`. On SQLite (one broker, the
    /// file locked) every other row is a previous run's: they are removed,
    /// which releases their claims at once.
    async fn register(&self) -> Result<()> {
        let id = self.replica.id();
        let host = host_name();
        let pid = i64::from(std::process::id());
        let mut tx = self.begin().await?;
        let lease = match self.engine {
            Engine::Sqlite(_) => {
                tx.conn().execute(q::FORGET_OTHER_REPLICAS, &[Param::Text(&id)]).await?;
                i64::MAX / 2
            }
            Engine::Postgres(_) => millis(self.replica.lease),
        };
        let sent = Instant::now();
        tx.conn()
            .execute(q::REGISTER_REPLICA, &[Param::Text(&id), Param::Text(&host), pid.into(), lease.into()])
            .await?;
        tx.commit().await?;
        if matches!(self.engine, Engine::Postgres(_)) {
            *self.replica.valid_until.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some(sent + self.replica.lease);
        }
        Ok(())
    }

    /// Renews this replica's lease (PostgreSQL; a no-op on SQLite). A lease
    /// that lapsed is not renewed: this broker takes a new replica id, so
    /// that the claims of the old one are everybody's; returns `false`
    /// then. Call it several times per lease.
    pub async fn renew_lease(&self) -> Result<bool> {
        let Engine::Postgres(engine) = &self.engine else { return Ok(true) };
        let id = self.replica.id();
        let sent = Instant::now();
        let lease = millis(self.replica.lease);
        let renewed = engine
            .with_lease_connection(async |connection| {
                Conn::Postgres(connection).execute(q::RENEW_REPLICA, &[Param::Text(&id), lease.into()]).await
            })
            .await?;
        if renewed == 1 {
            let mut valid_until = self.replica.valid_until.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            *valid_until = Some(sent + self.replica.lease);
            return Ok(true);
        }
        tracing::warn!(replica = %id, "this replica's lease lapsed (paused, or cut off from the store): \
            its claimed work is left to others; continuing as a new replica");
        *self.replica.valid_until.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(sent);
        *self.replica.id.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = new_replica_id();
        self.register().await?;
        Ok(false)
    }

    /// Ends this replica's lease now (a clean stop): others take over
    /// whatever it had claimed without waiting for the lease to lapse.
    pub async fn retire(&self) -> Result<()> {
        let id = self.replica.id();
        let mut tx = self.begin().await?;
        tx.conn().execute(q::RETIRE_REPLICA, &[Param::Text(&id)]).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Housekeeping: events older than `events_before` and replicas gone
    /// for longer than `replicas_after`.
    pub async fn prune(&self, events_before: Timestamp, replicas_after: StdDuration) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.conn().execute(q::PRUNE_EVENTS, &[events_before.unix_millis().into()]).await?;
        tx.conn().execute(q::FORGET_KEEPERS, &[millis(replicas_after).into()]).await?;
        tx.conn().execute(q::PRUNE_REPLICAS, &[millis(replicas_after).into()]).await?;
        tx.commit().await?;
        Ok(())
    }

    /// How many replicas hold a lease now (this one included).
    pub async fn live_replicas(&self) -> Result<u64> {
        let mut reader = self.reader().await?;
        let count = q::scalar(&mut reader.conn(), q::LIVE_REPLICAS, &[]).await?;
        Ok(u64::try_from(count.unwrap_or(0)).unwrap_or(0))
    }

    async fn reader(&self) -> Result<Reader<'_>> {
        Ok(match &self.engine {
            Engine::Sqlite(store) => Reader::Sqlite(store.reader().await),
            Engine::Postgres(store) => Reader::Postgres(Box::new(store.get().await?)),
        })
    }

    pub async fn begin(&self) -> Result<WriteTx> {
        let inner = match &self.engine {
            Engine::Sqlite(store) => TxInner::Sqlite(store.begin().await?),
            Engine::Postgres(store) => TxInner::Postgres(Box::new(store.begin().await?)),
        };
        Ok(WriteTx { inner, store: self.clone(), audit: Vec::new(), events: Vec::new(), outbox: Vec::new() })
    }

    pub async fn request(&self, id: &RequestId) -> Result<Option<AccessRequest>> {
        q::request(&mut self.reader().await?.conn(), q::REQUEST, id).await
    }

    pub async fn grant(&self, id: &GrantId) -> Result<Option<GrantRecord>> {
        q::grant(&mut self.reader().await?.conn(), q::GRANT, id).await
    }

    /// What the client sent with a request for its credential.
    pub async fn request_material(&self, id: &RequestId) -> Result<Option<ClientMaterial>> {
        let mut reader = self.reader().await?;
        let row = reader.conn().query_opt(q::REQUEST_MATERIAL, &[id.as_str().into()]).await?;
        let text = match row {
            Some(row) => row.opt_text(0)?,
            None => None,
        };
        text.map(|text| {
            serde_json::from_str(&text)
                .map_err(|error| Error::Internal(format!("stored client material does not parse: {error}")))
        })
        .transpose()
    }

    /// The requester's requests, newest first.
    pub async fn requests_of(&self, requester: &str, max: usize) -> Result<Vec<AccessRequest>> {
        q::requests(&mut self.reader().await?.conn(), q::REQUESTS_OF, &[requester.into(), q::limit(max).into()]).await
    }

    /// Every pending request, oldest first.
    pub async fn pending_requests(&self, max: usize) -> Result<Vec<AccessRequest>> {
        q::requests(&mut self.reader().await?.conn(), q::PENDING_REQUESTS, &[q::limit(max).into()]).await
    }

    /// Up to `max` pending requests after `after` (the last one's
    /// `pending_until` and id; none: from the first), ending soonest first.
    pub async fn pending_requests_after(
        &self,
        after: Option<(Timestamp, &str)>,
        max: usize,
    ) -> Result<Vec<AccessRequest>> {
        let (until, id) = after.map_or((i64::MIN, ""), |(until, id)| (until.unix_millis(), id));
        q::requests(
            &mut self.reader().await?.conn(),
            q::PENDING_REQUESTS_AFTER,
            &[until.into(), id.into(), q::limit(max).into()],
        )
        .await
    }

    /// Grants, newest deadline first: one owner's, or everybody's.
    pub async fn grants(&self, owner: Option<&str>, include_ended: bool, max: usize) -> Result<Vec<GrantRecord>> {
        let max = Param::Int(q::limit(max));
        let mut reader = self.reader().await?;
        match (owner, include_ended) {
            (Some(owner), false) => q::grants(&mut reader.conn(), q::GRANTS_OF_OWNER_LIVE, &[owner.into(), max]).await,
            (Some(owner), true) => q::grants(&mut reader.conn(), q::GRANTS_OF_OWNER_ALL, &[owner.into(), max]).await,
            (None, false) => q::grants(&mut reader.conn(), q::GRANTS_LIVE, &[max]).await,
            (None, true) => q::grants(&mut reader.conn(), q::GRANTS_ALL, &[max]).await,
        }
    }

    /// Break-glass grants awaiting their review, newest deadline first.
    pub async fn grants_awaiting_review(&self, max: usize) -> Result<Vec<GrantRecord>> {
        q::grants(&mut self.reader().await?.conn(), q::GRANTS_AWAITING_REVIEW, &[Param::Int(q::limit(max))]).await
    }

    /// Which kinds of timed work are due at `now` (see [`DueWork`]), in
    /// one read without locks.
    pub async fn due_work(&self, now: Timestamp) -> Result<DueWork> {
        let mut reader = self.reader().await?;
        let row = reader.conn().query_opt(q::DUE_KINDS, &[now.unix_millis().into()]).await?;
        let flag = |index| row.as_ref().map_or(Ok(false), |row| row.opt_int(index).map(|first| first.is_some()));
        Ok(DueWork { requests: flag(0)?, revocations: flag(1)?, issues: flag(2)? })
    }

    /// When the scheduler has work next: the earliest deadline, request
    /// timeout or revocation retry (the broker's clock), a deadline
    /// another live replica keeps counting `keeper_grace` later; and how
    /// long until another replica's claim lapses and its work may be taken
    /// over. One read.
    pub async fn next_work(&self, keeper_grace: StdDuration) -> Result<(Option<Timestamp>, Option<StdDuration>)> {
        let id = self.replica.id();
        let mut reader = self.reader().await?;
        let row = reader.conn().query_opt(q::NEXT_WORK, &[Param::Text(&id), millis(keeper_grace).into()]).await?;
        let (next, takeover) = match row {
            Some(row) => (row.opt_int(0)?, row.opt_int(1)?),
            None => (None, None),
        };
        Ok((
            next.map(Timestamp::from_unix_millis),
            takeover.map(|ms| StdDuration::from_millis(u64::try_from(ms.max(0)).unwrap_or(0))),
        ))
    }

    /// Audit events after `after` (a sequence number), in order, for verification.
    pub async fn audit_links(&self, after: u64, max: usize) -> Result<Vec<StoredLink>> {
        q::links(&mut self.reader().await?.conn(), q::AUDIT_LINKS, &[q::seq_param(after).into(), q::limit(max).into()])
            .await
    }

    /// Audit records after `after`, in order, for export.
    pub async fn audit_records(&self, after: u64, max: usize) -> Result<Vec<AuditRecord>> {
        self.audit_links(after, max).await?.into_iter().map(q::record_of).collect()
    }

    /// A principal's history: events about their access or by them, newest first.
    pub async fn history(&self, principal: &str, max: usize) -> Result<Vec<AuditRecord>> {
        let links =
            q::links(&mut self.reader().await?.conn(), q::HISTORY, &[principal.into(), q::limit(max).into()]).await?;
        links.into_iter().map(q::record_of).collect()
    }

    /// The audit chain's head: the last event's number and hash (0 and the
    /// genesis hash before the first).
    pub async fn audit_head(&self) -> Result<(u64, String)> {
        let mut reader = self.reader().await?;
        let row = reader
            .conn()
            .query_opt(q::CHAIN_HEAD, &[])
            .await?
            .ok_or_else(|| Error::Internal("the store has no chain head".into()))?;
        Ok((u64::try_from(row.int(0)?).unwrap_or(0), row.text(1)?))
    }

    /// The number of the last event committed (0 before the first).
    pub async fn last_event(&self) -> Result<u64> {
        let last = q::scalar(&mut self.reader().await?.conn(), q::LAST_EVENT, &[]).await?;
        Ok(u64::try_from(last.unwrap_or(0)).unwrap_or(0))
    }

    /// The oldest event still kept, if any.
    pub async fn oldest_event(&self) -> Result<Option<u64>> {
        let oldest = q::scalar(&mut self.reader().await?.conn(), q::OLDEST_EVENT, &[]).await?;
        Ok(oldest.and_then(|seq| u64::try_from(seq).ok()))
    }

    /// Events after `after`, in order, as far as they are known to be on
    /// disk.
    pub async fn events_after(&self, after: u64, max: usize) -> Result<Vec<StoredEvent>> {
        let up_to = match self.engine {
            Engine::Sqlite(_) => self.events.durable.load(Ordering::Acquire),
            // PostgreSQL: read, then a flush barrier before handing them on.
            Engine::Postgres(_) => u64::MAX,
        };
        if up_to <= after {
            return Ok(Vec::new());
        }
        let mut reader = self.reader().await?;
        let rows = reader
            .conn()
            .query(q::EVENTS_AFTER, &[q::seq_param(after).into(), q::seq_param(up_to).into(), q::limit(max).into()])
            .await?;
        // A commit is visible a moment before its WAL flush (group commit):
        // what is handed on is on disk first.
        if let (Reader::Postgres(connection), false) = (&reader, rows.is_empty()) {
            connection.flushed().await?;
        }
        rows.into_iter()
            .map(|mut row| {
                let audience: EventAudience = q::from_doc(&row.take_text(2)?)?;
                Ok(StoredEvent {
                    seq: u64::try_from(row.int(0)?).unwrap_or(0),
                    kind: row.take_text(1)?,
                    audience,
                    json: row.take_text(3)?,
                })
            })
            .collect()
    }

    /// Records that the event follower has handed on every event up to
    /// `seq` (see [`Store::follow_commits`]).
    pub fn followed(&self, seq: u64) {
        self.events.followed.fetch_max(seq, Ordering::AcqRel);
    }

    /// Resolves when events may have been committed after it was enabled
    /// (by this broker; [`Store::follow_commits`] brings other replicas').
    pub fn events_committed(&self) -> tokio::sync::futures::Notified<'_> {
        self.events.notify.notified()
    }

    /// Wakes [`Store::events_committed`] whenever another replica commits
    /// events (PostgreSQL `LISTEN`), until `stop` resolves; reconnects
    /// when the connection drops, and wakes once after each reconnection
    /// in case something was missed meanwhile. A no-op on SQLite.
    pub async fn follow_commits(&self, stop: impl std::future::Future<Output = ()>) {
        let Engine::Postgres(store) = &self.engine else { return stop.await };
        let store = Arc::clone(store);
        let signal = Arc::clone(&self.events);
        let follow = async move {
            loop {
                match store.listen().await {
                    Ok((_client, mut notifications)) => {
                        signal.notify.notify_waiters();
                        while let Some(notification) = notifications.recv().await {
                            // The payload is the last event committed (unreadable: wake anyway).
                            let last = notification.payload().parse::<u64>().unwrap_or(u64::MAX);
                            if last > signal.followed.load(Ordering::Acquire) {
                                signal.notify.notify_waiters();
                            }
                        }
                        tracing::warn!("the store's notification connection closed; reconnecting");
                    }
                    Err(error) => tracing::warn!("cannot listen for the store's events, retrying in 1s: {error}"),
                }
                tokio::time::sleep(StdDuration::from_secs(1)).await;
            }
        };
        tokio::select! {
            () = follow => {}
            () = stop => {}
        }
    }
}

/// Signing keys and shared documents.
impl Store {
    /// Every stored key of `purpose`, by the start of its signing window.
    pub async fn signing_keys(&self, purpose: &str) -> Result<Vec<StoredKey>> {
        let rows = self.reader().await?.conn().query(q::SIGNING_KEYS, &[purpose.into()]).await?;
        rows.into_iter().map(q::stored_key).collect()
    }

    /// Every stored key (for moving a store).
    pub async fn all_signing_keys(&self) -> Result<Vec<StoredKey>> {
        let rows = self.reader().await?.conn().query(q::ALL_SIGNING_KEYS, &[]).await?;
        rows.into_iter().map(q::stored_key).collect()
    }

    /// A provider's shared record, if any.
    pub async fn document(&self, name: &str) -> Result<Option<String>> {
        let row = self.reader().await?.conn().query_opt(q::DOCUMENT, &[name.into()]).await?;
        row.map(|row| row.text(0)).transpose()
    }
}

fn postgres_target(dsn: &str, options: &OpenOptions) -> Result<PgTarget> {
    let mut target = PgTarget::parse(dsn).map_err(|error| Error::Config(format!("store: {error}")))?;
    if let Some(password) = &options.password
        && target.config().get_password().is_none()
    {
        target.config_mut().password(password.as_bytes());
    }
    if target.config().get_connect_timeout().is_none() {
        target.config_mut().connect_timeout(StdDuration::from_secs(5));
    }
    Ok(target)
}
