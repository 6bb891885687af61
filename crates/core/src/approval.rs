//! Approval thresholds: "N approvals from group G", possibly several rules at
//! once ("one SRE and one security engineer").
//!
//! Each approver fills at most one slot: a person in both groups cannot
//! satisfy a two-person rule alone. Whether enough distinct approvers have
//! approved is a bipartite matching between approvers and slots.

use serde::{Deserialize, Serialize};

/// `count` approvals from members of `group`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields = nullable))]
pub struct ApprovalRule {
    pub group: String,
    pub count: u32,
}

/// Whether a principal with these groups could fill any slot of `rules`.
pub fn is_eligible_approver<'a>(rules: &[ApprovalRule], groups: impl IntoIterator<Item = &'a str>) -> bool {
    let groups: Vec<&str> = groups.into_iter().collect();
    rules.iter().any(|rule| rule.count > 0 && groups.contains(&rule.group.as_str()))
}

/// How many more approvals `rules` need, given the groups of each distinct
/// approver who approved so far. Zero means the request is approved.
pub fn remaining_approvals(rules: &[ApprovalRule], approvers: &[Vec<String>]) -> u32 {
    let slots: Vec<&str> =
        rules.iter().flat_map(|rule| std::iter::repeat_n(rule.group.as_str(), rule.count as usize)).collect();
    let total = u32::try_from(slots.len()).unwrap_or(u32::MAX);
    let filled = u32::try_from(max_matching(&slots, approvers)).unwrap_or(u32::MAX);
    total.saturating_sub(filled)
}

/// Kuhn's augmenting-path matching. Rules have a handful of slots, so the
/// simple O(V·E) algorithm is more than fast enough.
fn max_matching(slots: &[&str], approvers: &[Vec<String>]) -> usize {
    let mut slot_owner: Vec<Option<usize>> = vec![None; slots.len()];
    let mut matched = 0;
    for approver in 0..approvers.len() {
        let mut visited = vec![false; slots.len()];
        if augment(approver, slots, approvers, &mut slot_owner, &mut visited) {
            matched += 1;
        }
    }
    matched
}

fn augment(
    approver: usize,
    slots: &[&str],
    approvers: &[Vec<String>],
    slot_owner: &mut [Option<usize>],
    visited: &mut [bool],
) -> bool {
    for (slot, group) in slots.iter().enumerate() {
        if visited[slot] || !approvers[approver].iter().any(|g| g == group) {
            continue;
        }
        visited[slot] = true;
        let free = match slot_owner[slot] {
            None => true,
            Some(other) => augment(other, slots, approvers, slot_owner, visited),
        };
        if free {
            slot_owner[slot] = Some(approver);
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(spec: &[(&str, u32)]) -> Vec<ApprovalRule> {
        spec.iter().map(|(group, count)| ApprovalRule { group: (*group).into(), count: *count }).collect()
    }

    fn approvers(spec: &[&[&str]]) -> Vec<Vec<String>> {
        spec.iter().map(|groups| groups.iter().map(|g| (*g).to_owned()).collect()).collect()
    }

    /// (rules, each approver's groups, approvals remaining, why)
    type Case<'a> = (&'a [(&'a str, u32)], &'a [&'a [&'a str]], u32, &'a str);

    #[test]
    fn remaining_approvals_table() {
        let cases: &[Case<'_>] = &[
            (&[("sre", 1)], &[], 1, "nobody approved yet"),
            (&[("sre", 1)], &[&["sre"]], 0, "one sre suffices"),
            (&[("sre", 2)], &[&["sre"]], 1, "two distinct sre needed"),
            (&[("sre", 1)], &[&["eng"]], 1, "an engineer outside the group counts for nothing"),
            (&[("sre", 1), ("security", 1)], &[&["sre", "security"]], 1, "one person fills one slot"),
            (
                &[("sre", 1), ("security", 1)],
                &[&["sre", "security"], &["sre"]],
                0,
                "matching puts the dual member on security",
            ),
            (&[("sre", 1), ("security", 1)], &[&["sre"], &["sre"]], 1, "two sre do not make a security approval"),
            (&[("sre", 0)], &[], 0, "a zero rule needs nothing"),
        ];
        for (rule_spec, approver_spec, remaining, why) in cases {
            assert_eq!(remaining_approvals(&rules(rule_spec), &approvers(approver_spec)), *remaining, "{why}");
        }
    }

    #[test]
    fn eligibility_needs_a_group_with_slots() {
        let rules = rules(&[("sre", 1), ("security", 0)]);
        assert!(is_eligible_approver(&rules, ["eng", "sre"]), "sre member is eligible");
        assert!(!is_eligible_approver(&rules, ["security"]), "a zero-count rule makes nobody eligible");
        assert!(!is_eligible_approver(&rules, ["eng"]), "outsiders are not eligible");
    }
}
