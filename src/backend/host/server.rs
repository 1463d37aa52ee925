//! The owner serving its store: a listening Unix socket, a thread per
//! attached connection, each answering one request at a time.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::access::{self, Access};
use super::owner::{Owner, OwnerFiles};
use super::proto::{self, Failure, Reply, Request, Row};
use super::{Hook, Vet};
use crate::backend::copy::op_bytes;
use crate::backend::sled::Journaled;
use crate::backend::{Backend, CommitError, Op, Snapshot, Table};
use crate::fork::ParentOnly;
use crate::locks::lock;

/// Connections served at once; more are closed as they come.
const MAX_CONNECTIONS: usize = 1024;

/// Connections served at once for one user: no user can take them all.
const MAX_PER_USER: usize = MAX_CONNECTIONS / 4;

/// How long a new connection has to greet the owner.
const HELLO_DEADLINE: Duration = Duration::from_secs(2);

/// The longest a `Wait` is held before it is answered anyway.
const MAX_WAIT: Duration = Duration::from_secs(30);

pub(super) struct Server {
    owner: Arc<Owner>,
    socket: PathBuf,
    listener_fd: i32,
    stop: Arc<AtomicBool>,
    accept: Mutex<Option<JoinHandle<()>>>,
    conns: Arc<Mutex<Conns>>,
}

#[derive(Default)]
struct Conns {
    next: u64,
    open: HashMap<u64, ParentOnly<UnixStream>>,
    /// Connections open per user.
    per_user: HashMap<u32, usize>,
    threads: Vec<JoinHandle<()>>,
}

/// What a connection thread needs.
struct Ctx {
    owner: Arc<Owner>,
    access: Access,
    vet: Vet,
    hook: Arc<Hook>,
    conns: Arc<Mutex<Conns>>,
    stop: Arc<AtomicBool>,
    /// Set when a process connects (see `HostBackend::budgets_shared`).
    others: Arc<AtomicBool>,
}

impl Server {
    /// Binds `socket` (replacing a dead owner's: the caller holds the
    /// store's lock) and serves `owner` to the peers `access` admits.
    pub(super) fn start(
        owner: Arc<Owner>,
        socket: &Path,
        access: Access,
        vet: Vet,
        hook: Arc<Hook>,
        others: Arc<AtomicBool>,
    ) -> io::Result<Server> {
        use std::os::unix::fs::PermissionsExt;
        access::prepare_socket_dir(socket)?;
        match std::fs::remove_file(socket) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // Neither the socket nor its connections go to a forked child: one
        // that outlives this process must not keep serving (or hiding) it.
        let listener = ParentOnly::new(UnixListener::bind(socket)?);
        let (_, socket_mode) = access.modes();
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(socket_mode))?;
        if let Some(gid) = access.group {
            std::os::unix::fs::lchown(socket, None, Some(gid))?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Conns::default()));
        let ctx = Arc::new(Ctx {
            owner: Arc::clone(&owner),
            access,
            vet,
            hook,
            conns: Arc::clone(&conns),
            stop: Arc::clone(&stop),
            others,
        });
        let listener_fd = listener.as_raw_fd();
        let accept = std::thread::Builder::new()
            .name("keyward-owner".into())
            .spawn(move || accept_loop(&listener, &ctx))?;
        Ok(Server {
            owner,
            socket: socket.to_path_buf(),
            listener_fd,
            stop,
            accept: Mutex::new(Some(accept)),
            conns,
        })
    }

    /// Stops accepting, ends every connection (an attached process sees
    /// the owner go and takes over) and removes the socket.
    pub(super) fn shutdown(&self) {
        if self.stop.swap(true, Ordering::AcqRel) {
            return;
        }
        // Wakes the blocked accept (Linux answers it with EINVAL).
        // SAFETY: the listener lives until the accept thread is joined below.
        unsafe { libc::shutdown(self.listener_fd, libc::SHUT_RDWR) };
        if let Some(t) = lock(&self.accept).take() {
            let _ = t.join();
        }
        self.owner.stop();
        let threads = {
            let mut conns = lock(&self.conns);
            for s in conns.open.values() {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            std::mem::take(&mut conns.threads)
        };
        for t in threads {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(listener: &UnixListener, ctx: &Arc<Ctx>) {
    for stream in listener.incoming() {
        if ctx.stop.load(Ordering::Acquire) {
            return;
        }
        let Ok(stream) = stream else {
            // EMFILE and the like: back off instead of spinning.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let stream = ParentOnly::new(stream);
        // Who it is, before anything is read: the kernel's word.
        let Ok(peer) = access::peer(&stream) else {
            continue;
        };
        if !ctx.access.admits(peer, access::is_member) {
            refuse(&stream, peer, ctx);
            continue;
        }
        let Ok(watch) = stream.try_clone().map(ParentOnly::new) else {
            continue;
        };
        let mut conns = lock(&ctx.conns);
        conns.threads.retain(|t| !t.is_finished());
        let mine = conns.per_user.get(&peer.uid).copied().unwrap_or(0);
        if conns.open.len() >= MAX_CONNECTIONS || mine >= MAX_PER_USER {
            continue;
        }
        let id = conns.next;
        conns.next += 1;
        conns.open.insert(id, watch);
        *conns.per_user.entry(peer.uid).or_default() += 1;
        ctx.others.store(true, Ordering::Release);
        let c = Arc::clone(ctx);
        let done = move |c: &Ctx| {
            let mut conns = lock(&c.conns);
            conns.open.remove(&id);
            if let Some(n) = conns.per_user.get_mut(&peer.uid) {
                *n -= 1;
                if *n == 0 {
                    conns.per_user.remove(&peer.uid);
                }
            }
        };
        let spawned = std::thread::Builder::new()
            .name("keyward-attached".into())
            .spawn(move || {
                serve(&stream, peer, &c);
                done(&c);
            });
        if let Ok(t) = spawned {
            conns.threads.push(t);
        } else {
            drop(conns);
            done(ctx);
        }
    }
}

/// Tells a peer that may not attach why, without waiting on it.
fn refuse(stream: &UnixStream, peer: access::Peer, ctx: &Ctx) {
    let _ = stream.set_nonblocking(true);
    let _ = proto::send(
        stream,
        &Reply::Refused {
            reason: format!(
                "user {} may not attach to this store (owned by user {})",
                peer.uid, ctx.access.uid
            ),
        },
    );
}

/// One attached connection (of a peer admitted already): the greeting,
/// small and within a deadline, then requests until it closes.
fn serve(stream: &UnixStream, peer: access::Peer, ctx: &Ctx) {
    if stream.set_read_timeout(Some(HELLO_DEADLINE)).is_err() {
        return;
    }
    let Ok(Request::Hello { protocol }) = proto::recv_at_most::<Request>(stream, proto::MAX_HELLO)
    else {
        return;
    };
    // Greeted: an idle connection is kept for the next call.
    if stream.set_read_timeout(None).is_err() {
        return;
    }
    if protocol != proto::PROTOCOL {
        let _ = proto::send(
            stream,
            &Reply::Refused {
                reason: format!(
                    "protocol {protocol} is not this owner's {}: run one keyward version on a store",
                    proto::PROTOCOL
                ),
            },
        );
        return;
    }
    // Who the kernel says is there: the actor of every change it sends.
    let actor = access::user_name(peer.uid);
    let welcome = Reply::Welcome {
        protocol: proto::PROTOCOL,
        owner_pid: std::process::id(),
    };
    if proto::send(stream, &welcome).is_err() {
        return;
    }
    // A snapshot this connection opened: given up when it closes.
    let mut snapshot = Snap::default();
    while !ctx.stop.load(Ordering::Acquire) {
        let Ok(request) = proto::recv::<Request>(stream) else {
            return;
        };
        let reply = match request {
            Request::SnapshotBegin | Request::SnapshotEnd | Request::JournalMore => {
                snapshot.answer(&request, &ctx.owner)
            }
            other => answer(other, &actor, ctx),
        };
        if proto::send(stream, &reply).is_err() {
            return;
        }
    }
}

/// A connection's snapshot: open (its journal growing), or ended with
/// the journal's pages still to send.
#[derive(Default)]
struct Snap {
    open: Option<Journaled<OwnerFiles>>,
    ended: VecDeque<Op>,
}

impl Snap {
    fn answer(&mut self, request: &Request, owner: &Arc<Owner>) -> Reply {
        match request {
            Request::SnapshotBegin => {
                self.ended.clear();
                self.open = None;
                match Journaled::begin(OwnerFiles(Arc::clone(owner))) {
                    Ok(open) => {
                        self.open = Some(open);
                        Reply::Done
                    }
                    Err(e) => Reply::Failed(Failure::Storage(e.message().to_string())),
                }
            }
            Request::SnapshotEnd => {
                let Some(open) = self.open.take() else {
                    return Reply::Failed(Failure::Storage("no snapshot is open".into()));
                };
                match Box::new(open).finish() {
                    Ok(ops) => {
                        self.ended = ops.into();
                        self.page()
                    }
                    Err(e) => Reply::Failed(Failure::Storage(e.message().to_string())),
                }
            }
            _ => self.page(),
        }
    }

    /// The next page of the ended journal: at least one operation, then
    /// up to a page's bytes.
    fn page(&mut self) -> Reply {
        let mut ops = Vec::new();
        let mut bytes = 0;
        while let Some(op) = self.ended.front() {
            let size = op_bytes(op);
            if !ops.is_empty() && bytes + size > proto::PAGE_BYTES {
                break;
            }
            bytes += size;
            ops.extend(self.ended.pop_front());
        }
        Reply::Journal {
            ops,
            more: !self.ended.is_empty(),
        }
    }
}

fn answer(request: Request, actor: &str, ctx: &Ctx) -> Reply {
    let owner = &ctx.owner;
    let storage =
        |e: crate::backend::StorageError| Reply::Failed(Failure::Storage(e.message().to_string()));
    match request {
        Request::Hello { .. } => Reply::Failed(Failure::Storage("greeted twice".into())),
        Request::Get { table, key } => match owner.settled().and_then(|s| s.get(table, &key)) {
            Ok(v) => Reply::Value(v),
            Err(e) => storage(e),
        },
        Request::RangeFrom {
            table,
            start,
            limit,
        } => {
            let limit = usize::try_from(limit)
                .unwrap_or(usize::MAX)
                .min(proto::PAGE_ROWS);
            match owner
                .settled()
                .and_then(|s| s.range_bounded(table, &start, limit, proto::PAGE_BYTES))
            {
                Ok((rows, more)) => Reply::Rows {
                    rows: rows
                        .into_iter()
                        .map(|(key, value)| Row { key, value })
                        .collect(),
                    more,
                },
                Err(e) => storage(e),
            }
        }
        Request::Commit { batch, durability } => {
            let vetted = match owner.settled() {
                Ok(store) => (ctx.vet.0)(batch, actor, &*store),
                Err(e) => return storage(e),
            };
            let batch = match vetted {
                Ok(b) => b,
                Err(reason) => return Reply::Failed(Failure::Refused(reason)),
            };
            let events = batch.ops.iter().any(|op| {
                matches!(
                    op,
                    Op::Append {
                        table: Table::Events,
                        ..
                    }
                )
            });
            let result = owner.commit(batch, durability);
            if events && !matches!(result, Err(CommitError::Conflict | CommitError::Storage(_))) {
                ctx.hook.events_appended();
            }
            match result {
                Ok(version) => Reply::Committed { version },
                Err(CommitError::Conflict) => Reply::Failed(Failure::Conflict),
                Err(CommitError::Storage(e)) => storage(e),
                Err(CommitError::Unflushed(e)) => {
                    Reply::Failed(Failure::Unflushed(e.message().to_string()))
                }
            }
        }
        Request::Flush => match owner.flush() {
            Ok(()) => Reply::Done,
            Err(e) => storage(e),
        },
        Request::ChangesSince { seen } => match owner.changes_since(seen) {
            Ok(c) => Reply::Changes(c),
            Err(e) => storage(e),
        },
        Request::Version => Reply::Version(owner.version()),
        Request::Wait { after, timeout_ms } => {
            let timeout = Duration::from_millis(timeout_ms).min(MAX_WAIT);
            Reply::Version(owner.wait(after, timeout))
        }
        Request::SnapshotBegin | Request::SnapshotEnd | Request::JournalMore => Reply::Failed(
            Failure::Storage("a snapshot belongs to its connection".into()),
        ),
    }
}
