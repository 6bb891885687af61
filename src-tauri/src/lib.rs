//! `hourglass-desktop`: the Hourglass tray app. Thin by design: what the app
//! does lives in `hourglass-app` (view, tray status, alerts, settings, the
//! window's commands and events) and `hourglass-client` (broker, login,
//! filing, credentials); this crate wires them to a window, a tray icon and
//! the notification daemon.
//!
//! - `commands.rs` — the window's commands, each one call of those crates.
//! - `desktop.rs` — the app's state, and what turns a change of the view
//!   into window, tray and notification updates.
//! - `tray.rs`, `notify.rs`, `window.rs` — the tray, notifications and the
//!   window; each shows what it is given and reports what the user picked.
//! - `webview.rs` — WebKitGTK's rendering, chosen before any thread starts.

mod commands;
mod desktop;
mod notify;
mod tray;
mod webview;
mod window;

use tauri::Manager;

/// Starts the app. `--hidden` (used when it starts at login) keeps the window
/// closed: the tray is enough.
pub fn run() {
    webview::choose_rendering();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("HOURGLASS_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let hidden = std::env::args().any(|arg| arg == "--hidden");
    let built = tauri::Builder::default()
        // One instance: a second launch shows the first one's window.
        .plugin(tauri_plugin_single_instance::init(|app, _args, _cwd| window::show(app)))
        // INVARIANT: the one command is named hourglass_app::ipc::IPC_COMMAND ("call").
        .invoke_handler(tauri::generate_handler![commands::call])
        .setup(move |app| {
            app.manage(desktop::Desktop::new());
            desktop::start(app.handle());
            tray::create(app.handle(), app.state::<desktop::Desktop>().first_tray())?;
            if !hidden {
                window::show(app.handle());
            }
            Ok(())
        })
        .on_window_event(|window, event| {
            // Closing the window keeps the app in the tray.
            if let tauri::WindowEvent::CloseRequested { api, .. } = event {
                api.prevent_close();
                let _ = window.hide();
            }
        })
        .build(tauri::generate_context!());
    match built {
        Ok(app) => app.run(|app, event| {
            // Quitting stops the agent the app serves, and waits for its
            // last effects: the hook state file and `.pgpass` lines go, so
            // shells drop the variables of credentials nobody holds.
            if let tauri::RunEvent::Exit = event {
                tauri::async_runtime::block_on(app.state::<desktop::Desktop>().agent.stop_and_wait());
            }
        }),
        Err(error) => {
            eprintln!("hourglass-desktop: cannot start: {error}");
            std::process::exit(1);
        }
    }
}
