//! What an issuer's configuration asks of its tokens' claims, beyond a
//! valid signature: the claims a token must carry (`require`), the groups
//! its claims give (`groups_from`), the claims policies read
//! (`attributes`), and the namespace of its principals.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::settings::{GroupFromClaim, IssuerSettings};

/// An issuer's claim rules, as `[[broker.issuers]]` states them.
#[derive(Debug, Clone, Default)]
pub struct ClaimRules {
    /// Each claim a token must carry, with the patterns its value may match.
    pub require: BTreeMap<String, Vec<String>>,
    pub groups_from: Vec<GroupFromClaim>,
    pub attributes: Vec<String>,
    /// Principal ids are `NAMESPACE:id`; empty: unprefixed.
    pub namespace: String,
}

impl ClaimRules {
    pub fn from_settings(settings: &IssuerSettings) -> ClaimRules {
        ClaimRules {
            require: settings
                .require
                .iter()
                .map(|(claim, values)| (claim.clone(), values.patterns().to_vec()))
                .collect(),
            groups_from: settings.groups_from.clone(),
            attributes: settings.attributes.clone(),
            namespace: settings.namespace(),
        }
    }

    /// The first required claim the token lacks or holds a value not
    /// accepted for; None when it meets them all.
    pub fn unmet<'a>(&'a self, claims: &Value) -> Option<&'a str> {
        self.require.iter().find_map(|(claim, patterns)| {
            let accepted =
                text_of(&claims[claim.as_str()]).is_some_and(|value| patterns.iter().any(|p| glob_matches(p, &value)));
            (!accepted).then_some(claim.as_str())
        })
    }

    /// The groups the token's claims give.
    pub fn groups(&self, claims: &Value) -> impl Iterator<Item = String> {
        self.groups_from
            .iter()
            .filter(|rule| text_of(&claims[rule.claim.as_str()]).is_some_and(|value| glob_matches(&rule.value, &value)))
            .map(|rule| rule.group.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
    }

    /// The attributes policies read, from the token's claims (those it has).
    pub fn attributes(&self, claims: &Value) -> BTreeMap<String, String> {
        self.attributes.iter().filter_map(|name| Some((name.clone(), text_of(&claims[name.as_str()])?))).collect()
    }

    /// The principal id for the issuer's own `id`.
    pub fn principal_id(&self, id: &str) -> String {
        if self.namespace.is_empty() { id.to_owned() } else { format!("{}:{id}", self.namespace) }
    }
}

/// A claim's value as text: a string, or a number or boolean written out
/// (GitHub sends `run_number` as a string, others as a number).
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of
/// characters (`/` included: `acme/*` is every repository of acme) and
/// every other character for itself.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*`: the whole text must be the pattern.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

    use serde_json::json;

    use super::*;

    #[test]
    fn globs_match_exactly_or_with_stars_for_any_run() {
        for (pattern, text) in [
            ("acme/deploy", "acme/deploy"),
            ("acme/*", "acme/deploy"),
            ("acme/*", "acme/"),
            ("refs/tags/v*", "refs/tags/v1.2.3"),
            ("*", ""),
            ("*/deploy", "acme/deploy"),
            ("a*b*c", "a-b-b-c"),
        ] {
            assert!(glob_matches(pattern, text), "{pattern} matches {text}");
        }
        for (pattern, text) in [
            ("acme/deploy", "acme/deploy-fork"),
            ("acme/deploy", "evil/acme/deploy"),
            ("acme/*", "acmecorp/deploy"),
            ("refs/heads/main", "refs/heads/main2"),
            ("a*b*c", "a-c-b"),
            ("ab*ba", "aba"),
        ] {
            assert!(!glob_matches(pattern, text), "{pattern} does not match {text}");
        }
    }

    fn rules() -> ClaimRules {
        ClaimRules {
            require: BTreeMap::from([
                ("repository_owner".into(), vec!["acme".into()]),
                ("ref".into(), vec!["refs/heads/main".into(), "refs/tags/v*".into()]),
            ]),
            groups_from: vec![
                GroupFromClaim { claim: "repository".into(), value: "acme/*".into(), group: "ci".into() },
                GroupFromClaim { claim: "environment".into(), value: "production".into(), group: "deployers".into() },
            ],
            attributes: vec!["repository".into(), "environment".into()],
            namespace: "github".into(),
        }
    }

    #[test]
    fn a_token_must_carry_every_required_claim_with_an_accepted_value() {
        let rules = rules();
        let main = json!({ "repository_owner": "acme", "ref": "refs/heads/main" });
        assert_eq!(rules.unmet(&main), None);
        assert_eq!(rules.unmet(&json!({ "repository_owner": "acme", "ref": "refs/tags/v2" })), None);
        assert_eq!(
            rules.unmet(&json!({ "repository_owner": "evil", "ref": "refs/heads/main" })),
            Some("repository_owner")
        );
        assert_eq!(rules.unmet(&json!({ "repository_owner": "acme", "ref": "refs/heads/dev" })), Some("ref"));
        assert_eq!(rules.unmet(&json!({ "ref": "refs/heads/main" })), Some("repository_owner"), "missing");
        assert_eq!(
            rules.unmet(&json!({ "repository_owner": ["acme"], "ref": "refs/heads/main" })),
            Some("repository_owner"),
            "not text"
        );
    }

    #[test]
    fn claims_give_groups_attributes_and_a_namespaced_id() {
        let rules = rules();
        let claims = json!({ "repository": "acme/deploy", "environment": "production", "ref": "refs/heads/main" });
        assert_eq!(rules.groups(&claims).collect::<Vec<_>>(), ["ci", "deployers"]);
        assert_eq!(rules.groups(&json!({ "repository": "evil/deploy" })).count(), 0);
        assert_eq!(
            rules.attributes(&claims),
            BTreeMap::from([("environment".into(), "production".into()), ("repository".into(), "acme/deploy".into())]),
            "only the exposed claims"
        );
        assert_eq!(
            rules.principal_id("repo:acme/deploy:ref:refs/heads/main"),
            "github:repo:acme/deploy:ref:refs/heads/main"
        );
        assert_eq!(ClaimRules::default().principal_id("alice@acme.example"), "alice@acme.example");
    }
}
