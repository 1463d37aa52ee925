//! A shared backend on PostgreSQL: many processes and hosts, one store.
//!
//! All tables live in one `kv` table of a schema of the store's own; every
//! commit takes a transaction-scoped advisory lock first, so commits from
//! all processes are totally ordered: event sequence numbers and the change
//! feed never show a later commit before an earlier one. Commits record the
//! key ids they touch in `changes` (the change feed other processes follow)
//! and NOTIFY listeners.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};

use super::{Backend, Batch, Changes, CommitError, Durability, KvPairs, Op, StorageError, Table};
use crate::error::OpenError;

/// Whether `location` names a PostgreSQL store rather than a sled directory.
pub(crate) fn is_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// Migrations, in order; a store records the ones it has applied.
const MIGRATIONS: &[&str] = &["
    create table {schema}.kv (
        tbl smallint not null,
        k bytea not null,
        v bytea not null,
        primary key (tbl, k)
    );
    create table {schema}.changes (
        version bigserial primary key,
        key_id bytea not null
    );
    create sequence {schema}.event_seq;
"];

/// The advisory lock key serialising writers of one schema.
fn lock_key(schema: &str) -> i64 {
    let h = blake3::hash(format!("keyward:{schema}").as_bytes());
    i64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

pub(crate) struct PostgresBackend {
    config: postgres::Config,
    schema: String,
    /// Idle connections; a caller takes one and gives it back.
    pool: Mutex<Vec<Client>>,
    lock_key: i64,
    /// The connection that LISTENs for other writers' commits.
    listener: Mutex<Option<Client>>,
}

/// How to reach a PostgreSQL store again in a session of one's own (the
/// plugin dispatcher's lease is held on one), and the number its advisory
/// locks derive from.
#[derive(Clone)]
pub(crate) struct PostgresTarget {
    config: postgres::Config,
    pub lock_key: i64,
}

impl PostgresTarget {
    /// A new session to the store's server.
    pub(crate) fn connect(&self) -> Result<Client, StorageError> {
        self.config
            .connect(NoTls)
            .map_err(|e| StorageError::with_source("cannot connect to PostgreSQL", e))
    }
}

fn storage(e: postgres::Error) -> StorageError {
    StorageError::with_source("postgres", e)
}

fn table_id(t: Table) -> i16 {
    i16::from(t.tag())
}

/// Splits `?schema=NAME` (default `keyward`) off a connection URL.
pub(crate) fn split_schema(url: &str) -> Result<(String, String), String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut schema = "keyward".to_string();
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("schema", s)) => schema = s.to_string(),
            _ => rest.push(pair),
        }
    }
    let ok = !schema.is_empty()
        && schema.len() <= 48
        && schema.as_bytes()[0].is_ascii_lowercase()
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !ok {
        return Err(format!(
            "schema {schema:?} must match [a-z][a-z0-9_]{{0,47}}"
        ));
    }
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, schema))
}

impl PostgresBackend {
    /// Connects (with a connect timeout) and creates or migrates the schema.
    pub(crate) fn connect(
        url: &str,
        connect_timeout: Duration,
    ) -> Result<(Self, PostgresTarget), OpenError> {
        let (url, schema) = split_schema(url).map_err(OpenError::InvalidOptions)?;
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| OpenError::InvalidOptions(format!("bad PostgreSQL URL: {e}")))?;
        config.connect_timeout(connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("keyward");
        }
        let target = PostgresTarget {
            config,
            lock_key: lock_key(&schema),
        };
        let backend = PostgresBackend {
            lock_key: target.lock_key,
            config: target.config.clone(),
            schema,
            pool: Mutex::new(Vec::new()),
            listener: Mutex::new(None),
        };
        let mut client = backend.connect_one().map_err(OpenError::Storage)?;
        backend.migrate(&mut client).map_err(OpenError::Storage)?;
        backend.give_back(client);
        Ok((backend, target))
    }

    fn connect_one(&self) -> Result<Client, StorageError> {
        self.config
            .connect(NoTls)
            .map_err(|e| StorageError::with_source("cannot connect to PostgreSQL", e))
    }

    fn take(&self) -> Result<Client, StorageError> {
        let idle = self
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match idle {
            Some(c) if !c.is_closed() => Ok(c),
            _ => self.connect_one(),
        }
    }

    fn give_back(&self, client: Client) {
        if !client.is_closed() {
            let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
            if pool.len() < 8 {
                pool.push(client);
            }
        }
    }

    /// Runs `f` on a pooled connection; a connection that failed is dropped.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StorageError> {
        let mut client = self.take()?;
        let result = f(&mut client);
        if result.is_ok() {
            self.give_back(client);
        }
        result.map_err(storage)
    }

    fn sql(&self, text: &str) -> String {
        text.replace("{schema}", &self.schema)
    }

    /// Versioned migrations, applied once, safe when several processes open at once.
    fn migrate(&self, client: &mut Client) -> Result<(), StorageError> {
        let mut tx = client.transaction().map_err(storage)?;
        tx.execute("select pg_advisory_xact_lock($1)", &[&self.lock_key])
            .map_err(storage)?;
        tx.batch_execute(&self.sql(
            "create schema if not exists {schema};
             create table if not exists {schema}.migrations (version int primary key, applied_at timestamptz not null default now());",
        ))
        .map_err(storage)?;
        let applied: i32 = tx
            .query_one(
                &self.sql("select coalesce(max(version), 0) from {schema}.migrations"),
                &[],
            )
            .map_err(storage)?
            .get(0);
        for (i, m) in MIGRATIONS.iter().enumerate() {
            let version = i32::try_from(i + 1).expect("few migrations");
            if version > applied {
                tx.batch_execute(&self.sql(m)).map_err(storage)?;
                tx.execute(
                    &self.sql("insert into {schema}.migrations (version) values ($1)"),
                    &[&version],
                )
                .map_err(storage)?;
            }
        }
        tx.commit().map_err(storage)
    }

    /// The channel NOTIFY uses for this schema.
    pub(crate) fn channel(&self) -> String {
        format!("keyward_{}", self.schema)
    }
}

impl Backend for PostgresBackend {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let q = self.sql("select v from {schema}.kv where tbl = $1 and k = $2");
        self.with(|c| {
            Ok(c.query_opt(&q, &[&table_id(table), &key])?
                .map(|r| r.get(0)))
        })
    }

    fn scan(&self, table: Table, prefix: &[u8]) -> Result<KvPairs, StorageError> {
        let q = self.sql(
            "select k, v from {schema}.kv where tbl = $1 and substring(k from 1 for $3) = $2 order by k",
        );
        let len = i32::try_from(prefix.len()).unwrap_or(i32::MAX);
        self.with(|c| {
            Ok(c.query(&q, &[&table_id(table), &prefix, &len])?
                .into_iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        })
    }

    fn range_from(
        &self,
        table: Table,
        start: &[u8],
        limit: usize,
    ) -> Result<KvPairs, StorageError> {
        let q =
            self.sql("select k, v from {schema}.kv where tbl = $1 and k >= $2 order by k limit $3");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(|c| {
            Ok(c.query(&q, &[&table_id(table), &start, &limit])?
                .into_iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        })
    }

    fn commit(&self, batch: Batch, _durability: Durability) -> Result<u64, CommitError> {
        // A PostgreSQL commit is durable (synchronous_commit): Lazy costs the same.
        let get = self.sql("select v from {schema}.kv where tbl = $1 and k = $2 for update");
        let put = self.sql(
            "insert into {schema}.kv (tbl, k, v) values ($1, $2, $3)
             on conflict (tbl, k) do update set v = excluded.v",
        );
        let del = self.sql("delete from {schema}.kv where tbl = $1 and k = $2");
        let next_seq = self.sql("select nextval('{schema}.event_seq')");
        let change =
            self.sql("insert into {schema}.changes (key_id) values ($1) returning version");
        let version_now = self.sql("select coalesce(max(version), 0) from {schema}.changes");
        let notify = format!("notify {}", self.channel());
        let followed: Vec<&[u8]> = batch.followed_rows().collect();
        let mut client = self.take()?;
        let outcome = (|| -> Result<Result<u64, ()>, postgres::Error> {
            let mut tx = client.transaction()?;
            tx.execute("select pg_advisory_xact_lock($1)", &[&self.lock_key])?;
            for op in &batch.ops {
                match op {
                    Op::Expect {
                        table,
                        key,
                        expected,
                    } => {
                        let current: Option<Vec<u8>> = tx
                            .query_opt(&get, &[&table_id(*table), key])?
                            .map(|r| r.get(0));
                        if current.as_deref() != expected.as_deref() {
                            tx.rollback()?;
                            return Ok(Err(()));
                        }
                    }
                    Op::Put { table, key, value } => {
                        tx.execute(&put, &[&table_id(*table), key, value])?;
                    }
                    Op::Delete { table, key } => {
                        tx.execute(&del, &[&table_id(*table), key])?;
                    }
                    Op::Append { table, value } => {
                        let seq: i64 = tx.query_one(&next_seq, &[])?.get(0);
                        let key = u64::try_from(seq).unwrap_or(0).to_be_bytes().to_vec();
                        tx.execute(&put, &[&table_id(*table), &key, value])?;
                    }
                }
            }
            let mut version: i64 = tx.query_one(&version_now, &[])?.get(0);
            for key in &followed {
                version = tx.query_one(&change, &[key])?.get(0);
            }
            if !followed.is_empty() {
                tx.batch_execute(&notify)?;
            }
            tx.commit()?;
            Ok(Ok(u64::try_from(version).unwrap_or(0)))
        })();
        match outcome {
            Ok(Ok(v)) => {
                self.give_back(client);
                Ok(v)
            }
            Ok(Err(())) => {
                self.give_back(client);
                Err(CommitError::Conflict)
            }
            Err(e) => Err(CommitError::Storage(storage(e))),
        }
    }

    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn changes_since(&self, seen: u64) -> Result<Changes, StorageError> {
        let q = self.sql(
            "select version, key_id from {schema}.changes where version > $1 order by version",
        );
        let seen_i = i64::try_from(seen).unwrap_or(i64::MAX);
        let rows = self.with(|c| c.query(&q, &[&seen_i]))?;
        let mut version = seen;
        let mut keys = Vec::with_capacity(rows.len());
        for r in rows {
            version = version.max(u64::try_from(r.get::<_, i64>(0)).unwrap_or(0));
            keys.push(r.get(1));
        }
        Ok(Changes::Rows { version, keys })
    }

    fn version(&self) -> Result<u64, StorageError> {
        let q = self.sql("select coalesce(max(version), 0) from {schema}.changes");
        let v: i64 = self.with(|c| Ok(c.query_one(&q, &[])?.get(0)))?;
        Ok(u64::try_from(v).unwrap_or(0))
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn wait_for_change(&self, timeout: Duration) -> bool {
        let mut slot = self.listener.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_none_or(Client::is_closed) {
            *slot = None;
            let listening = self.connect_one().ok().and_then(|mut c| {
                c.batch_execute(&format!("listen {}", self.channel()))
                    .ok()
                    .map(|()| c)
            });
            let Some(c) = listening else {
                drop(slot);
                std::thread::sleep(timeout);
                return false;
            };
            *slot = Some(c);
            // Connected anew: changes may have been missed, look now.
            return true;
        }
        let outcome = {
            let client = slot.as_mut().expect("connected above");
            let mut notifications = client.notifications();
            let first = notifications.timeout_iter(timeout).next();
            match first {
                Ok(Some(_)) => {
                    // Drain the rest without waiting: one sync covers them all.
                    let mut rest = notifications.iter();
                    while let Ok(Some(_)) = rest.next() {}
                    Some(true)
                }
                Ok(None) => Some(false),
                Err(_) => None,
            }
        };
        if outcome.is_none() {
            // The listener connection broke: reconnect next time.
            *slot = None;
        }
        outcome.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_comes_off_the_url() {
        assert_eq!(
            split_schema("postgres://u@h:5432/db?schema=acme&sslmode=disable").unwrap(),
            (
                "postgres://u@h:5432/db?sslmode=disable".to_string(),
                "acme".to_string()
            )
        );
        assert_eq!(split_schema("postgres://h/db").unwrap().1, "keyward");
        assert!(split_schema("postgres://h/db?schema=Robert';drop").is_err());
    }
}
