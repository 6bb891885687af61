//! `hourglassd`, the Hourglass access broker: policy, approvals, credential
//! providers, expiry and revocation, audit. See ARCHITECTURE.md.

mod alarm;
pub mod auth;
pub mod broker;
pub mod checkpoints;
pub mod clock;
pub mod dev;
pub mod error;
pub mod events;
mod expiry;
mod files;
mod follower;
pub mod http;
mod introspection;
pub mod keys;
mod lifecycle;
pub mod limits;
pub mod metrics;
pub mod notify;
pub mod pg;
mod pool;
pub mod provider;
mod refusals;
mod reload;
pub mod roots;
pub mod serve;
pub mod server;
pub mod settings;
pub mod siem;
pub mod store;
pub mod tls;
pub mod web_login;

pub use broker::{Broker, BrokerParts, Reload};
pub use error::{Error, Result};
pub use introspection::Introspection;
