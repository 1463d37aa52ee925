//! `keyward serve` (a long-lived owner), `keyward status`, and what a
//! short-lived owner does before it exits: give its own events their first
//! delivery attempt.

use std::path::Path;
#[cfg(feature = "plugins")]
use std::time::{Duration, Instant};

use keyward::{Role, Store};

use crate::{Out, Result, failure};

/// `keyward status`: whether this process owns the store or is attached,
/// and which process owns it.
pub(crate) fn status_command(store: &Store, out: &Out) -> Result<u8> {
    let s = store.status();
    if out.json {
        out.json(&s.to_json());
        return Ok(0);
    }
    println!("{:<10} {}", out.bold("role"), s.role);
    if let Some(pid) = s.owner_pid {
        println!("{:<10} {pid}", out.bold("owner pid"));
    }
    if let Some(socket) = &s.socket {
        println!("{:<10} {}", out.bold("socket"), socket.display());
    }
    if let Some(path) = &s.path {
        println!("{:<10} {}", out.bold("path"), path.display());
    }
    println!("{:<10} {}", out.bold("keys"), s.keys);
    Ok(0)
}

/// Blocks SIGTERM and SIGINT in this thread and every thread it starts
/// after, so that [`wait_for_signal`] receives them. Runs before the
/// store is opened.
pub(crate) fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: sigset operations on a local set; pthread_sigmask on this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        libc::sigaddset(&raw mut set, libc::SIGTERM);
        libc::sigaddset(&raw mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut());
        set
    }
}

pub(crate) fn wait_for_signal(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: `set` is an initialised signal set; `sig` is writable.
    unsafe { libc::sigwait(set, &raw mut sig) };
    sig
}

/// `keyward serve`: keeps the store open (owning it, or attached and
/// ready to take over) until SIGTERM or SIGINT, then closes it cleanly.
/// `keyward serve`'s flags.
#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// Serves Prometheus metrics (OpenMetrics text) at http://ADDR/metrics,
    /// e.g. 127.0.0.1:9187 (port 0: any free port, printed).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
}

pub(crate) fn serve_command(path: &Path, args: &ServeArgs, out: &Out) -> Result<u8> {
    let signals = block_stop_signals();
    let store = std::sync::Arc::new(crate::open_store(path)?);
    let s = store.status();
    let pid = std::process::id();
    if out.json {
        println!("{}", s.to_json());
    } else if s.role == Role::Owner {
        println!("serving {} (pid {pid})", path.display());
    } else {
        println!(
            "attached to the owner of {} (pid {}); taking over if it goes",
            path.display(),
            s.owner_pid.unwrap_or(0)
        );
    }
    let metrics = serve_metrics(&store, args.metrics.as_deref(), out)?;
    flush_stdout()?;
    let sig = wait_for_signal(&signals);
    #[cfg(feature = "metrics")]
    if let Some((stop, server)) = metrics {
        let _ = stop.send(());
        let _ = server.join();
    }
    #[cfg(not(feature = "metrics"))]
    let _: Option<std::convert::Infallible> = metrics;
    let store = std::sync::Arc::into_inner(store).expect("the metrics server has stopped");
    store.close()?;
    if !out.json {
        let name = if sig == libc::SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        };
        println!("stopped on {name}");
    }
    Ok(0)
}

/// The metrics server `--metrics` asks for: its stop and its thread.
#[cfg(feature = "metrics")]
type MetricsServer = Option<(
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
)>;

#[cfg(feature = "metrics")]
fn serve_metrics(
    store: &std::sync::Arc<Store>,
    addr: Option<&str>,
    out: &Out,
) -> Result<MetricsServer> {
    let Some(addr) = addr else { return Ok(None) };
    let addr: std::net::SocketAddr = addr
        .parse()
        .map_err(|_| crate::invalid(format!("--metrics {addr:?} is not an address:port")))?;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let (bound, server) = crate::metrics::spawn(std::sync::Arc::clone(store), addr, stopped)
        .map_err(|e| {
            failure(
                crate::exit_code(keyward::ErrorKind::Storage),
                format!("--metrics {addr}: {e}"),
            )
        })?;
    if !out.json {
        println!("metrics on http://{bound}/metrics");
    }
    Ok(Some((stop, server)))
}

#[cfg(not(feature = "metrics"))]
fn serve_metrics(
    _store: &std::sync::Arc<Store>,
    addr: Option<&str>,
    _out: &Out,
) -> Result<Option<std::convert::Infallible>> {
    match addr {
        Some(_) => Err(crate::invalid(
            "--metrics: this keyward was built without metrics (the metrics feature)",
        )),
        None => Ok(None),
    }
}

fn flush_stdout() -> Result<()> {
    use std::io::Write;
    std::io::stdout()
        .flush()
        .map_err(|e| failure(crate::exit_code(keyward::ErrorKind::Storage), e.to_string()))
}

/// The outbox's end as the enabled plugins see it: where a command's own
/// events begin.
#[cfg(feature = "plugins")]
pub(crate) fn outbox_end(store: &Store) -> Option<u64> {
    let plugins = store.plugins().ok()?;
    plugins
        .iter()
        .filter(|p| p.enabled)
        .map(|p| p.status.cursor + p.status.pending)
        .max()
}

#[cfg(not(feature = "plugins"))]
pub(crate) fn outbox_end(_store: &Store) -> Option<u64> {
    None
}

/// How long a short-lived owner waits for its events' first delivery attempt.
#[cfg(feature = "plugins")]
const DELIVERY_WAIT: Duration = Duration::from_secs(30);

/// When this process owns the store, gives the events appended since
/// `before` their first delivery attempt to every enabled plugin (nobody
/// else would deliver them until another process opens the store), then
/// says on stderr what is still pending.
#[cfg(feature = "plugins")]
pub(crate) fn deliver_own_events(store: &Store, before: Option<u64>) {
    let Some(before) = before else { return };
    if store.status().role != Role::Owner {
        return; // The owner delivers.
    }
    let _ = store.flush(); // notices of this command's verifications, too
    let Ok(start) = store.plugins() else { return };
    let Some(end) = outbox_end(store).filter(|end| *end > before) else {
        return;
    };
    let failed_before = |name: &str| {
        start
            .iter()
            .find(|p| p.name == name)
            .map_or(0, |p| p.status.failed)
    };
    let until = Instant::now() + DELIVERY_WAIT;
    // A plugin backing off past the wait will not be tried in it.
    let not_before = keyward::Timestamp::now().plus(DELIVERY_WAIT);
    let pending = loop {
        let Ok(now) = store.plugins() else { return };
        let pending: Vec<_> = now
            .into_iter()
            .filter(|p| p.enabled && p.status.cursor < end)
            .collect();
        let all_tried = pending.iter().all(|p| {
            p.status.failed > failed_before(&p.name)
                || p.status.next_attempt_at.is_some_and(|t| t > not_before)
        });
        if pending.is_empty() || all_tried || Instant::now() >= until {
            break pending;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for p in pending {
        let waiting = end - p.status.cursor;
        let why = p
            .status
            .last_error
            .as_deref()
            .map_or_else(|| "not attempted yet".into(), crate::shown::text);
        eprintln!(
            "keyward: {waiting} event(s) pending for plugin {} ({why}); the process that owns the store next delivers them (`keyward serve` keeps one running)",
            crate::shown::text(&p.name)
        );
    }
}

#[cfg(not(feature = "plugins"))]
pub(crate) fn deliver_own_events(_store: &Store, _before: Option<u64>) {}
