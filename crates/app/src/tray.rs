//! The tray icon's state and menu, from the view: what needs attention first.

use hourglass_core::{GrantId, TimeLeft, Timestamp, Urgency, Warnings};
use serde::Serialize;

use crate::view::Live;

/// Which icon the tray shows, most pressing first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
pub enum TrayStatus {
    /// Teammates wait for my decision.
    ApprovalsWaiting,
    /// A grant of mine ends within the first warning time (core's urgency).
    ExpiringSoon,
    Active,
    Idle,
}

impl TrayStatus {
    pub fn icon_name(self) -> &'static str {
        match self {
            TrayStatus::ApprovalsWaiting => "tray-approvals",
            TrayStatus::ExpiringSoon => "tray-expiring",
            TrayStatus::Active => "tray-active",
            TrayStatus::Idle => "tray-idle",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrayGrant {
    pub id: GrantId,
    /// `orders-api · read — 41 min left`: minutes, so the menu changes at
    /// most once a minute (the window shows seconds).
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrayModel {
    pub status: TrayStatus,
    pub approvals: usize,
    /// My requests waiting for approval.
    pub waiting: usize,
    pub grants: Vec<TrayGrant>,
    pub tooltip: String,
}

/// `1 h 02 min left`, `41 min left`: whole minutes rounded up, as the
/// window's cards count them (`TimeLeft::minutes_rounded_up`).
pub fn minutes_left(left: TimeLeft) -> String {
    let minutes = left.minutes_rounded_up();
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m} min left"),
        (h, m) => format!("{h} h {m:02} min left"),
    }
}

/// The tray for `view` at the broker's `now`.
pub fn tray_model(view: &Live, now: Timestamp, warnings: &Warnings) -> TrayModel {
    let live: Vec<_> = view.current_grants(now).collect();
    let approvals = view.awaiting_me.len();
    let waiting = view.waiting_requests(now).count();
    let expiring = live.iter().any(|g| matches!(g.time_left(now).urgency(warnings), Urgency::Soon | Urgency::Urgent));
    let status = if approvals > 0 {
        TrayStatus::ApprovalsWaiting
    } else if expiring {
        TrayStatus::ExpiringSoon
    } else if !live.is_empty() {
        TrayStatus::Active
    } else {
        TrayStatus::Idle
    };
    let grants: Vec<TrayGrant> = live
        .iter()
        .map(|g| TrayGrant {
            id: g.id.clone(),
            label: format!("{} · {} — {}", g.resource, g.role, minutes_left(g.time_left(now))),
        })
        .collect();
    let mut parts = Vec::new();
    match live.len() {
        0 => parts.push("no live access".to_owned()),
        1 => parts.push("1 live grant".to_owned()),
        n => parts.push(format!("{n} live grants")),
    }
    if approvals > 0 {
        parts.push(format!("{approvals} waiting for you"));
    }
    if let Some(label) = waiting_label(waiting) {
        parts.push(label);
    }
    TrayModel { status, approvals, waiting, grants, tooltip: format!("Hourglass: {}", parts.join(", ")) }
}

/// `1 request waiting`: my requests not yet approved; none: nothing to say.
pub fn waiting_label(waiting: usize) -> Option<String> {
    match waiting {
        0 => None,
        1 => Some("1 request waiting".to_owned()),
        n => Some(format!("{n} requests waiting")),
    }
}

#[cfg(test)]
mod tests {
    use hourglass_core::Duration;

    use super::*;
    use crate::testing::{grant, request};

    const NOW: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);

    #[test]
    fn time_left_is_said_in_minutes_rounded_up_like_the_window() {
        let left = |secs: i64| TimeLeft::from_millis(secs * 1000);
        assert_eq!(minutes_left(left(3723)), "1 h 03 min left");
        assert_eq!(minutes_left(left(2467)), "42 min left", "41:07 left reads 42 min, as on the card");
        assert_eq!(minutes_left(left(59)), "1 min left", "never 0 min while time remains");
    }

    #[test]
    fn tray_status_shows_what_needs_attention_first() {
        let warnings = Warnings::default();
        let mut view = Live::new("http://b");
        assert_eq!(tray_model(&view, NOW, &warnings).status, TrayStatus::Idle, "nothing live");
        view.grants = vec![grant("orders-api", NOW.plus(Duration::from_hours(1)))];
        assert_eq!(tray_model(&view, NOW, &warnings).status, TrayStatus::Active);
        view.grants.push(grant("bastion", NOW.plus(Duration::from_mins(5))));
        assert_eq!(tray_model(&view, NOW, &warnings).status, TrayStatus::ExpiringSoon, "one within the warning time");
        view.awaiting_me = vec![request("dave@acme.example")];
        let model = tray_model(&view, NOW, &warnings);
        assert_eq!(model.status, TrayStatus::ApprovalsWaiting, "a teammate waiting beats a countdown");
        assert_eq!(model.approvals, 1);
        assert_eq!(model.tooltip, "Hourglass: 2 live grants, 1 waiting for you");
        assert_eq!(model.grants[1].label, "bastion · read — 5 min left");
    }

    #[test]
    fn my_requests_waiting_for_approval_are_counted_until_their_timeout() {
        let mut view = Live::new("http://b");
        let mut mine = request("bob@acme.example");
        mine.pending_until = NOW.plus(Duration::from_mins(30));
        view.requests = vec![mine.clone(), mine];
        let model = tray_model(&view, NOW, &Warnings::default());
        assert_eq!(model.waiting, 2);
        assert_eq!(model.tooltip, "Hourglass: no live access, 2 requests waiting");
        let later = tray_model(&view, NOW.plus(Duration::from_mins(30)), &Warnings::default());
        assert_eq!(later.waiting, 0, "timed out: no longer waiting");
        assert_eq!(waiting_label(1).as_deref(), Some("1 request waiting"));
    }

    #[test]
    fn grants_past_their_deadline_leave_the_tray() {
        let mut view = Live::new("http://b");
        view.grants = vec![grant("orders-api", NOW)];
        let model = tray_model(&view, NOW, &Warnings::default());
        assert_eq!((model.status, model.grants.len()), (TrayStatus::Idle, 0), "ended at its deadline");
    }
}
