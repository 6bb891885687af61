//! What the Hourglass desktop app does, without Tauri: its live view of the
//! broker, the tray's status, which notifications to show, the user's
//! settings, and the contract with its window ([`ipc`]). The Tauri crate
//! (`src-tauri`) only wires these to windows, the tray and the notification
//! daemon, so everything here is tested without a display.

pub mod agent_host;
pub mod alerts;
pub mod autostart;
pub mod integration;
pub mod ipc;
pub mod offer;
pub mod settings;
pub mod sync;
pub mod tray;
pub mod view;

#[cfg(test)]
pub(crate) mod testing;
