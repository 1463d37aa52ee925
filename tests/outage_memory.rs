//! Memory stays bounded while a shared store's database is unreachable: a
//! million requests with made-up ids, and with forged keys of a real key
//! from a million addresses with 5 KB User-Agents, keep live heap within
//! 1 MB of what it was after the first 10,000. Live heap is counted by a
//! global allocator, in a test binary of its own (one test: nothing else
//! allocates meanwhile). Needs `KEYWARD_TEST_PG`.

mod common;
#[path = "common/pg.rs"]
mod pg;
#[path = "common/proxy.rs"]
mod proxy;

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::IpAddr;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use common::{fast_options, wait_until};
use keyward::{CreateOptions, Denial, Store};

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A well-formed key for `id` with a made-up secret.
fn made_up(prefix: &str, id: &str, n: u64) -> String {
    common::well_formed(prefix, id, &format!("{n:0>43}"))
}

fn random_id(n: u64) -> String {
    const B62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..12)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            B62[(x % 62) as usize] as char
        })
        .collect()
}

#[test]
fn a_million_requests_during_an_outage_keep_memory_bounded() {
    let Some(s) = pg::server() else { return };
    let proxy = proxy::Proxy::start(([127, 0, 0, 1], s.port).into());
    let mut o = fast_options();
    o.staleness_bound = Duration::from_secs(1);
    o.statement_timeout = Duration::from_millis(300);
    o.connect_timeout = Duration::from_millis(500);
    o.usage_flush_interval = Duration::from_millis(200);
    let store = Store::open_with(s.url("127.0.0.1", proxy.port, "sslmode=disable"), &o).unwrap();
    let known = store.create("known", CreateOptions::new()).unwrap();
    let id = known.info.id.to_string();
    let prefix = store.prefix().to_string();
    let agent = "U".repeat(5 * 1024);

    proxy.black_hole(true);
    wait_until(
        "the store to be unavailable",
        Duration::from_secs(30),
        || {
            (store.verify(known.key.as_str(), "10.0.0.1".parse().unwrap(), None)
                == Denial::Unavailable)
                .then_some(())
        },
    );

    let mut after_first = 0;
    for n in 0u64..1_000_000 {
        let from = IpAddr::from([
            0x2001,
            0xdb8,
            7,
            7,
            (n >> 48) as u16,
            (n >> 32) as u16,
            (n >> 16) as u16,
            n as u16,
        ]);
        let key = if n % 2 == 0 {
            made_up(&prefix, &random_id(n), n)
        } else {
            made_up(&prefix, &id, n)
        };
        let ua = if n % 2 == 0 {
            None
        } else {
            Some(format!("{n}{agent}"))
        };
        let v = store.verify(&key, from, ua.as_deref());
        assert!(!v.is_valid());
        if n == 9_999 {
            after_first = LIVE.load(Ordering::Relaxed);
        }
    }
    let after_all = LIVE.load(Ordering::Relaxed);
    let grown = after_all - after_first;
    let backlog = store.backlog();
    eprintln!(
        "live heap after 10,000: {after_first} B; after 1,000,000: {after_all} B ({grown:+} B); {backlog:?}"
    );
    assert!(grown < 1024 * 1024, "live heap grew by {grown} bytes");
    assert!(backlog.pending_usage_keys <= 1, "{backlog:?}");
    assert!(backlog.usage_rows_dropped > 0, "{backlog:?}");
    // Made-up ids cost nothing: only the real key has usage waiting.
    drop(store);
}
