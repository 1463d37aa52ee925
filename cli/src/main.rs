//! `keyward`: the API-key settings panel in a terminal.
//!
//! Exit codes: 0 success; 1 `verify` denied the key; 2 bad usage (or a
//! confirmation refused); 3 not found; 4 invalid input; 5 the store is held
//! by another process; 6 storage error; 7 plugin error; 9 internal error.
//! Every error's code comes from its [`keyward::ErrorKind`].
//!
//! One module per command group: [`keys`], [`whitelist`], [`usage`],
//! [`verify`], [`events`], [`plugins`], [`serve`] (and `status`).
//!
//! A sled store may be open in other processes: the CLI attaches to the
//! process that owns it (whose dispatcher delivers the CLI's events), or
//! owns it for the length of the command, and then waits for its own
//! events' first delivery attempt before it exits.

#[cfg(feature = "admin")]
mod admin;
mod backup;
mod check;
mod events;
mod import;
mod keys;
mod limits;
#[cfg(feature = "metrics")]
mod metrics;
mod owners;
#[cfg(feature = "plugins")]
mod plugins;
mod scan;
mod serve;
mod shown;
mod usage;
mod verify;
mod whitelist;

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use keyward::{ErrorKind, KeyId, Store, Timestamp};

#[derive(Parser)]
#[command(
    name = "keyward",
    version,
    about = "Manage API keys: overview, usage, whitelists, plugins",
    after_help = "Exit codes: 0 ok, 1 key denied (verify), 2 usage, 3 not found, 4 invalid input, \
                  5 store locked, 6 storage, 7 plugin, 9 internal."
)]
struct Cli {
    /// The store: a directory, or a postgres:// URL [default: $KEYWARD_DB, else ./keyward.db].
    #[arg(long, global = true, value_name = "PATH")]
    db: Option<PathBuf>,
    /// Print JSON (the shapes of the C *_json functions) instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Keys: create, list, show, regenerate, delete, disable, enable, rename.
    #[command(subcommand)]
    Key(keys::KeyCommand),
    /// A key's IP whitelist.
    #[command(subcommand)]
    Whitelist(whitelist::WhitelistCommand),
    /// Accounts: every owner with its keys; close an account.
    #[command(subcommand)]
    Owner(owners::OwnerCommand),
    /// A key's Usage tab: IPs, integrations, stale-secret users, hourly
    /// chart; with --owner, an account's totals across its keys.
    Usage {
        #[arg(required_unless_present = "owner", conflicts_with = "owner")]
        id: Option<String>,
        /// An account instead of a key.
        #[arg(long)]
        owner: Option<String>,
        /// Days of hourly history to chart.
        #[arg(long, default_value_t = 7)]
        days: u32,
        /// The key's last 50 verifications instead: time, client address,
        /// integration, result and reason, old secret, scope asked.
        #[arg(long, conflicts_with = "owner")]
        recent: bool,
    },
    /// Checks a key as a server would: exit 0 when valid, 1 when denied.
    Verify {
        key: String,
        #[arg(long)]
        ip: String,
        #[arg(long)]
        integration: Option<String>,
        /// A scope the key must carry (refused with scope_missing otherwise).
        #[arg(long)]
        scope: Option<String>,
    },
    /// Finds this store's keys in files, directories or stdin (-) and says
    /// what each is: live, rotated, wrong_secret, unknown_key, inactive.
    /// FIFOs, sockets and devices are skipped (never opened), as are
    /// symbolic links without --follow, and files that cannot be read: each
    /// is listed on stderr and the scan goes on. Exit 0 when nothing live is
    /// found, 1 when a live key is.
    Scan {
        #[arg(value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Follow symbolic links (each directory is read once).
        #[arg(long)]
        follow: bool,
        /// Regenerate every live key found (after confirmation), printing
        /// each new key once, and record a key.leaked event.
        #[arg(long)]
        revoke: bool,
        /// With --revoke: disable the keys instead of regenerating them.
        #[arg(long)]
        disable: bool,
        #[command(flatten)]
        confirm: Confirm,
    },
    /// The event outbox.
    Events(events::EventsArgs),
    /// Notifier plugins.
    #[cfg(feature = "plugins")]
    #[command(subcommand)]
    Plugin(plugins::PluginCommand),
    /// Keeps the store open until SIGTERM: owns it (delivering events to
    /// plugins, serving the other processes) or stands by to take over.
    Serve(serve::ServeArgs),
    /// Whether this process owns the store or attaches to it, and which
    /// process owns it.
    Status,
    /// Walks every table and reports what does not agree (records that do
    /// not decode, owner-index rows and import lookups that do not match
    /// their records, rows of no key, events and plugin state). Exit 0
    /// when nothing is wrong (or all of it was repaired), 1 otherwise.
    Check {
        /// Rebuild what is derived from the records (the owner index, the
        /// import lookups) and remove rows of no key; records are never
        /// touched.
        #[arg(long)]
        repair: bool,
    },
    /// Writes a consistent snapshot of the store, taken while other
    /// processes go on verifying and writing, as a new sled store in DEST
    /// (a directory that does not exist or is empty) that opens directly;
    /// a PostgreSQL store is backed up as a sled store too. Progress on
    /// a terminal; says which event number the backup holds.
    Backup {
        #[arg(value_name = "DEST")]
        dest: PathBuf,
    },
    /// Stores as a whole: copy one into another (sled or PostgreSQL).
    #[command(subcommand)]
    Store(backup::StoreCommand),
    /// The settings panel as a web page: prints the URL to open (with a
    /// one-time login token) as the first line on stdout, serves until
    /// SIGTERM.
    #[cfg(feature = "admin")]
    Admin(admin::AdminArgs),
}

#[derive(Args)]
struct Confirm {
    /// Do not ask for confirmation (needed without a terminal).
    #[arg(long, short = 'y')]
    yes: bool,
}

/// Exit code of bad usage or a refused confirmation.
const USAGE: u8 = 2;

/// A failure with its exit code and one line for stderr.
struct Failure {
    code: u8,
    message: String,
}

fn failure(code: u8, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

/// The exit code of each kind of error: 3 not found, 4 invalid input, 5
/// the store is held (or was opened before a fork), 6 storage, 7 plugin,
/// 9 internal. `None` for a kind newer than this table (the test below
/// refuses that; at run time it exits 9).
const fn kind_exit_code(kind: ErrorKind) -> Option<u8> {
    use ErrorKind as K;
    Some(match kind {
        K::NullArgument => 4,
        K::InvalidUtf8 => 4,
        K::InvalidInput => 4,
        K::InvalidKeyId => 4,
        K::InvalidNetwork => 4,
        K::InvalidIp => 4,
        K::BufferTooSmall => 9,
        K::NotFound => 3,
        K::EntryNotFound => 3,
        K::InvalidOptions => 4,
        K::StoreLocked => 5,
        K::Forked => 5,
        K::Storage => 6,
        K::UnsupportedVersion => 6,
        K::PluginInvalidManifest => 7,
        K::PluginInvalidComponent => 7,
        K::PluginExists => 7,
        K::PluginNotFound => 3,
        K::PluginsUnsupported => 7,
        K::Internal => 9,
        K::Panic => 9,
        _ => return None,
    })
}

/// The exit code of an error of this kind.
const fn exit_code(kind: ErrorKind) -> u8 {
    match kind_exit_code(kind) {
        Some(code) => code,
        None => 9,
    }
}

/// Every error of the library exits with its kind's code.
macro_rules! failure_from {
    ($($error:ty),* $(,)?) => {$(
        impl From<$error> for Failure {
            fn from(e: $error) -> Self {
                failure(exit_code(e.kind()), e.to_string())
            }
        }
    )*};
}

failure_from!(
    keyward::Error,
    keyward::OpenError,
    keyward::KeyError,
    keyward::WhitelistError,
    keyward::StorageError,
    keyward::InvalidKeyId,
    keyward::CopyError,
);
#[cfg(feature = "plugins")]
failure_from!(keyward::PluginError);

/// Invalid input found by the CLI itself.
fn invalid(message: impl Into<String>) -> Failure {
    failure(exit_code(ErrorKind::InvalidInput), message)
}

type Result<T> = std::result::Result<T, Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            // One line, whatever the message (TOML errors span several).
            let line = f.message.split_whitespace().collect::<Vec<_>>().join(" ");
            eprintln!("keyward: {}", shown::text(&line));
            ExitCode::from(f.code)
        }
    }
}

fn db_path(cli: &Cli) -> PathBuf {
    cli.db
        .clone()
        .or_else(|| std::env::var_os("KEYWARD_DB").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("keyward.db"))
}

fn key_id(s: &str) -> Result<KeyId> {
    Ok(s.parse::<KeyId>()?)
}

/// `30d`, `12h`, `90m`, `1h 30m`: a duration.
fn duration(s: &str) -> Result<Duration> {
    humantime::parse_duration(s)
        .map_err(|e| invalid(format!("{s:?} is not a duration (like 24h, 7d): {e}")))
}

/// A duration argument of clap.
#[cfg(feature = "admin")]
fn duration_arg(s: &str) -> std::result::Result<Duration, String> {
    duration(s).map_err(|f| f.message)
}

/// A duration from now, or an RFC 3339 time.
fn expiry(s: &str) -> Result<Timestamp> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(Timestamp::now().plus(d));
    }
    Timestamp::parse_rfc3339(s).map_err(|_| {
        invalid(format!(
            "--expires {s:?}: expected a duration (30d) or an RFC 3339 time"
        ))
    })
}

struct Out {
    json: bool,
    color: bool,
}

impl Out {
    fn json(&self, v: &impl serde::Serialize) {
        println!(
            "{}",
            shown::json(serde_json::to_string_pretty(v).expect("serialises"))
        );
    }

    fn bold(&self, s: &str) -> String {
        if self.color {
            format!("\x1b[1m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    fn warn(&self, s: &str) -> String {
        if self.color {
            format!("\x1b[33m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
}

fn run(cli: Cli) -> Result<u8> {
    let out = Out {
        json: cli.json,
        color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let path = db_path(&cli);
    if let Command::Events(args) = &cli.command
        && args.follow
    {
        return events::follow_events(&path, args, &out);
    }
    if let Command::Serve(args) = cli.command {
        return serve::serve_command(&path, &args, &out);
    }
    if let Command::Store(command) = cli.command {
        return backup::store_command(command, &out);
    }
    #[cfg(feature = "admin")]
    if let Command::Admin(args) = cli.command {
        return admin::admin_command(&path, args);
    }
    let store = open_store(&path)?;
    let before = serve::outbox_end(&store);
    let code = match cli.command {
        Command::Key(k) => keys::key_command(&store, k, &out)?,
        Command::Whitelist(w) => whitelist::whitelist_command(&store, w, &out)?,
        Command::Owner(o) => owners::owner_command(&store, o, &out)?,
        Command::Usage {
            owner: Some(owner), ..
        } => owners::owner_usage_command(&store, &owner, &out)?,
        Command::Usage {
            id, recent: true, ..
        } => usage::recent_command(&store, id.as_deref().unwrap_or_default(), &out)?,
        Command::Usage { id, days, .. } => {
            usage::usage_command(&store, id.as_deref().unwrap_or_default(), days, &out)?
        }
        Command::Verify {
            key,
            ip,
            integration,
            scope,
        } => verify::verify_command(
            &store,
            &key,
            &ip,
            (integration.as_deref(), scope.as_deref()),
            &out,
        )?,
        Command::Events(args) => events::events_command(&store, &args, &out)?,
        Command::Scan {
            paths,
            follow,
            revoke,
            disable,
            confirm,
        } => scan::scan_command(
            &store,
            &paths,
            scan::Revoke { revoke, disable },
            follow,
            &confirm,
            &out,
        )?,
        #[cfg(feature = "plugins")]
        Command::Plugin(p) => plugins::plugin_command(&store, p, &out)?,
        Command::Status => serve::status_command(&store, &out)?,
        Command::Check { repair } => check::check_command(&store, repair, &out)?,
        Command::Backup { dest } => backup::backup_command(&store, &dest, &out)?,
        Command::Serve(_) => unreachable!("served above"),
        Command::Store(_) => unreachable!("run above"),
        #[cfg(feature = "admin")]
        Command::Admin(_) => unreachable!("served above"),
    };
    serve::deliver_own_events(&store, before);
    store.close()?;
    Ok(code)
}

/// Asks y/N on a terminal; refuses without one unless `--yes`.
fn confirmed(question: &str, confirm: &Confirm) -> Result<()> {
    if confirm.yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(failure(
            USAGE,
            "refusing without confirmation: stdin is not a terminal; pass --yes",
        ));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| failure(USAGE, e.to_string()))?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        Err(failure(USAGE, "not confirmed; nothing was changed"))
    }
}

/// The store at `path`, its changes by `cli:<user>` (`data.actor` of
/// their events).
pub(crate) fn open_store(path: &std::path::Path) -> std::result::Result<Store, keyward::OpenError> {
    let mut options = keyward::Options::default();
    options.actor = Some(format!("cli:{}", keyward::os_user()));
    Store::open_with(path, &options)
}

fn opt_time(t: Option<Timestamp>) -> String {
    t.map_or_else(|| "never".to_string(), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use keyward::ErrorKind;

    #[test]
    fn every_error_kind_has_a_documented_exit_code() {
        for &kind in ErrorKind::ALL {
            let code = super::kind_exit_code(kind)
                .unwrap_or_else(|| panic!("no exit code for ErrorKind::{}", kind.name()));
            assert!(
                [3, 4, 5, 6, 7, 9].contains(&code),
                "{}: {code}",
                kind.name()
            );
        }
    }
}
