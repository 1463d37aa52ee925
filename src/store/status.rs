//! Where this process stands with its store ([`Store::status`](super::Store::status)).

use std::path::PathBuf;

use super::engine::Engine;

/// How this process holds its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// This process owns the sled store's files and serves the others.
    Owner,
    /// This process is attached to the process that owns the sled store.
    Attached,
    /// A store on PostgreSQL: every process is a peer of the others.
    Shared,
    /// A store in memory, this process's alone.
    Memory,
}

impl Role {
    /// `owner`, `attached`, `shared` or `memory`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Attached => "attached",
            Role::Shared => "shared",
            Role::Memory => "memory",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where this process stands with its store.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// Owner, attached, shared (PostgreSQL) or memory.
    pub role: Role,
    /// The process that owns a sled store (this one, when it is the owner).
    pub owner_pid: Option<u32>,
    /// The Unix socket the owner of a sled store serves it on.
    pub socket: Option<PathBuf>,
    /// The store's directory (sled).
    pub path: Option<PathBuf>,
    /// Keys in this process's verify index.
    pub keys: usize,
    /// Memory this process's verify index holds, counted from its
    /// structures (entries, table slots, hashes, rules, accounts; not the
    /// allocator's own overhead).
    pub index_bytes: usize,
}

impl Status {
    pub(super) fn of(engine: &Engine) -> Status {
        let keys = engine.index.len();
        let index_bytes = engine.index.approx_bytes();
        let path = engine.dir.clone();
        if let Some(host) = engine.backend.host() {
            return match host.status() {
                Some(s) => Status {
                    role: if s.owner { Role::Owner } else { Role::Attached },
                    owner_pid: Some(s.owner_pid),
                    socket: Some(s.socket),
                    path,
                    keys,
                    index_bytes,
                },
                // Closed: nothing is served or attached any more.
                None => Status {
                    role: Role::Attached,
                    owner_pid: None,
                    socket: None,
                    path,
                    keys,
                    index_bytes,
                },
            };
        }
        Status {
            role: if engine.shared {
                Role::Shared
            } else {
                Role::Memory
            },
            owner_pid: None,
            socket: None,
            path,
            keys,
            index_bytes,
        }
    }

    /// The status as a JSON object (`role`, `owner_pid`, `socket`, `path`,
    /// `keys`, `index_bytes`, `pid`): what `keyward status --json`, C and Python give.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "role": self.role.as_str(),
            "pid": std::process::id(),
            "owner_pid": self.owner_pid,
            "socket": self.socket.as_ref().map(|p| p.display().to_string()),
            "path": self.path.as_ref().map(|p| p.display().to_string()),
            "keys": self.keys,
            "index_bytes": self.index_bytes,
        })
    }
}
