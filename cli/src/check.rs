//! `keyward check [--repair]`: what does not agree in a store, and with
//! `--repair` what was set right.

use keyward::Store;

use crate::{Out, Result, shown};

/// Exit 0 when nothing is wrong that was not repaired, 1 otherwise.
pub(crate) fn check_command(store: &Store, repair: bool, out: &Out) -> Result<u8> {
    let report = store.check(repair)?;
    if out.json {
        out.json(&report);
    } else {
        for p in &report.problems {
            let done = if p.repaired { " (repaired)" } else { "" };
            println!(
                "{} {}: {}{done}",
                p.table,
                shown::text(&p.row),
                shown::text(&p.problem)
            );
        }
        let rows: u64 = report.rows.values().sum();
        if report.problems.is_empty() {
            println!("clean: {rows} rows read");
        } else {
            let left = report.problems.iter().filter(|p| !p.repaired).count();
            println!(
                "{} problem(s) in {rows} rows read, {left} not repaired",
                report.problems.len()
            );
        }
    }
    Ok(u8::from(!report.is_clean()))
}
