# SPDX-License-Identifier: Apache-2.0
"""Helpers for the burner helper tests: a real helper process, real xorriso, stdio: pseudo-drives.

Everything lives in a fresh directory under /tmp that other users may traverse
(pytest's own tmp_path is 0700 under /tmp/pytest-of-root), so that tests can
connect as ``www-data`` and ``nobody`` and be stopped by the socket's own
permissions rather than by a parent directory.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from clarens import procfs
from clarens.burnerd.client import BurnerClient, HelperUnavailable, RequestRefused
from tests.helpers import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PYTHON = "/usr/bin/python3"
XORRISO = "/usr/bin/xorriso"
ACTIVE = ("queued", "burning", "verifying")

BASE_CONFIG = """\
[burnerd]
socket = run/burnerd.sock
socket_mode = 0660
socket_group = www-data
allowed_uids = {allowed}
images_dir = images
db = state/jobs.tdb
keep_jobs = {keep_jobs}
max_speed = 8
cancel_grace = 2
log_level = debug
# These tests run the helper as root, as they always have; test_root_start.py tests the drop to a user.
user = root
{burnerd_extra}

[drive:sim0]
dev = stdio:state/sim0.disc
capacity_mb = 100

[drive:sim1]
kind = stdio
dev = stdio:state/sim1.disc
capacity_mb = 100

[drive:tiny]
dev = stdio:state/tiny.disc
capacity_mb = 1

# writes vanish, reads give zeros: every verification must fail
[drive:zero]
dev = stdio:/dev/zero
capacity_mb = 100

# every write fails with ENOSPC
[drive:full]
dev = stdio:/dev/full
capacity_mb = 100
{drives_extra}"""

# There is no optical drive here: a "device" drive is /dev/fake-dvd, for which this script stands in
# for xorriso (the real xorriso does everything else).  It logs each run, reports a blank DVD-R,
# takes EJECT_SECONDS to eject, and burns like a drive that is slow to stop: SIGTERM is ignored.
FAKE_XORRISO = """\
#!/bin/sh
case "$*" in
*/dev/fake-dvd*) ;;
*) exec {xorriso} "$@" ;;
esac
echo "start $*" >> {log}
case "$*" in
*-tell_media_space*)
    printf 'Media current: DVD-R sequential recording\\nMedia status : is blank\\nMedia space  : 2295104s\\n' ;;
*-eject*)
    sleep {eject_seconds} ;;
*cdrecord*)
    trap '' TERM
    echo 'xorriso : UPDATE :    1 of    2 MB written (fifo 99%) [buf  50%]   1.0x.'
    sleep 60 ;;
esac
echo "end $*" >> {log}
"""
DEVICE_DRIVE = """
[drive:dvd0]
kind = device
dev = /dev/fake-dvd
capacity_mb = 100
"""


def make_iso(path: str, payload_bytes: int, label: str = "TEST") -> str:
    """An ISO 9660 image at ``path`` holding one file of random bytes."""
    src = tempfile.mkdtemp(prefix="iso-src-")
    try:
        with open(os.path.join(src, "payload.bin"), "wb") as f:
            f.write(os.urandom(payload_bytes))
        subprocess.run([XORRISO, "-as", "mkisofs", "-R", "-J", "-V", label, "-o", path, src],
                       check=True, capture_output=True)
    finally:
        shutil.rmtree(src)
    return path


class Helper:
    """One helper process over a test directory (``images/``, ``state/``, ``run/``)."""

    def __init__(self, base: str, allowed: str = "root", keep_jobs: int = 100, fake_device: bool = False):
        self.base = base
        self.config = os.path.join(base, "burnerd.conf")
        self.socket = os.path.join(base, "run", "burnerd.sock")
        self.images = os.path.join(base, "images")
        self.db = os.path.join(base, "state", "jobs.tdb")
        self.log_path = os.path.join(base, "helper.log")
        self.fake_log = os.path.join(base, "fake-xorriso.log")    # with fake_device: the fake's runs
        self.proc: subprocess.Popen | None = None
        os.makedirs(self.images, exist_ok=True)
        extra, drives = "", ""
        if fake_device:
            fake = os.path.join(base, "fake-xorriso")
            with open(fake, "w") as f:
                f.write(FAKE_XORRISO.format(xorriso=XORRISO, log=self.fake_log, eject_seconds=3))
            os.chmod(fake, 0o755)
            extra, drives = "xorriso = %s\n" % fake, DEVICE_DRIVE
        self.write_config(BASE_CONFIG.format(allowed=allowed, keep_jobs=keep_jobs, burnerd_extra=extra,
                                             drives_extra=drives))

    def write_config(self, text: str) -> None:
        with open(self.config, "w") as f:
            f.write(text)

    def start(self, argv_prefix: list[str] = (), pass_fds: tuple[int, ...] = (), wait: bool = True,
              env: dict[str, str] | None = None) -> "Helper":
        """Start the helper (``argv_prefix``: a wrapper to exec it through; ``env``: added to its
        environment) and wait until it answers."""
        log = open(self.log_path, "a")
        argv = list(argv_prefix) + [PYTHON, "-m", "clarens.burnerd", "--config", self.config]
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, pass_fds=pass_fds,
                                     env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **(env or {})})
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, socket_path: str | None = None, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with BurnerClient(socket_path or self.socket, connect_timeout=0.5) as c:
                    c.status()
                return
            except RequestRefused:       # it answers, if only to refuse this uid
                return
            except HelperUnavailable:
                if self.proc.poll() is not None:
                    raise AssertionError("helper exited with %s:\n%s" % (self.proc.returncode, self.log())) from None
                if time.monotonic() > deadline:
                    raise AssertionError("helper not ready after %s s:\n%s" % (timeout, self.log())) from None
                time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Signal the helper and wait for it; its exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def client(self) -> BurnerClient:
        return BurnerClient(self.socket)

    def log(self) -> str:
        try:
            with open(self.log_path) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def add_image(self, name: str, source: str) -> str:
        path = os.path.join(self.images, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.copyfile(source, path)
        return name

    def xorriso_children(self) -> list[int]:
        """Pids of the xorriso processes the helper started (they are its direct children)."""
        stats = {pid: procfs.stat(pid) for pid in procfs.pids()}
        return [pid for pid, st in stats.items()
                if st is not None and st[0] == "xorriso" and st[1][1] == str(self.proc.pid)]


def wait_finished(client: BurnerClient, job_id: int, timeout: float = 60) -> dict:
    """Poll until job ``job_id`` has left queued/burning/verifying; its record."""
    return wait_for("job %d to finish" % job_id,
                    lambda: (lambda j: j if j["state"] not in ACTIVE else None)(client.job(job_id)), timeout=timeout)


def wait_burning(client: BurnerClient, job_id: int, min_bytes: int = 1, timeout: float = 30) -> dict:
    """Poll until job ``job_id`` is burning and has written at least ``min_bytes``."""
    return wait_for("job %d to burn" % job_id,
                    lambda: (lambda j: j if j["state"] == "burning" and j["progress"]["bytes"] >= min_bytes
                             else None)(client.job(job_id)), timeout=timeout)




def connect_raw(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s


def request(helper: Helper, method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
    """One request on a connection of its own: (HTTP status, decoded JSON body)."""
    conn = http.client.HTTPConnection("localhost", timeout=60)
    conn.sock = connect_raw(helper.socket)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()
