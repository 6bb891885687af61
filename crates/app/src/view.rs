//! What the app knows of the broker ([`Live`], kept by the sync) and what
//! its window shows ([`AppView`]): the same, with every deadline on this
//! machine's clock and each grant's urgency moments worked out, so that the
//! front end only counts down and formats.

use hourglass_client::clock::BrokerClock;
use hourglass_client::session::SessionKind;
use hourglass_core::api::ReviewItem;
use hourglass_core::{AccessRequest, Duration, Grant, Principal, Timestamp, Warnings};
use serde::Serialize;

/// How the app is connected to its broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Connection {
    Connecting,
    Online,
    /// The broker is unreachable; countdowns and warnings go on locally.
    Offline {
        since: Timestamp,
        error: String,
        retry_at: Timestamp,
    },
    /// No valid session: the user must log in.
    SignedOut {
        reason: String,
        /// There is no keyring here: a login keeps the session in the
        /// app's memory until it quits (the login page says so).
        memory_only: bool,
    },
}

/// The broker as this user sees it, kept live by the sync. Instants are
/// the broker's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    pub broker: String,
    pub connection: Connection,
    pub principal: Option<Principal>,
    pub clock: BrokerClock,
    /// My live grants, soonest deadline first.
    pub grants: Vec<Grant>,
    /// My requests, newest first.
    pub requests: Vec<AccessRequest>,
    /// Teammates' requests waiting for my decision, oldest first.
    pub awaiting_me: Vec<AccessRequest>,
    /// Break-glass grants waiting for my review.
    pub to_review: Vec<ReviewItem>,
}

impl Live {
    pub fn new(broker: &str) -> Live {
        Live {
            broker: broker.to_owned(),
            connection: Connection::Connecting,
            principal: None,
            clock: BrokerClock::default(),
            grants: Vec::new(),
            requests: Vec::new(),
            awaiting_me: Vec::new(),
            to_review: Vec::new(),
        }
    }

    pub fn signed_out(broker: &str, reason: String, memory_only: bool) -> Live {
        Live { connection: Connection::SignedOut { reason, memory_only }, ..Live::new(broker) }
    }

    /// Replaces the lists with fresh ones from the broker.
    pub fn set_lists(
        &mut self,
        mut grants: Vec<Grant>,
        requests: Vec<AccessRequest>,
        mut awaiting_me: Vec<AccessRequest>,
        to_review: Vec<ReviewItem>,
    ) {
        grants.retain(|grant| grant.state.is_live());
        grants.sort_by_key(|grant| grant.expires_at);
        awaiting_me.sort_by_key(|request| request.created_at);
        self.grants = grants;
        self.requests = requests;
        self.awaiting_me = awaiting_me;
        self.to_review = to_review;
    }

    /// The grants still before their deadline at the broker's `now`: the
    /// app does not wait for the broker (it may be unreachable) to stop
    /// showing the others.
    pub fn current_grants(&self, now: Timestamp) -> impl Iterator<Item = &Grant> {
        self.grants.iter().filter(move |grant| !grant.is_past_deadline(now))
    }

    /// My requests still waiting for approval at the broker's `now`, newest
    /// first: pending, and not past the moment they expire undecided (the
    /// broker ends them then; the app does not wait to hear it).
    pub fn waiting_requests(&self, now: Timestamp) -> impl Iterator<Item = &AccessRequest> {
        self.requests.iter().filter(move |request| request.is_pending() && now < request.pending_until)
    }

    /// The next deadline after the broker's `now`, when the window must
    /// drop a grant.
    pub fn next_deadline(&self, now: Timestamp) -> Option<Timestamp> {
        self.current_grants(now).map(|grant| grant.expires_at).min()
    }
}

/// A live grant as the window shows it. Instants are this machine's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
#[ts(optional_fields = nullable)]
pub struct GrantView {
    pub grant: Grant,
    /// When the access clock started.
    pub started_at: Timestamp,
    /// The deadline: what the countdown counts to.
    pub ends_at: Timestamp,
    /// From here the grant is expiring soon (the first warning time).
    pub soon_at: Option<Timestamp>,
    /// From here its end is urgent (the last warning time).
    pub urgent_at: Option<Timestamp>,
}

/// My request waiting for approval. Instants are this machine's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
pub struct WaitingView {
    pub request: AccessRequest,
    /// When I asked.
    pub since: Timestamp,
    /// When it expires undecided.
    pub expires_at: Timestamp,
}

/// A break-glass grant waiting for my review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
pub struct ReviewView {
    pub grant: Grant,
    pub request: AccessRequest,
    /// When the access was taken, on this machine's clock.
    pub taken_at: Timestamp,
}

/// A teammate's request waiting for my decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
pub struct ApprovalView {
    pub request: AccessRequest,
    /// When it expires undecided, on this machine's clock.
    pub expires_at: Timestamp,
}

/// What the window shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
#[ts(optional_fields = nullable)]
pub struct AppView {
    pub broker: String,
    pub connection: Connection,
    pub principal: Option<Principal>,
    /// My grants before their deadline, soonest first.
    pub grants: Vec<GrantView>,
    /// My requests, newest first.
    pub requests: Vec<AccessRequest>,
    /// My requests waiting for approval, newest first.
    pub waiting: Vec<WaitingView>,
    /// Teammates' requests waiting for my decision, oldest first.
    pub awaiting_me: Vec<ApprovalView>,
    /// Break-glass grants waiting for my review.
    pub to_review: Vec<ReviewView>,
    /// The last warning time: "ends in under …" on an urgent grant.
    pub urgent_within: Option<Duration>,
    /// Moves whenever anything above does, so the front end can skip
    /// identical updates.
    #[ts(type = "number")]
    pub revision: u64,
}

impl AppView {
    /// The window's view of `live` at this machine's `local_now`.
    pub fn of(live: &Live, warnings: &Warnings, local_now: Timestamp) -> AppView {
        let clock = live.clock;
        let now = clock.broker_time(local_now);
        let local = |at| clock.to_local(at);
        let grants = live
            .current_grants(now)
            .map(|grant| {
                // Largest warning time first: the first moment is "soon", the last "urgent".
                let moments: Vec<Timestamp> = warnings.moments(grant.expires_at).map(|(_, at)| local(at)).collect();
                GrantView {
                    grant: grant.clone(),
                    started_at: local(grant.issued_at),
                    ends_at: local(grant.expires_at),
                    soon_at: moments.first().copied(),
                    urgent_at: moments.last().copied(),
                }
            })
            .collect();
        let awaiting_me = live
            .awaiting_me
            .iter()
            .map(|request| ApprovalView { request: request.clone(), expires_at: local(request.pending_until) })
            .collect();
        let waiting = live
            .waiting_requests(now)
            .map(|request| WaitingView {
                request: request.clone(),
                since: local(request.created_at),
                expires_at: local(request.pending_until),
            })
            .collect();
        let to_review = live
            .to_review
            .iter()
            .map(|item| ReviewView {
                grant: item.grant.clone(),
                request: item.request.clone(),
                taken_at: local(item.grant.issued_at),
            })
            .collect();
        AppView {
            broker: live.broker.clone(),
            connection: live.connection.clone(),
            principal: live.principal.clone(),
            grants,
            requests: live.requests.clone(),
            waiting,
            awaiting_me,
            to_review,
            urgent_within: warnings.urgent(),
            revision: 0,
        }
    }
}

/// The views sent to the window, numbered: a view equal to the last one
/// sent is not sent again.
#[derive(Debug, Default)]
pub struct Revisions {
    last: Option<AppView>,
}

impl Revisions {
    /// `view`, numbered, when it differs from the last one sent.
    pub fn next(&mut self, mut view: AppView) -> Option<AppView> {
        let revision = self.last.as_ref().map_or(1, |last| last.revision + 1);
        if let Some(last) = &self.last {
            view.revision = last.revision;
            if *last == view {
                return None;
            }
        }
        view.revision = revision;
        self.last = Some(view.clone());
        Some(view)
    }

    /// The last view sent.
    pub fn last(&self) -> Option<&AppView> {
        self.last.as_ref()
    }
}

/// Who the app is logged in as, for the settings view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
#[ts(optional_fields = nullable)]
pub struct Account {
    pub broker: String,
    /// None: not logged in.
    pub session: Option<SessionKind>,
    /// The identity provider the session came from.
    pub idp: Option<String>,
    /// When the session ends unless it is renewed.
    pub expires_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{grant, request};

    const LOCAL: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);

    #[test]
    fn window_view_has_deadlines_and_warning_moments_on_this_machines_clock() {
        let mut live = Live::new("https://b");
        // The broker's clock is a minute ahead of this machine's.
        live.clock = BrokerClock::with_offset(60_000);
        let broker_now = live.clock.broker_time(LOCAL);
        live.grants = vec![grant("orders-api", broker_now.plus(Duration::from_mins(30)))];
        live.awaiting_me = vec![request("dave@acme.example")];
        let view = AppView::of(&live, &Warnings::default(), LOCAL);
        let shown = &view.grants[0];
        assert_eq!(shown.ends_at, LOCAL.plus(Duration::from_mins(30)), "thirty minutes left here too");
        assert_eq!(shown.soon_at, Some(LOCAL.plus(Duration::from_mins(20))), "soon ten minutes before");
        assert_eq!(shown.urgent_at, Some(LOCAL.plus(Duration::from_mins(28))), "urgent two minutes before");
        assert_eq!(view.urgent_within, Some(Duration::from_mins(2)), "the urgent threshold, for words");
        let pending_until = live.awaiting_me[0].pending_until;
        assert_eq!(view.awaiting_me[0].expires_at, pending_until.plus_millis(-60_000), "its expiry, here");
    }

    #[test]
    fn my_requests_wait_until_decided_or_their_timeout_on_this_machines_clock() {
        let mut live = Live::new("https://b");
        live.clock = BrokerClock::with_offset(60_000);
        let broker_now = live.clock.broker_time(LOCAL);
        let mut waiting = request("bob@acme.example");
        waiting.pending_until = broker_now.plus(Duration::from_mins(30));
        let mut timed_out = request("bob@acme.example");
        timed_out.pending_until = broker_now;
        let mut decided = request("bob@acme.example");
        decided.state = hourglass_core::RequestState::Approved;
        live.requests = vec![waiting.clone(), timed_out, decided];
        let view = AppView::of(&live, &Warnings::default(), LOCAL);
        assert_eq!(view.waiting.len(), 1, "only the one still waiting: {:?}", view.waiting);
        assert_eq!(view.waiting[0].request.id, waiting.id);
        assert_eq!(view.waiting[0].expires_at, LOCAL.plus(Duration::from_mins(30)), "its timeout, here");
        assert_eq!(view.waiting[0].since, waiting.created_at.plus_millis(-60_000), "when I asked, here");
    }

    #[test]
    fn window_view_drops_grants_at_their_deadline_whatever_the_broker_said() {
        let mut live = Live::new("https://b");
        live.grants = vec![grant("orders-api", LOCAL), grant("billing-api", LOCAL.plus_millis(1))];
        let view = AppView::of(&live, &Warnings::default(), LOCAL);
        let names: Vec<&str> = view.grants.iter().map(|g| g.grant.resource.as_str()).collect();
        assert_eq!(names, ["billing-api"], "the one at its deadline is gone");
        assert_eq!(live.next_deadline(LOCAL), Some(LOCAL.plus_millis(1)), "the next one to drop");
        let none = AppView::of(&live, &Warnings::new([]), LOCAL);
        assert_eq!((none.grants[0].soon_at, none.grants[0].urgent_at), (None, None), "no warning times, no moments");
    }

    #[test]
    fn revisions_number_changed_views_and_skip_identical_ones() {
        let mut revisions = Revisions::default();
        let live = Live::new("https://b");
        let first = revisions.next(AppView::of(&live, &Warnings::default(), LOCAL)).expect("the first view is sent");
        assert_eq!(first.revision, 1);
        assert!(revisions.next(AppView::of(&live, &Warnings::default(), LOCAL)).is_none(), "the same view is not");
        let changed = Live { connection: Connection::Online, ..live };
        let second = revisions.next(AppView::of(&changed, &Warnings::default(), LOCAL)).expect("a change is sent");
        assert_eq!(second.revision, 2, "with the next number");
    }
}
