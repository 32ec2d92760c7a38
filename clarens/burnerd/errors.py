# SPDX-License-Identifier: Apache-2.0
"""Refusals: every error the burner answers with has a code, a reason, an HTTP status and a fault code.

The codes are part of the API.  :data:`STATUS` is the single table of the helper's
codes and the HTTP status each is sent with; :data:`FAULTS` the fault code each
refusal a caller can act on has in the web tier's answers (``burner.*`` methods, the
upload route), documented in ``docs/clients.md``.  A job that fails ends with a code
too (its ``error_code``, :class:`Failed`).
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

# The burner's fault codes: the refusals a caller causes or can act on.  The web tier answers
# them as Fault(FAULTS[code], "CODE: message"); shutting_down and forbidden (the helper refuses
# Apache's uid) are -32002, service unavailable; any other helper code means the web tier and
# its helper disagree, and is -32500.  Numbers are never reused.
FAULTS = {
    # the image's name (clarens.image_names.name_problem)
    "bad_image_name": 2001,
    "absolute_path": 2002,
    "parent_reference": 2003,
    "subdirectory": 2004,
    "hidden_file": 2005,
    # the file it names
    "image_not_found": 2010,
    "symlink": 2011,
    "not_regular": 2012,
    "image_changed": 2013,
    "hard_linked": 2014,
    "wrong_owner": 2015,
    "not_iso": 2016,
    "too_large": 2017,
    # the drive, the options, the caller
    "unknown_drive": 2020,
    "bad_speed": 2021,
    "bad_option": 2022,          # the web tier's own: an option it does not know, or of the wrong type
    "bad_identity": 2023,        # the caller's name is longer or stranger than the helper records
    # jobs and drives
    "job_not_found": 2030,
    "not_cancellable": 2031,
    "drive_busy": 2032,
    "eject_failed": 2033,
    # the web tier's own: images and uploads
    "not_yours": 2040,           # another uploader's image or upload
    "upload_not_found": 2041,
    "upload_in_progress": 2042,  # a request is still sending it
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
