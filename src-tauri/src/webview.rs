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
//!
//! Painting in software, the app's own process has no use for GL, so it
//! does not load it: Mesa's driver (with LLVM, for llvmpipe) costs each
//! process that opens a GL or EGL display about 10 MiB of its own memory
//! (relocated tables) plus its share of 36 MiB of code. Two things opened
//! one there: GTK probing GLX when it opens the X display, and WebKit
//! looking for the GPU device its web process would allocate buffers on.
//! Without them the app's processes use about 20 MiB less (bench, same
//! run). The web process still opens EGL: WebKitGTK 2.50 refuses to start
//! without it.

/// Chooses the rendering mode. Call it first in `main`, before any thread
/// starts: WebKitGTK and GTK read it from the environment (the web process
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
    #[cfg(target_os = "linux")]
    if !automated {
        set_unless_set("WEBKIT_DISABLE_COMPOSITING_MODE", "1");
        // A user who turned compositing back on keeps GL.
        if compositing_disabled() {
            // GTK 3 opens GLX with the display only to offer GL widgets;
            // the app has none.
            set_unless_set("GDK_GL", "disable");
            // The DMA-BUF renderer hands composited frames to this process:
            // there are none.
            set_unless_set("WEBKIT_DISABLE_DMABUF_RENDERER", "1");
            // The device for the web process's GPU buffers, which it
            // allocates only when compositing. Unset, WebKit finds it by
            // opening an EGL display here; named, it takes the name as is.
            // `/dev/null` is no GPU: were a buffer ever asked for, making it
            // would fail, as on a machine without one.
            set_unless_set("WEBKIT_WEB_RENDER_DEVICE_FILE", "/dev/null");
        }
    }
    // JavaScriptCore runs the page in its interpreter, without compiling it
    // to machine code: the page's script is small and mostly waits, and the
    // JIT cost about 10 MiB of the web process's memory and a compiler
    // thread waking at every countdown tick (`scripts/bench --only desktop`).
    #[cfg(target_os = "linux")]
    set_unless_set("JSC_useJIT", "false");
    #[cfg(not(target_os = "linux"))]
    let _ = automated;
}

/// Sets an environment variable the user has not set: a value the user set
/// is kept.
#[cfg(target_os = "linux")]
fn set_unless_set(name: &str, value: &str) {
    if let Err(error) = glib::setenv(name, value, false) {
        eprintln!("hourglass-desktop: cannot set {name} for the web view: {error}");
    }
}

/// Whether the web view renders without compositing. A user's `0` may mean
/// "compositing on": then GL stays, whatever WebKit makes of it.
#[cfg(target_os = "linux")]
fn compositing_disabled() -> bool {
    std::env::var_os("WEBKIT_DISABLE_COMPOSITING_MODE").is_some_and(|value| value != "0")
}
