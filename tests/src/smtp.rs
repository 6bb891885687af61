//! A real SMTP server for tests: PyPI's `aiosmtpd` (installed by
//! scripts/setup.sh into a venv outside the clone), with STARTTLS required
//! under a test CA's certificate, delivering into a maildir the test reads.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::ca::TestCa;
use crate::{eventually, free_port};

/// An email as delivered: its headers (names in lower case) and text.
#[derive(Debug, Clone)]
pub struct Mail {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Mail {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// `aiosmtpd` on a free loopback port. Killed on drop.
pub struct SmtpServer {
    child: Child,
    pub address: String,
    /// The CA its certificate is signed by, for the client to trust.
    pub ca_file: PathBuf,
    maildir: PathBuf,
    _dir: tempfile::TempDir,
}

fn python() -> PathBuf {
    if let Ok(path) = std::env::var("HOURGLASS_AIOSMTPD_PYTHON") {
        return PathBuf::from(path);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    Path::new(&home).join(".cache/hourglass/aiosmtpd/bin/python")
}

impl SmtpServer {
    pub fn start() -> SmtpServer {
        let python = python();
        assert!(
            python.exists(),
            "{} is missing: aiosmtpd is installed by scripts/setup.sh (pip, into a venv)",
            python.display()
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = TestCa::new("Hourglass test SMTP CA");
        let ca_file = dir.path().join("ca.pem");
        ca.write(&ca_file);
        let (cert, key) = ca.server(&["127.0.0.1", "localhost"]);
        std::fs::write(dir.path().join("cert.pem"), cert).expect("cert written");
        std::fs::write(dir.path().join("key.pem"), key).expect("key written");
        let maildir = dir.path().join("mail");
        let port = free_port();
        let address = format!("127.0.0.1:{port}");
        // STARTTLS is required (aiosmtpd refuses MAIL before it when given
        // a certificate): a message that arrives came over TLS.
        let mut child = Command::new(&python)
            .args(["-m", "aiosmtpd", "-n", "-l", &address, "--tlscert"])
            .arg(dir.path().join("cert.pem"))
            .arg("--tlskey")
            .arg(dir.path().join("key.pem"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("aiosmtpd runs");
        let stderr = BufReader::new(child.stderr.take().expect("stderr"));
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                eprintln!("aiosmtpd: {line}");
            }
        });
        let up = eventually(Duration::from_secs(20), || std::net::TcpStream::connect(&address).ok());
        assert!(up.is_some(), "aiosmtpd listens on {address}");
        SmtpServer { child, address, ca_file, maildir, _dir: dir }
    }

    /// Every message delivered so far, oldest first.
    pub fn mails(&self) -> Vec<Mail> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else { return Vec::new() };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter_map(|entry| Some((entry.metadata().ok()?.modified().ok()?, entry.path())))
            .collect();
        files.sort();
        files.into_iter().filter_map(|(_, path)| std::fs::read_to_string(path).ok()).map(|text| parse(&text)).collect()
    }

    /// Waits until `count` messages were delivered.
    pub fn wait_for(&self, count: usize, limit: Duration) -> Vec<Mail> {
        let found = eventually(limit, || {
            let mails = self.mails();
            (mails.len() >= count).then_some(mails)
        });
        found.unwrap_or_else(|| panic!("{count} email(s) within {limit:?}; delivered: {:#?}", self.mails()))
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Headers (unfolded) and body of an RFC 5322 message.
fn parse(text: &str) -> Mail {
    let text = text.replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    Mail { headers, body: body.to_owned() }
}
