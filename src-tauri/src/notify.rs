//! Desktop notifications through the notification daemon (notify-rust).
//! An expiry warning offers "Renew" where the desktop supports actions;
//! what an action does is the caller's.

use std::sync::OnceLock;

use hourglass_app::alerts::{Alert, AlertKind, escape_markup};
use hourglass_app::ipc::Tab;
use hourglass_core::GrantId;

/// What the user picked on a notification.
pub enum Picked {
    Renew(GrantId),
    Open(Tab),
}

/// Shows `alert`; `picked` runs with the action the user picks, if any.
pub fn show(alert: Alert, picked: impl FnOnce(Picked) + Send + 'static) {
    // Showing waits on D-Bus, and waiting for an action blocks: own thread.
    std::thread::spawn(move || {
        let mut notification = notify_rust::Notification::new();
        let body = if renders_markup() { escape_markup(&alert.body) } else { alert.body.clone() };
        notification.appname("Hourglass").summary(&alert.title).body(&body).icon("dialog-information");
        let renewable = alert.kind == AlertKind::Expiring && alert.grant.is_some();
        if renewable {
            notification.action("renew", "Renew");
        }
        notification.action("default", "Open");
        if alert.kind == AlertKind::Expiring {
            notification.urgency(notify_rust::Urgency::Critical);
        }
        let handle = match notification.show() {
            Ok(handle) => handle,
            Err(error) => {
                tracing::warn!("cannot show a notification: {error}");
                return;
            }
        };
        handle.wait_for_action(|action| match (action, alert.grant.clone()) {
            ("renew", Some(grant)) => picked(Picked::Renew(grant)),
            ("default", _) => {
                let asks_me = matches!(alert.kind, AlertKind::ApprovalNeeded | AlertKind::BreakGlass);
                picked(Picked::Open(if asks_me { Tab::Approvals } else { Tab::Grants }));
            }
            _ => {}
        });
    });
}

/// Whether the notification daemon renders markup in bodies: then what
/// people typed is escaped, so a reason cannot become a link. Asked once
/// (the daemon is the session's).
fn renders_markup() -> bool {
    static RENDERS: OnceLock<bool> = OnceLock::new();
    *RENDERS.get_or_init(|| {
        // Capabilities are a freedesktop (D-Bus) notion; elsewhere bodies are plain text.
        #[cfg(all(unix, not(target_os = "macos")))]
        return notify_rust::get_capabilities()
            .is_ok_and(|capabilities| capabilities.iter().any(|c| c == "body-markup"));
        #[cfg(not(all(unix, not(target_os = "macos"))))]
        false
    })
}
