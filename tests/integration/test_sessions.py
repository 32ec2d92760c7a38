# SPDX-License-Identifier: Apache-2.0
"""Sessions through Apache: opened with a password or a certificate, in both protocols, carried as a
header by any client (the standard library's xmlrpc.client too), valid in every child and after a
restart; expired, signed-out, revoked, forged and other hosts' tokens refused; a new password, an
administrator and an ACL change acting on open sessions at once.  The pages' cookie: tests/system/test_browser.py;
several hosts: tests/system/test_cluster_sessions.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import subprocess
import textwrap
import time
import urllib.parse
import xmlrpc.client

import pytest

from clarens import faults, sessions
from clarens.db import open_db
from clarens.dev import devpki
from tests.helpers import ROOT, basic_header, concurrently, htpasswd_user, start_instance, tls_context

PROTOCOLS = ("xmlrpc", "jsonrpc")


def rpc(port, method, params=(), headers=None, protocol="xmlrpc", tls=None):
    """(HTTP status, response headers, result or xmlrpc.client.Fault) of one call on a new connection."""
    if protocol == "xmlrpc":
        body, ctype = xmlrpc.client.dumps(tuple(params), method, allow_none=True).encode(), "text/xml"
    else:
        body = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1}).encode()
        ctype = "application/json"
    conn = (http.client.HTTPSConnection("127.0.0.1", port, context=tls, timeout=30) if tls else
            http.client.HTTPConnection("127.0.0.1", port, timeout=30))
    try:
        conn.request("POST", "/clarens/", body, {"Content-Type": ctype, **(headers or {})})
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    if protocol == "jsonrpc":
        out = json.loads(data)
        value = xmlrpc.client.Fault(out["error"]["code"], out["error"]["message"]) if "error" in out else out["result"]
    else:
        try:
            value = xmlrpc.client.loads(data, use_builtin_types=True)[0][0]
        except xmlrpc.client.Fault as fault:
            value = fault
    return response.status, dict(response.getheaders()), value


def bearer(token):
    return {"Authorization": "Bearer " + token}


def open_session(server, user="demo", protocol="xmlrpc"):
    status, _, opened = rpc(server.port, "system.auth", headers=basic_header(server, user), protocol=protocol)
    assert status == 200 and isinstance(opened, dict), opened
    return opened


def refusal(server, token, protocol="xmlrpc"):
    """The fault a call with ``token`` gets (asserting it is the session refusal: 401, -32001)."""
    status, headers, fault = rpc(server.port, "system.whoami", headers=bearer(token), protocol=protocol)
    assert status == 401 and isinstance(fault, xmlrpc.client.Fault), (status, fault)
    assert fault.faultCode == faults.ACCESS_DENIED and headers["WWW-Authenticate"].startswith("Bearer ")
    return fault.faultString


def signed(server, fields):
    """A token signed with the instance's own key (as only the host could make one)."""
    with open(os.path.join(server.db_dir, "session.key")) as f:
        key = bytes.fromhex(f.read().strip())
    body = ".".join(fields)
    mac = base64.urlsafe_b64encode(hmac.new(key, body.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
    return body + "." + mac


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_password_opens_a_session_that_needs_no_password_after(server, protocol):
    opened = open_session(server, protocol=protocol)
    assert opened["identity"] == "demo" and opened["source"] == "basic"
    assert opened["expires"] - opened["issued"] == 12 * 3600 and opened["idle_timeout"] == 30 * 60
    status, _, me = rpc(server.port, "system.whoami", headers=bearer(opened["token"]), protocol=protocol)
    assert status == 200 and me == {"identity": "demo", "source": "basic", "authenticated": True,
                                    "groups": ["users"], "session": opened["id"]}
    # every child knows it, each checking no password: the throttle and the bcrypt count never move
    seen = concurrently(lambda: rpc(server.port, "system.whoami", headers=bearer(opened["token"]),
                                    protocol=protocol)[2]["session"], 16)
    assert set(seen) == {opened["id"]}


def test_a_client_certificate_opens_a_session_too(server):
    tls = tls_context(server, "demo-user")
    status, _, opened = rpc(server.tls_port, "system.auth", tls=tls)
    assert status == 200 and opened["source"] == "certificate" and opened["identity"].endswith("/CN=Demo User")
    status, _, me = rpc(server.tls_port, "system.whoami", headers=bearer(opened["token"]), tls=tls_context(server))
    assert me["identity"] == opened["identity"] and me["session"] == opened["id"]


def test_only_a_caller_who_proved_who_it_is_opens_one(server):
    status, _, fault = rpc(server.port, "system.auth")
    assert status == 200 and fault.faultCode == faults.ACCESS_DENIED and "password" in fault.faultString
    opened = open_session(server)
    status, _, fault = rpc(server.port, "system.auth", headers=bearer(opened["token"]))
    assert fault.faultCode == faults.ACCESS_DENIED and "session already" in fault.faultString


def test_the_standard_library_client_carries_a_session_as_the_docs_show(server, capsys):
    """docs/clients.md's xmlrpc.client example, run as written against this instance (its URL and password
    substituted); then the cookie, and a session that ended."""
    with open(os.path.join(ROOT, "docs", "clients.md")) as f:
        code = textwrap.dedent(re.search(r"```python\n( *import xmlrpc.client\n.*?) *```", f.read(), re.S).group(1))
    code = code.replace("https://clarens.example/clarens/", server.url).replace(
        '"https://", "https://alice:secret@"', '"http://", "http://demo:%s@"' % urllib.parse.quote(
            devpki.credentials(server.state_dir)["demo"], safe=""))
    scope: dict = {}
    exec(code, scope)
    assert capsys.readouterr().out == "demo\n"
    with pytest.raises(xmlrpc.client.ProtocolError) as info:      # signed out: 401, sign in again
        scope["server"].system.whoami()
    assert info.value.errcode == 401
    token = scope["login"].system.auth()["token"]
    by_cookie = xmlrpc.client.ServerProxy(server.url, headers=[("Cookie", "clarens_session=" + token)])
    assert by_cookie.system.whoami()["identity"] == "demo" and by_cookie.echo.echo("hi") == "hi"


def test_a_session_outlives_a_restart_of_apache():
    inst = start_instance("clarens-sessions-restart-", burner=False)
    try:
        token = open_session(inst)["token"]
        inst.stop()
        inst.start()
        status, _, me = rpc(inst.port, "system.whoami", headers=bearer(token))
        assert status == 200 and me["identity"] == "demo"
    finally:
        inst.stop()


def test_signing_out_ends_the_session_in_every_child(server):
    opened = open_session(server)
    status, _, out = rpc(server.port, "system.logout", headers=bearer(opened["token"]), protocol="jsonrpc")
    assert out is True
    messages = concurrently(lambda: refusal(server, opened["token"]), 8)
    assert all("signed out or revoked" in m and "sign in again" in m for m in messages)
    status, _, fault = rpc(server.port, "system.logout")
    assert fault.faultCode == faults.INVALID_PARAMS


def test_forged_truncated_expired_and_foreign_tokens_are_refused_never_served(server):
    token = open_session(server)["token"]
    fields = token.rpartition(".")[0].split(".")
    now = int(time.time())
    name = base64.urlsafe_b64encode(b"admin").rstrip(b"=").decode()
    cases = {
        "truncated": token[:-3],
        "garbage": "cs1.x",
        "altered": token[:30] + ("A" if token[30] != "A" else "B") + token[31:],
        "another name, the same signature": ".".join(fields[:7] + [name]) + "." + token.rpartition(".")[2],
        "expired": signed(server, fields[:2] + [str((now - 13 * 3600) * 10**6), str(now - 3600), str(now - 3600)]
                          + fields[5:]),
        "idle": signed(server, fields[:1] + ["a-session-nobody-used"] + [str((now - 3600) * 10**6), str(now + 3600),
                                                                         str(now - 31 * 60)] + fields[5:]),
    }
    other = start_instance("clarens-sessions-other-", burner=False)
    try:
        cases["another host's"] = open_session(other)["token"]
    finally:
        other.stop()
    for case, bad in cases.items():
        for protocol in PROTOCOLS:
            message = refusal(server, bad, protocol)
            assert "sign in again" in message or "malformed" in message or "another key" in message, (case, message)
    assert "expired (it lasts 12 hours)" in refusal(server, cases["expired"])
    assert "unused for 30 minutes" in refusal(server, cases["idle"])
    assert "another key" in refusal(server, cases["another host's"])
    # a web route and the discovery page refuse it too, never a 500
    for path in ("/clarens/", "/clarens/burner"):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("GET", path, headers=bearer(cases["altered"]))
        response = conn.getresponse()
        response.read()
        conn.close()
        assert response.status == 401, path


def test_a_new_password_ends_the_users_sessions_at_once(server):
    htpasswd_user(server, "add", "carol", password="first one")
    header = {"Authorization": "Basic " + base64.b64encode(b"carol:first one").decode()}
    tokens = [rpc(server.port, "system.auth", headers=header)[2]["token"] for _ in range(2)]
    assert "ended every session" in htpasswd_user(server, "passwd", "carol", password="second one")
    for token in tokens:
        assert "password changed" in refusal(server, token)
    header = {"Authorization": "Basic " + base64.b64encode(b"carol:second one").decode()}
    token = rpc(server.port, "system.auth", headers=header)[2]["token"]
    htpasswd_user(server, "del", "carol")
    assert "the user was removed" in refusal(server, token)


def test_an_administrator_lists_and_revokes_sessions(server, admin, tmp_path):
    demo = open_session(server)
    listed = [s for s in admin.session.list("demo") if s["id"] == demo["id"]]
    assert listed and listed[0]["identity"] == "demo" and listed[0]["address"] == "127.0.0.1"
    assert admin.session.revoke(demo["id"][:12]) is True
    assert "signed out or revoked" in refusal(server, demo["token"])
    # and on the command line, as root on the host
    conf = tmp_path / "clarens.conf"
    conf.write_text("[server]\ndb_dir = %s\n" % server.db_dir)
    cli = ["/usr/bin/python3", "-m", "clarens.admin", "session"]
    demo = open_session(server)
    out = subprocess.run(cli + ["list", "--user", "demo", "--config", str(conf)], capture_output=True, text=True)
    assert out.returncode == 0 and demo["id"] in out.stdout, out.stderr
    out = subprocess.run(cli + ["revoke", "--user", "demo", "--config", str(conf)], capture_output=True, text=True)
    assert out.returncode == 0 and "ended" in out.stdout, out.stderr
    assert "revoked" in refusal(server, demo["token"])
    out = subprocess.run(cli + ["revoke", "deadbeef00", "--config", str(conf)], capture_output=True, text=True)
    assert out.returncode == 1 and "no session" in out.stderr
    assert os.stat(os.path.join(server.db_dir, "sessions.tdb")).st_uid == os.stat(server.db_dir).st_uid
    assert demo["id"] not in subprocess.run(cli + ["list", "--config", str(conf)], capture_output=True,
                                            text=True).stdout


def test_an_acl_change_applies_to_open_sessions_at_once(server, admin):
    """A session carries the identity, never a decision: groups and entries are applied per call."""
    token = open_session(server)["token"]
    assert rpc(server.port, "validator1.arrayOfStructsTest", [[]], headers=bearer(token))[2] == 0
    try:
        assert admin.acl.set_entry("validator1.arrayOfStructsTest", {"deny": ["demo"], "order": "allow,deny",
                                                                     "allow": ["authenticated"]}) is True
        fault = rpc(server.port, "validator1.arrayOfStructsTest", [[]], headers=bearer(token))[2]
        assert fault.faultCode == faults.ACCESS_DENIED and "demo" in fault.faultString
    finally:
        admin.acl.delete_entry("validator1.arrayOfStructsTest")
    assert rpc(server.port, "validator1.arrayOfStructsTest", [[]], headers=bearer(token))[2] == 0


def test_the_session_key_is_made_once_and_kept_private(server):
    path = os.path.join(server.db_dir, "session.key")
    st = os.stat(path)
    assert st.st_mode & 0o777 == 0o600 and st.st_uid == os.stat(server.db_dir).st_uid
    with open(path) as f:
        assert len(bytes.fromhex(f.read().strip())) == 32


def test_the_sign_in_form_over_https_sets_a_secure_cookie_that_calls_carry(server):
    conn = http.client.HTTPSConnection("127.0.0.1", server.tls_port, context=tls_context(server), timeout=30)
    try:
        form = urllib.parse.urlencode({"user": "demo", "password": devpki.credentials(server.state_dir)["demo"]})
        conn.request("POST", "/clarens/login?to=burner", form, {"Content-Type": "application/x-www-form-urlencoded",
                                                                "Origin": "https://127.0.0.1:%d" % server.tls_port})
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()
    assert response.status == 303 and response.getheader("Location") == "/clarens/burner"
    cookie = response.getheader("Set-Cookie")
    assert {"HttpOnly", "SameSite=Strict", "Secure", "Path=/clarens"} <= set(cookie.split("; "))
    jar = {"Cookie": cookie.split(";")[0]}
    status, _, me = rpc(server.tls_port, "system.whoami", headers=jar, protocol="jsonrpc", tls=tls_context(server))
    assert status == 200 and me["identity"] == "demo" and me["session"]
    # a page with the cookie shows who is signed in, and how to sign out
    conn = http.client.HTTPSConnection("127.0.0.1", server.tls_port, context=tls_context(server), timeout=30)
    conn.request("GET", "/clarens/", headers=jar)
    page = conn.getresponse().read().decode()
    conn.close()
    assert "You are <b>demo (basic" in page and "id=signout" in page


def test_tokens_are_refused_over_plain_http_like_passwords():
    inst = start_instance("clarens-sessions-https-", burner=False,
                          options={"clarens.server.passwords_over_http": "off"})
    try:
        status, _, opened = rpc(inst.tls_port, "system.auth", headers=basic_header(inst, "demo"), tls=tls_context(inst))
        assert status == 200
        status, _, fault = rpc(inst.port, "system.whoami", headers=bearer(opened["token"]))
        assert status == 403 and "https only" in fault.faultString
        status, _, me = rpc(inst.tls_port, "system.whoami", headers=bearer(opened["token"]), tls=tls_context(inst))
        assert me["session"] == opened["id"]
    finally:
        inst.stop()


def test_a_flood_of_bad_tokens_is_refused_cheaply_and_logged_in_proportion(server):
    """Tokens that cost nothing to make up cost little to refuse: 1,000 of them, from 4 connections,
    are each a 401, and the error log grows by far less than was sent."""
    mark = os.path.getsize(server.error_log)
    body = xmlrpc.client.dumps((), "system.whoami").encode()

    def flood(n):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        statuses = []
        try:
            for i in range(250):
                conn.request("POST", "/clarens/", body, {"Content-Type": "text/xml",
                                                         "Authorization": "Bearer cs1.forged%d.%d" % (n, i)})
                response = conn.getresponse()
                response.read()
                statuses.append(response.status)
        finally:
            conn.close()
        return statuses
    seen = [s for statuses in concurrently(lambda: flood(os.getpid()), 4) for s in statuses]
    assert seen == [401] * 1000
    with open(server.error_log, "rb") as f:
        f.seek(mark)
        logged = sum(len(line) for line in f if b"] clarens" in line)
    assert logged / (1000 * (len(body) + 100)) < 0.2, logged


def test_a_new_password_is_published_to_the_other_hosts(server, tmp_path):
    """clarens-admin user passwd on a host also revokes the user's sessions in its table, which the other
    hosts of a cluster fetch (tests/system/test_cluster_sessions.py): they end there before the file reaches them."""
    htpasswd_user(server, "add", "erin", password="first")
    conf = tmp_path / "clarens.conf"
    conf.write_text("[server]\ndb_dir = %s\nhtpasswd = %s\n" % (server.db_dir, os.path.join(server.state_dir,
                                                                                           "htpasswd")))
    out = subprocess.run(["/usr/bin/python3", "-m", "clarens.admin", "user", "passwd", "erin", "--password-stdin",
                          "--config", str(conf)], input="second\n", capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    table = open_db(os.path.join(server.db_dir, sessions.DB_NAME + ".tdb"))
    try:
        published = sessions.Sessions(table, b"", 1800, 43200, lambda name: None).events(0)["events"]
    finally:
        table.close()
    assert any(event.get("user") == "erin" for event in published)
    htpasswd_user(server, "del", "erin")
