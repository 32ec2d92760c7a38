"""The images directory as the web tier sees it: listing, streaming uploads, deletion.

Uploads are streamed to a hidden temporary file in the images directory (never
held whole in memory), hashed while they are written, checked for the ISO 9660
signature, and only then linked into place under their name, atomically and
never over an existing image.  Whatever goes wrong, the temporary file is
removed: a failed or partial upload leaves nothing behind.

Size, SHA-256, upload time and uploader are kept in tdb per image; an image
that was put in the directory some other way is hashed when first listed.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import os
import re
import secrets
import stat
from typing import Callable

from clarens.db import Database
from clarens.faults import INVALID_PARAMS, Fault

ISO_MAGIC, ISO_MAGIC_OFFSET = b"CD001", 32769
CHUNK = 1 << 20
NAME_RULES = "1-200 characters ending in .iso, without '/', control characters or a leading '.'"
_NAME_RE = re.compile(r"[^/\x00-\x1f\x7f.][^/\x00-\x1f\x7f]{0,195}\.[iI][sS][oO]\Z")


class UploadError(Exception):
    """An upload refused or failed: ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def check_name(name: str) -> str:
    """``name`` if it is acceptable for an image, else Fault(INVALID_PARAMS)."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or len(name.encode("utf-8")) > 255:
        raise Fault(INVALID_PARAMS, "invalid image name %r: use %s" % (name, NAME_RULES))
    return name


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(int(seconds), datetime.timezone.utc).replace(tzinfo=None)


class ImageStore:
    """Images in ``directory`` with their metadata in ``db``."""

    def __init__(self, directory: str, db: Database, max_size: int):
        self.directory = directory
        self.db = db
        self.max_size = max_size

    def _describe(self, name: str, st: os.stat_result) -> dict:
        """The public record of an image, hashing it first if its metadata is missing or stale."""
        meta = self.db.get("image:" + name)
        if not meta or (meta["size"], meta["ino"], meta["mtime_ns"]) != (st.st_size, st.st_ino, st.st_mtime_ns):
            digest = hashlib.sha256()
            with open(os.path.join(self.directory, name), "rb") as f:
                for chunk in iter(lambda: f.read(CHUNK), b""):
                    digest.update(chunk)
            meta = {"size": st.st_size, "ino": st.st_ino, "mtime_ns": st.st_mtime_ns, "sha256": digest.hexdigest(),
                    "uploaded": st.st_mtime, "by": ""}
            self.db.put("image:" + name, meta)
        return {"name": name, "size": meta["size"], "sha256": meta["sha256"], "uploaded": _utc(meta["uploaded"]),
                "uploaded_by": meta["by"]}

    def list(self) -> list[dict]:
        """Every image (regular, non-hidden files), sorted by name."""
        out = []
        for name in sorted(os.listdir(self.directory)):
            if name.startswith("."):
                continue
            st = os.lstat(os.path.join(self.directory, name))
            if stat.S_ISREG(st.st_mode):
                out.append(self._describe(name, st))
        return out

    def get(self, name: str) -> dict:
        """One image's record; Fault(INVALID_PARAMS) if there is no such image."""
        try:
            st = os.lstat(os.path.join(self.directory, check_name(name)))
        except FileNotFoundError:
            raise Fault(INVALID_PARAMS, "there is no image %r" % name) from None
        if not stat.S_ISREG(st.st_mode):
            raise Fault(INVALID_PARAMS, "there is no image %r" % name)
        return self._describe(name, st)

    def receive(self, name: str, length: int | None, read: Callable[[int], bytes], who: str) -> dict:
        """Store an upload of ``length`` bytes read with ``read``; its record.  UploadError on refusal."""
        try:
            check_name(name)
        except Fault as fault:
            raise UploadError(400, fault.message) from None
        if length is None:
            raise UploadError(411, "a Content-Length header is required")
        if length > self.max_size:
            raise UploadError(413, "image of %d bytes is larger than the limit of %d" % (length, self.max_size))
        if length < ISO_MAGIC_OFFSET + len(ISO_MAGIC):
            raise UploadError(415, "%r is too small to be an ISO 9660 image" % name)
        final = os.path.join(self.directory, name)
        if os.path.lexists(final):
            raise UploadError(409, "an image called %r exists; delete it first" % name)
        temp = os.path.join(self.directory, ".upload-%s.part" % secrets.token_hex(8))
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
        try:
            digest, received, head = hashlib.sha256(), 0, b""
            with os.fdopen(fd, "wb", buffering=0) as out:
                while received < length:
                    chunk = read(min(CHUNK, length - received))
                    if not chunk:
                        raise UploadError(400, "upload ended after %d of %d bytes" % (received, length))
                    if len(head) < ISO_MAGIC_OFFSET + len(ISO_MAGIC):
                        head += chunk[:ISO_MAGIC_OFFSET + len(ISO_MAGIC) - len(head)]
                        if len(head) >= ISO_MAGIC_OFFSET + len(ISO_MAGIC) and \
                                head[ISO_MAGIC_OFFSET:ISO_MAGIC_OFFSET + len(ISO_MAGIC)] != ISO_MAGIC:
                            raise UploadError(415, "%r is not an ISO 9660 image (no CD001 signature)" % name)
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                os.fsync(out.fileno())
                st = os.fstat(out.fileno())
            try:
                os.link(temp, final)   # atomic, and never replaces an image that appeared meanwhile
            except FileExistsError:
                raise UploadError(409, "an image called %r exists; delete it first" % name) from None
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise UploadError(507, "no space left for the image") from None
            raise
        finally:
            os.unlink(temp)
        self.db.put("image:" + name, {"size": st.st_size, "ino": st.st_ino, "mtime_ns": st.st_mtime_ns,
                                      "sha256": digest.hexdigest(), "uploaded": st.st_mtime, "by": who})
        return self._describe(name, st)

    def delete(self, name: str, who: str, admin: bool) -> None:
        """Remove an image: its uploader or an admin only."""
        record = self.get(name)
        if not admin and record["uploaded_by"] != who:
            raise Fault(INVALID_PARAMS, "only its uploader or an administrator may delete %r" % name)
        os.unlink(os.path.join(self.directory, name))
        self.db.delete("image:" + name)
