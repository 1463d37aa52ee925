//! The attached side: connections to the owner's socket, each carrying one
//! call at a time, kept for reuse; and one connection of its own on which
//! the worker waits for word of changes.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use super::access;
use super::proto::{self, Reply, Request};
use crate::fork::ParentOnly;
use crate::locks::lock;

/// Idle connections kept for reuse.
const IDLE_KEPT: usize = 8;

/// Attaching failed.
#[derive(Debug)]
pub(super) enum Attach {
    /// Nobody serves the socket (none there, or a dead owner's).
    NoOwner,
    /// An owner is there and will not serve this process, or is not who
    /// the store's files say it must be.
    Refused(String),
    Failed(io::Error),
}

/// A call failed on the way.
#[derive(Debug)]
pub(super) enum CallError {
    /// The owner never had the request: safe to send again.
    NotSent(io::Error),
    /// The request went out and no answer came: it may have been applied.
    Lost(io::Error),
}

impl CallError {
    pub(super) fn io(&self) -> &io::Error {
        match self {
            CallError::NotSent(e) | CallError::Lost(e) => e,
        }
    }
}

/// A connection to the owner; a forked child does not keep it (the owner
/// would serve a connection nobody uses until the child exits).
type Conn = ParentOnly<UnixStream>;

pub(super) struct Client {
    socket: PathBuf,
    /// The user the owner must run as: the owner of the store's files.
    owner_uid: u32,
    reply_timeout: Duration,
    pub owner_pid: u32,
    idle: Mutex<Vec<Conn>>,
    waiter: Mutex<Option<Conn>>,
}

impl Client {
    pub(super) fn attach(
        socket: &Path,
        owner_uid: u32,
        reply_timeout: Duration,
    ) -> Result<Client, Attach> {
        let (stream, pid) = greet(socket, owner_uid, reply_timeout)?;
        Ok(Client {
            socket: socket.to_path_buf(),
            owner_uid,
            reply_timeout,
            owner_pid: pid,
            idle: Mutex::new(vec![stream]),
            waiter: Mutex::new(None),
        })
    }

    fn connection(&self) -> Result<Conn, CallError> {
        if let Some(c) = lock(&self.idle).pop() {
            return Ok(c);
        }
        match greet(&self.socket, self.owner_uid, self.reply_timeout) {
            Ok((c, _)) => Ok(c),
            Err(Attach::Failed(e)) => Err(CallError::NotSent(e)),
            Err(Attach::NoOwner) => Err(CallError::NotSent(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "the owning process is gone",
            ))),
            Err(Attach::Refused(r)) => Err(CallError::NotSent(io::Error::new(
                io::ErrorKind::PermissionDenied,
                r,
            ))),
        }
    }

    /// One request, one reply.
    pub(super) fn call(&self, request: &Request) -> Result<Reply, CallError> {
        let conn = self.connection()?;
        proto::send(&conn, request).map_err(CallError::NotSent)?;
        let reply = proto::recv::<Reply>(&conn).map_err(CallError::Lost)?;
        let mut idle = lock(&self.idle);
        if idle.len() < IDLE_KEPT {
            idle.push(conn);
        }
        Ok(reply)
    }

    /// A connection of the caller's own for a conversation of several
    /// calls (a snapshot lives as long as its connection).
    pub(super) fn session(&self) -> Result<Session, CallError> {
        Ok(Session {
            conn: self.connection()?,
        })
    }

    /// Waits, on the waiting connection, for the feed to pass `after`;
    /// returns where it stands.
    pub(super) fn wait(&self, after: u64, timeout: Duration) -> Result<u64, CallError> {
        let mut slot = lock(&self.waiter);
        let conn = match slot.take() {
            Some(c) => c,
            None => self.connection()?,
        };
        conn.set_read_timeout(Some(timeout + self.reply_timeout))
            .map_err(CallError::NotSent)?;
        let request = Request::Wait {
            after,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        proto::send(&conn, &request).map_err(CallError::NotSent)?;
        match proto::recv::<Reply>(&conn).map_err(CallError::Lost)? {
            Reply::Version(v) => {
                *slot = Some(conn);
                Ok(v)
            }
            other => Err(CallError::Lost(unexpected(&other))),
        }
    }
}

/// One connection kept for a conversation; closing it ends what the owner
/// keeps for it.
pub(super) struct Session {
    conn: Conn,
}

impl Session {
    pub(super) fn call(&self, request: &Request) -> Result<Reply, CallError> {
        proto::send(&self.conn, request).map_err(CallError::NotSent)?;
        proto::recv::<Reply>(&self.conn).map_err(CallError::Lost)
    }
}

pub(super) fn unexpected(reply: &Reply) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the owner answered out of turn ({})", reply.name()),
    )
}

/// Connects to the owner's socket and greets it; returns the connection
/// and the owner's pid.
fn greet(socket: &Path, owner_uid: u32, timeout: Duration) -> Result<(Conn, u32), Attach> {
    let stream = match UnixStream::connect(socket) {
        Ok(s) => ParentOnly::new(s),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(Attach::NoOwner);
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(Attach::Refused(format!(
                "cannot reach the owner at {}: {e}",
                socket.display()
            )));
        }
        Err(e) => return Err(Attach::Failed(e)),
    };
    let peer = access::peer(&stream).map_err(Attach::Failed)?;
    if peer.uid != owner_uid {
        return Err(Attach::Refused(format!(
            "{} is served by user {}, but the store belongs to user {owner_uid}",
            socket.display(),
            peer.uid
        )));
    }
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(Attach::Failed)?;
    let hello = Request::Hello {
        protocol: proto::PROTOCOL,
    };
    if proto::send(&stream, &hello).is_err() {
        // Gone between connect and greeting: as if it were not there.
        return Err(Attach::NoOwner);
    }
    match proto::recv::<Reply>(&stream) {
        Ok(Reply::Welcome { owner_pid, .. }) => Ok((stream, owner_pid)),
        Ok(Reply::Refused { reason }) => Err(Attach::Refused(reason)),
        Ok(other) => Err(Attach::Failed(unexpected(&other))),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(Attach::NoOwner),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ) =>
        {
            Err(Attach::NoOwner)
        }
        Err(e) => Err(Attach::Failed(e)),
    }
}
