//! Renewing a grant for its role's default duration: the desktop's
//! notification "Renew" and `hourglass renew GRANT` without `--for`.

use hourglass_core::GrantId;
use hourglass_core::api::RenewOutcome;

use crate::{Client, Error, Result};

/// Renews `grant` for the default duration its role offers now (policy may
/// have changed since it was issued).
pub async fn renew_for_default(client: &Client, grant: &GrantId, reason: Option<String>) -> Result<RenewOutcome> {
    let (current, catalog) = tokio::try_join!(client.grant(grant), client.catalog())?;
    let duration = catalog
        .resources
        .iter()
        .find(|resource| resource.name == current.resource)
        .and_then(|resource| resource.roles.iter().find(|role| role.name == current.role))
        .map(|role| role.default_duration)
        .ok_or_else(|| Error::Config(format!("{}/{} is no longer offered", current.resource, current.role)))?;
    client.renew(grant, &duration.to_string(), reason).await
}
