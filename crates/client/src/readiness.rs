//! Checking that a credential completed with the client's own secret
//! works, before telling the broker it is ready (`POST …/ready`). Only the
//! client can: the broker never holds the secret.

use std::time::Duration as StdDuration;

use hourglass_core::api::EnvVar;

/// Logs in to PostgreSQL as the grant's role (libpq's `PG*` variables in
/// `env`, the client's `password`) and runs `SELECT 1`. Returns what was
/// checked, for the audit log; the error says why the login failed.
pub async fn postgres(env: &[EnvVar], password: &str) -> Result<String, String> {
    let var = |name: &str| env.iter().find(|v| v.name == name).map(|v| v.value.as_str());
    let (Some(host), Some(user)) = (var("PGHOST"), var("PGUSER")) else {
        return Err("the credential names no PGHOST and PGUSER".into());
    };
    let port: u16 = var("PGPORT").unwrap_or("5432").parse().map_err(|_| "PGPORT is not a port".to_owned())?;
    let database = var("PGDATABASE").unwrap_or(user);
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .port(port)
        .user(user)
        .dbname(database)
        .password(password)
        .application_name("hourglass readiness check")
        .connect_timeout(StdDuration::from_secs(10));
    if var("PGSSLMODE") == Some("disable") {
        config.ssl_mode(tokio_postgres::config::SslMode::Disable);
    }
    let login = async {
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(|e| describe(&e))?;
        let driver = tokio::spawn(connection);
        let result = client.simple_query("SELECT 1").await.map_err(|e| describe(&e));
        drop(client);
        let _ = driver.await;
        result
    };
    tokio::time::timeout(StdDuration::from_secs(20), login).await.map_err(|_| "the login timed out".to_owned())??;
    Ok(format!("logged in as {user} to {database} on {host}:{port} and ran SELECT 1"))
}

/// The server's own message, never the connection parameters.
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => {
            let source = std::error::Error::source(error).map(ToString::to_string);
            source.unwrap_or_else(|| error.to_string())
        }
    }
}
