# SPDX-License-Identifier: Apache-2.0
"""The regression test for the orphan race, against the helper as a black box.

The helper used to record ``burning``, start xorriso, and only then record its
pid (a tdb transaction with fsyncs).  A SIGKILL in that window left an xorriso
nothing had recorded; xorriso 1.5.4 ignores SIGPIPE and finished its burn, and
libburn takes no lock on a stdio: pseudo-disc, so it and the next job wrote the
same disc at once.  Slow fsyncs (a fresh machine) widen the window: here a
preloaded shim slows the helper's syncs, and the helper is killed as soon as
its xorriso appears.  (Only the helper's public behaviour is used, so this test
runs unchanged against the code before the fix, and fails there.)
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from clarens.burnerd.processes import group_alive
from clarens.db import open_db
from tests.helpers import sha256_file, wait_for
from tests.integration.burnerd.support import wait_finished

# Makes fsync, fdatasync and msync slow in the process it is preloaded into, like the
# fresh machine (still flushing its package installs) on which the race was first seen.
SLOW_SYNC_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

static void slow(void)
{
    const char *ms = getenv("SLOW_SYNC_MS");
    long n = ms ? atol(ms) : 0;
    struct timespec pause = {n / 1000, (n % 1000) * 1000000L};
    nanosleep(&pause, NULL);
}

int fsync(int fd)
{
    slow();
    return ((int (*)(int))dlsym(RTLD_NEXT, "fsync"))(fd);
}

int fdatasync(int fd)
{
    slow();
    return ((int (*)(int))dlsym(RTLD_NEXT, "fdatasync"))(fd);
}

int msync(void *addr, size_t length, int flags)
{
    slow();
    return ((int (*)(void *, size_t, int))dlsym(RTLD_NEXT, "msync"))(addr, length, flags);
}
"""


@pytest.fixture(scope="session")
def slow_sync(tmp_path_factory) -> str:
    """The path of a shared object that slows down syncs (for LD_PRELOAD)."""
    d = tmp_path_factory.mktemp("slow-sync")
    (d / "slow_sync.c").write_text(SLOW_SYNC_C)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(d / "slow_sync.so"), str(d / "slow_sync.c"),
                    "-ldl"], check=True, capture_output=True)
    return str(d / "slow_sync.so")


def run_record(helper, drive: str) -> dict | None:
    """The ``run:DRIVE`` record in the (stopped) helper's job database."""
    db = open_db(helper.db)
    try:
        return db.get("run:" + drive)
    finally:
        db.close()


def test_helper_killed_between_starting_xorriso_and_recording_it(helper_factory, iso_cache, slow_sync):
    """The original race: SIGKILL after xorriso started, before its pid was durably recorded."""
    h = helper_factory()
    h.add_image("slow.iso", iso_cache["slow"])
    h.add_image("small.iso", iso_cache["small"])
    # Every tdb commit (4 msync + 4 fdatasync) now takes over a second, so recording xorriso's pid
    # leaves a wide window.  xorriso itself gets a clean environment: only the helper is slowed.
    h.start(env={"LD_PRELOAD": slow_sync, "SLOW_SYNC_MS": "150"})
    c = h.client()
    c.submit("slow.iso", "sim0", identity="alice", speed=1)
    pid = wait_for("xorriso to start", lambda: next(iter(h.xorriso_children()), None), timeout=60, interval=0.002)
    c.close()
    assert h.stop(signal.SIGKILL) == -signal.SIGKILL
    run = run_record(h, "sim0")
    assert run is None or run["pid"] is None, run       # killed inside the window: the pid was never recorded
    h.start()
    survived = group_alive(pid)
    c = h.client()
    job = wait_finished(c, c.submit("small.iso", "sim0", identity="bob")["id"])
    wait_for("the orphan to end", lambda: not group_alive(pid))          # (only the old code needs this)
    disc_now = sha256_file(os.path.join(h.base, "state", "sim0.disc"), job["image_size"])
    # Before the fix: the orphan survived, the next (fast) burn verified, and then the orphan went on
    # writing its own image over the verified disc.
    assert not survived, "the old helper's xorriso %d outlived the restart" % pid
    assert job["state"] == "done" and job["verification"]["match"], job
    assert disc_now == job["image_sha256"]                                  # nothing wrote over it later
