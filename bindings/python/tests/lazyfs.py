"""A file system that loses what was not synced when the power is cut.

    python lazyfs.py MOUNTPOINT STATE

Serves a FUSE file system (mfusepy over libfuse 3) held in memory. What is
written stays volatile until made durable: a file's contents by ``fsync``
or ``fdatasync`` of it, a directory's names (created, renamed, removed) by
``fsync`` of the directory. When the power is cut, the durable state is
written to STATE (pickle),
everything else is thrown away, and the file system unmounts. Started with
a STATE file, it serves that state: the machine after the cut.

The power is cut by making the directory ``/.powercut`` in it (a signal
would wait for the next request to reach Python). The idea is
LazyFS's (dsrhaslab/lazyfs), the code its own.
"""

import errno
import os
import pickle
import signal
import stat
import sys
import threading
import time

import mfusepy as fuse


class File:
    def __init__(self, mode):
        self.mode = mode
        self.data = bytearray()
        self.durable = b""


class Dir:
    def __init__(self, mode):
        self.mode = mode
        self.entries = {}
        self.durable = {}


class LazyFS(fuse.Operations):
    use_ns = True

    def __init__(self, root, state):
        self.root = root
        self.state = state
        self.guard = threading.RLock()
        self.handles = {}
        self.next_fh = 1

    # -- paths --------------------------------------------------------

    def _find(self, path):
        node = self.root
        for part in [p for p in path.split("/") if p]:
            if not isinstance(node, Dir) or part not in node.entries:
                raise fuse.FuseOSError(errno.ENOENT)
            node = node.entries[part]
        return node

    def _parent(self, path):
        head, name = os.path.split(path.rstrip("/"))
        parent = self._find(head or "/")
        if not isinstance(parent, Dir):
            raise fuse.FuseOSError(errno.ENOTDIR)
        return parent, name

    def _node(self, path, fh=None):
        if fh is not None and fh in self.handles:
            return self.handles[fh]
        return self._find(path)

    # -- metadata -----------------------------------------------------

    def getattr(self, path, fh=None):
        with self.guard:
            node = self._node(path, fh)
            now = time.time_ns()
            size = len(node.data) if isinstance(node, File) else 4096
            return {
                "st_mode": node.mode,
                "st_nlink": 2 if isinstance(node, Dir) else 1,
                "st_size": size,
                "st_uid": os.getuid(),
                "st_gid": os.getgid(),
                "st_atime": now,
                "st_mtime": now,
                "st_ctime": now,
                "st_blocks": (size + 511) // 512,
            }

    def chmod(self, path, mode):
        with self.guard:
            node = self._find(path)
            node.mode = (node.mode & ~0o7777) | (mode & 0o7777)
            return 0

    def chown(self, path, uid, gid):
        return 0

    def utimens(self, path, times=None):
        return 0

    def statfs(self, path):
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": 1 << 24, "f_bfree": 1 << 23,
                "f_bavail": 1 << 23, "f_files": 1 << 20, "f_ffree": 1 << 19, "f_namemax": 255}

    # -- directories --------------------------------------------------

    def readdir(self, path, fh):
        with self.guard:
            node = self._find(path)
            return [".", ".."] + list(node.entries)

    def mkdir(self, path, mode):
        if path == "/.powercut":
            self.cut()
            return 0
        with self.guard:
            parent, name = self._parent(path)
            if name in parent.entries:
                raise fuse.FuseOSError(errno.EEXIST)
            parent.entries[name] = Dir(stat.S_IFDIR | mode)
            return 0

    def rmdir(self, path):
        with self.guard:
            parent, name = self._parent(path)
            node = parent.entries.get(name)
            if not isinstance(node, Dir):
                raise fuse.FuseOSError(errno.ENOTDIR)
            if node.entries:
                raise fuse.FuseOSError(errno.ENOTEMPTY)
            del parent.entries[name]
            return 0

    def unlink(self, path):
        with self.guard:
            parent, name = self._parent(path)
            if name not in parent.entries:
                raise fuse.FuseOSError(errno.ENOENT)
            del parent.entries[name]
            return 0

    def rename(self, old, new):
        with self.guard:
            src, a = self._parent(old)
            dst, b = self._parent(new)
            if a not in src.entries:
                raise fuse.FuseOSError(errno.ENOENT)
            dst.entries[b] = src.entries.pop(a)
            return 0

    def fsyncdir(self, path, datasync, fh):
        with self.guard:
            node = self._find(path)
            node.durable = dict(node.entries)
            return 0

    # -- files --------------------------------------------------------

    def _handle(self, node):
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = node
        return fh

    def create(self, path, mode, fi=None):
        with self.guard:
            parent, name = self._parent(path)
            node = parent.entries.get(name)
            if node is None:
                node = parent.entries[name] = File(stat.S_IFREG | mode)
            return self._handle(node)

    def open(self, path, flags):
        with self.guard:
            node = self._find(path)
            if flags & os.O_TRUNC and isinstance(node, File):
                del node.data[:]
            return self._handle(node)

    def mknod(self, path, mode, dev):
        # The store's Unix socket: a name like any other.
        with self.guard:
            parent, name = self._parent(path)
            if name in parent.entries:
                raise fuse.FuseOSError(errno.EEXIST)
            parent.entries[name] = File(mode)
            return 0

    def opendir(self, path):
        with self.guard:
            return self._handle(self._find(path))

    def release(self, path, fh):
        with self.guard:
            self.handles.pop(fh, None)
            return 0

    def releasedir(self, path, fh):
        return self.release(path, fh)

    def read(self, path, size, offset, fh):
        with self.guard:
            node = self._node(path, fh)
            return bytes(node.data[offset:offset + size])

    def write(self, path, data, offset, fh):
        with self.guard:
            node = self._node(path, fh)
            if offset > len(node.data):
                node.data.extend(b"\0" * (offset - len(node.data)))
            node.data[offset:offset + len(data)] = data
            return len(data)

    def truncate(self, path, length, fh=None):
        with self.guard:
            node = self._node(path, fh)
            if length < len(node.data):
                del node.data[length:]
            else:
                node.data.extend(b"\0" * (length - len(node.data)))
            return 0

    def fallocate(self, path, mode, offset, length, fh):
        with self.guard:
            node = self._node(path, fh)
            end = offset + length
            if mode == 0 and end > len(node.data):
                node.data.extend(b"\0" * (end - len(node.data)))
            return 0

    def flush(self, path, fh):
        return 0

    def fsync(self, path, datasync, fh):
        with self.guard:
            node = self._node(path, fh)
            if isinstance(node, File):
                node.durable = bytes(node.data)
            else:
                node.durable = dict(node.entries)
            return 0

    # -- the power ----------------------------------------------------

    def cut(self):
        """Keeps what survives (durable names, durable contents) in the
        state file, then stops serving (libfuse ends its loop on SIGTERM
        and unmounts)."""
        with self.guard:
            saved = _durable(self.root)
        with open(self.state + ".new", "wb") as f:
            pickle.dump(saved, f)
        os.replace(self.state + ".new", self.state)
        os.kill(os.getpid(), signal.SIGTERM)


def _durable(node):
    if isinstance(node, File):
        copy = File(node.mode)
        copy.data = bytearray(node.durable)
        copy.durable = node.durable
        return copy
    copy = Dir(node.mode)
    copy.entries = {name: _durable(child) for name, child in node.durable.items()}
    copy.durable = dict(copy.entries)
    return copy


def main():
    mountpoint, state = sys.argv[1], sys.argv[2]
    if os.path.exists(state):
        with open(state, "rb") as f:
            root = pickle.load(f)
    else:
        root = Dir(stat.S_IFDIR | 0o755)
    fs = LazyFS(root, state)
    try:
        fuse.FUSE(fs, mountpoint, foreground=True, nothreads=True, default_permissions=True)
    except RuntimeError:
        # libfuse's loop ended by the signal of a cut.
        pass


if __name__ == "__main__":
    main()
