"""The burner service through the real Apache, with the real helper, xorriso and a stdio: drive."""

import hashlib
import http.client
import os
import signal
import socket
import subprocess
import time
import xmlrpc.client

import pytest

from clarens import devpki, faults
from tests.helpers import ROOT, basic_header, cert_proxy

ACTIVE = ("queued", "burning", "verifying")


def make_iso(directory, name, megabytes):
    src = os.path.join(directory, name + ".d")
    os.makedirs(src)
    with open(os.path.join(src, "data.bin"), "wb") as f:
        f.write(os.urandom(megabytes * 1000 * 1000))
    path = os.path.join(directory, name + ".iso")
    subprocess.run(["xorriso", "-as", "mkisofs", "-R", "-V", name.upper(), "-o", path, src],
                   check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def isos(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("isos"))
    return {"small": make_iso(d, "small", 1), "medium": make_iso(d, "medium", 4)}


def put(server, name, data, headers=None, user="demo", length=None):
    """PUT an upload; returns (status, decoded JSON)."""
    import json
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    hdrs = dict(basic_header(server, user) if user else {}, **(headers or {}))
    hdrs["Content-Length"] = str(len(data) if length is None else length)
    conn.putrequest("PUT", "/clarens/images/" + name)
    for k, v in hdrs.items():
        conn.putheader(k, v)
    conn.endheaders()
    try:
        conn.send(data)
        resp = conn.getresponse()
        body = resp.read()
        try:
            return resp.status, json.loads(body or b"{}")
        except ValueError:   # Apache's own error page
            return resp.status, {"html": body.decode(errors="replace")}
    finally:
        conn.close()


def upload(server, path, name=None, user="demo"):
    with open(path, "rb") as f:
        status, body = put(server, name or os.path.basename(path), f.read(), user=user)
    assert status == 201, body
    return body["image"]


def leftovers(server):
    return [n for n in os.listdir(server.images_dir) if n.startswith(".")]


def wait_job(proxy, job_id, until=lambda job: job["state"] not in ACTIVE, timeout=120):
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = proxy.burner.status(job_id)
        seen.append((job["state"], job["progress"]["percent"]))
        if until(job):
            return job, seen
        time.sleep(0.2)
    pytest.fail("job %d still %s" % (job_id, job["state"]))


def fault_of(call):
    with pytest.raises(xmlrpc.client.Fault) as info:
        call()
    return info.value


def test_upload_burn_watch_verify_eject(server, proxy, isos):
    record = upload(server, isos["medium"], "first.iso")   # ~3 s at 1x: progress to watch
    with open(isos["medium"], "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert record["sha256"] == digest and record["uploaded_by"] == "demo"
    listed = {i["name"]: i for i in proxy.burner.images()}
    assert listed["first.iso"]["size"] == os.path.getsize(isos["medium"]) and listed["first.iso"]["sha256"] == digest
    assert [d["name"] for d in proxy.burner.drives()] == ["sim0"]
    job_id = proxy.burner.burn("first.iso", "sim0", {"speed": 1})
    job, seen = wait_job(proxy, job_id)
    assert job["state"] == "done", job
    percents = {p for s, p in seen if s == "burning"}
    assert len(percents) >= 2, seen                      # the progress moved while burning
    v = job["verification"]
    assert v["match"] is True and v["image_sha256"] == v["disc_sha256"] == digest
    assert job["identity"] == "demo" and job_id in [j["id"] for j in proxy.burner.jobs()]
    assert proxy.burner.eject("sim0") is True
    assert proxy.burner.drives()[0]["medium"]["present"] is True


@pytest.mark.parametrize("name, size, length, status", [
    ("notiso.iso", 40000, None, 415),
    ("tiny.iso", 100, None, 415),
    (".hidden.iso", 40000, None, 400),
    ("noext.img", 40000, None, 400),
    ("sub%2Fdir.iso", 40000, None, 404),        # Apache refuses encoded slashes
    ("huge.iso", 0, 30 * 1000 * 1000 * 1000, 413),
], ids=["not-iso", "tiny", "hidden", "no-extension", "encoded-slash", "too-large"])
def test_bad_uploads_are_refused_and_leave_nothing(server, proxy, name, size, length, status):
    got, body = put(server, name, b"x" * size, length=length)
    assert got == status, body
    assert leftovers(server) == [] and name not in os.listdir(server.images_dir)


def test_partial_upload_leaves_nothing(server, isos):
    with open(isos["small"], "rb") as f:
        data = f.read()
    conn = socket.create_connection(("127.0.0.1", server.port))
    head = ("PUT /clarens/images/partial.iso HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n\r\n" % (
        len(data), "\r\n".join("%s: %s" % kv for kv in basic_header(server, "demo").items())))
    conn.sendall(head.encode() + data[:len(data) // 2])
    time.sleep(0.5)
    conn.close()                                     # the client goes away half-way
    deadline = time.monotonic() + 10
    while leftovers(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftovers(server) == [] and "partial.iso" not in os.listdir(server.images_dir)


def test_upload_rules_identity_and_cross_site(server, isos, anon):
    with open(isos["small"], "rb") as f:
        data = f.read()
    assert put(server, "anon.iso", data, user=None)[0] == 403
    status, body = put(server, "forged.iso", data, headers={"Origin": "http://evil.example"})
    assert status == 403 and "another origin" in body["error"]["message"]
    assert put(server, "same.iso", data, headers={"Origin": "http://127.0.0.1:%d" % server.port})[0] == 201
    assert put(server, "same.iso", data)[0] == 409                     # never overwritten
    assert leftovers(server) == []


def test_html_in_names_is_just_a_name(server, proxy, isos):
    name = "<img src=x onerror=alert(1)> & 'quoted'.iso"
    import urllib.parse
    record = upload(server, isos["small"], urllib.parse.quote(name))
    assert record["name"] == name
    assert name in [i["name"] for i in proxy.burner.images()]


def test_sanitising_through_the_service(server, proxy, isos):
    images = server.images_dir
    os.symlink("/etc/passwd", os.path.join(images, "escape.iso"))
    with open(os.path.join(images, "plain.iso"), "wb") as f:
        f.write(b"not an iso" * 5000)
    os.mkfifo(os.path.join(images, "fifo.iso"))
    with open(os.path.join(images, "big.iso"), "wb") as f:    # sparse: 5 GB with the ISO signature
        f.seek(32769)
        f.write(b"CD001")
        f.truncate(5 * 1000 * 1000 * 1000)
    cases = [("x/../../db/acl.tdb", "sim0", {}, "parent_reference"), (".upload.part", "sim0", {}, "bad_image_name"), ("/etc/passwd", "sim0", {}, "absolute_path"),
             ("escape.iso", "sim0", {}, "outside_images_dir"), ("plain.iso", "sim0", {}, "not_iso"),
             ("fifo.iso", "sim0", {}, "not_regular"), ("big.iso", "sim0", {}, "too_large"),
             ("missing.iso", "sim0", {}, "image_not_found"), ("plain.iso", "/dev/sr0", {}, "unknown_drive"),
             ("plain.iso", "sim0", {"speed": 999}, "bad_speed"), ("plain.iso", "sim0", {"speed": 0}, "bad_speed")]
    try:
        for image, drive, options, code in cases:
            fault = fault_of(lambda: proxy.burner.burn(image, drive, options))
            assert fault.faultCode == faults.INVALID_PARAMS and fault.faultString.startswith(code), (image, fault)
        assert fault_of(lambda: proxy.burner.burn("plain.iso", "sim0", {"fast": True})).faultCode == \
            faults.INVALID_PARAMS
        assert fault_of(lambda: proxy.burner.burn("plain.iso", "sim0", {"speed": "fast"})).faultCode == \
            faults.INVALID_PARAMS
        assert "escape.iso" not in [i["name"] for i in proxy.burner.images()]   # symlinks are not images
    finally:
        for name in ("escape.iso", "plain.iso", "fifo.iso", "big.iso"):
            os.unlink(os.path.join(images, name))
    with open(server.burnerd_log) as f:
        assert "uid=33" in f.read()                  # refusals logged with the caller's uid (www-data)


def test_users_see_and_cancel_only_their_own_jobs(server, proxy, admin, isos):
    upload(server, isos["medium"], "slow.iso")
    job_id = proxy.burner.burn("slow.iso", "sim0", {"speed": 1})
    alice = cert_proxy(server, "demo-user")
    assert job_id not in [j["id"] for j in alice.burner.jobs()]
    assert job_id in [j["id"] for j in admin.burner.jobs()]
    fault = fault_of(lambda: alice.burner.status(job_id))
    assert fault.faultCode == faults.INVALID_PARAMS and "no job" in fault.faultString
    assert fault_of(lambda: alice.burner.cancel(job_id)).faultCode == faults.INVALID_PARAMS
    assert fault_of(lambda: alice.burner.delete_image("slow.iso")).faultCode == faults.INVALID_PARAMS
    wait_job(proxy, job_id, until=lambda job: job["state"] == "burning")
    cancelled = admin.burner.cancel(job_id)                    # an admin may cancel anyone's job
    assert cancelled["state"] == "cancelled"
    assert proxy.burner.delete_image("slow.iso") is True
    assert "slow.iso" not in os.listdir(server.images_dir)


def test_jobs_on_one_drive_run_in_order_and_cancel_stops_xorriso(server, proxy, isos):
    upload(server, isos["medium"], "queue.iso")
    first = proxy.burner.burn("queue.iso", "sim0", {"speed": 1})
    second = proxy.burner.burn("queue.iso", "sim0", {"speed": 1, "verify": False})
    job, _ = wait_job(proxy, first, until=lambda job: job["state"] == "burning")
    assert proxy.burner.status(second)["state"] == "queued"
    assert fault_of(lambda: proxy.burner.eject("sim0")).faultCode == faults.APPLICATION_ERROR   # drive busy
    assert proxy.burner.cancel(first)["state"] == "cancelled"
    assert subprocess.run(["pgrep", "-f", "xorriso.*%s" % server.burner_dir], capture_output=True).stdout.count(
        b"\n") <= 1                                          # only the second job's burn, if it started already
    job, _ = wait_job(proxy, second)
    assert job["state"] == "done" and not job["verification"]   # verify was off
    assert job["started"] >= proxy.burner.status(first)["finished"]


def test_a_drive_that_cannot_be_written_fails_the_job_with_a_reason(server, proxy, isos):
    upload(server, isos["small"], "unwritable.iso")
    disc = os.path.join(server.burner_dir, "sim0.disc")
    if os.path.exists(disc):
        os.unlink(disc)
    os.mkdir(disc)                                   # the pseudo-disc is now a directory
    try:
        job, _ = wait_job(proxy, proxy.burner.burn("unwritable.iso", "sim0"))
        assert job["state"] == "failed" and job["error"]
    finally:
        os.rmdir(disc)


def test_the_apache_user_cannot_write_the_drive(server):
    disc = os.path.join(server.burner_dir, "sim0.disc")
    out = subprocess.run(["runuser", "-u", "www-data", "--", "/bin/sh", "-c", "echo x >> '%s'" % disc],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "Permission denied" in out.stderr


def test_helper_killed_mid_burn_then_restarted(server, proxy, isos, anon):
    upload(server, isos["medium"], "killed.iso")
    running = proxy.burner.burn("killed.iso", "sim0", {"speed": 1})
    queued = proxy.burner.burn("killed.iso", "sim0")
    wait_job(proxy, running, until=lambda job: job["state"] == "burning")
    os.kill(server.helper.pid, signal.SIGKILL)
    server.helper.wait()
    fault = fault_of(lambda: proxy.burner.drives())
    assert fault.faultCode == faults.SERVICE_UNAVAILABLE and "burner unavailable" in fault.faultString
    assert anon.echo.echo("unaffected") == "unaffected"       # the rest of the server carries on
    server.helper = None
    server._start_helper()
    assert proxy.burner.status(running)["state"] == "interrupted"
    job, _ = wait_job(proxy, queued)
    assert job["state"] == "done" and job["verification"]["match"] is True


def test_command_line_client_burns_and_verifies(server, isos):
    env = dict(os.environ, CLARENS_PASSWORD=devpki.credentials(server.state_dir)["demo"])
    out = subprocess.run(["/usr/bin/python3", "-m", "clarens.client", "--url", server.url, "--user", "demo",
                          "burn", isos["small"]], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "verified: the disc matches the image" in out.stdout and "upload [" in out.stdout
    again = subprocess.run(["/usr/bin/python3", "-m", "clarens.client", "--url", server.url, "--user", "demo",
                            "burn", isos["small"]], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert again.returncode == 0 and "upload [" not in again.stdout   # the server already had it


def test_admin_status_command(server):
    out = subprocess.run(["/usr/bin/python3", "-m", "clarens.burnerd", "status", "--config", server.burnerd_conf],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "sim0" in out.stdout
