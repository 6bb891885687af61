//! A small, hand-written AWS client for the broker's AWS credential
//! provider: just enough of STS (AssumeRole, AssumeRoleWithWebIdentity,
//! GetCallerIdentity) and IAM (inline role policies, GetRole) over the
//! Query protocol, signed with SigV4, plus the standard AWS credential
//! chain (environment, web identity, shared files, ECS/EKS container
//! credentials, EC2 instance metadata) for the broker's own identity. The
//! AWS SDK crates would do all this and far more, at a compile cost out of
//! proportion to the few calls the broker makes. The caller hands in its
//! `reqwest::Client`, so TLS settings stay the caller's. Secrets (secret
//! keys, session tokens, web identity tokens) are zeroized on drop and kept
//! out of `Debug`, errors and logs.

mod credentials;
mod endpoints;
mod error;
mod iam;
mod query;
pub mod sigv4;
mod sts;

pub use credentials::{CredentialChain, CredentialSource, Credentials, Env};
pub use endpoints::Endpoints;
pub use error::{Error, Result};
pub use iam::{Iam, Role, RoleArn, parse_role_arn};
pub use sts::{AssumeRole, AssumedRole, CallerIdentity, Sts, session_name_is_valid};
