# SPDX-License-Identifier: Apache-2.0
"""Unfinished uploads as callers see them: their own, or everyone's for administrators.

The partial files and their records are :class:`clarens.web.uploads.Uploads`'s; this
module turns its answers and refusals into the burner's methods' results and faults
(``burner.uploads``, ``burner.discard_upload``).
"""

from __future__ import annotations

import datetime

from clarens.web.uploads import UploadError, Uploads

from .refusals import refused


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(int(seconds), datetime.timezone.utc).replace(tzinfo=None)


def listing(uploads: Uploads, who: str, admin: bool) -> list[dict]:
    """``who``'s unfinished uploads (everyone's for an administrator), times as dateTime."""
    return [dict(u, modified=_utc(u["modified"]), expires=_utc(u["expires"]))
            for u in uploads.unfinished(None if admin else who)]


def discard(uploads: Uploads, name: str, who: str, admin: bool, uploader: str | None) -> int:
    """Remove an unfinished upload of ``name``: ``who``'s own, or (administrators) ``uploader``'s;
    the bytes it held."""
    if uploader is not None and uploader != who and not admin:
        raise refused("not_yours", "only an administrator may discard another uploader's upload")
    try:
        return uploads.discard(name, uploader or who)
    except UploadError as e:     # 404: there is none; 409: a request is still sending it
        raise refused("upload_not_found" if e.status == 404 else "upload_in_progress", str(e)) from None
