//! A real syslog receiver for tests: Debian's rsyslogd, TLS on its TCP
//! input (the OpenSSL stream driver) under a test CA's certificate, writing
//! each message's MSGID, structured data and text to a file the test reads.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::ca::TestCa;
use crate::{eventually, free_port};

/// One message as rsyslog parsed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogMessage {
    pub msgid: String,
    pub structured_data: String,
    pub text: String,
}

/// `rsyslogd -n` on a free loopback port. Killed on drop.
pub struct Rsyslog {
    child: Child,
    pub address: String,
    pub ca_file: PathBuf,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Rsyslog {
    pub fn start() -> Rsyslog {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = TestCa::new("Hourglass test syslog CA");
        let ca_file = dir.path().join("ca.pem");
        ca.write(&ca_file);
        let (cert, key) = ca.server(&["127.0.0.1"]);
        std::fs::write(dir.path().join("cert.pem"), cert).expect("cert written");
        std::fs::write(dir.path().join("key.pem"), key).expect("key written");
        let port = free_port();
        let out = dir.path().join("messages.log");
        let d = dir.path().display();
        let config = format!(
            r#"global(workDirectory="{d}" DefaultNetstreamDriver="ossl" DefaultNetstreamDriverCAFile="{d}/ca.pem"
       DefaultNetstreamDriverCertFile="{d}/cert.pem" DefaultNetstreamDriverKeyFile="{d}/key.pem")
module(load="imtcp" StreamDriver.Name="ossl" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
input(type="imtcp" port="{port}" address="127.0.0.1")
template(name="fields" type="string" string="%msgid%\t%structured-data%\t%msg%\n")
*.* action(type="omfile" file="{out}" template="fields")
"#,
            out = out.display()
        );
        let config_file = dir.path().join("rsyslog.conf");
        std::fs::write(&config_file, config).expect("rsyslog.conf");
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&config_file)
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rsyslogd runs (apt-get install rsyslog rsyslog-openssl; scripts/setup.sh does)");
        let address = format!("127.0.0.1:{port}");
        let up = eventually(Duration::from_secs(20), || std::net::TcpStream::connect(&address).ok());
        assert!(up.is_some(), "rsyslogd listens on {address}");
        Rsyslog { child, address, ca_file, out, _dir: dir }
    }

    /// Every message written so far.
    pub fn messages(&self) -> Vec<SyslogMessage> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let mut fields = line.splitn(3, '\t');
                Some(SyslogMessage {
                    msgid: fields.next()?.to_owned(),
                    structured_data: fields.next()?.to_owned(),
                    text: fields.next()?.trim_start().to_owned(),
                })
            })
            .collect()
    }

    /// Waits until `pick` finds what it wants among the messages.
    pub fn wait_for<T>(&self, limit: Duration, pick: impl Fn(&[SyslogMessage]) -> Option<T>) -> T {
        eventually(limit, || pick(&self.messages()))
            .unwrap_or_else(|| panic!("rsyslog did not get what the test waits for: {:#?}", self.messages()))
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
