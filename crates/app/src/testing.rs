//! Sample requests and grants for unit tests.

use hourglass_core::{AccessRequest, Duration, Grant, GrantId, NewRequest, RequestId, Timestamp};

pub fn request(requester: &str) -> AccessRequest {
    AccessRequest::file(
        RequestId::from_random(3),
        NewRequest {
            requester: requester.into(),
            resource: "orders-api".into(),
            role: "write".into(),
            duration: Duration::from_mins(30),
            reason: "fix order 42".into(),
            ticket: None,
            break_glass: false,
            renews: None,
        },
        Vec::new(),
        Duration::from_hours(1),
        Timestamp::from_unix_millis(1_800_000_000_000),
    )
}

pub fn grant(resource: &str, expires_at: Timestamp) -> Grant {
    let mut request = request("alice@acme.example");
    request.resource = resource.into();
    request.role = "read".into();
    let mut grant = Grant::start(GrantId::from_random(resource.len() as u64), &request, "token", expires_at);
    grant.expires_at = expires_at;
    grant.activate(true, expires_at);
    grant
}
