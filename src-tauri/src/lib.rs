//! `hourglass-desktop`: the Hourglass tray app. Thin by design: what the app
//! does lives in `hourglass-app` (view, tray status, alerts, settings) and
//! `hourglass-client` (broker, login); this crate wires them to a window, a
//! tray icon and the notification daemon.

mod commands;
mod desktop;
mod notify;
mod tray;
mod webview;

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
        .plugin(tauri_plugin_single_instance::init(|app, _args, _cwd| desktop::show_window(app)))
        .invoke_handler(tauri::generate_handler![
            commands::view,
            commands::settings,
            commands::save_settings,
            commands::catalog,
            commands::request_access,
            commands::approve,
            commands::deny,
            commands::cancel,
            commands::renew,
            commands::revoke,
            commands::history,
            commands::shell_snippet,
            commands::open_terminal,
            commands::hide_window,
            commands::reconnect,
            commands::login,
            commands::cancel_login,
            commands::logout,
            commands::account,
            commands::integration,
            commands::install_hook,
        ])
        .setup(move |app| {
            let desktop = desktop::Desktop::start(app.handle())?;
            app.manage(desktop);
            tray::create(app.handle())?;
            if !hidden {
                desktop::show_window(app.handle());
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
