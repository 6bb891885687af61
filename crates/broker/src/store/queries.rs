//! Every statement the store runs, and how its rows become domain values.
//! One text where both engines agree; PostgreSQL's row locks where it runs
//! transactions side by side (`FOR UPDATE` to read-modify-write one row,
//! `FOR UPDATE SKIP LOCKED` to claim due work that another replica may be
//! claiming at the same moment).

use hourglass_core::audit::{AuditEvent, AuditRecord, StoredLink};
use hourglass_core::{AccessRequest, Grant, GrantId, RequestId, Timestamp};

use super::GrantRecord;
use super::sql::{Conn, Param, Row, Sql, both};
use crate::error::{Error, Result};

// -- requests ----------------------------------------------------------------

pub const REQUEST: Sql = both("SELECT doc FROM requests WHERE id = $1");
pub const REQUEST_FOR_UPDATE: Sql =
    Sql { sqlite: REQUEST.sqlite, postgres: "SELECT doc FROM requests WHERE id = $1 FOR UPDATE" };
pub const REQUEST_MATERIAL: Sql = both("SELECT client_material FROM requests WHERE id = $1");
pub const REQUESTS_OF: Sql =
    both("SELECT doc FROM requests WHERE requester = $1 ORDER BY created_at DESC, id LIMIT $2");
pub const PENDING_REQUESTS: Sql =
    both("SELECT doc FROM requests WHERE state = 'pending' ORDER BY pending_until LIMIT $1");
/// Pending requests after (`pending_until`, `id`) = ($1, $2), in that order: pages of them.
pub const PENDING_REQUESTS_AFTER: Sql = both(
    "SELECT doc FROM requests WHERE state = 'pending' AND (pending_until > $1 OR (pending_until = $1 AND id > $2))
     ORDER BY pending_until, id LIMIT $3",
);
pub const INSERT_REQUEST: Sql = both(
    "INSERT INTO requests (id, requester, resource, role, state, renews, created_at, pending_until, doc, client_material)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
);
pub const UPDATE_REQUEST: Sql = both("UPDATE requests SET state = $1, doc = $2 WHERE id = $3");
pub const PENDING_DUPLICATE: Sql = both(
    "SELECT id FROM requests WHERE requester = $1 AND resource = $2 AND role = $3 AND state = 'pending'
     AND renews IS NULL AND pending_until > $4 LIMIT 1",
);
pub const PENDING_COUNT: Sql =
    both("SELECT count(*) FROM requests WHERE requester = $1 AND state = 'pending' AND pending_until > $2");
/// Pending renewals of the grants whose ids are in the JSON array `$1`,
/// locked until commit: one statement for a whole batch of expiries.
pub const PENDING_RENEWALS: Sql = Sql {
    sqlite: "SELECT doc FROM requests WHERE renews IN (SELECT value FROM json_each($1)) AND state = 'pending'",
    postgres: "SELECT doc FROM requests
               WHERE renews IN (SELECT json_array_elements_text(CAST(CAST($1 AS TEXT) AS json)))
               AND state = 'pending' FOR UPDATE",
};
// What each kind of timed work due at `$1` is, in the order the pass takes
// it: stated once, for the statement that takes it (`DUE_REQUESTS`,
// `DUE_REVOCATIONS`, `INTERRUPTED_ISSUES`) and for [`DUE_KINDS`], which
// must find exactly what they would take. A claim holds while its
// replica's row is alive; revocations and interrupted issues are work
// whose claim is dead (`claimed_by` NULL, or naming a replica whose lease
// lapsed).
macro_rules! claim_lapsed {
    () => {
        "(claimed_by IS NULL OR claimed_by NOT IN (SELECT id FROM replicas WHERE alive_until > hourglass_now_ms()))"
    };
}
macro_rules! requests_due {
    () => {
        "FROM requests WHERE state = 'pending' AND pending_until <= $1 ORDER BY pending_until"
    };
}
macro_rules! revocations_due {
    () => {
        concat!(
            "FROM grants WHERE revocation_due IS NOT NULL AND revocation_due <= $1 AND ",
            claim_lapsed!(),
            " ORDER BY revocation_due"
        )
    };
}
macro_rules! issues_interrupted {
    () => {
        concat!("FROM grants WHERE state = 'issuing' AND expires_at > $1 AND ", claim_lapsed!(), " ORDER BY expires_at")
    };
}

pub const DUE_REQUESTS: Sql = Sql {
    sqlite: concat!("SELECT doc ", requests_due!(), " LIMIT $2"),
    postgres: concat!("SELECT doc ", requests_due!(), " LIMIT $2 FOR UPDATE SKIP LOCKED"),
};

// -- grants ------------------------------------------------------------------

pub const GRANT: Sql = both("SELECT doc, provider_state FROM grants WHERE id = $1");
pub const GRANT_FOR_UPDATE: Sql =
    Sql { sqlite: GRANT.sqlite, postgres: "SELECT doc, provider_state FROM grants WHERE id = $1 FOR UPDATE" };
pub const GRANTS_OF_OWNER_LIVE: Sql = both(
    "SELECT doc, provider_state FROM grants WHERE owner = $1 AND state IN ('issuing', 'active')
     ORDER BY expires_at DESC, id LIMIT $2",
);
pub const GRANTS_OF_OWNER_ALL: Sql =
    both("SELECT doc, provider_state FROM grants WHERE owner = $1 ORDER BY expires_at DESC, id LIMIT $2");
pub const GRANTS_LIVE: Sql = both(
    "SELECT doc, provider_state FROM grants WHERE state IN ('issuing', 'active') ORDER BY expires_at DESC, id LIMIT $1",
);
pub const GRANTS_ALL: Sql = both("SELECT doc, provider_state FROM grants ORDER BY expires_at DESC, id LIMIT $1");
/// `$13` is this replica: it set the deadline, it keeps it.
pub const INSERT_GRANT: Sql = both(
    "INSERT INTO grants (id, request_id, owner, resource, role, state, expires_at, revocation_due, provider_state, doc, claimed_by,
                         awaiting_review, keeper)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
);
/// `$8` is this replica: the grant's keeper once it moves the deadline
/// (a renewal). Both engines read the old row on the right of `SET`.
pub const UPDATE_GRANT: Sql = both(
    "UPDATE grants SET state = $1, expires_at = $2, revocation_due = $3, provider_state = $4, doc = $5, awaiting_review = $7,
                       keeper = CASE WHEN expires_at = $2 THEN keeper ELSE $8 END
     WHERE id = $6",
);
pub const UPDATE_GRANT_CLAIM: Sql = both(
    "UPDATE grants SET state = $1, expires_at = $2, revocation_due = $3, provider_state = $4, doc = $5, awaiting_review = $7,
                       keeper = CASE WHEN expires_at = $2 THEN keeper ELSE $8 END, claimed_by = $9
     WHERE id = $6",
);
/// Break-glass grants not reviewed yet, newest deadline first.
pub const GRANTS_AWAITING_REVIEW: Sql =
    both("SELECT doc, provider_state FROM grants WHERE awaiting_review = 1 ORDER BY expires_at DESC, id LIMIT $1");
pub const LIVE_GRANT: Sql = both(
    "SELECT doc, provider_state FROM grants WHERE owner = $1 AND resource = $2 AND role = $3
     AND state IN ('issuing', 'active') AND expires_at > $4 LIMIT 1",
);
pub const LIVE_GRANTS_ON: Sql = Sql {
    sqlite: "SELECT doc, provider_state FROM grants WHERE state IN ('issuing', 'active') AND resource = $1
             AND ($2 IS NULL OR role = $2) AND ($3 IS NULL OR owner = $3) ORDER BY expires_at, id",
    postgres: "SELECT doc, provider_state FROM grants WHERE state IN ('issuing', 'active') AND resource = $1
               AND (CAST($2 AS TEXT) IS NULL OR role = $2) AND (CAST($3 AS TEXT) IS NULL OR owner = $3)
               ORDER BY expires_at, id FOR UPDATE",
};

/// Live grants past their deadline, each with whether a renewal of it is
/// pending (the expiry withdraws those, and reads them only when there are
/// any: most grants end without one).
pub const DUE_GRANTS: Sql = Sql {
    sqlite: "SELECT g.doc, g.provider_state,
                    EXISTS (SELECT 1 FROM requests r WHERE r.renews = g.id AND r.state = 'pending')
             FROM grants g WHERE g.state IN ('issuing', 'active') AND g.expires_at <= $1
             ORDER BY g.expires_at LIMIT $2",
    postgres: "SELECT g.doc, g.provider_state,
                      EXISTS (SELECT 1 FROM requests r WHERE r.renews = g.id AND r.state = 'pending')
               FROM grants g WHERE g.state IN ('issuing', 'active') AND g.expires_at <= $1
               ORDER BY g.expires_at LIMIT $2 FOR UPDATE OF g SKIP LOCKED",
};
pub const DUE_REVOCATIONS: Sql = Sql {
    sqlite: concat!("SELECT doc, provider_state ", revocations_due!(), " LIMIT $2"),
    postgres: concat!("SELECT doc, provider_state ", revocations_due!(), " LIMIT $2 FOR UPDATE SKIP LOCKED"),
};
pub const INTERRUPTED_ISSUES: Sql = Sql {
    sqlite: concat!("SELECT doc, provider_state ", issues_interrupted!(), " LIMIT $2"),
    postgres: concat!("SELECT doc, provider_state ", issues_interrupted!(), " LIMIT $2 FOR UPDATE SKIP LOCKED"),
};
/// Revocations not due before `$1`: waiting out a backoff, or leased by a
/// broker before version 3 (which leased by pushing the due time).
pub const LEASED_REVOCATIONS: Sql = both(
    "SELECT doc, provider_state FROM grants WHERE revocation_due IS NOT NULL AND revocation_due > $1
     ORDER BY revocation_due LIMIT $2",
);
/// Whether `$2` (this replica) holds the claim on grant `$1`, its lease
/// alive at this moment on the database's clock.
pub const HOLDS_CLAIM: Sql = both(
    "SELECT count(*) FROM grants g JOIN replicas r ON r.id = g.claimed_by
     WHERE g.id = $1 AND g.claimed_by = $2 AND r.alive_until > hourglass_now_ms()",
);

/// Of the grants whose ids are in the JSON array `$1`, those `$2` (this
/// replica) still holds the claim on, its lease alive now; locked until
/// commit. The transaction recording claimed work reads them so, in one
/// statement for a whole batch.
pub const CLAIMED_GRANTS: Sql = Sql {
    sqlite: "SELECT g.doc, g.provider_state FROM grants g JOIN replicas r ON r.id = g.claimed_by
             WHERE g.id IN (SELECT value FROM json_each($1)) AND g.claimed_by = $2
             AND r.alive_until > hourglass_now_ms()",
    postgres: "SELECT g.doc, g.provider_state FROM grants g JOIN replicas r ON r.id = g.claimed_by
               WHERE g.id IN (SELECT json_array_elements_text(CAST(CAST($1 AS TEXT) AS json))) AND g.claimed_by = $2
               AND r.alive_until > hourglass_now_ms() FOR UPDATE OF g",
};

/// Which kinds of timed work besides expiring grants are due at `$1`, in
/// one read without locks: the first request past its timeout, revocation
/// due that nobody works on, and issue a stopped replica left (NULL: none).
/// The scheduler's pass opens a transaction only for a kind that has some
/// (rows another replica is taking meanwhile are skipped there). Each is
/// read in its index's order, as the pass reads them, so that PostgreSQL
/// plans each on its index even on an empty store.
pub const DUE_KINDS: Sql = both(concat!(
    "SELECT (SELECT pending_until ",
    requests_due!(),
    " LIMIT 1), (SELECT revocation_due ",
    revocations_due!(),
    " LIMIT 1), (SELECT expires_at ",
    issues_interrupted!(),
    " LIMIT 1)"
));

/// The replicas holding claims on grants, each found by one step along
/// `grants_claimed` (a loose index scan), for [`NEXT_WORK`].
macro_rules! claimers {
    () => {
        "WITH RECURSIVE claimers(id) AS (
            SELECT (SELECT claimed_by FROM grants WHERE claimed_by IS NOT NULL ORDER BY claimed_by LIMIT 1)
            UNION ALL
            SELECT (SELECT g.claimed_by FROM grants g WHERE g.claimed_by > c.id ORDER BY g.claimed_by LIMIT 1)
            FROM claimers c WHERE c.id IS NOT NULL
        )
        "
    };
}

/// [`NEXT_WORK`]'s second column: until the first claim of another replica
/// may be taken over (its row gone: at once).
macro_rules! takeover {
    () => {
        "(SELECT MIN(COALESCE((SELECT r.alive_until FROM replicas r WHERE r.id = c.id) - hourglass_now_ms(), 0))
          FROM claimers c WHERE c.id IS NOT NULL AND c.id <> $1)"
    };
}

/// [`NEXT_WORK`] around each engine's look at grants (`$grants`, a column
/// `t` of deadlines): request timeouts and unclaimed revocations beside
/// it, then `takeover!`.
macro_rules! next_look {
    ($grants:literal) => {
        concat!(
            claimers!(),
            "SELECT (SELECT MIN(t) FROM (",
            $grants,
            "
                UNION ALL SELECT (SELECT pending_until FROM requests WHERE state = 'pending'
                                  ORDER BY pending_until LIMIT 1)
                UNION ALL SELECT (SELECT revocation_due FROM grants WHERE revocation_due IS NOT NULL AND claimed_by IS NULL
                                  ORDER BY revocation_due LIMIT 1)
            ) AS due),",
            takeover!()
        )
    };
}

/// When `$1` (this replica) has work next, and how soon another replica's
/// claim may lapse, in one read. Each part reads the first entry of an
/// index in its order, so that PostgreSQL plans it so even on an empty
/// store (a plan it keeps for the statement): none reads every grant.
///
/// The first: the earliest deadline, request timeout or unclaimed
/// revocation (the broker's clock). On PostgreSQL a live grant counts at
/// its deadline when this replica keeps it, nobody does (''), or its
/// keeper's lease lapsed (`grants_kept`, one lookup per replica gone); one
/// another live replica keeps counts `$2` ms later: its keeper expires it
/// on time, and this replica looks only in case the keeper fell behind.
/// SQLite has one broker: every deadline is its own.
///
/// The second: in how many ms (the database's clock) the first claim of
/// another replica lapses, if it is alive: 0 if one already has. The
/// replicas holding claims are few: they are found one by one along
/// `grants_claimed`, not by reading the grants.
pub const NEXT_WORK: Sql = Sql {
    sqlite: next_look!(
        "SELECT (SELECT expires_at FROM grants WHERE state IN ('issuing', 'active')
                 ORDER BY expires_at LIMIT 1) AS t"
    ),
    postgres: next_look!(
        "SELECT (SELECT expires_at FROM grants WHERE state IN ('issuing', 'active') AND keeper = $1
                 ORDER BY expires_at LIMIT 1) AS t
         UNION ALL SELECT (SELECT expires_at FROM grants WHERE state IN ('issuing', 'active') AND keeper = ''
                           ORDER BY expires_at LIMIT 1)
         UNION ALL SELECT MIN((SELECT g.expires_at FROM grants g
                               WHERE g.state IN ('issuing', 'active') AND g.keeper = r.id
                               ORDER BY g.expires_at LIMIT 1))
                   FROM replicas r WHERE r.alive_until <= hourglass_now_ms()
         UNION ALL SELECT (SELECT expires_at FROM grants WHERE state IN ('issuing', 'active')
                           ORDER BY expires_at LIMIT 1) + $2"
    ),
};

/// Transactions taking the same name's turn run one at a time (PostgreSQL
/// only: SQLite has one writer).
pub const TAKE_TURN: Sql = Sql { sqlite: "", postgres: "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))" };

// -- audit and events --------------------------------------------------------

/// The chain's head (SQLite's one writer holds it until commit).
pub const CHAIN_HEAD: Sql = both("SELECT audit_seq, audit_hash, event_seq FROM chain WHERE id = 1");
pub const UPDATE_CHAIN: Sql = both("UPDATE chain SET audit_seq = $1, audit_hash = $2, event_seq = $3 WHERE id = 1");
pub const INSERT_AUDIT: Sql = both(
    "INSERT INTO audit (seq, at, actor, action, target, subject, event, prev_hash, hash)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
);
pub const INSERT_EVENT: Sql = both("INSERT INTO events (seq, at, kind, audience, event) VALUES ($1, $2, $3, $4, $5)");
/// Appends a commit's audit events and published events on PostgreSQL
/// (schema version 5's `hourglass_append`); SQLite's are appended by the
/// broker (`INSERT_AUDIT`, `INSERT_EVENT`, `UPDATE_CHAIN`).
pub const APPEND: Sql = Sql { sqlite: "", postgres: "SELECT seq, prev_hash, hash FROM hourglass_append($1, $2)" };
pub const AUDIT_LINKS: Sql = both("SELECT seq, event, prev_hash, hash FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2");
/// By subject and by actor apart, each from its own index, then merged:
/// an `OR` would scan the whole log backwards for a quiet principal.
pub const HISTORY: Sql = both(
    "SELECT seq, event, prev_hash, hash FROM (
        SELECT * FROM (SELECT seq, event, prev_hash, hash FROM audit WHERE subject = $1 ORDER BY seq DESC LIMIT $2) AS s
        UNION
        SELECT * FROM (SELECT seq, event, prev_hash, hash FROM audit WHERE actor = $1 ORDER BY seq DESC LIMIT $2) AS a
     ) AS h ORDER BY seq DESC LIMIT $2",
);
pub const EVENTS_AFTER: Sql =
    both("SELECT seq, kind, audience, event FROM events WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3");
pub const LAST_EVENT: Sql = both("SELECT event_seq FROM chain WHERE id = 1");
pub const OLDEST_EVENT: Sql = both("SELECT MIN(seq) FROM events");
pub const PRUNE_EVENTS: Sql = both("DELETE FROM events WHERE at < $1");

// -- replicas ----------------------------------------------------------------

pub const REGISTER_REPLICA: Sql = both(
    "INSERT INTO replicas (id, host, pid, started_at, alive_until)
     VALUES ($1, $2, $3, hourglass_now_ms(), hourglass_now_ms() + $4)",
);
/// Renews a lease that has not lapsed: a lapsed one is gone for good.
pub const RENEW_REPLICA: Sql = both(
    "UPDATE replicas SET alive_until = hourglass_now_ms() + $2 WHERE id = $1 AND alive_until > hourglass_now_ms()",
);
pub const RETIRE_REPLICA: Sql = both("UPDATE replicas SET alive_until = 0 WHERE id = $1");
pub const FORGET_OTHER_REPLICAS: Sql = both("DELETE FROM replicas WHERE id <> $1");
pub const PRUNE_REPLICAS: Sql = both("DELETE FROM replicas WHERE alive_until < hourglass_now_ms() - $1");
/// The live grants of the replicas [`PRUNE_REPLICAS`] removes are nobody's
/// to keep: every replica's at their deadlines.
pub const FORGET_KEEPERS: Sql = both(
    "UPDATE grants SET keeper = '' WHERE state IN ('issuing', 'active')
     AND keeper IN (SELECT id FROM replicas WHERE alive_until < hourglass_now_ms() - $1)",
);
pub const LIVE_REPLICAS: Sql = both("SELECT count(*) FROM replicas WHERE alive_until > hourglass_now_ms()");
pub const REPLICA_ALIVE: Sql = both("SELECT count(*) FROM replicas WHERE id = $1 AND alive_until > hourglass_now_ms()");

// -- keys and documents ------------------------------------------------------

pub const SIGNING_KEYS: Sql = both(
    "SELECT kid, purpose, public_key, sealed_private, sealed_with, created_at, signs_from, signs_until, verifies_until
     FROM signing_keys WHERE purpose = $1 ORDER BY signs_from, kid",
);
pub const ALL_SIGNING_KEYS: Sql = both(
    "SELECT kid, purpose, public_key, sealed_private, sealed_with, created_at, signs_from, signs_until, verifies_until
     FROM signing_keys ORDER BY purpose, signs_from, kid",
);
pub const INSERT_SIGNING_KEY: Sql = both(
    "INSERT INTO signing_keys (kid, purpose, public_key, sealed_private, sealed_with, created_at, signs_from, signs_until, verifies_until)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
);
/// Ends a key's signing window at `$2` (it keeps verifying until `$3`).
pub const RETIRE_SIGNING_KEY: Sql =
    both("UPDATE signing_keys SET signs_until = $2, verifies_until = $3 WHERE kid = $1");
pub const DOCUMENT: Sql = both("SELECT doc FROM documents WHERE name = $1");
pub const DOCUMENT_FOR_UPDATE: Sql =
    Sql { sqlite: DOCUMENT.sqlite, postgres: "SELECT doc FROM documents WHERE name = $1 FOR UPDATE" };
pub const PUT_DOCUMENT: Sql =
    both("INSERT INTO documents (name, doc) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET doc = excluded.doc");

// -- rows --------------------------------------------------------------------

/// A stored JSON document.
pub fn from_doc<T: serde::de::DeserializeOwned>(doc: &str) -> Result<T> {
    serde_json::from_str(doc).map_err(|error| Error::Internal(format!("stored document does not parse: {error}")))
}

pub fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|error| Error::Internal(format!("serializing: {error}")))
}

pub fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// The requests `sql` selects (first column: doc).
pub async fn requests(conn: &mut Conn<'_>, sql: Sql, params: &[Param<'_>]) -> Result<Vec<AccessRequest>> {
    let rows = conn.query(sql, params).await?;
    rows.into_iter().map(|mut row| from_doc(&row.take_text(0)?)).collect()
}

pub async fn request(conn: &mut Conn<'_>, sql: Sql, id: &RequestId) -> Result<Option<AccessRequest>> {
    Ok(requests(conn, sql, &[id.as_str().into()]).await?.pop())
}

/// The grants `sql` selects (columns: doc, provider_state).
pub async fn grants(conn: &mut Conn<'_>, sql: Sql, params: &[Param<'_>]) -> Result<Vec<GrantRecord>> {
    let rows = conn.query(sql, params).await?;
    rows.into_iter().map(grant_of).collect()
}

pub async fn grant(conn: &mut Conn<'_>, sql: Sql, id: &GrantId) -> Result<Option<GrantRecord>> {
    Ok(grants(conn, sql, &[id.as_str().into()]).await?.pop())
}

pub fn grant_of(mut row: Row) -> Result<GrantRecord> {
    Ok(GrantRecord {
        grant: from_doc::<Grant>(&row.take_text(0)?)?,
        provider_state: serde_json::from_str(&row.take_text(1)?)
            .map_err(|error| Error::Internal(format!("stored provider state does not parse: {error}")))?,
    })
}

/// Audit links `sql` selects (columns: seq, event, prev_hash, hash).
pub async fn links(conn: &mut Conn<'_>, sql: Sql, params: &[Param<'_>]) -> Result<Vec<StoredLink>> {
    let rows = conn.query(sql, params).await?;
    rows.into_iter()
        .map(|mut row| {
            Ok(StoredLink {
                seq: u64::try_from(row.int(0)?).unwrap_or(0),
                canonical: row.take_text(1)?,
                prev_hash: row.take_text(2)?,
                hash: row.take_text(3)?,
            })
        })
        .collect()
}

pub fn record_of(link: StoredLink) -> Result<AuditRecord> {
    let event: AuditEvent = serde_json::from_str(&link.canonical)
        .map_err(|error| Error::Internal(format!("audit event {} does not parse: {error}", link.seq)))?;
    Ok(AuditRecord { event, prev_hash: link.prev_hash, hash: link.hash })
}

/// The one integer a statement selects (NULL as none).
pub async fn scalar(conn: &mut Conn<'_>, sql: Sql, params: &[Param<'_>]) -> Result<Option<i64>> {
    match conn.query_opt(sql, params).await? {
        Some(row) => row.opt_int(0),
        None => Ok(None),
    }
}

pub fn stored_key(mut row: Row) -> Result<super::StoredKey> {
    Ok(super::StoredKey {
        kid: row.take_text(0)?,
        purpose: row.take_text(1)?,
        public_key: row.take_text(2)?,
        sealed_private: row.take_text(3)?,
        sealed_with: row.take_text(4)?,
        created_at: Timestamp::from_unix_millis(row.int(5)?),
        signs_from: Timestamp::from_unix_millis(row.int(6)?),
        signs_until: Timestamp::from_unix_millis(row.int(7)?),
        verifies_until: Timestamp::from_unix_millis(row.int(8)?),
    })
}
