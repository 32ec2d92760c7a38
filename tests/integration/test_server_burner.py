# SPDX-License-Identifier: Apache-2.0
"""The burner service through the real Apache, with the real helper, xorriso and a stdio: drive."""

import hashlib
import json
import os
import pwd
import re
import signal
import subprocess
import time
import urllib.request
import xmlrpc.client

import pytest

from clarens import faults, procfs
from clarens.burnerd.errors import FAULTS
from clarens.dev import devpki
from tests.burning import wait_helper, wait_job
from tests.helpers import ROOT, basic_header, basic_proxy, cert_proxy, make_iso, put, start_instance, upload


@pytest.fixture(scope="module")
def isos(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("isos"))
    return {"small": make_iso(d, "small", 1), "medium": make_iso(d, "medium", 4)}


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
    ("x%EF%BF%BE.iso", 40000, None, 400),       # U+FFFE, a noncharacter
    ("x%E2%80%AEosi.exe.iso", 40000, None, 400),  # U+202E, a bidi override
    ("x%C2%85.iso", 40000, None, 400),          # U+0085, a C1 control
], ids=["not-iso", "tiny", "hidden", "no-extension", "encoded-slash", "too-large", "noncharacter", "bidi",
        "c1-control"])
def test_bad_uploads_are_refused_and_leave_nothing(server, proxy, name, size, length, status, new_hidden):
    got, body = put(server, name, b"x" * size, length=length)
    assert got == status, body
    assert new_hidden() == [] and name not in os.listdir(server.images_dir)


def test_upload_rules_identity_and_cross_site(server, isos, anon, new_hidden):
    with open(isos["small"], "rb") as f:
        data = f.read()
    assert put(server, "anon.iso", data, user=None)[0] == 403
    status, body = put(server, "forged.iso", data, headers={"Origin": "http://evil.example"})
    assert status == 403 and "another origin" in body["error"]["message"]
    assert put(server, "same.iso", data, headers={"Origin": "http://127.0.0.1:%d" % server.port})[0] == 201
    assert put(server, "same.iso", data)[0] == 409                     # never overwritten
    assert new_hidden() == []


def test_html_in_names_is_just_a_name(server, proxy, isos):
    name = "<img src=x onerror=alert(1)> & 'quoted'.iso"
    import urllib.parse
    record = upload(server, isos["small"], urllib.parse.quote(name))
    assert record["name"] == name
    assert name in [i["name"] for i in proxy.burner.images()]


def test_sanitising_through_the_service(server, proxy, isos):
    images = server.images_dir
    apache = pwd.getpwnam("www-data")

    def as_upload(name):         # owned by the Apache user, as uploads are
        os.chown(os.path.join(images, name), apache.pw_uid, -1)
    os.symlink("/etc/passwd", os.path.join(images, "escape.iso"))
    with open(os.path.join(images, "plain.iso"), "wb") as f:
        f.write(b"not an iso" * 5000)
    as_upload("plain.iso")
    os.mkfifo(os.path.join(images, "fifo.iso"))
    with open(os.path.join(images, "big.iso"), "wb") as f:    # sparse: 5 GB with the ISO signature
        f.seek(32769)
        f.write(b"CD001")
        f.truncate(5 * 1000 * 1000 * 1000)
    as_upload("big.iso")
    # A hard link to a file the Apache user cannot read (the drive's pseudo-disc), and a
    # file some other user put there.
    upload(server, isos["small"], "disc.iso")
    job, _ = wait_job(proxy, proxy.burner.burn("disc.iso", "sim0"))
    assert job["state"] == "done"
    os.link(os.path.join(server.burner_dir, "sim0.disc"), os.path.join(images, "linked.iso"))
    with open(os.path.join(images, "foreign.iso"), "wb") as f, open(isos["small"], "rb") as iso:
        f.write(iso.read())
    cases = [("x/../../db/acl.tdb", "sim0", {}, "parent_reference"), (".upload.part", "sim0", {}, "hidden_file"),
             ("notes.txt", "sim0", {}, "bad_image_name"), ("x" * 197 + ".iso", "sim0", {}, "bad_image_name"),
             ("/etc/passwd", "sim0", {}, "absolute_path"), ("escape.iso", "sim0", {}, "symlink"),
             ("plain.iso", "sim0", {}, "not_iso"), ("fifo.iso", "sim0", {}, "not_regular"),
             ("big.iso", "sim0", {}, "too_large"), ("missing.iso", "sim0", {}, "image_not_found"),
             ("linked.iso", "sim0", {}, "hard_linked"), ("foreign.iso", "sim0", {}, "wrong_owner"),
             ("plain.iso", "/dev/sr0", {}, "unknown_drive"), ("plain.iso", "sim0", {"speed": 999}, "bad_speed"),
             ("plain.iso", "sim0", {"speed": 0}, "bad_speed"),
             ("plain.iso", "sim0", {"speed": "fast"}, "bad_speed"), ("plain.iso", "sim0", {"fast": True}, "bad_option"),
             ("plain.iso", "sim0", {"verify": "yes"}, "bad_option"), ("plain.iso", "nosuch:sim0", {}, "unknown_drive")]
    try:
        for image, drive, options, code in cases:
            fault = fault_of(lambda image=image, drive=drive, options=options: proxy.burner.burn(image, drive, options))
            assert fault.faultCode == FAULTS[code], (image, fault)
        assert "escape.iso" not in [i["name"] for i in proxy.burner.images()]   # symlinks are not images
    finally:
        for name in ("escape.iso", "plain.iso", "fifo.iso", "big.iso", "linked.iso", "foreign.iso", "disc.iso"):
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
    # the same fault as for a job that does not exist; the message as it always was
    assert fault.faultCode == FAULTS["job_not_found"] and fault_of(lambda: alice.burner.status(10**9)).faultCode == \
        FAULTS["job_not_found"] and fault.faultString == "job_not_found: there is no job %d of yours" % job_id
    assert fault_of(lambda: alice.burner.cancel(job_id)).faultCode == FAULTS["job_not_found"]
    assert fault_of(lambda: alice.burner.delete_image("slow.iso")).faultCode == FAULTS["not_yours"]
    assert fault_of(lambda: alice.burner.delete_image("nosuch.iso")).faultCode == FAULTS["image_not_found"]
    assert fault_of(lambda: alice.burner.delete_image("../slow.iso")).faultCode == FAULTS["parent_reference"]
    assert fault_of(lambda: alice.burner.discard_upload("slow.iso")).faultCode == FAULTS["upload_not_found"]
    assert fault_of(lambda: alice.burner.discard_upload("slow.iso", "demo")).faultCode == FAULTS["not_yours"]
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
    assert fault_of(lambda: proxy.burner.eject("sim0")).faultCode == FAULTS["drive_busy"]
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


def test_helper_killed_mid_burn_is_restarted(server, proxy, isos, anon):
    upload(server, isos["medium"], "killed.iso")
    running = proxy.burner.burn("killed.iso", "sim0", {"speed": 1})
    queued = proxy.burner.burn("killed.iso", "sim0")
    wait_job(proxy, running, until=lambda job: job["state"] == "burning")
    old = wait_helper(server)
    os.kill(old, signal.SIGKILL)
    assert anon.echo.echo("unaffected") == "unaffected"       # the rest of the server carries on
    new = wait_helper(server, other_than=old)                 # the supervisor started another
    assert proxy.burner.status(running)["state"] == "interrupted"
    job, _ = wait_job(proxy, queued)
    assert job["state"] == "done" and job["verification"]["match"] is True
    with open(server.burnerd_log) as f:
        assert "helper %d was killed by signal 9; restarting it" % old in f.read()
    assert new != old


def test_a_hung_helper_fails_calls_fast(server, proxy, anon):
    """A helper that stops answering (SIGSTOP) costs each call about 2 s, then -32002."""
    pid = wait_helper(server)
    os.kill(pid, signal.SIGSTOP)
    try:
        for call in (proxy.burner.drives, proxy.burner.jobs, lambda: proxy.burner.status(1)):
            started = time.monotonic()
            fault = fault_of(call)
            assert fault.faultCode == faults.SERVICE_UNAVAILABLE and "did not answer in time" in fault.faultString
            assert time.monotonic() - started < 10          # not Apache's 60 s, nor the old 30 s
            assert server.state_dir not in fault.faultString    # where its socket is: administrators only
        assert server.helper_socket in fault_of(cert_proxy(server, "demo-admin").burner.drives).faultString
        assert anon.echo.echo("unaffected") == "unaffected"
    finally:
        os.kill(pid, signal.SIGCONT)
    assert [d["name"] for d in proxy.burner.drives()] == ["sim0"]


def test_stopping_the_instance_leaves_no_helper_or_xorriso(isos):
    inst = start_instance("clarens-stop-")
    try:
        upload(inst, isos["medium"], "stop.iso")
        user = basic_proxy(inst, "demo")
        job_id = user.burner.burn("stop.iso", "sim0", {"speed": 1})
        wait_job(user, job_id, until=lambda job: job["state"] == "burning")
        helper, supervisor = inst.helper_pid(), inst.supervisor.pid
    finally:
        inst.stop()
    left = [pid for pid in procfs.pids() if inst.state_dir.encode() in b" ".join(procfs.cmdline(pid))
            and procfs.alive(pid)]
    assert left == [] and not procfs.alive(helper) and not procfs.alive(supervisor)


def test_command_line_client_burns_and_verifies(server, isos):
    env = dict(os.environ, CLARENS_PASSWORD=devpki.credentials(server.state_dir)["demo"])
    out = subprocess.run(["/usr/bin/python3", "-m", "clarens.burner_cli", "--url", server.url, "--user", "demo",
                          "burn", isos["small"]], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "verified: the disc matches the image" in out.stdout and "upload [" in out.stdout
    again = subprocess.run(["/usr/bin/python3", "-m", "clarens.burner_cli", "--url", server.url, "--user", "demo",
                            "burn", isos["small"]], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert again.returncode == 0 and "upload [" not in again.stdout   # the server already had it


def test_admin_status_command(server):
    out = subprocess.run(["/usr/bin/python3", "-m", "clarens.burnerd", "status", "--config", server.burnerd_conf],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "sim0" in out.stdout


def test_listing_never_reads_images_and_odd_names_never_break_it(server, proxy):
    """A 50 GB (sparse) image put in by hand: listed at once with hashing progress, hashed in the
    background, the hashing stopped when it goes; names that are not printable UTF-8 left out, with
    one log line, in both protocols, batches and multicalls."""
    images = server.images_dir
    big, hand = os.path.join(images, "big-sparse.iso"), os.path.join(images, "a-by-hand.iso")
    odd = [os.path.join(images.encode(), b"bad\xff.iso"), os.path.join(images, "x\ufffe.iso").encode(),
           os.path.join(images, "notes.txt").encode()]                # not an image's name: not offered
    with open(big, "wb") as f:
        f.truncate(50 * 10**9)
    data = os.urandom(3 * 10**6)
    with open(hand, "wb") as f:
        f.write(data)
    for path in odd:
        with open(path, "wb") as f:
            f.write(b"odd")
    with open(server.error_log, "rb") as f:
        mark = f.seek(0, 2)
    try:
        started = time.monotonic()
        listed = {i["name"]: i for i in proxy.burner.images()}
        assert time.monotonic() - started < 1.0               # what the issue asks: never the file's contents
        assert listed["big-sparse.iso"]["sha256"] == "" and listed["big-sparse.iso"]["size"] == 50 * 10**9
        assert set(listed["big-sparse.iso"]["hashing"]) == {"percent", "bytes"}
        assert not {n for n in listed if "bad" in n or "\ufffe" in n or "notes" in n}
        batch = [{"jsonrpc": "2.0", "method": "burner.images", "id": 1}, {"jsonrpc": "2.0", "method": "echo.echo",
                                                                            "params": [1], "id": 2}]
        status, body = json_call(server, batch)
        assert status == 200 and [len(r["result"]) > 0 if r["id"] == 1 else r["result"] for r in body] == [True, 1]
        assert [type(r) for r in proxy.system.multicall([{"methodName": "burner.images", "params": []}])] == [list]
        deadline = time.monotonic() + 60                      # the small one is hashed first (name order)
        while (record := {i["name"]: i for i in proxy.burner.images()}["a-by-hand.iso"])["sha256"] == "":
            assert time.monotonic() < deadline, record
            time.sleep(0.2)
        assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["hashing"] is None
        while {i["name"]: i for i in proxy.burner.images()}["big-sparse.iso"]["hashing"]["bytes"] == 0:
            assert time.monotonic() < deadline, "no progress on the big image"
            time.sleep(0.2)
    finally:
        for path in [big, hand] + odd:
            os.unlink(path)
    deadline = time.monotonic() + 10                         # a file gone: its hashing stops
    while [p for p in procfs.pids() if b"clarens.web.digests" in b" ".join(procfs.cmdline(p))
           and server.db_dir.encode() in b" ".join(procfs.cmdline(p))]:
        assert time.monotonic() < deadline, "the background hashing went on after the image was deleted"
        time.sleep(0.2)
    with open(server.error_log, "rb") as f:
        f.seek(mark)
        log = f.read().decode("utf-8", "replace")
    # one line per name and child, however many listings (Apache's log doubles the backslash)
    for name in (r"'bad\\+udcff\.iso'", r"'x\\+ufffe\.iso'", r"'notes\.txt'"):
        pids = re.findall(r"\[pid (\d+)[^\n]*left out of the listing: " + name, log)
        assert pids and len(pids) == len(set(pids)), (name, pids)


def json_call(inst, payload) -> tuple[int, object]:
    """A JSON-RPC request as the demo user: (HTTP status, decoded answer)."""
    request = urllib.request.Request(inst.url, json.dumps(payload).encode(), {
        "Content-Type": "application/json", **basic_header(inst, "demo")})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read())
