# SPDX-License-Identifier: Apache-2.0
"""The ``burner.*`` methods: who may do what, and the answers callers see.

Users see and cancel only their own jobs; members of the admin group see and cancel
all.  Every refusal is a fault of its own code (:mod:`.refusals`).  The docstrings
are the help clients see.
"""

from __future__ import annotations

from clarens.image_names import name_problem

from . import unfinished
from .refusals import refused
from .service import current


def drives():
    """Return the drives: [{name, kind, capacity (bytes), busy, current_job, queued, medium}].
    medium says what is in the drive (for a simulated drive: whether its disc file exists).
    With drive hosts, their drives are named HOST:DRIVE, and every drive also has host and
    reachable: a drive host that does not answer is listed with the drives last seen there
    (or, if none were, one entry named HOST:), reachable false and the error."""
    burner = current()
    return burner.helpers.drives(burner.caller()[1])


def images():
    """Return the images that can be burned: [{name, size, sha256, uploaded, uploaded_by, hashing}].
    Upload one with HTTP PUT /clarens/images/NAME.  An image put into the images directory some other
    way is hashed in the background: until then its sha256 is "" and hashing is {percent, bytes}
    (null once it is known)."""
    burner = current()
    burner.sweep_if_due()
    return burner.store.list()


def burn(image, drive, options=None):
    """Burn IMAGE (a name from burner.images) to DRIVE (a name from burner.drives); return the job id
    (an integer; a string HOST:ID for a drive host's drive, whose host runs the burn).
    OPTIONS is a struct: {speed: int (a multiple of the medium's 1x; default the drive's best),
    verify: boolean (read the disc back and compare SHA-256; default true)}.  Jobs on one drive
    run one after another; follow this one with burner.status."""
    options = options or {}
    unknown = set(options) - {"speed", "verify"}
    if unknown:
        raise refused("bad_option", "unknown option(s): %s (known: speed, verify)" % ", ".join(sorted(unknown)))
    if not isinstance(options.get("verify", True), bool):     # speed: the helper knows the drive's range
        raise refused("bad_option", "verify must be true or false")
    problem = name_problem(image)
    if problem is not None:
        raise refused(*problem)
    burner = current()
    who, admin = burner.caller()
    return burner.helpers.submit(image, drive, who, options.get("speed"), options.get("verify", True), admin)


def status(job_id):
    """Return job JOB_ID: {id, identity, image, image_size, image_sha256, drive, speed, verify,
    state (queued, burning, verifying, done, failed, cancelled, interrupted), progress {percent, bytes},
    submitted, started, finished, verification {image_sha256, disc_sha256, match}, error}.
    A drive host's job (JOB_ID "HOST:ID") also has host, and while that host does not answer, its
    state is unreachable (last_state: what it was last seen doing; error: why), until the host
    answers again with its true state."""
    burner = current()
    return burner.helpers.job(job_id, *burner.caller())


def jobs():
    """Return your jobs (all jobs, for administrators), oldest first (by helper, then submission).
    A drive host that does not answer contributes the jobs last seen there, in state unreachable."""
    burner = current()
    who, admin = burner.caller()
    burner.sweep_if_due()
    return burner.helpers.jobs(who, admin)


def cancel(job_id):
    """Cancel job JOB_ID (queued or running; a running burn is stopped); return the job.  A real
    drive may take a few seconds to stop: the job is then still burning, and ends cancelled."""
    burner = current()
    who, admin = burner.caller()
    burner.helpers.job(job_id, who, admin)      # only your own, unless you are an administrator
    return burner.helpers.cancel(job_id, admin)


def eject(drive):
    """Eject the disc in DRIVE.  Refused while a job is using the drive.  Returns true once the
    disc is out, false if the drive is still ejecting (burner.drives shows it busy until then)."""
    burner = current()
    return burner.helpers.eject(drive, burner.caller()[1])


def delete_image(name):
    """Delete image NAME (its uploader or an administrator only).  Returns true."""
    burner = current()
    burner.store.delete(name, *burner.caller())
    return True


def uploads():
    """Return your unfinished uploads (everyone's, for administrators): [{name, uploader, size (the
    image's, as declared), received, modified, expires, writing (a request is sending it now)}].
    Resume one with PUT /clarens/images/NAME, or discard it with burner.discard_upload."""
    burner = current()
    return unfinished.listing(burner.store.uploads, *burner.caller())


def discard_upload(name, uploader=None):
    """Remove your unfinished upload of image NAME (an administrator: UPLOADER's) and return the
    bytes it held.  Refused while a request is still sending it."""
    burner = current()
    who, admin = burner.caller()
    return unfinished.discard(burner.store.uploads, name, who, admin, uploader)


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
