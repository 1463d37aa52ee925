//! `keyward usage ID`: the Usage tab, with an hourly chart.

use crate::shown;
use keyward::{KeyInfo, RecentRequest, Store, Timestamp, Usage};

use crate::{Out, Result, key_id};

/// Prints (or writes as JSON) the Usage tab of key `id`.
pub(crate) fn usage_command(store: &Store, id: &str, days: u32, out: &Out) -> Result<u8> {
    let id = key_id(id)?;
    let info = store.get(&id)?;
    let usage = store.usage(&id)?;
    if out.json {
        out.json(&usage);
    } else {
        print_usage(&info, &usage, days, out);
    }
    Ok(0)
}

/// Prints (or writes as JSON) key `id`'s last verifications, newest first.
pub(crate) fn recent_command(store: &Store, id: &str, out: &Out) -> Result<u8> {
    let id = key_id(id)?;
    let info = store.get(&id)?;
    let recent = store.recent_requests(&id)?;
    if out.json {
        out.json(&recent);
    } else {
        println!("{} ({})", out.bold(&info.name), info.masked);
        if recent.is_empty() {
            println!("  no requests yet");
        } else {
            println!(
                "  {:<24}  {:<39}  {:<24}  {:<20}  SCOPE",
                "TIME", "CLIENT", "INTEGRATION", "RESULT"
            );
        }
        for r in &recent {
            println!(
                "  {:<24}  {:<39}  {:<24}  {:<20}  {}{}",
                r.at.to_string(),
                r.ip.to_string(),
                shown::text(r.integration.as_deref().unwrap_or("-")),
                result(r),
                shown::text(r.scope.as_deref().unwrap_or("-")),
                if r.stale_secret {
                    out.warn("  OLD SECRET")
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(0)
}

/// "allowed", or "denied: " and the reason.
pub(crate) fn result(r: &RecentRequest) -> String {
    match (&r.reason, r.allowed) {
        (_, true) => "allowed".into(),
        (Some(reason), false) => format!("denied: {reason}"),
        (None, false) => "denied".into(),
    }
}

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

fn print_usage(info: &KeyInfo, u: &Usage, days: u32, out: &Out) {
    let t = &u.totals;
    println!("{} ({})", out.bold(&info.name), info.masked);
    let reasons: Vec<String> = t
        .by_reason()
        .into_iter()
        .map(|(reason, n)| format!("{} {n}", reason.words()))
        .collect();
    println!(
        "  requests: {} allowed, {} denied ({})",
        t.allowed,
        t.denied,
        reasons.join(", ")
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
            shown::text(r.last_integration.as_deref().unwrap_or("-")),
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
            shown::text(&r.name),
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
                shown::text(r.last_integration.as_deref().unwrap_or("-"))
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
    let bucket = |h: i64| {
        u.hourly
            .iter()
            .find(|b| b.hour.unix_millis().div_euclid(HOUR) == h)
    };
    let count = |h: i64| -> (u64, u64) { bucket(h).map_or((0, 0), |b| (b.allowed, b.denied)) };
    let limited = |h: i64| bucket(h).map_or(0, |b| b.limited);
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
        // Under the hours with requests refused for a rate limit or the
        // quota: a mark, and how many.
        let marks: String = (day * 24..day * 24 + 24)
            .map(|h| if limited(h) > 0 { '^' } else { ' ' })
            .collect();
        let refused: u64 = (day * 24..day * 24 + 24).map(limited).sum();
        if refused > 0 {
            println!("              {marks}  {refused:>8} rate-limited or out of quota");
        }
    }
}
