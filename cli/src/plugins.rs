//! `keyward plugin ...`: notifier plugins.

use crate::shown;
use std::path::PathBuf;

use clap::Subcommand;
use keyward::{InstallOptions, Store};
use serde_json::json;

use crate::{Out, Result, invalid, opt_time};

#[derive(Subcommand)]
pub(crate) enum PluginCommand {
    /// Installs a component with its manifest.
    Install {
        file: PathBuf,
        #[arg(long)]
        manifest: PathBuf,
        /// Let its calls reach loopback, link-local and private addresses
        /// through the names its manifest allows (a CRM on an internal network).
        #[arg(long)]
        allow_private_network: bool,
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

pub(crate) fn plugin_command(store: &Store, cmd: PluginCommand, out: &Out) -> Result<u8> {
    match cmd {
        PluginCommand::Install {
            file,
            manifest,
            allow_private_network,
        } => {
            let wasm =
                std::fs::read(&file).map_err(|e| invalid(format!("{}: {e}", file.display())))?;
            let toml = std::fs::read_to_string(&manifest)
                .map_err(|e| invalid(format!("{}: {e}", manifest.display())))?;
            let grants = InstallOptions::new().allow_private_network(allow_private_network);
            let info = store.install_plugin_with(&wasm, &toml, grants)?;
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
                    "  signed        {}",
                    info.signing.as_deref().unwrap_or("no")
                );
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
                    shown::text(s.last_error.as_deref().unwrap_or("none"))
                );
                if let Some(t) = s.next_attempt_at {
                    println!("  next attempt  {t}");
                }
                println!("  dead letters  {}", letters.len());
                for l in &letters {
                    println!(
                        "    event {:<6} {:<22} {} attempts, {}: {}",
                        l.seq,
                        l.kind,
                        l.attempts,
                        l.at,
                        shown::text(&l.error)
                    );
                }
                if !log.is_empty() {
                    println!("  recent log");
                    for line in log.iter().rev().take(20).rev() {
                        println!("    {}", shown::text(line));
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
