//! What the user may request, as the window offers it: the broker's
//! catalog, and for each role the durations a picker lists (between the
//! role's bounds, with its default). The front end never reads durations.

use hourglass_core::Duration;
use hourglass_core::api::{Catalog, CatalogRole};
use serde::Serialize;

/// Round durations people pick from, when the role's bounds allow them.
const ROUND: [Duration; 9] = [
    Duration::from_mins(5),
    Duration::from_mins(15),
    Duration::from_mins(30),
    Duration::from_hours(1),
    Duration::from_hours(2),
    Duration::from_hours(4),
    Duration::from_hours(8),
    Duration::from_hours(12),
    Duration::from_hours(24),
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
pub struct Offer {
    pub resources: Vec<OfferedResource>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
pub struct OfferedResource {
    pub name: String,
    pub description: String,
    pub provider: String,
    pub roles: Vec<OfferedRole>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
pub struct OfferedRole {
    #[serde(flatten)]
    pub role: CatalogRole,
    /// What a duration picker lists, shortest first.
    pub durations: Vec<Duration>,
}

impl Offer {
    pub fn of(catalog: Catalog) -> Offer {
        let resources = catalog
            .resources
            .into_iter()
            .map(|resource| OfferedResource {
                name: resource.name,
                description: resource.description,
                provider: resource.provider,
                roles: resource
                    .roles
                    .into_iter()
                    .map(|role| OfferedRole { durations: durations(&role), role })
                    .collect(),
            })
            .collect();
        Offer { resources }
    }
}

/// The round durations within the role's bounds, its default and its
/// longest, shortest first.
pub fn durations(role: &CatalogRole) -> Vec<Duration> {
    let mut picked: Vec<Duration> =
        ROUND.into_iter().filter(|round| (role.min_duration..=role.max_duration).contains(round)).collect();
    picked.extend([role.default_duration, role.max_duration]);
    picked.sort_unstable();
    picked.dedup();
    picked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(min: &str, max: &str, default: &str) -> CatalogRole {
        let duration = |text: &str| text.parse::<Duration>().expect("a duration");
        CatalogRole {
            name: "read".into(),
            description: String::new(),
            min_duration: duration(min),
            max_duration: duration(max),
            default_duration: duration(default),
            max_total: duration(max),
            renewals_without_approval: 1,
            approvals: Vec::new(),
            reason_required: false,
            ticket_required: false,
            may_request: true,
            auto_approve: true,
        }
    }

    #[test]
    fn duration_choices_are_round_ones_within_bounds_with_the_default_and_the_longest() {
        let names = |role: &CatalogRole| durations(role).iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(names(&role("5m", "1h", "15m")), ["5m", "15m", "30m", "1h"]);
        assert_eq!(names(&role("1m", "45m", "20m")), ["5m", "15m", "20m", "30m", "45m"], "default and longest added");
        assert_eq!(names(&role("10s", "1m", "30s")), ["30s", "1m"], "no round one fits");
    }
}
