//! A TCP proxy on a loopback port whose connections a test can cut: the
//! network between a client and the broker failing, with both still up.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Forwards `url` to a target until [`Proxy::cut`]; then every open
/// connection is closed and new ones are closed at once, until
/// [`Proxy::restore`]. Stops on drop.
pub struct Proxy {
    pub url: String,
    cut: Arc<AtomicBool>,
    stopped: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    /// A proxy to the `http(s)://IP:PORT` URL `target`; its own URL has the
    /// same scheme (TLS passes through untouched: the broker's certificate
    /// names the loopback address, whatever the port).
    pub fn start(target: &str) -> Proxy {
        let (scheme, address) = target.split_once("://").expect("an http(s)://IP:PORT target");
        let target: SocketAddr = address.parse().expect("an http(s)://IP:PORT target");
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listens");
        let url = format!("{scheme}://{}", listener.local_addr().expect("proxy address"));
        let cut = Arc::new(AtomicBool::new(false));
        let stopped = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (cut2, stopped2, open2) = (Arc::clone(&cut), Arc::clone(&stopped), Arc::clone(&open));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if cut2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                {
                    let mut open = open2.lock().expect("proxy connections");
                    open.extend([client.try_clone(), server.try_clone()].into_iter().flatten());
                }
                pipe(client.try_clone(), server.try_clone());
                pipe(server.try_clone(), client.try_clone());
            }
        });
        Proxy { url, cut, stopped, open }
    }

    /// The network fails: open connections are closed, new ones refused.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for stream in self.open.lock().expect("proxy connections").drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// The network is back.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

fn pipe(from: std::io::Result<TcpStream>, to: std::io::Result<TcpStream>) {
    let (Ok(mut from), Ok(mut to)) = (from, to) else { return };
    std::thread::spawn(move || {
        let mut buffer = [0_u8; 16 * 1024];
        loop {
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.cut();
        // Wakes the accept loop so that it sees `stopped`.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}
