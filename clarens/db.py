# SPDX-License-Identifier: Apache-2.0
"""A process-wide registry of tdb files whose values are JSON.

libtdb refuses a second open of the same file in one process (EBUSY: fcntl
locks do not nest), and its fcntl locks are per process rather than per thread.
So every file is opened at most once per process, through this module, and every
operation on it holds that file's thread lock; a transaction holds it throughout.
A fork waits for operations in other threads to finish, and handles are
reopened in the child before first use there.

Values are stored as compact JSON (never pickle), so ``tdbdump FILE`` shows
readable records.  Keys are text.
"""

from __future__ import annotations

import fcntl
import json
import logging
import mmap
import os
import struct
import threading
from contextlib import contextmanager
from typing import Any, Iterator

import tdb

log = logging.getLogger(__name__)
_registry_lock = threading.Lock()
_open: dict[str, "Database"] = {}   # realpath -> the one handle of this process


# The tdb file header (struct tdb_header): a 32-byte magic, then 32-bit words in the
# machine's byte order: version, hash size, rwlocks, recovery start, sequence number.
_MAGIC = b"TDB file\n"
_VERSION_AT, _VERSION = 32, struct.pack("=I", 0x26011967 + 6)
_SEQNUM_AT, _SEQNUM = 48, struct.Struct("=i")     # signed, as tdb_get_seqnum returns it


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class Database:
    """One tdb file.  Obtain instances with :func:`open_db`, never directly."""

    def __init__(self, path: str, mode: int):
        self.path = path
        self._lock = threading.RLock()
        self._forked = False   # set in a forked child: reopen before first use there
        self._depth = 0        # nesting of transaction() in this process
        self._marker = path + ".commit"   # see _begin_commit_marker
        self._mode = mode
        self._tdb = tdb.Tdb(path, 0, tdb.DEFAULT, os.O_RDWR | os.O_CREAT, mode)
        self._tdb.enable_seqnum()
        self._header = self._map_header()
        st = os.stat(path)
        if st.st_mode & 0o777 != mode and st.st_uid == os.geteuid():
            os.chmod(path, mode)   # the umask may have widened nothing, but never trust it

    def _map_header(self) -> mmap.mmap | None:
        """A read-only map of the file's header, or None if its layout is not the one known here."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            header = mmap.mmap(fd, _SEQNUM_AT + _SEQNUM.size, mmap.MAP_SHARED, mmap.PROT_READ)
        except (OSError, ValueError):   # e.g. a file too short to be a tdb we know
            return None
        finally:
            os.close(fd)
        if (header[:len(_MAGIC)] != _MAGIC or header[_VERSION_AT:_VERSION_AT + len(_VERSION)] != _VERSION
                or _SEQNUM.unpack_from(header, _SEQNUM_AT)[0] != self._tdb.seqnum):
            header.close()
            return None
        return header

    def _handle(self):
        if self._forked:   # fcntl locks do not follow a fork
            self._tdb.reopen()
            self._forked = False
        return self._tdb

    def get(self, key: str, default: Any = None) -> Any:
        """The decoded value stored under ``key``, or ``default``."""
        with self._lock:
            raw = self._handle().get(key.encode("utf-8"))
        return default if raw is None else json.loads(raw)

    def put(self, key: str, value: Any) -> None:
        """Store ``value`` (anything JSON can encode) under ``key``."""
        data = _encode(value)
        with self._lock:
            self._handle().store(key.encode("utf-8"), data, tdb.REPLACE)

    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it existed."""
        k = key.encode("utf-8")
        with self._lock:
            t = self._handle()
            if t.get(k) is None:
                return False
            t.delete(k)
            return True

    def keys(self, prefix: str = "") -> list[str]:
        """All keys (optionally only those starting with ``prefix``), sorted."""
        with self._lock:
            raw = list(self._handle().keys())
        keys = (k.decode("utf-8") for k in raw)
        return sorted(k for k in keys if k.startswith(prefix))

    def items(self, prefix: str | tuple[str, ...] = "") -> list[tuple[str, Any]]:
        """(key, value) pairs for keys starting with ``prefix`` (or one of several), sorted by key;
        only those values are decoded."""
        with self._lock:
            t = self._handle()
            out = []
            for k in t.keys():
                key = k.decode("utf-8")
                if key.startswith(prefix):
                    raw = t.get(k)
                    if raw is not None:
                        out.append((key, json.loads(raw)))
        out.sort(key=lambda kv: kv[0])
        return out

    @property
    def seqnum(self) -> int:
        """A counter that changes whenever any process commits a change to the file: cheap
        cache invalidation (read once per request by the ACL guard).

        Read from this handle's own map of the file header, without the lock: tdb remaps
        its view of the file as the file grows, but this map never moves, and the
        counter is one aligned word.  Taking the lock cost 2-4 us per request inside an
        Apache child, most of the gap between the product with and without access
        control (thread CPU time, A/B stubs; commit fff9d7b).  A file whose header is not
        the layout known here (checked at open, see _map_header) falls back to tdb's own
        locked read.
        """
        if self._header is not None:
            return _SEQNUM.unpack_from(self._header, _SEQNUM_AT)[0]
        with self._lock:
            return self._handle().seqnum

    @contextmanager
    def locked(self) -> Iterator["Database"]:
        """Hold every record of the file against other processes (and threads) for the block: a
        read-modify-write nobody interleaves with, for state that need not survive a crash (no
        transaction, no fsync: about 2 us).  Not crash-safe: a process killed inside the block
        leaves the records it wrote, each whole (the kernel drops its lock)."""
        with self._lock:
            t = self._handle()
            t.lock_all()
            try:
                yield self
            finally:
                t.unlock_all()

    @contextmanager
    def transaction(self) -> Iterator["Database"]:
        """All writes inside the block commit together or not at all.

        Blocks other processes' transactions until it ends.  Crash-safe: an
        interrupted transaction is rolled back when the file is next opened, and
        the space a commit killed midway had appended is reclaimed by the next
        transaction (see _begin_commit_marker).
        """
        with self._lock:
            t = self._handle()
            t.transaction_start()   # recovers first if another process died inside a commit
            self._depth += 1
            marker = None
            try:
                if self._depth == 1:
                    marker = self._begin_commit_marker(t)
                yield self
            except BaseException:
                t.transaction_cancel()
                if marker is not None:
                    os.close(marker)   # keeps a mark left by a dead process: the next transaction reclaims
                raise
            finally:
                self._depth -= 1
            if marker is None:
                t.transaction_commit()
                return
            try:
                try:
                    os.pwrite(marker, b"%d\n" % os.getpid(), 0)   # "a commit is under way"
                except OSError:
                    pass   # e.g. a full disk: this commit goes unmarked
                t.transaction_commit()
                os.ftruncate(marker, 0)                       # done: under the lock, before the next holder looks
            finally:
                os.close(marker)

    def _begin_commit_marker(self, t) -> int | None:
        """Reclaim the space an interrupted commit left behind, if any; the locked marker fd, or None.

        tdb rolls a commit killed midway back (tdb_transaction_recover), but does not shrink the file:
        whatever the commit had appended (the records it had written there, or fill) stays past the
        restored end, reachable from no hash chain and from no free list.  Harmless to tdb, but
        ``tdbtool check`` then fails ("Hashes do not match records"; its dead-space scan also reads one
        offset over and over, so leaked fill followed by later records fails it too).  So each commit is
        bracketed by a non-empty ``FILE.commit``: found non-empty here, while holding tdb's transaction
        lock and the marker's flock, it means the last committer died inside its commit, and this
        transaction rewrites every record (tdb_wipe_all turns the whole data area, leaked parts
        included, into one free record).
        """
        try:
            fd = os.open(self._marker, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, self._mode)
        except OSError:
            return None   # e.g. a read-only directory: commits still work, without this repair
        try:
            owner, mine = os.stat(self.path), os.fstat(fd)
            if (mine.st_uid, mine.st_gid) != (owner.st_uid, owner.st_gid) and os.geteuid() == 0:
                os.fchown(fd, owner.st_uid, owner.st_gid)   # root editing a service's file: keep it the service's
            fcntl.flock(fd, fcntl.LOCK_EX)   # waits only for the last committer's ftruncate
            if os.fstat(fd).st_size:
                log.warning("%s: process %s died inside a commit (rolled back); reclaiming the space it had "
                            "appended", self.path, os.pread(fd, 32, 0).decode("ascii", "replace").strip())
                records = [(k, t.get(k)) for k in list(t.keys())]
                t.clear()
                for k, v in records:
                    t.store(k, v, tdb.INSERT)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def close(self) -> None:
        """Close the handle and forget it, so the file may be opened again."""
        with _registry_lock, self._lock:
            self._tdb.close()
            if self._header is not None:
                self._header.close()
            _open.pop(self.path, None)


def _before_fork() -> None:
    # Fork only between operations: a child that inherits a tdb mid-transaction or
    # holding a record lock cannot reopen it.
    _registry_lock.acquire()
    for db in list(_open.values()):
        db._lock.acquire()


def _after_fork_in_parent() -> None:
    for db in reversed(list(_open.values())):
        db._lock.release()
    _registry_lock.release()


def _after_fork_in_child() -> None:
    # Only Python-level forks come here.  Apache forks its children in C, but no
    # handle exists in Apache's parent: the host opens them in each child.
    global _registry_lock
    _registry_lock = threading.Lock()
    for db in _open.values():
        db._lock = threading.RLock()
        db._forked = True


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)


def open_db(path: str, mode: int = 0o600) -> Database:
    """The process's single handle on the tdb file at ``path`` (created ``mode`` if missing)."""
    real = os.path.realpath(path)
    with _registry_lock:
        db = _open.get(real)
        if db is None:
            db = _open[real] = Database(real, mode)
        return db


class Registry:
    """The databases of one host: named tdb files in one directory.

    ``registry.open("acl")`` opens ``DIR/acl.tdb``.  Handles are shared with every
    other Registry in the process (see :func:`open_db`).
    """

    def __init__(self, directory: str):
        self.directory = directory

    def path(self, name: str) -> str:
        """The file that holds database ``name``."""
        if not name or "/" in name or name.startswith("."):
            raise ValueError("invalid database name %r" % name)
        return os.path.join(self.directory, name + ".tdb")

    def open(self, name: str) -> Database:
        """Open (once per process) and return database ``name``."""
        return open_db(self.path(name))

    def register_dbs(self, *names: str) -> dict[str, Database]:
        """Open several databases at once: ``{name: Database}`` (as in Clarens' register_dbs)."""
        return {name: self.open(name) for name in names}
