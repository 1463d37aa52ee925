//! `keyward key import`: keys another system issued keep working here.
//! One key from the command line (`--plaintext-stdin`, `--sha256 HEX`, or
//! `--phc HASH --prefix P`), or many from a CSV file with the header
//! `name,owner,kind,secret,prefix,expires_at` (`kind`: plaintext, sha256
//! or phc), all or nothing, with the row → id mapping printed or written.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use keyward::{CreateOptions, ImportedSecret, KeyId, KeyInfo, Store};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::{Out, Result, expiry, failure, invalid};

#[derive(Args)]
pub(crate) struct ImportArgs {
    /// The key's name (one key; not with --from-csv).
    #[arg(required_unless_present = "from_csv", conflicts_with = "from_csv")]
    name: Option<String>,
    /// Read the key itself from stdin (one line); it is hashed, not kept.
    #[arg(long, conflicts_with_all = ["sha256", "phc"])]
    plaintext_stdin: bool,
    /// The key's SHA-256, in hex, as the other system kept it.
    #[arg(long, conflicts_with = "phc")]
    sha256: Option<String>,
    /// A bcrypt ($2b$…) or argon2 ($argon2id$…) hash of the key.
    #[arg(long, requires = "prefix")]
    phc: Option<String>,
    /// The key's first characters, kept beside its hash (with --phc).
    #[arg(long, requires = "phc")]
    prefix: Option<String>,
    /// The account the key belongs to.
    #[arg(long)]
    owner: Option<String>,
    /// When it stops working: a duration from now (30d) or an RFC 3339 time.
    #[arg(long)]
    expires: Option<String>,
    /// Import every row of this CSV file (header
    /// name,owner,kind,secret,prefix,expires_at), all or nothing.
    #[arg(long, value_name = "FILE")]
    from_csv: Option<PathBuf>,
    /// With --from-csv: write the row → key id mapping (CSV) here instead
    /// of printing it.
    #[arg(long, value_name = "FILE", requires = "from_csv")]
    map: Option<PathBuf>,
}

/// One row of the CSV file.
#[derive(Deserialize)]
struct Row {
    name: String,
    #[serde(default)]
    owner: Option<String>,
    kind: String,
    secret: String,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
}

/// Keys imported per write (and per step of the progress line).
const CHUNK: usize = 500;

pub(crate) fn import_command(store: &Store, a: ImportArgs, out: &Out) -> Result<u8> {
    if let Some(file) = &a.from_csv {
        return import_csv(store, file, a.map.as_deref(), out);
    }
    let name = a.name.unwrap_or_default();
    let secret = match (a.plaintext_stdin, a.sha256, a.phc, a.prefix) {
        (true, None, None, None) => {
            let mut line = Zeroizing::new(String::new());
            std::io::stdin()
                .read_to_string(&mut line)
                .map_err(|e| failure(2, format!("reading the key from stdin: {e}")))?;
            let key = line.trim_end_matches(['\r', '\n']).to_string();
            ImportedSecret::Plaintext(Zeroizing::new(key))
        }
        (false, Some(hex), None, None) => ImportedSecret::Sha256(hex),
        (false, None, Some(hash), Some(prefix)) => ImportedSecret::Phc { hash, prefix },
        _ => {
            return Err(failure(
                2,
                "key import: give one of --plaintext-stdin, --sha256 HEX, --phc HASH --prefix P",
            ));
        }
    };
    let mut o = CreateOptions::new();
    if let Some(owner) = a.owner {
        o = o.owner(owner);
    }
    if let Some(e) = a.expires {
        o = o.expires_at(expiry(&e)?);
    }
    let info = store.import_key(&name, secret, o)?;
    if out.json {
        out.json(&info);
    } else {
        println!(
            "Imported key {} ({}) as {}",
            info.id,
            info.name,
            secret_kind_note()
        );
    }
    Ok(0)
}

fn secret_kind_note() -> &'static str {
    "the key its holder already has (regenerating it issues a key of this store's format)"
}

fn import_csv(store: &Store, file: &Path, map: Option<&Path>, out: &Out) -> Result<u8> {
    let mut reader = csv::Reader::from_path(file)
        .map_err(|e| failure(2, format!("--from-csv {}: {e}", file.display())))?;
    let mut keys = Vec::new();
    for (i, row) in reader.deserialize::<Row>().enumerate() {
        // Rows are numbered as a spreadsheet shows them (the header is 1).
        let line = i + 2;
        let row = row.map_err(|e| {
            invalid(format!(
                "{} row {line}: not a row of name,owner,kind,secret,prefix,expires_at ({})",
                file.display(),
                csv_error_kind(&e)
            ))
        })?;
        keys.push(key_of(row, line)?);
    }
    let total = keys.len();
    let progress = std::io::stderr().is_terminal() && !out.json;
    let mut made: Vec<KeyInfo> = Vec::with_capacity(total);
    let mut rest = keys.into_iter();
    loop {
        let chunk: Vec<_> = rest.by_ref().take(CHUNK).collect();
        if chunk.is_empty() {
            break;
        }
        match store.import_many(chunk) {
            Ok(infos) => made.extend(infos),
            Err(e) => {
                // All or nothing: the rows imported before this one go.
                let ids: Vec<KeyId> = made.iter().map(|i| i.id).collect();
                for id in &ids {
                    let _ = store.delete(id);
                }
                if progress {
                    eprintln!();
                }
                return Err(invalid(format!(
                    "{e} (rows {}-{}); nothing was imported",
                    made.len() + 2,
                    (made.len() + CHUNK + 1).min(total + 1)
                )));
            }
        }
        if progress {
            let width = 30;
            let done = made.len() * width / total.max(1);
            eprint!(
                "\r[{}{}] {}/{total} keys",
                "#".repeat(done),
                " ".repeat(width - done),
                made.len()
            );
            let _ = std::io::stderr().flush();
        }
    }
    if progress {
        eprintln!();
    }
    let mut mapping = csv::Writer::from_writer(Vec::new());
    let write_err = |e: csv::Error| failure(6, format!("writing the mapping: {e}"));
    mapping
        .write_record(["row", "name", "key_id"])
        .map_err(write_err)?;
    for (i, info) in made.iter().enumerate() {
        mapping
            .write_record([(i + 2).to_string(), info.name.clone(), info.id.to_string()])
            .map_err(write_err)?;
    }
    let bytes = mapping
        .into_inner()
        .map_err(|e| failure(6, e.to_string()))?;
    match map {
        Some(path) => {
            std::fs::write(path, &bytes)
                .map_err(|e| failure(6, format!("--map {}: {e}", path.display())))?;
            println!(
                "Imported {} keys; the row → key id mapping is in {}",
                made.len(),
                path.display()
            );
        }
        None if out.json => out.json(&made),
        None => {
            std::io::stdout()
                .write_all(&bytes)
                .map_err(|e| failure(6, e.to_string()))?;
        }
    }
    Ok(0)
}

/// What went wrong in a row, without its values (a secret may be among them).
fn csv_error_kind(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Deserialize { err, .. } => match err.field() {
            Some(f) => format!("field {}", f + 1),
            None => "a field".to_string(),
        },
        csv::ErrorKind::UnequalLengths { .. } => "a different number of fields".to_string(),
        csv::ErrorKind::Utf8 { .. } => "not UTF-8".to_string(),
        _ => "unreadable".to_string(),
    }
}

fn key_of(row: Row, line: usize) -> Result<(String, ImportedSecret, CreateOptions)> {
    let bad = |m: &str| invalid(format!("row {line}: {m}"));
    let prefix = row.prefix.filter(|p| !p.is_empty());
    let imported =
        ImportedSecret::new(&row.kind, Zeroizing::new(row.secret), prefix).map_err(|m| bad(&m))?;
    let mut o = CreateOptions::new();
    if let Some(owner) = row.owner.filter(|o| !o.is_empty()) {
        o = o.owner(owner);
    }
    if let Some(e) = row.expires_at.filter(|e| !e.is_empty()) {
        o = o.expires_at(expiry(&e).map_err(|_| bad("expires_at is not a time"))?);
    }
    Ok((row.name, imported, o))
}
