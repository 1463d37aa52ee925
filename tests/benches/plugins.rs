//! Time from `regenerate()` returning to the C plugin's request arriving
//! at a local server, over https (a CA made for the run, named by
//! SSL_CERT_FILE) and over plain http.
//!
//! Run: `bash plugins/build.sh && cargo bench -p keyward-tests --bench plugins`

#[path = "../common/tls.rs"]
mod tls;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use keyward::{Argon2Params, CreateOptions, Options, Store};

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// A server on 127.0.0.1 (TLS with `tls`) that reports the instant each
/// request arrived.
fn server(tls: Option<Arc<rustls::ServerConfig>>) -> (u16, mpsc::Receiver<Instant>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut stream: Box<dyn ReadWrite> = match &tls {
                Some(config) => Box::new(rustls::StreamOwned::new(
                    rustls::ServerConnection::new(config.clone()).unwrap(),
                    stream,
                )),
                None => Box::new(stream),
            };
            let mut reader = BufReader::new(&mut stream);
            let mut line = String::new();
            let mut len = 0usize;
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            drop(reader);
            let arrived = Instant::now();
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = stream.flush();
            if tx.send(arrived).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

fn regenerate_to_webhook(c: &mut Criterion) {
    // First, before any store (and its threads) exists: the plugin host
    // reads its trust roots, SSL_CERT_FILE included, once per process.
    let ca = tls::test_ca();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    // SAFETY: no other thread of this process exists yet.
    unsafe { std::env::set_var("SSL_CERT_FILE", &ca_file) };
    measure(c, "https", Some(ca.server));
    measure(c, "http", None);
}

fn measure(c: &mut Criterion, scheme: &str, tls: Option<Arc<rustls::ServerConfig>>) {
    let wasm_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/plugins/crm-webhook-c.wasm"
    );
    let wasm = std::fs::read(wasm_path).expect("run plugins/build.sh first");
    let (port, arrivals) = server(tls);
    let dir = tempfile::tempdir().unwrap();
    let mut o = Options::default();
    o.argon2 = Argon2Params {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    let store = Store::open_with(dir.path().join("s"), &o).unwrap();
    let manifest = format!(
        "name = \"crm-webhook\"\nversion = \"0.1.0\"\napi = \"0.1.0\"\nevents = [\"key.regenerated\"]\n\
         allowed_hosts = [\"{scheme}://127.0.0.1:{port}\"]\n[config]\nurl = \"{scheme}://127.0.0.1:{port}/hook\"\n"
    );
    store
        .install_plugin_with(
            &wasm,
            &manifest,
            keyward::InstallOptions::new().allow_private_network(true),
        )
        .unwrap();
    let id = store.create("bench", CreateOptions::new()).unwrap().info.id;

    let one = || {
        store.regenerate(&id, Duration::ZERO).unwrap();
        let returned = Instant::now();
        let arrived = arrivals
            .recv_timeout(Duration::from_secs(10))
            .expect("delivery");
        arrived.saturating_duration_since(returned)
    };

    let mut latencies: Vec<Duration> = (0..100).map(|_| one()).collect();
    latencies.sort();
    eprintln!(
        "regenerate -> {scheme} webhook over 100 rotations: p50 {:?}, p90 {:?}, p99 {:?}",
        latencies[49], latencies[89], latencies[98]
    );

    let mut g = c.benchmark_group("plugins");
    g.sample_size(20);
    g.bench_function(format!("regenerate_to_{scheme}_webhook"), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| one()).sum());
    });
    g.finish();
}

criterion_group!(benches, regenerate_to_webhook);
criterion_main!(benches);
