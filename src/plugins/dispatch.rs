//! The dispatcher: one thread per store that, while this process holds
//! the dispatcher lease, delivers each enabled plugin the events after its
//! cursor, in order, with backoff and dead letters. Whatever happens in one
//! delivery fails that attempt only; however the thread ends, the lease is
//! released so that another process of a shared store takes over.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::host::{Delivery, Loaded, Runtime};
use super::{
    DeadLetter, HELD, NOT_HELD, PluginError, PluginRecord, PluginStatus, Shared, dead_key,
    dead_prefix, encode, unreadable,
};
use crate::backend::{Batch, Durability, StorageError, Table};
use crate::events::Event;
use crate::locks::lock;

/// Starts the dispatcher thread.
pub(super) fn spawn(shared: Arc<Shared>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("keyward-plugins".into())
        .spawn(move || {
            // However the thread ends, its lease goes with it, so that
            // another process of a shared store takes over delivery.
            struct Release<'a>(&'a Shared);
            impl Drop for Release<'_> {
                fn drop(&mut self) {
                    self.0.dispatching.store(NOT_HELD, Ordering::Release);
                    self.0.lease.release();
                }
            }
            let _release = Release(&shared);
            shared.run();
        })
}

impl Shared {
    fn save(
        &self,
        name: &str,
        status: &PluginStatus,
        letter: Option<&DeadLetter>,
        drop_letter: Option<u64>,
    ) -> Result<(), StorageError> {
        let mut batch = Batch::default();
        batch.put(Table::PluginState, name.as_bytes().to_vec(), encode(status));
        if let Some(l) = letter {
            batch.put(Table::DeadLetters, dead_key(name, l.seq), encode(l));
        }
        if let Some(seq) = drop_letter {
            batch.delete(Table::DeadLetters, dead_key(name, seq));
        }
        // Durable: after a crash, delivery resumes exactly after the last acknowledged event.
        self.backend
            .commit(batch, Durability::Durable)
            .map(drop)
            .map_err(StorageError::from)
    }

    fn run(&self) {
        while !self.stop.load(Ordering::Acquire) {
            let wait = match self.round() {
                Ok(Some(due)) => due.min(Duration::from_millis(500)),
                Ok(None) | Err(_) => Duration::from_millis(500),
            };
            let mut woken = lock(&self.wake);
            if !*woken && !self.stop.load(Ordering::Acquire) {
                woken = self
                    .woken
                    .wait_timeout(woken, wait)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            *woken = false;
        }
    }

    /// One pass over every enabled plugin; returns how soon a backoff ends.
    fn round(&self) -> Result<Option<Duration>, PluginError> {
        // One dispatcher per store: with a shared store, the process
        // holding the lease delivers; the others stand by.
        let held = self.lease.hold();
        self.dispatching
            .store(if held { HELD } else { NOT_HELD }, Ordering::Release);
        if !held {
            return Ok(Some(Duration::from_secs(1)));
        }
        let mut soonest: Option<Duration> = None;
        for (key, value) in self.backend.scan(Table::Plugins, b"")? {
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            let name = String::from_utf8_lossy(&key).into_owned();
            let record: PluginRecord =
                serde_json::from_slice(&value).map_err(|e| unreadable("plugin record", e))?;
            if !record.enabled {
                continue;
            }
            let Ok(plugin) = self.loaded(&name, &record) else {
                continue;
            };
            let runtime = self.runtime()?;
            // Whatever happens serving one plugin, the others are served.
            let served = catch_unwind(AssertUnwindSafe(|| self.serve(&runtime, &name, &plugin)));
            let wait = match served {
                Ok(Ok(wait)) => wait,
                Ok(Err(e)) => {
                    plugin.note(&format!("delivery interrupted: {e}"));
                    Some(self.retry.base)
                }
                Err(_) => {
                    plugin.note("delivery interrupted by a failure in the host");
                    Some(self.retry.base)
                }
            };
            if let Some(wait) = wait {
                soonest = Some(soonest.map_or(wait, |s| s.min(wait)));
            }
        }
        Ok(soonest)
    }

    /// Delivers what is due to one plugin: requeued dead letters, then the
    /// events after its cursor, in order, until one fails.
    fn serve(
        &self,
        runtime: &Runtime,
        name: &str,
        plugin: &Loaded,
    ) -> Result<Option<Duration>, PluginError> {
        let mut status = self.status(name)?;
        let now = self.clock.now();
        if let Some(at) = status.next_attempt_at
            && at > now
        {
            let ms = u64::try_from(at.unix_millis() - now.unix_millis()).unwrap_or(0);
            return Ok(Some(Duration::from_millis(ms)));
        }
        // Requeued dead letters: one attempt each.
        for (_, v) in self.backend.scan(Table::DeadLetters, &dead_prefix(name))? {
            let mut letter: DeadLetter =
                serde_json::from_slice(&v).map_err(|e| unreadable("dead letter", e))?;
            if !letter.requeued {
                continue;
            }
            let Some(event) = crate::events::get(self.backend.as_ref(), letter.seq)? else {
                self.save(name, &status, None, Some(letter.seq))?;
                continue;
            };
            match runtime.deliver(plugin, &event, &self.id_key, self.clock.now()) {
                Delivery::Delivered => {
                    status.delivered += 1;
                    status.last_success_at = Some(self.clock.now());
                    self.save(name, &status, None, Some(letter.seq))?;
                }
                Delivery::Retryable(e) | Delivery::Permanent(e) => {
                    status.failed += 1;
                    letter.attempts += 1;
                    letter.requeued = false;
                    letter.at = self.clock.now();
                    letter.error.clone_from(&e);
                    status.last_error = Some(e);
                    status.last_error_at = Some(letter.at);
                    self.save(name, &status, Some(&letter), None)?;
                }
            }
        }
        loop {
            if self.stop.load(Ordering::Acquire) {
                return Ok(None);
            }
            let page =
                self.backend
                    .range_from(Table::Events, &(status.cursor + 1).to_be_bytes(), 64)?;
            if page.is_empty() {
                return Ok(None);
            }
            for (k, v) in page {
                if self.stop.load(Ordering::Acquire) {
                    self.save(name, &status, None, None)?;
                    return Ok(None);
                }
                let event = Event::from_stored(&k, &v)?;
                if !plugin.manifest.subscribes(event.kind.as_str()) {
                    status.cursor = event.seq;
                    continue;
                }
                match runtime.deliver(plugin, &event, &self.id_key, self.clock.now()) {
                    Delivery::Delivered => {
                        status.cursor = event.seq;
                        status.delivered += 1;
                        status.attempts = 0;
                        status.next_attempt_at = None;
                        status.last_success_at = Some(self.clock.now());
                        self.save(name, &status, None, None)?;
                    }
                    Delivery::Permanent(e) => {
                        self.give_up(name, &mut status, &event, e)?;
                    }
                    Delivery::Retryable(e) => {
                        status.attempts += 1;
                        status.failed += 1;
                        status.last_error = Some(e.clone());
                        status.last_error_at = Some(self.clock.now());
                        if status.attempts >= plugin.manifest.max_attempts {
                            self.give_up(name, &mut status, &event, e)?;
                        } else {
                            let wait = self.retry.delay(status.attempts);
                            status.next_attempt_at = Some(self.clock.now().plus(wait));
                            self.save(name, &status, None, None)?;
                            return Ok(Some(wait));
                        }
                    }
                }
            }
            // Unsubscribed events advanced the cursor: keep it.
            self.save(name, &status, None, None)?;
        }
    }

    fn give_up(
        &self,
        name: &str,
        status: &mut PluginStatus,
        event: &Event,
        error: String,
    ) -> Result<(), StorageError> {
        let letter = DeadLetter {
            seq: event.seq,
            kind: event.kind.as_str().to_string(),
            error: error.clone(),
            attempts: status.attempts.max(1),
            at: self.clock.now(),
            requeued: false,
        };
        if status.attempts == 0 {
            status.failed += 1;
        }
        status.cursor = event.seq;
        status.attempts = 0;
        status.next_attempt_at = None;
        status.last_error = Some(error);
        status.last_error_at = Some(letter.at);
        self.save(name, status, Some(&letter), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::RetryPolicy;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let delays: Vec<u128> = (1..=6).map(|a| p.delay(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
    }

    /// A storage whose listing of plugins fails in the worst way: a panic
    /// outside any delivery, which the per-delivery guard does not catch.
    struct PanickingListing(crate::backend::MemoryBackend);

    impl crate::backend::Backend for PanickingListing {
        fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
            self.0.get(table, key)
        }
        fn scan(
            &self,
            table: Table,
            prefix: &[u8],
        ) -> Result<crate::backend::KvPairs, StorageError> {
            assert!(table != Table::Plugins, "the storage failed badly");
            self.0.scan(table, prefix)
        }
        fn visit_from(
            &self,
            rows: crate::backend::RowsFrom<'_>,
            each: crate::backend::Visit<'_>,
        ) -> Result<usize, StorageError> {
            self.0.visit_from(rows, each)
        }
        fn commit(
            &self,
            batch: Batch,
            durability: Durability,
        ) -> Result<u64, crate::backend::CommitError> {
            self.0.commit(batch, durability)
        }
        fn flush(&self) -> Result<(), StorageError> {
            self.0.flush()
        }
        fn changes_since(&self, seen: u64) -> Result<crate::backend::Changes, StorageError> {
            self.0.changes_since(seen)
        }
        fn version(&self) -> Result<u64, StorageError> {
            self.0.version()
        }
        fn is_shared(&self) -> bool {
            true
        }
    }

    /// A lease that is always free to take and says when it is given up.
    struct WatchedLease(Arc<std::sync::atomic::AtomicBool>);

    impl crate::plugins::DispatcherLease for WatchedLease {
        fn hold(&self) -> bool {
            true
        }
        fn release(&self) {
            self.0.store(true, Ordering::Release);
        }
    }

    #[test]
    fn a_dispatcher_thread_that_dies_releases_its_lease() {
        let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let plugins = crate::plugins::Plugins::start(
            Arc::new(PanickingListing(crate::backend::MemoryBackend::new(true))),
            Arc::new(crate::plugins::SystemResolver),
            Box::new(WatchedLease(Arc::clone(&released))),
            Arc::new(crate::clock::SystemClock),
            None,
            RetryPolicy::default(),
            [0; 32],
        )
        .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !released.load(Ordering::Acquire) {
            assert!(
                std::time::Instant::now() < deadline,
                "the lease was not released when the dispatcher thread died"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // And the store no longer claims to dispatch.
        assert_eq!(plugins.dispatching(), Some(false));
    }
}
