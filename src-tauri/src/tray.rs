//! The tray icon: its look says the state (idle, active, expiring soon,
//! approvals waiting), its menu lists live grants with the time left.
//! On Linux (StatusNotifier/AppIndicator) a click opens the menu; "Open
//! Hourglass" shows the window.

use std::sync::Mutex;

use hourglass_app::ipc::Tab;
use hourglass_app::tray::{TrayModel, TrayStatus, waiting_label};
use tauri::AppHandle;
use tauri::image::Image;
use tauri::menu::{Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::{TrayIcon, TrayIconBuilder};

use crate::window;

const TRAY_ID: &str = "hourglass";

/// The menu's items, by id. Ids cross D-Bus as strings; everywhere else they
/// are this type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrayItem {
    Open,
    Request,
    Approvals,
    /// My requests waiting for approval: opens the Grants view, where they are.
    Waiting,
    Quit,
    /// A live grant: opens the window on it.
    Grant(String),
}

impl TrayItem {
    pub fn id(&self) -> String {
        match self {
            TrayItem::Open => "open".into(),
            TrayItem::Request => "request".into(),
            TrayItem::Approvals => "approvals".into(),
            TrayItem::Waiting => "waiting".into(),
            TrayItem::Quit => "quit".into(),
            TrayItem::Grant(id) => format!("grant:{id}"),
        }
    }

    pub fn parse(id: &str) -> Option<TrayItem> {
        match id {
            "open" => Some(TrayItem::Open),
            "request" => Some(TrayItem::Request),
            "approvals" => Some(TrayItem::Approvals),
            "waiting" => Some(TrayItem::Waiting),
            "quit" => Some(TrayItem::Quit),
            other => other.strip_prefix("grant:").map(|id| TrayItem::Grant(id.to_owned())),
        }
    }
}

/// The last model shown, so that unchanged updates cost nothing.
static SHOWN: Mutex<Option<TrayModel>> = Mutex::new(None);

fn icon(status: TrayStatus) -> tauri::Result<Image<'static>> {
    let bytes: &'static [u8] = match status {
        TrayStatus::Idle => include_bytes!("../../icons/tray-idle.png"),
        TrayStatus::Active => include_bytes!("../../icons/tray-active.png"),
        TrayStatus::ExpiringSoon => include_bytes!("../../icons/tray-expiring.png"),
        TrayStatus::ApprovalsWaiting => include_bytes!("../../icons/tray-approvals.png"),
    };
    Image::from_bytes(bytes)
}

fn menu(app: &AppHandle, model: &TrayModel) -> tauri::Result<Menu<tauri::Wry>> {
    let menu = Menu::new(app)?;
    if model.grants.is_empty() {
        menu.append(&MenuItem::with_id(app, "none", "No live access", false, None::<&str>)?)?;
    }
    for grant in &model.grants {
        menu.append(&MenuItem::with_id(
            app,
            TrayItem::Grant(grant.id.to_string()).id(),
            &grant.label,
            true,
            None::<&str>,
        )?)?;
    }
    if let Some(label) = waiting_label(model.waiting) {
        menu.append(&MenuItem::with_id(app, TrayItem::Waiting.id(), label, true, None::<&str>)?)?;
    }
    menu.append(&PredefinedMenuItem::separator(app)?)?;
    menu.append(&MenuItem::with_id(app, TrayItem::Request.id(), "Request access…", true, None::<&str>)?)?;
    let approvals = match model.approvals {
        0 => "Approvals".to_owned(),
        n => format!("Approvals ({n})"),
    };
    menu.append(&MenuItem::with_id(app, TrayItem::Approvals.id(), approvals, true, None::<&str>)?)?;
    menu.append(&MenuItem::with_id(app, TrayItem::Open.id(), "Open Hourglass", true, None::<&str>)?)?;
    menu.append(&PredefinedMenuItem::separator(app)?)?;
    menu.append(&MenuItem::with_id(app, TrayItem::Quit.id(), "Quit", true, None::<&str>)?)?;
    Ok(menu)
}

/// Creates the tray icon showing `model`.
pub fn create(app: &AppHandle, model: TrayModel) -> tauri::Result<TrayIcon> {
    let tray = TrayIconBuilder::with_id(TRAY_ID)
        .icon(icon(model.status)?)
        .tooltip(&model.tooltip)
        .menu(&menu(app, &model)?)
        .on_menu_event(|app, event| on_item(app, TrayItem::parse(event.id.as_ref())))
        .build(app)?;
    if let Ok(mut shown) = SHOWN.lock() {
        *shown = Some(model);
    }
    Ok(tray)
}

/// Shows `model`; cheap when nothing changed. The work runs on the main
/// thread, where the tray lives: a tray call from another thread waits for
/// the main thread, and a main thread waiting for that thread's lock would
/// never answer. The caller holds no lock here.
pub fn update(app: &AppHandle, model: TrayModel) {
    let handle = app.clone();
    let _ = app.run_on_main_thread(move || apply(&handle, model));
}

fn apply(app: &AppHandle, model: TrayModel) {
    let Some(tray) = app.tray_by_id(TRAY_ID) else { return };
    let Ok(mut shown) = SHOWN.lock() else { return };
    let previous = shown.clone();
    if previous.as_ref() == Some(&model) {
        return;
    }
    if previous.as_ref().map(|p| p.status) != Some(model.status)
        && let Ok(image) = icon(model.status)
    {
        let _ = tray.set_icon(Some(image));
    }
    if previous.as_ref().map(|p| &p.tooltip) != Some(&model.tooltip) {
        let _ = tray.set_tooltip(Some(&model.tooltip));
    }
    if previous.as_ref().map(|p| (&p.grants, p.approvals, p.waiting))
        != Some((&model.grants, model.approvals, model.waiting))
        && let Ok(menu) = menu(app, &model)
    {
        let _ = tray.set_menu(Some(menu));
    }
    *shown = Some(model);
}

fn on_item(app: &AppHandle, item: Option<TrayItem>) {
    let tab = match item {
        Some(TrayItem::Quit) => return app.exit(0),
        Some(TrayItem::Request) => Tab::Request,
        Some(TrayItem::Approvals) => Tab::Approvals,
        Some(TrayItem::Open | TrayItem::Waiting | TrayItem::Grant(_)) => Tab::Grants,
        None => return,
    };
    window::open_on(app, tab);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tray_item_ids_round_trip() {
        for item in [
            TrayItem::Open,
            TrayItem::Request,
            TrayItem::Approvals,
            TrayItem::Waiting,
            TrayItem::Quit,
            TrayItem::Grant("grt-0123456789".into()),
        ] {
            assert_eq!(TrayItem::parse(&item.id()), Some(item.clone()), "{item:?}");
        }
        assert_eq!(TrayItem::parse("none"), None, "the placeholder item does nothing");
    }
}
