//! `keyward`: the API-key settings panel in a terminal.
//!
//! Exit codes: 0 success; 1 `verify` denied the key; 2 bad usage (or a
//! confirmation refused); 3 not found; 4 invalid input; 5 the store is held
//! by another process; 6 storage error; 7 plugin error; 9 internal error.

use std::io::{BufRead, IsTerminal, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use keyward::{
    CreateOptions, Error, KeyError, KeyId, KeyInfo, OpenError, PluginError, Store, Timestamp,
    Usage, Verdict, WhitelistError,
};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "keyward",
    version,
    about = "Manage API keys: overview, usage, whitelists, plugins",
    after_help = "Exit codes: 0 ok, 1 key denied (verify), 2 usage, 3 not found, 4 invalid input, \
                  5 store locked, 6 storage, 7 plugin, 9 internal."
)]
struct Cli {
    /// The store directory [default: $KEYWARD_DB, else ./keyward.db].
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
    Key(KeyCommand),
    /// A key's IP whitelist.
    #[command(subcommand)]
    Whitelist(WhitelistCommand),
    /// A key's Usage tab: IPs, integrations, stale-secret users, hourly chart.
    Usage {
        id: String,
        /// Days of hourly history to chart.
        #[arg(long, default_value_t = 7)]
        days: u32,
    },
    /// Checks a key as a server would: exit 0 when valid, 1 when denied.
    Verify {
        key: String,
        #[arg(long)]
        ip: String,
        #[arg(long)]
        integration: Option<String>,
    },
    /// The event outbox.
    Events {
        /// Only events after this sequence number.
        #[arg(long, default_value_t = 0)]
        since: u64,
        /// Keep printing new events (re-reads the store every second).
        #[arg(long)]
        follow: bool,
    },
    /// Notifier plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Creates a key and prints it once.
    Create {
        name: String,
        /// When it stops working: a duration from now (30d, 12h) or an RFC 3339 time.
        #[arg(long)]
        expires: Option<String>,
        /// A JSON object to keep with the key.
        #[arg(long)]
        metadata: Option<String>,
    },
    /// Every key.
    List,
    /// One key's Overview.
    Show { id: String },
    /// Gives the key a new secret; asks y/N on a terminal unless --yes.
    Regenerate {
        id: String,
        /// Keep the old secret working this long (e.g. 24h, 7d).
        #[arg(long)]
        grace: Option<String>,
        #[command(flatten)]
        confirm: Confirm,
    },
    /// Deletes the key and its usage; asks y/N on a terminal unless --yes.
    Delete {
        id: String,
        #[command(flatten)]
        confirm: Confirm,
    },
    /// The key admits nobody until enabled.
    Disable { id: String },
    /// Re-enables a disabled key.
    Enable { id: String },
    /// Renames a key.
    Rename { id: String, name: String },
}

#[derive(Args)]
struct Confirm {
    /// Do not ask for confirmation (needed without a terminal).
    #[arg(long, short = 'y')]
    yes: bool,
}

#[derive(Subcommand)]
enum WhitelistCommand {
    /// The Whitelist tab.
    Show { id: String },
    /// Restrict the key to whitelisted IPs (none listed: nobody is admitted).
    Enable { id: String },
    /// Lift the restriction.
    Disable { id: String },
    /// Adds a named IP or CIDR network.
    Add {
        id: String,
        ip_or_cidr: String,
        #[arg(long)]
        name: String,
    },
    /// Removes an entry.
    Remove { id: String, entry_id: String },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Installs a component with its manifest.
    Install {
        file: PathBuf,
        #[arg(long)]
        manifest: PathBuf,
    },
    /// Every plugin with its delivery status.
    List,
    /// One plugin: status, dead letters, recent log.
    Status { name: String },
    /// Removes a plugin.
    Remove { name: String },
    /// Tries its dead letters again.
    Retry { name: String },
}

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

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::Open(OpenError::StoreLocked { .. }) => 5,
            Error::Open(OpenError::InvalidOptions(_)) => 4,
            Error::Key(KeyError::InvalidInput(_))
            | Error::Whitelist(
                WhitelistError::InvalidInput(_) | WhitelistError::InvalidNetwork(_),
            ) => 4,
            Error::Key(KeyError::Internal(_)) => 9,
            _ if e.is_not_found() => 3,
            _ => 6,
        };
        failure(code, e.to_string())
    }
}

impl From<OpenError> for Failure {
    fn from(e: OpenError) -> Self {
        Error::from(e).into()
    }
}

impl From<KeyError> for Failure {
    fn from(e: KeyError) -> Self {
        Error::from(e).into()
    }
}

impl From<WhitelistError> for Failure {
    fn from(e: WhitelistError) -> Self {
        Error::from(e).into()
    }
}

impl From<keyward::StorageError> for Failure {
    fn from(e: keyward::StorageError) -> Self {
        failure(6, e.to_string())
    }
}

impl From<PluginError> for Failure {
    fn from(e: PluginError) -> Self {
        let code = match &e {
            PluginError::NotFound(_) => 3,
            PluginError::Storage(_) => 6,
            _ => 7,
        };
        failure(code, e.to_string())
    }
}

type Result<T> = std::result::Result<T, Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            // One line, whatever the message (TOML errors span several).
            let line = f.message.split_whitespace().collect::<Vec<_>>().join(" ");
            eprintln!("keyward: {line}");
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
    s.parse()
        .map_err(|e: keyward::InvalidKeyId| failure(4, e.to_string()))
}

/// `30d`, `12h`, `90m`, `1h 30m`: a duration.
fn duration(s: &str) -> Result<Duration> {
    humantime::parse_duration(s)
        .map_err(|e| failure(4, format!("{s:?} is not a duration (like 24h, 7d): {e}")))
}

/// A duration from now, or an RFC 3339 time.
fn expiry(s: &str) -> Result<Timestamp> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(Timestamp::now().plus(d));
    }
    Timestamp::parse_rfc3339(s).map_err(|_| {
        failure(
            4,
            format!("--expires {s:?}: expected a duration (30d) or an RFC 3339 time"),
        )
    })
}

struct Out {
    json: bool,
    color: bool,
}

impl Out {
    fn json(&self, v: &impl serde::Serialize) {
        println!("{}", serde_json::to_string_pretty(v).expect("serialises"));
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
    if let Command::Events {
        since,
        follow: true,
    } = cli.command
    {
        return follow_events(&path, since, &out);
    }
    let store = open_patiently(&path)?;
    let code = match cli.command {
        Command::Key(k) => key_command(&store, k, &out)?,
        Command::Whitelist(w) => whitelist_command(&store, w, &out)?,
        Command::Usage { id, days } => {
            let id = key_id(&id)?;
            let info = store.get(&id)?;
            let usage = store.usage(&id)?;
            if out.json {
                out.json(&usage)
            } else {
                print_usage(&info, &usage, days, &out)
            }
            0
        }
        Command::Verify {
            key,
            ip,
            integration,
        } => {
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| failure(4, format!("--ip {ip:?} is not an IP address")))?;
            let v = store.verify(&key, ip, integration.as_deref());
            let valid = v.is_valid();
            if out.json {
                out.json(&verdict_json(&v));
            } else {
                match v {
                    Verdict::Valid(g) if g.in_grace => println!(
                        "valid: key {} generation {} (an old secret, still inside its grace period)",
                        g.key_id, g.generation
                    ),
                    Verdict::Valid(g) => {
                        println!("valid: key {} generation {}", g.key_id, g.generation)
                    }
                    Verdict::Denied(d) => println!("denied: {d}"),
                }
            }
            u8::from(!valid)
        }
        Command::Events { since, .. } => {
            let events = store.events(since, usize::MAX)?;
            if out.json {
                out.json(&events);
            } else {
                for e in &events {
                    print_event(e);
                }
            }
            0
        }
        Command::Plugin(p) => plugin_command(&store, p, &out)?,
    };
    store.close()?;
    Ok(code)
}

/// Opens the store, waiting up to 3 s while another process holds it
/// (`events --follow` holds it for an instant every second).
fn open_patiently(path: &std::path::Path) -> Result<Store> {
    let until = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        match Store::open(path) {
            Err(OpenError::StoreLocked { .. }) if std::time::Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return Ok(other?),
        }
    }
}

fn verdict_json(v: &Verdict) -> Value {
    match v {
        Verdict::Valid(g) => json!({
            "valid": true, "denial": null, "key_id": g.key_id, "generation": g.generation, "in_grace": g.in_grace
        }),
        Verdict::Denied(d) => json!({ "valid": false, "denial": d.as_str(), "detail": d }),
    }
}

fn print_event(e: &keyward::Event) {
    println!(
        "{:>6}  {}  {:<22} {} {:<20} {}",
        e.seq,
        e.at,
        e.kind.as_str(),
        e.key_id,
        e.name,
        e.data
    );
}

fn follow_events(path: &std::path::Path, mut since: u64, out: &Out) -> Result<u8> {
    // A sled store has one owner at a time: open, read, close, so that
    // other commands can write in between.
    loop {
        let store = loop {
            match Store::open(path) {
                Ok(s) => break s,
                Err(OpenError::StoreLocked { .. }) => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                Err(e) => return Err(e.into()),
            }
        };
        let events = store.events(since, 1000)?;
        store.close()?;
        for e in &events {
            if out.json {
                println!("{}", serde_json::to_string(e).expect("serialises"));
            } else {
                print_event(e);
            }
            since = e.seq;
        }
        std::io::stdout()
            .flush()
            .map_err(|e| failure(6, e.to_string()))?;
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Asks y/N on a terminal; refuses without one unless `--yes`.
fn confirmed(question: &str, confirm: &Confirm) -> Result<()> {
    if confirm.yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(failure(
            2,
            "refusing without confirmation: stdin is not a terminal; pass --yes",
        ));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| failure(2, e.to_string()))?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        Err(failure(2, "not confirmed; nothing was changed"))
    }
}

fn created_json(info: &KeyInfo, key: &str) -> Value {
    let mut v = serde_json::to_value(info).expect("serialises");
    v["key"] = Value::String(key.to_string());
    v
}

fn key_command(store: &Store, cmd: KeyCommand, out: &Out) -> Result<u8> {
    match cmd {
        KeyCommand::Create {
            name,
            expires,
            metadata,
        } => {
            let mut o = CreateOptions::new();
            if let Some(e) = expires {
                o = o.expires_at(expiry(&e)?);
            }
            if let Some(m) = metadata {
                let v: Value = serde_json::from_str(&m)
                    .map_err(|e| failure(4, format!("--metadata is not JSON: {e}")))?;
                o = o.metadata(v);
            }
            let created = store.create(&name, o)?;
            if out.json {
                out.json(&created_json(&created.info, created.key.as_str()));
            } else {
                println!("Created key {} ({})", created.info.id, created.info.name);
                println!();
                println!("    {}", out.bold(created.key.as_str()));
                println!();
                println!("{}", out.warn("Store it now: this is the only time the key is shown. keyward keeps only a hash."));
            }
        }
        KeyCommand::List => {
            let keys = store.list()?;
            if out.json {
                out.json(&keys);
            } else {
                print_key_table(&keys);
            }
        }
        KeyCommand::Show { id } => {
            let info = store.get(&key_id(&id)?)?;
            if out.json {
                out.json(&info)
            } else {
                print_overview(&info, out)
            }
        }
        KeyCommand::Regenerate { id, grace, confirm } => {
            let id = key_id(&id)?;
            let grace = grace
                .as_deref()
                .map(duration)
                .transpose()?
                .unwrap_or(Duration::ZERO);
            let info = store.get(&id)?;
            let when = if grace.is_zero() {
                "The current key stops working immediately.".to_string()
            } else {
                format!(
                    "The current key keeps working for {}.",
                    humantime::format_duration(grace)
                )
            };
            confirmed(
                &format!("Regenerate key {:?} ({})? {when}", info.name, info.masked),
                &confirm,
            )?;
            let users = store.usage(&id)?;
            let fresh = store.regenerate(&id, grace)?;
            if out.json {
                out.json(&created_json(&fresh.info, fresh.key.as_str()));
            } else {
                println!(
                    "Regenerated key {} ({}), generation {}",
                    fresh.info.id, fresh.info.name, fresh.info.generation
                );
                println!();
                println!("    {}", out.bold(fresh.key.as_str()));
                println!();
                println!(
                    "{}",
                    out.warn("Store it now: this is the only time the key is shown.")
                );
                match fresh.info.grace_until {
                    Some(t) => println!("The old key keeps working until {t}, then stops."),
                    None => println!("The old key has stopped working."),
                }
                print_recent_users(&users, out);
            }
        }
        KeyCommand::Delete { id, confirm } => {
            let id = key_id(&id)?;
            let info = store.get(&id)?;
            confirmed(
                &format!(
                    "Delete key {:?} ({})? It stops working immediately and its usage is removed.",
                    info.name, info.masked
                ),
                &confirm,
            )?;
            store.delete(&id)?;
            if out.json {
                out.json(&json!({ "deleted": id }));
            } else {
                println!("Deleted key {id} ({}).", info.name);
            }
        }
        KeyCommand::Disable { id } => {
            show_info(store.set_disabled(&key_id(&id)?, true)?, "Disabled", out)
        }
        KeyCommand::Enable { id } => {
            show_info(store.set_disabled(&key_id(&id)?, false)?, "Enabled", out)
        }
        KeyCommand::Rename { id, name } => {
            show_info(store.rename(&key_id(&id)?, &name)?, "Renamed", out)
        }
    }
    Ok(0)
}

fn show_info(info: KeyInfo, what: &str, out: &Out) {
    if out.json {
        out.json(&info);
    } else {
        println!("{what} key {} ({}).", info.id, info.name);
    }
}

/// Clients seen with the key in the last 7 days, who must get the new one.
fn print_recent_users(u: &Usage, out: &Out) {
    let week_ago = Timestamp::from_unix_millis(Timestamp::now().unix_millis() - 7 * 86_400_000);
    let ips: Vec<_> = u.ips.iter().filter(|r| r.last_seen >= week_ago).collect();
    let integrations: Vec<_> = u
        .integrations
        .iter()
        .filter(|r| r.last_seen >= week_ago)
        .collect();
    if ips.is_empty() && integrations.is_empty() {
        println!("No client used this key in the last 7 days.");
        return;
    }
    println!(
        "{}",
        out.warn("Update these clients with the new key (seen in the last 7 days):")
    );
    for r in ips {
        println!(
            "  IP {:<39} last seen {}  via {}",
            r.ip.to_string(),
            r.last_seen,
            r.last_integration.as_deref().unwrap_or("-")
        );
    }
    for r in integrations {
        println!(
            "  integration {:<30} last seen {}  {} requests",
            r.name, r.last_seen, r.count
        );
    }
}

fn opt_time(t: Option<Timestamp>) -> String {
    t.map_or_else(|| "never".to_string(), |t| t.to_string())
}

fn print_key_table(keys: &[KeyInfo]) {
    if keys.is_empty() {
        println!("No keys. Create one with: keyward key create NAME");
        return;
    }
    println!(
        "{:<12}  {:<24}  {:<22}  {:>3}  {:<9}  {:<9}  LAST USED",
        "ID", "NAME", "KEY", "GEN", "STATUS", "WHITELIST"
    );
    for k in keys {
        let status = if k.disabled {
            "disabled"
        } else if k.expires_at.is_some_and(|e| e <= Timestamp::now()) {
            "expired"
        } else {
            "active"
        };
        let name: String = k.name.chars().take(24).collect();
        println!(
            "{:<12}  {:<24}  {:<22}  {:>3}  {:<9}  {:<9}  {}",
            k.id,
            name,
            k.masked,
            k.generation,
            status,
            if k.whitelist_enabled { "on" } else { "off" },
            opt_time(k.last_used_at)
        );
    }
}

fn print_overview(k: &KeyInfo, out: &Out) {
    println!("{}", out.bold(&k.name));
    println!("  id            {}", k.id);
    println!("  key           {}", k.masked);
    println!("  created       {}", k.created_at);
    println!("  last rotated  {}", opt_time(k.rotated_at));
    println!("  last used     {}", opt_time(k.last_used_at));
    println!("  generation    {}", k.generation);
    println!(
        "  status        {}",
        if k.disabled { "disabled" } else { "active" }
    );
    println!(
        "  expires       {}",
        k.expires_at
            .map_or_else(|| "never".to_string(), |t| t.to_string())
    );
    println!(
        "  whitelist     {}",
        if k.whitelist_enabled {
            "on (only whitelisted IPs)"
        } else {
            "off (any IP)"
        }
    );
    if let Some(g) = k.grace_until {
        println!("  old secret    works until {g}");
    }
    if let Some(m) = &k.metadata {
        println!("  metadata      {m}");
    }
}

fn whitelist_command(store: &Store, cmd: WhitelistCommand, out: &Out) -> Result<u8> {
    let wl = match cmd {
        WhitelistCommand::Show { id } => store.whitelist(&key_id(&id)?)?,
        WhitelistCommand::Enable { id } => store.set_whitelist_enabled(&key_id(&id)?, true)?,
        WhitelistCommand::Disable { id } => store.set_whitelist_enabled(&key_id(&id)?, false)?,
        WhitelistCommand::Add {
            id,
            ip_or_cidr,
            name,
        } => {
            let entry = store.add_whitelist_entry(&key_id(&id)?, &name, &ip_or_cidr)?;
            if out.json {
                out.json(&entry);
            } else {
                println!(
                    "Added {} {:?} as entry {}.",
                    entry.network, entry.name, entry.id
                );
            }
            return Ok(0);
        }
        WhitelistCommand::Remove { id, entry_id } => {
            let id = key_id(&id)?;
            store.remove_whitelist_entry(&id, &entry_id)?;
            store.whitelist(&id)?
        }
    };
    if out.json {
        out.json(&wl);
        return Ok(0);
    }
    if wl.enabled {
        println!("Restricted to whitelisted IPs: {}", out.bold("on"));
        if wl.entries.is_empty() {
            println!("{}", out.warn("No entries: every request is refused."));
        }
    } else {
        println!("Restricted to whitelisted IPs: off (any IP is admitted)");
    }
    for e in &wl.entries {
        println!(
            "  {:<10}  {:<40}  {:<24}  added {}",
            e.id, e.network, e.name, e.created_at
        );
    }
    Ok(0)
}

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

fn print_usage(info: &KeyInfo, u: &Usage, days: u32, out: &Out) {
    let t = &u.totals;
    println!("{} ({})", out.bold(&info.name), info.masked);
    println!(
        "  requests: {} allowed, {} denied (wrong secret {}, old secret {}, refused IP {}, disabled {}, expired {}, busy {})",
        t.allowed,
        t.denied,
        t.wrong_secret,
        t.rotated,
        t.ip_not_allowed,
        t.disabled,
        t.expired,
        t.busy
    );
    match &u.last_used {
        Some(l) => println!("  last used {} from {}", l.at, l.ip),
        None => println!("  never used"),
    }
    println!();
    println!("Client IPs");
    if u.ips.is_empty() {
        println!("  none yet");
    }
    for r in &u.ips {
        println!(
            "  {:<39}  allowed {:>7}  denied {:>6}  first {}  last {}  via {}{}",
            r.ip.to_string(),
            r.allowed,
            r.denied,
            r.first_seen,
            r.last_seen,
            r.last_integration.as_deref().unwrap_or("-"),
            if r.stale_secret {
                out.warn("  OLD SECRET")
            } else {
                String::new()
            }
        );
    }
    println!();
    println!("Integrations");
    if u.integrations.is_empty() {
        println!("  none yet");
    }
    for r in &u.integrations {
        println!(
            "  {:<30}  requests {:>7}  denied {:>6}  last {}  IPs {}{}",
            r.name,
            r.count,
            r.denied,
            r.last_seen,
            r.ips
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            if r.stale_secret {
                out.warn("  OLD SECRET")
            } else {
                String::new()
            }
        );
    }
    let stale: Vec<_> = u.ips.iter().filter(|r| r.stale_secret).collect();
    println!();
    if stale.is_empty() {
        println!("No client is presenting an old secret.");
    } else {
        println!(
            "{}",
            out.warn("Still presenting an old secret (update them):")
        );
        for r in stale {
            println!(
                "  {} via {}",
                r.ip,
                r.last_integration.as_deref().unwrap_or("-")
            );
        }
    }
    print_chart(u, days);
}

/// One line per day, one bar per hour, scaled to the busiest hour.
fn print_chart(u: &Usage, days: u32) {
    const HOUR: i64 = 3_600_000;
    let now_hour = Timestamp::now().unix_millis().div_euclid(HOUR);
    let last_day = now_hour.div_euclid(24);
    let first_day = last_day - i64::from(days.max(1)) + 1;
    let count = |h: i64| -> (u64, u64) {
        u.hourly
            .iter()
            .find(|b| b.hour.unix_millis().div_euclid(HOUR) == h)
            .map_or((0, 0), |b| (b.allowed, b.denied))
    };
    let max = (first_day * 24..=now_hour)
        .map(|h| {
            let (a, d) = count(h);
            a + d
        })
        .max()
        .unwrap_or(0);
    println!();
    println!(
        "Requests per hour, last {days} days (UTC; each █ column is one hour, busiest hour = {max})"
    );
    for day in first_day..=last_day {
        let mut line = String::new();
        let (mut allowed, mut denied) = (0, 0);
        for h in day * 24..day * 24 + 24 {
            let (a, d) = count(h);
            allowed += a;
            denied += d;
            line.push(if h > now_hour {
                ' '
            } else if a + d == 0 || max == 0 {
                '·'
            } else {
                let i = usize::try_from((a + d) * 7 / max).unwrap_or(7).min(7);
                BARS[i]
            });
        }
        let date = Timestamp::from_unix_millis(day * 24 * HOUR).to_string();
        println!(
            "  {}  {line}  {allowed:>8} allowed  {denied:>6} denied",
            &date[..10]
        );
    }
}

fn plugin_command(store: &Store, cmd: PluginCommand, out: &Out) -> Result<u8> {
    match cmd {
        PluginCommand::Install { file, manifest } => {
            let wasm =
                std::fs::read(&file).map_err(|e| failure(4, format!("{}: {e}", file.display())))?;
            let toml = std::fs::read_to_string(&manifest)
                .map_err(|e| failure(4, format!("{}: {e}", manifest.display())))?;
            let info = store.install_plugin(&wasm, &toml)?;
            if out.json {
                out.json(&info);
            } else {
                println!(
                    "Installed plugin {} {} (api {}), receiving: {}",
                    info.name,
                    info.version,
                    info.api,
                    info.events.join(", ")
                );
            }
        }
        PluginCommand::List => {
            let plugins = store.plugins()?;
            if out.json {
                out.json(&plugins);
            } else if plugins.is_empty() {
                println!(
                    "No plugins. Install one with: keyward plugin install FILE.wasm --manifest FILE.toml"
                );
            } else {
                println!(
                    "{:<24}  {:<10}  {:<8}  {:>9}  {:>7}  {:>6}  {:>5}  LAST ERROR",
                    "NAME", "VERSION", "STATE", "DELIVERED", "PENDING", "FAILED", "DEAD"
                );
                for p in plugins {
                    let s = &p.status;
                    println!(
                        "{:<24}  {:<10}  {:<8}  {:>9}  {:>7}  {:>6}  {:>5}  {}",
                        p.name,
                        p.version,
                        if p.enabled { "enabled" } else { "paused" },
                        s.delivered,
                        s.pending,
                        s.failed,
                        s.dead_letters,
                        s.last_error.as_deref().unwrap_or("-")
                    );
                }
            }
        }
        PluginCommand::Status { name } => {
            let info = store.plugin(&name)?;
            let letters = store.plugin_dead_letters(&name)?;
            let log = store.plugin_log(&name)?;
            if out.json {
                out.json(&json!({ "plugin": info, "dead_letters": letters, "log": log }));
            } else {
                let s = &info.status;
                println!(
                    "{} {} (api {}), {}",
                    out.bold(&info.name),
                    info.version,
                    info.api,
                    if info.enabled { "enabled" } else { "paused" }
                );
                println!("  events        {}", info.events.join(", "));
                println!("  allowed hosts {}", info.allowed_hosts.join(", "));
                println!(
                    "  delivered     {}  (last success {})",
                    s.delivered,
                    opt_time(s.last_success_at)
                );
                println!(
                    "  pending       {}  (cursor at event {})",
                    s.pending, s.cursor
                );
                println!(
                    "  failed        {}  (last error: {})",
                    s.failed,
                    s.last_error.as_deref().unwrap_or("none")
                );
                if let Some(t) = s.next_attempt_at {
                    println!("  next attempt  {t}");
                }
                println!("  dead letters  {}", letters.len());
                for l in &letters {
                    println!(
                        "    event {:<6} {:<22} {} attempts, {}: {}",
                        l.seq, l.kind, l.attempts, l.at, l.error
                    );
                }
                if !log.is_empty() {
                    println!("  recent log");
                    for line in log.iter().rev().take(20).rev() {
                        println!("    {line}");
                    }
                }
            }
        }
        PluginCommand::Remove { name } => {
            store.remove_plugin(&name)?;
            if out.json {
                out.json(&json!({ "removed": name }))
            } else {
                println!("Removed plugin {name}.")
            }
        }
        PluginCommand::Retry { name } => {
            let n = store.retry_plugin(&name)?;
            if out.json {
                out.json(&json!({ "queued": n }))
            } else {
                println!("Queued {n} dead letter(s) of {name} for another attempt.")
            }
        }
    }
    Ok(0)
}
