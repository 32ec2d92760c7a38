# SPDX-License-Identifier: Apache-2.0
"""The helper started as root without systemd: it sets up for its user, drops to it, and cleans up.

Containers and chroots have no systemd to make the socket and the state directory
and start the helper as ``clarens-burner``; these tests start it as root, the way
an init script or a container entry point would, with ``user = nobody``.
"""

from __future__ import annotations

import grp
import os
import pwd
import signal
import socket
import stat
import subprocess

import pytest

from tests.helpers import sha256_file
from tests.integration.burnerd.support import PYTHON, ROOT, wait_finished

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="starts the helper as root and as other users")

NOBODY = pwd.getpwnam("nobody")
WWW = pwd.getpwnam("www-data")


def _as(helper, user: str = "nobody") -> None:
    """Rewrite the helper's configuration to run as ``user`` and admit www-data."""
    with open(helper.config) as f:
        text = f.read()
    assert "\nuser = root\n" in text and "\nallowed_uids = root\n" in text
    helper.write_config(text.replace("\nuser = root\n", "\nuser = %s\n" % user)
                        .replace("\nallowed_uids = root\n", "\nallowed_uids = www-data root\n"))


def _status(pid: int) -> dict[str, str]:
    with open("/proc/%d/status" % pid) as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def _start_fails(helper, as_user: str | None = None) -> subprocess.CompletedProcess:
    argv = [PYTHON, "-m", "clarens.burnerd", "--config", helper.config]
    if as_user:
        argv = ["/usr/sbin/runuser", "-u", as_user, "--"] + argv
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})


def test_started_as_root_it_runs_as_its_user_with_its_own_socket_and_state(helper_factory, iso_cache):
    h = helper_factory()
    _as(h)
    h.add_image("small.iso", iso_cache["small"])
    h.start()
    status = _status(h.proc.pid)
    assert status["Uid"].split() == [str(NOBODY.pw_uid)] * 4
    assert status["Gid"].split() == [str(NOBODY.pw_gid)] * 4
    assert status["Groups"].split() == [str(g) for g in os.getgrouplist("nobody", NOBODY.pw_gid)]
    assert status["NoNewPrivs"].strip() == "1" and int(status["CapEff"], 16) == 0

    sock, run_dir, state = os.lstat(h.socket), os.lstat(os.path.dirname(h.socket)), os.lstat(os.path.dirname(h.db))
    assert stat.S_ISSOCK(sock.st_mode) and stat.S_IMODE(sock.st_mode) == 0o660
    assert (sock.st_uid, sock.st_gid) == (NOBODY.pw_uid, WWW.pw_gid)
    assert (run_dir.st_uid, run_dir.st_gid, stat.S_IMODE(run_dir.st_mode)) == (NOBODY.pw_uid, WWW.pw_gid, 0o710)
    assert (state.st_uid, stat.S_IMODE(state.st_mode)) == (NOBODY.pw_uid, 0o700)
    assert os.stat(h.db).st_uid == NOBODY.pw_uid and os.stat(h.db + ".lock").st_uid == NOBODY.pw_uid

    # The web tier's user gets in through the socket's group (nobody is not in it) ...
    www = subprocess.run(["runuser", "-u", "www-data", "--", PYTHON, "-m", "clarens.burnerd", "status",
                          "--socket", h.socket, "--json"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert www.returncode == 0, www.stderr
    assert "www-data" not in [g.gr_name for g in grp.getgrall() if "nobody" in g.gr_mem]
    # ... and the helper burns and verifies as its user.
    c = h.client()
    job = wait_finished(c, c.submit("small.iso", "sim0", identity="/CN=Alice")["id"])
    assert job["state"] == "done" and job["verification"]["match"] is True, job
    disc = os.path.join(h.base, "state", "sim0.disc")
    assert os.stat(disc).st_uid == NOBODY.pw_uid and sha256_file(disc, job["image_size"]) == job["image_sha256"]
    c.close()

    assert h.stop() == 0
    assert not os.path.lexists(h.socket)                    # removed by the unprivileged helper itself
    assert "running as nobody" in h.log()


def test_a_root_start_after_a_killed_helper_replaces_its_socket(helper_factory):
    h = helper_factory()
    _as(h)
    h.start()
    assert h.stop(signal.SIGKILL) == -signal.SIGKILL
    assert stat.S_ISSOCK(os.lstat(h.socket).st_mode)       # nobody could remove it
    h.start()                                               # the same directories, taken as they are
    assert h.client().status()["pid"] == h.proc.pid
    assert h.stop() == 0 and not os.path.lexists(h.socket)


def test_a_missing_user_is_named_with_the_command_that_creates_it(helper_factory):
    h = helper_factory()
    _as(h, "clarens-no-such-user")
    out = _start_fails(h)
    assert out.returncode == 1
    assert "no user 'clarens-no-such-user'" in out.stderr and "adduser --system" in out.stderr
    assert not os.path.lexists(h.socket) and not os.path.exists(os.path.dirname(h.db))


def test_a_state_directory_of_another_user_is_refused_not_taken(helper_factory):
    h = helper_factory()
    _as(h)
    state = os.path.dirname(h.db)
    os.mkdir(state, 0o700)
    os.chown(state, WWW.pw_uid, WWW.pw_gid)
    out = _start_fails(h)
    assert out.returncode == 1 and "%s belongs to www-data" % state in out.stderr, out.stderr
    assert os.stat(state).st_uid == WWW.pw_uid and not os.path.lexists(h.socket)


def test_a_failure_after_binding_removes_the_socket(helper_factory):
    h = helper_factory()
    _as(h)
    os.makedirs(h.db)                                      # the job database cannot be opened
    os.chown(os.path.dirname(h.db), NOBODY.pw_uid, NOBODY.pw_gid)
    out = _start_fails(h)
    assert out.returncode == 1 and "cannot open the job database %s" % h.db in out.stderr, out.stderr
    assert os.path.isdir(os.path.dirname(h.socket)) and not os.path.lexists(h.socket)


def test_an_unprivileged_start_says_what_to_do_and_leaves_no_socket(helper_factory):
    """As nobody, with the socket's group www-data (which nobody is not in): the failure the
    issue reported ("Operation not permitted", a stale socket), now explained and cleaned up."""
    h = helper_factory()
    _as(h)
    for d in (os.path.dirname(h.socket), os.path.dirname(h.db)):
        os.mkdir(d, 0o700)
        os.chown(d, NOBODY.pw_uid, NOBODY.pw_gid)
    out = _start_fails(h, as_user="nobody")
    assert out.returncode == 1 and "Operation not permitted" in out.stderr
    assert "start the helper as root" in out.stderr and not os.path.lexists(h.socket)


def test_an_unprivileged_start_without_its_state_directory_says_what_to_do(helper_factory):
    h = helper_factory()
    _as(h)
    out = _start_fails(h, as_user="nobody")
    assert out.returncode == 1 and "Permission denied as user nobody" in out.stderr, out.stderr
    assert "start the helper as root" in out.stderr and not os.path.lexists(h.socket)


def test_a_failure_while_handing_the_socket_over_removes_it(helper_factory):
    """Between binding (as the user) and dropping root, a failure leaves no socket behind either."""
    h = helper_factory()
    _as(h)
    script = ("import sys\n"
              "from clarens.burnerd import daemon, privileges\n"
              "def refuse(*args):\n"
              "    raise privileges.PrivilegeError('refused by the test')\n"
              "privileges.give_socket = refuse\n"
              "sys.exit(daemon.run(sys.argv[1]))\n")
    out = subprocess.run([PYTHON, "-c", script, h.config], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "refused by the test" in out.stderr, out.stderr
    assert os.path.isdir(os.path.dirname(h.socket)) and not os.path.lexists(h.socket)


def _notify_socket(directory: str) -> tuple[socket.socket, str]:
    """A socket of root's, 0600, where the helper's notifications arrive (as start-stop-daemon's do)."""
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    os.chmod(path, 0o600)
    sock.settimeout(30)
    return sock, path


def test_it_tells_its_starter_when_it_is_ready_and_goes_by_its_name(helper_factory, tmp_path):
    """The init script's start-stop-daemon --notify-await returns when the helper serves (it is
    told after the helper dropped root, on a socket only root may use), and stops it by name."""
    h = helper_factory()
    _as(h)
    sock, path = _notify_socket(str(tmp_path))
    with sock:
        h.start(env={"NOTIFY_SOCKET": path})
        assert sock.recv(4096).decode().startswith("READY=1\nSTATUS=listening on %s" % h.socket)
    with open("/proc/%d/comm" % h.proc.pid) as f:
        assert f.read() == "clarens-burnerd\n"           # started as python3 -m clarens.burnerd
    assert _status(h.proc.pid)["Uid"].split()[0] == str(NOBODY.pw_uid)
    assert h.stop() == 0


def test_a_start_that_fails_tells_its_starter_why(helper_factory, tmp_path):
    h = helper_factory()
    _as(h)
    h.start()
    sock, path = _notify_socket(str(tmp_path))
    with sock:
        out = subprocess.run([PYTHON, "-m", "clarens.burnerd", "--config", h.config], cwd=ROOT, capture_output=True,
                             text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "NOTIFY_SOCKET": path})
        assert out.returncode == 1 and "another helper is running" in out.stderr
        message = sock.recv(4096).decode()
    assert "STATUS=cannot start: another helper is running" in message and "\nERRNO=5" in message
    assert h.stop() == 0
