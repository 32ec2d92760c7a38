# SPDX-License-Identifier: Apache-2.0
"""Resumable uploads of large files (ISO images of 700 MB to 50 GB) into one directory.

The HTTP protocol, for a file NAME (a web route adapts requests to :class:`Uploads`):

``PUT NAME`` with ``Content-Length: N``
    a whole upload of N bytes; any partial upload of NAME by the same uploader is
    discarded first.  ``curl -T FILE URL`` does this.
``PUT NAME`` with ``Content-Range: bytes START-END/TOTAL``
    bytes START..END of a TOTAL-byte upload.  START must be what the server holds
    (0 for a new upload), else 409 with ``Upload-Offset``.  ``curl -C OFFSET -T FILE``
    does this.
``PUT NAME`` with ``Content-Range: bytes */TOTAL`` and an empty body
    every check an upload of TOTAL bytes would meet, and how many bytes the server
    holds: answer 200 with ``Upload-Offset``.  Browsers, which cannot send
    ``Expect: 100-continue``, ask this first.
``HEAD NAME``
    ``Upload-Offset`` and ``Upload-Length`` of the caller's partial upload of NAME, or
    of the finished file (``Upload-Complete: ?1``); 404 if there is neither.

Every check happens before the first byte of a body is read, so a client that sends
``Expect: 100-continue`` (curl does for large bodies) gets the refusal instead of
``100 Continue`` and never sends the body: 413 too large, 507 not enough space
(``statvfs``, keeping a reserve free), 409 the name is taken or the same upload is
already running, 415 too small or not the right kind of file (``check_head``).

Bytes are written as they arrive, to a hidden file ``.partial-USER-ID-TOTAL`` where
USER is a hash of the uploader and ID of (uploader, name): each uploader resumes only
their own uploads, and the filesystem is the only record of them (a database, if
given, also keeps who and which name, for listing them).  If the connection drops
(or the Apache child is killed), what arrived stays there to be resumed.  An
uploader's unfinished uploads may declare ``per_user`` bytes in all (507 beyond),
and an upload's room is checked counting what the uploads being written still have
to write (:mod:`clarens.web.reservations`), so that concurrent uploads keep the reserve
free between them.  A partial file whose upload failed for lack of space is removed at once.  While a request
writes to it, it holds an exclusive ``flock`` on it.  When the last byte arrives
the file is synced and linked into place atomically, never over an existing
file.  Its SHA-256 is computed as the bytes arrive, in a thread of its own; a
resumed upload first re-reads what the server already had, so the digest always
covers the whole file.  Partial files not written to for ``expiry`` seconds are
removed by :meth:`Uploads.sweep`.  Memory stays flat: bytes go from the socket to
the disk in chunks of :data:`CHUNK`.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import queue
import re
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from clarens.web import reservations

if TYPE_CHECKING:    # for annotations only
    from clarens.db import Database

CHUNK = 1 << 20
PARTIAL_PREFIX = ".partial-"
RECORD_PREFIX = "upload:"      # + a partial file's name: {who, name}, in ``records``
LEGACY_PREFIX = ".upload-"     # temporary files of uploads before they were resumable
RETRY_AFTER = 5                # seconds a client should wait when the same upload is still running
_RANGE_RE = re.compile(r"bytes (?:([0-9]{1,20})-([0-9]{1,20})|\*)/([0-9]{1,20})\Z")   # ASCII digits only
_OPEN_FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC


class UploadError(Exception):
    """An upload refused or cut short: ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


class BodyError(Exception):
    """The request body could not be read to its end: the client went away, or Apache refused it."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ContentRange:
    """A request's ``Content-Range``: bytes ``start``..``end`` of ``total`` (both None for ``*``)."""
    start: int | None
    end: int | None
    total: int


def parse_content_range(value: str) -> ContentRange:
    """``bytes START-END/TOTAL`` or ``bytes */TOTAL``; UploadError(400) for anything else."""
    m = _RANGE_RE.match(value.strip())
    if not m:
        raise UploadError(400, "Content-Range must be 'bytes START-END/TOTAL' or 'bytes */TOTAL', not %r"
                          % value[:100])
    total = int(m.group(3))
    if m.group(1) is None:
        return ContentRange(None, None, total)
    start, end = int(m.group(1)), int(m.group(2))
    if not start <= end < total:
        raise UploadError(400, "Content-Range %r is not inside a file of %d bytes" % (value[:100], total))
    return ContentRange(start, end, total)


@dataclass(frozen=True)
class Progress:
    """What the server holds of an upload."""
    name: str
    received: int
    total: int
    expires: float | None = None     # Unix time after which an unfinished upload is removed

    @property
    def headers(self) -> dict[str, str]:
        """``Upload-Offset``, ``Upload-Length`` and ``Upload-Complete`` for this state."""
        return {"Upload-Offset": str(self.received), "Upload-Length": str(self.total),
                "Upload-Complete": "?1" if self.received == self.total and self.expires is None else "?0"}


@dataclass(frozen=True)
class Finished:
    """A completed upload, now in place under its name."""
    name: str
    path: str
    sha256: str
    stat: os.stat_result = field(repr=False)


class Uploads:
    """Resumable uploads into ``directory``.

    ``max_size`` bounds a file; ``reserve`` bytes of the filesystem are kept free;
    partial files idle for ``expiry`` seconds are swept.  ``check_head(head)`` sees
    the first ``head_size`` bytes as soon as they are on disk and returns why they
    are not acceptable (415), or None; files smaller than ``head_size`` are refused.
    """

    def __init__(self, directory: str, max_size: int, reserve: int, expiry: float,
                 check_head: Callable[[bytes], str | None], head_size: int, per_user: int | None = None,
                 records: "Database | None" = None):
        self.directory = directory
        self.max_size = max_size
        self.reserve = reserve
        self.expiry = expiry
        self.check_head = check_head
        self.head_size = head_size
        self.per_user = per_user          # bytes an uploader's unfinished uploads may declare in all
        self.records = records            # partial file -> {who, name}, for listing them

    # -- where partial uploads live ----------------------------------------------------

    @staticmethod
    def _hash(text: str, size: int = 16) -> str:
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:size]

    def _prefix(self, who: str, name: str | None = None) -> str:
        """The start of the names of ``who``'s partial files (of its upload of ``name``, if given)."""
        user = PARTIAL_PREFIX + self._hash("user\0" + who) + "-"
        return user if name is None else "%s%s-" % (user, self._hash("%s\0%s" % (who, name)))

    def _partials(self, prefix: str = PARTIAL_PREFIX) -> list[tuple[str, int]]:
        """(path, total) of every partial file whose name starts with ``prefix`` (from :meth:`_prefix`)."""
        out = []
        for entry in os.listdir(self.directory):
            total = entry.rpartition("-")[2]
            if entry.startswith(prefix) and total.isascii() and total.isdigit():
                out.append((os.path.join(self.directory, entry), int(total)))
        return out

    def _final(self, name: str) -> str:
        if not name or "/" in name or name.startswith("."):
            raise ValueError("not a plain file name: %r" % name)    # the route checks names first
        return os.path.join(self.directory, name)

    def _progress(self, name: str, received: int, total: int, mtime: float) -> Progress:
        return Progress(name, received, total, mtime + self.expiry)

    # -- queries -----------------------------------------------------------------------

    def status(self, name: str, who: str) -> Progress | None:
        """The finished file's size, or ``who``'s partial upload of ``name``, or None (HEAD)."""
        try:
            st = os.lstat(self._final(name))
            if stat.S_ISREG(st.st_mode):
                return Progress(name, st.st_size, st.st_size)
        except FileNotFoundError:
            pass
        for path, total in self._partials(self._prefix(who, name)):
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            return self._progress(name, st.st_size, total, st.st_mtime)
        return None

    def unfinished(self, who: str | None = None) -> list[dict]:
        """The partial uploads (``who``'s, or everyone's): ``{name, uploader, size, received, modified,
        expires, writing}`` (name and uploader "" when unknown: a database was not kept, or an older
        file), sorted by uploader and name.  Records of files gone meanwhile are forgotten."""
        out = []
        with reservations.one_at_a_time(self.directory):
            for path, total in self._partials(PARTIAL_PREFIX if who is None else self._prefix(who)):
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    continue
                record = self._record(path) or {}
                out.append({"name": record.get("name", ""), "uploader": record.get("who", ""), "size": total,
                            "received": st.st_size, "modified": st.st_mtime, "expires": st.st_mtime + self.expiry,
                            "writing": reservations.writing(path) is not None})
            if self.records is not None:
                held = {os.path.basename(p) for p, _ in self._partials()}
                for key in self.records.keys(RECORD_PREFIX):
                    if key[len(RECORD_PREFIX):] not in held:
                        self.records.delete(key)
        return sorted(out, key=lambda u: (u["uploader"], u["name"]))

    def discard(self, name: str, who: str) -> int:
        """Remove ``who``'s partial upload of ``name``: UploadError(404) if there is none, 409 while
        it is being written.  The bytes it held."""
        with reservations.one_at_a_time(self.directory):
            found = self._partials(self._prefix(who, name))
            if not found:
                raise UploadError(404, "%s has no unfinished upload of %s" % (who, name))
            freed = 0
            for path, _ in found:
                fd = _locked(path, name)
                try:
                    freed += os.fstat(fd).st_size
                    self._remove(path)
                finally:
                    os.close(fd)
        return freed

    def _record(self, path: str) -> dict | None:
        return None if self.records is None else self.records.get(RECORD_PREFIX + os.path.basename(path))

    def _remove(self, path: str) -> None:
        """Unlink a partial file (its lock held, or nobody's) and forget its record."""
        _unlink_quietly(path)
        if self.records is not None:
            self.records.delete(RECORD_PREFIX + os.path.basename(path))

    def _check_size(self, name: str, total: int) -> None:
        if total > self.max_size:
            raise UploadError(413, "%s of %d bytes is larger than the limit of %d bytes" % (name, total, self.max_size))
        if total < self.head_size:
            raise UploadError(415, "%s of %d bytes is too small: it cannot be a valid image" % (name, total))

    def _check_space(self, name: str, needed: int, own: str) -> None:
        """507 unless ``needed`` bytes fit beside the reserve and what the other uploads being written
        (all but the one at ``own``) still have to write.  Call it under the directory's upload lock."""
        fs = os.statvfs(self.directory)
        free = fs.f_bavail * fs.f_frsize
        promised = reservations.pending(self._partials(), own)
        if needed > free - self.reserve - promised:
            raise UploadError(507, "not enough space for %s: %d more bytes are needed, %d are free, %d are kept "
                                   "in reserve and %d are promised to uploads under way"
                                   % (name, needed, free, self.reserve, promised))

    def _check_quota(self, name: str, who: str, total: int) -> None:
        """507 if ``who``'s other unfinished uploads and this one would declare more than ``per_user``."""
        if self.per_user is None:
            return
        own = self._prefix(who, name)
        others = sum(t for path, t in self._partials(self._prefix(who)) if not os.path.basename(path).startswith(own))
        if others + total > self.per_user:
            raise UploadError(507, "your unfinished uploads declare %d bytes; with %s (%d) that is over the limit "
                                   "of %d per uploader: finish or discard some first (burner.uploads)"
                              % (others, name, total, self.per_user))

    # -- receiving -----------------------------------------------------------------------

    def receive(self, name: str, who: str, length: int | None, content_range: ContentRange | None,
                read: Callable[[int], bytes]) -> Progress | Finished:
        """Handle one PUT: every check first, then the body.  UploadError on refusal."""
        if length is None:
            raise UploadError(411, "a Content-Length header is required (chunked bodies are not supported)")
        if content_range is None:
            total, start = length, 0
        elif content_range.start is None:
            if length:
                raise UploadError(400, "Content-Range 'bytes */TOTAL' asks what the server holds: send no body")
            total, start = content_range.total, None
        else:
            assert content_range.end is not None     # parse_content_range sets both start and end, or neither
            total, start = content_range.total, content_range.start
            if content_range.end - start + 1 != length:
                raise UploadError(400, "Content-Range covers %d bytes but Content-Length is %d"
                                  % (content_range.end - start + 1, length))
        self._check_size(name, total)
        final = self._final(name)
        if os.path.lexists(final):
            raise UploadError(409, "%s exists; delete it first" % name)
        # Taking the partial file and checking for room, one upload at a time (reservations).
        with reservations.one_at_a_time(self.directory):
            self._check_quota(name, who, total)
            partial = _Partial.take(self, name, who, total, fresh=content_range is None)
            try:
                held = partial.size()
                self._check_space(name, total - held, partial.path)
            except BaseException:
                partial.close()
                raise
        with partial:
            if start is None:
                return self._progress(name, held, total, partial.mtime())
            if start != held:
                raise UploadError(409, "the server holds %d bytes of your upload of %s; send from byte %d"
                                  % (held, name, held), {"Upload-Offset": str(held)})
            received = partial.write_from(read, length)
            if received < total:
                return self._progress(name, received, total, partial.mtime())
            return partial.finish(final)

    # -- housekeeping --------------------------------------------------------------------

    def sweep(self, now: float | None = None) -> list[str]:
        """Remove partial files nobody has written to for ``expiry`` seconds, and those already linked
        into place (an upload whose process died between the link and the unlink); their paths."""
        now = time.time() if now is None else now
        removed: list[str] = []
        try:
            with reservations.one_at_a_time(self.directory):   # never while an upload takes its file
                self._sweep(list(os.scandir(self.directory)), now, removed)
        except (FileNotFoundError, PermissionError):   # none yet, or not ours (an OS user's session)
            pass
        return removed

    def _sweep(self, entries: list[os.DirEntry], now: float, removed: list[str]) -> None:
        for entry in entries:
            if not entry.name.startswith((PARTIAL_PREFIX, LEGACY_PREFIX)):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode) or (now - st.st_mtime < self.expiry and st.st_nlink == 1):
                    continue
                fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue                   # gone meanwhile, or not ours to touch
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                # Still the same idle file under that name, now that nobody can be writing it.
                again = os.lstat(entry.path)
                if (again.st_ino, again.st_mtime) == (os.fstat(fd).st_ino, st.st_mtime):
                    self._remove(entry.path)
                    removed.append(entry.path)
            except OSError:                # BlockingIOError: an upload is writing it right now
                pass
            finally:
                os.close(fd)


class _Partial:
    """One uploader's partial file of one upload, locked for the duration of a request."""

    def __init__(self, uploads: Uploads, name: str, path: str, fd: int, total: int):
        self.uploads = uploads
        self.name = name
        self.path = path
        self.fd = fd
        self.total = total
        self.finished = False
        self.digest: _Hasher | None = None

    @classmethod
    def take(cls, uploads: Uploads, name: str, who: str, total: int, fresh: bool) -> "_Partial":
        """Open (creating if needed) and lock ``who``'s partial file of ``name``.

        ``fresh``: a whole upload, which starts over whatever was there.  A resumed upload
        must declare the same total as the partial file it continues.
        """
        prefix = uploads._prefix(who, name)
        existing = uploads._partials(prefix)
        for _, other_total in existing:
            if other_total != total and not fresh:
                raise UploadError(409, "your partial upload of %s is of %d bytes, not %d: send the whole file "
                                       "without Content-Range to start again" % (name, other_total, total),
                                  {"Upload-Length": str(other_total)})
        path = os.path.join(uploads.directory, "%s%d" % (prefix, total))
        partial = cls(uploads, name, path, _locked(path, name, os.O_CREAT), total)
        try:
            if os.fstat(partial.fd).st_nlink == 0:          # swept or replaced between open and lock
                raise UploadError(409, "your upload of %s was being cleaned up; try again" % name,
                                  {"Retry-After": "1"})
            if uploads.records is not None and uploads._record(path) is None:
                uploads.records.put(RECORD_PREFIX + os.path.basename(path), {"who": who, "name": name})
            if fresh:
                os.ftruncate(partial.fd, 0)
                for other, _ in existing:   # one of another size: removed once nobody writes it
                    if other != path:
                        try:
                            other_fd = _locked(other, name)
                        except FileNotFoundError:
                            continue
                        uploads._remove(other)
                        os.close(other_fd)
        except BaseException:
            partial.close()
            raise
        return partial

    def __enter__(self) -> "_Partial":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the lock.  A partial file that received nothing is not worth keeping."""
        if self.fd < 0:
            return
        if self.digest is not None:
            self.digest.close()
        if not self.finished and os.fstat(self.fd).st_size == 0:
            self.uploads._remove(self.path)
        os.close(self.fd)
        self.fd = -1

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def mtime(self) -> float:
        return os.fstat(self.fd).st_mtime

    def write_from(self, read: Callable[[int], bytes], length: int) -> int:
        """Append ``length`` bytes from ``read``, hashing them; the file's size afterwards.

        UploadError if the body is cut short (what arrived is kept), the disk is full,
        or the head of the file is not acceptable.
        """
        offset = self.size()
        end = offset + length
        head_checked = offset >= self.uploads.head_size
        self.digest = _Hasher(self.fd, offset)
        try:
            while offset < end:
                chunk = read(min(CHUNK, end - offset))
                if not chunk:
                    raise BodyError(400, "the body ended early")
                _write_all(self.fd, chunk, offset)
                self.digest.update(chunk)
                offset += len(chunk)
                if not head_checked and offset >= self.uploads.head_size:
                    head_checked = True
                    problem = self.uploads.check_head(os.pread(self.fd, self.uploads.head_size, 0))
                    if problem is not None:
                        os.ftruncate(self.fd, 0)     # nothing worth resuming: close() removes it
                        raise UploadError(415, problem)
        except BodyError as e:
            os.fsync(self.fd)
            raise UploadError(e.status, "%s: the upload of %s stopped after %d of %d bytes; resume from byte %d"
                              % (e, self.name, offset, self.total, offset), {"Upload-Offset": str(offset)}) from None
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                # Something besides uploads filled the disk: what this one holds is given back at once
                # (close() removes the emptied file) rather than kept for days by an upload that cannot end.
                held = self.size()
                os.ftruncate(self.fd, 0)
                raise UploadError(507, "no space left for %s after %d of %d bytes: the partial upload was removed "
                                       "to free the space; upload it again when there is room"
                                  % (self.name, held, self.total), {"Upload-Offset": "0"}) from None
            raise
        return offset

    def finish(self, final: str) -> Finished:
        """Sync the complete file and link it into place under ``final``, atomically."""
        assert self.digest is not None  # write_from, which always comes first, made it
        os.fsync(self.fd)               # meanwhile the hashing thread finishes
        digest = self.digest.hexdigest()
        try:
            os.link(self.path, final)     # never replaces a file that appeared meanwhile
        except FileExistsError:
            self.uploads._remove(self.path)
            raise UploadError(409, "%s was uploaded by someone else meanwhile; delete it first" % self.name) from None
        self.uploads._remove(self.path)
        self.finished = True
        return Finished(self.name, final, digest, os.fstat(self.fd))


class _Hasher:
    """SHA-256 of an upload, computed in a thread beside the one receiving and writing it.

    Hashing (about 1.3 GB/s) is as slow as the rest of receiving put together, and
    hashlib, pwrite and mod_python's read all release the GIL: on two cores the two
    overlap.  At most :data:`QUEUED` chunks wait (flat memory).  A resumed upload first
    hashes what the file held already, in the same thread, while the rest arrives.
    """

    QUEUED = 8

    def __init__(self, fd: int, held: int):
        self._digest = hashlib.sha256()
        self._chunks: queue.Queue[bytes | None] = queue.Queue(self.QUEUED)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fd, held), name="upload-sha256", daemon=True)
        self._thread.start()

    def _run(self, fd: int, held: int) -> None:
        try:
            offset = 0
            while offset < held:
                data = os.pread(fd, min(CHUNK, held - offset), offset)
                if not data:
                    raise OSError(errno.EIO, "the partial file ended after %d of %d bytes" % (offset, held))
                self._digest.update(data)
                offset += len(data)
        except BaseException as e:    # reported by hexdigest(); keep draining so the writer never blocks
            self._error = e
        while (chunk := self._chunks.get()) is not None:
            if self._error is None:
                self._digest.update(chunk)

    def update(self, chunk: bytes) -> None:
        self._chunks.put(chunk)

    def close(self) -> None:
        """No more chunks: wait for the thread (idempotent)."""
        if self._thread.is_alive():
            self._chunks.put(None)
            self._thread.join()

    def hexdigest(self) -> str:
        self.close()
        if self._error is not None:
            raise self._error
        return self._digest.hexdigest()


def _locked(path: str, name: str, create: int = 0) -> int:
    """``path`` opened and exclusively locked; UploadError(409) if an upload is writing it."""
    fd = os.open(path, _OPEN_FLAGS | create, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UploadError(409, "an upload of %s by you is still in progress; try again shortly" % name,
                          {"Retry-After": str(RETRY_AFTER)}) from None
    return fd


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
