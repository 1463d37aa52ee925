//! Who may attach, and where the socket lives.
//!
//! The owner serves the store on a Unix socket inside the store directory
//! (`keyward.sock`): directory 0700 and socket 0600, or 0750 and 0660 when
//! the owner's options name a group that may attach. A store path too long
//! for a socket address gets its socket under the user's runtime directory
//! instead, named by a hash of the store path. Both ends check the other's
//! credentials (`SO_PEERCRED`) against the same rule as the files: the
//! user who owns the store, or a member of the named group.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// The socket's name inside the store directory.
pub(crate) const SOCKET_NAME: &str = "keyward.sock";

/// `sun_path` is 108 bytes on Linux, NUL included.
const MAX_SOCKET_PATH: usize = 107;

/// The process at the other end of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peer {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Who may attach to a store: its owning user, and the members of `group`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Access {
    pub uid: u32,
    pub group: Option<u32>,
}

impl Access {
    /// Whether `peer` may attach. `member` says whether a user belongs to a
    /// group (the system's group database; injectable for tests).
    pub(crate) fn admits(&self, peer: Peer, member: impl Fn(u32, u32) -> bool) -> bool {
        if peer.uid == self.uid {
            return true;
        }
        match self.group {
            Some(g) => peer.gid == g || member(peer.uid, g),
            None => false,
        }
    }

    /// Mode of the store directory and of the socket.
    pub(crate) fn modes(&self) -> (u32, u32) {
        if self.group.is_some() {
            (0o750, 0o660)
        } else {
            (0o700, 0o600)
        }
    }
}

/// The name of user `uid` in the system's user database, else `uid N`.
pub(crate) fn user_name(uid: u32) -> String {
    user_entry(uid)
        .and_then(|(name, _)| name.into_string().ok())
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// The credentials of the process at the other end of `stream`.
pub(crate) fn peer(stream: &UnixStream) -> io::Result<Peer> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::ucred>())
        .expect("ucred fits a socklen_t");
    // SAFETY: `cred` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Peer {
        pid: u32::try_from(cred.pid).unwrap_or(0),
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// Whether user `uid` is a member of group `gid` (its primary group or a
/// supplementary one), by the system's user and group databases.
pub(crate) fn is_member(uid: u32, gid: u32) -> bool {
    let Some((name, primary)) = user_entry(uid) else {
        return false;
    };
    if primary == gid {
        return true;
    }
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut n = libc::c_int::try_from(groups.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `name` is NUL-terminated; `groups` has room for `n` ids.
        let rc =
            unsafe { libc::getgrouplist(name.as_ptr(), primary, groups.as_mut_ptr(), &raw mut n) };
        let n = usize::try_from(n).unwrap_or(0);
        if rc >= 0 {
            return groups[..n.min(groups.len())].contains(&gid);
        }
        if n <= groups.len() || n > 65_536 {
            return false;
        }
        groups.resize(n, 0);
    }
}

/// User `uid`'s name and primary group.
fn user_entry(uid: u32) -> Option<(std::ffi::CString, u32)> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: an all-zero passwd is a valid value to be overwritten.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the sizes given; on success
    // `pwd.pw_name` points into `buf`, which outlives its use below.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &raw mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &raw mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: getpwuid_r succeeded, so pw_name is a NUL-terminated string in `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) }.to_owned();
    Some((name, pwd.pw_gid))
}

/// A group given by name or number, as its id.
pub(crate) fn group_id(group: &str) -> Option<u32> {
    if let Ok(n) = group.parse::<u32>() {
        return Some(n);
    }
    let name = std::ffi::CString::new(group).ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: an all-zero group is a valid value to be overwritten.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the sizes given.
    let rc = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &raw mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &raw mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some(grp.gr_gid)
}

/// This process's real user id.
pub(crate) fn my_uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

/// Where the owner of the store in `dir` (a canonical path) serves it.
pub(crate) fn socket_path(dir: &Path) -> PathBuf {
    let inside = dir.join(SOCKET_NAME);
    if inside.as_os_str().len() <= MAX_SOCKET_PATH {
        return inside;
    }
    let hash = blake3::hash(dir.as_os_str().as_encoded_bytes());
    let name = format!("{}.sock", &hash.to_hex()[..32]);
    runtime_dir().join(name)
}

/// The user's runtime directory (`$XDG_RUNTIME_DIR/keyward`), or
/// `/tmp/keyward-UID` where there is none.
fn runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("keyward"),
        None => std::env::temp_dir().join(format!("keyward-{}", my_uid())),
    }
}

/// Makes sure the directory the socket lives in exists, is the user's own
/// and nobody else's to write (the runtime directory fallback is shared
/// ground).
pub(crate) fn prepare_socket_dir(socket: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let Some(dir) = socket.parent() else {
        return Ok(());
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() || meta.uid() != my_uid() || meta.permissions().mode() & 0o022 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is not a private directory of this user", dir.display()),
        ));
    }
    let _ = std::fs::set_permissions(
        dir,
        std::fs::Permissions::from_mode(meta.permissions().mode() & 0o7777),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: u32 = 1000;
    const BOB: u32 = 1001;
    const STAFF: u32 = 50;

    fn peer(uid: u32, gid: u32) -> Peer {
        Peer { pid: 1, uid, gid }
    }

    #[test]
    fn only_the_owning_user_attaches_by_default() {
        let access = Access {
            uid: ALICE,
            group: None,
        };
        assert!(access.admits(peer(ALICE, 1), |_, _| false));
        assert!(!access.admits(peer(BOB, STAFF), |_, _| true));
        assert!(!access.admits(peer(0, 0), |_, _| true), "not even root");
        assert_eq!(access.modes(), (0o700, 0o600));
    }

    #[test]
    fn a_named_group_attaches_by_primary_or_supplementary_membership() {
        let access = Access {
            uid: ALICE,
            group: Some(STAFF),
        };
        assert!(
            access.admits(peer(BOB, STAFF), |_, _| false),
            "primary group"
        );
        assert!(
            access.admits(peer(BOB, 7), |u, g| u == BOB && g == STAFF),
            "supplementary"
        );
        assert!(!access.admits(peer(BOB, 7), |_, _| false), "not a member");
        assert_eq!(access.modes(), (0o750, 0o660));
    }

    #[test]
    fn group_membership_comes_from_the_system_databases() {
        // root is in group 0 on every Linux system.
        assert!(is_member(0, 0));
        assert_eq!(group_id("0"), Some(0));
        assert_eq!(group_id("root"), Some(0));
        assert_eq!(group_id("no-such-group-kw"), None);
    }

    #[test]
    fn a_long_store_path_gets_its_socket_in_the_runtime_directory() {
        let short = Path::new("/srv/keys");
        assert_eq!(socket_path(short), short.join(SOCKET_NAME));
        let long = PathBuf::from(format!("/srv/{}", "d".repeat(120)));
        let sock = socket_path(&long);
        assert!(sock.as_os_str().len() <= MAX_SOCKET_PATH || !sock.starts_with(&long));
        assert!(!sock.starts_with(&long));
        assert_eq!(sock, socket_path(&long), "the same store, the same socket");
        let other = PathBuf::from(format!("/srv/{}", "e".repeat(120)));
        assert_ne!(sock, socket_path(&other));
    }

    #[test]
    fn the_peer_of_a_socket_pair_is_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let p = super::peer(&a).unwrap();
        assert_eq!(p.uid, my_uid());
        assert_eq!(p.pid, std::process::id());
    }
}
