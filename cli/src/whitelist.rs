//! `keyward whitelist ...`: the Whitelist tab.

use clap::Subcommand;
use keyward::Store;

use crate::{Out, Result, key_id};

#[derive(Subcommand)]
pub(crate) enum WhitelistCommand {
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

pub(crate) fn whitelist_command(store: &Store, cmd: WhitelistCommand, out: &Out) -> Result<u8> {
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
