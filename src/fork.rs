//! Fork detection. A store's threads, locks and sled files belong to the
//! process that opened it; a child made by `fork()` afterwards (gunicorn
//! `--preload`, a prefork server) has the memory but not the threads, and
//! must open the store itself. Each fork bumps a counter in the child (a
//! `pthread_atfork` handler); a handle remembers the count it was opened
//! under, and one load tells whether the process has forked since.

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

static FORKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn in_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// How many times this process's ancestry forked since keyward was first used.
pub(crate) fn generation() -> u64 {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: registers a handler that only touches an atomic.
        unsafe {
            libc::pthread_atfork(None, None, Some(in_child));
        }
    });
    FORKS.load(Ordering::Relaxed)
}

/// The remedy, for every binding's message.
pub(crate) const FORKED: &str = "this store was opened before the process forked, and its threads and files belong to the parent: open the store in the child after fork (for gunicorn, in the post_fork hook, or without --preload)";
