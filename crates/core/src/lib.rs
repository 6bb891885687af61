//! Hourglass's domain: what a request, a grant and an audit event are, the
//! rules that move them from state to state, and the wire types every part
//! of Hourglass speaks. Pure: no I/O, no clock (callers pass `now`), no
//! randomness (callers pass random bits).

pub mod api;
pub mod approval;
pub mod audit;
pub mod authentication;
pub mod countdown;
pub mod duration;
pub mod env_names;
pub mod grant;
pub mod id;
pub mod principal;
pub mod request;
pub mod review;
pub mod siem;
pub mod timestamp;

pub use approval::ApprovalRule;
pub use countdown::{TimeLeft, Urgency, Warnings};
pub use duration::{Duration, DurationError};
pub use grant::{Grant, GrantRefused, GrantState, LifetimeLimits, Revocation, RevocationStatus};
pub use id::{GrantId, IdError, RequestId};
pub use principal::Principal;
pub use request::{AccessRequest, Decision, DecisionOutcome, DecisionRefused, NewRequest, RequestState, Verdict};
pub use timestamp::Timestamp;
