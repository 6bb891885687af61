//! Who is acting: a verified identity and the groups its identity provider
//! (or, in dev mode, the demo directory) says it belongs to.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A verified principal. `id` is stable and unique (an email address for
/// people); groups come from the identity token's claims at each call, so a
/// group change at the IdP takes effect with the next token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields = nullable))]
pub struct Principal {
    pub id: String,
    /// A name for people to read, when the IdP provides one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub groups: BTreeSet<String>,
    /// Claims of its identity token that its issuer lets policies read
    /// (`principal.repository` in Cedar): a CI pipeline's repository, say.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

impl Principal {
    pub fn new(id: impl Into<String>, groups: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Principal {
            id: id.into(),
            name: None,
            groups: groups.into_iter().map(Into::into).collect(),
            attributes: BTreeMap::new(),
        }
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.contains(group)
    }
}

/// The actor recorded for what the broker does on its own (expiry, retries).
pub const SYSTEM_ACTOR: &str = "hourglass";
