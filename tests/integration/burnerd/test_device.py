# SPDX-License-Identifier: Apache-2.0
"""Real drives answer quickly too: the medium from a cache, eject and cancel that answer 202.

There is no optical drive here: the drive ``dvd0`` is ``kind = device`` with a
stand-in for xorriso (see ``FAKE_XORRISO`` in support.py) that reports a blank
DVD-R, takes 3 s to eject, and burns like a drive slow to stop (it ignores SIGTERM).
"""

from __future__ import annotations

import time

import pytest

from clarens.burnerd.worker import MEDIUM_MAX_AGE
from tests.helpers import wait_for
from tests.integration.burnerd.support import request, wait_burning, wait_finished


@pytest.fixture
def device_helper(helper_factory, iso_cache):
    h = helper_factory(fake_device=True)
    h.add_image("small.iso", iso_cache["small"])
    return h.start()


def fake_runs(h, phase: str, what: str) -> int:
    """How many runs of the fake xorriso with ``what`` in their arguments have reached ``phase`` (start, end)."""
    try:
        with open(h.fake_log) as f:
            return sum(1 for line in f if line.startswith(phase + " ") and what in line)
    except FileNotFoundError:
        return 0


def test_medium_comes_from_a_cache_refreshed_in_the_background(device_helper):
    c = device_helper.client()
    began = time.monotonic()
    first = c.drive("dvd0")["medium"]
    assert first == {"current": None, "status": None, "free_bytes": None, "ok": None, "checked": None}
    medium = wait_for("a look at the medium",
                      lambda: c.drive("dvd0")["medium"]["checked"] and c.drive("dvd0")["medium"])
    assert medium["current"] == "DVD-R sequential recording" and medium["status"] == "is blank"
    assert medium["free_bytes"] == 2295104 * 2048 and medium["ok"] is True
    for _ in range(20):                                  # the page polls every second; here faster
        assert c.drives()[0]["medium"]["free_bytes"] == medium["free_bytes"]
        time.sleep(0.05)
    looks = fake_runs(device_helper, "start", "-tell_media_space")
    assert 1 <= looks <= 1 + (time.monotonic() - began) / MEDIUM_MAX_AGE, looks


def test_eject_still_under_way_answers_202_and_finishes_in_the_background(device_helper):
    status, body = request(device_helper, "POST", "/v1/drives/dvd0/eject", b"{}")
    assert (status, body) == (202, {"drive": "dvd0", "ejected": False, "ejecting": True})
    # The request's thread has ended with its connection: the eject must not have been its child.
    c = device_helper.client()
    drive = c.drive("dvd0")
    assert drive["busy"] is True and drive["medium"] == {"busy": True}
    status, body = request(device_helper, "POST", "/v1/drives/dvd0/eject", b"{}")
    assert (status, body["error"]["code"]) == (409, "drive_busy")
    wait_for("the eject to finish", lambda: not c.drive("dvd0")["busy"])
    assert fake_runs(device_helper, "end", "-eject all") == 1
    assert "dvd0: ejected" in device_helper.log()


def test_cancel_of_a_drive_slow_to_stop_answers_202_then_the_job_ends_cancelled(device_helper):
    c = device_helper.client()
    job = c.submit("small.iso", "dvd0", identity="alice", verify=False)
    wait_burning(c, job["id"])
    status, body = request(device_helper, "POST", "/v1/jobs/%d/cancel" % job["id"], b"{}")
    assert status == 202 and body["job"]["state"] == "burning"          # SIGTERM is ignored...
    job = wait_finished(c, job["id"])                                     # ...SIGKILL after cancel_grace
    assert job["state"] == "cancelled" and job["error_code"] == "cancelled"


def test_client_takes_202_for_success(device_helper):
    c = device_helper.client()
    assert c.eject("dvd0") == {"drive": "dvd0", "ejected": False, "ejecting": True}
    wait_for("the eject to finish", lambda: not c.drive("dvd0")["busy"])
    job = c.submit("small.iso", "dvd0", identity="alice", verify=False)
    wait_burning(c, job["id"])
    assert c.cancel(job["id"])["state"] == "burning"
    assert wait_finished(c, job["id"])["state"] == "cancelled"
