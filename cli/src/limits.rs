//! `keyward key limit | quota | scope`: what a key may do beyond being
//! admitted (rate limits, a quota of requests, scopes).

use clap::Args;
use keyward::{KeyInfo, Limit, Quota, RefillPeriod, Store};

use crate::{Out, Result, invalid, key_id};

/// `keyward key limit ID --add burst=100/60s --remove daily`.
#[derive(Args)]
pub(crate) struct LimitArgs {
    id: String,
    /// A limit to add or replace: NAME=LIMIT/WINDOW (burst=100/60s,
    /// daily=10000/1d). Repeatable.
    #[arg(long, value_name = "NAME=LIMIT/WINDOW")]
    add: Vec<String>,
    /// The name of a limit to remove. Repeatable.
    #[arg(long, value_name = "NAME")]
    remove: Vec<String>,
    /// Removes every limit.
    #[arg(long, conflicts_with_all = ["add", "remove"])]
    clear: bool,
}

/// `keyward key quota ID 1000 --refill 1000/monthly`, or `--none`.
#[derive(Args)]
pub(crate) struct QuotaArgs {
    id: String,
    /// Requests left from now.
    #[arg(required_unless_present = "none", conflicts_with = "none")]
    remaining: Option<u64>,
    /// Resets what is left to AMOUNT at 00:00 UTC daily, or on the 1st of
    /// the month: AMOUNT/daily or AMOUNT/monthly.
    #[arg(long, value_name = "AMOUNT/PERIOD")]
    refill: Option<String>,
    /// Removes the quota.
    #[arg(long)]
    none: bool,
}

/// `keyward key scope ID --add orders:read --remove contacts:write`.
#[derive(Args)]
pub(crate) struct ScopeArgs {
    id: String,
    /// A scope to add. Repeatable.
    #[arg(long, value_name = "SCOPE")]
    add: Vec<String>,
    /// A scope to remove. Repeatable.
    #[arg(long, value_name = "SCOPE")]
    remove: Vec<String>,
    /// Removes every scope.
    #[arg(long, conflicts_with_all = ["add", "remove"])]
    clear: bool,
}

/// `NAME=LIMIT/WINDOW`: `burst=100/60s`, `daily=10000/1d`.
pub(crate) fn parse_limit(s: &str) -> Result<Limit> {
    let bad = || {
        invalid(format!(
            "{s:?} is not NAME=LIMIT/WINDOW (like burst=100/60s)"
        ))
    };
    let (name, rest) = s.split_once('=').ok_or_else(bad)?;
    let (limit, window) = rest.split_once('/').ok_or_else(bad)?;
    let limit: u64 = limit.trim().parse().map_err(|_| bad())?;
    let window = crate::duration(window.trim())?;
    Ok(Limit::new(name.trim(), limit, window))
}

/// `AMOUNT/daily` or `AMOUNT/monthly`, on `remaining`.
pub(crate) fn quota(remaining: u64, refill: Option<&str>) -> Result<Quota> {
    let q = Quota::new(remaining);
    let Some(r) = refill else { return Ok(q) };
    let bad = || {
        invalid(format!(
            "--refill {r:?} is not AMOUNT/daily or AMOUNT/monthly"
        ))
    };
    let (amount, period) = r.split_once('/').ok_or_else(bad)?;
    let amount: u64 = amount.trim().parse().map_err(|_| bad())?;
    let period = RefillPeriod::parse(period.trim()).ok_or_else(bad)?;
    Ok(q.refilled(amount, period))
}

pub(crate) fn limit_command(store: &Store, a: LimitArgs, out: &Out) -> Result<u8> {
    let id = key_id(&a.id)?;
    let mut limits = if a.clear {
        Vec::new()
    } else {
        store.get(&id)?.limits
    };
    for name in &a.remove {
        let before = limits.len();
        limits.retain(|l| l.name != *name);
        if limits.len() == before {
            return Err(invalid(format!("the key has no limit named {name:?}")));
        }
    }
    for text in &a.add {
        let l = parse_limit(text)?;
        limits.retain(|o| o.name != l.name);
        limits.push(l);
    }
    let info = store.set_limits(&id, &limits)?;
    done(&info, out);
    Ok(0)
}

pub(crate) fn quota_command(store: &Store, a: QuotaArgs, out: &Out) -> Result<u8> {
    let id = key_id(&a.id)?;
    let q = match a.remaining {
        Some(n) if !a.none => Some(quota(n, a.refill.as_deref())?),
        _ => None,
    };
    let info = store.set_quota(&id, q)?;
    done(&info, out);
    Ok(0)
}

pub(crate) fn scope_command(store: &Store, a: ScopeArgs, out: &Out) -> Result<u8> {
    let id = key_id(&a.id)?;
    let mut scopes = if a.clear {
        Vec::new()
    } else {
        store.get(&id)?.scopes
    };
    scopes.retain(|s| !a.remove.contains(s));
    scopes.extend(a.add);
    let info = store.set_scopes(&id, &scopes)?;
    done(&info, out);
    Ok(0)
}

fn done(info: &KeyInfo, out: &Out) {
    if out.json {
        out.json(info);
    } else {
        println!("Key {} ({}):", info.id, info.name);
        println!("  rate limits   {}", limits_text(&info.limits));
        println!("  quota         {}", quota_text(info.quota));
        println!("  scopes        {}", scopes_text(&info.scopes));
    }
}

/// A key's rate limits as `key show` prints them (`burst 100/1m`).
pub(crate) fn limits_text(limits: &[Limit]) -> String {
    if limits.is_empty() {
        return "none".to_string();
    }
    limits
        .iter()
        .map(|l| {
            format!(
                "{} {}/{}",
                l.name,
                l.limit,
                humantime::format_duration(l.window)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A key's quota as `key show` prints it and the panel shows it.
pub(crate) fn quota_text(quota: Option<Quota>) -> String {
    match quota {
        None => "none".to_string(),
        Some(Quota {
            remaining,
            refill: None,
        }) => format!("{remaining} requests left"),
        Some(Quota {
            remaining,
            refill: Some(r),
        }) => format!(
            "{remaining} requests left, reset to {} {}",
            r.amount,
            r.period.as_str()
        ),
    }
}

/// A key's scopes as `key show` prints them.
pub(crate) fn scopes_text(scopes: &[String]) -> String {
    if scopes.is_empty() {
        "none (no scope is required of it)".to_string()
    } else {
        crate::shown::text(&scopes.join(" ")).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn limits_and_refills_are_read() {
        let l = parse_limit("burst=100/60s").ok().unwrap();
        assert_eq!(l, Limit::new("burst", 100, Duration::from_mins(1)));
        assert_eq!(
            parse_limit("daily=10000/1d").ok().unwrap().window,
            Duration::from_hours(24)
        );
        for bad in ["burst", "burst=100", "burst=x/1s", "burst=1/soon"] {
            assert!(parse_limit(bad).is_err(), "{bad}");
        }
        assert_eq!(
            quota(5, Some("10/monthly")).ok().unwrap(),
            Quota::new(5).refilled(10, RefillPeriod::Monthly)
        );
        assert!(quota(5, Some("10/weekly")).is_err());
        assert!(quota(5, Some("daily")).is_err());
    }
}
