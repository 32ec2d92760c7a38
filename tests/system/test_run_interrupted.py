# SPDX-License-Identifier: Apache-2.0
"""A test run stopped with SIGTERM (a CI timeout, a closed terminal) leaves nothing running."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time

from clarens import procfs
from tests.helpers import ROOT, wait_for


def _command(pid: int) -> bytes:
    return b" ".join(procfs.cmdline(pid))


def _ours(marker: str) -> list[int]:
    """Processes whose command line names ``marker`` (the run's own temporary directory)."""
    return [pid for pid in procfs.pids() if pid != os.getpid() and marker.encode() in _command(pid)]


def test_sigterm_to_a_test_run_stops_its_apache_and_helper():
    # A run whose session instance (Apache and burner helper) is up, inside a test that lingers;
    # its temporary files under a directory of ours, which Apache's children may traverse.
    root = tempfile.mkdtemp(prefix="irun-", dir="/tmp")   # short: a Unix socket path lives below it
    os.chmod(root, 0o755)
    probe = os.path.join(root, "probe")
    env = dict(os.environ, TMPDIR=root, CLARENS_LINGER=probe)
    run = subprocess.Popen(["/usr/bin/python3", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "tests/system/test_run_interrupted.py::test_linger"], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for("the run's instance to start", lambda: os.path.exists(probe) or run.poll() is not None, 120)
        assert run.poll() is None, run.communicate()[0].decode(errors="replace")
        marker = root
        assert any(b"apache2" in _command(p) for p in _ours(marker))
        assert any(b"clarens.burnerd" in _command(p) for p in _ours(marker))
        run.send_signal(signal.SIGTERM)
        output = run.communicate(timeout=120)[0].decode(errors="replace")
        wait_for("every process of the run to exit:\n" + output, lambda: not _ours(marker), 30)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        for pid in _ours(root):          # what a failure here left behind
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


def test_linger(server):
    """Run only by the test above (a no-op otherwise): holds the session instance until stopped."""
    probe = os.environ.get("CLARENS_LINGER")
    if probe:
        with open(probe, "w"):
            pass
        time.sleep(300)
