# SPDX-License-Identifier: Apache-2.0
"""A fresh Debian 12 root to install the package in, isolated from this machine and from other tests.

The root is made by mmdebstrap (variant ``apt``: Essential packages and apt, the
smallest system a package must install on), cached as a tarball under
``.state/package-test/`` and unpacked afresh for each run.  Everything in it
runs inside one set of namespaces held by a small reaper process (PID 1 there):

* its own PID namespace: killing the reaper kills every process started in the
  root (Apache, the burner helper, xorriso), whatever state they are in;
* its own mount namespace: ``/proc`` and the apt cache are mounted there only,
  and vanish with it;
* its own network namespace, with only a loopback: Apache listens on its usual
  ports 80 and 443 without meeting anything else on this machine, and nothing
  outside can reach it.  Only apt's downloads run in the host's network.

Commands run through ``nsenter`` and ``chroot`` as argv lists, with a clean
environment.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

from clarens import procfs

PYTHON = "/usr/bin/python3"
SUITE = "bookworm"
MIRRORS = ("deb http://deb.debian.org/debian bookworm main",
           "deb http://deb.debian.org/debian bookworm-updates main",
           "deb http://deb.debian.org/debian-security bookworm-security main")
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
       "HOME": "/root", "DEBIAN_FRONTEND": "noninteractive"}
# PID 1 of the namespace: reaps orphans (Apache daemonises) so none lingers as a zombie.
REAPER = """\
import os, signal, sys
def reap(*_):
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
signal.signal(signal.SIGCHLD, reap)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("ready", flush=True)
while True:
    signal.pause()
"""


class ChrootError(Exception):
    """A command in the root failed; the message has its output."""


def base_tarball(cache_dir: str) -> str:
    """The cached Debian 12 base (mmdebstrap), made on first use."""
    tarball = os.path.join(cache_dir, "%s-apt.tar" % SUITE)
    if not os.path.exists(tarball):
        os.makedirs(cache_dir, exist_ok=True)
        partial = tarball + ".partial"
        out = subprocess.run(["mmdebstrap", "--variant=apt", "--mode=root", "--format=tar", "--quiet",
                              SUITE, partial, *MIRRORS], capture_output=True, text=True)
        if out.returncode != 0:
            raise ChrootError("mmdebstrap failed:\n%s" % out.stderr[-3000:])
        os.replace(partial, tarball)
    return tarball


def mounts_under(path: str) -> list[str]:
    """Mount points at or below ``path`` in this (the host's) mount namespace."""
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == path or p.startswith(path + "/")]


def processes_in(path: str) -> list[int]:
    """Pids of the processes whose root directory is ``path``."""
    path = os.path.realpath(path)
    found = []
    for pid in procfs.pids():
        try:
            if os.readlink("/proc/%d/root" % pid) == path:
                found.append(pid)
        except OSError:
            pass
    return found


class Root:
    """An unpacked root directory and the namespaces its processes run in."""

    def __init__(self, path: str, tarball: str, apt_cache: str):
        self.path = os.path.realpath(path)
        self.tarball = tarball
        self.apt_cache = apt_cache
        self.holder: subprocess.Popen | None = None
        self.reaper = 0          # the reaper's pid, as this machine sees it

    def create(self) -> None:
        """Unpack a fresh root (removing the last run's) and start the namespaces."""
        if mounts_under(self.path) or processes_in(self.path):
            raise ChrootError("%s is still in use (mounts or processes): not removing it" % self.path)
        shutil.rmtree(self.path, ignore_errors=True)
        os.makedirs(self.path)
        subprocess.run(["tar", "-C", self.path, "-xf", self.tarball], check=True)
        os.makedirs(os.path.join(self.apt_cache, "partial"), exist_ok=True)
        self.holder = subprocess.Popen(
            ["unshare", "--fork", "--pid", "--mount", "--net", "--mount-proc=%s/proc" % self.path,
             PYTHON, "-c", REAPER], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        assert self.holder.stdout is not None
        if self.holder.stdout.readline().strip() != "ready":
            raise ChrootError("the namespace holder did not start")
        with open("/proc/%d/task/%d/children" % (self.holder.pid, self.holder.pid)) as f:
            self.reaper = int(f.read().split()[0])
        self.host(["mount", "--bind", self.apt_cache, self.path + "/var/cache/apt/archives"], net=False)
        self.host(["mount", "-t", "devpts", "-o", "newinstance,ptmxmode=0666", "devpts", self.path + "/dev/pts"],
                  net=False)
        self.host(["ip", "link", "set", "lo", "up"])

    def host(self, argv: list[str], net: bool = True, check: bool = True,
             **kwargs) -> subprocess.CompletedProcess:
        """Run this machine's ``argv`` inside the namespaces (not chrooted)."""
        flags = ["-p", "-m"] + (["-n"] if net else [])
        out = subprocess.run(["nsenter", "-t", str(self.reaper), *flags, "--", *argv],
                             capture_output=True, text=True, **kwargs)
        if check and out.returncode != 0:
            raise ChrootError("%s failed (%d):\n%s%s" % (argv, out.returncode, out.stdout[-3000:], out.stderr[-3000:]))
        return out

    def argv(self, argv: list[str], net: bool = True, cwd: str = "/", env: dict[str, str] | None = None) -> list[str]:
        """The command line that runs ``argv`` in the root."""
        flags = ["-p", "-m"] + (["-n"] if net else [])
        environment = ["%s=%s" % kv for kv in {**ENV, **(env or {})}.items()]
        return ["nsenter", "-t", str(self.reaper), *flags, "--", "chroot", self.path,
                "/usr/bin/env", "-i", "-C", cwd, *environment, *argv]

    def run(self, argv: list[str], net: bool = True, check: bool = True, input: str | None = None,
            cwd: str = "/", env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run ``argv`` in the root and wait for it; ChrootError if it fails and ``check``."""
        out = subprocess.run(self.argv(argv, net, cwd, env), capture_output=True, text=True, input=input,
                             stdin=None if input is not None else subprocess.DEVNULL, timeout=timeout)
        if check and out.returncode != 0:
            raise ChrootError("%s failed (%d):\n%s\n%s" % (argv, out.returncode, out.stdout[-4000:],
                                                           out.stderr[-4000:]))
        return out

    def spawn(self, argv: list[str], log: str) -> subprocess.Popen:
        """Start ``argv`` in the root in the background, its output appended to this machine's ``log``."""
        with open(log, "ab") as f:
            return subprocess.Popen(self.argv(argv), stdin=subprocess.DEVNULL, stdout=f, stderr=f)

    def file(self, path: str) -> str:
        """Where the root's ``path`` is, seen from this machine."""
        return os.path.join(self.path, path.lstrip("/"))

    def destroy(self, timeout: float = 30) -> None:
        """Kill every process in the root (PID 1 of its namespace takes them all) and let its mounts go."""
        if self.holder is not None:
            # The reaper exits on SIGTERM; when PID 1 of a namespace ends, the kernel kills the rest.
            for signo in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.kill(self.reaper, signo)
                    self.holder.wait(timeout / 2)
                    break
                except ProcessLookupError:
                    break
                except subprocess.TimeoutExpired:
                    continue
            self.holder.wait(timeout)
            self.holder.stdout.close()
            self.holder = None
        deadline = time.monotonic() + timeout
        while processes_in(self.path) and time.monotonic() < deadline:
            time.sleep(0.1)
