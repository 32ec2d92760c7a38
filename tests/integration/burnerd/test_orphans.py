# SPDX-License-Identifier: Apache-2.0
"""No xorriso outlives its helper unnoticed: each layer on its own (test_race.py has them together).

xorriso 1.5.4 ignores SIGPIPE, so an xorriso whose helper died finishes its burn,
and libburn does not lock a stdio: pseudo-disc: such an orphan and the next job
would write the same disc at once.  The layers: the run: record written before
xorriso starts, with a token xorriso carries (a starting helper kills what the
records name); the drive lock every xorriso holds (a job or eject kills our own
holders, and refuses to share the drive with anyone else); pdeathsig.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess

import pytest

from clarens import procfs
from clarens.burnerd import backends, processes
from clarens.burnerd import config as burner_config
from clarens.burnerd.client import RequestRefused
from clarens.burnerd.drivelock import lock_path
from clarens.burnerd.jobs import JobStore
from clarens.burnerd.processes import group_alive
from clarens.db import open_db
from tests.helpers import sha256_file, wait_for
from tests.integration.burnerd.support import wait_burning, wait_finished


def plant_orphan(h, token: str) -> subprocess.Popen:
    """An xorriso as a dead helper would have left it: burning slow.iso onto sim0 in its own session,
    holding sim0's lock, carrying ``token``; not a child of the helper."""
    config = burner_config.load(h.config)
    drive = config.drives["sim0"]
    commands = backends.for_drive(drive, config, logging.getLogger("test")).commands
    fd = os.open(lock_path(h.db, "sim0"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        argv = commands.burn(os.path.join(h.images, "slow.iso"), 1)
        orphan = subprocess.Popen(argv, env={**processes.CLEAN_ENV, processes.RUN_VAR: token}, pass_fds=(fd,),
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
    finally:
        os.close(fd)                                         # the orphan alone holds the lock now
    wait_for("the orphan to write", lambda: os.path.exists(drive.path))
    return orphan


@pytest.mark.parametrize("recorded", [True, False], ids=["recorded", "unrecorded"])
def test_orphan_holding_the_drive_is_killed_and_the_next_burn_verifies(helper_factory, iso_cache, recorded):
    """Recorded: the starting helper finds it by the token of its run: record.  Unrecorded (a token no
    record names): the drive lock finds it when the next job takes the drive, and sees our variable."""
    h = helper_factory()
    h.add_image("slow.iso", iso_cache["slow"])
    h.add_image("small.iso", iso_cache["small"])
    os.makedirs(os.path.dirname(h.db), mode=0o700)
    if recorded:
        db = open_db(h.db)
        token = JobStore(db, 100).begin_run("sim0", None, "burn")
        db.close()
    else:
        token = "0123456789abcdef0123456789abcdef"
    orphan = plant_orphan(h, token)
    try:
        h.start()
        assert group_alive(orphan.pid) is not recorded
        if recorded:
            assert "killing xorriso process group %d left by the previous helper" % orphan.pid in h.log()
        c = h.client()
        job = wait_finished(c, c.submit("small.iso", "sim0", identity="alice")["id"])
        assert job["state"] == "done" and job["verification"]["match"], job
        assert not group_alive(orphan.pid)
        if not recorded:
            assert "killing xorriso process group %d: it holds the drive's lock" % orphan.pid in h.log()
        assert sha256_file(os.path.join(h.base, "state", "sim0.disc"), job["image_size"]) == job["image_sha256"]
    finally:
        orphan.kill()
        orphan.wait()


def test_a_drive_locked_by_another_program_is_busy(helper):
    """A holder without our variable is left alone: a job fails drive_busy naming it, eject answers 409."""
    fd = os.open(lock_path(helper.db, "sim0"), os.O_RDWR | os.O_CREAT, 0o600)
    c = helper.client()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        job = wait_finished(c, c.submit("small.iso", "sim0", identity="alice")["id"])
        assert job["state"] == "failed" and job["error_code"] == "drive_busy", job
        assert "process %d (" % os.getpid() in job["error"] and job["started"] is None
        with pytest.raises(RequestRefused) as refused:
            c.eject("sim0")
        assert (refused.value.status, refused.value.code) == (409, "drive_busy")
        assert "process %d (" % os.getpid() in refused.value.message
        assert c.drive("sim0")["busy"] is False
    finally:
        os.close(fd)
    assert wait_finished(c, c.submit("small.iso", "sim0", identity="alice")["id"])["state"] == "done"
    assert c.eject("sim0") == {"drive": "sim0", "ejected": True}


def test_xorriso_gets_sigterm_when_the_helper_dies(helper):
    """pdeathsig on its own: xorriso is frozen, so only a signal that is *pending* can show what the
    kernel sent when the helper died (no new helper is started to kill anything)."""
    c = helper.client()
    job = c.submit("slow.iso", "sim0", identity="alice", speed=1)
    wait_burning(c, job["id"])
    [pid] = helper.xorriso_children()

    def pending() -> int:
        with open("/proc/%d/status" % pid) as f:
            fields = dict(line.split(":\t", 1) for line in f.read().splitlines())
        return int(fields["ShdPnd"], 16) | int(fields["SigPnd"], 16)

    os.kill(pid, signal.SIGSTOP)
    try:
        wait_for("xorriso to stop", lambda: procfs.stat(pid)[1][0] == "T")
        c.close()
        helper.stop(signal.SIGKILL)
        assert pending() & (1 << (signal.SIGTERM - 1)), "no SIGTERM pending for xorriso %d" % pid
        os.kill(pid, signal.SIGCONT)
        wait_for("xorriso to act on its SIGTERM", lambda: not group_alive(pid), timeout=60)
    finally:
        processes.kill_group(pid, signal.SIGKILL)          # a stopped orphan would stay forever
