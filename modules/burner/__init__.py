# SPDX-License-Identifier: Apache-2.0
"""burner: burn ISO images to CD/DVD writers, verify the disc, eject it.

The work is done by the burner helper (``python3 -m clarens.burnerd``), a
separate process that may open the drives; this module authorises callers and
talks to it over its Unix socket.  Images are uploaded with
``PUT /clarens/images/NAME`` (authorised as ``burner.upload``; resumable, see
:mod:`clarens.web.uploads`).  The web page is ``GET /clarens/burner``.  Users see
and cancel only their own jobs; members of the admin group see and cancel all.

Settings (``[module:burner]``): ``socket`` (the helper's socket; empty: no helper
of this host's own), ``drive_hosts``, ``images_dir`` (shared with the helpers),
``max_image_mb`` (required: Apache's body limit for uploads is rendered from it
too, see :mod:`clarens.apacheconf`), ``upload_reserve_mb``, ``partial_upload_hours``,
``admin_group``.

Drives on other machines: ``drive_hosts = b=/run/clarens/drive-hosts/b.sock ...``
names the helpers of other hosts, each reached through its Unix socket forwarded
here by OpenSSH (``conf/systemd/clarens-drive-host@.service``).  Their drives are
``HOST:DRIVE`` and their jobs ``"HOST:ID"`` (strings); this host's own helper keeps
plain drive names and integer job ids.  A burn runs on the drive's host, which reads
the image from the same images directory (shared storage, mounted at the same path
everywhere).  With drive hosts configured, a helper that does not answer does not
fail the listing: ``burner.drives`` marks its drives ``reachable: false``, and its
jobs show state ``unreachable`` (with the last state seen, kept in this host's
``burner.tdb``) until it answers again with their true state.
"""

from __future__ import annotations

import os
import re
import threading
import time
from html import escape
from typing import Any, Callable

from clarens import context, once_per_server
from clarens.burnerd.client import BurnerClient, HelperUnavailable, RequestRefused
from clarens.burnerd.images import HEAD_SIZE, head_problem, name_problem
from clarens.faults import APPLICATION_ERROR, INVALID_PARAMS, SERVICE_UNAVAILABLE, Fault
from clarens.web.routes import WebRequest, WebResponse, static_file
from clarens.web.uploads import Progress, UploadError, Uploads, parse_content_range

from . import unfinished
from .images import ImageStore

HELPER_TIMEOUT = 2.0     # seconds: a hung helper costs an Apache worker this long, not more
HUNG_PAUSE = 3.0         # seconds a process gives a helper that did not answer in time only...
PROBE_TIMEOUT = 0.25     # ...this long to answer
SWEEP_EVERY = 600        # seconds between two sweeps of expired partial uploads, per process
HOST_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
SEEN_JOBS_KEPT = 500     # a drive host's jobs remembered here (for showing them while it is unreachable)
UNREACHABLE = "unreachable"

_settings: dict = {}
_local = threading.local()   # one connection per helper per thread (keep-alive)
_WEB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")
with open(os.path.join(_WEB, "page.html"), encoding="utf-8") as _f:
    _PAGE = _f.read()


def _startup_init(config, dbs, log):
    images_dir = config.get("images_dir", "/srv/clarens/images")
    max_image_mb = config.get_int("max_image_mb", minimum=1)
    db = dbs.open("burner")
    uploads = Uploads(images_dir, max_size=max_image_mb * 1000 * 1000,
                      reserve=config.get_int("upload_reserve_mb", 1000, minimum=0) * 1000 * 1000,
                      expiry=config.get_int("partial_upload_hours", 48, minimum=1) * 3600,
                      check_head=head_problem, head_size=HEAD_SIZE,
                      per_user=config.get_int("unfinished_upload_mb", max_image_mb, minimum=1) * 1000 * 1000,
                      records=db)
    helpers = parse_helpers(config.get("socket", "/run/clarens-burner/burnerd.sock"), config.get("drive_hosts", ""))
    _settings.update(helpers=helpers, cluster=any(h.host for h in helpers.values()), db=db,
                     admin_group=config.get("admin_group", "admins"), log=log,
                     store=ImageStore(images_dir, db, uploads, log), swept=time.monotonic())
    if not os.path.isdir(images_dir):
        # Not a warning: every local: call and SSH session boots a host, most of them never touching
        # images; a call that does fails, and that is logged with the path.
        log.info("images_dir %s does not exist: uploads and burns will fail until it does", images_dir)
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


class Helper:
    """One burner helper: this host's own (``host`` ""; plain drive names, integer job ids), or a
    drive host's, reached through its socket forwarded here (``HOST:DRIVE``, job ``"HOST:ID"``)."""

    def __init__(self, host: str, socket: str):
        self.host = host
        self.socket = socket
        self.hung_until = 0.0     # until then (monotonic), it gets PROBE_TIMEOUT: it did not answer in time

    def __repr__(self) -> str:
        return "<burner helper %s at %s>" % (self.host or "(local)", self.socket)

    def name(self, local: str | int) -> str | int:
        """The cluster-wide name of one of this helper's drives or jobs."""
        return "%s:%s" % (self.host, local) if self.host else local

    def _client(self) -> BurnerClient:
        clients = getattr(_local, "clients", None)
        if clients is None:
            clients = _local.clients = {}
        client = clients.get(self.host)
        if client is None:
            client = clients[self.host] = BurnerClient(self.socket, connect_timeout=1.0, timeout=HELPER_TIMEOUT)
        return client

    def call(self, call: Callable[[BurnerClient], Any]) -> Any:
        """Run ``call(client)`` against this helper, turning its failures into faults.

        After it did not answer in time, this process gives it only PROBE_TIMEOUT for
        HUNG_PAUSE seconds: while it hangs, the calls of a batch (the page polls two at once)
        fail quickly instead of each holding the Apache worker for HELPER_TIMEOUT, and as soon
        as it answers again, so do the calls.  Each helper has its own pause: one drive host
        that hangs does not make the others' calls short.
        """
        client = self._client()
        client.timeout = PROBE_TIMEOUT if time.monotonic() < self.hung_until else HELPER_TIMEOUT
        self.hung_until = 0.0       # until it does not answer in time again
        try:
            return call(client)
        except HelperUnavailable as e:
            if e.timed_out:
                self.hung_until = time.monotonic() + HUNG_PAUSE
            where = "drive host %s: " % self.host if self.host else ""
            # Only administrators see where the socket is: paths tell an attacker about the host.
            raise Fault(SERVICE_UNAVAILABLE, "burner unavailable: %s%s" % (where, e if _caller()[1] else e.reason)) \
                from None
        except RequestRefused as e:
            raise Fault(INVALID_PARAMS if e.status in (400, 404) else APPLICATION_ERROR,
                        "%s: %s" % (e.code, e.message)) from None


def parse_helpers(socket: str, drive_hosts: str) -> dict[str, Helper]:
    """The helpers of ``[module:burner]``: ``socket`` (this host's own, unless empty) and
    ``drive_hosts``, ``NAME=SOCKET`` pairs separated by spaces.  ValueError for a malformed one."""
    helpers = {"": Helper("", socket.strip())} if socket.strip() else {}
    for item in drive_hosts.split():
        host, sep, path = item.partition("=")
        if not sep or not HOST_RE.match(host) or not path.startswith("/"):
            raise ValueError("drive_hosts: %r is not NAME=/absolute/socket/path (NAME: letters, digits, _ . -)"
                             % item)
        if host in helpers:
            raise ValueError("drive_hosts: %s is named twice" % host)
        helpers[host] = Helper(host, path)
    return helpers


def _helper_of(name: str) -> tuple[Helper, str]:
    """The helper serving drive ``name`` (``DRIVE`` on this host's, ``HOST:DRIVE`` on a drive host's),
    and the drive's name there."""
    host, sep, drive = name.rpartition(":")
    helper = _settings["helpers"].get(host)
    if helper is None:
        if sep:
            raise Fault(INVALID_PARAMS, "unknown_drive: there is no drive host %s (see burner.drives)" % ascii(host))
        raise Fault(INVALID_PARAMS, "unknown_drive: drives are named HOST:DRIVE here (see burner.drives)")
    return helper, drive


def _job_ref(job_id: int | str) -> tuple[Helper, int]:
    """The helper holding job ``job_id`` (an integer on this host's helper, ``"HOST:ID"`` on a
    drive host's) and the job's number there."""
    host, number = "", job_id
    if isinstance(job_id, str):
        host, _, number = job_id.rpartition(":")
    helper = _settings["helpers"].get(host)
    if helper is None or not (str(number).isascii() and str(number).isdigit()) or int(number) > 2 ** 62:
        raise Fault(INVALID_PARAMS, "job_not_found: there is no job %s of yours" % ascii(job_id))
    return helper, int(number)


def _helper(call):
    """Run ``call(client)`` against this host's own helper (or, if it has none, the only one)."""
    helpers = _settings["helpers"]
    helper = helpers.get("") or (next(iter(helpers.values())) if len(helpers) == 1 else None)
    if helper is None:
        raise Fault(INVALID_PARAMS, "this host has no burner helper of its own: name drives HOST:DRIVE")
    return helper.call(call)


def _caller() -> tuple[str, bool]:
    identity = context.current().identity
    return identity.name, _settings["admin_group"] in identity.groups


def _present(helper: Helper, job: dict) -> dict:
    """A helper's job record as callers see it: the cluster-wide id and drive name, and its host."""
    if not helper.host:
        return job
    return dict(job, id=helper.name(job["id"]), host=helper.host,
                drive=helper.name(job["drive"]) if job.get("drive") is not None else None)


# -- drive hosts: what was last seen of them, for while they are unreachable ---------------------------

def _remember(helper: Helper, jobs: list[dict]) -> None:
    """Keep the last record seen of each of a drive host's jobs (this host's burner.tdb, shared by
    its processes), writing only what changed."""
    db = _settings["db"]
    for job in jobs:
        key = "seen-job:%s:%d" % (helper.host, job["id"])
        if db.get(key) != job:
            db.put(key, job)
    keys = db.keys("seen-job:%s:" % helper.host)
    if len(keys) > SEEN_JOBS_KEPT:
        for key in sorted(keys, key=lambda k: int(k.rpartition(":")[2]))[:len(keys) - SEEN_JOBS_KEPT]:
            db.delete(key)


def _unreachable(helper: Helper, job: dict | None, number: int, why: str) -> dict:
    """A job of a drive host that does not answer: its last record seen here (None: never seen
    here), in state ``unreachable``, with the state it was last seen in."""
    seen = dict(job) if job is not None else {"id": number, "identity": None, "image": None, "drive": None,
                                               "progress": None, "verification": None}
    seen.update(last_state=seen.get("state"), state=UNREACHABLE, error=why)
    return _present(helper, seen)


def _seen_jobs(helper: Helper) -> list[dict]:
    return [job for _, job in _settings["db"].items("seen-job:%s:" % helper.host)]


def _own_job(job_id: int | str) -> dict:
    """The job, if the caller may see it; otherwise the same fault as for a job that does not exist.
    A drive host's job while that host does not answer: its last record seen, state ``unreachable``."""
    who, admin = _caller()
    helper, number = _job_ref(job_id)
    try:
        job = helper.call(lambda c: c.job(number))
    except Fault as fault:
        if fault.code == SERVICE_UNAVAILABLE and _settings["cluster"]:
            seen = _settings["db"].get("seen-job:%s:%d" % (helper.host, number))
            if seen is None or admin or seen["identity"] == who:
                return _unreachable(helper, seen, number, fault.message)
            job = None
        elif fault.code != INVALID_PARAMS:
            raise
        else:
            job = None
    if job is None or (not admin and job["identity"] != who):
        raise Fault(INVALID_PARAMS, "job_not_found: there is no job %s of yours" % ascii(job_id))
    if _settings["cluster"]:
        _remember(helper, [job])
    return _present(helper, job)


def drives():
    """Return the drives: [{name, kind, capacity (bytes), busy, current_job, queued, medium}].
    medium says what is in the drive (for a simulated drive: whether its disc file exists).
    With drive hosts, their drives are named HOST:DRIVE, and every drive also has host and
    reachable: a drive host that does not answer is listed with the drives last seen there
    (or, if none were, one entry named HOST:), reachable false and the error."""
    if not _settings["cluster"]:
        out = _helper(lambda c: c.drives())
        return [{k: v for k, v in d.items() if k != "dev"} for d in out]
    listed = []
    db = _settings["db"]
    for helper in _settings["helpers"].values():
        try:
            found = helper.call(lambda c: c.drives())
        except Fault as fault:
            if fault.code != SERVICE_UNAVAILABLE:
                raise
            names = db.get("seen-drives:%s" % helper.host) or [""]
            listed += [{"name": "%s:%s" % (helper.host, n) if helper.host else n, "host": helper.host,
                        "reachable": False, "error": fault.message, "kind": None, "capacity": None, "busy": None,
                        "current_job": None, "queued": None, "medium": None} for n in names]
            continue
        names = [d["name"] for d in found]
        if db.get("seen-drives:%s" % helper.host) != names:
            db.put("seen-drives:%s" % helper.host, names)
        for d in found:
            drive = {k: v for k, v in d.items() if k != "dev"}
            drive.update(name=helper.name(d["name"]), host=helper.host, reachable=True)
            if drive.get("current_job") is not None:
                drive["current_job"] = helper.name(drive["current_job"])
            listed.append(drive)
    return listed


def images():
    """Return the images that can be burned: [{name, size, sha256, uploaded, uploaded_by, hashing}].
    Upload one with HTTP PUT /clarens/images/NAME.  An image put into the images directory some other
    way is hashed in the background: until then its sha256 is "" and hashing is {percent, bytes}
    (null once it is known)."""
    _sweep_if_due()
    return _settings["store"].list()


def burn(image, drive, options=None):
    """Burn IMAGE (a name from burner.images) to DRIVE (a name from burner.drives); return the job id
    (an integer; a string HOST:ID for a drive host's drive, whose host runs the burn).
    OPTIONS is a struct: {speed: int (a multiple of the medium's 1x; default the drive's best),
    verify: boolean (read the disc back and compare SHA-256; default true)}.  Jobs on one drive
    run one after another; follow this one with burner.status."""
    options = options or {}
    unknown = set(options) - {"speed", "verify"}
    if unknown:
        raise Fault(INVALID_PARAMS, "unknown option(s): %s (known: speed, verify)" % ", ".join(sorted(unknown)))
    problem = name_problem(image)     # the helper's rule: refused here, before asking it
    if problem is not None:
        raise Fault(INVALID_PARAMS, "%s: %s" % problem)
    who, _ = _caller()
    helper, local = _helper_of(drive)
    job = helper.call(lambda c: c.submit(image, local, identity=who, speed=options.get("speed"),
                                         verify=options.get("verify", True)))
    if _settings["cluster"]:
        _remember(helper, [job])
    return helper.name(job["id"])


def status(job_id):
    """Return job JOB_ID: {id, identity, image, image_size, image_sha256, drive, speed, verify,
    state (queued, burning, verifying, done, failed, cancelled, interrupted), progress {percent, bytes},
    submitted, started, finished, verification {image_sha256, disc_sha256, match}, error}.
    A drive host's job (JOB_ID "HOST:ID") also has host, and while that host does not answer, its
    state is unreachable (last_state: what it was last seen doing; error: why), until the host
    answers again with its true state."""
    return _own_job(job_id)


def jobs():
    """Return your jobs (all jobs, for administrators), oldest first (by helper, then submission).
    A drive host that does not answer contributes the jobs last seen there, in state unreachable."""
    who, admin = _caller()
    _sweep_if_due()
    if not _settings["cluster"]:
        return _helper(lambda c: c.jobs() if admin else c.jobs(identity=who))
    out = []
    for helper in _settings["helpers"].values():
        try:
            found = helper.call(lambda c: c.jobs() if admin else c.jobs(identity=who))
        except Fault as fault:
            if fault.code != SERVICE_UNAVAILABLE:
                raise
            out += [_unreachable(helper, job, job["id"], fault.message) for job in _seen_jobs(helper)
                    if admin or job["identity"] == who]
            continue
        _remember(helper, found)
        out += [_present(helper, job) for job in found]
    return out


def cancel(job_id):
    """Cancel job JOB_ID (queued or running; a running burn is stopped); return the job.  A real
    drive may take a few seconds to stop: the job is then still burning, and ends cancelled."""
    _own_job(job_id)
    helper, number = _job_ref(job_id)
    return _present(helper, helper.call(lambda c: c.cancel(number)))


def eject(drive):
    """Eject the disc in DRIVE.  Refused while a job is using the drive.  Returns true once the
    disc is out, false if the drive is still ejecting (burner.drives shows it busy until then)."""
    helper, local = _helper_of(drive)
    return bool(helper.call(lambda c: c.eject(local)).get("ejected"))


def delete_image(name):
    """Delete image NAME (its uploader or an administrator only).  Returns true."""
    who, admin = _caller()
    _settings["store"].delete(name, who, admin)
    return True


def uploads():
    """Return your unfinished uploads (everyone's, for administrators): [{name, uploader, size (the
    image's, as declared), received, modified, expires, writing (a request is sending it now)}].
    Resume one with PUT /clarens/images/NAME, or discard it with burner.discard_upload."""
    who, admin = _caller()
    return unfinished.listing(_settings["store"].uploads, who, admin)


def discard_upload(name, uploader=None):
    """Remove your unfinished upload of image NAME (an administrator: UPLOADER's) and return the
    bytes it held.  Refused while a request is still sending it."""
    who, admin = _caller()
    return unfinished.discard(_settings["store"].uploads, name, who, admin, uploader)


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
        context.current().note_fault(Fault(e.status, "upload of %s refused: %s" % (ascii(web.path), e)))
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
                "cancel": cancel, "eject": eject, "delete_image": delete_image, "uploads": uploads,
                "discard_upload": discard_upload}
methods_sig = {
    "drives": ["array"],
    "images": ["array"],
    "burn": ["int,string,string", "int,string,string,struct", "string,string,string", "string,string,string,struct"],
    "status": ["struct,int", "struct,string"],
    "jobs": ["array"],
    "cancel": ["struct,int", "struct,string"],
    "eject": ["boolean,string"],
    "delete_image": ["boolean,string"],
    "uploads": ["array"],
    "discard_upload": ["int,string", "int,string,string"],
}
web_routes = {"images": upload, "burner": page}
web_pages = {"burner": "Burner"}
