//! How the window's web view renders, where Tauri has no setting for it.
//!
//! On Linux (WebKitGTK) the window renders without accelerated compositing:
//! a small page whose only motion is a few countdowns changing once a second
//! then repaints just those rectangles, in software, at almost no cost. With
//! compositing on, every tick re-rasterized and re-composited the page
//! through GL; without a GPU (Mesa's llvmpipe) that cost 3–7% of a core with
//! 20 grants counting down, and about 90 MiB more memory across the app's
//! processes (`scripts/bench --only desktop` measures both). Its script
//! runs without JIT (below).

/// Chooses the rendering mode. Call it first in `main`, before any thread
/// starts: WebKitGTK reads the mode from the environment (its web process
/// inherits it), and changing the environment while other threads may read
/// it is a data race. The API equivalent (the `hardware-acceleration-policy`
/// setting) cannot be used: Tauri hands out the web view only once it has
/// started loading, and WebKitGTK 2.50's web process crashes when the policy
/// changes then.
pub fn choose_rendering() {
    // Driven over WebDriver (tauri-driver sets this), compositing stays on:
    // WebKitGTK 2.50 takes a WebDriver screenshot after the page's next
    // presentation update, which a non-composited page that is not changing
    // never sends, so the screenshot would wait forever.
    let automated = std::env::var_os("TAURI_WEBVIEW_AUTOMATION").is_some_and(|value| value == "true");
    // A value the user set is kept.
    #[cfg(target_os = "linux")]
    if !automated && let Err(error) = glib::setenv("WEBKIT_DISABLE_COMPOSITING_MODE", "1", false) {
        eprintln!("hourglass-desktop: cannot choose the web view's rendering: {error}");
    }
    // JavaScriptCore runs the page in its interpreter, without compiling it
    // to machine code: the page's script is small and mostly waits, and the
    // JIT cost about 10 MiB of the web process's memory and a compiler
    // thread waking at every countdown tick (`scripts/bench --only desktop`).
    #[cfg(target_os = "linux")]
    if let Err(error) = glib::setenv("JSC_useJIT", "false", false) {
        eprintln!("hourglass-desktop: cannot turn off the script compiler: {error}");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = automated;
}
