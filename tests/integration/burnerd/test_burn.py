# SPDX-License-Identifier: Apache-2.0
"""Burning, verifying, queueing, cancelling, and surviving restarts, through the real helper."""

from __future__ import annotations

import hashlib
import os
import signal
import time

import pytest

from clarens.burnerd.client import RequestRefused
from clarens.burnerd.processes import group_alive as group_running
from tests.helpers import sha256_file, wait_for
from tests.integration.burnerd.support import request, wait_burning, wait_finished


def test_burn_and_verify(helper, iso_cache):
    c = helper.client()
    assert c.drive("sim0")["medium"] == {"present": False, "size": 0}
    job = c.submit("small.iso", "sim0", identity="/CN=Alice")
    assert job["state"] == "queued" and job["identity"] == "/CN=Alice" and job["uid"] == 0
    assert job["image_size"] == os.path.getsize(iso_cache["small"])
    job = wait_finished(c, job["id"])
    expected = sha256_file(iso_cache["small"])
    assert job["state"] == "done", job
    assert job["image_sha256"] == expected
    assert job["verification"] == {"image_sha256": expected, "disc_sha256": expected, "match": True}
    assert job["progress"] == {"percent": 100.0, "bytes": job["image_size"]}
    assert job["submitted"] <= job["started"] <= job["finished"]
    assert job["error"] is None and job["error_code"] is None
    disc = os.path.join(helper.base, "state", "sim0.disc")
    assert os.path.getsize(disc) > job["image_size"]              # the burn pads past the image
    assert sha256_file(disc, job["image_size"]) == expected
    assert os.stat(disc).st_mode & 0o077 == 0                     # state files are the helper's alone
    medium = c.drive("sim0")["medium"]
    assert medium == {"present": True, "size": os.path.getsize(disc)}


def test_burn_without_verify(helper):
    c = helper.client()
    job = wait_finished(c, c.submit("small.iso", "sim1", identity="bob", verify=False)["id"])
    assert job["state"] == "done" and job["verification"] is None and job["image_sha256"]


def test_disc_that_loses_data_fails_verification(helper):
    """A drive whose writes vanish and whose reads give zeros (stdio:/dev/zero)."""
    c = helper.client()
    job = wait_finished(c, c.submit("small.iso", "zero", identity="alice")["id"])
    assert job["state"] == "failed" and job["error_code"] == "verify_mismatch"
    v = job["verification"]
    assert v["match"] is False and v["image_sha256"] == job["image_sha256"]
    assert v["disc_sha256"] == hashlib.sha256(bytes(job["image_size"])).hexdigest()
    assert "differs" in job["error"]


def test_write_error_fails_the_job(helper):
    """Every write to stdio:/dev/full fails (ENOSPC): xorriso gives up and the job says why."""
    c = helper.client()
    job = wait_finished(c, c.submit("small.iso", "full", identity="alice")["id"])
    assert job["state"] == "failed" and job["error_code"] == "burn_failed"
    assert "xorriso exited with status" in job["error"] and "FAILURE" in job["error"]
    assert job["verification"] is None


def test_image_removed_before_its_turn(helper, iso_cache):
    c = helper.client()
    slow = c.submit("slow.iso", "sim0", identity="a", speed=1)
    helper.add_image("gone.iso", iso_cache["small2"])
    gone = c.submit("gone.iso", "sim0", identity="a")
    os.unlink(os.path.join(helper.images, "gone.iso"))
    wait_burning(c, slow["id"])
    c.cancel(slow["id"])
    job = wait_finished(c, gone["id"])
    assert job["state"] == "failed" and job["error_code"] == "image_not_found"
    assert "when the job started" in job["error"]


def test_jobs_on_one_drive_run_in_order_and_drives_in_parallel(helper):
    c = helper.client()
    first = c.submit("slow.iso", "sim0", identity="alice", speed=2)
    second = c.submit("small.iso", "sim0", identity="bob")
    other = c.submit("small.iso", "sim1", identity="carol")
    wait_burning(c, first["id"])
    assert c.job(second["id"])["state"] == "queued"            # waits for the drive
    status = c.status()
    assert status["drives"]["sim0"] == {"busy": True, "current_job": first["id"], "queued": 1}
    assert status["drives_busy"] >= 1 and status["queued"] >= 1
    other = wait_finished(c, other["id"])                       # another drive does not wait
    assert other["state"] == "done"
    assert c.job(first["id"])["state"] in ("burning", "verifying")
    first, second = wait_finished(c, first["id"]), wait_finished(c, second["id"])
    assert first["state"] == second["state"] == "done"
    assert second["started"] >= first["finished"]
    assert [j["id"] for j in c.jobs(identity="bob")] == [second["id"]]
    assert [j["id"] for j in c.jobs(state="done", drive="sim0")] == [first["id"], second["id"]]


def test_progress_while_burning_slowly(helper):
    """libburn paces stdio: writes to the requested speed, and progress is recorded as it goes."""
    c = helper.client()
    job = c.submit("slow.iso", "sim0", identity="alice", speed=1)
    seen = set()

    drive_views = []

    def sample():
        j = c.job(job["id"])
        if j["state"] == "burning":
            seen.add(j["progress"]["bytes"])
            drive_views.append(c.drive("sim0"))
        return j["state"] not in ("queued", "burning") or None

    wait_for("the burn to end", sample, timeout=60, interval=0.2)
    partial = sorted(b for b in seen if 0 < b < c.job(job["id"])["image_size"])
    assert len(partial) >= 3, seen                              # several steps, not one jump
    assert wait_finished(c, job["id"])["state"] == "done"
    # meanwhile the drive named the job instead of a disc size of its own: one source of truth
    busy = [v for v in drive_views if v["busy"]]
    assert busy and all(v["medium"] == {"busy": True} and v["current_job"] == job["id"] for v in busy)


def test_cancel_running_job_kills_xorriso_group(helper):
    c = helper.client()
    job = c.submit("slow.iso", "sim0", identity="alice", speed=1)
    queued = c.submit("small.iso", "sim0", identity="alice")
    wait_burning(c, job["id"])
    pids = helper.xorriso_children()
    assert len(pids) == 1
    with pytest.raises(RequestRefused) as refused:
        c.eject("sim0")
    assert refused.value.code == "drive_busy" and refused.value.status == 409
    status, body = request(helper, "POST", "/v1/jobs/%d/cancel" % job["id"], b"{}")
    cancelled = body["job"]                                     # stdio: killed at once, so stopped: 200
    assert status == 200 and cancelled["state"] == "cancelled" and cancelled["error_code"] == "cancelled"
    assert cancelled["finished"] is not None
    assert not group_running(pids[0])
    assert wait_finished(c, queued["id"])["state"] == "done"   # the queue moves on
    with pytest.raises(RequestRefused) as refused:
        c.cancel(job["id"])
    assert refused.value.code == "not_cancellable" and refused.value.status == 409


def test_cancel_queued_job(helper):
    c = helper.client()
    running = c.submit("slow.iso", "sim0", identity="alice", speed=1)
    queued = c.submit("small.iso", "sim0", identity="alice")
    cancelled = c.cancel(queued["id"])
    assert cancelled["state"] == "cancelled" and cancelled["started"] is None
    c.cancel(running["id"])
    time.sleep(0.3)
    assert c.job(queued["id"])["started"] is None               # never ran


def test_sigkill_mid_burn_then_restart(helper):
    """A helper killed mid-burn: its job becomes interrupted, xorriso does not survive, the queue resumes."""
    c = helper.client()
    running = c.submit("slow.iso", "sim0", identity="alice", speed=1)
    queued = c.submit("small.iso", "sim0", identity="bob")
    wait_burning(c, running["id"])
    [pid] = helper.xorriso_children()
    os.kill(pid, signal.SIGSTOP)     # frozen: it cannot die of SIGPIPE, the new helper must kill it
    c.close()
    assert helper.stop(signal.SIGKILL) == -signal.SIGKILL
    assert group_running(pid)
    helper.start()
    c = helper.client()
    job = c.job(running["id"])
    assert job["state"] == "interrupted" and job["error_code"] == "interrupted" and job["finished"]
    assert not group_running(pid)
    assert "killing xorriso process group %d" % pid in helper.log()
    done = wait_finished(c, queued["id"])
    assert done["state"] == "done" and done["verification"]["match"] is True


def test_sigterm_interrupts_running_job_and_keeps_the_queue(helper):
    c = helper.client()
    running = c.submit("slow.iso", "sim0", identity="alice", speed=1)
    queued = c.submit("small.iso", "sim0", identity="bob")
    wait_burning(c, running["id"])
    [pid] = helper.xorriso_children()
    c.close()
    assert helper.stop(signal.SIGTERM) == 0
    assert not group_running(pid)
    assert not os.path.exists(helper.socket)                    # removed: the helper created it
    helper.start()
    c = helper.client()
    job = c.job(running["id"])
    assert job["state"] == "interrupted" and "shut down" in job["error"]
    assert wait_finished(c, queued["id"])["state"] == "done"


def test_old_finished_jobs_are_pruned(helper_factory, iso_cache):
    h = helper_factory(keep_jobs=2)
    h.add_image("small.iso", iso_cache["small"])
    c = h.start().client()
    ids = [c.submit("small.iso", "sim0", identity="a", verify=False)["id"] for _ in range(4)]
    for job_id in ids:
        wait_for("job %d to be done" % job_id,
                 lambda job_id=job_id: all(j["state"] == "done" for j in c.jobs() if j["id"] == job_id) or None)
    wait_for("pruning", lambda: [j["id"] for j in c.jobs()] == ids[-2:])
    with pytest.raises(RequestRefused) as refused:
        c.job(ids[0])
    assert refused.value.code == "job_not_found" and refused.value.status == 404


def test_eject_and_drive_listing(helper):
    c = helper.client()
    assert c.eject("sim1") == {"drive": "sim1", "ejected": True}
    drives = {d["name"]: d for d in c.drives()}
    assert set(drives) == {"sim0", "sim1", "tiny", "zero", "full"}
    assert drives["tiny"]["capacity"] == 10**6 and drives["sim0"]["kind"] == "stdio"
    assert drives["sim0"]["dev"] == "stdio:" + os.path.join(helper.base, "state", "sim0.disc")
    assert drives["sim0"]["busy"] is False and drives["sim0"]["queued"] == 0
    assert drives["sim0"]["max_speed"] == 8
