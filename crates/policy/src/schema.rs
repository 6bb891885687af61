//! The Cedar schema every policy is validated against. It is the contract
//! between policy authors and the broker: the entities and context the
//! broker passes to each decision.

pub const CEDAR_SCHEMA: &str = r#"
// People and machines, and the groups their identity provider puts them in.
// Users have the attributes their issuers expose (see principal_schema).
entity Group;
entity User in [Group];

// A resource from hourglass.toml, and each role it offers.
entity Resource = {
  provider: String,
  labels: Set<String>,
};
entity Role in [Resource] = {
  name: String,
  resource_name: String,
  provider: String,
  labels: Set<String>,
};

// What a request asks for, as seen when it is filed, auto-approved,
// broken into, or approved.
type AccessContext = {
  // The id of the person who asked (for approve: not the principal).
  requester: String,
  duration_seconds: Long,
  reason: String,
  ticket: String,
  has_ticket: Bool,
  // Asking for more time on a live grant rather than for new access.
  renewal: Bool,
  break_glass: Bool,
  // The broker's clock, in UTC: 0-23, and 1 (Monday) to 7 (Sunday).
  utc_hour: Long,
  utc_weekday: Long,
};

action request, auto_approve, break_glass, approve appliesTo {
  principal: [User],
  resource: [Role],
  context: AccessContext,
};

// Acting on somebody else's grant (owners always may on their own).
action revoke, view appliesTo {
  principal: [User],
  resource: [Role],
  context: { owner: String },
};
"#;

/// The schema for principals whose issuers expose `attributes` (claims of
/// their tokens, `[[broker.issuers]] attributes`): each is a `String` of
/// every user, empty when its token had none, so that a policy reads
/// `principal.repository` without a `has` test and a person, who has no
/// repository, simply does not match.
pub fn principal_schema(attributes: &std::collections::BTreeSet<String>) -> String {
    if attributes.is_empty() {
        return CEDAR_SCHEMA.to_owned();
    }
    let fields: Vec<String> = attributes.iter().map(|name| format!("  \"{name}\": String,")).collect();
    CEDAR_SCHEMA.replacen(
        "entity User in [Group];",
        &format!("entity User in [Group] = {{\n{}\n}};", fields.join("\n")),
        1,
    )
}
