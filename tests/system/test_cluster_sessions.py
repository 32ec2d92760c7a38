# SPDX-License-Identifier: Apache-2.0
"""A session across three hosts behind HAProxy: opened through the front end, valid on every host, and
ended on every host within the stated bound when it is signed out or revoked on one.

Three private instances are the hosts: the same session key and htpasswd file (deployed, as the
policy files are), each listing all three as ``session_peers`` (a host skips itself) and fetching
their revocations every second.  HAProxy (bench.front.Front: the shipped template) is the front end,
connecting from 127.0.0.2, the only address the hosts trust.  A fourth instance, with a key of its
own, stands for another cluster.  Every wait polls, with generous limits; nothing is timed.
"""

from __future__ import annotations

import base64
import grp
import http.client
import json
import os
import subprocess
import tempfile

import pytest

from bench.front import HAPROXY, PROXY_SOURCE, Front
from clarens import faults, sessions
from clarens.client import connect
from clarens.dev import devpki
from clarens.dev.instance import free_port
from tests.helpers import ROOT, read_from, start_instance, wait_for

SYNC = 1                  # seconds between two fetches of the peers' revocations (default 5)
BOUND = SYNC + 2 + 30     # the bound docs/scaling.md states (SYNC + one fetch), and room for a loaded machine

pytestmark = pytest.mark.skipif(not os.path.exists(HAPROXY) or os.geteuid() != 0,
                                reason="needs HAProxy, and root for Apache's own user")


def rpc(port: int, method: str, authorization: str) -> tuple[int, dict]:
    """(HTTP status, JSON-RPC answer) of ``method`` called on 127.0.0.1:``port`` with ``authorization``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/clarens/", json.dumps({"jsonrpc": "2.0", "method": method, "id": 1}),
                     {"Content-Type": "application/json", "Authorization": authorization})
        response = conn.getresponse()
        data = response.read()
        assert response.getheader("Content-Type", "").startswith("application/json"), (response.status, data[:300])
        return response.status, json.loads(data)
    finally:
        conn.close()


def sign_in(inst, port: int) -> str:
    """A new session's token: system.auth with the demo password of ``inst``'s htpasswd, at ``port``."""
    secret = base64.b64encode(("demo:" + devpki.credentials(inst.state_dir)["demo"]).encode()).decode()
    status, answer = rpc(port, "system.auth", "Basic " + secret)
    assert status == 200, answer
    return answer["result"]["token"]


def refused_everywhere(hosts, token: str, why: str) -> None:
    for inst in hosts:
        wait_for("host %d to refuse the session (%s)" % (inst.port, why),
                 lambda inst=inst: rpc(inst.port, "system.whoami", "Bearer " + token)[0] == 401, timeout=BOUND)
        answer = rpc(inst.port, "system.whoami", "Bearer " + token)[1]
        assert answer["error"]["code"] == faults.ACCESS_DENIED and "sign in again" in answer["error"]["message"]


@pytest.fixture(scope="module")
def cluster():
    work = tempfile.mkdtemp(prefix="clarens-cluster-sessions-")
    os.chmod(work, 0o755)                    # Apache's children (www-data) read the key in it
    key = os.path.join(work, "session.key")
    sessions.write_key(key, gid=grp.getgrnam("www-data").gr_gid)        # root:www-data 0640, as deployed
    ports = [free_port() for _ in range(3)]
    common = {"clarens.server.modules_path": os.path.join(ROOT, "modules"),    # healthy: no broken test modules
              "clarens.server.cluster": "on", "clarens.server.trusted_proxies": PROXY_SOURCE,
              "clarens.server.session_key": key, "clarens.server.session_sync_seconds": str(SYNC),
              "clarens.server.session_peers": " ".join("http://127.0.0.1:%d/clarens/" % p for p in ports)}
    hosts: list = []
    front = None
    try:
        for n, port in enumerate(ports):     # the first host's htpasswd is the cluster's
            deployed = {"clarens.server.htpasswd": os.path.join(hosts[0].state_dir, "htpasswd")} if hosts else {}
            hosts.append(start_instance("clarens-cluster-sessions-%d-" % n, burner=False, port=port,
                                        options={**common, **deployed}))
        front = Front(hosts, work)
        yield hosts, front
    finally:
        if front is not None:
            front.stop()
        for inst in hosts:
            inst.stop()


def test_a_session_opened_through_the_front_end_is_valid_on_every_host(cluster):
    hosts, front = cluster
    token = sign_in(hosts[0], front.http_port)
    answers = [rpc(inst.port, "system.whoami", "Bearer " + token) for inst in hosts]
    assert [status for status, _ in answers] == [200] * 3
    assert len({a["result"]["session"] for _, a in answers}) == 1 and answers[0][1]["result"]["identity"] == "demo"
    # and through the front end, which spreads the calls over the hosts
    marks = [os.path.getsize(inst.access_log) for inst in hosts]
    for _ in range(9):
        assert rpc(front.http_port, "system.whoami", "Bearer " + token)[1]["result"]["identity"] == "demo"
    wait_for("each host to log a call in the session", lambda: all(
        b" demo [" in read_from(inst.access_log, mark) for inst, mark in zip(hosts, marks, strict=True)))


def test_every_host_reports_the_peers_fetched_in_its_health(cluster):
    hosts, _ = cluster
    for inst in hosts:
        def fetched(inst=inst):
            conn = http.client.HTTPConnection("127.0.0.1", inst.port, timeout=30)
            try:
                conn.request("GET", "/clarens/health")
                answer = json.loads(conn.getresponse().read())
            finally:
                conn.close()
            peers = answer["session_peers"]
            return answer["status"] == "ok" and sum(1 for p in peers if p.get("self")) == 1 and all(
                p.get("self") or p["fetched"] for p in peers) and answer
        answer = wait_for("host %d to report every peer fetched" % inst.port, fetched, timeout=BOUND)
        assert [p["peer"] for p in answer["session_peers"]] == [1, 2, 3] and answer["problems"] == []


def test_signing_out_on_one_host_ends_the_session_on_every_host(cluster):
    hosts, front = cluster
    with connect("http://127.0.0.1:%d/clarens/" % front.http_port, user="demo",
                 password=devpki.credentials(hosts[0].state_dir)["demo"]) as svc:
        first = svc.system.whoami()["session"]
        token = next(iter(svc.transports.values()))._token
        for inst in hosts:                                       # every host has seen it
            assert rpc(inst.port, "system.whoami", "Bearer " + token)[0] == 200
        assert rpc(hosts[1].port, "system.logout", "Bearer " + token)[1]["result"] is True
        refused_everywhere(hosts, token, "signed out on another host")
        assert svc.system.whoami()["session"] != first          # the client signed in again by itself


def test_an_administrators_revocation_reaches_every_host(cluster, tmp_path):
    hosts, front = cluster
    token = sign_in(hosts[0], front.http_port)
    session = rpc(hosts[2].port, "system.whoami", "Bearer " + token)[1]["result"]["session"]
    conf = tmp_path / "clarens.conf"                             # the first host's configuration, as root there
    conf.write_text("[server]\ndb_dir = %s\nsession_peers = %s\n" % (hosts[0].db_dir, hosts[0].url))
    out = subprocess.run(["/usr/bin/python3", "-m", "clarens.admin", "session", "revoke", session, "--config",
                          str(conf)], capture_output=True, text=True)
    assert out.returncode == 0 and "ended session" in out.stdout, out.stderr
    refused_everywhere(hosts, token, "revoked on the first host")


def test_another_clusters_token_is_refused_on_every_host(cluster):
    hosts, _ = cluster
    other = start_instance("clarens-cluster-sessions-other-", burner=False)
    try:
        token = sign_in(other, other.port)
    finally:
        other.stop()
    for inst in hosts:
        status, answer = rpc(inst.port, "system.whoami", "Bearer " + token)
        assert status == 401 and "signed with another key" in answer["error"]["message"]
