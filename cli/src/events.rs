//! `keyward events [--since N] [--follow]`: the event outbox.

use crate::shown;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use keyward::Store;

use crate::{Out, Result, failure};

/// Prints the events after `since`.
pub(crate) fn events_command(store: &Store, since: u64, out: &Out) -> Result<u8> {
    let events = store.events(since, usize::MAX)?;
    if out.json {
        out.json(&events);
    } else {
        for e in &events {
            print_event(e);
        }
    }
    Ok(0)
}

fn print_event(e: &keyward::Event) {
    println!(
        "{:>6}  {}  {:<22} {} {:<20} {}",
        e.seq,
        e.at,
        e.kind.as_str(),
        e.key_id,
        shown::text(&e.name),
        shown::json(e.data.to_string())
    );
}

pub(crate) fn follow_events(path: &Path, mut since: u64, out: &Out) -> Result<u8> {
    // Held open: attached to the store's owner, or owning it (and then
    // delivering to its plugins too).
    let store = crate::open_store(path)?;
    loop {
        let events = store.events(since, 1000)?;
        for e in &events {
            if out.json {
                println!(
                    "{}",
                    shown::json(serde_json::to_string(e).expect("serialises"))
                );
            } else {
                print_event(e);
            }
            since = e.seq;
        }
        std::io::stdout()
            .flush()
            .map_err(|e| failure(crate::exit_code(keyward::ErrorKind::Storage), e.to_string()))?;
        std::thread::sleep(Duration::from_secs(1));
    }
}
