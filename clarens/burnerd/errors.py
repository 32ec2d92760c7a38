# SPDX-License-Identifier: Apache-2.0
"""Refusals: every error the helper answers with has a code, a reason and an HTTP status.

The codes are part of the API (the web tier maps them to messages for users);
:data:`STATUS` is the single table of codes and the status each is sent with.
A job that fails ends with a code too (its ``error_code``, :class:`Failed`).
"""

from __future__ import annotations

STATUS = {
    # the request itself
    "bad_request": 400,          # not JSON, not an object, a field missing or of the wrong type
    "body_too_large": 413,
    "not_found": 404,            # no such endpoint
    "method_not_allowed": 405,
    "not_implemented": 501,      # a method no endpoint takes (BREW)
    "uri_too_long": 414,
    "headers_too_large": 431,
    "bad_http_version": 505,
    "forbidden": 403,            # the connecting uid is not in allowed_uids
    # what a job names
    "bad_image_name": 400,       # empty, too long, characters clarens.text refuses
    "absolute_path": 400,
    "parent_reference": 400,     # a ".." component
    "subdirectory": 400,         # a "/": images are files directly in images_dir
    "hidden_file": 400,          # a leading ".": uploads in progress
    "image_not_found": 400,
    "symlink": 400,              # any symlink, even one that stays inside images_dir
    "not_regular": 400,          # a directory, FIFO, device...
    "image_changed": 400,        # another file took the name while it was being opened
    "hard_linked": 400,          # more than one link
    "wrong_owner": 400,          # not owned by images_dir's owner (the web tier, which writes uploads)
    "not_iso": 400,              # no ISO 9660 signature "CD001" at byte 32769
    "too_large": 400,            # larger than the drive's medium
    "unknown_drive": 400,        # not a [drive:NAME] of the configuration (404 in a URL path)
    "bad_speed": 400,
    "bad_identity": 400,
    # state
    "job_not_found": 404,
    "drive_busy": 409,           # a job or an eject is using the drive, or another program holds its lock
    "not_cancellable": 409,      # the job has already finished
    "eject_failed": 502,         # xorriso could not eject
    "shutting_down": 503,
    "internal_error": 500,
}


class Refused(Exception):
    """A request the helper will not carry out; ``code`` is a key of :data:`STATUS`."""

    def __init__(self, code: str, message: str, status: int | None = None):
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.status = status if status is not None else STATUS[code]

    def __str__(self) -> str:
        return "%s: %s" % (self.code, self.message)

    def as_json(self) -> dict:
        """The response body: ``{"error": {"code": ..., "message": ...}}``."""
        return {"error": {"code": self.code, "message": self.message}}


class Failed(Exception):
    """A job that cannot go on, for a reason of the drive's (raised by a backend): ``code`` becomes the
    job's ``error_code`` (``no_medium``, ``too_large``, ``burn_failed``...), ``message`` its ``error``."""

    def __init__(self, code: str, message: str):
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return "%s: %s" % (self.code, self.message)
