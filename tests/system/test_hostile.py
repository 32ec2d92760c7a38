# SPDX-License-Identifier: Apache-2.0
"""Hostile clients through the real Apache: slow clients cannot starve the host, bytes that are not
UTF-8 get a plain 400, logs stay in proportion, defaults say little, one request's cost is bounded."""

import os
import re
import socket
import stat
import threading
import time
import xmlrpc.client

import pytest

from clarens import config as config_mod
from clarens import faults, refusals
from clarens.dev import crowd, devpki
from tests.helpers import basic_header, cert_proxy, concurrently, read_from, shipped_modules, start_instance

AUDIT_KEEP = 25


@pytest.fixture(scope="module")
def inst():
    """An instance of its own: these tests flood it, and read its error log."""
    shipped = config_mod.load(config_mod.DEFAULT_CONFIG)
    instance = start_instance("clarens-hostile-", log_level="warn", options={   # the shipped modules, pool, logs
        "clarens.server.log_level": "warning", "clarens.server.log_lines": str(shipped.log_lines),
        "clarens.server.modules_path": shipped_modules(),
        "clarens.server.spare_workers": str(shipped.spare_workers), "clarens.server.workers": str(shipped.workers),
        "clarens.server.acl_audit_keep": str(AUDIT_KEEP)})
    yield instance
    instance.stop()


def raw(inst, data: bytes, timeout: float = 10) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", inst.port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def log_size(inst) -> int:
    return os.path.getsize(inst.error_log)


def log_since(inst, mark: int) -> str:
    with open(inst.error_log, errors="replace") as f:
        f.seek(mark)
        return f.read()


# -- bytes that are not UTF-8 ---------------------------------------------------------

@pytest.mark.parametrize("head", [
    b"GET /clarens/%FF HTTP/1.1\r\nHost: x\r\n",
    b"GET /clarens/\xff HTTP/1.1\r\nHost: x\r\n",
    b"POST /clarens/ HTTP/1.1\r\nHost: x\r\nContent-Type: text/\xffxml\r\nContent-Length: 0\r\n",
    b"POST /clarens/ HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nOrigin: http://\xff\r\nContent-Length: 0\r\n",
    b"POST /clarens/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nSec-Fetch-Site: \xff\r\n"
    b"Content-Length: 0\r\n",
], ids=["percent-ff-uri", "raw-ff-uri", "content-type", "origin", "sec-fetch-site"])
def test_bytes_that_are_not_utf8_get_a_plain_400(inst, head):
    mark = log_size(inst)
    answer = raw(inst, head + b"Connection: close\r\n\r\n")
    assert status_of(answer) == 400, answer[:300]
    assert b"500" not in answer.split(b"\r\n", 1)[0] and b"<html" not in answer.lower()
    assert "Traceback" not in log_since(inst, mark)
    assert xmlrpc.client.ServerProxy(inst.url).system.listMethods()          # and it serves on


def test_a_client_gone_mid_body_is_one_line_not_a_traceback(inst):
    """The handler notes it (at info, below this instance's level) and answers 400 to nobody:
    the access log shows that 400, the error log no traceback, and the host serves on."""
    mark, access = log_size(inst), os.path.getsize(inst.access_log)
    with socket.create_connection(("127.0.0.1", inst.port)) as sock:
        sock.sendall(b"POST /clarens/?gone HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
                     b"Content-Length: 5000\r\n\r\n<?xml version='1.0'?><methodCall>")
    deadline = time.monotonic() + 30
    while b'"POST /clarens/?gone HTTP/1.1"' not in read_from(inst.access_log, access):
        assert time.monotonic() < deadline, log_since(inst, mark)
        time.sleep(0.1)
    assert b'"POST /clarens/?gone HTTP/1.1" 400 ' in read_from(inst.access_log, access)
    assert "Traceback" not in log_since(inst, mark)
    assert xmlrpc.client.ServerProxy(inst.url).system.listMethods()


# -- logs in proportion -----------------------------------------------------------------

def _denied_batch(n: int) -> bytes:
    return ("[" + ",".join('{"jsonrpc":"2.0","method":"acl.show"}' for _ in range(n)) + "]").encode()


def _post(inst, body: bytes, ctype: str) -> bytes:
    return raw(inst, b"POST /clarens/ HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n%s" % (ctype.encode(), len(body), body))


def test_a_denied_batch_is_one_line_with_a_count(inst):
    mark = log_size(inst)
    assert status_of(_post(inst, _denied_batch(5000), "application/json")) == 204
    text = log_since(inst, mark)
    assert "5000 calls got fault -32001 ('acl.show', 'acl.show'" in text and text.count("\n") == 1, text[:2000]


def test_denied_calls_cost_fewer_log_bytes_than_request_bytes(inst):
    """Single denied calls, batches of denied notifications and denied multicalls, anonymous."""
    mark = log_size(inst)
    single = xmlrpc.client.dumps((), "acl.show").encode()
    multicall = xmlrpc.client.dumps(([{"methodName": "acl.show", "params": []}] * 1000,), "system.multicall").encode()
    bodies = [(single, "text/xml")] * 600 + [(_denied_batch(5000), "application/json")] * 5 + \
        [(multicall, "text/xml")] * 5

    def send(chunk):
        for body, ctype in chunk:
            answer = _post(inst, body, ctype)
            assert status_of(answer) in (200, 204), answer[:200]
    threads = [threading.Thread(target=send, args=(bodies[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sent = sum(len(body) for body, _ in bodies)
    logged = log_size(inst) - mark
    assert logged < sent / 20, (logged, sent)
    # the budget, over all the children together: CLASS_LINES such lines an interval (twice if the test
    # straddles two), and a summary line for each interval
    lines = re.findall(r"fault -32001", log_since(inst, mark))
    assert 0 < len(lines) <= 2 * refusals.LINES, len(lines)


LOG_RATIO = 0.2          # error-log bytes per request byte, at most, for a burst of refused requests


@pytest.mark.parametrize("spread", [1, 400], ids=["one-address", "400-addresses"])
@pytest.mark.parametrize("kind", crowd.REFUSED)
def test_a_burst_of_refused_requests_costs_few_log_bytes(inst, kind, spread):
    """1,000 refused requests of each kind the host refuses: error-log bytes per request byte < 0.2."""
    measured = crowd.log_ratio(inst.port, inst.error_log, kind, 1000, spread)
    assert not set(measured["statuses"]) & {0, 500, 502}, measured      # answered (refused: a fault, 4xx, 503)
    assert measured["ratio"] < LOG_RATIO, (measured, log_since(inst, log_size(inst) - measured["logged"])[-2000:])


def test_refusals_beyond_the_budget_are_summed_up_across_children():
    """A short log_interval: after a burst from several addresses (served by several children), the
    lines written and the summaries, written by whichever child looks first, account for every refusal."""
    quick = start_instance("clarens-refusals-", log_level="warn", options={
        "clarens.server.log_level": "warning", "clarens.server.log_interval": "2",
        "clarens.server.log_lines": str(refusals.LINES)})
    try:
        mark = log_size(quick)
        sources = ["127.0.0.1"] * 60 + crowd.addresses(12)
        forged = crowd.REFUSED["forged client DN header"][0] + b"Connection: close\r\n\r\n"
        concurrently(lambda: [crowd.send_from(quick.port, sources.pop(), forged) for _ in range(9)], 8)
        proxy = xmlrpc.client.ServerProxy(quick.url)
        deadline = time.monotonic() + 30
        while True:
            text = log_since(quick, mark)
            lines = text.count("credentials refused")
            summaries = re.findall(r"refused \(credentials\): (\d+) in the 2 s from [0-9:]+ UTC, (\d+) logged; (.*)",
                                   text)
            if lines + sum(int(n) - int(logged) for n, logged, _ in summaries) == 72:
                break
            assert time.monotonic() < deadline, text[-3000:]
            proxy.echo.echo("tick")             # any request lets its child look for summaries due
            time.sleep(0.2)
        assert summaries and any(most.startswith("most from 127.0.0.1 (") for _, _, most in summaries), summaries
        assert lines <= 2 * refusals.LINES
    finally:
        quick.stop()


def test_the_audit_trail_is_bounded(inst):
    admin = cert_proxy(inst, "demo-admin")
    for i in range(30):
        admin.acl.set_group("scratch", ["user%d" % i])
    trail = admin.acl.audit(1000)
    assert len(trail) == AUDIT_KEEP and trail[-1]["what"] == {"action": "set_group", "group": "scratch",
                                                              "members": ["user29"]}, trail[-1]


# -- secure defaults ------------------------------------------------------------------------

def test_headers_say_little_and_trace_is_off(inst):
    answer = raw(inst, b"GET /clarens/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    headers = answer.split(b"\r\n\r\n", 1)[0].decode()
    assert "\r\nServer: Apache\r\n" in headers and "Python" not in headers
    assert status_of(raw(inst, b"TRACE /clarens/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")) == 405
    error = raw(inst, b"GET /nothing-here HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"Apache/" not in error and b"mod_python" not in error


def test_state_files_are_private(inst):
    htpasswd = os.stat(os.path.join(inst.state_dir, "htpasswd"))
    assert stat.S_IMODE(htpasswd.st_mode) == 0o640 and htpasswd.st_gid == 33            # www-data's group
    with open(os.path.join(inst.state_dir, "htpasswd")) as f:
        assert all(line.split(":", 1)[1].startswith("$2y$10$") for line in f if line.strip())   # bcrypt, cost 10
    for name in ("error.log", "access.log", "burnerd.log"):     # the helper's names callers and images
        assert stat.S_IMODE(os.stat(os.path.join(inst.state_dir, "log", name)).st_mode) & 0o007 == 0


def test_paths_and_pids_only_to_admins(inst):
    anon = xmlrpc.client.ServerProxy(inst.url)
    assert all("path" not in m for m in anon.system.listModules()) and "pid" not in anon.system.serverInfo()
    admin = cert_proxy(inst, "demo-admin")
    assert all(m["path"].startswith("/") for m in admin.system.listModules())
    assert isinstance(admin.system.serverInfo()["pid"], int)


def test_a_demo_ca_certificate_of_another_organisation_is_refused(inst):
    devpki.issue(inst.pki_dir, "outsider", "/C=UK/O=Elsewhere/CN=Outsider")
    with pytest.raises(xmlrpc.client.Fault) as info:
        cert_proxy(inst, "outsider").system.whoami()
    assert info.value.faultCode == faults.ACCESS_DENIED and "O=Clarens Demo" in info.value.faultString


# -- bounded cost -----------------------------------------------------------------------------

def test_a_huge_struct_is_refused_not_decoded(inst):
    body = xmlrpc.client.dumps(({"k%06d" % i: i for i in range(125000)},), "echo.echo").encode()
    assert 8 * 10**6 < len(body) < 10 * 2**20
    answer = raw(inst, b"POST /clarens/ HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n"
                       b"Connection: close\r\n\r\n%s" % (len(body), body), timeout=60)
    with pytest.raises(xmlrpc.client.Fault) as info:
        xmlrpc.client.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert info.value.faultCode == faults.INVALID_REQUEST
    assert "more than 10000 items" in info.value.faultString


def test_a_stalled_upload_is_answered_within_the_timeout(inst):
    """300 kB of an upload, then nothing: answered once Apache's Timeout (20 s) passes, not after the
    credit mod_reqtimeout's MinRate banked (once 40.5 s), with where to resume from (what the server
    holds: mod_python drops a read cut short, up to a chunk of 1 MiB)."""
    auth = basic_header(inst, "demo")["Authorization"].encode()
    head = bytearray(300000)
    head[32769:32774] = b"CD001"
    with socket.create_connection(("127.0.0.1", inst.port), timeout=60) as sock:
        sock.sendall(b"PUT /clarens/images/stalled.iso HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth
                     + b"\r\nContent-Length: 50000000\r\n\r\n" + bytes(head))
        started = time.monotonic()
        answer = sock.recv(65536)
        waited = time.monotonic() - started
    assert status_of(answer) == 400 and b"resume from byte" in answer, answer[:500]
    assert waited < 25, "answered after %.1f s" % waited
    assert re.search(rb"\r\nUpload-Offset: (0|300000)\r\n", answer), answer[:500]


# -- slow crowds ---------------------------------------------------------------------------------

CROWD = 200                # slow clients at once (they once took every process of a pool of 160)
PROBE_P99 = 2.0            # seconds: what the others' calls may take, at the 99th percentile
UPLOAD_RATE = 10**6        # bytes a second: a legitimate upload on a slow LAN


@pytest.mark.parametrize("spread", [1, CROWD], ids=["one-address", "200-addresses"])
@pytest.mark.parametrize("kind, rate", [("body", 9000), ("header", 1)],
                         ids=["slow-body", "slow-header"])
def test_a_slow_crowd_does_not_starve_the_others(inst, tmp_path, kind, rate, spread):
    """200 clients sending their body at 9 kB/s (or their headers at 1 B/s), from one address or from 200:
    once Apache has forked its whole pool, a call every 0.25 s for 40 s is answered within 2 s at the
    99th percentile, none fails, and an upload at 1 MB/s meanwhile completes.  (Once 165 such bodies held
    every process: calls timed out.)"""
    name = "lan-%s-%d.iso" % (kind, spread)
    image = crowd.sparse_image(str(tmp_path / name))
    pool = inst.server_config().pool_on()
    grown = min(pool.workers, CROWD + pool.spare // 2)   # prefork forks to keep spare processes idle beside the crowd
    measured = crowd.under_crowd(inst.port, kind, CROWD, rate, spread, 40,
                                 (image, name, UPLOAD_RATE, basic_header(inst, "demo")["Authorization"]),
                                 settled=lambda: len(inst.processes()) >= grown)
    probes, counts = measured.probes, measured.counts
    try:
        assert probes.failed == 0 and probes.p(99) < PROBE_P99, probes.summary()
        assert measured.upload is not None and measured.upload[0] == 201, measured.upload
        assert counts["cut"] >= CROWD, counts             # cut off, and back again, many times
    finally:
        if os.path.exists(os.path.join(inst.images_dir, name)):
            os.unlink(os.path.join(inst.images_dir, name))
