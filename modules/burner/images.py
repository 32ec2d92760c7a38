# SPDX-License-Identifier: Apache-2.0
"""The images directory as the web tier sees it: listing, uploads, deletion.

Uploads go through :class:`clarens.web.uploads.Uploads` (resumable, streamed to
disk, hashed on the way, linked into place atomically, never over an existing
image); what an image is (its name, its ISO 9660 signature) is the one rule the
helper applies too (:mod:`clarens.burnerd.images`).  This module keeps size,
SHA-256, upload time and uploader in tdb per image.  An image that was put in the
directory some other way is hashed in the background (:mod:`clarens.web.digests`):
until then it is listed with ``hashing`` progress and no SHA-256, so a listing costs
a ``stat`` and a tdb read per file, whatever the images' sizes.  Files whose names
are not image names (not printable UTF-8, not ending in ``.iso``...) are left out of
the listing, with one log line each, rather than offered for a burn the helper would
refuse.  Files are examined without following symlinks.
"""

from __future__ import annotations

import datetime
import logging
import os
import stat
from typing import Callable

from clarens.db import Database
from clarens.image_names import NAME_RULES, name_problem
from clarens.web.digests import Digests, current
from clarens.web.uploads import ContentRange, Finished, Progress, Uploads

from .refusals import refused


def check_name(name: str) -> str:
    """``name`` if it is an acceptable image name, else its refusal's fault."""
    problem = name_problem(name)
    if problem is not None:
        raise refused(*problem)
    return name


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(int(seconds), datetime.timezone.utc).replace(tzinfo=None)


class ImageStore:
    """Images in ``directory`` with their metadata in ``db``; uploads through ``uploads``."""

    REPORTED = 100            # odd names logged per process, at most

    def __init__(self, directory: str, db: Database, uploads: Uploads, log: logging.Logger):
        self.directory = directory
        self.db = db
        self.uploads = uploads
        self.log = log
        self.digests = Digests(directory, db, "image:")
        self._reported: set[str] = set()

    def _describe(self, name: str, st: os.stat_result) -> dict:
        """The public record of an image: its SHA-256 if known for the file as it is now, else
        ``hashing`` progress ({percent, bytes}) and a background process asked to compute it."""
        meta = self.digests.known(name)
        if meta is not None and current(meta, st):
            return {"name": name, "size": st.st_size, "sha256": meta["sha256"],
                    "uploaded": _utc(meta.get("uploaded", st.st_mtime)), "uploaded_by": meta.get("by", ""),
                    "hashing": None}
        self.digests.request()
        progress = self.digests.progress() or {}
        done = progress.get("bytes", 0) if progress.get("name") == name else 0
        return {"name": name, "size": st.st_size, "sha256": "", "uploaded": _utc(st.st_mtime), "uploaded_by": "",
                "hashing": {"percent": int(100 * done / st.st_size) if st.st_size else 0, "bytes": done}}

    def _visible(self, name: str) -> bool:
        """Whether ``name`` may be listed (an image's name); the first time one may not, one log line
        says so (hidden files, uploads in progress, are not images and go unmentioned)."""
        if name_problem(name) is None:
            return True
        if not name.startswith(".") and name not in self._reported and len(self._reported) < self.REPORTED:
            self._reported.add(name)
            self.log.warning("images_dir holds a file not named as an image (%s), left out of the listing: %s",
                             NAME_RULES, ascii(name))
        return False

    def list(self) -> list[dict]:
        """Every image (regular files named as images), sorted by name."""
        out = []
        for name in sorted(os.listdir(self.directory)):
            if not self._visible(name):
                continue
            try:
                st = os.lstat(os.path.join(self.directory, name))
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                out.append(self._describe(name, st))
        return out

    def get(self, name: str) -> dict:
        """One image's record; the fault image_not_found if there is no such image."""
        try:
            st = os.lstat(os.path.join(self.directory, check_name(name)))
        except FileNotFoundError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            raise refused("image_not_found", "there is no image %s" % ascii(name))
        return self._describe(name, st)

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
            raise refused("not_yours", "only its uploader or an administrator may delete %s" % ascii(name))
        os.unlink(os.path.join(self.directory, name))
        self.db.delete("image:" + name)
