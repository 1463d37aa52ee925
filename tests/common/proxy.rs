//! A TCP proxy on 127.0.0.1 in front of a server, which the test can turn
//! into a black hole: connections stay open and nothing gets through in
//! either direction, as when a network path or a server host vanishes
//! without closing anything. Its threads stop when it is dropped.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let (c, d) = (Arc::clone(&cut), Arc::clone(&done));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if d.load(Ordering::Acquire) {
                    return;
                }
                let (Ok(client), Ok(server)) = (client, TcpStream::connect(target)) else {
                    continue;
                };
                let (client2, server2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                for (from, to) in [(client, server), (server2, client2)] {
                    let (c, d) = (Arc::clone(&c), Arc::clone(&d));
                    std::thread::spawn(move || pump(from, to, &c, &d));
                }
            }
        });
        Proxy { port, cut, done }
    }

    /// Stops (true) or resumes (false) forwarding on every connection, old and new.
    pub fn black_hole(&self, on: bool) {
        self.cut.store(on, Ordering::Release);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, cut: &AtomicBool, done: &AtomicBool) {
    from.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut buf = [0u8; 16 * 1024];
    while !done.load(Ordering::Acquire) {
        if cut.load(Ordering::Acquire) {
            // Nothing is read, so nothing is forwarded or answered.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
        // Wakes the accept loop so that it sees `done`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
