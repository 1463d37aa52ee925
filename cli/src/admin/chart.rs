//! The Usage tab's chart: requests per hour over the last 7 days, allowed
//! and denied stacked, drawn here as SVG (no script, no external asset;
//! colours come from the stylesheet's classes).

use keyward::{HourlyUsage, Timestamp};
use maud::{Markup, html};

const HOURS: usize = 7 * 24;
const HOUR_MS: i64 = 3_600_000;
const BAR: usize = 5;
const WIDTH: usize = HOURS * BAR;
const HEIGHT: u64 = 120;
const AXIS: usize = 18;

/// The hour each of the last [`HOURS`] hours starts at, oldest first,
/// ending with the hour `now` is in.
fn hours(now: Timestamp) -> impl Iterator<Item = i64> {
    let current = now.unix_millis().div_euclid(HOUR_MS) * HOUR_MS;
    (0..HOURS as i64).map(move |i| current - (HOURS as i64 - 1 - i) * HOUR_MS)
}

/// Allowed and denied counts of each of the last 7 days' hours.
fn bins(hourly: &[HourlyUsage], now: Timestamp) -> Vec<(i64, u64, u64)> {
    hours(now)
        .map(|start| {
            let (a, d) = hourly
                .iter()
                .filter(|h| h.hour.unix_millis() == start)
                .fold((0, 0), |(a, d), h| (a + h.allowed, d + h.denied));
            (start, a, d)
        })
        .collect()
}

fn height(n: u64, max: u64) -> u64 {
    if n == 0 {
        0
    } else {
        (n * HEIGHT).div_ceil(max).max(1)
    }
}

/// The chart of `hourly` as of `now`.
pub(crate) fn hourly(hourly: &[HourlyUsage], now: Timestamp) -> Markup {
    let bins = bins(hourly, now);
    let max = bins.iter().map(|(_, a, d)| a + d).max().unwrap_or(0).max(1);
    let total: u64 = bins.iter().map(|(_, a, d)| a + d).sum();
    let label = format!(
        "Requests per hour over the last 7 days: {total} in all, at most {max} in one hour"
    );
    let full = HEIGHT as usize + AXIS;
    html! {
        svg.chart #usage-chart xmlns="http://www.w3.org/2000/svg" role="img" aria-label=(label)
            viewBox=(format!("0 0 {WIDTH} {full}")) preserveAspectRatio="none" {
            title { (label) }
            line.axis x1="0" y1=(HEIGHT) x2=(WIDTH) y2=(HEIGHT) {}
            @for (i, (start, allowed, denied)) in bins.iter().enumerate() {
                @let x = i * BAR;
                @let ha = height(*allowed, max);
                @let hd = height(*denied, max);
                @if ha > 0 {
                    rect.allowed x=(x) y=(HEIGHT - ha) width=(BAR - 1) height=(ha) {
                        title { (Timestamp::from_unix_millis(*start)) ": " (allowed) " allowed" }
                    }
                }
                @if hd > 0 {
                    rect.denied x=(x) y=(HEIGHT - ha - hd.min(HEIGHT - ha)) width=(BAR - 1) height=(hd.min(HEIGHT - ha).max(1)) {
                        title { (Timestamp::from_unix_millis(*start)) ": " (denied) " denied" }
                    }
                }
                @if (start / HOUR_MS) % 24 == 0 {
                    line.day x1=(x) y1="0" x2=(x) y2=(HEIGHT) {}
                    text x=(x + 2) y=(HEIGHT as usize + AXIS - 4) {
                        (Timestamp::from_unix_millis(*start).to_string()[5..10])
                    }
                }
            }
        }
        p.legend { span.key.allowed {} " allowed " span.key.denied {} " denied" }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hour(ms: i64, allowed: u64, denied: u64) -> HourlyUsage {
        HourlyUsage::new(Timestamp::from_unix_millis(ms), allowed, denied, 0)
    }

    #[test]
    fn each_hour_of_the_week_is_one_bar_and_older_hours_are_left_out() {
        let now = Timestamp::from_unix_millis(1_000 * HOUR_MS + 1_234);
        let usage = [
            hour(1_000 * HOUR_MS, 7, 2),
            hour(990 * HOUR_MS, 3, 0),
            hour((1_000 - 200) * HOUR_MS, 99, 99),
        ];
        let b = bins(&usage, now);
        assert_eq!(b.len(), HOURS);
        assert_eq!(b.last(), Some(&(1_000 * HOUR_MS, 7, 2)));
        assert_eq!(b[HOURS - 11], (990 * HOUR_MS, 3, 0));
        assert_eq!(b.iter().map(|(_, a, d)| a + d).sum::<u64>(), 12);
        let svg = hourly(&usage, now).into_string();
        assert_eq!(svg.matches("<rect class=\"allowed\"").count(), 2);
        assert_eq!(svg.matches("<rect class=\"denied\"").count(), 1);
        assert!(svg.contains("12 in all"));
    }
}
