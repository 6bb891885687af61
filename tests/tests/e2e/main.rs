//! End-to-end tests: real `hourglassd` processes driven by the real
//! `hourglass` binary. One test binary for the crate; one module per topic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod agent;
mod architecture;
mod audit;
mod aws;
mod ci;
mod desktop;
mod exec;
mod faults;
mod lifecycle;
mod login;
mod notify;
mod openapi;
mod postgres;
mod replicas;
mod secrets;
mod serve;
mod siem;
mod ssh;
mod tls;
