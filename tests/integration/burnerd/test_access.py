# SPDX-License-Identifier: Apache-2.0
"""Who may talk to the helper, and what it refuses: socket permissions, peer uids, sanitising."""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time

import pytest

from clarens.burnerd.client import BurnerClient, HelperUnavailable, RequestRefused
from clarens.burnerd.errors import STATUS
from tests.integration.burnerd.support import PYTHON, ROOT, connect_raw, wait_burning, wait_finished

# Runs as another user: report what the client library raised, as JSON.
PROBE = """
import json, sys
from clarens.burnerd.client import BurnerClient, HelperUnavailable, RequestRefused
try:
    status = BurnerClient(sys.argv[1]).status()
    print(json.dumps({"ok": status["version"]}))
except HelperUnavailable as e:
    print(json.dumps({"unavailable": e.errno, "message": str(e)}))
except RequestRefused as e:
    print(json.dumps({"refused": e.code, "status": e.status, "message": e.message}))
"""


def probe_as(user: str, socket_path: str) -> dict:
    out = subprocess.run(["runuser", "-u", user, "--", PYTHON, "-c", PROBE, socket_path], cwd=ROOT,
                         capture_output=True, text=True, timeout=30, check=True)
    return json.loads(out.stdout)


def test_socket_mode_and_group(helper):
    st = os.stat(helper.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_gid == 33 and st.st_uid == 0                   # www-data's group


def test_nobody_is_stopped_by_socket_permissions(helper_factory, iso_cache):
    h = helper_factory()
    os.makedirs(os.path.join(h.base, "run"), mode=0o755)       # only the socket's own mode protects it
    h.start()
    result = probe_as("nobody", h.socket)
    assert result["unavailable"] == errno.EACCES, result
    assert "permission denied" in result["message"]


def test_group_member_not_in_allowed_uids_gets_403(helper_factory):
    h = helper_factory(allowed="root").start()
    result = probe_as("www-data", h.socket)
    assert result == {"refused": "forbidden", "status": 403, "message": "uid 33 may not use the burner helper"}
    assert "uid=33" in h.log() and "forbidden" in h.log()


def test_allowed_uid_by_name_may_connect(helper_factory):
    h = helper_factory(allowed="0, www-data").start()
    assert "ok" in probe_as("www-data", h.socket)


def test_refused_connection_is_closed(helper_factory):
    """A refused peer gets its 403 and loses the connection (no second request on it)."""
    h = helper_factory(allowed="www-data").start()                    # not root, the test's own uid
    sock = connect_raw(h.socket)
    sock.settimeout(10)
    sock.sendall(b"GET /v1/status HTTP/1.1\r\nHost: burner\r\n\r\n")
    received = b""
    while chunk := sock.recv(65536):          # until the helper closes (a timeout would fail the test)
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403 ") and b"Connection: close" in head
    assert json.loads(body)["error"]["code"] == "forbidden"


def test_keep_alive(helper):
    conn = http.client.HTTPConnection("localhost")
    conn.sock = sock = connect_raw(helper.socket)
    for path in ("/v1/status", "/v1/drives", "/v1/jobs"):
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200 and response.getheader("Content-Type") == "application/json"
        json.loads(response.read())
    assert conn.sock is sock                                           # one connection throughout


def test_curl_compatible(helper):
    out = subprocess.run(["curl", "-sS", "--unix-socket", helper.socket, "http://burner/v1/jobs",
                          "--json", '{"image": "small.iso", "drive": "sim1", "identity": "curl"}',
                          "-w", "\n%{http_code}"], capture_output=True, text=True, check=True)
    body, code = out.stdout.rsplit("\n", 1)
    assert code == "201" and json.loads(body)["job"]["identity"] == "curl"


def submit_refusal(client: BurnerClient, **body) -> RequestRefused:
    body.setdefault("identity", "alice")
    body.setdefault("drive", "sim0")
    with pytest.raises(RequestRefused) as refused:
        client._call("POST", "/v1/jobs", body)
    return refused.value


@pytest.fixture
def refusing_helper(helper, iso_cache, workdir):
    """A helper whose images directory holds every kind of thing that must not be burned."""
    images = helper.images
    outside = os.path.join(workdir, "outside.iso")
    with open(iso_cache["small"], "rb") as src, open(outside, "wb") as dst:
        dst.write(src.read())
    os.symlink(outside, os.path.join(images, "escape.iso"))
    os.symlink("small.iso", os.path.join(images, "alias.iso"))                 # stays inside: refused too
    os.symlink("../outside.iso", os.path.join(images, "relative-escape.iso"))
    os.mkfifo(os.path.join(images, "fifo.iso"))
    os.mkdir(os.path.join(images, "dir.iso"))
    helper.add_image("sub/inner.iso", iso_cache["small"])
    helper.add_image(".upload-1234.part", iso_cache["small"])
    os.link(os.path.join(images, helper.add_image("linked.iso", iso_cache["small"])), outside + ".link")
    os.chown(os.path.join(images, helper.add_image("foreign.iso", iso_cache["small"])), 33, 33)  # www-data's
    with open(os.path.join(images, "random.iso"), "wb") as f:
        f.write(os.urandom(64 * 1024))
    with open(os.path.join(images, "short.iso"), "wb") as f:
        f.write(b"CD001")
    return helper


@pytest.mark.parametrize("image, code", [
    ("/etc/passwd", "absolute_path"),
    ("{images}/small.iso", "absolute_path"),           # absolute even though it is inside
    ("../outside.iso", "parent_reference"),
    ("sub/../small.iso", "parent_reference"),
    ("sub/inner.iso", "subdirectory"),
    (".upload-1234.part", "hidden_file"),
    ("escape.iso", "symlink"),
    ("relative-escape.iso", "symlink"),
    ("alias.iso", "symlink"),                          # even one that stays inside
    ("linked.iso", "hard_linked"),
    ("foreign.iso", "wrong_owner"),                    # the images directory is root's here
    ("fifo.iso", "not_regular"),
    ("dir.iso", "not_regular"),
    ("random.iso", "not_iso"),
    ("short.iso", "not_iso"),
    ("missing.iso", "image_not_found"),
    ("", "bad_image_name"),
    ("a\nb.iso", "bad_image_name"),
    ("\ud800.iso", "bad_image_name"),                  # a lone surrogate: no file can have this name
    ("\udcff.iso", "bad_image_name"),
    (42, "bad_request"),
])
def test_image_refusals(refusing_helper, image, code):
    if isinstance(image, str):
        image = image.replace("{images}", refusing_helper.images)
    refused = submit_refusal(refusing_helper.client(), image=image)
    assert (refused.code, refused.status) == (code, 400), refused
    assert refused.message
    assert any("uid=0 " in line and "refused: %s: " % code in line for line in refusing_helper.log().splitlines())


def test_symlink_inside_images_dir_is_refused_at_start_too(refusing_helper):
    """A name accepted at submission and turned into a symlink while queued fails the job when it starts."""
    c = refusing_helper.client()
    images = refusing_helper.images
    blocker = c.submit("slow.iso", "sim0", identity="alice", speed=1)
    refusing_helper.add_image("later.iso", os.path.join(images, "small.iso"))
    job = c.submit("later.iso", "sim0", identity="alice")
    os.rename(os.path.join(images, "later.iso"), os.path.join(images, "later-real.iso"))
    os.symlink("later-real.iso", os.path.join(images, "later.iso"))
    wait_burning(c, blocker["id"])
    c.cancel(blocker["id"])
    job = wait_finished(c, job["id"])
    assert job["state"] == "failed" and job["error_code"] == "symlink" and "when the job started" in job["error"]


def test_fifo_does_not_block_the_helper(refusing_helper):
    """Refusing a FIFO must not open it (that would block until a writer came)."""
    c = refusing_helper.client()
    assert submit_refusal(c, image="fifo.iso").code == "not_regular"
    assert c.status()["version"]


def test_image_larger_than_medium(refusing_helper):
    refused = submit_refusal(refusing_helper.client(), image="small.iso", drive="tiny")
    assert refused.code == "too_large" and "holds 1000000" in refused.message


@pytest.mark.parametrize("body, code", [
    ({"image": "small.iso", "drive": "sr0"}, "unknown_drive"),
    ({"image": "small.iso", "drive": "SIM0"}, "unknown_drive"),              # exact match only
    ({"image": "small.iso", "drive": ["sim0"]}, "unknown_drive"),
    ({"image": "small.iso", "speed": 0}, "bad_speed"),
    ({"image": "small.iso", "speed": -1}, "bad_speed"),
    ({"image": "small.iso", "speed": 9}, "bad_speed"),                       # max_speed = 8
    ({"image": "small.iso", "speed": "4"}, "bad_speed"),
    ({"image": "small.iso", "speed": 1.5}, "bad_speed"),
    ({"image": "small.iso", "speed": True}, "bad_speed"),
    ({"image": "small.iso", "verify": "yes"}, "bad_request"),
    ({"image": "small.iso", "identity": ""}, "bad_identity"),
    ({"image": "small.iso", "identity": None}, "bad_identity"),
    ({"image": "small.iso", "identity": "x\x00y"}, "bad_identity"),
    ({"image": "small.iso", "identity": "x" * 1025}, "bad_identity"),
    ({"image": "small.iso", "identity": "/CN=\ud800"}, "bad_identity"),     # cannot be stored as UTF-8
    ({"image": "small.iso", "device": "/dev/sda"}, "bad_request"),           # unknown field
])
def test_request_refusals(helper, body, code):
    refused = submit_refusal(helper.client(), **body)
    assert (refused.code, refused.status) == (code, 400), refused
    assert helper.client().jobs() == []                                      # nothing was queued


@pytest.mark.parametrize("method, path, body, status, code", [
    ("GET", "/v1/nothing", None, 404, "not_found"),
    ("DELETE", "/v1/jobs/1", None, 405, "method_not_allowed"),
    ("GET", "/v1/jobs/1/cancel", None, 405, "method_not_allowed"),
    ("GET", "/v1/jobs/999", None, 404, "job_not_found"),
    ("POST", "/v1/jobs/999/cancel", b"{}", 404, "job_not_found"),
    ("GET", "/v1/drives/sr0", None, 404, "unknown_drive"),
    ("POST", "/v1/drives/sr0/eject", b"{}", 404, "unknown_drive"),
    ("GET", "/v1/jobs?state=burnt", None, 400, "bad_request"),
    ("POST", "/v1/jobs", b"{not json", 400, "bad_request"),
    ("POST", "/v1/jobs", b"[1, 2]", 400, "bad_request"),
    ("POST", "/v1/jobs", b"[" * 50000, 400, "bad_request"),                 # json.loads: RecursionError
    ("POST", "/v1/jobs", b"x" * (65 * 1024), 413, "body_too_large"),
    # more than a Unix socket holds: the caller is still sending when the answer is written
    ("POST", "/v1/jobs", b"x" * (900 * 1024), 413, "body_too_large"),
])
def test_http_refusals(helper, method, path, body, status, code):
    conn = http.client.HTTPConnection("localhost")
    conn.sock = connect_raw(helper.socket)
    conn.request(method, path, body=body)
    response = conn.getresponse()
    error = json.loads(response.read())["error"]
    assert (response.status, error["code"]) == (status, code), error
    assert error["message"]


def test_client_reports_helper_down(workdir):
    missing = os.path.join(workdir, "missing.sock")
    with pytest.raises(HelperUnavailable) as down:
        BurnerClient(missing).status()
    assert down.value.errno == errno.ENOENT and "does not exist" in str(down.value)
    stale = os.path.join(workdir, "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(stale)                                     # bound, never listening: connection refused
    try:
        with pytest.raises(HelperUnavailable) as down:
            BurnerClient(stale).status()
        assert down.value.errno == errno.ECONNREFUSED
    finally:
        s.close()


def test_systemd_socket_handover(helper_factory, iso_cache):
    """The helper takes fd 3 when LISTEN_PID is its pid, and leaves the socket to systemd at exit."""
    h = helper_factory()
    h.add_image("small.iso", iso_cache["small"])
    activated = os.path.join(h.base, "activated.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(activated)
    os.chmod(activated, 0o660)
    listener.listen(16)
    wrapper = [PYTHON, "-m", "clarens.dev.socket_activate", str(listener.fileno())]
    h.start(argv_prefix=wrapper, pass_fds=(listener.fileno(),), wait=False)
    listener.close()
    h.wait_ready(activated)
    assert not os.path.exists(h.socket)                       # did not create its own
    c = BurnerClient(activated)
    assert c.status()["pid"] == h.proc.pid
    job = c.submit("small.iso", "sim0", identity="alice")
    assert job["state"] == "queued"
    c.close()
    assert "from systemd" in h.log()
    assert h.stop() == 0
    assert os.path.exists(activated)                          # systemd's socket is not removed


def test_listen_pid_of_another_process_is_ignored(helper_factory):
    h = helper_factory()
    env_wrapper = ["/usr/bin/env", "LISTEN_PID=1", "LISTEN_FDS=1"]
    h.start(argv_prefix=env_wrapper)
    assert stat.S_ISSOCK(os.stat(h.socket).st_mode)            # made its own socket


def test_second_helper_on_same_database_refuses_to_start(helper):
    other = subprocess.run([PYTHON, "-m", "clarens.burnerd", "--config", helper.config], cwd=ROOT,
                           capture_output=True, text=True, timeout=30)
    assert other.returncode == 1 and "another helper is running" in other.stderr
    assert helper.client().status()


def test_status_cli(helper):
    c = helper.client()
    job = c.submit("small.iso", "sim0", identity="/CN=Alice")
    cli = [PYTHON, "-m", "clarens.burnerd", "status"]
    out = subprocess.run(cli + ["--config", helper.config], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "clarens-burnerd" in out.stdout and "sim0" in out.stdout and "/CN=Alice" in out.stdout
    out = subprocess.run(cli + ["--socket", helper.socket, "--json"], cwd=ROOT, capture_output=True, text=True)
    report = json.loads(out.stdout)
    assert report["jobs"][0]["id"] == job["id"] and report["status"]["pid"] == helper.proc.pid
    helper.stop(signal.SIGTERM)
    out = subprocess.run(cli + ["--socket", helper.socket], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and "unavailable" in out.stderr



def test_a_name_swapped_in_a_tight_loop_never_burns_anything_else(helper, iso_cache, workdir):
    """A thread keeps putting a regular ISO, a symlink to another ISO outside, a directory and a FIFO
    under one name while burns of that name are submitted: every answer is a 201 or a refusal with
    its code (never a 500), and every burn that happens is of the real ISO."""
    images, name = helper.images, "swap.iso"
    real = hashlib.sha256(open(iso_cache["small"], "rb").read()).hexdigest()
    outside = os.path.join(workdir, "outside.iso")
    shutil.copyfile(iso_cache["small2"], outside)
    parked = (".iso", ".link", ".dir", ".fifo")       # where each kind waits for its turn (hidden names)
    helper.add_image(".iso", iso_cache["small"])
    os.symlink(outside, os.path.join(images, ".link"))
    os.mkdir(os.path.join(images, ".dir"))
    os.mkfifo(os.path.join(images, ".fifo"))
    stop = threading.Event()

    def swap():
        while not stop.is_set():
            for place in parked:
                os.rename(os.path.join(images, place), os.path.join(images, name))
                time.sleep(0.0002)
                os.rename(os.path.join(images, name), os.path.join(images, place))

    swapper = threading.Thread(target=swap)
    swapper.start()
    c = helper.client()
    answers, accepted = [], []
    try:
        for i in range(300):
            try:
                job = c.submit(name, ("sim0", "sim1")[i % 2], identity="racer", verify=False)
                answers.append(201)
                accepted.append(job["id"])
            except RequestRefused as e:
                answers.append((e.status, e.code))
        finished = [wait_finished(c, job_id) for job_id in accepted]     # they start while the swapping goes on
    finally:
        stop.set()
        swapper.join()
    refusals = {a for a in answers if a != 201}
    assert accepted and refusals, answers
    assert all(400 <= status < 500 and STATUS[code] == status for status, code in refusals), refusals
    for job in finished:
        assert job["state"] in ("done", "failed"), job
        if job["state"] == "done":
            assert job["image_sha256"] == real, job
        else:
            assert STATUS[job["error_code"]] == 400 and "when the job started" in job["error"], job
    assert any(job["state"] == "done" for job in finished)
    assert "Traceback" not in helper.log() and helper.proc.poll() is None
