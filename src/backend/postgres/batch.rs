//! A batch committed in a handful of statements, whatever its size.
//!
//! The batch's operations are taken in runs of one kind, in order; each
//! run is one statement over arrays (`unnest`): the expected values of a
//! run of checks are read (and locked) at once, a run of puts is one
//! `insert … on conflict do update` (the last put of a row wins, as it
//! would one by one), a run of deletes one `delete`, a run of appends one
//! draw of sequence numbers and then one insert. A batch of 10,000 new
//! keys (the bulk path of `create_many`) is a few round trips, not 60,000.

use std::collections::HashMap;

use super::table_id;
use crate::backend::Op;

/// A row's expected value: (table, key, value or absent).
type Check<'a> = (i16, &'a [u8], Option<&'a [u8]>);

/// What a run of operations of one kind does.
pub(super) enum Run<'a> {
    /// Abort unless every row holds its expected value.
    Expect(Vec<Check<'a>>),
    Put(Vec<(i16, &'a [u8], &'a [u8])>),
    Delete(Vec<(i16, &'a [u8])>),
    /// Values to store under the table's next sequence numbers.
    Append(Vec<(i16, &'a [u8])>),
}

impl Run<'_> {
    fn same_kind(&self, op: &Op) -> bool {
        matches!(
            (self, op),
            (Run::Expect(_), Op::Expect { .. })
                | (Run::Put(_), Op::Put { .. })
                | (Run::Delete(_), Op::Delete { .. })
                | (Run::Append(_), Op::Append { .. })
        )
    }
}

/// The batch's operations as runs of one kind, in order.
pub(super) fn runs(ops: &[Op]) -> Vec<Run<'_>> {
    let mut runs: Vec<Run<'_>> = Vec::new();
    for op in ops {
        if !runs.last().is_some_and(|r| r.same_kind(op)) {
            runs.push(match op {
                Op::Expect { .. } => Run::Expect(Vec::new()),
                Op::Put { .. } => Run::Put(Vec::new()),
                Op::Delete { .. } => Run::Delete(Vec::new()),
                Op::Append { .. } => Run::Append(Vec::new()),
            });
        }
        match (runs.last_mut().expect("a run was pushed"), op) {
            (
                Run::Expect(v),
                Op::Expect {
                    table,
                    key,
                    expected,
                },
            ) => v.push((table_id(*table), key, expected.as_deref())),
            (Run::Put(v), Op::Put { table, key, value }) => v.push((table_id(*table), key, value)),
            (Run::Delete(v), Op::Delete { table, key }) => v.push((table_id(*table), key)),
            (Run::Append(v), Op::Append { table, value }) => v.push((table_id(*table), value)),
            _ => unreachable!("a run holds operations of its kind"),
        }
    }
    for run in &mut runs {
        if let Run::Put(puts) = run {
            // One statement may write a row once: the last put of a row wins.
            let mut last: HashMap<(i16, &[u8]), usize> = HashMap::new();
            for (i, (t, k, _)) in puts.iter().enumerate() {
                last.insert((*t, *k), i);
            }
            let mut i = 0;
            puts.retain(|(t, k, _)| {
                let keep = last[&(*t, *k)] == i;
                i += 1;
                keep
            });
        }
    }
    runs
}

/// Columns of (table, key) pairs, as statement parameters.
fn columns<'a>(rows: impl Iterator<Item = (i16, &'a [u8])>) -> (Vec<i16>, Vec<&'a [u8]>) {
    rows.unzip()
}

/// Applies the runs in `tx`; `Ok(false)` when an expected value did not hold.
pub(super) async fn apply(
    tx: &tokio_postgres::Transaction<'_>,
    schema_sql: impl Fn(&str) -> String,
    runs: &[Run<'_>],
) -> Result<bool, tokio_postgres::Error> {
    let read = schema_sql(
        "select tbl, k, v from {schema}.kv
         where (tbl, k) in (select * from unnest($1::int2[], $2::bytea[])) for update",
    );
    let put = schema_sql(
        "insert into {schema}.kv (tbl, k, v)
         select * from unnest($1::int2[], $2::bytea[], $3::bytea[])
         on conflict (tbl, k) do update set v = excluded.v",
    );
    let delete = schema_sql(
        "delete from {schema}.kv
         where (tbl, k) in (select * from unnest($1::int2[], $2::bytea[]))",
    );
    let draw = schema_sql("select nextval('{schema}.event_seq') from generate_series(1, $1::int8)");
    for run in runs {
        match run {
            Run::Expect(checks) => {
                let (tables, keys) = columns(checks.iter().map(|(t, k, _)| (*t, *k)));
                let current: HashMap<(i16, Vec<u8>), Vec<u8>> = tx
                    .query(&read, &[&tables, &keys])
                    .await?
                    .into_iter()
                    .map(|r| ((r.get(0), r.get(1)), r.get(2)))
                    .collect();
                for (t, k, expected) in checks {
                    if current.get(&(*t, k.to_vec())).map(Vec::as_slice) != *expected {
                        return Ok(false);
                    }
                }
            }
            Run::Put(puts) => {
                let (tables, keys) = columns(puts.iter().map(|(t, k, _)| (*t, *k)));
                let values: Vec<&[u8]> = puts.iter().map(|(_, _, v)| *v).collect();
                tx.execute(&put, &[&tables, &keys, &values]).await?;
            }
            Run::Delete(deletes) => {
                let (tables, keys) = columns(deletes.iter().copied());
                tx.execute(&delete, &[&tables, &keys]).await?;
            }
            Run::Append(appends) => {
                let n = i64::try_from(appends.len()).unwrap_or(i64::MAX);
                let mut seqs: Vec<i64> = tx
                    .query(&draw, &[&n])
                    .await?
                    .into_iter()
                    .map(|r| r.get(0))
                    .collect();
                seqs.sort_unstable();
                let keys: Vec<Vec<u8>> = seqs
                    .iter()
                    .map(|s| u64::try_from(*s).unwrap_or(0).to_be_bytes().to_vec())
                    .collect();
                let tables: Vec<i16> = appends.iter().map(|(t, _)| *t).collect();
                let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                let values: Vec<&[u8]> = appends.iter().map(|(_, v)| *v).collect();
                tx.execute(&put, &[&tables, &keys, &values]).await?;
            }
        }
    }
    Ok(true)
}

/// The change-feed rows of `keys`, in one statement: the newest version.
pub(super) async fn record_changes(
    tx: &tokio_postgres::Transaction<'_>,
    schema_sql: impl Fn(&str) -> String,
    keys: &[&[u8]],
) -> Result<Option<i64>, tokio_postgres::Error> {
    if keys.is_empty() {
        return Ok(None);
    }
    let change = schema_sql(
        "insert into {schema}.changes (key_id) select * from unnest($1::bytea[]) returning version",
    );
    Ok(tx
        .query(&change, &[&keys])
        .await?
        .into_iter()
        .map(|r| r.get::<_, i64>(0))
        .max())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Batch, Table};

    #[test]
    fn operations_group_into_runs_in_order_and_the_last_put_of_a_row_wins() {
        let mut b = Batch::default();
        b.expect(Table::Keys, b"a".to_vec(), None);
        b.put(Table::Keys, b"a".to_vec(), b"1".to_vec());
        b.put(Table::Owners, b"a".to_vec(), b"other table".to_vec());
        b.put(Table::Keys, b"a".to_vec(), b"2".to_vec());
        b.delete(Table::Keys, b"c".to_vec());
        b.append(Table::Events, b"e1".to_vec());
        b.append(Table::Events, b"e2".to_vec());
        b.put(Table::Keys, b"c".to_vec(), b"again".to_vec());
        let runs = runs(&b.ops);
        let keys = table_id(Table::Keys);
        let owners = table_id(Table::Owners);
        assert!(matches!(&runs[0], Run::Expect(v) if v == &[(keys, &b"a"[..], None)]));
        assert!(
            matches!(&runs[1], Run::Put(v) if v == &[(owners, &b"a"[..], &b"other table"[..]), (keys, &b"a"[..], &b"2"[..])])
        );
        assert!(matches!(&runs[2], Run::Delete(v) if v == &[(keys, &b"c"[..])]));
        assert!(
            matches!(&runs[3], Run::Append(v) if v.len() == 2 && v[0].1 == b"e1" && v[1].1 == b"e2")
        );
        assert!(matches!(&runs[4], Run::Put(v) if v == &[(keys, &b"c"[..], &b"again"[..])]));
        assert_eq!(runs.len(), 5);
    }
}
