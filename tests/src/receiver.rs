//! An HTTP receiver on a loopback port for what the broker sends out:
//! webhooks, Teams cards, and Slack's Web API (`/api/chat.postMessage`
//! answers with a channel and a `ts`, `/api/chat.update` with the same, as
//! Slack does). It keeps every request it is sent, and can be told to fail
//! the next few with 503, as a receiver that is down.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub body: String,
    /// What it was answered with.
    pub status: u16,
    /// When it arrived (its body read).
    pub at: std::time::Instant,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    /// Requests still to be refused with 503.
    failing: AtomicU32,
    slack_messages: AtomicU32,
    stopped: AtomicBool,
}

/// Stops on drop.
pub struct Receiver {
    pub url: String,
    shared: Arc<Shared>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("the receiver listens");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        let shared = Arc::new(Shared::default());
        let accepting = Arc::clone(&shared);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if accepting.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let shared = Arc::clone(&accepting);
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        Receiver { url, shared }
    }

    /// Refuses the next `count` requests with 503.
    pub fn fail_next(&self, count: u32) {
        self.shared.failing.store(count, Ordering::SeqCst);
    }

    /// How many requests arrived so far.
    pub fn count(&self) -> usize {
        self.shared.received.lock().expect("not poisoned").len()
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("not poisoned").clone()
    }

    /// What was received at `path` and answered with success.
    pub fn accepted(&self, path: &str) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.path == path && r.status == 200).collect()
    }

    /// Waits until `count` requests to `path` were accepted; returns them.
    pub fn wait_for(&self, path: &str, count: usize, limit: Duration) -> Vec<Received> {
        let found = crate::eventually(limit, || {
            let accepted = self.accepted(path);
            (accepted.len() >= count).then_some(accepted)
        });
        found.unwrap_or_else(|| {
            panic!("{count} request(s) to {path} within {limit:?}; received: {:#?}", self.received())
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

fn serve(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = match stream.try_clone() {
        Ok(writer) => writer,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    // Several requests per connection (keep-alive).
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or_default().to_owned(), parts.next().unwrap_or_default().to_owned());
        let mut headers = BTreeMap::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let length = headers.get("content-length").and_then(|l| l.parse::<usize>().ok()).unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        let failing = shared.failing.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        let (status, answer) = if failing {
            (503, json!({ "error": "down for the test" }))
        } else {
            (200, answer_for(&path, &body, shared))
        };
        shared.received.lock().expect("not poisoned").push(Received {
            method,
            path,
            headers,
            body,
            status,
            at: std::time::Instant::now(),
        });
        let answer = answer.to_string();
        let reason = if status == 200 { "OK" } else { "Service Unavailable" };
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// Slack's Web API answers; anything else `{"ok": true}`.
fn answer_for(path: &str, body: &str, shared: &Shared) -> Value {
    let request: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    match path {
        "/api/chat.postMessage" => {
            let n = shared.slack_messages.fetch_add(1, Ordering::SeqCst) + 1;
            json!({ "ok": true, "channel": request["channel"], "ts": format!("1800000000.{n:06}") })
        }
        "/api/chat.update" => json!({ "ok": true, "channel": request["channel"], "ts": request["ts"] }),
        _ => json!({ "ok": true }),
    }
}
