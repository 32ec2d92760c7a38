# SPDX-License-Identifier: Apache-2.0
"""The client's session layer (clarens.client.sessions) over a stand-in transport that plays the host:
sign in once, follow renewals, sign in again once when the token is refused, fall back to the password
on a host without sessions, keep tokens in a private file.

Through Apache: tests/integration/test_client_sessions.py."""

from __future__ import annotations

import base64
import os
import stat
import threading
import time
import xmlrpc.client

import pytest

from clarens.client import TransportError, sessions, wire
from clarens.client.transports import Answer
from clarens.faults import ACCESS_DENIED, METHOD_NOT_FOUND, Fault

XML = wire.WIRES["xmlrpc"]


class Host:
    """Answers like a Clarens host: system.auth with the right Basic credentials opens a session
    (tokens "t1", "t2"...); a call with a live token answers its identity; others are refused."""

    def __init__(self, password="right", sessions_known=True):
        self.url = "http://host.example/clarens/"
        self.timeout = 30.0
        self.password = password
        self.sessions_known = sessions_known
        self.live: set[str] = set()
        self.opened = 0
        self.sent: list[tuple[str, str]] = []         # (method, Authorization)
        self.renew: dict[str, str] = {}               # token -> the renewed token to hand back with its answer
        self.lock = threading.Lock()

    def exchange(self, body, content_type, timeout=None, headers=None):
        _, method = xmlrpc.client.loads(body)
        authorization = (headers or {}).get("Authorization", "")
        with self.lock:
            self.sent.append((method, authorization))
        if method == "system.auth":
            if not self.sessions_known:
                return Answer(_fault(METHOD_NOT_FOUND, "method system.auth not found"))
            if authorization != "Basic " + base64.b64encode(b"alice:" + self.password.encode()).decode():
                return Answer(_fault(ACCESS_DENIED, "credentials refused: wrong user name or password"), 401,
                              {"www-authenticate": "Basic realm=x"})
            with self.lock:
                self.opened += 1
                token = "t%d" % self.opened
                self.live.add(token)
            return Answer(_result({"token": token, "expires": time.time() + 3600}))
        scheme, _, token = authorization.partition(" ")
        if scheme == "Bearer" and token not in self.live:
            return Answer(_fault(ACCESS_DENIED, "credentials refused: session ended: sign in again"), 401,
                          {"www-authenticate": 'Bearer realm="Clarens", error="invalid_token"'})
        if method == "system.logout":
            self.live.discard(token)
        renewed = self.renew.pop(token, None)
        if renewed:
            self.live.add(renewed)
        return Answer(_result(True if method == "system.logout" else "alice via " + scheme), 200,
                      {"x-clarens-session": renewed} if renewed else {})

    def close(self):
        pass


def _result(value):
    return xmlrpc.client.dumps((value,), methodresponse=True, allow_none=True).encode()


def _fault(code, message):
    return xmlrpc.client.dumps(xmlrpc.client.Fault(code, message)).encode()


def call(transport, method="echo.echo"):
    return XML.result(transport.exchange(XML.call(method, ()), XML.CONTENT_TYPE).body)


def test_the_password_goes_once_then_the_token(tmp_path):
    host = Host()
    asked = []
    transport = sessions.SessionTransport(host, XML, "alice", lambda: asked.append(1) or "right")
    assert [call(transport) for _ in range(3)] == ["alice via Bearer"] * 3
    assert [m for m, a in host.sent if a.startswith("Basic")] == ["system.auth"] and len(asked) == 1


def test_renewed_tokens_are_followed():
    host = Host()
    transport = sessions.SessionTransport(host, XML, "alice", "right")
    call(transport)
    host.renew["t1"] = "t1-renewed"
    call(transport)
    call(transport)
    assert host.sent[-1][1] == "Bearer t1-renewed"


def test_a_refused_token_signs_in_again_once_and_the_call_is_sent_again():
    host = Host()
    transport = sessions.SessionTransport(host, XML, "alice", "right")
    call(transport)
    host.live.clear()                                        # revoked, expired...
    assert call(transport) == "alice via Bearer" and host.opened == 2
    host.live.clear()
    host.password = "changed"                                # signing in again fails: the fault, no loop
    with pytest.raises(Fault) as info:
        call(transport)
    assert info.value.code == ACCESS_DENIED and "wrong user name or password" in info.value.message
    assert [m for m, _ in host.sent[-2:]] == ["echo.echo", "system.auth"]


def test_threads_share_one_sign_in():
    host = Host()
    transport = sessions.SessionTransport(host, XML, "alice", "right")
    threads = [threading.Thread(target=call, args=(transport,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert host.opened == 1


def test_a_host_without_sessions_gets_the_password_with_every_call():
    host = Host(sessions_known=False)
    transport = sessions.SessionTransport(host, XML, "alice", "right")
    assert [call(transport) for _ in range(3)] == ["alice via Basic"] * 3
    assert [m for m, _ in host.sent].count("system.auth") == 1


def test_a_malformed_answer_to_the_sign_in_is_a_transport_error():
    host = Host()
    host.exchange = lambda *a, **k: Answer(_result("no struct"))
    with pytest.raises(TransportError, match="malformed answer to system.auth"):
        call(sessions.SessionTransport(host, XML, "alice", "right"))


def test_tokens_kept_in_a_private_file_serve_the_next_process(tmp_path):
    path = str(tmp_path / "cache" / "clarens" / "sessions")
    host = Host()
    first = sessions.SessionTransport(host, XML, "alice", "right", sessions.TokenFile(path))
    call(first)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    second = sessions.SessionTransport(host, XML, "alice", lambda: pytest.fail("no password needed"),
                                       sessions.TokenFile(path))
    assert call(second) == "alice via Bearer" and host.opened == 1
    assert second.logout() is True and sessions.TokenFile(path).get(second._key) is None
    assert second.logout() is False
    ended = sessions.TokenFile(path, clock=lambda: time.time() + 7200)       # past the session's end: gone
    ended.put("other", "t9", time.time() + 7300)
    assert ended.get(first._key) is None and ended.get("other") == ("t9", pytest.approx(time.time() + 7300, abs=5))
