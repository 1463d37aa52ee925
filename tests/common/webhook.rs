//! A local HTTP (or, with a test CA's certificate, HTTPS) server for
//! plugin tests: records requests, answers with a status the test sets,
//! binds 127.0.0.1 only, and stops by itself.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub struct Webhook {
    pub port: u16,
    tls: bool,
    pub status: Arc<AtomicU16>,
    pub received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The longest a test server lives.
const LIFETIME: Duration = Duration::from_secs(120);

impl Webhook {
    /// Serves on a fresh port.
    pub fn start() -> Webhook {
        Self::start_on(0)
    }

    /// Serves HTTPS with `config` on a fresh port.
    pub fn start_tls(config: Arc<rustls::ServerConfig>) -> Webhook {
        Self::serve(0, Some(config))
    }

    /// Serves on `port` (0 for any), answering 200 until told otherwise.
    pub fn start_on(port: u16) -> Webhook {
        Self::serve(port, None)
    }

    fn serve(port: u16, tls: Option<Arc<rustls::ServerConfig>>) -> Webhook {
        let is_tls = tls.is_some();
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind 127.0.0.1");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let status = Arc::new(AtomicU16::new(200));
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (status, received, stop) = (status.clone(), received.clone(), stop.clone());
            std::thread::spawn(move || {
                let until = Instant::now() + LIFETIME;
                while !stop.load(Ordering::Acquire) && Instant::now() < until {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            stream.set_nonblocking(false).unwrap();
                            stream
                                .set_read_timeout(Some(Duration::from_secs(5)))
                                .unwrap();
                            let answer = |s: &mut dyn ReadWrite| {
                                if let Some(r) = read_request(s) {
                                    received.lock().unwrap().push(r);
                                    let code = status.load(Ordering::Acquire);
                                    let _ = s.write_all(
                                        format!("HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                                            .as_bytes(),
                                    );
                                    let _ = s.flush();
                                }
                            };
                            match &tls {
                                Some(config) => {
                                    let conn =
                                        rustls::ServerConnection::new(config.clone()).unwrap();
                                    let mut s = rustls::StreamOwned::new(conn, stream);
                                    answer(&mut s);
                                    s.conn.send_close_notify();
                                    let _ = s.flush();
                                }
                                None => answer(&mut { stream }),
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Webhook {
            port,
            tls: is_tls,
            status,
            received,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    pub fn origin(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits (bounded) until `n` requests have arrived.
    pub fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        crate::common::wait_until_or(within, || {
            let got = self.requests();
            (got.len() >= n).then_some(got)
        })
        .unwrap_or_else(|| self.requests())
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn read_request(stream: &mut dyn ReadWrite) -> Option<Received> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Received {
        method,
        path,
        headers,
        body,
    })
}
