//! `keyward owner ...` and `keyward usage --owner`: accounts.

use clap::Subcommand;
use keyward::Store;
use serde_json::json;

use crate::shown;
use crate::{Confirm, Out, Result, confirmed, opt_time};

#[derive(Subcommand)]
pub(crate) enum OwnerCommand {
    /// Every account with keys, and how many each holds.
    List,
    /// Closes an account: deletes all its keys at once; asks y/N on a
    /// terminal unless --yes.
    Delete {
        owner: String,
        #[command(flatten)]
        confirm: Confirm,
    },
}

pub(crate) fn owner_command(store: &Store, cmd: OwnerCommand, out: &Out) -> Result<u8> {
    match cmd {
        OwnerCommand::List => {
            let owners = store.owners()?;
            if out.json {
                out.json(&owners);
            } else if owners.is_empty() {
                println!("No key has an owner. Set one with: keyward key create NAME --owner ID");
            } else {
                println!("{:<40}  KEYS", "OWNER");
                for o in &owners {
                    println!("{:<40}  {}", shown::text(&o.owner), o.keys);
                }
            }
        }
        OwnerCommand::Delete { owner, confirm } => {
            let keys = store.list_owner(&owner)?;
            confirmed(
                &format!(
                    "Delete all {} keys of {}? They stop working immediately and their usage is removed.",
                    keys.len(),
                    shown::text(&owner)
                ),
                &confirm,
            )?;
            let n = store.delete_owner_keys(&owner)?;
            if out.json {
                out.json(&json!({ "owner": owner, "deleted": n }));
            } else {
                println!("Deleted {n} keys of {}.", shown::text(&owner));
            }
        }
    }
    Ok(0)
}

/// `keyward usage --owner OWNER`: an account's totals across its keys.
pub(crate) fn owner_usage_command(store: &Store, owner: &str, out: &Out) -> Result<u8> {
    let u = store.owner_usage(owner)?;
    if out.json {
        out.json(&u);
        return Ok(0);
    }
    println!("{} ({} keys)", out.bold(&shown::text(&u.owner)), u.keys);
    let reasons: Vec<String> = u
        .totals
        .by_reason()
        .into_iter()
        .map(|(reason, n)| format!("{} {n}", reason.words()))
        .collect();
    println!(
        "  requests: {} allowed, {} denied ({})",
        u.totals.allowed,
        u.totals.denied,
        reasons.join(", ")
    );
    println!("  last used {}", opt_time(u.last_used_at));
    Ok(0)
}
