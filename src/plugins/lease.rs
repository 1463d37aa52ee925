//! Which process delivers to plugins. Exactly one process of a store runs
//! the dispatcher: the process that owns a sled store (attached processes
//! stand by, and one takes over with the store); on a shared
//! PostgreSQL store the dispatcher holds a session advisory lock, which the
//! server releases when that process's session ends (exit, crash, SIGKILL),
//! so another process takes over.

#[cfg(feature = "postgres")]
use std::sync::Mutex;

use crate::backend::Opened;
#[cfg(feature = "postgres")]
use crate::backend::{PostgresConn, PostgresTarget};
#[cfg(feature = "postgres")]
use crate::locks::lock;

/// The right to run the dispatcher.
pub(crate) trait DispatcherLease: Send + Sync {
    /// Whether this process holds the lease now (taking it when free).
    fn hold(&self) -> bool;

    /// Gives the lease up (the dispatcher is ending): another process may take it.
    fn release(&self) {}
}

/// The lease for the storage a store was opened on.
pub(crate) fn for_store(opened: &Opened) -> Box<dyn DispatcherLease> {
    #[cfg(feature = "postgres")]
    if let Some(target) = &opened.postgres {
        return Box::new(AdvisoryLease {
            target: target.clone(),
            session: Mutex::new(None),
        });
    }
    if opened.backend.host().is_some() {
        return Box::new(HostOwner(std::sync::Arc::clone(&opened.backend)));
    }
    Box::new(OneProcess)
}

/// A store that one process owns: it always dispatches.
struct OneProcess;

impl DispatcherLease for OneProcess {
    fn hold(&self) -> bool {
        true
    }
}

/// A sled store shared on one host: the process that owns it dispatches
/// (and whoever takes over from it, when it goes).
struct HostOwner(std::sync::Arc<dyn crate::backend::Backend>);

impl DispatcherLease for HostOwner {
    fn hold(&self) -> bool {
        self.0
            .host()
            .is_some_and(crate::backend::HostBackend::is_owner)
    }
}

/// A PostgreSQL session advisory lock, held on a connection of its own.
#[cfg(feature = "postgres")]
struct AdvisoryLease {
    target: PostgresTarget,
    session: Mutex<Option<Session>>,
}

#[cfg(feature = "postgres")]
struct Session {
    conn: PostgresConn,
    held: bool,
}

#[cfg(feature = "postgres")]
impl DispatcherLease for AdvisoryLease {
    fn hold(&self) -> bool {
        // Distinct from the writers' transaction lock on the same schema.
        let key = self.target.lock_key ^ 0x5a5a_5a5a;
        let mut slot = lock(&self.session);
        if slot.as_ref().is_none_or(|s| !s.conn.is_usable()) {
            *slot = self
                .target
                .connect()
                .ok()
                .map(|conn| Session { conn, held: false });
        }
        let Some(session) = slot.as_mut() else {
            return false;
        };
        let answer = if session.held {
            // Still ours while the session lives.
            session.conn.call(async |c| {
                c.simple_query("select 1").await?;
                Ok(true)
            })
        } else {
            session.conn.call(async |c| {
                let row = c
                    .query_one("select pg_try_advisory_lock($1)", &[&key])
                    .await?;
                Ok(row.get::<_, bool>(0))
            })
        };
        if let Ok(held) = answer {
            session.held = held;
            held
        } else {
            *slot = None;
            false
        }
    }

    fn release(&self) {
        // Ending the session releases its advisory locks.
        *lock(&self.session) = None;
    }
}
