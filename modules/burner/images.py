"""The images directory as the web tier sees it: listing, uploads, deletion.

Uploads go through :class:`clarens.web.uploads.Uploads` (resumable, streamed to
disk, hashed on the way, linked into place atomically, never over an existing
image); this module adds what an image is (an ISO 9660 file with an acceptable
name) and keeps size, SHA-256, upload time and uploader in tdb per image.  An
image that was put in the directory some other way is hashed when first listed.
Files are examined through a descriptor opened without following symlinks, so a
name swapped for a symlink or a FIFO is skipped, never followed or blocked on.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import stat
from typing import Callable

from clarens import text
from clarens.db import Database
from clarens.faults import INVALID_PARAMS, Fault
from clarens.web.uploads import CHUNK, ContentRange, Finished, Progress, Uploads

ISO_MAGIC, ISO_MAGIC_OFFSET = b"CD001", 32769
NAME_RULES = "1-200 characters ending in .iso, without '/', a leading '.', or control or formatting characters"
_NAME_RE = re.compile(r"[^/.][^/]{0,195}\.[iI][sS][oO]\Z")
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def check_name(name: str) -> str:
    """``name`` if it is acceptable for an image, else Fault(INVALID_PARAMS)."""
    if not isinstance(name, str) or not _NAME_RE.match(name) \
            or not text.printable(name) \
            or len(name.encode("utf-8")) > 255:
        raise Fault(INVALID_PARAMS, "invalid image name %s: use %s" % (ascii(name)[:300], NAME_RULES))
    return name


def check_iso_head(head: bytes) -> str | None:
    """Why the first bytes of an upload are not an ISO 9660 image, or None if they are."""
    if head[ISO_MAGIC_OFFSET:ISO_MAGIC_OFFSET + len(ISO_MAGIC)] != ISO_MAGIC:
        return "not an ISO 9660 image (no CD001 signature at byte %d)" % ISO_MAGIC_OFFSET
    return None


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(int(seconds), datetime.timezone.utc).replace(tzinfo=None)


class ImageStore:
    """Images in ``directory`` with their metadata in ``db``; uploads through ``uploads``."""

    def __init__(self, directory: str, db: Database, uploads: Uploads):
        self.directory = directory
        self.db = db
        self.uploads = uploads

    def _describe(self, name: str, st: os.stat_result) -> dict | None:
        """The public record of an image, hashing it first if its metadata is missing or stale
        (None if the file changed under its name meanwhile)."""
        meta = self.db.get("image:" + name)
        if not meta or (meta["size"], meta["ino"], meta["mtime_ns"]) != (st.st_size, st.st_ino, st.st_mtime_ns):
            digest = self._hash(name, st)
            if digest is None:
                return None
            meta = {"size": st.st_size, "ino": st.st_ino, "mtime_ns": st.st_mtime_ns, "sha256": digest,
                    "uploaded": st.st_mtime, "by": ""}
            self.db.put("image:" + name, meta)
        return {"name": name, "size": meta["size"], "sha256": meta["sha256"], "uploaded": _utc(meta["uploaded"]),
                "uploaded_by": meta["by"]}

    def _hash(self, name: str, st: os.stat_result) -> str | None:
        """SHA-256 of the regular file ``name`` if it is still the inode ``st`` describes."""
        try:
            fd = os.open(os.path.join(self.directory, name), _OPEN_FLAGS)
        except OSError:
            return None
        try:
            now = os.fstat(fd)
            if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                return None
            digest = hashlib.sha256()
            offset = 0
            while data := os.pread(fd, CHUNK, offset):
                digest.update(data)
                offset += len(data)
            return digest.hexdigest()
        finally:
            os.close(fd)

    def list(self) -> list[dict]:
        """Every image (regular, non-hidden files), sorted by name."""
        out = []
        for name in sorted(os.listdir(self.directory)):
            if name.startswith("."):
                continue
            try:
                st = os.lstat(os.path.join(self.directory, name))
            except FileNotFoundError:
                continue
            record = self._describe(name, st) if stat.S_ISREG(st.st_mode) else None
            if record is not None:
                out.append(record)
        return out

    def get(self, name: str) -> dict:
        """One image's record; Fault(INVALID_PARAMS) if there is no such image."""
        try:
            st = os.lstat(os.path.join(self.directory, check_name(name)))
        except FileNotFoundError:
            st = None
        record = self._describe(name, st) if st is not None and stat.S_ISREG(st.st_mode) else None
        if record is None:
            raise Fault(INVALID_PARAMS, "there is no image %s" % ascii(name))
        return record

    def status(self, name: str, who: str) -> Progress | None:
        """How much of image ``name`` the server holds (for ``who``'s upload of it)."""
        return self.uploads.status(check_name(name), who)

    def receive(self, name: str, who: str, length: int | None, content_range: ContentRange | None,
                read: Callable[[int], bytes]) -> Progress | dict:
        """Take one PUT of an upload: the progress of an unfinished one, or the new image's record.
        UploadError on refusal."""
        result = self.uploads.receive(check_name(name), who, length, content_range, read)
        if isinstance(result, Finished):
            st = result.stat
            self.db.put("image:" + name, {"size": st.st_size, "ino": st.st_ino, "mtime_ns": st.st_mtime_ns,
                                          "sha256": result.sha256, "uploaded": st.st_mtime, "by": who})
            return self.get(name)
        return result

    def delete(self, name: str, who: str, admin: bool) -> None:
        """Remove an image: its uploader or an admin only."""
        record = self.get(name)
        if not admin and record["uploaded_by"] != who:
            raise Fault(INVALID_PARAMS, "only its uploader or an administrator may delete %s" % ascii(name))
        os.unlink(os.path.join(self.directory, name))
        self.db.delete("image:" + name)
