//! `keyward scan PATH...`: finds keys of this store in files, directories
//! or stdin (`-`) and says what each is: `live`, `rotated`, `wrong_secret`,
//! `unknown_key` or `inactive`. Findings are shown masked, never whole.
//! With `--revoke`, every live key found is regenerated (or disabled with
//! `--disable`) after confirmation, and a `key.leaked` event is recorded.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use keyward::{KeyId, LeakState, Store};
use serde_json::{Value, json};

use crate::{Confirm, Out, Result, confirmed, failure, shown};

/// One key found in one place.
struct Finding {
    source: String,
    line: usize,
    masked: String,
    id: KeyId,
    state: LeakState,
    name: Option<String>,
    owner: Option<String>,
}

impl Finding {
    fn json(&self) -> Value {
        json!({
            "file": self.source, "line": self.line, "key": self.masked, "key_id": self.id,
            "name": self.name, "owner": self.owner, "state": self.state.as_str(),
        })
    }
}

/// What to do with the live keys found.
pub(crate) struct Revoke {
    pub revoke: bool,
    pub disable: bool,
}

/// Exit 0 when nothing live was found, 1 when a live key was.
pub(crate) fn scan_command(
    store: &Store,
    paths: &[PathBuf],
    Revoke { revoke, disable }: Revoke,
    follow: bool,
    confirm: &Confirm,
    out: &Out,
) -> Result<u8> {
    if paths.is_empty() {
        return Err(failure(
            2,
            "scan: name at least one file or directory, or - for stdin",
        ));
    }
    if disable && !revoke {
        return Err(failure(2, "scan: --disable goes with --revoke"));
    }
    let mut walk = Walk {
        store,
        follow,
        findings: Vec::new(),
        dirs: HashSet::new(),
        unreadable: false,
    };
    for path in paths {
        if path.as_os_str() == "-" {
            if let Err(e) = scan_reader(store, "-", std::io::stdin().lock(), &mut walk.findings) {
                walk.unreadable(path, &format!("cannot be read: {e}"));
            }
        } else {
            walk.path(path);
        }
    }
    let (findings, unreadable) = (walk.findings, walk.unreadable);
    if out.json {
        out.json(&findings.iter().map(Finding::json).collect::<Vec<_>>());
    } else {
        for f in &findings {
            let who = match (&f.name, &f.owner) {
                (Some(n), Some(o)) => format!(" {:?}, account {}", n, shown::text(o)),
                (Some(n), None) => format!(" {n:?}"),
                _ => String::new(),
            };
            println!(
                "{}:{}: {} key {}{who}: {}",
                shown::text(&f.source),
                f.line,
                f.masked,
                f.id,
                f.state.as_str()
            );
        }
        if findings.is_empty() {
            println!("no keys of this store found");
        }
    }
    let mut live: BTreeMap<KeyId, Vec<String>> = BTreeMap::new();
    for f in findings.iter().filter(|f| f.state == LeakState::Live) {
        live.entry(f.id)
            .or_default()
            .push(format!("{}:{}", f.source, f.line));
    }
    if revoke && !live.is_empty() {
        revoke_live(store, &live, disable, confirm, out)?;
    }
    // A live key found says so; else a path that could not be read means
    // the scan is not known clean.
    Ok(if !live.is_empty() {
        1
    } else if unreadable {
        2
    } else {
        0
    })
}

fn revoke_live(
    store: &Store,
    live: &BTreeMap<KeyId, Vec<String>>,
    disable: bool,
    confirm: &Confirm,
    out: &Out,
) -> Result<()> {
    let action = if disable { "disabled" } else { "regenerated" };
    let verb = if disable { "Disable" } else { "Regenerate" };
    confirmed(
        &format!(
            "{verb} {} leaked live key(s)? Their current secrets stop working at once.",
            live.len()
        ),
        confirm,
    )?;
    let mut done = Vec::new();
    for (id, places) in live {
        store.report_leak(id, &json!({ "action": action, "found_in": places }))?;
        if disable {
            let info = store.set_disabled(id, true)?;
            done.push(json!({ "key_id": id, "action": action, "name": info.name }));
            if !out.json {
                eprintln!("disabled key {id} ({:?})", info.name);
            }
        } else {
            let fresh = store.regenerate(id, Duration::ZERO)?;
            if out.json {
                done.push(json!({
                    "key_id": id, "action": action, "name": fresh.info.name,
                    "key": fresh.key.as_str(), "generation": fresh.info.generation,
                }));
            } else {
                println!(
                    "regenerated key {id} ({:?}), generation {}:",
                    fresh.info.name, fresh.info.generation
                );
                println!("    {}", out.bold(fresh.key.as_str()));
            }
        }
    }
    if out.json {
        out.json(&json!({ "revoked": done }));
    } else if !disable {
        println!(
            "{}",
            out.warn("Store the new keys now: this is the only time they are shown.")
        );
    }
    Ok(())
}

/// A walk over the paths named: what it found, and the directories it has
/// read (with `--follow`, so a loop of links ends).
struct Walk<'a> {
    store: &'a Store,
    follow: bool,
    findings: Vec<Finding>,
    dirs: HashSet<(u64, u64)>,
    /// A path could not be read (as opposed to one skipped for its kind).
    unreadable: bool,
}

impl Walk<'_> {
    /// Lists what is not scanned, and why, on stderr.
    fn skip(&self, path: &Path, why: &str) {
        eprintln!(
            "scan: skipped {}: {why}",
            shown::text(&path.display().to_string())
        );
    }

    /// Lists a path that could not be read; the scan goes on.
    fn unreadable(&mut self, path: &Path, why: &str) {
        self.unreadable = true;
        self.skip(path, why);
    }

    fn path(&mut self, path: &Path) {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let meta = if self.follow {
            std::fs::metadata(path)
        } else {
            std::fs::symlink_metadata(path)
        };
        let meta = match meta {
            Ok(m) => m,
            Err(e) => return self.unreadable(path, &e.to_string()),
        };
        let kind = meta.file_type();
        if kind.is_dir() {
            if !self.dirs.insert((meta.dev(), meta.ino())) {
                return self.skip(path, "a directory read already (a loop of links)");
            }
            let entries = match std::fs::read_dir(path) {
                Ok(e) => e,
                Err(e) => return self.unreadable(path, &e.to_string()),
            };
            let mut entries: Vec<PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            entries.sort();
            for entry in entries {
                self.path(&entry);
            }
        } else if kind.is_file() {
            self.file(path);
        } else {
            let what = if kind.is_symlink() {
                "a symbolic link (followed with --follow)"
            } else if kind.is_fifo() {
                "a FIFO (never opened)"
            } else if kind.is_socket() {
                "a socket (never opened)"
            } else if kind.is_char_device() {
                "a character device (never opened)"
            } else if kind.is_block_device() {
                "a block device (never opened)"
            } else {
                "not a regular file (never opened)"
            };
            self.skip(path, what);
        }
    }

    /// A regular file. Opened without blocking and without following a
    /// link (unless `--follow`), and checked again once open: what the
    /// path names may have changed since it was looked at.
    fn file(&mut self, path: &Path) {
        use std::os::unix::fs::OpenOptionsExt;
        let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
        if !self.follow {
            flags |= libc::O_NOFOLLOW;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(path);
        let file = match file {
            Ok(f) => f,
            // A link met on the way without --follow (O_NOFOLLOW).
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) && !self.follow => {
                return self.skip(path, "a symbolic link (followed with --follow)");
            }
            Err(e) => return self.unreadable(path, &format!("cannot be opened: {e}")),
        };
        if !file.metadata().is_ok_and(|m| m.file_type().is_file()) {
            return self.skip(path, "no longer a regular file (never read)");
        }
        let source = path.display().to_string();
        if let Err(e) = scan_reader(self.store, &source, file, &mut self.findings) {
            self.unreadable(path, &format!("cannot be read to its end: {e}"));
        }
    }
}

/// A line longer than this is read a piece at a time (a binary file
/// without line breaks is never held whole).
const PIECE: u64 = 1 << 20;

fn scan_reader(
    store: &Store,
    source: &str,
    reader: impl Read,
    findings: &mut Vec<Finding>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(reader);
    // What a long line's next piece starts with: the end of the one
    // before, one byte longer than a key, so that a key across the cut is
    // found, and with the byte before it.
    let overlap = store.key_len() + 1;
    let mut text = Vec::new();
    let mut carried = 0;
    let mut number = 0;
    loop {
        let n = (&mut reader).take(PIECE).read_until(b'\n', &mut text)?;
        if n == 0 && carried == 0 {
            return Ok(());
        }
        let line_ends = n == 0 || text.ends_with(b"\n") || (n as u64) < PIECE;
        if carried == 0 {
            number += 1;
        }
        for range in store.find_keys(&text) {
            // Found in the carried part, or cut at the end: the piece
            // before or after answers for it.
            if (carried > 0 && range.start == 0) || (!line_ends && range.end == text.len()) {
                continue;
            }
            report(store, source, number, &text[range], findings);
        }
        if line_ends {
            text.clear();
            carried = 0;
        } else {
            let keep = text.len().saturating_sub(overlap);
            text.drain(..keep);
            carried = text.len();
        }
    }
}

fn report(store: &Store, source: &str, line: usize, found: &[u8], findings: &mut Vec<Finding>) {
    let Some((id, state)) = store.inspect_found(found) else {
        return;
    };
    let info = store.get(&id).ok();
    findings.push(Finding {
        source: source.to_string(),
        line,
        masked: masked(found),
        id,
        state,
        name: info.as_ref().map(|i| i.name.clone()),
        owner: info.and_then(|i| i.owner),
    });
}

/// `<prefix>_<id>_…<last 4>`, as keys are shown everywhere.
fn masked(key: &[u8]) -> String {
    let text = String::from_utf8_lossy(key);
    let head = text.rfind('_').map_or(0, |i| i + 1);
    format!("{}\u{2026}{}", &text[..head], &text[text.len() - 4..])
}
