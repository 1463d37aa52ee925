//! `keyward backup DEST` and `keyward store copy SRC DST`: a live store
//! copied as one consistent snapshot into a new sled directory, or into an
//! empty store of either engine; progress on a terminal as it goes.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Subcommand;
use keyward::{CopyReport, Store};

use crate::{Out, Result};

#[derive(Subcommand)]
pub(crate) enum StoreCommand {
    /// Copies the store SRC into the empty store DST, sled or PostgreSQL
    /// either way (a directory, or a postgres:// URL): a consistent
    /// snapshot, taken while other processes go on verifying and writing.
    /// Key ids are kept, so every key verifies against the copy as against
    /// SRC; event numbers continue; plugins do not deliver again.
    Copy {
        #[arg(value_name = "SRC")]
        src: std::path::PathBuf,
        #[arg(value_name = "DST")]
        dst: std::path::PathBuf,
    },
}

/// A line on stderr that says how far a copy is, redrawn at most ten
/// times a second, on a terminal only.
struct Progress {
    shown: Option<Instant>,
    on: bool,
}

impl Progress {
    fn new() -> Self {
        Progress {
            shown: None,
            on: std::io::stderr().is_terminal(),
        }
    }

    fn tell(&mut self, at: &CopyReport) {
        if !self.on
            || self
                .shown
                .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
        {
            return;
        }
        self.shown = Some(Instant::now());
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[Kcopying: {} keys, {} rows, {}",
            at.keys,
            at.rows,
            megabytes(at.bytes)
        );
        let _ = err.flush();
    }

    fn done(&self) {
        if self.on && self.shown.is_some() {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
        }
    }
}

fn megabytes(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let mb = bytes as f64 / 1e6;
    format!("{mb:.1} MB")
}

fn said(report: &CopyReport, verb: &str, to: &str, out: &Out) {
    if out.json {
        out.json(report);
        return;
    }
    println!(
        "{verb} {} keys ({} rows, {}) to {to}.",
        report.keys,
        report.rows,
        megabytes(report.bytes)
    );
    if report.last_event == 0 {
        println!("It holds no events.");
    } else {
        println!(
            "It holds events through #{}; its next event is #{}.",
            report.last_event,
            report.last_event + 1
        );
    }
}

/// `keyward backup DEST`.
pub(crate) fn backup_command(store: &Store, dest: &Path, out: &Out) -> Result<u8> {
    let mut progress = Progress::new();
    let report = store.backup_with_progress(dest, &mut |at| progress.tell(at));
    progress.done();
    let report = report?;
    said(&report, "Backed up", &dest.display().to_string(), out);
    Ok(0)
}

/// `keyward store copy SRC DST`.
pub(crate) fn store_command(command: StoreCommand, out: &Out) -> Result<u8> {
    match command {
        StoreCommand::Copy { src, dst } => {
            let url = src
                .to_str()
                .is_some_and(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"));
            if !url && !src.is_dir() {
                return Err(crate::invalid(format!(
                    "{}: no store there (a copy never creates its source)",
                    src.display()
                )));
            }
            let store = crate::open_store(&src)?;
            let mut progress = Progress::new();
            let report = store.copy_to_with_progress(&dst, &mut |at| progress.tell(at));
            progress.done();
            let report = report?;
            store.close()?;
            said(&report, "Copied", &keyward::describe_location(&dst), out);
            Ok(0)
        }
    }
}
