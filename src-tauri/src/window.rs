//! The main window: showing it, and telling it things ([`AppEvent`]s, whose
//! names and payloads `hourglass_app::ipc` defines for both sides).

use hourglass_app::ipc::{AppEvent, Tab};
use tauri::{AppHandle, Emitter, Manager};

pub fn show(app: &AppHandle) {
    if let Some(window) = app.get_webview_window("main") {
        let _ = window.unminimize();
        let _ = window.show();
        let _ = window.set_focus();
    }
}

pub fn hide(app: &AppHandle) {
    if let Some(window) = app.get_webview_window("main") {
        let _ = window.hide();
    }
}

/// Shows the window on `tab`.
pub fn open_on(app: &AppHandle, tab: Tab) {
    show(app);
    emit(app, AppEvent::navigate(tab));
}

pub fn emit(app: &AppHandle, event: AppEvent) {
    // No window listening (it never opened) is not an error.
    let _ = app.emit(event.name(), &event);
}
