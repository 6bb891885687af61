//! What the desktop app's tests need: a private X display (Xvfb), a private
//! D-Bus session with a notification daemon (dunst), the Secret Service
//! (gnome-keyring, in the test's home) and a StatusNotifier host, and the
//! app driven over WebDriver (tauri-driver in front of WebKitWebDriver) and
//! its tray menu over D-Bus. Everything is started here and stopped on drop;
//! nothing of the developer's own desktop is touched.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::eventually;
use crate::keyring::{bus_config, bus_has_owner, spawn_secret_service};

/// A private display and session bus, with a notification daemon on it.
pub struct Desktop {
    pub display: String,
    pub bus: String,
    xvfb: Child,
    dbus: Child,
    extra: Vec<Child>,
    pub home: tempfile::TempDir,
    /// Where Xvfb keeps the screen's pixels, as an XWD file (`-fbdir`).
    framebuffer: tempfile::TempDir,
    /// A bus of our own config's: its config and socket.
    _bus_dir: Option<tempfile::TempDir>,
    /// Every desktop test is bounded (see [`crate::watchdog`]).
    _watchdog: crate::watchdog::Watchdog,
}

impl Desktop {
    /// A desktop with an unlocked keyring (gnome-keyring's Secret Service).
    pub fn start() -> Desktop {
        let mut dbus = Command::new("dbus-daemon");
        dbus.args(["--session", "--nofork", "--print-address=1"]);
        let mut desktop = Desktop::bare(&mut dbus, None);
        // Started here, in the test's home, before anything asks for it: the
        // bus would otherwise activate one in the real user's home.
        let keyring = spawn_secret_service(desktop.command("gnome-keyring-daemon"), &desktop.bus);
        desktop.extra.push(keyring);
        desktop
    }

    /// A desktop with no keyring at all, as on a minimal window manager:
    /// its bus activates no service, so no Secret Service ever answers.
    pub fn without_keyring() -> Desktop {
        let config_dir = tempfile::tempdir().expect("a bus config dir");
        let config = config_dir.path().join("bus.conf");
        std::fs::write(&config, bus_config(&config_dir.path().join("bus"))).expect("bus.conf");
        let mut dbus = Command::new("dbus-daemon");
        dbus.arg(format!("--config-file={}", config.display())).args(["--nofork", "--print-address=1"]);
        let desktop = Desktop::bare(&mut dbus, Some(config_dir));
        assert!(!desktop.has_owner("org.freedesktop.secrets"), "no Secret Service on this desktop");
        desktop
    }

    /// A display, the session bus `dbus` starts, and a notification daemon.
    fn bare(dbus: &mut Command, bus_dir: Option<tempfile::TempDir>) -> Desktop {
        let watchdog = crate::watchdog::Watchdog::for_test();
        let framebuffer = tempfile::tempdir().expect("a framebuffer dir");
        let (display, xvfb) = start_xvfb(framebuffer.path());
        let mut dbus = dbus.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("dbus-daemon starts");
        let mut address = String::new();
        BufReader::new(dbus.stdout.take().expect("stdout")).read_line(&mut address).expect("the bus address");
        let bus = address.trim().to_owned();
        let home = tempfile::tempdir().expect("a home");
        let mut desktop = Desktop {
            display,
            bus,
            xvfb,
            dbus,
            extra: Vec::new(),
            home,
            framebuffer,
            _bus_dir: bus_dir,
            _watchdog: watchdog,
        };
        // dunst's context menu (`dunstctl context`) runs "dmenu" to pick an
        // action: here a script that picks the one the test names
        // (`invoke_action`), as a person would in the menu. Bodies render
        // markup, as with dunst's own defaults (a config file of one's own
        // turns that off unless it says so).
        let picker = desktop.home.path().join("pick-action.sh");
        std::fs::write(
            &picker,
            format!(
                "#!/bin/sh\nwanted=$(cat '{wanted}' 2>/dev/null)\n[ -n \"$wanted\" ] || exit 1\ngrep -m1 -F \"#$wanted \"\n",
                wanted = desktop.home.path().join("pick-action.txt").display()
            ),
        )
        .expect("the picker is written");
        std::fs::set_permissions(&picker, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        let config = desktop.home.path().join("dunstrc");
        std::fs::write(&config, format!("[global]\nmarkup = full\ndmenu = {}\n", picker.display())).expect("dunstrc");
        let dunst = desktop
            .command("dunst")
            .arg("-config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dunst starts");
        desktop.extra.push(dunst);
        let ready = eventually(Duration::from_secs(10), || desktop.dunstctl(&["count", "displayed"]).map(|_| ()));
        assert!(ready.is_some(), "dunst serves notifications on the private bus");
        desktop
    }

    /// What the clipboard holds (`xsel`, as a paste would read it).
    pub fn clipboard(&self) -> String {
        let output =
            self.command("xsel").args(["--clipboard", "--output"]).output().expect("xsel runs (apt-get install xsel)");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn has_owner(&self, name: &str) -> bool {
        bus_has_owner(&self.bus, name)
    }

    /// `gdbus call --session ARGS` on the private bus; its output when it succeeds.
    pub fn gdbus(&self, args: &[&str]) -> Option<String> {
        let output = self.command("gdbus").args(["call", "--session"]).args(args).output().ok()?;
        output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Starts a StatusNotifier host (status-notifier-watcher): what a
    /// desktop's panel runs for tray icons to register with.
    pub fn start_tray_host(&mut self) {
        let watcher = self
            .command("status-notifier-watcher")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("status-notifier-watcher starts (apt-get install haskell-status-notifier-item-utils)");
        self.extra.push(watcher);
        let up = eventually(Duration::from_secs(10), || self.has_owner("org.kde.StatusNotifierWatcher").then_some(()));
        assert!(up.is_some(), "the StatusNotifier host is on the bus");
    }

    /// The bus names of the tray items registered with the host.
    pub fn tray_items(&self) -> Vec<String> {
        let answer = self
            .gdbus(&[
                "--dest",
                "org.kde.StatusNotifierWatcher",
                "--object-path",
                "/StatusNotifierWatcher",
                "--method",
                "org.freedesktop.DBus.Properties.Get",
                "org.kde.StatusNotifierWatcher",
                "RegisteredStatusNotifierItems",
            ])
            .unwrap_or_default();
        answer
            .split('\'')
            .filter(|part| part.starts_with(':'))
            .map(|part| part.split('/').next().unwrap_or(part).to_owned())
            .collect()
    }

    /// The StatusNotifierItem the app registered, once it has.
    pub fn tray(&self) -> TrayItem<'_> {
        let bus_name = eventually(Duration::from_secs(20), || self.tray_items().into_iter().next())
            .expect("the app's tray icon registered with the StatusNotifier host");
        let tree = self
            .command("gdbus")
            .args(["introspect", "--session", "--dest", &bus_name, "--object-path", "/org/ayatana/NotificationItem"])
            .output()
            .expect("gdbus introspect");
        let tree = String::from_utf8_lossy(&tree.stdout).into_owned();
        let node = tree
            .lines()
            .filter_map(|line| line.trim().strip_prefix("node "))
            .map(|node| node.trim_end_matches(" {").trim())
            .find(|node| !node.starts_with('/'))
            .unwrap_or_else(|| panic!("an item under /org/ayatana/NotificationItem: {tree}"))
            .to_owned();
        TrayItem { desktop: self, bus_name, path: format!("/org/ayatana/NotificationItem/{node}") }
    }

    /// A command that runs on this display and bus, with this home.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command
            .env("DISPLAY", &self.display)
            .env("DBUS_SESSION_BUS_ADDRESS", &self.bus)
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join(".config"))
            .env("XDG_RUNTIME_DIR", self.home.path())
            .env_remove("WAYLAND_DISPLAY");
        command
    }

    /// Starts a helper process (a tray host, say) kept until drop.
    pub fn keep(&mut self, child: Child) {
        self.extra.push(child);
    }

    pub fn dunstctl(&self, args: &[&str]) -> Option<String> {
        let output = self.command("dunstctl").args(args).output().ok()?;
        output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Picks the action labelled `label` ("Renew") of a notification on
    /// screen, through dunst's context menu, as a person would; nothing
    /// when none offers it.
    pub fn invoke_action(&self, label: &str) {
        std::fs::write(self.home.path().join("pick-action.txt"), label).expect("the label is written");
        let _ = self.dunstctl(&["context"]);
    }

    /// Summaries and bodies of every notification shown so far.
    pub fn notifications(&self) -> Vec<String> {
        // dunst lists notifications in its history once they are closed.
        let _ = self.dunstctl(&["close-all"]);
        let history = self.dunstctl(&["history"]).unwrap_or_default();
        let value: serde_json::Value = serde_json::from_str(&history).unwrap_or_default();
        let mut found = Vec::new();
        for item in value["data"].as_array().and_then(|d| d.first()).and_then(|d| d.as_array()).into_iter().flatten() {
            let summary = item["summary"]["data"].as_str().unwrap_or_default();
            let body = item["body"]["data"].as_str().unwrap_or_default();
            found.push(format!("{summary} — {body}"));
        }
        found
    }

    /// A screenshot of the whole display, saved under the target directory.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let path = screenshots_dir().join(format!("{name}.png"));
        let _ = self.command("import").args(["-window", "root"]).arg(&path).status();
        path
    }

    /// The screen's pixels now, read from Xvfb's framebuffer file: no X
    /// request and no helper process, so it can be polled every few
    /// milliseconds without disturbing what is being watched.
    pub fn screen(&self) -> Option<Screen> {
        Screen::from_xwd(&std::fs::read(self.framebuffer.path().join("Xvfb_screen0")).ok()?)
    }
}

/// A snapshot of the screen: `width` × `height` pixels, row by row, each
/// `0xRRGGBB`.
pub struct Screen {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u32>,
}

impl Screen {
    /// Parses an XWD image as Xvfb writes it (24-bit colour, 32 bits per
    /// pixel); None for anything else.
    fn from_xwd(file: &[u8]) -> Option<Screen> {
        // The header is 25 big-endian 32-bit fields, then the window name.
        let field = |index: usize| -> Option<usize> {
            let bytes = file.get(index * 4..index * 4 + 4)?;
            Some(u32::from_be_bytes(bytes.try_into().ok()?) as usize)
        };
        let (header_size, width, height, byte_order) = (field(0)?, field(4)?, field(5)?, field(7)?);
        let (bits_per_pixel, bytes_per_line, colormap_entries) = (field(11)?, field(12)?, field(19)?);
        if bits_per_pixel != 32 {
            return None;
        }
        let start = header_size + colormap_entries * 12;
        let data = file.get(start..start + height * bytes_per_line)?;
        let mut pixels = Vec::with_capacity(width * height);
        for row in data.chunks_exact(bytes_per_line) {
            for pixel in row.chunks_exact(4).take(width) {
                let bytes: [u8; 4] = pixel.try_into().ok()?;
                let value = if byte_order == 0 { u32::from_le_bytes(bytes) } else { u32::from_be_bytes(bytes) };
                pixels.push(value & 0x00ff_ffff);
            }
        }
        Some(Screen { width, height, pixels })
    }

    /// How many different colours the screen shows, counting up to `limit`:
    /// an empty screen has one, a window's plain background adds one, and
    /// rendered text (antialiased) adds dozens.
    pub fn colours(&self, limit: usize) -> usize {
        let mut seen: Vec<u32> = Vec::new();
        for pixel in &self.pixels {
            if !seen.contains(pixel) {
                seen.push(*pixel);
                if seen.len() >= limit {
                    break;
                }
            }
        }
        seen.len()
    }
}

impl Drop for Desktop {
    fn drop(&mut self) {
        for child in self.extra.iter_mut().chain([&mut self.dbus]) {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Asked to stop, Xvfb removes its socket and lock file; killed, it
        // leaves them, and every display number they name looks taken to
        // the next runs until none is left.
        let _ = Command::new("kill").args(["-TERM", &self.xvfb.id().to_string()]).status();
        let stopped = eventually(Duration::from_secs(5), || self.xvfb.try_wait().ok().flatten());
        if stopped.is_none() {
            let _ = self.xvfb.kill();
            let _ = self.xvfb.wait();
        }
    }
}

/// Whether display `number` is taken: its lock file names a live process.
/// A lock left by a killed server names a dead one, and Xvfb takes such a
/// display over (it removes the stale lock and socket itself).
fn display_taken(number: usize) -> bool {
    let Ok(lock) = std::fs::read_to_string(format!("/tmp/.X{number}-lock")) else {
        // No lock: a socket alone is another server's only if it still listens.
        return std::os::unix::net::UnixStream::connect(format!("/tmp/.X11-unix/X{number}")).is_ok();
    };
    lock.trim().parse::<u32>().map_or(true, |pid| Path::new(&format!("/proc/{pid}")).exists())
}

fn start_xvfb(framebuffer: &Path) -> (String, Child) {
    // Tests of one process run in parallel: each takes its own numbers, so
    // two never race for one display (the loser's Xvfb would exit while the
    // winner's socket made it look up).
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    for _ in 0..20 {
        let attempt = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let number = 90 + (std::process::id() as usize * 13 + attempt) % 400;
        if display_taken(number) {
            continue;
        }
        let display = format!(":{number}");
        let mut child = Command::new("Xvfb")
            .args([&display, "-screen", "0", "1280x800x24", "-nolisten", "tcp", "-fbdir"])
            .arg(framebuffer)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb starts");
        let up = eventually(Duration::from_secs(10), || {
            if let Ok(Some(_)) = child.try_wait() {
                return Some(false);
            }
            // Listening, not merely present: a killed server's socket file may be left.
            std::os::unix::net::UnixStream::connect(format!("/tmp/.X11-unix/X{number}")).is_ok().then_some(true)
        });
        if up == Some(true) {
            return (display, child);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("no free X display for Xvfb");
}

/// A tray icon seen over D-Bus, as a panel sees it: its properties and its
/// menu (com.canonical.dbusmenu).
pub struct TrayItem<'d> {
    desktop: &'d Desktop,
    pub bus_name: String,
    pub path: String,
}

impl TrayItem<'_> {
    /// A StatusNotifierItem property, as gdbus prints it.
    pub fn property(&self, name: &str) -> String {
        self.desktop
            .gdbus(&[
                "--dest",
                &self.bus_name,
                "--object-path",
                &self.path,
                "--method",
                "org.freedesktop.DBus.Properties.Get",
                "org.kde.StatusNotifierItem",
                name,
            ])
            .unwrap_or_default()
    }

    /// The icon's image file, as the panel would load it.
    pub fn icon(&self) -> Vec<u8> {
        let answer = self.property("IconName");
        let path = answer.split('\'').nth(1).unwrap_or_default().to_owned();
        std::fs::read(&path).unwrap_or_default()
    }

    /// The menu's items: (id, label), in order; separators have no label.
    pub fn menu(&self) -> Vec<(i32, String)> {
        let menu = format!("{}/Menu", self.path);
        let layout = self
            .desktop
            .gdbus(&[
                "--dest",
                &self.bus_name,
                "--object-path",
                &menu,
                "--method",
                "com.canonical.dbusmenu.GetLayout",
                "--",
                "0",
                "-1",
                "[\"label\"]",
            ])
            .unwrap_or_default();
        // Items look like <(4, {'label': <'Request access…'>}, @av [])>.
        layout
            .split("<(")
            .skip(1)
            .filter_map(|item| {
                let (id, rest) = item.split_once(", ")?;
                let label = rest.split_once("'label': <'").map(|(_, l)| l.split("'>").next().unwrap_or("").to_owned());
                Some((id.trim().parse().ok()?, label.unwrap_or_default()))
            })
            .collect()
    }

    /// The id of the first item whose label contains `text`.
    pub fn find(&self, text: &str) -> Option<i32> {
        self.menu().into_iter().find(|(_, label)| label.contains(text)).map(|(id, _)| id)
    }

    /// Clicks an item, as the panel does when the user picks it. False when
    /// the app did not answer (it quits on "Quit" before it replies).
    pub fn click(&self, id: i32) -> bool {
        let menu = format!("{}/Menu", self.path);
        let clicked = self.desktop.gdbus(&[
            "--dest",
            &self.bus_name,
            "--object-path",
            &menu,
            "--method",
            "com.canonical.dbusmenu.Event",
            "--",
            &id.to_string(),
            "clicked",
            "<int32 0>",
            "0",
        ]);
        clicked.is_some()
    }
}

/// Cargo's target directory, where the test binaries are.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // A test runs from target/<profile>/deps/, a benchmark from target/<profile>/.
    let profile = exe.parent().map(|dir| if dir.ends_with("deps") { dir.parent() } else { Some(dir) });
    profile.flatten().and_then(Path::parent).expect("target directory").to_path_buf()
}

/// `target/screenshots`, next to the test binaries (kept as CI artifacts, not committed).
pub fn screenshots_dir() -> PathBuf {
    let dir = target_dir().join("screenshots");
    std::fs::create_dir_all(&dir).expect("screenshots dir");
    dir
}

/// `tauri-driver`: from PATH or cargo's bin directory.
pub fn tauri_driver() -> PathBuf {
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|dir| dir.join("bin/tauri-driver"));
    let in_path = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|d| d.join("tauri-driver")).find(|p| p.exists()));
    in_path
        .or(cargo_bin.filter(|p| p.exists()))
        .expect("tauri-driver is installed (scripts/setup.sh: cargo install tauri-driver --locked)")
}

/// tauri-driver on free ports, for one app session.
pub struct Driver {
    child: Child,
    pub port: u16,
}

impl Driver {
    /// Starts tauri-driver with `env` for the app it will launch.
    pub fn start(desktop: &Desktop, env: &[(&str, &str)]) -> Driver {
        let port = crate::free_port();
        let native = crate::free_port();
        // Both ports, always: with only --port, tauri-driver can proxy to itself.
        let child = desktop
            .command(tauri_driver())
            .args(["--port", &port.to_string(), "--native-port", &native.to_string()])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tauri-driver starts");
        // tauri-driver forwards each call to WebKitWebDriver, which it starts
        // beside itself and does not wait for: a session asked for before
        // that one listens (a loaded machine) is dropped unanswered.
        for (port, what) in [(port, "tauri-driver"), (native, "WebKitWebDriver")] {
            let up = eventually(Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", port)).ok());
            assert!(up.is_some(), "{what} listens on {port}");
        }
        Driver { child, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
