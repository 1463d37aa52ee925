//! A sled store shared by the processes of one host.
//!
//! The first process to open a store owns its sled files and serves them
//! on a Unix socket ([`server`]); every later opener attaches to it
//! ([`client`]) and runs the same engine over it: its own verify index,
//! fed by the owner's change feed ([`owner`]) exactly as engines on
//! PostgreSQL are fed by theirs, its writes executed by the owner. When
//! the owner goes (exit, crash, SIGKILL) the kernel releases the files'
//! lock and closes its connections; an attached process notices, takes the
//! lock, serves the socket, and the others attach to it.

mod access;
mod client;
mod owner;
mod proto;
mod server;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use self::access::Access;
pub(crate) use self::access::{group_id, user_name};
use self::client::{Attach, CallError, Client, Session};
use self::owner::{Owner, OwnerFiles};
use self::proto::{Failure, Reply, Request};
use self::server::Server;
use super::sled::Journaled;
use super::{
    Backend, Batch, Changes, CommitError, Durability, KvPairs, Op, RowsFrom, Snapshot,
    StorageError, Table, Visit, Wake,
};
use crate::error::OpenError;
use crate::locks::{lock, read, write};

/// What the owner commits of a batch an attached process sent, given the
/// user at the other end of the socket and the store to read: the batch
/// to commit, or why it is refused (the store layer knows what a record
/// is; see `store::vet`).
#[derive(Clone)]
pub(crate) struct Vet(pub Arc<VetFn>);

pub(crate) type VetFn = dyn Fn(Batch, &str, &dyn Backend) -> Result<Batch, String> + Send + Sync;

impl std::fmt::Debug for Vet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vet")
    }
}

/// How a process opens a sled store shared on its host.
#[derive(Debug, Clone)]
pub(crate) struct HostRules {
    /// Refuse to attach: this process must own the store.
    pub require_owner: bool,
    /// A group whose members may attach (the owner's choice).
    pub group: Option<u32>,
    /// How long to wait for an owner to serve (on open, and for another
    /// process to take over when the owner goes).
    pub takeover: Duration,
    /// How long an attached call waits for the owner's answer.
    pub reply: Duration,
    /// What the owner commits for an attached process.
    pub vet: Vet,
}

/// Where this process stands with a store ([`HostBackend::status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostStatus {
    pub owner: bool,
    pub owner_pid: u32,
    pub socket: PathBuf,
}

/// Who to tell when another process appended to the outbox.
#[derive(Default)]
pub(crate) struct Hook(Mutex<Option<Box<dyn Fn() + Send + Sync>>>);

impl Hook {
    fn events_appended(&self) {
        if let Some(f) = lock(&self.0).as_ref() {
            f();
        }
    }
}

struct Serving {
    owner: Arc<Owner>,
    server: Server,
}

#[derive(Clone)]
enum Role {
    Owner(Arc<Serving>),
    Attached(Arc<Client>),
    Closed,
}

pub(crate) struct HostBackend {
    dir: PathBuf,
    socket: PathBuf,
    access: Access,
    rules: HostRules,
    role: RwLock<Role>,
    /// Bumped whenever the role is re-established, so that of several
    /// threads that saw the owner go, one recovers.
    generation: AtomicU64,
    recovering: Mutex<()>,
    hook: Arc<Hook>,
    /// The feed version this process's engine has read up to (what the
    /// next wait waits past).
    heard: AtomicU64,
    /// Whether another process has used the store with this one: this
    /// process attached, or another attached to it. Never reset: once set,
    /// budgets are shared (see `Backend::budgets_shared`).
    others: Arc<AtomicBool>,
}

/// Calls made again after the owner changed, at most.
const ATTEMPTS: usize = 3;

fn failure(f: Failure) -> StorageError {
    match f {
        Failure::Storage(m) | Failure::Unflushed(m) => StorageError::new(m),
        Failure::Conflict => StorageError::new("conflict"),
        Failure::Refused(m) => {
            StorageError::new(format!("the owning process refused the write: {m}"))
        }
    }
}

fn closed() -> StorageError {
    StorageError::new("the store is closed")
}

impl HostBackend {
    /// Opens the store in `dir`: attaches to its owner, or becomes it.
    pub(crate) fn open(dir: &Path, rules: HostRules) -> Result<HostBackend, OpenError> {
        use std::os::unix::fs::MetadataExt;
        let access_for_mode = Access {
            uid: access::my_uid(),
            group: rules.group,
        };
        create_dir(dir, access_for_mode)?;
        let canonical = std::fs::canonicalize(dir).map_err(|e| {
            OpenError::Storage(StorageError::with_source(
                format!("cannot resolve {}", dir.display()),
                e,
            ))
        })?;
        let uid = std::fs::metadata(&canonical)
            .map_err(|e| {
                OpenError::Storage(StorageError::with_source(
                    format!("cannot read {}", canonical.display()),
                    e,
                ))
            })?
            .uid();
        let access = Access {
            uid,
            group: rules.group,
        };
        let socket = access::socket_path(&canonical);
        let hook = Arc::new(Hook::default());
        let backend = HostBackend {
            dir: dir.to_path_buf(),
            socket,
            access,
            rules,
            role: RwLock::new(Role::Closed),
            generation: AtomicU64::new(0),
            recovering: Mutex::new(()),
            hook,
            heard: AtomicU64::new(0),
            others: Arc::new(AtomicBool::new(false)),
        };
        let role = backend.establish(backend.rules.require_owner, false)?;
        *write(&backend.role) = role;
        Ok(backend)
    }

    /// Attaches to the owner, or becomes the owner when there is none;
    /// waits up to the takeover bound for one that is starting.
    fn establish(&self, require_owner: bool, recovering: bool) -> Result<Role, OpenError> {
        let locked = || OpenError::StoreLocked {
            path: self.dir.clone(),
        };
        let deadline = Instant::now() + self.rules.takeover;
        loop {
            match Client::attach(&self.socket, self.access.uid, self.rules.reply) {
                Ok(client) if require_owner => {
                    drop(client);
                    return Err(locked());
                }
                Ok(client) => {
                    self.heard.store(0, Ordering::Release);
                    self.others.store(true, Ordering::Release);
                    return Ok(Role::Attached(Arc::new(client)));
                }
                Err(Attach::Refused(_)) => return Err(locked()),
                Err(Attach::Failed(e)) if !recovering => {
                    return Err(OpenError::Storage(StorageError::with_source(
                        format!("cannot attach to the owner at {}", self.socket.display()),
                        e,
                    )));
                }
                Err(Attach::Failed(_) | Attach::NoOwner) => {}
            }
            match Owner::open(&self.dir, self.access.modes().0) {
                Ok(owner) => {
                    let owner = Arc::new(owner);
                    let server = Server::start(
                        Arc::clone(&owner),
                        &self.socket,
                        self.access,
                        self.rules.vet.clone(),
                        Arc::clone(&self.hook),
                        Arc::clone(&self.others),
                    )
                    .map_err(|e| {
                        OpenError::Storage(StorageError::with_source(
                            format!("cannot serve the store on {}", self.socket.display()),
                            e,
                        ))
                    })?;
                    return Ok(Role::Owner(Arc::new(Serving { owner, server })));
                }
                // Owned by a process not serving yet (starting, or
                // stopping); or, for a process that may attach but not own
                // (a group member), not ours to open: wait for an owner.
                Err(OpenError::StoreLocked { .. }) => {}
                Err(_) if recovering => {}
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Err(locked());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn current(&self) -> (Role, u64) {
        let generation = self.generation.load(Ordering::Acquire);
        (read(&self.role).clone(), generation)
    }

    /// The owner this process spoke to is gone (or not answering): attach
    /// to its successor or become it. Of the threads that saw it go, the
    /// first does this; the others find it done.
    fn recover(&self, generation: u64, cause: &CallError) -> Result<(), StorageError> {
        let _one = lock(&self.recovering);
        if self.generation.load(Ordering::Acquire) != generation {
            return Ok(());
        }
        if matches!(*read(&self.role), Role::Closed) {
            return Err(closed());
        }
        let role = self.establish(false, true).map_err(|e| {
            StorageError::new(format!(
                "the process that owned {} went away ({}) and none took over: {e}",
                self.dir.display(),
                cause.io()
            ))
        })?;
        *write(&self.role) = role;
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// A call that is safe to send again: run locally by the owner, or
    /// asked of it, following the store to a new owner if this one goes.
    fn call<T>(
        &self,
        local: impl Fn(&Owner) -> Result<T, StorageError>,
        request: impl Fn() -> Request,
        answer: impl Fn(Reply) -> Option<T>,
    ) -> Result<T, StorageError> {
        let mut last = None;
        for _ in 0..ATTEMPTS {
            let (role, generation) = self.current();
            match role {
                Role::Owner(s) => return local(&s.owner),
                Role::Closed => return Err(closed()),
                Role::Attached(c) => match c.call(&request()) {
                    Ok(Reply::Failed(f)) => return Err(failure(f)),
                    Ok(reply) => {
                        let name = reply.name();
                        return answer(reply).ok_or_else(|| {
                            StorageError::new(format!(
                                "talking to the owning process: it answered out of turn ({name})"
                            ))
                        });
                    }
                    Err(e) => {
                        self.recover(generation, &e)?;
                        last = Some(e);
                    }
                },
            }
        }
        Err(StorageError::new(format!(
            "the owning process of {} keeps going away: {}",
            self.dir.display(),
            last.as_ref()
                .map_or_else(String::new, |e| e.io().to_string())
        )))
    }

    /// Whether this process owns the store (and so delivers to its plugins).
    pub(crate) fn is_owner(&self) -> bool {
        matches!(*read(&self.role), Role::Owner(_))
    }

    pub(crate) fn status(&self) -> Option<HostStatus> {
        let (owner, owner_pid) = match &*read(&self.role) {
            Role::Owner(_) => (true, std::process::id()),
            Role::Attached(c) => (false, c.owner_pid),
            Role::Closed => return None,
        };
        Some(HostStatus {
            owner,
            owner_pid,
            socket: self.socket.clone(),
        })
    }

    /// Called when another process appends to the outbox.
    pub(crate) fn on_events(&self, f: Box<dyn Fn() + Send + Sync>) {
        *lock(&self.hook.0) = Some(f);
    }

    /// Stops serving (the attached processes take over) or detaches, and
    /// lets the files go.
    pub(crate) fn close(&self) {
        let role = std::mem::replace(&mut *write(&self.role), Role::Closed);
        if let Role::Owner(s) = &role {
            s.server.shutdown();
        }
        drop(role);
    }
}

impl Drop for HostBackend {
    fn drop(&mut self) {
        self.close();
    }
}

/// Creates the store directory with the mode `access` gives it (0700, or
/// 0750 for a group, which then owns it).
fn create_dir(dir: &Path, access: Access) -> Result<(), OpenError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let fail = |e| {
        OpenError::Storage(StorageError::with_source(
            format!("cannot create {}", dir.display()),
            e,
        ))
    };
    let (mode, _) = access.modes();
    let existed = dir.is_dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(fail)?;
    if let Some(gid) = access.group {
        std::os::unix::fs::chown(dir, None, Some(gid)).map_err(fail)?;
        if existed {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(fail)?;
        }
    }
    Ok(())
}

impl Backend for HostBackend {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.call(
            |o| o.settled()?.get(table, key),
            || Request::Get {
                table,
                key: key.to_vec(),
            },
            |r| match r {
                Reply::Value(v) => Some(v),
                _ => None,
            },
        )
    }

    fn scan(&self, table: Table, prefix: &[u8]) -> Result<KvPairs, StorageError> {
        if let (Role::Owner(s), _) = self.current() {
            return s.owner.settled()?.scan(table, prefix);
        }
        // Page by page: no answer is larger than a frame.
        let mut out = Vec::new();
        let mut start = prefix.to_vec();
        loop {
            let page = self.range_from(table, &start, proto::PAGE_ROWS)?;
            let full = page.len() == proto::PAGE_ROWS;
            let mut past = false;
            for (k, v) in page {
                if !k.starts_with(prefix) {
                    past = true;
                    break;
                }
                start.clone_from(&k);
                out.push((k, v));
            }
            if past || !full {
                return Ok(out);
            }
            start.push(0);
        }
    }

    fn visit_from(&self, rows: RowsFrom<'_>, each: Visit<'_>) -> Result<usize, StorageError> {
        let RowsFrom {
            table,
            start,
            limit,
        } = rows;
        let mut seen = 0;
        let mut next = start.to_vec();
        while seen < limit {
            // The owner reads its own files without a copy per row.
            if let (Role::Owner(s), _) = self.current() {
                return Ok(seen
                    + s.owner.settled()?.visit_from(
                        RowsFrom {
                            start: &next,
                            limit: limit - seen,
                            ..rows
                        },
                        each,
                    )?);
            }
            // Attached: a page at a time, each within a frame whatever
            // the rows' sizes.
            let want = (limit - seen).min(proto::PAGE_ROWS);
            let (rows, more) = self.call(
                |o| Ok((o.settled()?.range_from(table, &next, want)?, false)),
                || Request::RangeFrom {
                    table,
                    start: next.clone(),
                    limit: u32::try_from(want).unwrap_or(u32::MAX),
                },
                |r| match r {
                    Reply::Rows { rows, more } => Some((
                        rows.into_iter()
                            .map(|r| (r.key, r.value))
                            .collect::<KvPairs>(),
                        more,
                    )),
                    _ => None,
                },
            )?;
            seen += super::visit_rows(&rows, each);
            match rows.last() {
                Some((last, _)) if more || rows.len() == want => {
                    next.clone_from(last);
                    next.push(0);
                }
                _ => break,
            }
        }
        Ok(seen)
    }

    fn commit(&self, batch: Batch, durability: Durability) -> Result<u64, CommitError> {
        for _ in 0..ATTEMPTS {
            let (role, generation) = self.current();
            let client = match role {
                Role::Owner(s) => return s.owner.commit(batch, durability),
                Role::Closed => return Err(CommitError::Storage(closed())),
                Role::Attached(c) => c,
            };
            let request = Request::Commit {
                batch: batch.clone(),
                durability,
            };
            match client.call(&request) {
                // Not `heard`: that is what this process's index has read,
                // and the feed may have moved past it by others' changes.
                Ok(Reply::Committed { version }) => return Ok(version),
                Ok(Reply::Failed(Failure::Conflict)) => return Err(CommitError::Conflict),
                Ok(Reply::Failed(Failure::Unflushed(m))) => {
                    return Err(CommitError::Unflushed(StorageError::new(m)));
                }
                Ok(Reply::Failed(f @ Failure::Refused(_))) => {
                    return Err(CommitError::Storage(failure(f)));
                }
                Ok(Reply::Failed(Failure::Storage(m))) => {
                    return Err(CommitError::Storage(StorageError::new(m)));
                }
                Ok(other) => {
                    return Err(CommitError::Storage(StorageError::with_source(
                        "talking to the owning process",
                        client::unexpected(&other),
                    )));
                }
                Err(e @ CallError::NotSent(_)) => {
                    self.recover(generation, &e).map_err(CommitError::Storage)?;
                }
                Err(e @ CallError::Lost(_)) => {
                    let _ = self.recover(generation, &e);
                    // Not retried: it may have been applied. If it was,
                    // the change feed brings it to the index.
                    return Err(CommitError::Storage(StorageError::new(format!(
                        "the owning process went away before confirming the change ({}); it may have been applied",
                        e.io()
                    ))));
                }
            }
        }
        Err(CommitError::Storage(StorageError::new(
            "the owning process kept going away",
        )))
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.call(
            Owner::flush,
            || Request::Flush,
            |r| matches!(r, Reply::Done).then_some(()),
        )
    }

    fn changes_since(&self, seen: u64) -> Result<Changes, StorageError> {
        let changes = self.call(
            |o| o.changes_since(seen),
            || Request::ChangesSince { seen },
            |r| match r {
                Reply::Changes(c) => Some(c),
                _ => None,
            },
        )?;
        let (Changes::Rows { version, .. } | Changes::Reload { version }) = &changes;
        self.heard.fetch_max(*version, Ordering::AcqRel);
        Ok(changes)
    }

    fn version(&self) -> Result<u64, StorageError> {
        self.call(
            |o| Ok(o.version()),
            || Request::Version,
            |r| match r {
                Reply::Version(v) => Some(v),
                _ => None,
            },
        )
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn budgets_shared(&self) -> bool {
        self.others.load(Ordering::Acquire)
    }

    fn report_seen(
        &self,
        _engine: &str,
        _seen: u64,
        _expiry: Duration,
    ) -> Result<u64, StorageError> {
        // The owner keeps the feed's last rows; a reader further behind reloads.
        match self.current().0 {
            Role::Owner(s) => s.owner.trim(),
            _ => Ok(0),
        }
    }

    fn wait_for_change(&self, timeout: Duration) -> Wake {
        let after = self.heard.load(Ordering::Acquire);
        let now = match self.current().0 {
            Role::Owner(s) => s.owner.wait(after, timeout),
            Role::Attached(c) => match c.wait(after, timeout) {
                Ok(v) => v,
                // Until the index has caught up with whoever owns the store
                // next it may miss a revocation: the engine says so at once,
                // then its next read finds the new owner.
                Err(_) => return Wake::Lost,
            },
            Role::Closed => {
                std::thread::sleep(timeout);
                return Wake::Quiet;
            }
        };
        self.heard.fetch_max(now, Ordering::AcqRel);
        if now > after {
            Wake::Changed
        } else {
            Wake::Quiet
        }
    }

    fn host(&self) -> Option<&HostBackend> {
        Some(self)
    }

    fn snapshot(&self) -> Result<Box<dyn Snapshot + '_>, StorageError> {
        match self.current().0 {
            Role::Owner(s) => Ok(Box::new(Journaled::begin(OwnerFiles(Arc::clone(
                &s.owner,
            )))?)),
            Role::Attached(c) => Ok(Box::new(Remote::begin(&c)?)),
            Role::Closed => Err(closed()),
        }
    }

    fn resume_sequences(&self) -> Result<(), StorageError> {
        match self.current().0 {
            Role::Owner(s) => s.owner.files().resume_sequences(),
            _ => Err(StorageError::new(
                "only the process that owns a store can copy into it",
            )),
        }
    }
}

/// A snapshot the owner keeps for this attached process, on a connection
/// of its own: it ends when the connection closes.
struct Remote {
    session: Session,
}

/// The owner went away in the middle of a snapshot: it is gone with it.
fn snapshot_lost(e: &CallError) -> StorageError {
    StorageError::new(format!(
        "the owning process went away during the copy ({}); copy again",
        e.io()
    ))
}

impl Remote {
    fn begin(client: &Client) -> Result<Remote, StorageError> {
        let session = client.session().map_err(|e| snapshot_lost(&e))?;
        let remote = Remote { session };
        match remote.call(&Request::SnapshotBegin)? {
            Reply::Done => Ok(remote),
            other => Err(out_of_turn(&other)),
        }
    }

    fn call(&self, request: &Request) -> Result<Reply, StorageError> {
        match self.session.call(request) {
            Ok(Reply::Failed(f)) => Err(failure(f)),
            Ok(reply) => Ok(reply),
            Err(e) => Err(snapshot_lost(&e)),
        }
    }
}

fn out_of_turn(reply: &Reply) -> StorageError {
    StorageError::with_source("talking to the owning process", client::unexpected(reply))
}

impl Snapshot for Remote {
    fn page(&mut self, table: Table, start: &[u8]) -> Result<KvPairs, StorageError> {
        let request = Request::RangeFrom {
            table,
            start: start.to_vec(),
            limit: u32::try_from(proto::PAGE_ROWS).unwrap_or(u32::MAX),
        };
        match self.call(&request)? {
            Reply::Rows { rows, .. } => Ok(rows.into_iter().map(|r| (r.key, r.value)).collect()),
            other => Err(out_of_turn(&other)),
        }
    }

    fn finish(self: Box<Self>) -> Result<Vec<Op>, StorageError> {
        let mut journal = Vec::new();
        let mut request = Request::SnapshotEnd;
        loop {
            match self.call(&request)? {
                Reply::Journal { ops, more } => {
                    journal.extend(ops);
                    if !more {
                        return Ok(journal);
                    }
                }
                other => return Err(out_of_turn(&other)),
            }
            request = Request::JournalMore;
        }
    }
}
