//! Desktop notifications through the notification daemon (notify-rust).
//! An expiry warning offers "Renew" where the desktop supports actions;
//! what an action does is the caller's.

use hourglass_app::alerts::{Alert, AlertKind};
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
        notification.appname("Hourglass").summary(&alert.title).body(&alert.body).icon("dialog-information");
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
