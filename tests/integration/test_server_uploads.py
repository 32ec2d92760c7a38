# SPDX-License-Identifier: Apache-2.0
"""Image uploads through the real Apache: refusals before the body is sent, resuming after
dropped connections and killed children, expiry of what nobody resumes, and real sizes."""

import hashlib
import json
import os
import signal
import subprocess
import time

import pytest

from clarens import faults
from clarens.burnerd.errors import FAULTS
from clarens.dev import devpki
from clarens.web.uploads import CHUNK
from tests.helpers import ROOT, CuttingProxy, make_iso, sha256_file, start_instance
from tests.uploading import answer, head, partials, put_range, send_head, serving_child, wait_unlocked


@pytest.fixture(scope="module")
def iso64(tmp_path_factory):
    return make_iso(str(tmp_path_factory.mktemp("uploads")), "resume", 64)


def cli(inst, *args, url=None, timeout=300):
    env = dict(os.environ, CLARENS_PASSWORD=devpki.credentials(inst.state_dir)["demo"])
    return subprocess.run(["/usr/bin/python3", "-m", "clarens.burner_cli", "--url", url or inst.url, "--user", "demo",
                           *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


@pytest.mark.parametrize("name, length, user, status, code, says", [
    ("over.iso", 30 * 10**9, "demo", 413, 413, "larger than the limit of 25000000000 bytes"),
    ("exists.iso", 50_000_000, "demo", 409, 409, "exists"),
    ("tiny.iso", 1000, "demo", 415, 415, "too small"),
    (".hidden.iso", 50_000_000, "demo", 400, FAULTS["hidden_file"], "hidden file"),
    ("noext.img", 50_000_000, "demo", 400, FAULTS["bad_image_name"], "ending in .iso"),
    ("anon.iso", 50_000_000, None, 403, faults.ACCESS_DENIED, "access denied"),
], ids=["too-large", "exists", "too-small", "hidden", "bad-name", "anonymous"])
@pytest.mark.parametrize("expect", [True, False], ids=["expect-100", "no-expect"])
def test_refusals_come_before_the_body(server, name, length, user, status, code, says, expect, new_hidden):
    """No "100 Continue", and the answer arrives although not a byte of the body was sent."""
    with open(os.path.join(server.images_dir, "exists.iso"), "wb"):
        pass
    first, got, body = answer(send_head(server, name, length, expect, user))
    assert not first.startswith("HTTP/1.1 100") and got == status, (first, body)
    # the code is the HTTP status, or the fault code for faults (access denied, the burner's refusals)
    assert says in body["error"]["message"].lower() and body["error"]["code"] == code
    os.unlink(os.path.join(server.images_dir, "exists.iso"))
    assert new_hidden() == []


def test_an_acceptable_upload_gets_100_continue(server, iso64):
    sock = send_head(server, "continued.iso", os.path.getsize(iso64))
    assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n")
    with open(iso64, "rb") as f:
        sock.sendall(f.read())
    first, status, body = answer(sock)
    assert status == 201 and body["image"]["sha256"] == sha256_file(iso64)


@pytest.fixture(scope="module")
def full_server():
    """An instance whose images filesystem has no room to spare: the reserve is the whole disk."""
    fs = os.statvfs("/tmp")
    inst = start_instance("clarens-full-", options={
        "clarens.module:burner.upload_reserve_mb": str(fs.f_blocks * fs.f_frsize // 10**6)})
    yield inst
    inst.stop()


def test_no_space_is_507_before_the_body(full_server):
    first, status, body = answer(send_head(full_server, "big.iso", 5 * 10**9))
    assert not first.startswith("HTTP/1.1 100") and status == 507
    assert "not enough space for big.iso: 5000000000 more bytes are needed" in body["error"]["message"]
    first, status, body = answer(send_head(full_server, "big.iso", 0, extra={"Content-Range": "bytes */5000000000"}))
    assert status == 507 and partials(full_server) == []


def test_resuming_with_content_range(server, iso64, new_hidden):
    with open(iso64, "rb") as f:
        data = f.read()
    total = len(data)
    assert head(server, "ranged.iso") == (404, {})
    status, body = put_range(server, "ranged.iso", b"", "bytes */%d" % total)
    assert status == 200 and body["upload"]["received"] == 0
    status, body = put_range(server, "ranged.iso", data[:10**7], "bytes 0-%d/%d" % (10**7 - 1, total))
    assert status == 200 and body["upload"] == {"name": "ranged.iso", "size": total, "received": 10**7,
                                                "expires": body["upload"]["expires"]}
    assert body["upload"]["expires"] > time.time() + 47 * 3600                # partial_upload_hours = 48
    assert head(server, "ranged.iso") == (200, {"Upload-Offset": str(10**7), "Upload-Length": str(total),
                                                "Upload-Complete": "?0"})
    assert head(server, "ranged.iso", user="admin") == (404, {})              # not the admin's upload
    status, body = put_range(server, "ranged.iso", data[5:10], "bytes 5-9/%d" % total)
    assert status == 409 and "send from byte 10000000" in body["error"]["message"]
    status, body = put_range(server, "ranged.iso", data[10**7:], "bytes %d-%d/%d" % (10**7, total - 1, total))
    assert status == 201 and body["image"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert head(server, "ranged.iso", user="admin")[1]["Upload-Complete"] == "?1"
    assert new_hidden() == []


def test_cli_resumes_a_dropped_connection_by_itself(server, iso64, new_hidden):
    proxy = CuttingProxy(server.port)
    try:
        proxy.cut_after(20 * 10**6)
        out = cli(server, "upload", iso64, url="http://127.0.0.1:%d/clarens/" % proxy.port)
        assert out.returncode == 0, out.stdout + out.stderr
        assert json.loads(out.stdout)["sha256"] == sha256_file(iso64)
        assert proxy.cuts == 1
        assert proxy.sent < os.path.getsize(iso64) + 10**6      # resumed, not started again
    finally:
        proxy.close()
    assert new_hidden() == []


def test_cli_continues_where_a_killed_run_stopped(server, iso64, tmp_path):
    copy = tmp_path / "rerun.iso"
    copy.write_bytes(open(iso64, "rb").read())
    slow = CuttingProxy(server.port, rate=10 * 10**6)
    env = dict(os.environ, CLARENS_PASSWORD=devpki.credentials(server.state_dir)["demo"])
    run = subprocess.Popen(["/usr/bin/python3", "-m", "clarens.burner_cli", "--url", "http://127.0.0.1:%d/clarens/"
                            % slow.port, "--user", "demo", "upload", str(copy)], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while int(head(server, "rerun.iso")[1].get("Upload-Offset", 0)) < 10**7:
            assert time.monotonic() < deadline and run.poll() is None, "the upload did not get going"
            time.sleep(0.05)
        run.kill()
        run.wait()
    finally:
        slow.close()
    wait_unlocked(server)                  # the child sees the connection close and keeps what it got
    held = int(head(server, "rerun.iso")[1]["Upload-Offset"])
    assert 10**7 <= held < os.path.getsize(copy)
    counting = CuttingProxy(server.port)
    try:
        out = cli(server, "upload", str(copy), url="http://127.0.0.1:%d/clarens/" % counting.port)
        assert out.returncode == 0, out.stdout + out.stderr
        assert json.loads(out.stdout)["sha256"] == sha256_file(copy)
        assert counting.sent < os.path.getsize(copy) - held + 10**6     # only the rest was sent
    finally:
        counting.close()


def test_a_killed_child_leaves_a_resumable_partial(server, iso64, new_hidden):
    with open(iso64, "rb") as f:
        data = f.read()
    sock = send_head(server, "orphan.iso", len(data), expect=False)
    sock.sendall(data[:20 * 10**6])                  # then the client stalls
    # The child writes whole chunks of 1 MiB: all but the last partial one reach the disk.
    written = (20 * 10**6 // CHUNK) * CHUNK
    deadline = time.monotonic() + 20
    while not new_hidden() or os.path.getsize(os.path.join(server.images_dir, new_hidden()[0])) < written:
        assert time.monotonic() < deadline, "the upload never reached the disk"
        time.sleep(0.05)
    [partial] = new_hidden()
    child = serving_child(server, partial)
    assert child is not None
    os.kill(child, signal.SIGKILL)                   # mid-upload
    sock.close()
    status, headers = head(server, "orphan.iso")
    assert status == 200 and headers["Upload-Offset"] == str(written) and headers["Upload-Complete"] == "?0"
    status, body = put_range(server, "orphan.iso", data[written:], "bytes %d-%d/%d" % (
        written, len(data) - 1, len(data)))
    assert status == 201 and body["image"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert new_hidden() == []


def test_partials_nobody_resumes_expire_at_the_next_start(iso64):
    inst = start_instance("clarens-expiry-")
    try:
        with open(iso64, "rb") as f:
            data = f.read(5 * 10**6)
        made = {}
        for name in ("stale.iso", "fresh.iso"):
            before = set(partials(inst))
            status, body = put_range(inst, name, data, "bytes 0-%d/%d" % (len(data) - 1, 64 * 10**6))
            assert status == 200, body
            [made[name]] = set(partials(inst)) - before
        stale = os.path.join(inst.images_dir, made["stale.iso"])
        os.utime(stale, (time.time() - 49 * 3600,) * 2)      # partial_upload_hours = 48
        inst.graceful()                                      # a new server start: one child sweeps
        deadline = time.monotonic() + 20
        while os.path.exists(stale) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not os.path.exists(stale)
        assert head(inst, "fresh.iso")[0] == 200 and head(inst, "stale.iso")[0] == 404
        with open(inst.error_log) as f:
            assert "removed stale partial upload %s" % stale in f.read()
    finally:
        inst.stop()


def test_a_300_mb_image_end_to_end(server, tmp_path):
    """Upload, burn and verify an image of a real CD's order of size, through the command line."""
    iso = make_iso(str(tmp_path), "big", 300)
    out = cli(server, "burn", iso)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr
    assert "verified: the disc matches the image" in out.stdout
    assert "image SHA-256: %s" % sha256_file(iso) in out.stdout
    assert "MB/s" in out.stdout                       # the rate is shown while it uploads
