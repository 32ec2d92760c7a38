# SPDX-License-Identifier: Apache-2.0
"""The burner helper: burns ISO images to CD/DVD writers for the web tier, without giving Apache the drive.

A separate process, running as a user that may open the drives, listening on a
Unix socket that only the web tier can reach (file permissions, then the
peer's uid from SO_PEERCRED).  It speaks HTTP/1.1 with JSON bodies, so it can be
driven with ``curl --unix-socket SOCKET http://burner/v1/...``.  The web tier
authenticates users and passes the user's identity string with each job; the
helper trusts it for that, and checks everything else itself.  Jobs live in a
tdb file and survive restarts of either side.  See ``clarens/burnerd/README.md``.

API (version 1)
===============

Every response body is JSON.  Refusals are ``{"error": {"code": CODE, "message": TEXT}}``
with the HTTP status of :data:`clarens.burnerd.errors.STATUS`.  Every request is
answered within about 1.5 s: nothing waits for a drive, and a cancel or an eject
still under way then answers 202 (a success) and finishes in the background.

``GET /v1/status``
    200 ``{"version", "pid", "started", "uptime", "drives_busy", "queued",
    "drives": {NAME: {"busy", "current_job", "queued"}}, "jobs": {STATE: count}}``
``GET /v1/drives``
    200 ``{"drives": [DRIVE...]}``; a DRIVE is ``{"name", "kind", "dev", "capacity"
    (bytes), "max_speed", "busy", "current_job", "queued", "medium"}``.  ``medium`` is
    ``{"present", "size"}`` for a stdio: drive (the pseudo-disc file), and for a
    real drive ``{"current", "status", "free_bytes", "ok", "checked"}`` as xorriso
    last reported it: looked at in the background when asked and more than a few
    seconds old, ``checked`` when (all null until then); ``{"busy": true}`` while a
    job or an eject uses the drive.
``GET /v1/drives/NAME``
    200 ``{"drive": DRIVE}``; 404 ``unknown_drive``
``POST /v1/drives/NAME/eject``
    200 ``{"drive", "ejected": true}``; 202 ``{"drive", "ejected": false,
    "ejecting": true}`` if it is still ejecting after 1.5 s (the drive is busy until
    it is done); 404 ``unknown_drive``, 409 ``drive_busy`` (a job or eject is using
    the drive, or another program holds its lock), 502 ``eject_failed``
``POST /v1/jobs`` with ``{"image", "drive", "identity", "speed"?, "verify"?}``
    201 ``{"job": JOB}`` (and ``Location: /v1/jobs/ID``).  ``image`` is relative
    to the images directory; ``speed`` an integer 1..max_speed (a multiple of the
    medium's 1x) or null for the drive's best; ``verify`` defaults to true.
    400 with ``bad_request``, ``unknown_drive``, ``bad_speed``, ``bad_identity``,
    ``bad_image_name``, ``absolute_path``, ``parent_reference``, ``subdirectory``,
    ``hidden_file``, ``image_not_found``, ``symlink``, ``not_regular``,
    ``image_changed``, ``hard_linked``, ``wrong_owner``, ``not_iso``, ``too_large``
    (see :mod:`clarens.burnerd.images`).
``GET /v1/jobs[?identity=...&state=...&drive=...]``
    200 ``{"jobs": [JOB...]}`` in submission order
``GET /v1/jobs/ID``
    200 ``{"job": JOB}``; 404 ``job_not_found``
``POST /v1/jobs/ID/cancel``
    200 ``{"job": JOB}`` once the job has stopped (state ``cancelled``); 202
    ``{"job": JOB}`` (still ``burning`` or ``verifying``) if it is still stopping
    after 1.5 s: it ends ``cancelled`` shortly after;
    404 ``job_not_found``, 409 ``not_cancellable`` (already finished)

Any endpoint: 403 ``forbidden`` (peer uid not allowed; the connection is then
closed), 404 ``not_found``, 405 ``method_not_allowed``, 413 ``body_too_large``,
500 ``internal_error``.

A request that changes something (any but GET and HEAD) may carry
``X-Clarens-Deadline: UNIX-TIME`` (:data:`DEADLINE_HEADER`), when its caller stops
waiting for the answer: read after that, or after the caller has closed the
connection, it is not carried out and the connection is closed unanswered (so a
caller told "unavailable" is not contradicted later); not a number: 400 ``bad_request``.

A JOB is described in :mod:`clarens.burnerd.jobs`.  Its ``state`` is one of
``queued``, ``burning``, ``verifying``, ``done``, ``failed``, ``cancelled``,
``interrupted``; a job that did not end ``done`` has ``error`` (text) and
``error_code``: ``burn_failed``, ``verify_mismatch``, ``verify_failed``,
``image_unreadable``, ``no_medium``, ``too_large``, ``drive_busy`` (another
program holds the drive's lock), ``cancelled``, ``interrupted``,
``internal_error``, ``unknown_drive``, or an image refusal code (the image is
checked again when the job starts).

Modules: :mod:`~clarens.burnerd.config`, :mod:`~clarens.burnerd.sockets`,
:mod:`~clarens.burnerd.peercred`, :mod:`~clarens.burnerd.server` (HTTP),
:mod:`~clarens.burnerd.service` (what each request does),
:mod:`~clarens.burnerd.images` (sanitising), :mod:`~clarens.burnerd.jobs` (tdb),
:mod:`~clarens.burnerd.worker` (per-drive queues), :mod:`~clarens.burnerd.backends`
(what each kind of drive does), :mod:`~clarens.burnerd.xorriso`,
:mod:`~clarens.burnerd.processes` (starting and stopping them),
:mod:`~clarens.burnerd.verify`, :mod:`~clarens.burnerd.drivelock`
(one writer per drive), :mod:`~clarens.burnerd.daemon`,
:mod:`~clarens.burnerd.client` (for the web tier and the CLI).
"""

DEADLINE_HEADER = "X-Clarens-Deadline"   # wall-clock time after which the caller no longer waits for a change
