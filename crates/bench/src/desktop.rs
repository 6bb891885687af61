//! The desktop app against a Chromium `--app` window showing the same UI:
//! memory (PSS summed over every process of each), idle CPU with the window
//! open and hidden, cold start to first paint, and the sizes of what ships.
//!
//! Both run in one private desktop from the testkit (Xvfb, a session bus
//! with a notification daemon, a keyring and a StatusNotifier host). The
//! app is the packaged build (the `desktop` profile), logged in to a real
//! `hourglassd dev` as a user holding 20 grants, all counting down in its
//! window: hours left, shown in minutes; then, for idle CPU, as a user whose
//! 20 grants are all in their last ten minutes, counting down in seconds.
//! Chromium (the engine Electron apps ship) loads the same built front end
//! (`ui/dist`) from a loopback HTTP server; it has no Tauri IPC, so it shows
//! the UI's frame without data and nothing in it ticks.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use hourglass_e2e::DevBroker;
use hourglass_e2e::desktop::Desktop;

use crate::Options;
use crate::report::Figure;
use crate::stats::{Summary, human};

/// Grants the app's user holds while it is measured.
const GRANTS: usize = 20;
/// Holds `GRANTS` grants of hours: their cards show minutes left.
const CALM_USER: &str = "bob";
/// Holds `GRANTS` grants of ten minutes, asked for just before the app
/// starts: expiring soon, their cards count down in seconds.
const ENDING_USER: &str = "carol";
/// After the window hides, WebKit frees the page's memory for a few
/// seconds; the hidden window is measured after that.
const HIDE_SETTLE: Duration = Duration::from_secs(15);
/// Colours on the screen that mean something was rendered: an empty screen
/// has one, a window's plain background a second, text dozens more.
const PAINTED: usize = 16;
/// How often the screen is read while waiting for the first paint.
const POLL: Duration = Duration::from_millis(20);
/// How often threads' CPU times are read during an idle window.
const CPU_EVERY: Duration = Duration::from_millis(250);
/// Time between memory samples.
const PSS_EVERY: Duration = Duration::from_secs(2);
/// Chromium's window, the size of the app's (tauri.conf.json).
const WINDOW_SIZE: &str = "--window-size=400,620";

pub fn figures(options: &Options) -> anyhow::Result<Vec<Figure>> {
    // The testkit fails loudly (it panics); here that becomes this topic's
    // error, and the other benchmarks are still reported.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| measure(options))).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "the desktop testkit failed".into());
        Err(anyhow::anyhow!(message))
    })
}

/// How long each part runs, full or quick.
struct Plan {
    /// Cold starts of each, after one uncounted start that fills the page cache.
    starts: usize,
    /// From the window showing its countdowns to the first memory sample.
    settle: Duration,
    pss_samples: usize,
    /// The idle CPU window.
    idle: Duration,
}

fn measure(options: &Options) -> anyhow::Result<Vec<Figure>> {
    let plan = Plan {
        starts: options.runs(10, 3),
        settle: if options.quick { Duration::from_secs(3) } else { Duration::from_secs(10) },
        pss_samples: options.runs(5, 3),
        // HOURGLASS_BENCH_IDLE_SECS lengthens a quick run's idle windows,
        // to profile what ticks in them.
        idle: match std::env::var("HOURGLASS_BENCH_IDLE_SECS").ok().and_then(|s| s.parse().ok()) {
            Some(seconds) => Duration::from_secs(seconds),
            None if options.quick => Duration::from_secs(5),
            None => Duration::from_secs(60),
        },
    };
    let app_binary = desktop_built()?;
    built("hourglassd")?;
    built("hourglass")?;
    let chromium = chromium();
    let ui = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ui/dist");
    anyhow::ensure!(ui.join("index.html").exists(), "{} is missing: scripts/setup.sh builds it", ui.display());

    let mut desktop = Desktop::start();
    desktop.start_tray_host();
    let (toml, cedar) = policy();
    let policy = hourglass_e2e::policy_dir(&toml, &cedar);
    let broker = DevBroker::start_with_policy(policy.path(), &[]);
    for n in 1..=GRANTS {
        let duration = format!("{}h", 1 + n % 8);
        let service = service(n);
        broker.json(CALM_USER, &["request", &service, "--role", "deploy", "--for", &duration]);
    }
    let url = serve_directory(ui)?;
    let peer_profile = tempfile::tempdir()?;

    let app = Launcher::App { binary: &app_binary, broker: &broker, user: CALM_USER };
    let peer = chromium.as_deref().map(|binary| Launcher::Chromium { binary, profile: peer_profile.path(), url: &url });

    eprintln!("desktop: cold start to first paint, {} starts each…", plan.starts);
    let load = load_average();
    let (app_starts, peer_starts) = cold_starts(&desktop, &app, peer.as_ref(), plan.starts)?;

    eprintln!("desktop: the app with {GRANTS} grants: memory, idle CPU open and hidden…");
    let app_run = app_idle(&desktop, &app, &broker, &plan)?;
    eprintln!("desktop: the app with {GRANTS} grants in their last minutes: idle CPU open…");
    for n in 1..=GRANTS {
        broker.json(ENDING_USER, &["request", &service(n), "--role", "deploy", "--for", "10m"]);
    }
    let ending = Launcher::App { binary: &app_binary, broker: &broker, user: ENDING_USER };
    let ending_run = app_open_ticking(&desktop, &ending, &broker, &plan)?;
    let peer_run = match &peer {
        Some(peer) => {
            eprintln!("desktop: Chromium --app: memory, idle CPU…");
            Some(peer_idle(&desktop, peer, &plan)?)
        }
        None => None,
    };

    let mut figures = Vec::new();
    figures.push(memory_figure(&app_run, peer_run.as_ref()));
    figures.extend(cpu_figures(&app_run, &ending_run, peer_run.as_ref(), plan.idle));
    figures.push(start_figure(app_starts, peer_starts, &load));
    figures.extend(size_figures(&app_binary)?);
    Ok(figures)
}

/// A workspace binary of this release build, next to the benchmark's.
fn built(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name(name);
    anyhow::ensure!(path.exists(), "{} is missing: scripts/bench builds it (scripts/package-deb)", path.display());
    Ok(path)
}

/// The desktop app as packaged: built with the `desktop` profile, whose
/// output sits beside the release one.
fn desktop_built() -> anyhow::Result<PathBuf> {
    let release = std::env::current_exe()?;
    let path = release.parent().and_then(Path::parent).map(|target| target.join("desktop/hourglass-desktop"));
    let path = path.context("the benchmark's own path has no parent")?;
    anyhow::ensure!(path.exists(), "{} is missing: scripts/bench builds it (scripts/package-deb)", path.display());
    Ok(path)
}

/// The Chromium binary itself (Debian's `chromium` is a script that runs it).
fn chromium() -> Option<PathBuf> {
    ["/usr/lib/chromium/chromium", "/usr/bin/chromium"].into_iter().map(PathBuf::from).find(|path| path.exists())
}

fn service(n: usize) -> String {
    format!("service-{n:02}")
}

/// A policy of `GRANTS` services that anyone may use at once, so one user
/// can hold a grant on each.
fn policy() -> (String, String) {
    let mut toml = String::from(
        "[defaults]\nworkflow = \"one-sre\"\nmin_duration = \"5m\"\nmax_duration = \"8h\"\n\
         default_duration = \"1h\"\nmax_total = \"12h\"\nrenewals_without_approval = 2\n\
         pending_timeout = \"30m\"\nreason_required = false\n\n\
         [workflows.one-sre]\ndescription = \"One SRE\"\napprovals = [{ group = \"sre\", count = 1 }]\n",
    );
    for n in 1..=GRANTS {
        let name = service(n);
        let _ = write!(
            toml,
            "\n[resources.{name}]\ndescription = \"Service {n}\"\nprovider = \"token\"\n\n\
             [resources.{name}.roles.deploy]\ndescription = \"Deploy, approved at once\"\n"
        );
    }
    let cedar = "permit (principal, action == Action::\"request\", resource);\n\
                 permit (principal, action == Action::\"auto_approve\", resource);\n";
    (toml, cedar.to_owned())
}

/// What is measured: the app, or the Chromium window.
enum Launcher<'a> {
    App { binary: &'a Path, broker: &'a DevBroker, user: &'a str },
    Chromium { binary: &'a Path, profile: &'a Path, url: &'a str },
}

impl Launcher<'_> {
    fn start(&self, desktop: &Desktop) -> anyhow::Result<Running> {
        let (mut command, marker) = match self {
            Launcher::App { binary, broker, user } => {
                let mut command = desktop.command(binary);
                command.env("HOURGLASS_TOKEN", broker.token(user));
                broker.point_at(&mut command);
                (command, None)
            }
            Launcher::Chromium { binary, profile, url } => {
                let home = profile.join("home");
                std::fs::create_dir_all(&home)?;
                let mut command = desktop.command(binary);
                command
                    .env("HOME", &home)
                    .env("XDG_CONFIG_HOME", home.join(".config"))
                    .env("XDG_CACHE_HOME", home.join(".cache"))
                    .arg(format!("--app={url}"))
                    .arg(format!("--user-data-dir={}", profile.join("profile").display()))
                    // Root in a container: no sandbox, and no bar warning about it.
                    .args(["--no-sandbox", "--test-type", "--no-first-run", "--no-default-browser-check"])
                    // What an app window does not do: talk to Google.
                    .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
                    .arg(WINDOW_SIZE);
                // Its crash handler leaves the process tree; it names the profile.
                (command, Some(profile.display().to_string()))
            }
        };
        let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().context("starting the window")?;
        Ok(Running { child, marker })
    }

    fn name(&self) -> &'static str {
        match self {
            Launcher::App { .. } => "the app",
            Launcher::Chromium { .. } => "Chromium",
        }
    }
}

/// A running app or browser, stopped (with every process it started) on drop.
struct Running {
    child: Child,
    /// Text in the command line of its processes that left its tree.
    marker: Option<String>,
}

impl Running {
    /// Every process it runs now.
    fn processes(&self) -> Vec<u32> {
        let mut roots = vec![self.child.id()];
        if let Some(marker) = &self.marker {
            roots.extend(processes_with_argument(|argument| argument.contains(marker.as_str())));
        }
        let mut all: Vec<u32> = roots.into_iter().flat_map(process_tree).collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Stops it as a session ending would (SIGTERM), then waits until all its
    /// processes are gone, so the next start finds nothing of it.
    fn stop(&mut self) {
        let processes = self.processes();
        signal("-TERM", &[self.child.id()]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        while processes.iter().any(|&pid| alive(pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let left: Vec<u32> = processes.into_iter().filter(|&pid| alive(pid)).collect();
        signal("-KILL", &left);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

fn signal(which: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill").arg(which).args(pids.iter().map(u32::to_string)).stderr(Stdio::null()).status();
}

/// Whether a process runs (a zombie does not: it waits to be reaped).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next()))
        .is_some_and(|state| state != 'Z')
}

/// A process and all its descendants, as `/proc` lists them now.
fn process_tree(root: u32) -> Vec<u32> {
    let mut found = vec![root];
    let mut next = 0;
    while let Some(&pid) = found.get(next) {
        next += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for task in tasks.flatten() {
            let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            found.extend(children.split_whitespace().filter_map(|child| child.parse::<u32>().ok()));
        }
    }
    found
}

/// Processes (not zombies) with an argument for which `wanted` holds.
fn processes_with_argument(wanted: impl Fn(&str) -> bool) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let line = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            line.split(|&byte| byte == 0).any(|argument| wanted(&String::from_utf8_lossy(argument))) && alive(*pid)
        })
        .collect()
}

/// This desktop's X server.
fn x_server(desktop: &Desktop) -> Vec<u32> {
    processes_with_argument(|argument| argument == desktop.display)
        .into_iter()
        .filter(|&pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "Xvfb"))
        .collect()
}

/// The name of the program a process runs (not cut to 15 characters, as `comm` is).
fn process_name(pid: u32) -> String {
    let line = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let program = line.split(|&byte| byte == 0).next().unwrap_or_default();
    let program = String::from_utf8_lossy(program);
    program.rsplit('/').next().unwrap_or_default().to_owned()
}

/// Proportional set size: the process's private memory plus its share of
/// what it shares, so that summing over processes counts each page once.
fn pss_kib(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup.lines().find_map(pss_line)
}

fn pss_line(line: &str) -> Option<u64> {
    line.strip_prefix("Pss:")?.trim().trim_end_matches("kB").trim().parse().ok()
}

/// Libraries WebKitGTK loads into the app's processes whatever the app
/// does, named by what their file names start with: the report says what
/// they cost, so a reader sees how much of the app's memory is the system's
/// web view and not the app.
const SYSTEM_LIBRARIES: [(&str, &str); 2] = [
    // Mesa's software rasterizer links LLVM; WebKitGTK 2.50's web process
    // opens an EGL display at start, with compositing off too, and aborts
    // without one ("Could not create default EGL display").
    ("Mesa's LLVM (the web process's EGL display, which WebKitGTK requires)", "libLLVM"),
    // WebKitGTK links the flite speech synthesizer and its voices
    // (speechSynthesis), so every WebKit process and the app map them.
    ("flite speech voices (linked by WebKitGTK)", "libflite"),
];

/// The PSS of the mappings of each of `SYSTEM_LIBRARIES` in a process.
fn system_library_pss_kib(pid: u32) -> [u64; SYSTEM_LIBRARIES.len()] {
    let mut totals = [0; SYSTEM_LIBRARIES.len()];
    let Ok(smaps) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else { return totals };
    let mut library = None;
    for line in smaps.lines() {
        if let Some(pss) = pss_line(line) {
            if let Some(index) = library {
                totals[index] += pss;
            }
        } else if line.split_whitespace().next().is_some_and(|range| range.contains('-') && !range.ends_with(':')) {
            // A mapping's header: `start-end perms offset dev inode [path]`.
            let file = line.split_whitespace().nth(5).and_then(|path| path.rsplit('/').next()).unwrap_or("");
            library = SYSTEM_LIBRARIES.iter().position(|(_, prefix)| file.starts_with(prefix));
        }
    }
    totals
}

/// The CPU time each thread of `pids` has used so far, in nanoseconds, as
/// the scheduler counts it (`/proc/PID/task/TID/schedstat`; the utime and
/// stime of `/proc/PID/stat` come in 10 ms steps, too coarse for a target
/// of 60 ms a minute).
fn thread_cpu(pids: &[u32]) -> BTreeMap<(u32, u32), u64> {
    let mut times = BTreeMap::new();
    for &pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|tid| tid.parse::<u32>().ok()) else { continue };
            let schedstat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            if let Some(on_cpu) = schedstat.split_whitespace().next().and_then(|ns| ns.parse().ok()) {
                times.insert((pid, tid), on_cpu);
            }
        }
    }
    times
}

/// CPU time each set of processes uses over the same `window`, in total
/// and by thread. Threads are read every `CPU_EVERY`, so one that ends
/// meanwhile keeps what it used up to its last reading; one that starts
/// meanwhile counts from its start.
fn cpu_over(sets: &[&dyn Fn() -> Vec<u32>], window: Duration) -> Vec<CpuTimes> {
    // Per thread: its CPU time when first read, and when last read.
    let mut threads: Vec<BTreeMap<(u32, u32), (u64, u64)>> = sets
        .iter()
        .map(|set| thread_cpu(&set()).into_iter().map(|(thread, now)| (thread, (now, now))).collect())
        .collect();
    let start = Instant::now();
    while let Some(left) = window.checked_sub(start.elapsed()).filter(|left| !left.is_zero()) {
        std::thread::sleep(left.min(CPU_EVERY));
        for (set, seen) in sets.iter().zip(threads.iter_mut()) {
            for (thread, now) in thread_cpu(&set()) {
                seen.entry(thread).and_modify(|(_, last)| *last = now).or_insert((0, now));
            }
        }
    }
    threads.iter().map(CpuTimes::of).collect()
}

/// CPU time used by a set of processes, in total and by thread.
#[derive(Default)]
struct CpuTimes {
    total: Duration,
    /// "program/thread" and its CPU time, the busiest first.
    by_thread: Vec<(String, Duration)>,
}

impl CpuTimes {
    fn of(seen: &BTreeMap<(u32, u32), (u64, u64)>) -> CpuTimes {
        let mut by_name = BTreeMap::<String, u64>::new();
        for (&(pid, tid), (first, last)) in seen {
            let thread = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).unwrap_or_default();
            let thread = if thread.is_empty() { "(ended)" } else { thread.trim() };
            let name = format!("{}/{thread}", process_name(pid));
            *by_name.entry(name).or_default() += last.saturating_sub(*first);
        }
        let total = Duration::from_nanos(by_name.values().sum());
        let mut by_thread: Vec<(String, Duration)> =
            by_name.into_iter().map(|(name, ns)| (name, Duration::from_nanos(ns))).collect();
        by_thread.sort_by_key(|thread| std::cmp::Reverse(thread.1));
        CpuTimes { total, by_thread }
    }

    /// The busiest threads, for the report: where the time went.
    fn busiest(&self, count: usize) -> String {
        let parts: Vec<String> = self
            .by_thread
            .iter()
            .filter(|(_, cpu)| !cpu.is_zero())
            .take(count)
            .map(|(name, cpu)| format!("{name} {}", cpu_ms(*cpu)))
            .collect();
        if parts.is_empty() { "none".into() } else { parts.join(", ") }
    }
}

/// The 1-minute load average: other work on the machine slows what is timed
/// and adds to what is counted.
fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace().next().unwrap_or("?").to_owned()
}

/// Memory samples of a running window: total PSS (KiB) each time, and the
/// last sample by process name.
struct Memory {
    totals: Vec<u64>,
    by_process: BTreeMap<String, u64>,
    /// Of the last sample, the PSS of each of `SYSTEM_LIBRARIES`.
    system_libraries: [u64; SYSTEM_LIBRARIES.len()],
    processes: usize,
}

impl Memory {
    fn sample(running: &Running, samples: usize, every: Duration) -> Memory {
        let mut totals = Vec::new();
        let mut by_process = BTreeMap::new();
        let mut system_libraries = [0; SYSTEM_LIBRARIES.len()];
        let mut processes = 0;
        for sample in 0..samples {
            if sample > 0 {
                std::thread::sleep(every);
            }
            by_process.clear();
            let mut total = 0;
            let pids = running.processes();
            processes = pids.len();
            for pid in pids {
                let pss = pss_kib(pid).unwrap_or(0);
                total += pss;
                *by_process.entry(process_name(pid)).or_insert(0) += pss;
            }
            totals.push(total);
        }
        // Once, after the samples: reading every mapping takes a while.
        for pid in running.processes() {
            for (sum, pss) in system_libraries.iter_mut().zip(system_library_pss_kib(pid)) {
                *sum += pss;
            }
        }
        totals.sort_unstable();
        Memory { totals, by_process, system_libraries, processes }
    }

    fn median(&self) -> u64 {
        self.totals.get(self.totals.len() / 2).copied().unwrap_or(0)
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Starts the window and waits for its first paint: the first screen, read
/// from Xvfb's framebuffer every `POLL`, that shows rendered content.
/// Measured from just before the process is spawned.
fn start_to_first_paint(desktop: &Desktop, launcher: &Launcher) -> anyhow::Result<(Duration, Running)> {
    let empty = hourglass_e2e::eventually(Duration::from_secs(10), || {
        desktop.screen().filter(|screen| screen.colours(2) == 1).map(|_| ())
    });
    anyhow::ensure!(empty.is_some(), "the screen did not clear before starting {}", launcher.name());
    let spawned = Instant::now();
    let running = launcher.start(desktop)?;
    loop {
        if desktop.screen().is_some_and(|screen| screen.colours(PAINTED) >= PAINTED) {
            return Ok((spawned.elapsed(), running));
        }
        anyhow::ensure!(spawned.elapsed() < Duration::from_secs(30), "{} never painted", launcher.name());
        std::thread::sleep(POLL);
    }
}

/// Cold starts of the app and of Chromium, taken in turns so that both see
/// the same machine, after one uncounted start of each (which fills the page
/// cache and creates Chromium's profile, as any start after the first finds).
fn cold_starts(
    desktop: &Desktop,
    app: &Launcher,
    peer: Option<&Launcher>,
    starts: usize,
) -> anyhow::Result<(Summary, Option<Summary>)> {
    let mut app_times = Vec::new();
    let mut peer_times = Vec::new();
    for start in 0..=starts {
        let (time, mut running) = start_to_first_paint(desktop, app)?;
        running.stop();
        if start > 0 {
            app_times.push(time);
        }
        if let Some(peer) = peer {
            let (time, mut running) = start_to_first_paint(desktop, peer)?;
            running.stop();
            if start > 0 {
                peer_times.push(time);
            }
        }
    }
    let peer = (!peer_times.is_empty()).then(|| Summary::of(&mut peer_times));
    Ok((Summary::of(&mut app_times), peer))
}

/// What the idle runs found.
struct Idle {
    memory: Memory,
    open: CpuUse,
    /// None for a window that cannot hide (Chromium's).
    hidden: Option<CpuUse>,
}

/// CPU time used over an idle window.
struct CpuUse {
    /// By the window's own processes.
    used: Duration,
    /// The same, by thread.
    threads: CpuTimes,
    /// By the X server, drawing what they send it.
    x_server: Duration,
    /// The load average when the window began.
    load: String,
    /// For a hidden window: CPU time used in the `HIDE_SETTLE` after it hid.
    settling: Option<Duration>,
}

/// The grants the app's agent holds: the app's own view of the broker.
fn agent_grants(desktop: &Desktop, broker: &DevBroker) -> Option<usize> {
    let output = desktop
        .command(hourglass_e2e::bin("hourglass"))
        .args(["agent", "--status", "--json"])
        .env("HOURGLASS_BROKER", &broker.url)
        .env_remove("HOURGLASS_TOKEN")
        .output()
        .ok()?;
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    status["grants"].as_array().map(Vec::len)
}

/// Whether the screen changes within a little more than a second: the
/// countdowns are ticking.
fn ticking(desktop: &Desktop) -> bool {
    let before = desktop.screen().map(|screen| screen.pixels);
    std::thread::sleep(Duration::from_millis(1_200));
    let after = desktop.screen().map(|screen| screen.pixels);
    before.is_some() && before != after
}

/// Starts the app and waits until it shows its user's `GRANTS` grants and
/// its screen changes within `within` (a countdown moved).
fn start_showing_grants(
    desktop: &Desktop,
    app: &Launcher,
    broker: &DevBroker,
    within: Duration,
) -> anyhow::Result<Running> {
    let (_, running) = start_to_first_paint(desktop, app)?;
    let holds = hourglass_e2e::eventually(Duration::from_secs(30), || {
        agent_grants(desktop, broker).filter(|&grants| grants == GRANTS)
    });
    anyhow::ensure!(holds.is_some(), "the app never held the {GRANTS} grants");
    let ticks = hourglass_e2e::eventually(within, || ticking(desktop).then_some(()));
    anyhow::ensure!(ticks.is_some(), "the app's window shows no countdown moving");
    Ok(running)
}

fn app_idle(desktop: &Desktop, app: &Launcher, broker: &DevBroker, plan: &Plan) -> anyhow::Result<Idle> {
    // Cards showing minutes change once a minute.
    let mut running = start_showing_grants(desktop, app, broker, Duration::from_secs(75))?;
    desktop.screenshot("bench-desktop-app");
    std::thread::sleep(plan.settle);
    let memory = Memory::sample(&running, plan.pss_samples, PSS_EVERY);
    let open = cpu_use(desktop, &running, plan.idle);

    // Escape hides the window, as closing it does: the app stays in the tray.
    let window = desktop.command("xdotool").args(["search", "--name", "^Hourglass$"]).output()?;
    let window = String::from_utf8_lossy(&window.stdout).lines().next().unwrap_or_default().to_owned();
    anyhow::ensure!(!window.is_empty(), "the app's window was not found");
    desktop.command("xdotool").args(["windowfocus", "--sync", &window]).status()?;
    desktop.command("xdotool").args(["key", "Escape"]).status()?;
    let hidden = hourglass_e2e::eventually(Duration::from_secs(10), || {
        let visible = desktop.command("xdotool").args(["search", "--onlyvisible", "--name", "^Hourglass$"]).output();
        visible.is_ok_and(|found| found.stdout.is_empty()).then_some(())
    });
    anyhow::ensure!(hidden.is_some(), "the app's window did not hide on Escape");
    let settling = cpu_use(desktop, &running, HIDE_SETTLE).used;
    let mut hidden = cpu_use(desktop, &running, plan.idle);
    hidden.settling = Some(settling);
    running.stop();
    Ok(Idle { memory, open, hidden: Some(hidden) })
}

/// Idle CPU with the window open on grants counting down in seconds.
fn app_open_ticking(desktop: &Desktop, app: &Launcher, broker: &DevBroker, plan: &Plan) -> anyhow::Result<CpuUse> {
    let mut running = start_showing_grants(desktop, app, broker, Duration::from_secs(30))?;
    desktop.screenshot("bench-desktop-app-ending");
    std::thread::sleep(plan.settle);
    let open = cpu_use(desktop, &running, plan.idle);
    running.stop();
    Ok(open)
}

fn peer_idle(desktop: &Desktop, peer: &Launcher, plan: &Plan) -> anyhow::Result<Idle> {
    let (_, mut running) = start_to_first_paint(desktop, peer)?;
    // It has no data to wait for: the frame it paints is all it shows.
    std::thread::sleep(Duration::from_secs(3));
    desktop.screenshot("bench-desktop-chromium");
    std::thread::sleep(plan.settle);
    let memory = Memory::sample(&running, plan.pss_samples, PSS_EVERY);
    let open = cpu_use(desktop, &running, plan.idle);
    running.stop();
    Ok(Idle { memory, open, hidden: None })
}

/// CPU time of a window's processes over `window`, and of the X server.
fn cpu_use(desktop: &Desktop, running: &Running, window: Duration) -> CpuUse {
    let load = load_average();
    let mut used = cpu_over(&[&|| running.processes(), &|| x_server(desktop)], window).into_iter();
    let threads = used.next().unwrap_or_default();
    let x_server = used.next().unwrap_or_default().total;
    CpuUse { used: threads.total, threads, x_server, load, settling: None }
}

fn percent_of_core(cpu: Duration, window: Duration) -> String {
    format!("{:.2}% of a core", cpu.as_secs_f64() / window.as_secs_f64() * 100.0)
}

fn cpu_ms(cpu: Duration) -> String {
    format!("{:.1} ms", cpu.as_secs_f64() * 1e3)
}

fn one(value: Duration) -> Summary {
    Summary { runs: 1, min: value, median: value, p99: value }
}

fn memory_figure(app: &Idle, peer: Option<&Idle>) -> Figure {
    let app_pss = app.memory.median();
    let parts: Vec<String> = app.memory.by_process.iter().map(|(name, kib)| format!("{name} {}", mib(*kib))).collect();
    let (spread_min, spread_max) =
        (app.memory.totals.first().copied().unwrap_or(0), app.memory.totals.last().copied().unwrap_or(0));
    let (met, peer_text, ratio) = match peer {
        Some(peer) => {
            let peer_pss = peer.memory.median();
            (
                Some(app_pss * 2 <= peer_pss),
                format!(
                    "Chromium `--app`, same UI without data: {} ({} processes)",
                    mib(peer_pss),
                    peer.memory.processes
                ),
                format!("; {:.2}× Chromium's", app_pss as f64 / peer_pss.max(1) as f64),
            )
        }
        None => (None, "chromium not installed (scripts/bench installs it)".to_owned(), String::new()),
    };
    let system: Vec<String> = SYSTEM_LIBRARIES
        .iter()
        .zip(app.memory.system_libraries)
        .map(|((what, _), kib)| format!("{what} {}", mib(kib)))
        .collect();
    Figure {
        name: format!("Desktop memory: PSS of the app and its WebKit processes, {GRANTS} grants counting down"),
        summary: None,
        target: "≤ half of Chromium's".into(),
        met,
        peer: peer_text,
        note: format!(
            "**{}** (median of {} samples {} s apart, {}–{}{ratio}): {}; of it, system libraries WebKitGTK loads whatever the app does: {}",
            mib(app_pss),
            app.memory.totals.len(),
            PSS_EVERY.as_secs(),
            mib(spread_min),
            mib(spread_max),
            parts.join(", "),
            system.join(", ")
        ),
    }
}

fn cpu_figures(app: &Idle, ending: &CpuUse, peer: Option<&Idle>, window: Duration) -> Vec<Figure> {
    let seconds = window.as_secs();
    let method = |cpu: &CpuUse| {
        format!(
            "busiest threads: {}; X server drawing it: {} more; every process's threads' CPU time from \
             `schedstat`; load average {}",
            cpu.threads.busiest(4),
            cpu_ms(cpu.x_server),
            cpu.load
        )
    };
    let peer_open = match peer {
        Some(peer) => format!(
            "Chromium `--app`, same UI with nothing ticking: {} ({}; X server {})",
            cpu_ms(peer.open.used),
            percent_of_core(peer.open.used, window),
            cpu_ms(peer.open.x_server)
        ),
        None => "chromium not installed (scripts/bench installs it)".into(),
    };
    let open_figure = |what: &str, cpu: &CpuUse, peer: String| Figure {
        name: format!("Desktop idle CPU time over {seconds} s, window open, {GRANTS} grants {what}"),
        summary: Some(one(cpu.used)),
        target: format!("< {} (1% of a core)", cpu_ms(window / 100)),
        met: Some(cpu.used < window / 100),
        peer,
        note: format!("{}; {}", percent_of_core(cpu.used, window), method(cpu)),
    };
    let mut figures = vec![
        open_figure("with hours left (cards show minutes)", &app.open, peer_open.clone()),
        open_figure("in their last 10 minutes (cards count seconds)", ending, peer_open),
    ];
    if let Some(hidden) = &app.hidden {
        let settling = hidden.settling.map_or_else(String::new, |cpu| {
            format!(
                "; measured from {} s after the window hid: in those seconds WebKit frees the hidden page's memory, \
                 once ({} of CPU)",
                HIDE_SETTLE.as_secs(),
                cpu_ms(cpu)
            )
        });
        figures.push(Figure {
            name: format!("Desktop idle CPU time over {seconds} s, window hidden (tray only), {GRANTS} grants"),
            summary: Some(one(hidden.used)),
            target: format!("< {} (0.1% of a core)", cpu_ms(window / 1000)),
            met: Some(hidden.used < window / 1000),
            peer: "— (a Chromium `--app` window has no tray to hide in)".into(),
            note: format!("{}{settling}; {}", percent_of_core(hidden.used, window), method(hidden)),
        });
    }
    figures
}

/// `load`: the 1-minute load average when the starts began (two processes
/// starting at once compete with whatever else the machine runs).
fn start_figure(app: Summary, peer: Option<Summary>, load: &str) -> Figure {
    Figure {
        name: "Desktop cold start to first paint".into(),
        summary: Some(app),
        target: "median < 1 s".into(),
        met: Some(app.median < Duration::from_secs(1)),
        peer: match peer {
            Some(peer) => format!("Chromium `--app`, same UI: median {}, p99 {}", human(peer.median), human(peer.p99)),
            None => "chromium not installed (scripts/bench installs it)".into(),
        },
        note: format!(
            "release build, page cache warm; from spawn to the first screen showing rendered text \
             (Xvfb's framebuffer read every {} ms); load average {load} when the starts began",
            POLL.as_millis()
        ),
    }
}

fn size_figures(app_binary: &Path) -> anyhow::Result<Vec<Figure>> {
    let binary = std::fs::metadata(app_binary)?.len();
    let deb = match std::env::var_os("HOURGLASS_BENCH_DEB") {
        Some(path) => Some(PathBuf::from(path)),
        None => newest_deb(&app_binary.with_file_name("bundle").join("deb")),
    };
    let chromium = apt_sizes(&["chromium", "chromium-common"]);
    let chromium_installed = chromium.map(|(_, installed)| format!("Chromium installed: {}", mib(installed)));
    let chromium_debs = chromium.map(|(download, _)| format!("chromium + chromium-common .debs: {}", mib(download)));
    let mut figures = vec![Figure {
        name: "Desktop release binary".into(),
        summary: None,
        target: "reported".into(),
        met: None,
        peer: chromium_installed.unwrap_or_else(|| "—".into()),
        note: format!(
            "**{}** `hourglass-desktop` (the `desktop` profile: built for size, stripped; WebKitGTK is the system's)",
            mib(binary / 1024)
        ),
    }];
    match deb {
        Some(deb) => {
            let size = std::fs::metadata(&deb).with_context(|| format!("{}", deb.display()))?.len();
            let name = deb.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            figures.push(Figure {
                name: "Desktop .deb".into(),
                summary: None,
                target: "reported".into(),
                met: None,
                peer: chromium_debs.unwrap_or_else(|| "—".into()),
                note: format!("**{}** `{name}` (the app and the CLI)", mib(size / 1024)),
            });
        }
        None => eprintln!("desktop: no .deb found (scripts/package-deb builds it)"),
    }
    Ok(figures)
}

fn newest_deb(dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .max_by_key(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
}

/// The packages' download size and installed size in KiB, from apt's lists.
fn apt_sizes(packages: &[&str]) -> Option<(u64, u64)> {
    let mut download = 0;
    let mut installed = 0;
    for package in packages {
        let output = Command::new("apt-cache").args(["show", "--no-all-versions", package]).output().ok()?;
        let text = String::from_utf8_lossy(&output.stdout);
        let field =
            |name: &str| -> Option<u64> { text.lines().find_map(|line| line.strip_prefix(name))?.trim().parse().ok() };
        download += field("Size:")? / 1024;
        installed += field("Installed-Size:")?;
    }
    Some((download, installed))
}

/// Serves the files under `root` on a loopback port; returns its URL.
fn serve_directory(root: PathBuf) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/", listener.local_addr()?);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let root = root.clone();
            // One thread per connection: a browser opens some it uses later.
            std::thread::spawn(move || serve_file(stream, &root));
        }
    });
    Ok(url)
}

fn serve_file(mut stream: TcpStream, root: &Path) {
    let mut request = String::new();
    let mut reader = BufReader::new(&stream);
    if reader.read_line(&mut request).is_err() {
        return;
    }
    // The headers: nothing in them matters here.
    let mut header = String::new();
    while reader.read_line(&mut header).is_ok_and(|read| read > 2) {
        header.clear();
    }
    let path = request.split(' ').nth(1).unwrap_or("/").split('?').next().unwrap_or("/");
    let path = if path == "/" { "index.html" } else { path.trim_start_matches('/') };
    let file = (!path.split('/').any(|part| part == "..")).then(|| root.join(path));
    let response = match file.and_then(|file| Some((std::fs::read(&file).ok()?, file))) {
        Some((body, file)) => {
            let kind = match file.extension().and_then(|ext| ext.to_str()) {
                Some("html") => "text/html; charset=utf-8",
                Some("js") => "text/javascript",
                Some("css") => "text/css",
                Some("svg") => "image/svg+xml",
                Some("png") => "image/png",
                _ => "application/octet-stream",
            };
            let mut response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            response.extend(body);
            response
        }
        None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
    };
    let _ = stream.write_all(&response);
}
