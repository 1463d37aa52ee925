//! A shared backend on PostgreSQL: many processes and hosts, one store.
//!
//! All tables live in one `kv` table of a schema of the store's own; every
//! commit takes a transaction-scoped advisory lock first, so commits from
//! all processes are totally ordered: event sequence numbers and the change
//! feed never show a later commit before an earlier one. Commits record the
//! key ids they touch in `changes` (the change feed other processes follow)
//! and NOTIFY listeners.

mod batch;
mod conn;
mod tls;
mod url;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio_postgres::Client;

#[cfg(feature = "plugins")]
pub(crate) use self::conn::Conn as PostgresConn;
use self::conn::{CallError, Conn, Connector};
pub(crate) use self::url::{describe, is_url};
use super::{
    Backend, Batch, Changes, CommitError, Durability, KvPairs, Op, RowsFrom, Snapshot,
    StorageError, Table, Timeouts, Visit, Wake,
};
use crate::error::OpenError;

/// Migrations, in order; a store records the ones it has applied.
const MIGRATIONS: &[&str] = &[
    "
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
",
    "
    create table {schema}.engines (
        id text primary key,
        seen bigint not null,
        at timestamptz not null
    );
    create table {schema}.feed_floor (
        one int primary key check (one = 1),
        trimmed_to bigint not null
    );
    insert into {schema}.feed_floor values (1, 0);
",
];

/// Where the change feed stands: its newest row, or where it was trimmed
/// to when it is empty.
const VERSION_NOW: &str = "select greatest(coalesce(max(version), 0), (select trimmed_to from {schema}.feed_floor)) from {schema}.changes";

/// The advisory lock key serialising writers of one schema.
fn lock_key(schema: &str) -> i64 {
    let h = blake3::hash(format!("keyward:{schema}").as_bytes());
    i64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

pub(crate) struct PostgresBackend {
    connector: Connector,
    schema: String,
    /// Idle connections; a caller takes one and gives it back.
    pool: Mutex<Vec<Conn>>,
    lock_key: i64,
    /// The connection that LISTENs for other writers' commits.
    listener: Mutex<Option<Conn>>,
    /// Set when a call missed its deadline: the listener's connection may
    /// be as dead as that one's, and is opened anew.
    listener_suspect: AtomicBool,
}

/// How to reach a PostgreSQL store again in a session of one's own (the
/// plugin dispatcher's lease is held on one), and the number its advisory
/// locks derive from.
#[derive(Clone)]
pub(crate) struct PostgresTarget {
    connector: Connector,
    pub lock_key: i64,
}

impl PostgresTarget {
    /// A new session to the store's server.
    #[cfg_attr(not(feature = "plugins"), allow(dead_code))]
    pub(crate) fn connect(&self) -> Result<Conn, StorageError> {
        self.connector.connect()
    }
}

fn table_id(t: Table) -> i16 {
    i16::from(t.tag())
}

/// The connection settings for a store's URL: TLS as it says, timeouts
/// from the options unless it gives its own, and keyward's statements
/// bounded by the server too.
fn connector(url: &str, timeouts: Timeouts) -> Result<(Connector, String), OpenError> {
    let parsed = url::parse(url).map_err(OpenError::InvalidOptions)?;
    let given = |name: &str| parsed.given.iter().any(|g| g == name);
    let mut config = parsed.config;
    config.ssl_mode(parsed.tls.mode.wire());
    if !given("connect_timeout") {
        config.connect_timeout(timeouts.connect);
    }
    let connect_timeout = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(timeouts.connect);
    // The server cancels a statement past the statement timeout (a slow
    // query, a long lock wait) with an error; the client gives up a second
    // later on a server that says nothing at all.
    let deadline = timeouts.statement + Duration::from_secs(1);
    if !given("keepalives_idle") {
        config.keepalives_idle(Duration::from_secs(30));
    }
    if !given("keepalives_interval") {
        config.keepalives_interval(Duration::from_secs(10));
    }
    if !given("keepalives_retries") {
        config.keepalives_retries(3);
    }
    if !given("tcp_user_timeout") {
        config.tcp_user_timeout(deadline);
    }
    let statement_ms = timeouts.statement.as_millis().max(1);
    // A transaction whose client went silent releases the writers' lock.
    let idle_ms = 2 * deadline.as_millis();
    let options = format!(
        "-c statement_timeout={statement_ms} -c idle_in_transaction_session_timeout={idle_ms} {}",
        config.get_options().unwrap_or("")
    );
    config.options(options.trim_end());
    if config.get_application_name().is_none() {
        config.application_name("keyward");
    }
    let tls = tls::connector(&parsed.tls).map_err(OpenError::InvalidOptions)?;
    Ok((
        Connector {
            config,
            tls,
            deadline,
            connect_timeout,
        },
        parsed.schema,
    ))
}

impl PostgresBackend {
    /// Connects (with a connect timeout) and creates or migrates the schema.
    pub(crate) fn connect(
        url: &str,
        timeouts: Timeouts,
    ) -> Result<(Self, PostgresTarget), OpenError> {
        let (connector, schema) = connector(url, timeouts)?;
        let target = PostgresTarget {
            connector,
            lock_key: lock_key(&schema),
        };
        let backend = PostgresBackend {
            lock_key: target.lock_key,
            connector: target.connector.clone(),
            schema,
            pool: Mutex::new(Vec::new()),
            listener: Mutex::new(None),
            listener_suspect: AtomicBool::new(false),
        };
        let mut conn = backend.connector.connect().map_err(OpenError::Storage)?;
        backend.migrate(&mut conn).map_err(OpenError::Storage)?;
        backend.give_back(conn);
        Ok((backend, target))
    }

    fn take(&self) -> Result<Conn, StorageError> {
        let idle = self
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match idle {
            Some(c) if c.is_usable() => Ok(c),
            _ => self.connector.connect(),
        }
    }

    fn give_back(&self, conn: Conn) {
        if conn.is_usable() {
            let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
            if pool.len() < 8 {
                pool.push(conn);
            }
        }
    }

    /// Runs `f` on a pooled connection within the call deadline; a
    /// connection that failed is dropped.
    fn with<T>(
        &self,
        f: impl AsyncFnOnce(&mut Client) -> Result<T, CallError>,
    ) -> Result<T, StorageError> {
        let mut conn = self.take()?;
        let result = conn.call(f);
        match &result {
            Ok(_) => self.give_back(conn),
            Err(CallError::TimedOut(_)) => self.listener_suspect.store(true, Ordering::Relaxed),
            Err(CallError::Postgres(_)) => {}
        }
        result.map_err(StorageError::from)
    }

    fn sql(&self, text: &str) -> String {
        text.replace("{schema}", &self.schema)
    }

    /// Versioned migrations, applied once, safe when several processes open at once.
    fn migrate(&self, conn: &mut Conn) -> Result<(), StorageError> {
        let prepare = self.sql(
            "create schema if not exists {schema};
             create table if not exists {schema}.migrations (version int primary key, applied_at timestamptz not null default now());",
        );
        let applied_q = self.sql("select coalesce(max(version), 0) from {schema}.migrations");
        let record = self.sql("insert into {schema}.migrations (version) values ($1)");
        let steps: Vec<String> = MIGRATIONS.iter().map(|m| self.sql(m)).collect();
        conn.call(async |client| {
            let tx = client.transaction().await?;
            tx.execute("select pg_advisory_xact_lock($1)", &[&self.lock_key])
                .await?;
            tx.batch_execute(&prepare).await?;
            let applied: i32 = tx.query_one(&applied_q, &[]).await?.get(0);
            for (i, step) in steps.iter().enumerate() {
                let version = i32::try_from(i + 1).expect("few migrations");
                if version > applied {
                    tx.batch_execute(step).await?;
                    tx.execute(&record, &[&version]).await?;
                }
            }
            tx.commit().await?;
            Ok(())
        })
        .map_err(StorageError::from)
    }

    /// The channel NOTIFY uses for this schema.
    pub(crate) fn channel(&self) -> String {
        format!("keyward_{}", self.schema)
    }

    /// A connection that LISTENs on the channel, or none when the server
    /// cannot be reached.
    fn listen(&self) -> Option<Conn> {
        let listen = format!("listen {}", self.channel());
        let mut conn = self.connector.connect().ok()?;
        conn.call(async |c| Ok(c.batch_execute(&listen).await?))
            .ok()
            .map(|()| conn)
    }
}

impl Backend for PostgresBackend {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let q = self.sql("select v from {schema}.kv where tbl = $1 and k = $2");
        self.with(async |c| {
            Ok(c.query_opt(&q, &[&table_id(table), &key])
                .await?
                .map(|r| r.get(0)))
        })
    }

    fn scan(&self, table: Table, prefix: &[u8]) -> Result<KvPairs, StorageError> {
        let q = self.sql(
            "select k, v from {schema}.kv where tbl = $1 and substring(k from 1 for $3) = $2 order by k",
        );
        let len = i32::try_from(prefix.len()).unwrap_or(i32::MAX);
        self.with(async |c| {
            Ok(c.query(&q, &[&table_id(table), &prefix, &len])
                .await?
                .into_iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        })
    }

    fn visit_from(&self, rows: RowsFrom<'_>, each: Visit<'_>) -> Result<usize, StorageError> {
        let q =
            self.sql("select k, v from {schema}.kv where tbl = $1 and k >= $2 order by k limit $3");
        let limit = i64::try_from(rows.limit).unwrap_or(i64::MAX);
        let found: KvPairs = self.with(async |c| {
            Ok(c.query(&q, &[&table_id(rows.table), &rows.start, &limit])
                .await?
                .into_iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        })?;
        Ok(super::visit_rows(&found, each))
    }

    fn commit(&self, batch: Batch, _durability: Durability) -> Result<u64, CommitError> {
        // A PostgreSQL commit is durable (synchronous_commit): Lazy costs the same.
        let version_now = self.sql(VERSION_NOW);
        let notify = format!("notify {}", self.channel());
        let followed: Vec<&[u8]> = batch.followed_rows().collect();
        let runs = batch::runs(&batch.ops);
        let lock_key = self.lock_key;
        let sql = |text: &str| self.sql(text);
        let outcome = self.with(async |client| {
            let tx = client.transaction().await?;
            tx.execute("select pg_advisory_xact_lock($1)", &[&lock_key])
                .await?;
            if !batch::apply(&tx, sql, &runs).await? {
                tx.rollback().await?;
                return Ok(None);
            }
            let version: i64 = match batch::record_changes(&tx, sql, &followed).await? {
                Some(v) => v,
                None => tx.query_one(&version_now, &[]).await?.get(0),
            };
            if !followed.is_empty() {
                tx.batch_execute(&notify).await?;
            }
            tx.commit().await?;
            Ok(Some(u64::try_from(version).unwrap_or(0)))
        });
        match outcome {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(CommitError::Conflict),
            Err(e) => Err(CommitError::Storage(e)),
        }
    }

    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn changes_since(&self, seen: u64) -> Result<Changes, StorageError> {
        let q = self.sql(
            "select version, key_id from {schema}.changes where version > $1 order by version",
        );
        let floor = self.sql("select trimmed_to from {schema}.feed_floor");
        let seen_i = i64::try_from(seen).unwrap_or(i64::MAX);
        let (trimmed_to, rows) = self.with(async |c| {
            let trimmed_to: i64 = c.query_one(&floor, &[]).await?.get(0);
            Ok((trimmed_to, c.query(&q, &[&seen_i]).await?))
        })?;
        if seen_i < trimmed_to {
            // Changes this engine never read were trimmed: it was gone
            // longer than the expiry. Everything is read again.
            return Ok(Changes::Reload {
                version: self.version()?,
            });
        }
        let mut version = seen;
        let mut keys = Vec::with_capacity(rows.len());
        for r in rows {
            version = version.max(u64::try_from(r.get::<_, i64>(0)).unwrap_or(0));
            keys.push(r.get(1));
        }
        Ok(Changes::Rows { version, keys })
    }

    fn version(&self) -> Result<u64, StorageError> {
        let q = self.sql(VERSION_NOW);
        let v: i64 = self.with(async |c| Ok(c.query_one(&q, &[]).await?.get(0)))?;
        Ok(u64::try_from(v).unwrap_or(0))
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn report_seen(&self, engine: &str, seen: u64, expiry: Duration) -> Result<u64, StorageError> {
        let heartbeat = self.sql(
            "insert into {schema}.engines (id, seen, at) values ($1, $2, now())
             on conflict (id) do update set seen = excluded.seen, at = excluded.at",
        );
        let forget =
            self.sql("delete from {schema}.engines where at < now() - make_interval(secs => $1)");
        let floor = self.sql("select min(seen) from {schema}.engines");
        let trim = self.sql("delete from {schema}.changes where version <= $1");
        let raise =
            self.sql("update {schema}.feed_floor set trimmed_to = greatest(trimmed_to, $1)");
        let seen = i64::try_from(seen).unwrap_or(i64::MAX);
        let expiry_s = expiry.as_secs_f64();
        self.with(async |c| {
            let tx = c.transaction().await?;
            tx.execute(&heartbeat, &[&engine, &seen]).await?;
            tx.execute(&forget, &[&expiry_s]).await?;
            // Every live engine has read up to here (this one included).
            let floor: i64 = tx
                .query_one(&floor, &[])
                .await?
                .get::<_, Option<i64>>(0)
                .unwrap_or(seen);
            let trimmed = tx.execute(&trim, &[&floor]).await?;
            tx.execute(&raise, &[&floor]).await?;
            tx.commit().await?;
            Ok(trimmed)
        })
    }

    fn snapshot(&self) -> Result<Box<dyn Snapshot + '_>, StorageError> {
        let mut conn = self.take()?;
        conn.call(async |c| {
            Ok(
                c.batch_execute("start transaction isolation level repeatable read, read only")
                    .await?,
            )
        })?;
        Ok(Box::new(Transaction {
            conn,
            page: self
                .sql("select k, v from {schema}.kv where tbl = $1 and k >= $2 order by k limit $3"),
        }))
    }

    fn resume_sequences(&self) -> Result<(), StorageError> {
        let last = self.sql("select k from {schema}.kv where tbl = $1 order by k desc limit 1");
        let resume = self.sql(
            "select setval('{schema}.event_seq', $1) where $1 > (select case when is_called then last_value else 0 end from {schema}.event_seq)",
        );
        let lock_key = self.lock_key;
        let events = table_id(Table::Events);
        self.with(async |c| {
            let tx = c.transaction().await?;
            tx.execute("select pg_advisory_xact_lock($1)", &[&lock_key])
                .await?;
            let newest: Option<Vec<u8>> = tx.query_opt(&last, &[&events]).await?.map(|r| r.get(0));
            let seq = newest.map_or(0, |k| super::copy::seq_of(&k));
            let seq = i64::try_from(seq).unwrap_or(i64::MAX);
            if seq > 0 {
                tx.query_opt(&resume, &[&seq]).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn wait_for_change(&self, timeout: Duration) -> Wake {
        let mut slot = self.listener.lock().unwrap_or_else(PoisonError::into_inner);
        if self.listener_suspect.swap(false, Ordering::Relaxed)
            || slot.as_ref().is_some_and(|c| !c.is_usable())
        {
            *slot = None;
        }
        let Some(conn) = slot.as_mut() else {
            let Some(conn) = self.listen() else {
                drop(slot);
                std::thread::sleep(timeout);
                return Wake::Quiet;
            };
            *slot = Some(conn);
            // Connected anew: changes may have been missed, look now.
            return Wake::Changed;
        };
        let changed = conn.wait_for_notification(timeout);
        if changed.is_none() {
            // The listener connection broke: reconnect next time.
            *slot = None;
        }
        if changed.unwrap_or(false) {
            Wake::Changed
        } else {
            Wake::Quiet
        }
    }
}

/// A snapshot of a PostgreSQL store: one repeatable-read transaction,
/// read page by page; nothing is written meanwhile that it could see, so
/// it has no journal. Dropped unfinished, its connection closes and the
/// server ends the transaction.
struct Transaction {
    conn: Conn,
    page: String,
}

impl Snapshot for Transaction {
    fn page(&mut self, table: Table, start: &[u8]) -> Result<KvPairs, StorageError> {
        let limit = i64::try_from(super::copy::PAGE_ROWS).unwrap_or(i64::MAX);
        let q = &self.page;
        Ok(self.conn.call(async |c| {
            Ok(c.query(q, &[&table_id(table), &start, &limit])
                .await?
                .into_iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        })?)
    }

    fn finish(mut self: Box<Self>) -> Result<Vec<Op>, StorageError> {
        self.conn
            .call(async |c| Ok(c.batch_execute("commit").await?))?;
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader the trimming forgot (silent past the expiry) gets `Reload`
    /// when it asks for changes it never read.
    #[test]
    fn a_reader_behind_the_trimmed_feed_is_told_to_reload() {
        let Ok(base) = std::env::var("KEYWARD_TEST_PG") else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "KEYWARD_TEST_PG is not set; under CI=true that is a failure"
            );
            return;
        };
        let schema = format!("feed_{}", std::process::id());
        let timeouts = Timeouts {
            connect: Duration::from_secs(5),
            statement: Duration::from_secs(5),
        };
        let (backend, _) =
            PostgresBackend::connect(&format!("{base}&schema={schema}"), timeouts).unwrap();
        let start = backend.version().unwrap();
        for i in 0..5u8 {
            let mut batch = Batch::default();
            batch.put(Table::FOLLOWED, vec![b'k', i], vec![i]);
            backend.commit(batch, Durability::Durable).unwrap();
        }
        let head = backend.version().unwrap();
        // A reader at `start` reports, then falls silent; another has read all.
        backend
            .report_seen("behind", start, Duration::from_hours(1))
            .unwrap();
        assert_eq!(
            backend
                .report_seen("ahead", head, Duration::from_hours(1))
                .unwrap(),
            0
        );
        assert!(
            matches!(backend.changes_since(start).unwrap(), Changes::Rows { ref keys, .. } if keys.len() == 5)
        );
        // With an expiry of zero the silent reader is forgotten: trimmed.
        assert_eq!(
            backend.report_seen("ahead", head, Duration::ZERO).unwrap(),
            5
        );
        assert_eq!(
            backend.changes_since(start).unwrap(),
            Changes::Reload { version: head }
        );
        assert_eq!(
            backend.version().unwrap(),
            head,
            "the version survives an empty feed"
        );
        assert!(
            matches!(backend.changes_since(head).unwrap(), Changes::Rows { ref keys, .. } if keys.is_empty())
        );
    }
}
