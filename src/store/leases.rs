//! The queue of keys whose meters want more tokens, which the store's
//! lease thread ([`super::budgets`]) serves.

use std::collections::HashSet;
use std::sync::mpsc;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use crate::key::KeyId;

/// Keys whose meters want more tokens, for the lease thread.
pub(crate) struct LeaseQueue {
    tx: mpsc::Sender<KeyId>,
    pub(super) rx: Mutex<Option<mpsc::Receiver<KeyId>>>,
    /// Keys whose meters hold quota tokens taken from storage.
    pub(super) holding: Mutex<HashSet<KeyId>>,
    /// How long held tokens may go unused before they go back (ms).
    pub(super) idle_ms: i64,
    /// Held (shared) while tokens move between storage and a meter; a copy
    /// of the store holds it alone while it counts what meters hold.
    pub(super) gate: RwLock<()>,
}

impl LeaseQueue {
    pub(crate) fn new(idle: Duration) -> Self {
        let (tx, rx) = mpsc::channel();
        LeaseQueue {
            tx,
            rx: Mutex::new(Some(rx)),
            holding: Mutex::new(HashSet::new()),
            idle_ms: i64::try_from(idle.as_millis()).unwrap_or(i64::MAX),
            gate: RwLock::new(()),
        }
    }

    /// Asks for key `id`'s meter to be topped up (never waits).
    pub(crate) fn request(&self, id: KeyId) {
        let _ = self.tx.send(id);
    }
}
