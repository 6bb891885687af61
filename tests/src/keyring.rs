//! A private D-Bus session bus per test, with or without a real Secret
//! Service (gnome-keyring-daemon, unlocked, in a throwaway HOME): the OS
//! keyring `hourglass login` keeps sessions in. The bus has no service
//! activation, so nothing but what the test started answers on it.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::eventually;

pub struct SessionBus {
    dbus: Child,
    keyring: Option<Child>,
    /// `DBUS_SESSION_BUS_ADDRESS` of the bus.
    pub address: String,
    temp: tempfile::TempDir,
}

impl SessionBus {
    /// A bus with gnome-keyring's Secret Service on it, its login keyring unlocked.
    pub fn with_keyring() -> SessionBus {
        let mut bus = SessionBus::start();
        let mut daemon = Command::new("gnome-keyring-daemon");
        daemon.env_clear().envs(bus.env()).env("PATH", std::env::var_os("PATH").unwrap_or_default());
        bus.keyring = Some(spawn_secret_service(daemon, &bus.address));
        bus
    }

    /// A bus on which nothing provides a Secret Service.
    pub fn without_keyring() -> SessionBus {
        SessionBus::start()
    }

    fn start() -> SessionBus {
        let temp = tempfile::tempdir().expect("temp dir");
        for dir in ["home", "run"] {
            std::fs::create_dir(temp.path().join(dir)).expect("a directory");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(temp.path().join("run"), std::fs::Permissions::from_mode(0o700))
                .expect("XDG_RUNTIME_DIR is private");
        }
        let config = temp.path().join("bus.conf");
        std::fs::write(&config, bus_config(&temp.path().join("bus"))).expect("bus.conf");
        let mut dbus = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon starts (apt-get install dbus)");
        let mut address = String::new();
        BufReader::new(dbus.stdout.take().expect("stdout")).read_line(&mut address).expect("the bus address");
        let address = address.trim().to_owned();
        assert!(address.starts_with("unix:"), "dbus-daemon printed its address: {address:?}");
        SessionBus { dbus, keyring: None, address, temp }
    }

    /// The environment a process needs to use this bus (and nothing of the
    /// real user's session).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("DBUS_SESSION_BUS_ADDRESS".into(), self.address.clone()),
            ("HOME".into(), self.temp.path().join("home").display().to_string()),
            ("XDG_RUNTIME_DIR".into(), self.temp.path().join("run").display().to_string()),
        ]
    }

    /// What the Secret Service holds for `hourglass` at `broker`, read with
    /// libsecret's own tool (not through Hourglass).
    pub fn stored_session(&self, broker: &str) -> Option<String> {
        let output = Command::new("secret-tool")
            .args(["lookup", "service", "hourglass", "username", broker])
            .envs(self.env())
            .output()
            .expect("secret-tool runs (apt-get install libsecret-tools)");
        let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        (output.status.success() && !text.is_empty()).then_some(text)
    }
}

impl Drop for SessionBus {
    fn drop(&mut self) {
        for child in self.keyring.iter_mut().chain(std::iter::once(&mut self.dbus)) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts gnome-keyring's Secret Service as `daemon` (`gnome-keyring-daemon`
/// with the caller's private bus and throwaway home in its environment), its
/// login keyring created and unlocked, and waits until it serves on the bus
/// at `address`.
pub(crate) fn spawn_secret_service(mut daemon: Command, address: &str) -> Child {
    let mut keyring = daemon
        .args(["--foreground", "--unlock", "--components=secrets"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gnome-keyring-daemon starts (apt-get install gnome-keyring; scripts/setup.sh does)");
    // --unlock reads the new login keyring's password from stdin, to its end.
    let mut stdin = keyring.stdin.take().expect("stdin");
    stdin.write_all(b"test-password").expect("the password is written");
    drop(stdin);
    let owned = eventually(Duration::from_secs(20), || bus_has_owner(address, "org.freedesktop.secrets").then_some(()));
    assert!(owned.is_some(), "gnome-keyring-daemon took the Secret Service name on the private bus");
    keyring
}

/// Whether someone owns `name` on the bus at `address`.
pub(crate) fn bus_has_owner(address: &str, name: &str) -> bool {
    let output = Command::new("dbus-send")
        .args(["--session", "--print-reply", "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus"])
        .arg("org.freedesktop.DBus.NameHasOwner")
        .arg(format!("string:{name}"))
        .env("DBUS_SESSION_BUS_ADDRESS", address)
        .output()
        .expect("dbus-send runs");
    String::from_utf8_lossy(&output.stdout).contains("boolean true")
}

/// A session bus's config with no service activation: nothing answers on
/// it but what a test started.
pub(crate) fn bus_config(socket: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
        socket.display()
    )
}
