//! Wire types of the broker's HTTP API and event stream, shared by the broker
//! and every client. Domain objects ([`AccessRequest`], [`Grant`]) travel
//! as they are; these types wrap them for each call.

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::approval::ApprovalRule;
use crate::{AccessRequest, Duration, Grant, GrantId, Principal, Timestamp};

/// Every error the API returns: a stable `code` for programs to branch on and
/// a `message` for people. Codes are added only when a client needs one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields = nullable))]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body or a parameter is malformed.
    InvalidRequest,
    InvalidDuration,
    /// A duration outside the role's bounds.
    DurationOutOfBounds,
    ReasonRequired,
    TicketRequired,
    UnknownResource,
    UnknownRole,
    NotFound,
    /// No valid bearer token.
    Unauthenticated,
    /// Policy does not allow it.
    Forbidden,
    /// Deciding needs a fresher login (or another method, or a person):
    /// log in again at the identity provider (`prompt=login`), then retry.
    /// Sent with `WWW-Authenticate: Bearer error="insufficient_user_authentication"` (RFC 9470).
    StepUpRequired,
    SelfApproval,
    AlreadyDecided,
    /// The request was decided, cancelled or expired already.
    NotPending,
    /// The grant has ended.
    NotActive,
    /// The same access is already pending or active.
    Duplicate,
    /// The approval would not count: the approvals the approver's groups can
    /// give are in, and the request waits for other groups.
    ApprovalNotNeeded,
    /// The endpoint exists but not with this HTTP method.
    MethodNotAllowed,
    PayloadTooLarge,
    /// The caller makes calls faster than the broker admits per principal;
    /// `Retry-After` says when to try again.
    RateLimited,
    /// The caller holds as many of something (requests waiting for approval,
    /// open event streams) as one principal may; the message names which.
    LimitReached,
    /// The credential provider failed; the grant was not issued.
    ProviderFailed,
    /// The broker cannot take new work now (store unavailable, shutting down).
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest
            | ErrorCode::InvalidDuration
            | ErrorCode::DurationOutOfBounds
            | ErrorCode::ReasonRequired
            | ErrorCode::TicketRequired => 400,
            ErrorCode::Unauthenticated | ErrorCode::StepUpRequired => 401,
            ErrorCode::Forbidden | ErrorCode::SelfApproval => 403,
            ErrorCode::UnknownResource | ErrorCode::UnknownRole | ErrorCode::NotFound => 404,
            ErrorCode::AlreadyDecided
            | ErrorCode::NotPending
            | ErrorCode::NotActive
            | ErrorCode::Duplicate
            | ErrorCode::ApprovalNotNeeded => 409,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::RateLimited | ErrorCode::LimitReached => 429,
            ErrorCode::Internal => 500,
            ErrorCode::ProviderFailed => 502,
            ErrorCode::Unavailable => 503,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// `POST /v1/requests`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields = nullable))]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub resource: String,
    pub role: String,
    /// How long the access should last once issued, e.g. `15m` or `1h30m`.
    #[cfg_attr(feature = "openapi", schema(example = "30m", pattern = r"^([0-9]+[smhd])+$"))]
    pub duration: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// Ask for access at once under a break-glass policy.
    #[serde(default)]
    pub break_glass: bool,
    /// What the client made for a credential whose secret never leaves it
    /// (PostgreSQL and SSH resources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_material: Option<ClientMaterial>,
}

/// The public half of a secret the client generated: the broker builds the
/// credential around it and never sees the secret itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields = nullable))]
#[serde(deny_unknown_fields)]
pub struct ClientMaterial {
    /// PostgreSQL: the SCRAM-SHA-256 verifier of a password the client
    /// generated (`SCRAM-SHA-256$<iterations>:<salt>$<stored key>:<server key>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_scram_verifier: Option<String>,
    /// SSH: an OpenSSH public key (`ssh-ed25519 AAAA…`) whose private key stays
    /// on the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_public_key: Option<String>,
}

/// The secret the client holds to complete a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum ClientSecret {
    /// The password whose verifier was sent: export it as `PGPASSWORD`.
    PostgresPassword,
    /// The private key of the public key that was sent, used with `ssh_certificate`.
    SshPrivateKey,
}

/// `POST /v1/grants/{id}/ready`: the owner's client confirms the credential
/// works (for example, it logged in with the password only it holds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields = nullable))]
#[serde(deny_unknown_fields)]
pub struct ReadyBody {
    /// What the client checked, for the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
}

/// A request and, once approved, the grant it produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields = nullable))]
pub struct RequestOutcome {
    pub request: AccessRequest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Grant>,
}

/// `GET /v1/requests`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields = nullable))]
pub struct RequestList {
    /// Requests I filed.
    pub mine: Vec<AccessRequest>,
    /// Pending requests of others that I may decide and have not decided yet.
    pub awaiting_me: Vec<AccessRequest>,
    pub server_time: Timestamp,
}

/// `POST /v1/requests/{id}/approve`, `/deny`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields = nullable))]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A channel that can tell me of my requests and my access (policy's
/// `notify_requester`), and whether it does: each person chooses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct PersonalChannel {
    pub name: String,
    /// `email` or `webhook`.
    pub kind: String,
    pub enabled: bool,
}

/// `PUT /v1/me/notifications`: the channels I do not want to hear from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(deny_unknown_fields)]
pub struct NotificationChoice {
    pub muted: Vec<String>,
}

/// `POST /v1/grants/{id}/review`: a verdict on access taken under break-glass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields = nullable))]
#[serde(deny_unknown_fields)]
pub struct ReviewBody {
    pub verdict: crate::review::ReviewVerdict,
    /// Why: required.
    pub comment: String,
}

/// A break-glass grant waiting for my review, with the request it answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields = nullable))]
pub struct ReviewItem {
    pub grant: Grant,
    pub request: AccessRequest,
}

/// `GET /v1/grants`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields = nullable))]
pub struct GrantList {
    pub grants: Vec<Grant>,
    /// The broker's clock, the reference for every deadline.
    pub server_time: Timestamp,
}

/// `POST /v1/grants/{id}/renew`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields = nullable))]
#[serde(deny_unknown_fields)]
pub struct RenewBody {
    /// The grant's new time left, counted from now.
    #[cfg_attr(feature = "openapi", schema(example = "1h", pattern = r"^([0-9]+[smhd])+$"))]
    pub duration: String,
    /// Why more time is needed; defaults to the original request's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A renewal is a request too: granted at once within policy, otherwise
/// pending approval while the grant keeps its current deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields = nullable))]
pub struct RenewOutcome {
    pub grant: Grant,
    pub request: AccessRequest,
}

/// `POST /v1/grants/{id}/revoke`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields = nullable))]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /v1/grants/revoke`: ends at once every live grant on a resource
/// (for an incident), narrowed to a role or an owner.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RevokeMatchingBody {
    pub resource: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Why, for the audit log and the owners: required.
    pub reason: String,
}

/// The grants a bulk revocation ended, each after its first attempt to
/// remove the credential (a failed one is retried in the background).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevokedGrants {
    pub grants: Vec<Grant>,
}

/// `GET /v1/resources`: what can be requested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields = nullable))]
pub struct Catalog {
    pub resources: Vec<CatalogResource>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields = nullable))]
pub struct CatalogResource {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub provider: String,
    pub roles: Vec<CatalogRole>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields = nullable))]
pub struct CatalogRole {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub min_duration: Duration,
    pub max_duration: Duration,
    pub default_duration: Duration,
    pub max_total: Duration,
    pub renewals_without_approval: u32,
    pub approvals: Vec<ApprovalRule>,
    pub reason_required: bool,
    pub ticket_required: bool,
    /// Whether policy lets me request it for its default duration.
    pub may_request: bool,
    /// Whether policy approves it at once for me at its default duration.
    pub auto_approve: bool,
}

/// `GET /v1/whoami`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields = nullable))]
pub struct WhoAmI {
    pub principal: Principal,
    pub server_time: Timestamp,
}

/// `GET /v1/grants/{id}/credential`: the secret material of a live grant,
/// for its owner only. Zeroized when dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields = nullable))]
pub struct Credential {
    #[zeroize(skip)]
    pub grant_id: GrantId,
    #[zeroize(skip)]
    pub resource: String,
    #[zeroize(skip)]
    pub role: String,
    #[zeroize(skip)]
    pub provider: String,
    #[zeroize(skip)]
    pub expires_at: Timestamp,
    /// When this credential itself stops working, if before the grant's
    /// deadline (short-lived cloud keys): the agent fetches a fresh one
    /// before then, while the grant lives ([`Credential::refresh_at`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[zeroize(skip)]
    pub valid_until: Option<Timestamp>,
    /// Variables a shell exports to use the grant.
    pub env: Vec<EnvVar>,
    /// SSH: the OpenSSH user certificate for the client's public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[zeroize(skip)]
    pub ssh_certificate: Option<String>,
    /// The client's own secret that completes this credential, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[zeroize(skip)]
    pub client_secret: Option<ClientSecret>,
}

impl Credential {
    /// When a holder that fetched this credential at `fetched_at` fetches
    /// the next one: halfway through the credential's own life, so that a
    /// failed fetch has the other half to be retried in, and tools that
    /// renew their keys some minutes ahead (the AWS SDKs: 5 to 15) find
    /// keys with most of their life left. `None`: it lasts as long as the
    /// grant. Broker instants.
    pub fn refresh_at(&self, fetched_at: Timestamp) -> Option<Timestamp> {
        let ends = self.valid_until.filter(|ends| *ends < self.expires_at)?;
        Some(fetched_at.plus_millis(fetched_at.millis_until(ends).max(0) / 2))
    }

    /// When this credential stops working: its own end, else the grant's.
    pub fn ends_at(&self) -> Timestamp {
        self.valid_until.map_or(self.expires_at, |ends| ends.min(self.expires_at))
    }

    /// Drops the variables no credential may set
    /// ([`crate::env_names::refused_credential_name`]), whoever sent them;
    /// returns their names.
    pub fn drop_refused_names(&mut self) -> Vec<String> {
        let mut dropped = Vec::new();
        self.env.retain(|var| {
            let refused = crate::env_names::refused_credential_name(&var.name).is_some();
            if refused {
                dropped.push(var.name.clone());
            }
            !refused
        });
        dropped
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields = nullable))]
pub struct EnvVar {
    pub name: String,
    pub value: String,
    /// Whether the value is a secret (never print it without being asked).
    pub secret: bool,
}

/// `GET /v1/auth/config` (no token needed): how clients log this broker's
/// users in. One OpenID Connect issuer for people; the client is public
/// (Authorization Code with PKCE, or the device grant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields = nullable))]
pub struct AuthConfig {
    /// The issuer URL; its discovery document is at
    /// `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    /// The development issuer of `hourglassd dev`: demo identities, no passwords.
    #[serde(default)]
    pub dev: bool,
}

/// `POST /v1/auth/token`: the answer to an RFC 8693 token exchange, a broker
/// session for the principal an ID token (a person's, or a CI pipeline's
/// OIDC token) names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields = nullable))]
pub struct SessionToken {
    pub access_token: String,
    #[zeroize(skip)]
    pub issued_token_type: String,
    #[zeroize(skip)]
    pub token_type: String,
    /// Seconds the session lasts.
    #[zeroize(skip)]
    pub expires_in: u64,
}

/// `GET /readyz`: this replica serves. Load balancers route to replicas
/// that answer 200 here; `/healthz` only says the process lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Readiness {
    /// `ready`.
    pub status: String,
    /// This replica's id (as in the audit log's revocation attempts).
    pub replica: String,
    /// Replicas holding a lease on the store now, this one included.
    pub replicas: u64,
}

/// `GET /healthz`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields = nullable))]
pub struct Health {
    pub status: String,
    pub version: String,
    pub server_time: Timestamp,
}

/// One message on `GET /v1/events` (server-sent events; the SSE `event:`
/// field carries [`EventKind`], `data:` this object as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields = nullable))]
pub struct Event {
    pub kind: EventKind,
    /// The broker's clock when the event happened.
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<AccessRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Grant>,
    /// `session.ended`: the session (or bearer token) that ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<EndedSession>,
}

impl Event {
    /// An event of `kind` at `at`, about nothing yet.
    pub fn new(kind: EventKind, at: Timestamp) -> Event {
        Event { kind, at, request: None, grant: None, session: None }
    }
}

/// A session its holder ended: refused by every replica until it would
/// have expired anyway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct EndedSession {
    /// The session's id (its `jti`), or `sha256:HEX` of another bearer token.
    pub id: String,
    /// When it would have expired (Unix seconds).
    pub expires_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub enum EventKind {
    /// First message on every connection: carries the broker's clock.
    #[serde(rename = "hello")]
    Hello,
    /// Events were dropped for this subscriber: reload lists, then carry on.
    #[serde(rename = "resync")]
    Resync,
    /// A request was filed that I may decide (or, for break-glass, that I
    /// should know of).
    #[serde(rename = "request.filed")]
    RequestFiled,
    /// An approval was counted; the request still waits.
    #[serde(rename = "request.updated")]
    RequestUpdated,
    #[serde(rename = "request.approved")]
    RequestApproved,
    #[serde(rename = "request.denied")]
    RequestDenied,
    #[serde(rename = "request.cancelled")]
    RequestCancelled,
    #[serde(rename = "request.expired")]
    RequestExpired,
    #[serde(rename = "grant.issued")]
    GrantIssued,
    #[serde(rename = "grant.renewed")]
    GrantRenewed,
    #[serde(rename = "grant.revoked")]
    GrantRevoked,
    #[serde(rename = "grant.expired")]
    GrantExpired,
    #[serde(rename = "grant.failed")]
    GrantFailed,
    /// The owner's client confirmed the credential works.
    #[serde(rename = "grant.ready")]
    GrantReady,
    /// A break-glass grant was reviewed (its owner and reviewers hear).
    #[serde(rename = "grant.reviewed")]
    GrantReviewed,
    /// One of my sessions was ended (logged out): streams on it close.
    #[serde(rename = "session.ended")]
    SessionEnded,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Hello => "hello",
            EventKind::Resync => "resync",
            EventKind::RequestFiled => "request.filed",
            EventKind::RequestUpdated => "request.updated",
            EventKind::RequestApproved => "request.approved",
            EventKind::RequestDenied => "request.denied",
            EventKind::RequestCancelled => "request.cancelled",
            EventKind::RequestExpired => "request.expired",
            EventKind::GrantIssued => "grant.issued",
            EventKind::GrantRenewed => "grant.renewed",
            EventKind::GrantRevoked => "grant.revoked",
            EventKind::GrantExpired => "grant.expired",
            EventKind::GrantFailed => "grant.failed",
            EventKind::GrantReady => "grant.ready",
            EventKind::GrantReviewed => "grant.reviewed",
            EventKind::SessionEnded => "session.ended",
        }
    }

    /// Whether the event closes a request (approved, denied, cancelled, expired).
    pub fn decides_request(self) -> bool {
        matches!(
            self,
            EventKind::RequestApproved
                | EventKind::RequestDenied
                | EventKind::RequestCancelled
                | EventKind::RequestExpired
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_received_credential_loses_the_variables_no_credential_may_set() {
        let var = |name: &str| EnvVar { name: name.into(), value: "x".into(), secret: true };
        let mut credential = Credential {
            grant_id: crate::GrantId::from_random(1),
            resource: "cloud".into(),
            role: "deploy".into(),
            provider: "exec".into(),
            expires_at: crate::Timestamp::from_unix_millis(0),
            valid_until: None,
            env: vec![var("CLOUD_KEY"), var("LD_PRELOAD"), var("HTTPS_PROXY"), var("CLOUD_REGION")],
            ssh_certificate: None,
            client_secret: None,
        };
        assert_eq!(credential.drop_refused_names(), ["LD_PRELOAD", "HTTPS_PROXY"]);
        let kept: Vec<&str> = credential.env.iter().map(|var| var.name.as_str()).collect();
        assert_eq!(kept, ["CLOUD_KEY", "CLOUD_REGION"]);
    }

    #[test]
    fn a_short_lived_credential_is_refreshed_halfway_through_its_own_life() {
        let at = |minutes: i64| crate::Timestamp::from_unix_millis(minutes * 60_000);
        let mut credential = Credential {
            grant_id: crate::GrantId::from_random(1),
            resource: "aws-prod".into(),
            role: "operator".into(),
            provider: "aws".into(),
            expires_at: at(60),
            valid_until: Some(at(15)),
            env: Vec::new(),
            ssh_certificate: None,
            client_secret: None,
        };
        assert_eq!(credential.refresh_at(at(0)), Some(at(0).plus_millis(450_000)), "7.5 of 15 minutes");
        assert_eq!(credential.ends_at(), at(15), "its own end comes first");
        credential.valid_until = Some(at(70));
        assert_eq!(
            credential.refresh_at(at(0)),
            None,
            "lasting past the deadline: the grant's renewal brings a new one"
        );
        assert_eq!(credential.ends_at(), at(60), "the grant's deadline bounds it");
        credential.valid_until = None;
        assert_eq!(credential.refresh_at(at(0)), None, "as long as the grant");
        credential.valid_until = Some(at(15));
        assert_eq!(credential.refresh_at(at(20)), Some(at(20)), "already past its end: fetch now");
    }

    #[test]
    fn error_bodies_carry_a_snake_case_code() {
        let error = ApiError { code: ErrorCode::SelfApproval, message: "you cannot decide your own request".into() };
        let json = serde_json::to_string(&error).expect("serialize");
        assert_eq!(json, r#"{"code":"self_approval","message":"you cannot decide your own request"}"#);
    }

    #[test]
    fn event_kinds_use_dotted_names_on_the_wire() {
        for kind in [EventKind::Hello, EventKind::RequestFiled, EventKind::GrantExpired] {
            let json = serde_json::to_string(&kind).expect("serialize");
            assert_eq!(json, format!("\"{}\"", kind.as_str()), "wire name matches as_str");
        }
    }

    #[test]
    fn unknown_fields_in_a_request_body_are_refused() {
        let body = r#"{"resource":"r","role":"x","duration":"5m","reason":"y","duraton":"1h"}"#;
        let error = serde_json::from_str::<CreateRequest>(body).expect_err("typo refused");
        assert!(error.to_string().contains("unknown field `duraton`"), "{error}");
    }
}
