# SPDX-License-Identifier: Apache-2.0
"""The health check reports the fetching of the peers' session revocations, through Apache.

One host whose ``session_peers`` are itself and a peer that cannot be reached (a port nothing listens
on): its health says, per peer, when revocations were last fetched and the last error (the peer's URL
for an administrator only), stays "ok" within the bound, and turns "degraded" (200: a front end keeps
it) with the problem once the peer has not been reached for longer than the bound docs/scaling.md states.
"""

from __future__ import annotations

import grp
import http.client
import json
import os
import shutil
import tempfile
import time

import pytest

from clarens import session_peers, sessions
from clarens.dev.instance import free_port
from tests.helpers import ROOT, basic_header, start_instance, wait_for

SYNC = 1                                         # seconds between two rounds of fetching (default 5)
LATE = session_peers.late_after(SYNC)            # 5 s: three rounds and one fetch


def health(port: int, headers: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/clarens/health", headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def host():
    work = tempfile.mkdtemp(prefix="clarens-peers-health-")
    os.chmod(work, 0o755)                        # Apache's children (www-data) read the key in it
    key = os.path.join(work, "session.key")
    sessions.write_key(key, gid=grp.getgrnam("www-data").gr_gid)
    port, dead = free_port(), free_port()        # nothing listens on the second: the unreachable peer
    inst = start_instance("clarens-peers-health-", burner=False, port=port, options={
        "clarens.server.modules_path": os.path.join(ROOT, "modules"),      # healthy: no broken test modules
        "clarens.server.session_key": key, "clarens.server.session_sync_seconds": str(SYNC),
        "clarens.server.session_peers": "http://127.0.0.1:%d/clarens/ http://127.0.0.1:%d/clarens/" % (port, dead)})
    try:
        yield inst, dead
    finally:
        inst.stop()
        shutil.rmtree(work)


def test_an_unreachable_peer_is_reported_and_degrades_health_past_the_bound(host):
    inst, dead = host
    started = time.time()
    # The first rounds: the error is reported at once, the status stays ok within the bound.
    status, answer = wait_for("the failed fetch to be reported", lambda: (lambda h: h[1]["session_peers"][1].get(
        "error_at") and h)(health(inst.port)), timeout=30)
    peer = answer["session_peers"][1]
    assert peer["peer"] == 2 and "url" not in peer and peer["fetched"] is None
    assert "refused" in peer["error"].lower() and len(peer["error"]) <= session_peers.ERROR_CHARS
    if time.time() - started < LATE - 1:
        assert status == 200 and answer["status"] == "ok" and answer["problems"] == [], answer
    # Past the bound: degraded, still 200, with the problem naming the peer and the error.
    status, answer = wait_for("health to degrade", lambda: (lambda h: h[1]["status"] == "degraded" and h)(
        health(inst.port)), timeout=LATE + 30)
    assert status == 200
    [problem] = answer["problems"]
    assert "peer 2 of session_peers not fetched" in problem and "refused" in problem.lower()
    assert answer["session_peers"][0] == {"peer": 1, "self": True}
    # An administrator sees which peer that is.
    _, answer = health(inst.port, basic_header(inst, "admin"))
    assert answer["session_peers"][1]["url"] == "http://127.0.0.1:%d/clarens/" % dead
    assert answer["session_peers"][0]["url"] == inst.url


def test_the_peers_key_and_signature_are_never_in_the_answer(host):
    inst, _ = host
    _, answer = health(inst.port, basic_header(inst, "admin"))
    text = json.dumps(answer)
    with open(inst.options["clarens.server.session_key"]) as f:
        assert f.read().strip() not in text
    assert session_peers.HEADER not in text
