//! How recently, and how, a decider proved who they are: the rule that an
//! approval counts only from a person who authenticated at their identity
//! provider within the time policy allows (`approval_max_auth_age`), with
//! the methods it asks for (`approval_auth_methods`), whatever surface
//! they approve from. A refresh of a session does not count as
//! authenticating: `auth_time` is when they last logged in.

use crate::{Duration, Timestamp};

/// What a caller's token says of their authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authentication {
    /// OpenID Connect's `auth_time`: when they last logged in at their
    /// identity provider. None: the token does not say.
    pub at: Option<Timestamp>,
    /// `amr`: how they logged in (`pwd`, `otp`, `hwk`, `mfa`…).
    pub methods: Vec<String>,
    /// A machine's identity (a CI pipeline's), not a person's.
    pub machine: bool,
}

/// What policy asks of a decider's authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FreshAuthentication {
    /// The longest since their last login; none: any.
    pub max_age: Option<Duration>,
    /// Methods of which their login must have used one; empty: any.
    pub methods: Vec<String>,
}

/// Why an authentication does not suffice to decide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepUpRequired {
    #[error("a machine's identity cannot approve or deny requests: a person decides")]
    Machine,
    #[error("deciding this needs a login within the last {max_age}{}: log in again, then decide", since(*.age))]
    TooOld { max_age: Duration, age: Option<Duration> },
    #[error("deciding this needs a login with {} (yours: {})", .needed.join(" or "), if .used.is_empty() { "not said".to_owned() } else { .used.join(", ") })]
    Method { needed: Vec<String>, used: Vec<String> },
}

fn since(age: Option<Duration>) -> String {
    match age {
        Some(age) => format!(" (yours was {age} ago)"),
        None => " (your session does not say when you logged in)".to_owned(),
    }
}

impl FreshAuthentication {
    /// Whether `authentication` may decide at `now`. A machine never may.
    pub fn check(&self, authentication: &Authentication, now: Timestamp) -> Result<(), StepUpRequired> {
        if authentication.machine {
            return Err(StepUpRequired::Machine);
        }
        if let Some(max_age) = self.max_age {
            let age = authentication.at.map(|at| at.until(now));
            // A login stamped in the future (clock skew) counts as now.
            if age.is_none_or(|age| age > max_age) {
                return Err(StepUpRequired::TooOld { max_age, age });
            }
        }
        if !self.methods.is_empty() && !authentication.methods.iter().any(|used| self.methods.contains(used)) {
            return Err(StepUpRequired::Method { needed: self.methods.clone(), used: authentication.methods.clone() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);

    fn person(minutes_ago: Option<u64>, methods: &[&str]) -> Authentication {
        Authentication {
            at: minutes_ago.map(|m| NOW.minus(Duration::from_mins(m))),
            methods: methods.iter().map(|m| (*m).to_owned()).collect(),
            machine: false,
        }
    }

    #[test]
    fn a_login_older_than_policy_allows_must_be_renewed() {
        let five = FreshAuthentication { max_age: Some(Duration::from_mins(5)), methods: Vec::new() };
        assert_eq!(five.check(&person(Some(4), &[]), NOW), Ok(()));
        assert_eq!(five.check(&person(Some(5), &[]), NOW), Ok(()), "exactly the limit counts");
        let old = five.check(&person(Some(90), &[]), NOW).unwrap_err();
        assert_eq!(
            old.to_string(),
            "deciding this needs a login within the last 5m (yours was 1h30m ago): log in again, then decide"
        );
        let unknown = five.check(&person(None, &[]), NOW).unwrap_err();
        assert!(unknown.to_string().contains("does not say when you logged in"), "{unknown}");
        let any = FreshAuthentication::default();
        assert_eq!(any.check(&person(None, &[]), NOW), Ok(()), "no rule: any login");
        let future = Authentication { at: Some(NOW.plus(Duration::from_secs(3))), ..person(None, &[]) };
        assert_eq!(five.check(&future, NOW), Ok(()), "clock skew counts as now");
    }

    #[test]
    fn policy_can_ask_for_a_second_factor_and_machines_never_decide() {
        let mfa = FreshAuthentication { max_age: None, methods: vec!["mfa".into(), "hwk".into()] };
        assert_eq!(mfa.check(&person(Some(1), &["pwd", "hwk"]), NOW), Ok(()));
        let password = mfa.check(&person(Some(1), &["pwd"]), NOW).unwrap_err();
        assert_eq!(password.to_string(), "deciding this needs a login with mfa or hwk (yours: pwd)");
        let pipeline = Authentication { machine: true, ..person(Some(0), &["mfa"]) };
        assert_eq!(FreshAuthentication::default().check(&pipeline, NOW), Err(StepUpRequired::Machine));
    }
}
