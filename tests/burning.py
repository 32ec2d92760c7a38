# SPDX-License-Identifier: Apache-2.0
"""Waiting on the burner through a real Apache: a job reaching a state, a helper answering.
Shared by the burner tests and the fault tests (which kill the helper mid-burn)."""

import time

import pytest

from clarens.burnerd.client import BurnerClient, BurnerError
from tests.integration.burnerd.support import ACTIVE


def wait_job(proxy, job_id, until=lambda job: job["state"] not in ACTIVE, timeout=120):
    """Poll ``burner.status(job_id)`` until ``until(job)`` (by default: the job has ended);
    (that job, every (state, percent) seen)."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = proxy.burner.status(job_id)
        seen.append((job["state"], job["progress"]["percent"]))
        if until(job):
            return job, seen
        time.sleep(0.2)
    pytest.fail("job %d still %s" % (job_id, job["state"]))


def wait_helper(server, other_than=None, timeout=20):
    """The pid of a running helper that answers (a new one, if ``other_than`` is given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = server.helper_pid()
        if pid and pid != other_than:
            try:
                if BurnerClient(server.all_options()["clarens.module:burner.socket"], timeout=2).status()["pid"] == pid:
                    return pid
            except BurnerError:
                pass
        time.sleep(0.1)
    pytest.fail("no helper answered within %d s" % timeout)

