//! PostgreSQL: a login role per grant.
//!
//! Issue creates `hg_<user>_<grant>` with `LOGIN`, `VALID UNTIL` the
//! deadline, the SCRAM-SHA-256 verifier the client sent (the password never
//! leaves the client) and membership in the roles the policy maps. Renew moves
//! `VALID UNTIL`. Revoke stops new logins, terminates the role's sessions
//! (`VALID UNTIL` does not end them), revokes its memberships, drops or
//! reassigns what it owns, drops the role, and then checks that the role and
//! every session of it are gone. Each step is verified on the server and the
//! checks go to the audit log.
//!
//! The admin connection string comes from an environment variable or a file,
//! never from the policy, and is never logged. Every identifier and literal in
//! the SQL is escaped; the role name itself is built from safe characters only.
//!
//! The admin role needs `CREATEROLE`, the right to grant the mapped roles, and
//! `pg_signal_backend` (or superuser) to terminate sessions. The admin
//! connection goes to the resource's `database`: objects a grant's role
//! created there are dropped or reassigned at revocation; objects it may
//! have created in other databases of the cluster are not (PostgreSQL scopes
//! `DROP OWNED` to one database), and then dropping the role fails loudly
//! and is retried, rather than leaving an orphan silently.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use base64::Engine;
use hourglass_core::api::{ClientMaterial, ClientSecret, Credential, EnvVar};
use hourglass_core::{Duration, Grant, Timestamp};
use hourglass_policy::Resource;
use postgres_protocol::escape::{escape_identifier, escape_literal};
use serde::{Deserialize, Serialize};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Statement};

use zeroize::Zeroizing;

use crate::pg::{PgTarget, describe_error};
use crate::pool::{self, Pool};

use super::{IssueInput, Issued, MaterialKind, Provider, ProviderError, Verification};

pub const KIND: &str = "postgres";

/// Admin connections per resource, at most; idle ones are kept. Work
/// beyond that waits for one rather than opening more: a new connection
/// costs a SCRAM login (milliseconds of CPU on both sides) and a server
/// process, and the scheduler revokes up to 64 grants at once. (Below it,
/// too, a burst mostly waits for connections in use: `pool.rs`.)
const CONNECTIONS: usize = 8;
/// How long revocation waits for terminated sessions to exit.
const SESSION_EXIT_WAIT: StdDuration = StdDuration::from_secs(5);

/// `[resources.NAME.settings]` for `provider = "postgres"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The environment variable holding the admin connection string.
    admin_dsn_env: Option<String>,
    /// Or a file holding it (readable by the broker only).
    admin_dsn_file: Option<PathBuf>,
    /// Where clients connect; by default where the admin connection goes.
    host: Option<String>,
    port: Option<u16>,
    database: Option<String>,
    /// Exported to clients as `PGSSLMODE`.
    sslmode: Option<String>,
    /// What happens to objects a grant's role created: `drop` (the default)
    /// or `reassign:<role>`.
    owned_objects: Option<String>,
    connect_timeout: Option<Duration>,
    /// `CONNECTION LIMIT` of each grant's role.
    connection_limit: Option<u32>,
}

/// `[resources.NAME.roles.ROLE.settings]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleSettings {
    /// Database roles the grant's login role becomes a member of.
    grant: Vec<String>,
}

enum Owned {
    Drop,
    Reassign(String),
}

impl Settings {
    fn parse(resource: &Resource) -> Result<Settings, String> {
        let settings: Settings =
            resource.settings.clone().try_into().map_err(|e: toml::de::Error| e.message().to_owned())?;
        match (&settings.admin_dsn_env, &settings.admin_dsn_file) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => return Err("set exactly one of admin_dsn_env or admin_dsn_file (never the DSN itself)".into()),
        }
        if let Some(name) = &settings.admin_dsn_env
            && !super::is_env_name(name)
        {
            return Err(format!("admin_dsn_env \"{name}\" is not an environment variable name"));
        }
        settings.owned()?;
        if let Some(mode) = &settings.sslmode
            && !["disable", "allow", "prefer", "require", "verify-ca", "verify-full"].contains(&mode.as_str())
        {
            return Err(format!("sslmode \"{mode}\" is not a PostgreSQL sslmode"));
        }
        Ok(settings)
    }

    fn owned(&self) -> Result<Owned, String> {
        match self.owned_objects.as_deref() {
            None | Some("drop") => Ok(Owned::Drop),
            Some(other) => match other.strip_prefix("reassign:") {
                Some(role) if !role.is_empty() => Ok(Owned::Reassign(role.to_owned())),
                _ => Err(format!("owned_objects \"{other}\" must be \"drop\" or \"reassign:<role>\"")),
            },
        }
    }

    /// The admin connection string. Read at each connection so that a
    /// rotated secret is picked up; never logged, never in an error.
    fn admin_dsn(&self) -> Result<Zeroizing<String>, String> {
        if let Some(name) = &self.admin_dsn_env {
            return match std::env::var(name) {
                Ok(value) if !value.trim().is_empty() => Ok(Zeroizing::new(value)),
                _ => Err(format!("environment variable {name} (the admin connection string) is not set")),
            };
        }
        let Some(path) = &self.admin_dsn_file else { return Err("no admin connection string configured".into()) };
        std::fs::read_to_string(path).map(|text| Zeroizing::new(text.trim().to_owned())).map_err(|error| {
            format!("cannot read the admin connection string from {}: {}", path.display(), error.kind())
        })
    }

    /// The admin connection's server and TLS (`sslmode`, `sslrootcert` of
    /// the admin connection string, as libpq reads them: `pg.rs`).
    fn admin_target(&self) -> Result<PgTarget, String> {
        let dsn = self.admin_dsn()?;
        let mut target = PgTarget::parse(&dsn).map_err(|error| format!("the admin connection string: {error}"))?;
        let config = target.config_mut();
        config.connect_timeout(self.connect_timeout.map_or(StdDuration::from_secs(5), Duration::as_std));
        // Ownership is per database: DROP/REASSIGN OWNED only see the
        // database connected to, so administer the one clients use.
        if let Some(database) = &self.database {
            config.dbname(database);
        }
        Ok(target)
    }
}

impl RoleSettings {
    fn parse(settings: &toml::Table) -> Result<RoleSettings, String> {
        let parsed: RoleSettings = settings.clone().try_into().map_err(|e: toml::de::Error| e.message().to_owned())?;
        if parsed.grant.is_empty() {
            return Err("settings.grant must name the database roles this role grants".into());
        }
        if let Some(bad) = parsed.grant.iter().find(|r| r.is_empty() || r.len() > 63) {
            return Err(format!("\"{bad}\" is not a PostgreSQL role name (1 to 63 bytes)"));
        }
        Ok(parsed)
    }
}

/// What the provider keeps with the grant: how to find the role again.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    role: String,
    member_of: Vec<String>,
    host: String,
    port: u16,
    database: String,
    #[serde(default)]
    sslmode: Option<String>,
    /// The admin connection's source, so that revocation works even if the
    /// resource has left the policy since.
    admin_dsn_env: Option<String>,
    admin_dsn_file: Option<PathBuf>,
    owned_objects: Option<String>,
    connect_timeout: Option<Duration>,
}

impl State {
    fn settings(&self) -> Settings {
        Settings {
            admin_dsn_env: self.admin_dsn_env.clone(),
            admin_dsn_file: self.admin_dsn_file.clone(),
            database: Some(self.database.clone()),
            owned_objects: self.owned_objects.clone(),
            connect_timeout: self.connect_timeout,
            ..Settings::default()
        }
    }
}

/// `hg_alice_7k2m9x4q3t`: safe characters only, unique per grant, within
/// PostgreSQL's 63-byte limit.
pub fn role_name(owner: &str, grant: &Grant) -> String {
    let user: String = owner
        .split('@')
        .next()
        .unwrap_or(owner)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .take(20)
        .collect();
    let suffix = grant.id.as_str().trim_start_matches(hourglass_core::GrantId::PREFIX);
    format!("hg_{user}_{suffix}")
}

/// The most SCRAM rounds a client-made verifier may ask for: PostgreSQL's
/// own default.
const MAX_SCRAM_ITERATIONS: u32 = 4096;

/// Checks the shape of a SCRAM-SHA-256 verifier, so that a password sent
/// by mistake is refused rather than stored (PostgreSQL would hash it, and
/// the broker would have seen it).
///
/// Rounds only slow down guessing a weak password, which a verifier cannot
/// reveal, and Hourglass's clients send one round over 256 random bits
/// (see `hourglass_client::material`); at most [`MAX_SCRAM_ITERATIONS`] are
/// taken, since the count is the requester's choice and every login to the
/// role pays for it (2^31 rounds is minutes of a core on each side).
fn check_verifier(verifier: &str) -> Result<(), String> {
    let refuse = || {
        "postgres_scram_verifier is not a SCRAM-SHA-256 verifier (SCRAM-SHA-256$<iterations>:<salt>$<stored key>:<server key>); \
         send the verifier, never the password"
            .to_owned()
    };
    let rest = verifier.strip_prefix("SCRAM-SHA-256$").ok_or_else(refuse)?;
    let (params, keys) = rest.split_once('$').ok_or_else(refuse)?;
    let (iterations, salt) = params.split_once(':').ok_or_else(refuse)?;
    let (stored, server) = keys.split_once(':').ok_or_else(refuse)?;
    let iterations = iterations.parse::<std::num::NonZeroU32>().map_err(|_| refuse())?;
    if iterations.get() > MAX_SCRAM_ITERATIONS {
        return Err(format!(
            "postgres_scram_verifier asks for {iterations} SCRAM rounds; at most {MAX_SCRAM_ITERATIONS} are accepted \
             (PostgreSQL's own default is 4096; Hourglass's clients use 1 over a random password)"
        ));
    }
    let decode = |text: &str| base64::engine::general_purpose::STANDARD.decode(text).map_err(|_| refuse());
    if decode(salt)?.len() < 16 || decode(stored)?.len() != 32 || decode(server)?.len() != 32 {
        return Err(refuse());
    }
    Ok(())
}

#[derive(Default)]
pub struct PostgresProvider {
    /// Admin connections, by resource.
    pools: Mutex<HashMap<String, Arc<Pool<Admin>>>>,
}

impl pool::Connection for Admin {
    fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

/// An admin connection and the queries the provider runs on it, prepared
/// once per connection: planning the `pg_roles` and `pg_stat_activity`
/// queries costs more than running them.
struct Admin {
    client: Client,
    /// Where it goes, and with which TLS: cancel requests go the same way.
    target: PgTarget,
    role_facts: Statement,
    /// Sessions of a role: found, and of those terminated.
    terminate: Statement,
    session_count: Statement,
    /// `server_version_num`: 160000 and up can grant a membership that
    /// cannot `SET ROLE`.
    server_version: u32,
    /// Whether a role exists, and its sessions.
    leftovers: Statement,
}

const ROLE_FACTS: &str = "SELECT r.rolcanlogin,
        (extract(epoch FROM r.rolvaliduntil) * 1000)::float8,
        ARRAY(SELECT b.rolname::text FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid
              WHERE m.member = r.oid ORDER BY 1)
    FROM pg_roles r WHERE r.rolname = $1";
const TERMINATE: &str =
    "SELECT count(*), count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = $1";
const SESSION_COUNT: &str = "SELECT count(*) FROM pg_stat_activity WHERE usename = $1";
/// Set on each admin connection: should the broker die mid-statement (the
/// statement waiting on a lock, say), the server notices within a second
/// that nobody waits for the answer and rolls the statement back, rather
/// than committing a role nobody recorded (PostgreSQL 14 and later).
const SESSION_SETTINGS: &str = "SELECT set_config('client_connection_check_interval', '1000', false)
    WHERE current_setting('server_version_num')::int >= 140000";
const SERVER_VERSION: &str = "SELECT current_setting('server_version_num')::int";
const LEFTOVERS: &str = "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1),
        (SELECT count(*) FROM pg_stat_activity WHERE usename = $1)";

fn failed(resource: &str, message: impl Into<String>) -> ProviderError {
    ProviderError::failed(resource, message)
}

impl PostgresProvider {
    fn pool(&self, resource: &str) -> Arc<Pool<Admin>> {
        let mut pools = self.pools.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        pools.entry(resource.to_owned()).or_insert_with(|| Pool::new(CONNECTIONS)).clone()
    }

    /// Opens an admin connection (owning what it needs: the pool may open
    /// it in the background).
    fn connect(
        resource: &str,
        settings: &Settings,
    ) -> impl Future<Output = Result<Admin, ProviderError>> + Send + 'static {
        let (resource, target) = (resource.to_owned(), settings.admin_target());
        async move {
            let target = target.map_err(|message| failed(&resource, message))?;
            Self::open_admin(&resource, target).await
        }
    }

    async fn open_admin(resource: &str, target: PgTarget) -> Result<Admin, ProviderError> {
        let client = target.connect().await.map_err(|error| {
            let server = target.describe();
            failed(resource, format!("cannot connect to the database server at {server}: {}", describe_error(&error)))
        })?;
        // Sent together: one round trip, not six.
        let (role_facts, terminate, session_count, leftovers, (), version) = tokio::try_join!(
            client.prepare(ROLE_FACTS),
            client.prepare(TERMINATE),
            client.prepare(SESSION_COUNT),
            client.prepare(LEFTOVERS),
            client.batch_execute(SESSION_SETTINGS),
            client.query_one(SERVER_VERSION, &[]),
        )
        .map_err(|error| failed(resource, format!("preparing the admin queries: {}", describe_error(&error))))?;
        let server_version = u32::try_from(version.try_get::<_, i32>(0).unwrap_or(0)).unwrap_or(0);
        Ok(Admin { client, target, role_facts, terminate, session_count, leftovers, server_version })
    }

    /// Runs `work` on an admin connection (see `pool.rs`: an idle one, a new
    /// one, or the first to come back) and keeps the connection if the work
    /// succeeded.
    async fn with_admin<T>(
        &self,
        resource: &str,
        settings: &Settings,
        work: impl AsyncFnOnce(&mut Admin) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        let mut at_work = AtWork(Some(self.pool(resource).get(|| Self::connect(resource, settings)).await?));
        let admin = at_work.0.as_mut().unwrap_or_else(|| unreachable!("set just above"));
        // Should the broker give up on this work (its provider timeout),
        // the statement running is cancelled at the server, not left to
        // commit later what the broker no longer expects.
        let cancel = CancelOnDrop(Some((admin.target.clone(), admin.client.cancel_token())));
        let result = work(admin).await;
        cancel.disarm();
        if result.is_ok() {
            // Back to the pool.
            drop(at_work.0.take());
        }
        result
    }
}

/// An admin connection at work: given back to the pool only when the work
/// succeeded. Work that failed, or was abandoned at the provider timeout,
/// closes it: an abandoned statement may still be running, and the cancel
/// request sent for it must never reach the next caller's.
struct AtWork(Option<pool::Pooled<Admin>>);

impl Drop for AtWork {
    fn drop(&mut self) {
        if let Some(admin) = self.0.take() {
            admin.discard();
        }
    }
}

/// Cancels the statement in progress on a connection when dropped armed.
struct CancelOnDrop(Option<(PgTarget, tokio_postgres::CancelToken)>);

impl CancelOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some((target, token)) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if let Err(error) = target.cancel(token).await {
                    tracing::warn!("cancelling an abandoned statement failed: {}", describe_error(&error));
                }
            });
        }
    }
}

/// What the server says about a role: whether it exists, can log in, until
/// when, and the roles it belongs to.
struct RoleFacts {
    can_login: bool,
    /// Unix milliseconds of `VALID UNTIL`, if set.
    valid_until: Option<i64>,
    member_of: Vec<String>,
}

async fn role_facts(admin: &Admin, resource: &str, role: &str) -> Result<Option<RoleFacts>, ProviderError> {
    let row = admin
        .client
        .query_opt(&admin.role_facts, &[&role])
        .await
        .map_err(|error| failed(resource, format!("reading role {role}: {}", describe_error(&error))))?;
    Ok(row.map(|row| RoleFacts {
        can_login: row.get(0),
        valid_until: row.get::<_, Option<f64>>(1).map(|millis| millis.round() as i64),
        member_of: row.get(2),
    }))
}

/// Runs `statements` and reads `role` back in one round trip: the query is
/// sent behind the statements on the same connection, and the server runs
/// it once they have ended. Both outcomes are returned; the read is only
/// meaningful when the statements succeeded.
async fn execute_and_read_back(
    admin: &Admin,
    resource: &str,
    statements: &str,
    role: &str,
) -> (Result<(), tokio_postgres::Error>, Result<Option<RoleFacts>, ProviderError>) {
    tokio::join!(admin.client.batch_execute(statements), role_facts(admin, resource, role))
}

async fn session_count(admin: &Admin, resource: &str, role: &str) -> Result<i64, ProviderError> {
    let row = admin
        .client
        .query_one(&admin.session_count, &[&role])
        .await
        .map_err(|error| failed(resource, format!("counting sessions of {role}: {}", describe_error(&error))))?;
    Ok(row.get(0))
}

/// Checks that the role is what issue or renew made it: able to log in,
/// valid until the deadline, member of the mapped roles.
fn verify_role(
    resource: &str,
    role: &str,
    facts: Option<RoleFacts>,
    deadline: Timestamp,
    grants: &[String],
) -> Result<Verification, ProviderError> {
    let Some(facts) = facts else {
        return Err(failed(resource, format!("role {role} is missing after it was created")));
    };
    if !facts.can_login {
        return Err(failed(resource, format!("role {role} cannot log in")));
    }
    if facts.valid_until != Some(deadline.unix_millis()) {
        return Err(failed(resource, format!("role {role} is not valid until {deadline} as set")));
    }
    if let Some(missing) = grants.iter().find(|g| !facts.member_of.contains(g)) {
        return Err(failed(resource, format!("role {role} is not a member of {missing}")));
    }
    let mut verification = Verification::new();
    verification.insert("role".into(), role.into());
    verification.insert("can_login".into(), true.into());
    verification.insert("valid_until".into(), deadline.to_string().into());
    verification.insert("member_of".into(), facts.member_of.into());
    Ok(verification)
}

/// Whether the server can grant a membership without `SET ROLE`
/// (PostgreSQL 16 and later).
fn membership_without_set(server_version: u32) -> bool {
    server_version >= 160_000
}

/// `; GRANT mapped TO role`. From PostgreSQL 16 on, `WITH INHERIT TRUE, SET
/// FALSE`: the grant's role uses the mapped role's privileges but cannot
/// become it, so it cannot create objects the mapped role owns, which would
/// outlive the grant. Older servers have no such option: there it can (the
/// grant's verification says `can_set_role`).
fn membership(granted: &str, role: &str, server_version: u32) -> String {
    let granted = escape_identifier(granted);
    if membership_without_set(server_version) {
        format!("; GRANT {granted} TO {role} WITH INHERIT TRUE, SET FALSE")
    } else {
        format!("; GRANT {granted} TO {role}")
    }
}

/// `VALID UNTIL` literal for a deadline.
fn until(deadline: Timestamp) -> String {
    escape_literal(&deadline.to_string())
}

/// What issuing `input` creates, known before anything is: the settings,
/// the mapped roles and the state recorded with the grant.
fn plan(input: &IssueInput<'_>) -> Result<(Settings, Vec<String>, State), ProviderError> {
    let name = &input.resource.name;
    let settings = Settings::parse(input.resource).map_err(|message| failed(name, message))?;
    let grants = RoleSettings::parse(&input.role.settings).map_err(|message| failed(name, message))?.grant;
    // Where clients connect comes from the settings; the admin connection
    // string (a secret read from a file or the environment) only fills in
    // what they leave out, so a resource that names all three is not read
    // here at every issue.
    let config = match (&settings.host, settings.port, &settings.database) {
        (Some(_), Some(_), Some(_)) => None,
        _ => Some(settings.admin_target().map_err(|message| failed(name, message))?),
    };
    let state = State {
        role: role_name(&input.grant.owner, input.grant),
        member_of: grants.clone(),
        host: settings.host.clone().unwrap_or_else(|| {
            config
                .as_ref()
                .and_then(|target| target.describe().rsplit_once(':').map(|(host, _)| host.to_owned()))
                .unwrap_or_default()
        }),
        port: settings.port.or_else(|| config.as_ref()?.config().get_ports().first().copied()).unwrap_or(5432),
        database: settings
            .database
            .clone()
            .or_else(|| config.as_ref()?.config().get_dbname().map(str::to_owned))
            .unwrap_or_else(|| "postgres".into()),
        sslmode: settings.sslmode.clone(),
        admin_dsn_env: settings.admin_dsn_env.clone(),
        admin_dsn_file: settings.admin_dsn_file.clone(),
        owned_objects: settings.owned_objects.clone(),
        connect_timeout: settings.connect_timeout,
    };
    Ok((settings, grants, state))
}

#[async_trait::async_trait]
impl Provider for PostgresProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn check(&self, resource: &Resource) -> Result<(), String> {
        Settings::parse(resource)?;
        for role in resource.roles.values() {
            RoleSettings::parse(&role.settings).map_err(|e| format!("role \"{}\": {e}", role.name))?;
        }
        Ok(())
    }

    fn material(&self) -> MaterialKind {
        MaterialKind::PostgresScramVerifier
    }

    fn check_material(&self, material: Option<&ClientMaterial>) -> Result<(), String> {
        super::check_material_present(self.material(), material)?;
        check_verifier(material.and_then(|m| m.postgres_scram_verifier.as_deref()).unwrap_or_default())
    }

    fn planned_state(&self, input: IssueInput<'_>) -> Result<Option<serde_json::Value>, ProviderError> {
        let (_, _, state) = plan(&input)?;
        serde_json::to_value(&state).map(Some).map_err(|e| failed(&input.resource.name, e.to_string()))
    }

    async fn issue(&self, input: IssueInput<'_>) -> Result<Issued, ProviderError> {
        let name = &input.resource.name;
        let (settings, grants, state) = plan(&input)?;
        let verifier = input
            .material
            .and_then(|m| m.postgres_scram_verifier.clone())
            .ok_or_else(|| failed(name, "the request carries no SCRAM verifier"))?;
        check_verifier(&verifier).map_err(|message| failed(name, message))?;
        let role = state.role.clone();
        let deadline = input.grant.expires_at;
        let limit = settings.connection_limit.map(|n| format!(" CONNECTION LIMIT {n}")).unwrap_or_default();
        let verification = self
            .with_admin(name, &settings, async |admin| {
                let quoted = escape_identifier(&role);
                let attributes = format!(
                    "LOGIN INHERIT PASSWORD {} VALID UNTIL {}{limit}",
                    escape_literal(&verifier),
                    until(deadline)
                );
                let memberships: String =
                    grants.iter().map(|granted| membership(granted, &quoted, admin.server_version)).collect();
                let what = || format!("creating role {role} as a member of {}", grants.join(", "));
                // One transaction: the statements of one query commit
                // together, so a mapped role that does not exist leaves
                // nothing behind.
                let create = format!("CREATE ROLE {quoted} {attributes}{memberships}");
                let (created, facts) = execute_and_read_back(admin, name, &create, &role).await;
                let facts = match created {
                    Ok(()) => facts?,
                    // Issued before (again after a restart): make it what this issue asks.
                    Err(error) if error.code() == Some(&SqlState::DUPLICATE_OBJECT) => {
                        let alter = format!("ALTER ROLE {quoted} {attributes}{memberships}");
                        let (altered, facts) = execute_and_read_back(admin, name, &alter, &role).await;
                        altered.map_err(|e| failed(name, format!("{}: {}", what(), describe_error(&e))))?;
                        facts?
                    }
                    Err(error) => return Err(failed(name, format!("{}: {}", what(), describe_error(&error)))),
                };
                let mut verification = verify_role(name, &role, facts, deadline, &grants)?;
                verification.insert("can_set_role".into(), (!membership_without_set(admin.server_version)).into());
                Ok(verification)
            })
            .await?;
        let state = serde_json::to_value(&state).map_err(|e| failed(name, e.to_string()))?;
        // Only the client holds the password: it confirms the login works.
        Ok(Issued { state, ready: false, verification })
    }

    async fn renew(&self, input: IssueInput<'_>, state: &serde_json::Value) -> Result<Issued, ProviderError> {
        let name = &input.resource.name;
        let stored: State =
            serde_json::from_value(state.clone()).map_err(|e| failed(name, format!("stored state: {e}")))?;
        let deadline = input.grant.expires_at;
        let verification = self
            .with_admin(name, &stored.settings(), async |admin| {
                let alter = format!("ALTER ROLE {} VALID UNTIL {}", escape_identifier(&stored.role), until(deadline));
                let (altered, facts) = execute_and_read_back(admin, name, &alter, &stored.role).await;
                altered.map_err(|e| failed(name, format!("extending role {}: {}", stored.role, describe_error(&e))))?;
                verify_role(name, &stored.role, facts?, deadline, &stored.member_of)
            })
            .await?;
        Ok(Issued { state: state.clone(), ready: true, verification })
    }

    async fn revoke(
        &self,
        grant: &Grant,
        state: &serde_json::Value,
        _now: Timestamp,
    ) -> Result<Verification, ProviderError> {
        let name = &grant.resource;
        if state.is_null() {
            // Issue never reached the provider: nothing was created.
            let mut verification = Verification::new();
            verification.insert("created".into(), false.into());
            return Ok(verification);
        }
        let stored: State =
            serde_json::from_value(state.clone()).map_err(|e| failed(name, format!("stored state: {e}")))?;
        let settings = stored.settings();
        let owned = settings.owned().map_err(|message| failed(name, message))?;
        let role = stored.role.clone();
        self.with_admin(name, &settings, async |admin| {
            let quoted = escape_identifier(&role);
            let mut terminated = 0_i64;
            // One round trip: what the role is, no new logins (committed
            // before the next statement runs), its open sessions ended. Sent
            // whether or not the role still exists: if it does not, the
            // ALTER's error says only that.
            let nologin = format!("ALTER ROLE {quoted} NOLOGIN");
            let by_role: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&role];
            let (facts, stopped, ended) = tokio::join!(
                role_facts(admin, name, &role),
                admin.client.batch_execute(&nologin),
                admin.client.query_one(&admin.terminate, &by_role),
            );
            let removal = match facts? {
                None => None,
                Some(facts) => {
                    stopped.map_err(|e| failed(name, format!("stopping logins of {role}: {}", describe_error(&e))))?;
                    let row = ended
                        .map_err(|e| failed(name, format!("terminating sessions of {role}: {}", describe_error(&e))))?;
                    let found: i64 = row.get(0);
                    terminated = row.get(1);
                    // Termination is a signal: wait until the backends are gone.
                    if found > 0 {
                        let waited = tokio::time::Instant::now();
                        while session_count(admin, name, &role).await? > 0 {
                            if waited.elapsed() > SESSION_EXIT_WAIT {
                                return Err(failed(name, format!("sessions of {role} did not end after termination")));
                            }
                            tokio::time::sleep(StdDuration::from_millis(20)).await;
                        }
                    }
                    // Memberships, owned objects and the role: one query, so
                    // one transaction, all or nothing.
                    let mut removal: String = facts
                        .member_of
                        .iter()
                        .map(|member_of| format!("REVOKE {} FROM {quoted}; ", escape_identifier(member_of)))
                        .collect();
                    if let Owned::Reassign(to) = &owned {
                        removal.push_str(&format!("REASSIGN OWNED BY {quoted} TO {}; ", escape_identifier(to)));
                    }
                    removal.push_str(&format!("DROP OWNED BY {quoted}; DROP ROLE {quoted}"));
                    Some(removal)
                }
            };
            // Verified, not assumed: the role and every session of it are
            // gone, read right behind the removal (the same round trip).
            let (dropped, left) = tokio::join!(
                async {
                    match &removal {
                        Some(removal) => admin.client.batch_execute(removal).await,
                        None => Ok(()),
                    }
                },
                admin.client.query_one(&admin.leftovers, &by_role),
            );
            dropped.map_err(|e| {
                failed(name, format!("dropping role {role} with its memberships and objects: {}", describe_error(&e)))
            })?;
            let row =
                left.map_err(|e| failed(name, format!("checking that role {role} is gone: {}", describe_error(&e))))?;
            if row.get::<_, bool>(0) {
                return Err(failed(name, format!("role {role} still exists after it was dropped")));
            }
            let sessions: i64 = row.get(1);
            if sessions > 0 {
                return Err(failed(name, format!("{sessions} session(s) of {role} remain")));
            }
            let mut verification = Verification::new();
            verification.insert("role".into(), role.clone().into());
            verification.insert("role_exists".into(), false.into());
            verification.insert("sessions_terminated".into(), terminated.into());
            verification.insert("sessions_remaining".into(), 0.into());
            Ok(verification)
        })
        .await
    }

    async fn credential(&self, input: IssueInput<'_>, state: &serde_json::Value) -> Result<Credential, ProviderError> {
        let name = &input.resource.name;
        let stored: State =
            serde_json::from_value(state.clone()).map_err(|e| failed(name, format!("stored state: {e}")))?;
        let grant = input.grant;
        let plain = |name: &str, value: String| EnvVar { name: name.into(), value, secret: false };
        let mut env = vec![
            plain("PGHOST", stored.host),
            plain("PGPORT", stored.port.to_string()),
            plain("PGDATABASE", stored.database),
            plain("PGUSER", stored.role),
        ];
        if let Some(mode) = stored.sslmode {
            env.push(plain("PGSSLMODE", mode));
        }
        Ok(Credential {
            grant_id: grant.id.clone(),
            resource: grant.resource.clone(),
            role: grant.role.clone(),
            provider: KIND.into(),
            expires_at: grant.expires_at,
            valid_until: None,
            env,
            ssh_certificate: None,
            // The password is the client's own: it adds PGPASSWORD.
            client_secret: Some(ClientSecret::PostgresPassword),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_16_memberships_cannot_set_role_and_older_servers_say_they_can() {
        assert_eq!(
            membership("orders_writer", "\"hg_alice\"", 160_002),
            "; GRANT \"orders_writer\" TO \"hg_alice\" WITH INHERIT TRUE, SET FALSE"
        );
        assert_eq!(membership("orders_writer", "\"hg_alice\"", 150_010), "; GRANT \"orders_writer\" TO \"hg_alice\"");
        assert!(membership_without_set(170_000) && !membership_without_set(159_999));
    }

    #[test]
    fn role_names_are_safe_and_unique_per_grant() {
        let request = hourglass_core::AccessRequest::file(
            hourglass_core::RequestId::from_random(1),
            hourglass_core::NewRequest {
                requester: "Alice.O'Brien+ops@acme.example".into(),
                resource: "db".into(),
                role: "read".into(),
                duration: Duration::from_mins(5),
                reason: "r".into(),
                ticket: None,
                break_glass: false,
                renews: None,
            },
            Vec::new(),
            Duration::from_mins(5),
            Timestamp::from_unix_millis(0),
        );
        let grant =
            Grant::start(hourglass_core::GrantId::from_random(7), &request, KIND, Timestamp::from_unix_millis(0));
        let name = role_name(&grant.owner, &grant);
        assert!(name.starts_with("hg_alice_o_brien_ops_"), "{name}");
        assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "safe: {name}");
        assert!(name.len() <= 63, "within PostgreSQL's limit: {name}");
        assert!(name.ends_with(grant.id.as_str().trim_start_matches("grt-")), "unique per grant: {name}");
    }

    #[test]
    fn only_scram_verifiers_are_accepted() {
        let good = postgres_protocol::password::scram_sha_256(b"correct horse");
        assert_eq!(check_verifier(&good), Ok(()), "a real verifier");
        let one_round = good.replacen("$4096:", "$1:", 1);
        assert_eq!(check_verifier(&one_round), Ok(()), "one round, as Hourglass's clients make it");
        let no_round = good.replacen("$4096:", "$0:", 1);
        let negative = good.replacen("$4096:", "$-1:", 1);
        for bad in [
            "correct horse",
            "md5abc",
            "SCRAM-SHA-256$1000:c2FsdA==$a:b",
            "SCRAM-SHA-256$4096:c2FsdA==$YQ==:Yg==",
            "",
            &no_round,
            &negative,
        ] {
            let error = check_verifier(bad).expect_err(bad);
            assert!(error.contains("SCRAM-SHA-256$<iterations>"), "{bad:?}: {error}");
            assert!(!error.contains("correct horse"), "the refusal never echoes what was sent");
        }
    }

    #[test]
    fn scram_verifier_with_more_rounds_than_postgres_default_refused() {
        let good = postgres_protocol::password::scram_sha_256(b"correct horse");
        assert_eq!(check_verifier(&good), Ok(()), "4096 rounds, PostgreSQL's default, is the most taken");
        for rounds in ["4097", "2147483648", "4294967295"] {
            let costly = good.replacen("$4096:", &format!("${rounds}:"), 1);
            let error = check_verifier(&costly).expect_err(rounds);
            assert!(error.contains(rounds) && error.contains("at most 4096"), "names the count and the cap: {error}");
        }
    }

    fn resource(settings: &str, role_settings: &str) -> Resource {
        let toml = format!(
            "[workflows.w]\napprovals = [{{ group = \"g\", count = 1 }}]\n[resources.db]\nprovider = \"postgres\"\nworkflow = \"w\"\nsettings = {settings}\n[resources.db.roles.read]\nsettings = {role_settings}\n"
        );
        let policy =
            hourglass_policy::Policy::from_sources(vec![("hourglass.toml".into(), toml)]).expect("policy loads");
        policy.resources["db"].clone()
    }

    #[test]
    fn settings_are_checked_with_clear_messages() {
        let provider = PostgresProvider::default();
        let cases = [
            ("{ admin_dsn_env = \"DSN\" }", "{ grant = [\"r\"] }", None),
            ("{ admin_dsn_file = \"/etc/dsn\", owned_objects = \"reassign:admin\" }", "{ grant = [\"r\"] }", None),
            ("{ }", "{ grant = [\"r\"] }", Some("exactly one of admin_dsn_env or admin_dsn_file")),
            ("{ admin_dsn_env = \"DSN\", admin_dsn_file = \"/x\" }", "{ grant = [\"r\"] }", Some("exactly one")),
            ("{ admin_dsn = \"postgres://u:p@h/db\" }", "{ grant = [\"r\"] }", Some("unknown field `admin_dsn`")),
            ("{ admin_dsn_env = \"dsn-var\" }", "{ grant = [\"r\"] }", Some("not an environment variable name")),
            ("{ admin_dsn_env = \"DSN\", owned_objects = \"keep\" }", "{ grant = [\"r\"] }", Some("owned_objects")),
            ("{ admin_dsn_env = \"DSN\", sslmode = \"sure\" }", "{ grant = [\"r\"] }", Some("sslmode")),
            ("{ admin_dsn_env = \"DSN\" }", "{ grant = [] }", Some("settings.grant must name")),
            ("{ admin_dsn_env = \"DSN\" }", "{ }", Some("missing field `grant`")),
        ];
        for (settings, role, expected) in cases {
            let outcome = provider.check(&resource(settings, role));
            match expected {
                None => assert_eq!(outcome, Ok(()), "{settings} {role}"),
                Some(text) => {
                    let error = outcome.expect_err(settings);
                    assert!(error.contains(text), "{settings} {role}: {error}");
                }
            }
        }
    }

    #[test]
    fn the_admin_dsn_never_appears_in_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("dsn");
        std::fs::write(&path, "host=db password=hunter2 port=notaport").expect("write");
        let settings = Settings { admin_dsn_file: Some(path), ..Settings::default() };
        let error = settings.admin_target().expect_err("malformed");
        assert!(error.contains("malformed") && error.contains("port"), "says what is wrong: {error}");
        assert!(!error.contains("hunter2") && !error.contains("notaport"), "no value of the DSN is echoed: {error}");
        let missing = Settings { admin_dsn_env: Some("HOURGLASS_TEST_UNSET_DSN".into()), ..Settings::default() };
        let error = missing.admin_target().expect_err("unset");
        assert!(error.contains("HOURGLASS_TEST_UNSET_DSN") && error.contains("is not set"), "{error}");
    }
}
