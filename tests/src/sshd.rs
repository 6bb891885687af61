//! A throwaway OpenSSH server on loopback that trusts one user CA and
//! honours one KRL, and the `ssh` client to log in to it with a key and a
//! certificate. Users log in as the current OS user: sshd runs as that user
//! too, so it can only let that one user in (root in CI can serve anyone).

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{Run, eventually, free_port};

const SSHD: &str = "/usr/sbin/sshd";
const SSH: &str = "/usr/bin/ssh";
const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";

/// An `ssh` client that reads no config file, authenticates with public
/// keys only and never asks anything.
const CLIENT_OPTIONS: [&str; 15] = [
    "-F",
    "/dev/null",
    "-T",
    "-o",
    "PreferredAuthentications=publickey",
    "-o",
    "BatchMode=yes",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=10",
];

/// An `sshd -D -e` with its own host key and config in a temp dir. Killed on drop.
pub struct Sshd {
    child: Child,
    pub port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sshd {
    /// Starts sshd on a free loopback port, trusting `ca_pub` (an OpenSSH
    /// public key line) for user certificates and reading revocations from
    /// `krl_path` (`RevokedKeys`: while that file is missing sshd refuses
    /// every key).
    pub fn start(ca_pub: &str, krl_path: &Path) -> Sshd {
        // The port is free when picked but may be taken before sshd binds
        // it: try a few.
        Sshd::start_on((0..5).map(|_| free_port()), ca_pub, krl_path)
    }

    /// Like [`Sshd::start`], on `port`: one a policy named before the
    /// broker (whose CA sshd trusts) started.
    pub fn start_at(port: u16, ca_pub: &str, krl_path: &Path) -> Sshd {
        Sshd::start_on(std::iter::once(port), ca_pub, krl_path)
    }

    fn start_on(ports: impl Iterator<Item = u16>, ca_pub: &str, krl_path: &Path) -> Sshd {
        let dir = tempfile::tempdir().expect("temp dir");
        // Privilege separation needs this directory when sshd runs as root.
        let _ = std::fs::create_dir_all("/run/sshd");
        let host_key = dir.path().join("host_ed25519");
        let keygen = Command::new(SSH_KEYGEN)
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "hourglass-test-host", "-f"])
            .arg(&host_key)
            .output()
            .expect("ssh-keygen runs (install openssh-client)");
        assert!(keygen.status.success(), "host key: {}", String::from_utf8_lossy(&keygen.stderr));
        let ca_path = dir.path().join("user_ca.pub");
        std::fs::write(&ca_path, format!("{}\n", ca_pub.trim())).expect("user_ca.pub");
        let log = dir.path().join("sshd.log");
        let mut last_log = String::new();
        for port in ports {
            let config = dir.path().join("sshd_config");
            std::fs::write(&config, config_text(port, dir.path(), &host_key, &ca_path, krl_path)).expect("config");
            let check = Command::new(SSHD).arg("-t").arg("-f").arg(&config).output().expect("sshd -t runs");
            assert!(check.status.success(), "sshd refuses the config: {}", String::from_utf8_lossy(&check.stderr));
            let mut child = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("sshd.log"))
                .spawn()
                .expect("sshd starts (install openssh-server)");
            let ready = eventually(Duration::from_secs(10), || {
                if let Ok(Some(_)) = child.try_wait() {
                    return Some(false);
                }
                accepts_ssh(port).then_some(true)
            });
            if ready == Some(true) {
                return Sshd { child, port, log, _dir: dir };
            }
            let _ = child.kill();
            let _ = child.wait();
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
        }
        panic!("sshd did not start: {last_log}");
    }

    /// [`CLIENT_OPTIONS`] as one line, for a test's own `ssh` command in a shell.
    pub fn client_options() -> String {
        CLIENT_OPTIONS.join(" ")
    }

    /// Runs `COMMAND` over ssh as `user` with the private key `key` and the
    /// certificate `cert`, and nothing else: no agent, no other identity,
    /// no config file, no prompts.
    pub fn ssh(&self, user: &str, key: &Path, cert: &Path, command: &str) -> Run {
        let mut ssh = self.client();
        ssh.arg("-i").arg(key).arg("-o").arg(format!("CertificateFile={}", cert.display()));
        ssh.args(["-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none"]);
        self.run(ssh, user, command)
    }

    /// Runs `COMMAND` over ssh as `user` with only what the ssh-agent at
    /// `agent` holds: no key file, no config file, no prompts.
    pub fn ssh_through_agent(&self, user: &str, agent: &Path, command: &str) -> Run {
        let mut ssh = self.client();
        ssh.arg("-o").arg(format!("IdentityAgent={}", agent.display()));
        self.run(ssh, user, command)
    }

    /// `ssh` to this server with no config file, publickey only, never asking.
    fn client(&self) -> Command {
        let mut ssh = Command::new(SSH);
        ssh.args(CLIENT_OPTIONS).args(["-p", &self.port.to_string()]);
        ssh
    }

    fn run(&self, mut ssh: Command, user: &str, command: &str) -> Run {
        let output = ssh
            .arg(format!("{user}@127.0.0.1"))
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .expect("ssh runs (install openssh-client)");
        Run::from(output)
    }

    /// What sshd logged so far: why it accepted or refused each key.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_text(port: u16, dir: &Path, host_key: &Path, ca: &Path, krl: &Path) -> String {
    format!(
        "Port {port}\n\
         ListenAddress 127.0.0.1\n\
         HostKey {host_key}\n\
         PidFile {pid}\n\
         UsePAM no\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PubkeyAuthentication yes\n\
         AuthorizedKeysFile none\n\
         TrustedUserCAKeys {ca}\n\
         RevokedKeys {krl}\n\
         PermitRootLogin prohibit-password\n\
         StrictModes no\n\
         UseDNS no\n\
         PrintMotd no\n\
         LogLevel VERBOSE\n",
        host_key = host_key.display(),
        pid = dir.join("sshd.pid").display(),
        ca = ca.display(),
        krl = krl.display(),
    )
}

/// Whether an SSH server answers on `port` (it greets with `SSH-2.0-`).
fn accepts_ssh(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut greeting = [0u8; 8];
    stream.read_exact(&mut greeting).is_ok() && greeting.starts_with(b"SSH-2.0-")
}

/// `ssh-agent -D -a SOCKET`, killed on drop: a user's ssh-agent.
pub struct SshAgent {
    child: Child,
    pub socket: PathBuf,
}

impl SshAgent {
    pub fn start(dir: &Path) -> SshAgent {
        let socket = dir.join("ssh-agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent starts (install openssh-client)");
        assert!(eventually(Duration::from_secs(10), || socket.exists().then_some(())).is_some(), "ssh-agent listens");
        SshAgent { child, socket }
    }

    /// `ssh-add -L`: the identities' public lines (certificates included).
    pub fn listed(&self) -> String {
        let output = Command::new("ssh-add").arg("-L").env("SSH_AUTH_SOCK", &self.socket).output().expect("ssh-add");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `ssh-add -l`: the identities' fingerprints and types.
    pub fn fingerprints(&self) -> String {
        let output = Command::new("ssh-add").arg("-l").env("SSH_AUTH_SOCK", &self.socket).output().expect("ssh-add");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The current OS user's login name: the one user the test sshd can let in.
pub fn current_user() -> String {
    let output = Command::new("id").arg("-un").output().expect("id runs");
    assert!(output.status.success(), "id -un: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("a UTF-8 user name").trim().to_owned()
}

/// Whether OpenSSH's own reader says the KRL at `krl` revokes the
/// certificate in `cert` (`ssh-keygen -Q`).
pub fn krl_revokes(krl: &Path, cert: &Path) -> bool {
    let output = Command::new(SSH_KEYGEN).arg("-Q").arg("-f").arg(krl).arg(cert).output().expect("ssh-keygen runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    match output.status.code() {
        Some(0) if stdout.contains(": ok") => false,
        Some(1) if stdout.contains("REVOKED") => true,
        _ => panic!("ssh-keygen -Q failed: {stdout} {}", String::from_utf8_lossy(&output.stderr)),
    }
}
