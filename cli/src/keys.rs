//! `keyward key ...`: the Overview tab.

use crate::shown;
use std::time::Duration;

use clap::Subcommand;
use keyward::{CreateOptions, KeyInfo, KeyUpdate, Store, Timestamp, Usage};
use serde_json::{Value, json};

use crate::{Confirm, Out, Result, confirmed, duration, expiry, invalid, key_id, opt_time};

#[derive(Subcommand)]
pub(crate) enum KeyCommand {
    /// Creates a key and prints it once.
    Create {
        name: String,
        /// When it stops working: a duration from now (30d, 12h) or an RFC 3339 time.
        #[arg(long)]
        expires: Option<String>,
        /// A JSON object to keep with the key.
        #[arg(long)]
        metadata: Option<String>,
        /// The account the key belongs to (your customer id).
        #[arg(long)]
        owner: Option<String>,
        /// A rate limit: NAME=LIMIT/WINDOW (burst=100/60s). Repeatable.
        #[arg(long = "limit", value_name = "NAME=LIMIT/WINDOW")]
        limits: Vec<String>,
        /// A quota: this many requests, then quota_exhausted.
        #[arg(long)]
        quota: Option<u64>,
        /// With --quota: reset it to AMOUNT daily or monthly (AMOUNT/daily).
        #[arg(long, requires = "quota", value_name = "AMOUNT/PERIOD")]
        refill: Option<String>,
        /// A scope the key carries (orders:read). Repeatable.
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// What the key is for (up to 1,024 bytes).
        #[arg(long)]
        description: Option<String>,
    },
    /// Every key (oldest first), or one account's; with --limit or
    /// --after, one page in id order.
    List {
        /// Only this account's keys (through the owner index).
        #[arg(long)]
        owner: Option<String>,
        /// Keys per page (1 to 1000).
        #[arg(long)]
        limit: Option<usize>,
        /// Start after this key id (the previous page's `next`).
        #[arg(long)]
        after: Option<String>,
    },
    /// Moves the key to another account, or to none with --none.
    SetOwner {
        id: String,
        #[arg(required_unless_present = "none", conflicts_with = "none")]
        owner: Option<String>,
        /// The key belongs to no account.
        #[arg(long)]
        none: bool,
    },
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
    /// Changes several settings at once: all of them, or (one invalid) none.
    Set(SetArgs),
    /// Imports keys another system issued: they keep working as they are.
    Import(crate::import::ImportArgs),
    /// Adds, replaces or removes the key's rate limits.
    Limit(crate::limits::LimitArgs),
    /// Sets or removes the key's quota of requests.
    Quota(crate::limits::QuotaArgs),
    /// Adds or removes the scopes the key carries.
    Scope(crate::limits::ScopeArgs),
}

fn created_json(info: &KeyInfo, key: &str) -> Value {
    let mut v = serde_json::to_value(info).expect("serialises");
    v["key"] = Value::String(key.to_string());
    v
}

/// `keyward key set ID ...`: one patch of the key's settings.
#[derive(clap::Args)]
pub(crate) struct SetArgs {
    id: String,
    /// A new name.
    #[arg(long)]
    name: Option<String>,
    /// The key admits nobody until enabled.
    #[arg(long, conflicts_with = "enable")]
    disable: bool,
    /// Re-enables a disabled key.
    #[arg(long)]
    enable: bool,
    /// When it stops working: a duration from now (30d, 12h) or an RFC 3339 time.
    #[arg(long, conflicts_with = "no_expiry")]
    expires: Option<String>,
    /// The key never expires.
    #[arg(long)]
    no_expiry: bool,
    /// A JSON object to keep with the key, replacing what it had.
    #[arg(long, conflicts_with = "no_metadata")]
    metadata: Option<String>,
    /// Removes the key's metadata.
    #[arg(long)]
    no_metadata: bool,
    /// The account the key belongs to.
    #[arg(long, conflicts_with = "no_owner")]
    owner: Option<String>,
    /// The key belongs to no account.
    #[arg(long)]
    no_owner: bool,
    /// What the key is for (an empty text removes it).
    #[arg(long)]
    description: Option<String>,
}

impl SetArgs {
    /// The patch the flags ask for; an error when they ask for nothing.
    fn patch(&self) -> Result<KeyUpdate> {
        let mut p = KeyUpdate::new();
        if let Some(name) = &self.name {
            p = p.name(name.as_str());
        }
        if self.disable || self.enable {
            p = p.disabled(self.disable);
        }
        if let Some(e) = &self.expires {
            p = p.expires_at(Some(expiry(e)?));
        } else if self.no_expiry {
            p = p.expires_at(None);
        }
        if let Some(m) = &self.metadata {
            p = p.metadata(Some(metadata_arg(m)?));
        } else if self.no_metadata {
            p = p.metadata(None);
        }
        if let Some(owner) = &self.owner {
            p = p.owner(Some(owner.as_str()));
        } else if self.no_owner {
            p = p.owner(None::<String>);
        }
        if let Some(d) = &self.description {
            p = p.description(Some(d.as_str()).filter(|d| !d.is_empty()));
        }
        if p.is_empty() {
            return Err(invalid(
                "nothing to set: give --name, --disable/--enable, --expires/--no-expiry, \
                 --metadata/--no-metadata, --owner/--no-owner or --description",
            ));
        }
        Ok(p)
    }
}

/// The JSON of a `--metadata` flag (`key create`, `key set`).
fn metadata_arg(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| invalid(format!("--metadata is not JSON: {e}")))
}

pub(crate) fn key_command(store: &Store, cmd: KeyCommand, out: &Out) -> Result<u8> {
    match cmd {
        KeyCommand::Import(a) => return crate::import::import_command(store, a, out),
        KeyCommand::Limit(a) => return crate::limits::limit_command(store, a, out),
        KeyCommand::Quota(a) => return crate::limits::quota_command(store, a, out),
        KeyCommand::Scope(a) => return crate::limits::scope_command(store, a, out),
        KeyCommand::Create {
            name,
            expires,
            metadata,
            owner,
            limits,
            quota,
            refill,
            scopes,
            description,
        } => {
            let mut o = CreateOptions::new().scopes(scopes);
            if let Some(d) = description {
                o = o.description(d);
            }
            for l in &limits {
                o = o.limit(crate::limits::parse_limit(l)?);
            }
            if let Some(q) = quota {
                o = o.quota(crate::limits::quota(q, refill.as_deref())?);
            }
            if let Some(owner) = owner {
                o = o.owner(owner);
            }
            if let Some(e) = expires {
                o = o.expires_at(expiry(&e)?);
            }
            if let Some(m) = metadata {
                o = o.metadata(metadata_arg(&m)?);
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
        KeyCommand::List {
            owner,
            limit,
            after,
        } if limit.is_some() || after.is_some() => {
            let after = after.as_deref().map(key_id).transpose()?;
            let page = store.list_page(owner.as_deref(), after.as_ref(), limit.unwrap_or(100))?;
            if out.json {
                out.json(&json!({ "keys": page.keys, "next": page.next }));
            } else {
                print_key_table(&page.keys);
                if let Some(next) = page.next {
                    println!("\nMore: keyward key list --after {next}");
                }
            }
        }
        KeyCommand::List { owner, .. } => {
            let keys = match owner {
                Some(o) => store.list_owner(&o)?,
                None => store.list()?,
            };
            if out.json {
                out.json(&keys);
            } else {
                print_key_table(&keys);
            }
        }
        KeyCommand::SetOwner { id, owner, none } => {
            let owner = if none { None } else { owner };
            let info = store.set_owner(&key_id(&id)?, owner.as_deref())?;
            if out.json {
                out.json(&info);
            } else {
                match &info.owner {
                    Some(o) => println!("Key {} now belongs to {}", info.id, shown::text(o)),
                    None => println!("Key {} now belongs to no account", info.id),
                }
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
        KeyCommand::Set(args) => {
            let patch = args.patch()?;
            let info = store.update(&key_id(&args.id)?, patch)?;
            if out.json {
                out.json(&info);
            } else {
                print_overview(&info, out);
            }
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

fn print_key_table(keys: &[KeyInfo]) {
    if keys.is_empty() {
        println!("No keys. Create one with: keyward key create NAME");
        return;
    }
    // An OWNER column once any key has an owner.
    let owners = keys.iter().any(|k| k.owner.is_some());
    let owner_cell = |k: &KeyInfo| -> String {
        if !owners {
            return String::new();
        }
        let o: String = shown::text(k.owner.as_deref().unwrap_or("-"))
            .chars()
            .take(20)
            .collect();
        format!("{o:<20}  ")
    };
    println!(
        "{:<12}  {}{:<24}  {:<22}  {:>3}  {:<9}  {:<9}  LAST USED",
        "ID",
        if owners {
            format!("{:<20}  ", "OWNER")
        } else {
            String::new()
        },
        "NAME",
        "KEY",
        "GEN",
        "STATUS",
        "WHITELIST"
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
            "{:<12}  {}{:<24}  {:<22}  {:>3}  {:<9}  {:<9}  {}",
            k.id,
            owner_cell(k),
            name,
            k.masked,
            k.generation,
            status,
            if k.whitelist_enabled { "on" } else { "off" },
            opt_time(k.last_used_at)
        );
    }
}

/// One value of a key's Overview, as `key show` and the panel both show
/// it (each in its own way: text, or HTML).
pub(crate) enum Shown<'k> {
    /// An id or a masked key.
    Code(&'k str),
    /// Text; `None`: the word, muted on the panel.
    Text(Option<&'k str>, &'static str),
    /// A time; `None`: the word.
    Time(Option<Timestamp>, &'static str),
    Number(u64),
    /// The key's state (`active`, `disabled`, `expired`, `in grace`).
    Status(&'static str),
    /// "Restrict this key to whitelisted IPs".
    Whitelist(bool),
    Limits(&'k [keyward::Limit]),
    Quota(Option<keyward::Quota>),
    Scopes(&'k [String]),
    Metadata(Option<&'k Value>),
}

/// A key's state: `disabled`, `expired`, `in grace` (an old secret still
/// works) or `active`.
pub(crate) fn status(k: &KeyInfo, now: Timestamp) -> &'static str {
    if k.disabled {
        "disabled"
    } else if k.expires_at.is_some_and(|e| e <= now) {
        "expired"
    } else if k.grace_until.is_some_and(|g| g > now) {
        "in grace"
    } else {
        "active"
    }
}

/// The Overview of key `k`, row by row: what `key show` prints and the
/// panel's Overview tab shows. A new field of a key is a row here.
pub(crate) fn overview_rows(k: &KeyInfo, now: Timestamp) -> Vec<(&'static str, Shown<'_>)> {
    let mut rows = vec![
        ("Id", Shown::Code(k.id.as_str())),
        ("Key", Shown::Code(&k.masked)),
        ("Owner", Shown::Text(k.owner.as_deref(), "none")),
        ("Description", Shown::Text(k.description.as_deref(), "none")),
        ("Status", Shown::Status(status(k, now))),
        ("Generation", Shown::Number(u64::from(k.generation))),
        ("Created", Shown::Time(Some(k.created_at), "")),
        ("Last rotated", Shown::Time(k.rotated_at, "never")),
        ("Last used", Shown::Time(k.last_used_at, "never")),
        ("Expires", Shown::Time(k.expires_at, "never")),
    ];
    if let Some(g) = k.grace_until.filter(|g| *g > now) {
        rows.push(("Old key works until", Shown::Time(Some(g), "")));
    }
    rows.extend([
        ("Whitelist", Shown::Whitelist(k.whitelist_enabled)),
        ("Rate limits", Shown::Limits(&k.limits)),
        ("Quota", Shown::Quota(k.quota)),
        ("Scopes", Shown::Scopes(&k.scopes)),
        ("Metadata", Shown::Metadata(k.metadata.as_ref())),
    ]);
    rows
}

fn print_overview(k: &KeyInfo, out: &Out) {
    println!("{}", out.bold(&shown::text(&k.name)));
    for (label, value) in overview_rows(k, Timestamp::now()) {
        let text = match value {
            Shown::Code(c) => c.to_string(),
            Shown::Number(n) => n.to_string(),
            Shown::Text(t, unset) => shown::text(t.unwrap_or(unset)).into_owned(),
            Shown::Time(t, unset) => t.map_or_else(|| unset.to_string(), |t| t.to_string()),
            Shown::Status(s) => s.to_string(),
            Shown::Whitelist(true) => "on (only whitelisted IPs)".to_string(),
            Shown::Whitelist(false) => "off (any IP)".to_string(),
            Shown::Limits(l) => crate::limits::limits_text(l),
            Shown::Quota(q) => crate::limits::quota_text(q),
            Shown::Scopes(s) => crate::limits::scopes_text(s),
            Shown::Metadata(m) => {
                m.map_or_else(|| "none".to_string(), |m| shown::json(m.to_string()))
            }
        };
        println!("  {:<13} {text}", label.to_lowercase());
    }
}
