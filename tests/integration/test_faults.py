# SPDX-License-Identifier: Apache-2.0
"""Fault injection through the real Apache, helper and xorriso: killed children, killed or hung helper, full disk."""

import glob
import grp
import hashlib
import http.client
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
import xmlrpc.client

import pytest

from clarens import faults, procfs
from clarens.dev import devpki
from clarens.web.uploads import CHUNK
from tests.burning import wait_helper, wait_job
from tests.helpers import (
    ROOT,
    basic_proxy,
    basic_url,
    concurrently,
    make_acl_dir,
    make_iso,
    on_many_children,
    shipped_modules,
    start_instance,
    upload,
)
from tests.uploading import head, partials, put_range, send_head, serving_child, wait_unlocked

CONNECTION_LOST = (OSError, http.client.HTTPException, xmlrpc.client.ProtocolError)


@pytest.fixture(scope="module")
def isos(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("faults"))
    return {"burn": make_iso(d, "burn", 4), "upload": make_iso(d, "upload", 24)}


@pytest.fixture
def instance():
    """Start a private instance of the test's own (``instance(prefix, **options)``); stopped and removed after."""
    started = []

    def start(prefix, **options):   # only the shipped modules: the test-only ones log tracebacks by design
        options.setdefault("clarens.server.modules_path", shipped_modules())
        started.append(start_instance("clarens-fault-%s-" % prefix, options=options))
        return started[-1]
    yield start
    for inst in started:
        inst.stop()
        subprocess.run(["umount", "-q", inst.images_dir], capture_output=True)   # the tmpfs, if any
        shutil.rmtree(inst.state_dir, ignore_errors=True)
        shutil.rmtree(inst.options["clarens.server.acl_dir"], ignore_errors=True)


def children(inst):
    """The instance's Apache children (not the parent)."""
    parent = str(inst.process.pid)
    return [pid for pid in inst.processes() if (procfs.stat(pid) or ("", ["", ""]))[1][1] == parent]


def connection_child(inst, sock, timeout=20):
    """The Apache child that accepted our TCP connection ``sock`` (its server side, from /proc/net/tcp)."""
    ends = ["0100007F:%04X" % inst.port, "0100007F:%04X" % sock.getsockname()[1]]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open("/proc/net/tcp") as f:   # an inode of 0: still in the accept queue
            wanted = {"socket:[%s]" % line.split()[9] for line in f.readlines()[1:] if line.split()[1:3] == ends}
        for pid in children(inst):
            try:
                if any(os.readlink("/proc/%d/fd/%s" % (pid, fd)) in wanted for fd in os.listdir("/proc/%d/fd" % pid)):
                    return pid
            except OSError:
                continue
        time.sleep(0.01)
    pytest.fail("no child accepted our connection")


def tdb_files(inst):
    return glob.glob(os.path.join(inst.db_dir, "*.tdb")) + glob.glob(os.path.join(inst.burner_dir, "*.tdb"))


def assert_healthy(inst, broken_pipes=False):
    """Children serve fresh connections, the policy is there, every tdb file checks out, no partial upload
    stays locked or is left over, and no log holds a traceback (but, with ``broken_pipes``, the helper's
    for answers to callers that had given up waiting)."""
    served = on_many_children(lambda: basic_proxy(inst, "admin"), lambda proxy: proxy.system.serverInfo()["pid"], 48)
    assert len(served) == 48 and len(set(served)) > 1
    assert "*" in basic_proxy(inst, "admin").acl.show()["entries"]
    files = tdb_files(inst)
    assert any(f.endswith("/acl.tdb") for f in files) and any(f.endswith("/jobs.tdb") for f in files)
    for path in files:
        out = subprocess.run(["tdbtool", path, "check"], capture_output=True, text=True)
        assert "Database integrity is OK" in out.stdout, (path, out.stdout, out.stderr)
    wait_unlocked(inst)
    assert partials(inst) == []
    with open(inst.error_log, errors="replace") as f:
        log = f.read()
    assert "Traceback" not in log, log[log.index("Traceback") - 300:][:3000]
    with open(inst.burnerd_log, errors="replace") as f:
        log = f.read()
    assert log.count("Traceback") == (log.count("\nBrokenPipeError: ") if broken_pipes else 0), log[-3000:]


class NoRetry(xmlrpc.client.Transport):
    """Send each call once: the standard transport sends it again when the connection drops."""

    def request(self, host, handler, request_body, verbose=False):
        return self.single_request(host, handler, request_body, verbose)


def fault_of(call):
    with pytest.raises(xmlrpc.client.Fault) as info:
        call()
    return info.value


def multicall_body(calls, text):
    return xmlrpc.client.dumps(([{"methodName": "echo.echo", "params": [text]}] * calls,), "system.multicall").encode()


def post_head(inst, length):
    sock = socket.create_connection(("127.0.0.1", inst.port), timeout=30)
    sock.sendall(b"POST /clarens/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n"
                 % length)
    return sock


def received(sock):
    """Whatever the server sent until the connection ended (closed or reset)."""
    data = b""
    try:
        while chunk := sock.recv(1 << 20):
            data += chunk
    except ConnectionResetError:
        pass
    sock.close()
    return data


def test_children_killed_mid_request_and_mid_upload(instance, isos):
    inst = instance("kill")
    # 1. Mid-request, while the child reads a body that arrives slowly.
    body = multicall_body(20000, "x" * 40)
    sock = post_head(inst, len(body))
    sock.sendall(body[:len(body) // 2])
    os.kill(connection_child(inst, sock), signal.SIGKILL)
    assert not received(sock).startswith(b"HTTP/1.1 200")
    # 2. Mid-request, while the child works through a large multicall (its body has all arrived).
    body = multicall_body(20000, "y" * 200)
    sock = post_head(inst, len(body))
    child = connection_child(inst, sock)
    sock.sendall(body)
    os.kill(child, signal.SIGKILL)
    assert b"</methodResponse>" not in received(sock)[-1000:]
    # 3. Mid-upload: the child holding the partial file (and its lock) open.
    with open(isos["upload"], "rb") as f:
        data = f.read()
    sock = send_head(inst, "killed.iso", len(data), expect=False)
    sock.sendall(data[:10 * 10**6])                   # then the client stalls
    written = (10 * 10**6 // CHUNK) * CHUNK
    deadline = time.monotonic() + 30
    while not partials(inst) or os.path.getsize(os.path.join(inst.images_dir, partials(inst)[0])) < written:
        assert time.monotonic() < deadline, "the upload never reached the disk"
        time.sleep(0.05)
    child = serving_child(inst, partials(inst)[0])
    assert child is not None
    os.kill(child, signal.SIGKILL)
    sock.close()
    wait_unlocked(inst)                               # the kernel dropped the dead child's lock
    assert head(inst, "killed.iso") == (200, {"Upload-Offset": str(written), "Upload-Length": str(len(data)),
                                              "Upload-Complete": "?0"})
    status, out = put_range(inst, "killed.iso", data[written:], "bytes %d-%d/%d" % (written, len(data) - 1, len(data)))
    assert status == 201 and out["image"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert_healthy(inst)


def proc_locks(inode):
    """(pid, type, start, end) of the POSIX locks held on the file with ``inode``."""
    out = []
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            if "->" not in fields and fields[1] == "POSIX" and fields[5].rsplit(":", 1)[-1] == str(inode):
                out.append((int(fields[4]), fields[3], fields[6], fields[7]))
    return out


def test_children_killed_inside_acl_transactions(instance, tmp_path):
    """Writers change the policy from several threads while children are killed inside a tdb transaction
    (holding tdb's transaction lock) and while committing one (holding the write lock on every record)."""
    bulk = tmp_path / "bulk.acl"                      # every change rewrites every entry: long transactions
    bulk.write_text("".join("<Acl bulk.m%03d>\n    Allow someone%d\n</Acl>\n" % (i, i) for i in range(300)))
    inst = instance("acl", **{"clarens.server.acl_dir": make_acl_dir(str(bulk))})
    before = basic_proxy(inst, "admin").acl.show()
    inode = os.stat(os.path.join(inst.db_dir, "acl.tdb")).st_ino
    confirmed, uncertain, stop = set(), set(), threading.Event()

    def writer(k):
        proxy, n = xmlrpc.client.ServerProxy(basic_url(inst, "admin"), transport=NoRetry()), 0
        while not stop.is_set():
            n += 1
            change = ("group", "faultgroup%d" % k, "member%d_%d" % (k, n)) if n % 5 == 0 else \
                ("entry", "fault.t%d_%d" % (k, n), "marker%d_%d" % (k, n))
            try:
                if change[0] == "group":
                    proxy.acl.set_group(change[1], [change[2]])
                else:
                    proxy.acl.set_entry(change[1], {"allow": [change[2]]})
                confirmed.add(change)
            except CONNECTION_LOST:                   # its child was killed: applied or not, we cannot know
                uncertain.add(change)
                proxy = xmlrpc.client.ServerProxy(basic_url(inst, "admin"), transport=NoRetry())
    writers = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in writers:
        t.start()
    kills = {"transaction": 0, "commit": 0}
    try:
        deadline = time.monotonic() + 40
        while min(kills.values()) < 4 and time.monotonic() < deadline:
            phase = "commit" if kills["commit"] < kills["transaction"] else "transaction"
            ours = set(children(inst))
            for pid, kind, start, end in proc_locks(inode):
                # tdb: the transaction lock is byte 8; a commit write-locks everything from the hash table on
                if pid in ours and kind == "WRITE" and ((start, end) == ("8", "8") if phase == "transaction"
                                                        else end == "EOF"):
                    os.kill(pid, signal.SIGKILL)
                    kills[phase] += 1
                    time.sleep(0.2)
                    break
            else:
                time.sleep(0.001)
    finally:
        stop.set()
        for t in writers:
            t.join()
    assert min(kills.values()) >= 4 and uncertain, (kills, len(uncertain))
    admin = basic_proxy(inst, "admin")
    policy, audit = admin.acl.show(), admin.acl.audit(1000)
    assert len(audit) < 1000, "the audit log was cut: use fewer changes"
    # Every change is in the policy exactly when its audit record (same transaction) is there.
    audited = {("entry", a["what"]["target"], a["what"]["entry"]["allow"][0]) for a in audit
               if a["what"]["action"] == "set_entry"}
    present = {("entry", t, e["allow"][0]) for t, e in policy["entries"].items() if t.startswith("fault.")}
    assert present == audited and confirmed & audited == {c for c in confirmed if c[0] == "entry"}
    assert present - confirmed <= uncertain
    last = {}
    for a in audit:                                  # oldest first
        if a["what"]["action"] == "set_group":
            last[a["what"]["group"]] = a["what"]["members"]
    assert {g: m for g, m in policy["groups"].items() if g.startswith("faultgroup")} == last
    assert all(("group", g, m[0]) in confirmed | uncertain for g, m in last.items())
    # The rest of the policy is untouched.
    assert {t: e for t, e in policy["entries"].items() if not t.startswith("fault.")} == before["entries"]
    assert {g: m for g, m in policy["groups"].items() if not g.startswith("faultgroup")} == before["groups"]
    # And every child enforces the policy as it now is, at its next request.
    anon = lambda: xmlrpc.client.ServerProxy(inst.url).echo.echo("hi")   # noqa: E731
    assert admin.acl.delete_entry("echo") is True
    assert {f.faultCode for f in concurrently(lambda: fault_of(anon), 48)} == {faults.ACCESS_DENIED}
    assert admin.acl.set_entry("echo", {"allow": ["anonymous", "authenticated"]}) is True
    assert concurrently(anon, 48) == ["hi"] * 48
    assert_healthy(inst)


def xorrisos(inst):
    """(pid, start time) of every live xorriso working on the instance's drive."""
    found = set()
    for pid in procfs.pids():
        argv = procfs.cmdline(pid)
        if argv and argv[0].endswith(b"xorriso") and inst.burner_dir.encode() in b" ".join(argv) \
                and procfs.alive(pid):
            found.add((pid, procfs.start_time(pid)))
    return found


def survivors(processes):
    return {(pid, t) for pid, t in processes if procfs.alive(pid) and procfs.start_time(pid) == t}


def test_helper_killed_mid_burn_twice(instance, isos):
    inst = instance("helper-kill")
    user = basic_proxy(inst, "demo")
    upload(inst, isos["burn"], "disc.iso")           # ~3 s at 1x
    jobs = [user.burner.burn("disc.iso", "sim0", {"speed": 1}) for _ in range(3)]
    helper = wait_helper(inst)
    for victim in jobs[:2]:                          # the second one is burned by the restarted helper
        wait_job(user, victim, until=lambda job: job["state"] == "burning")
        old = xorrisos(inst)
        assert old, "no xorriso burning"
        os.kill(helper, signal.SIGKILL)
        assert user.echo.echo("unaffected") == "unaffected"
        helper = wait_helper(inst, other_than=helper)
        job = user.burner.status(victim)
        assert job["state"] == "interrupted" and job["error_code"] == "interrupted", job
        deadline = time.monotonic() + 15             # pdeathsig, or the new helper, ends them
        while survivors(old) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not survivors(old), "xorriso of a killed helper survives"
    job, _ = wait_job(user, jobs[2])                  # queued all along: run after the restarts
    assert job["state"] == "done" and job["verification"]["match"] is True, job
    states = {j["id"]: j["state"] for j in user.burner.jobs()}
    assert states == {jobs[0]: "interrupted", jobs[1]: "interrupted", jobs[2]: "done"}
    with open(inst.burnerd_log) as f:
        assert f.read().count("was killed by signal 9; restarting it") == 2
    assert not xorrisos(inst)
    assert_healthy(inst)


def test_the_first_burn_after_a_helper_restart_is_accepted(instance, isos):
    inst = instance("helper-restart")
    admin = basic_proxy(inst, "admin")               # one connection, kept alive: one Apache child
    upload(inst, isos["burn"], "disc.iso")
    child = admin.system.serverInfo()["pid"]
    assert [d["name"] for d in admin.burner.drives()] == ["sim0"]   # the child keeps a connection to the helper
    old = wait_helper(inst)
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while inst.helper_pid() in (None, old):          # keep our connection to the child alive meanwhile
        assert time.monotonic() < deadline and admin.echo.echo(1) == 1, "the helper was not restarted"
        time.sleep(0.2)
    wait_helper(inst, other_than=old)
    assert admin.system.serverInfo()["pid"] == child
    # The child's kept-alive connection to the dead helper must not be used for the POST (it once was:
    # EPIPE, -32002 "Broken pipe" from a helper that is up, for the first change in every child).
    job, _ = wait_job(admin, admin.burner.burn("disc.iso", "sim0"))
    assert job["state"] == "done" and job["verification"]["match"] is True, job


def test_helper_stopped_mid_burn(instance, isos):
    inst = instance("helper-stop")
    user = basic_proxy(inst, "demo")                 # one connection, kept alive: one Apache child
    upload(inst, isos["burn"], "disc.iso")
    job_id = user.burner.burn("disc.iso", "sim0", {"speed": 1})
    wait_job(user, job_id, until=lambda job: job["state"] == "burning")
    helper = wait_helper(inst)
    os.kill(helper, signal.SIGSTOP)
    try:
        for call in (user.burner.drives, user.burner.jobs, lambda: user.burner.status(job_id)):
            started = time.monotonic()
            fault = fault_of(call)
            assert fault.faultCode == faults.SERVICE_UNAVAILABLE, fault
            assert time.monotonic() - started < 10
        assert user.echo.echo("unaffected") == "unaffected"
        assert basic_proxy(inst, "demo").burner.images()[0]["name"] == "disc.iso"   # served without the helper
    finally:
        os.kill(helper, signal.SIGCONT)
    # The same child answers again (after its pause for a hung helper), with no stale answer.
    assert [d["name"] for d in when_answering(user.burner.drives)] == ["sim0"]
    job, _ = wait_job(user, job_id)
    assert job["state"] == "done" and job["verification"]["match"] is True, job
    assert inst.helper_pid() == helper
    assert_healthy(inst, broken_pipes=True)


def when_answering(call, timeout=20):
    """``call()``'s result once it no longer fails with "burner unavailable"."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except xmlrpc.client.Fault as fault:
            assert fault.faultCode == faults.SERVICE_UNAVAILABLE and time.monotonic() < deadline, fault
            time.sleep(0.2)


def test_a_burn_refused_as_unavailable_is_not_carried_out_later(instance, isos):
    inst = instance("helper-ghost")
    user = basic_proxy(inst, "demo")
    upload(inst, isos["burn"], "disc.iso")
    helper = wait_helper(inst)
    os.kill(helper, signal.SIGSTOP)
    try:
        fault = fault_of(lambda: user.burner.burn("disc.iso", "sim0", {"speed": 4}))
        assert fault.faultCode == faults.SERVICE_UNAVAILABLE, fault
        refused = time.time()
    finally:
        os.kill(helper, signal.SIGCONT)
    when_answering(user.burner.jobs)                 # after the child's pause: the helper has run for seconds
    # The user was told "burner unavailable" while the request waited in the socket's backlog: the
    # helper must not carry it out once it runs again (it once burned the disc anyway).
    ghosts = user.burner.jobs()
    assert ghosts == [], "refused at %.3f, yet submitted: %s" % (refused, ghosts)


def fill(path):
    """Write zeros to ``path`` until the filesystem is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while os.write(fd, bytes(CHUNK)):
            pass
    except OSError:           # ENOSPC
        pass
    finally:
        os.close(fd)


def send_quietly(sock, data):
    try:
        sock.sendall(data)
    except OSError:       # the server answered and closed first
        pass


def response(sock):
    """Status, headers and body of the final answer on ``sock`` once the server closes, and whether it
    said 100 Continue first."""
    data = received(sock)
    head_, _, body = data.rpartition(b"\r\n\r\n")
    lines = head_.rsplit(b"\r\n\r\n", 1)[-1].decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body, data.startswith(b"HTTP/1.1 100")


def test_disk_filling_up_during_an_upload(instance, isos):
    inst = instance("full", **{"clarens.module:burner.upload_reserve_mb": "0"})
    helper_gid = grp.getgrnam("clarens-burner").gr_gid
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=2750,uid=%d,gid=%d" % (
        pwd.getpwnam("www-data").pw_uid, helper_gid), "tmpfs", inst.images_dir], check=True)
    user = basic_proxy(inst, "demo")
    with open(isos["upload"], "rb") as f:
        data = f.read()
    total = len(data)
    filler = os.path.join(inst.images_dir, ".filler")
    # Known to be too small: refused before the body.
    with open(filler, "wb") as f:
        f.write(b"\0" * 48 * 10**6)
    status, headers, body, continued = response(send_head(inst, "full.iso", total))
    assert status == 507 and b"not enough space for full.iso" in body and not continued
    os.unlink(filler)
    # Full while the body arrives: 507, and what the upload held is given back at once.
    sock = send_head(inst, "full.iso", total, expect=False)
    sock.sendall(data[:10 * 10**6])
    deadline = time.monotonic() + 30
    while not partials(inst) or os.path.getsize(os.path.join(inst.images_dir, partials(inst)[0])) < 9 * CHUNK:
        assert time.monotonic() < deadline, "the upload never reached the disk"
        time.sleep(0.05)
    fill(filler)
    threading.Thread(target=send_quietly, args=(sock, data[10 * 10**6:]), daemon=True).start()
    status, headers, body, _ = response(sock)
    assert status == 507 and b"no space left for full.iso" in body and b"partial upload was removed" in body, body
    assert headers["Upload-Offset"] == "0" and partials(inst) == []
    assert user.burner.images() == [] and user.burner.uploads() == []
    assert "full.iso" not in os.listdir(inst.images_dir) and head(inst, "full.iso")[0] == 404
    os.unlink(filler)
    status, out = put_range(inst, "full.iso", data, "bytes 0-%d/%d" % (total - 1, total))
    assert status == 201 and out["image"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert {i["name"]: i["sha256"] for i in user.burner.images()} == {"full.iso": hashlib.sha256(data).hexdigest()}
    assert_healthy(inst)


def test_concurrent_uploads_keep_the_reserve(instance, isos):
    """The issue's case: 200 MB of images filesystem, 20 MB reserved, two uploads of 100 MB at once
    (alone, each fits): one is refused before its body, the other completes, and the free space never
    drops below the reserve.  Then an administrator lists and discards another user's unfinished upload."""
    inst = instance("reserve", **{"clarens.module:burner.upload_reserve_mb": "20"})
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200m,mode=2750,uid=%d,gid=%d" % (
        pwd.getpwnam("www-data").pw_uid, grp.getgrnam("clarens-burner").gr_gid), "tmpfs", inst.images_dir],
        check=True)
    head_ = bytearray(100 * 10**6)
    head_[32769:32774] = b"CD001"
    data = bytes(head_)
    fs = os.statvfs(inst.images_dir)
    lowest, done = [fs.f_bavail * fs.f_frsize], threading.Event()

    def watch():
        while not done.is_set():
            fs = os.statvfs(inst.images_dir)
            lowest[0] = min(lowest[0], fs.f_bavail * fs.f_frsize)
            time.sleep(0.01)
    threading.Thread(target=watch, daemon=True).start()
    socks = [send_head(inst, name, len(data), expect=True, user=user) for name, user in (("a.iso", "demo"),
                                                                                       ("b.iso", "admin"))]
    try:
        answers = []
        for sock in socks:
            first = sock.recv(25)                      # 100 Continue, or the refusal
            if first.startswith(b"HTTP/1.1 100"):
                threading.Thread(target=send_quietly, args=(sock, data), daemon=True).start()
            answers.append(first)
        results = sorted(response(sock)[0] if a.startswith(b"HTTP/1.1 100") else int(a.split()[1])
                         for sock, a in zip(socks, answers, strict=True))
    finally:
        done.set()
    assert results == [201, 507], results
    assert lowest[0] >= 20 * 10**6, "the free space fell to %d bytes" % lowest[0]
    # A user's unfinished upload, seen and discarded by an administrator (RPC and command line).
    sock = send_head(inst, "left.iso", 50 * 10**6, expect=False, user="demo")
    sock.sendall(data[:5 * 10**6])
    sock.close()
    admin, user = basic_proxy(inst, "admin"), basic_proxy(inst, "demo")
    deadline = time.monotonic() + 30
    while not [u for u in admin.burner.uploads() if u["name"] == "left.iso" and not u["writing"]]:
        assert time.monotonic() < deadline, admin.burner.uploads()
        time.sleep(0.2)
    [left] = user.burner.uploads()
    assert left["uploader"] == "demo" and left["size"] == 50 * 10**6 and left["received"] > 0
    assert basic_proxy(inst, "admin").burner.uploads() == [left]
    with pytest.raises(xmlrpc.client.Fault):
        user.burner.discard_upload("left.iso", "admin")              # another's: administrators only
    env = dict(os.environ, CLARENS_PASSWORD=devpki.credentials(inst.state_dir)["admin"])
    out = subprocess.run(["/usr/bin/python3", "-m", "clarens.burner_cli", "--url", inst.url, "--user", "admin",
                          "discard", "left.iso", "--uploader", "demo"], capture_output=True, text=True, cwd=ROOT,
                         env=env, timeout=60)
    assert out.returncode == 0 and int(out.stdout) == left["received"], out.stdout + out.stderr
    assert user.burner.uploads() == [] and partials(inst) == []
