"""burner: burn ISO images to CD/DVD writers, verify the disc, eject it.

The work is done by the burner helper (``python3 -m clarens.burnerd``), a
separate process that may open the drives; this module authorises callers and
talks to it over its Unix socket.  Images are uploaded with
``PUT /clarens/images/NAME`` (authorised as ``burner.upload``; resumable, see
:mod:`clarens.web.uploads`).  The web page is ``GET /clarens/burner``.  Users see
and cancel only their own jobs; members of the admin group see and cancel all.

Settings (``[module:burner]``): ``socket`` (the helper's socket), ``images_dir``
(shared with the helper), ``max_image_mb`` (required: Apache's body limit for
uploads is rendered from it too, see :mod:`clarens.apacheconf`),
``upload_reserve_mb``, ``partial_upload_hours``, ``admin_group``.
"""

from __future__ import annotations

import os
import threading
import time
from html import escape

from clarens import context, once_per_server
from clarens.burnerd.client import BurnerClient, HelperUnavailable, RequestRefused
from clarens.faults import APPLICATION_ERROR, INVALID_PARAMS, SERVICE_UNAVAILABLE, Fault
from clarens.web.routes import WebRequest, WebResponse, static_file
from clarens.web.uploads import Progress, UploadError, Uploads, parse_content_range

from .images import ISO_MAGIC, ISO_MAGIC_OFFSET, ImageStore, check_iso_head

HELPER_TIMEOUT = 2.0     # seconds: a hung helper costs an Apache worker this long, not more
HUNG_PAUSE = 3.0         # seconds a process gives a helper that did not answer in time only...
PROBE_TIMEOUT = 0.25     # ...this long to answer
SWEEP_EVERY = 600        # seconds between two sweeps of expired partial uploads, per process

_settings: dict = {}
_local = threading.local()   # one helper connection per thread (keep-alive)
_WEB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")
with open(os.path.join(_WEB, "page.html"), encoding="utf-8") as _f:
    _PAGE = _f.read()


def _startup_init(config, dbs, log):
    images_dir = config.get("images_dir", "/srv/clarens/images")
    uploads = Uploads(images_dir, max_size=config.get_int("max_image_mb", minimum=1) * 1000 * 1000,
                      reserve=config.get_int("upload_reserve_mb", 1000, minimum=0) * 1000 * 1000,
                      expiry=config.get_int("partial_upload_hours", 48, minimum=1) * 3600,
                      check_head=check_iso_head, head_size=ISO_MAGIC_OFFSET + len(ISO_MAGIC))
    _settings.update(socket=config.get("socket", "/run/clarens-burner/burnerd.sock"),
                     admin_group=config.get("admin_group", "admins"), log=log,
                     store=ImageStore(images_dir, dbs.open("burner"), uploads), swept=time.monotonic())
    if not os.path.isdir(images_dir):
        log.warning("images_dir %s does not exist: uploads and burns will fail until it does", images_dir)
    once_per_server("burner-sweep", _sweep)


def _sweep() -> None:
    """Remove partial uploads nobody has resumed within partial_upload_hours (and any left
    behind by a process that died while linking a finished one into place)."""
    _settings["swept"] = time.monotonic()
    for path in _settings["store"].uploads.sweep():
        _settings["log"].info("removed stale partial upload %s", path)


def _sweep_if_due() -> None:
    if time.monotonic() - _settings["swept"] > SWEEP_EVERY:
        _sweep()


def _client() -> BurnerClient:
    client = getattr(_local, "client", None)
    if client is None:
        client = _local.client = BurnerClient(_settings["socket"], connect_timeout=1.0, timeout=HELPER_TIMEOUT)
    return client


def _helper(call):
    """Run ``call(client)`` against the helper, turning its failures into faults.

    After a helper did not answer in time, this process gives it only PROBE_TIMEOUT for
    HUNG_PAUSE seconds: while it hangs, the calls of a batch (the page polls two at once)
    fail quickly instead of each holding the Apache worker for HELPER_TIMEOUT, and as soon
    as it answers again, so do the calls.
    """
    client = _client()
    client.timeout = PROBE_TIMEOUT if time.monotonic() < _settings.get("hung_until", 0.0) else HELPER_TIMEOUT
    _settings["hung_until"] = 0.0       # until it does not answer in time again
    try:
        return call(client)
    except HelperUnavailable as e:
        if e.timed_out:
            _settings["hung_until"] = time.monotonic() + HUNG_PAUSE
        raise Fault(SERVICE_UNAVAILABLE, "burner unavailable: %s" % e) from None
    except RequestRefused as e:
        raise Fault(INVALID_PARAMS if e.status in (400, 404) else APPLICATION_ERROR,
                    "%s: %s" % (e.code, e.message)) from None


def _caller() -> tuple[str, bool]:
    identity = context.current().identity
    return identity.name, _settings["admin_group"] in identity.groups


def _own_job(job_id: int) -> dict:
    """The job, if the caller may see it; otherwise the same fault as for a job that does not exist."""
    who, admin = _caller()
    try:
        job = _helper(lambda c: c.job(job_id))
    except Fault as fault:
        if fault.code != INVALID_PARAMS:
            raise
        job = None
    if job is None or (not admin and job["identity"] != who):
        raise Fault(INVALID_PARAMS, "job_not_found: there is no job %d of yours" % job_id)
    return job


def drives():
    """Return the drives: [{name, kind, capacity (bytes), busy, current_job, queued, medium}].
    medium says what is in the drive (for a simulated drive: whether its disc file exists)."""
    out = _helper(lambda c: c.drives())
    return [{k: v for k, v in d.items() if k != "dev"} for d in out]


def images():
    """Return the images that can be burned: [{name, size, sha256, uploaded, uploaded_by}].
    Upload one with HTTP PUT /clarens/images/NAME."""
    _sweep_if_due()
    return _settings["store"].list()


def burn(image, drive, options=None):
    """Burn IMAGE (a name from burner.images) to DRIVE (a name from burner.drives); return the job id.
    OPTIONS is a struct: {speed: int (a multiple of the medium's 1x; default the drive's best),
    verify: boolean (read the disc back and compare SHA-256; default true)}.  Jobs on one drive
    run one after another; follow this one with burner.status."""
    options = options or {}
    unknown = set(options) - {"speed", "verify"}
    if unknown:
        raise Fault(INVALID_PARAMS, "unknown option(s): %s (known: speed, verify)" % ", ".join(sorted(unknown)))
    if image.startswith("."):   # hidden files include uploads in progress
        raise Fault(INVALID_PARAMS, "bad_image_name: %r names a hidden file" % image)
    who, _ = _caller()
    job = _helper(lambda c: c.submit(image, drive, identity=who, speed=options.get("speed"),
                                     verify=options.get("verify", True)))
    return job["id"]


def status(job_id):
    """Return job JOB_ID: {id, identity, image, image_size, image_sha256, drive, speed, verify,
    state (queued, burning, verifying, done, failed, cancelled, interrupted), progress {percent, bytes},
    submitted, started, finished, verification {image_sha256, disc_sha256, match}, error}."""
    return _own_job(job_id)


def jobs():
    """Return your jobs (all jobs, for administrators), oldest first."""
    who, admin = _caller()
    _sweep_if_due()
    return _helper(lambda c: c.jobs() if admin else c.jobs(identity=who))


def cancel(job_id):
    """Cancel job JOB_ID (queued or running; a running burn is stopped); return the job.  A real
    drive may take a few seconds to stop: the job is then still burning, and ends cancelled."""
    _own_job(job_id)
    return _helper(lambda c: c.cancel(job_id))


def eject(drive):
    """Eject the disc in DRIVE.  Refused while a job is using the drive.  Returns true once the
    disc is out, false if the drive is still ejecting (burner.drives shows it busy until then)."""
    return bool(_helper(lambda c: c.eject(drive)).get("ejected"))


def delete_image(name):
    """Delete image NAME (its uploader or an administrator only).  Returns true."""
    who, admin = _caller()
    _settings["store"].delete(name, who, admin)
    return True


def upload(web: WebRequest) -> WebResponse:
    """PUT or HEAD /clarens/images/NAME: upload an ISO image (resumable), or ask how much of it
    the server holds.  The protocol is described in :mod:`clarens.web.uploads`."""
    if web.method not in ("PUT", "HEAD"):
        return WebResponse(405, b'{"error":{"code":405,"message":"use PUT or HEAD /clarens/images/NAME"}}',
                           headers={"Allow": "PUT, HEAD"})
    web.authorise("burner.upload")
    who, _ = _caller()
    store: ImageStore = _settings["store"]
    _sweep_if_due()
    try:
        if web.method == "HEAD":
            progress = store.status(web.path, who)
            return WebResponse(404) if progress is None else WebResponse(200, headers=progress.headers)
        content_range = web.headers.get("Content-Range")
        result = store.receive(web.path, who, web.content_length,
                               parse_content_range(content_range) if content_range else None, web.read)
    except UploadError as e:
        _settings["log"].warning("%s upload of %s refused (%d): %s", context.current().describe(), ascii(web.path),
                                 e.status, e)
        response = WebResponse.json({"error": {"code": e.status, "message": str(e)}}, e.status)
        response.headers.update(e.headers)
        return response
    if isinstance(result, Progress):
        response = WebResponse.json({"upload": {"name": result.name, "size": result.total,
                                                "received": result.received, "expires": result.expires}})
        response.headers.update(result.headers)
        return response
    return WebResponse.json({"image": result}, 201)


def page(web: WebRequest) -> WebResponse:
    """GET /clarens/burner: the burner page (its data comes from the burner.* methods, as the caller)."""
    if web.method not in ("GET", "HEAD"):
        return WebResponse(405, b"use GET", "text/plain", {"Allow": "GET, HEAD"})
    if not web.path:
        return WebResponse.html(_PAGE.replace("@BASE@", escape(web.base)))
    return static_file(_WEB, web.path)


methods_list = {"drives": drives, "images": images, "burn": burn, "status": status, "jobs": jobs,
                "cancel": cancel, "eject": eject, "delete_image": delete_image}
methods_sig = {
    "drives": ["array"],
    "images": ["array"],
    "burn": ["int,string,string", "int,string,string,struct"],
    "status": ["struct,int"],
    "jobs": ["array"],
    "cancel": ["struct,int"],
    "eject": ["boolean,string"],
    "delete_image": ["boolean,string"],
}
web_routes = {"images": upload, "burner": page}
web_pages = {"burner": "Burner"}
