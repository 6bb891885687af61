//! Desktop notifications through the notification daemon (notify-rust).
//! An expiry warning offers "Renew" where the desktop supports actions.

use hourglass_app::alerts::{Alert, AlertKind};
use tauri::{AppHandle, Emitter};

pub fn show(app: &AppHandle, alert: Alert) {
    let app = app.clone();
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
        handle.wait_for_action(|action| match action {
            "renew" => {
                if let Some(grant) = alert.grant.clone() {
                    let app = app.clone();
                    tauri::async_runtime::spawn(async move {
                        if let Err(error) = crate::commands::renew_by_default(&app, &grant).await {
                            tracing::warn!("renewing from a notification failed: {}", error.message);
                        }
                    });
                }
            }
            "default" => {
                crate::desktop::show_window(&app);
                let tab = if matches!(alert.kind, AlertKind::ApprovalNeeded | AlertKind::BreakGlass) {
                    "approvals"
                } else {
                    "grants"
                };
                let _ = app.emit("navigate", tab);
            }
            _ => {}
        });
    });
}
