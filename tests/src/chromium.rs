//! A real browser for tests of the broker's web pages: Debian's Chromium,
//! headless, driven over WebDriver by its chromedriver. Screenshots go
//! under the target directory, as CI artifacts.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{eventually, free_port};

/// `chromedriver` on a free loopback port. Killed on drop.
pub struct ChromeDriver {
    child: Child,
    pub port: u16,
}

impl ChromeDriver {
    pub fn start() -> ChromeDriver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (apt-get install chromium chromium-driver; scripts/setup.sh does)");
        let up = eventually(Duration::from_secs(20), || std::net::TcpStream::connect(("127.0.0.1", port)).ok());
        assert!(up.is_some(), "chromedriver listens on {port}");
        ChromeDriver { child, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The capabilities of a headless Chromium with a phone's screen.
    pub fn phone() -> serde_json::Map<String, serde_json::Value> {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), serde_json::json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=390,844", "--force-device-scale-factor=1"],
            }),
        );
        capabilities
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
