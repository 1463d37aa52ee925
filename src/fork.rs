//! Fork detection, and what a forked child must not keep. A store's
//! threads, locks and sled files belong to the process that opened it; a
//! child made by `fork()` afterwards (gunicorn `--preload`, a prefork
//! server, a program that forks a long-lived helper) has the memory but not
//! the threads, and must open the store itself. Each fork bumps a counter
//! in the child (a `pthread_atfork` handler); a handle remembers the count
//! it was opened under, and one load tells whether the process has forked
//! since.
//!
//! The same handler takes from the child every descriptor registered with
//! [`ParentOnly`]: the sled files (whose lock says who owns the store),
//! the owner's listening socket and its connections. Each is replaced by
//! `/dev/null` (the number stays taken, so nothing the child opens later
//! lands on it), so a child that outlives its parent holds neither the
//! store's lock nor its socket, and attached processes see the owner go
//! and take over at once.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Once;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

static FORKS: AtomicU64 = AtomicU64::new(0);

/// Descriptors a child must not keep: -1 in a free slot. Lock-free, as the
/// child's handler may only do what is async-signal-safe (another thread
/// of the parent may have held any lock at the fork).
const SLOTS: usize = 4096;
static HELD: [AtomicI32; SLOTS] = [const { AtomicI32::new(-1) }; SLOTS];

extern "C" fn in_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: open, dup3 and close are async-signal-safe; the path is a
    // NUL-terminated literal.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        for slot in &HELD {
            let fd = slot.load(Ordering::Relaxed);
            if fd < 0 {
                continue;
            }
            if null < 0 || libc::dup3(null, fd, libc::O_CLOEXEC) < 0 {
                libc::close(fd);
            }
        }
        if null >= 0 {
            libc::close(null);
        }
    }
}

fn register_handler() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: registers a handler that does only async-signal-safe work.
        unsafe {
            libc::pthread_atfork(None, None, Some(in_child));
        }
    });
}

/// How many times this process's ancestry forked since keyward was first
/// used. A binding that hands out store handles remembers this number as
/// it opens one; a different number later means the caller is a child
/// forked since, which must open the store itself (see [`FORKED_MESSAGE`]).
///
/// [`FORKED_MESSAGE`]: crate::FORKED_MESSAGE
#[must_use]
pub fn generation() -> u64 {
    register_handler();
    FORKS.load(Ordering::Relaxed)
}

/// Keeps `fd` from every child forked from now on (until [`release`]).
/// Returns false when the table is full (the child then inherits it).
fn hold(fd: RawFd) -> bool {
    register_handler();
    if fd < 0 {
        return false;
    }
    HELD.iter().any(|slot| {
        slot.compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    })
}

/// Forgets `fd`: called before it is closed, so its number, once reused,
/// is not taken from a child.
fn release(fd: RawFd) {
    for slot in &HELD {
        if slot
            .compare_exchange(fd, -1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
    }
}

/// A descriptor that stays with the process that opened it: a child forked
/// while it is open gets `/dev/null` in its place. Dereferences to `T`.
pub(crate) struct ParentOnly<T: AsRawFd>(T);

impl<T: AsRawFd> ParentOnly<T> {
    pub(crate) fn new(inner: T) -> Self {
        hold(inner.as_raw_fd());
        ParentOnly(inner)
    }
}

impl<T: AsRawFd> std::ops::Deref for ParentOnly<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: AsRawFd> Drop for ParentOnly<T> {
    fn drop(&mut self) {
        // Before `T` closes it (fields drop after this body).
        release(self.0.as_raw_fd());
    }
}

/// Descriptors opened by a library keyward does not control (sled's
/// files), found by what they name: every descriptor of this process open
/// on a file under `dir` when this is made, but `except` (one of keyward's
/// own, held open meanwhile). Released when dropped, which must come before
/// the library closes them.
pub(crate) struct FilesUnder(Vec<RawFd>);

impl FilesUnder {
    pub(crate) fn find(dir: &std::path::Path, except: Option<RawFd>) -> Self {
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let mut held = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
            return FilesUnder(held);
        };
        for entry in entries.flatten() {
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<RawFd>().ok())
                .filter(|&fd| Some(fd) != except)
            else {
                continue;
            };
            let under =
                std::fs::read_link(entry.path()).is_ok_and(|target| target.starts_with(&dir));
            if under && hold(fd) {
                held.push(fd);
            }
        }
        FilesUnder(held)
    }
}

impl Drop for FilesUnder {
    fn drop(&mut self) {
        for &fd in &self.0 {
            release(fd);
        }
    }
}

/// What to do about a handle used in a forked child, for every binding's
/// message.
pub const FORKED: &str = "this store was opened before the process forked, and its threads and files belong to the parent: open the store in the child after fork (for gunicorn, in the post_fork hook, or without --preload)";
