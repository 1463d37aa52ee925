//! The background worker of a store: flushes pending usage every
//! `usage_flush_interval` and, for a shared store, follows the change feed
//! (woken by the backend's notifications, or every `sync_interval`).

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Instant;

use super::budgets::LeaseThread;
use super::engine::Engine;
use super::options::Options;
use crate::backend::Wake;

pub(crate) struct Worker {
    stop: mpsc::Sender<()>,
    handle: JoinHandle<()>,
    leases: Option<LeaseThread>,
    engine: Weak<Engine>,
}

impl Worker {
    pub(crate) fn spawn(engine: &Arc<Engine>, options: &Options) -> Worker {
        let (stop, stopped) = mpsc::channel::<()>();
        let weak: Weak<Engine> = Arc::downgrade(engine);
        let flush_every = options.usage_flush_interval;
        let maintain_every = options.maintenance_interval;
        let sync_every = options.sync_interval;
        let shared = engine.shared;
        let tick = if shared {
            flush_every.min(sync_every)
        } else {
            flush_every
        };
        let handle = std::thread::Builder::new()
            .name("keyward-flusher".into())
            .spawn(move || {
                let mut last_flush = Instant::now();
                let mut last_maintenance = Instant::now();
                let mut last_sync = Instant::now();
                loop {
                    let changed = if shared {
                        // Woken by another writer's NOTIFY, or the periodic check.
                        let Some(engine) = weak.upgrade() else { return };
                        let backend = Arc::clone(&engine.backend);
                        drop(engine);
                        let wake = backend.wait_for_change(tick);
                        match stopped.try_recv() {
                            Err(mpsc::TryRecvError::Empty) => {}
                            Ok(()) | Err(mpsc::TryRecvError::Disconnected) => return,
                        }
                        if wake == Wake::Lost
                            && let Some(engine) = weak.upgrade()
                        {
                            engine.mark_unsynced();
                        }
                        wake != Wake::Quiet
                    } else {
                        match stopped.recv_timeout(tick) {
                            Err(RecvTimeoutError::Timeout) => {}
                            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                        }
                        false
                    };
                    let Some(engine) = weak.upgrade() else { return };
                    if shared && (changed || last_sync.elapsed() >= sync_every) {
                        last_sync = Instant::now();
                        let _ = engine.sync();
                    }
                    if last_flush.elapsed() >= flush_every {
                        last_flush = Instant::now();
                        // A failed flush keeps its deltas for the next tick.
                        let _ = engine.flush_usage();
                        // Also re-applies a sled store's file permissions.
                        let _ = engine.backend.flush();
                    }
                    if last_maintenance.elapsed() >= maintain_every {
                        last_maintenance = Instant::now();
                        let _ = engine.maintain();
                    }
                }
            })
            .expect("spawning the usage flusher thread");
        Worker {
            stop,
            handle,
            leases: LeaseThread::spawn(engine),
            engine: Arc::downgrade(engine),
        }
    }

    /// Stops the threads and waits for them; the quota this process holds
    /// goes back to storage.
    pub(crate) fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.handle.join();
        if let Some(leases) = self.leases {
            leases.stop();
        }
        if let Some(engine) = self.engine.upgrade() {
            engine.return_leases();
        }
    }
}
