//! What an attached process and the owner say to each other: postcard
//! messages, each framed by its length (u32, little-endian). Every call is
//! one request and one reply on a connection of the caller's own.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::backend::{Batch, Changes, Durability, Op, Table};

/// Bumped when a message changes meaning; owner and attached must agree.
pub(super) const PROTOCOL: u32 = 3;

/// No frame is larger: a reply of many rows is asked for in pages.
pub(super) const MAX_FRAME: usize = 64 << 20;

/// The largest greeting accepted.
pub(super) const MAX_HELLO: usize = 4 << 10;

/// Rows per page when an attached process reads a whole table.
pub(super) const PAGE_ROWS: usize = 4096;

/// A page of rows ends once it holds this many bytes (but never before its
/// first row), so no table's pages depend on how large its rows are: the
/// largest row the API can write is far below [`MAX_FRAME`].
pub(super) const PAGE_BYTES: usize = 1 << 20;

#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Request {
    Hello {
        protocol: u32,
    },
    Get {
        table: Table,
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    RangeFrom {
        table: Table,
        #[serde(with = "serde_bytes")]
        start: Vec<u8>,
        limit: u32,
    },
    Commit {
        batch: Batch,
        durability: Durability,
    },
    Flush,
    ChangesSince {
        seen: u64,
    },
    Version,
    /// Answered when the change feed passes `after`, or after `timeout_ms`.
    Wait {
        after: u64,
        timeout_ms: u64,
    },
    /// Opens a snapshot on this connection (see `backend::copy`): the
    /// owner journals every write until `SnapshotEnd`, or until the
    /// connection closes.
    SnapshotBegin,
    /// Ends the connection's snapshot: answered with the first page of
    /// its journal.
    SnapshotEnd,
    /// The next page of the ended snapshot's journal.
    JournalMore,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Row {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Reply {
    Welcome {
        protocol: u32,
        owner_pid: u32,
    },
    /// The owner will not serve this peer (credentials, protocol).
    Refused {
        reason: String,
    },
    Value(#[serde(with = "serde_bytes")] Option<Vec<u8>>),
    /// A page of rows; `more` when it ended at [`PAGE_BYTES`] before the
    /// number asked for (so a short page is not the table's end).
    Rows {
        rows: Vec<Row>,
        more: bool,
    },
    Committed {
        version: u64,
    },
    Done,
    Changes(Changes),
    Version(u64),
    Failed(Failure),
    /// A page of a snapshot's journal; `more` when pages follow.
    Journal {
        ops: Vec<Op>,
        more: bool,
    },
}

impl Reply {
    /// The kind of answer, for a message (never its contents: rows can be
    /// megabytes, and hold hashes).
    pub(super) fn name(&self) -> &'static str {
        match self {
            Reply::Welcome { .. } => "welcome",
            Reply::Refused { .. } => "refused",
            Reply::Value(_) => "value",
            Reply::Rows { .. } => "rows",
            Reply::Committed { .. } => "committed",
            Reply::Done => "done",
            Reply::Changes(_) => "changes",
            Reply::Version(_) => "version",
            Reply::Journal { .. } => "journal",
            Reply::Failed(_) => "failed",
        }
    }
}

/// A backend error, carried across.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Failure {
    Storage(String),
    Conflict,
    Unflushed(String),
    /// The batch is not one the API could have made: nothing was written.
    Refused(String),
}

/// Sends one message. Never raises SIGPIPE: a peer that died is an error
/// here, not the end of a C program that links keyward.
pub(super) fn send<T: Serialize>(stream: &UnixStream, message: &T) -> io::Result<()> {
    let body = postcard::to_stdvec(message).map_err(io::Error::other)?;
    if body.len() > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "message over the frame limit",
        ));
    }
    let len = u32::try_from(body.len()).expect("under MAX_FRAME");
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&body);
    let mut rest = frame.as_slice();
    while !rest.is_empty() {
        // SAFETY: `rest` is valid for reads of its length.
        let n = unsafe {
            libc::send(
                stream.as_raw_fd(),
                rest.as_ptr().cast(),
                rest.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        rest = &rest[usize::try_from(n).expect("non-negative")..];
    }
    Ok(())
}

/// Receives one message (up to the stream's read timeout).
pub(super) fn recv<T: DeserializeOwned>(stream: &UnixStream) -> io::Result<T> {
    recv_at_most(stream, MAX_FRAME)
}

/// Receives one message of at most `max` bytes (the greeting is small:
/// a peer that announces more is refused before anything is read).
pub(super) fn recv_at_most<T: DeserializeOwned>(
    mut stream: &UnixStream,
    max: usize,
) -> io::Result<T> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = usize::try_from(u32::from_le_bytes(len)).unwrap_or(usize::MAX);
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a {len}-byte frame is over the {max}-byte limit"),
        ));
    }
    // Grown as bytes arrive: a peer that announces a large frame and sends
    // little holds little memory.
    let mut body = Vec::new();
    stream
        .take(u64::try_from(len).unwrap_or(u64::MAX))
        .read_to_end(&mut body)?;
    if body.len() < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    postcard::from_bytes(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_crosses_a_socket_intact() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut batch = Batch::default();
        batch.put(Table::Keys, b"id".to_vec(), vec![0, 1, 2, 255]);
        batch.expect(Table::Keys, b"id".to_vec(), None);
        batch.append(Table::Events, b"{}".to_vec());
        send(
            &a,
            &Request::Commit {
                batch,
                durability: Durability::Durable,
            },
        )
        .unwrap();
        match recv::<Request>(&b).unwrap() {
            Request::Commit { batch, durability } => {
                assert_eq!(durability, Durability::Durable);
                assert_eq!(batch.ops.len(), 3);
                assert_eq!(batch.followed_rows().collect::<Vec<_>>(), vec![b"id"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_oversized_or_garbled_frame_is_an_error_not_an_allocation() {
        use std::io::Write;
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&u32::MAX.to_le_bytes()).unwrap();
        let e = recv::<Request>(&b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        a.write_all(&3u32.to_le_bytes()).unwrap();
        a.write_all(&[250, 250, 250]).unwrap();
        assert_eq!(
            recv::<Request>(&b).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn sending_to_a_closed_peer_is_an_error_not_a_signal() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let e = send(&a, &Request::Flush).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }
}
