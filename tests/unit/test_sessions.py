# SPDX-License-Identifier: Apache-2.0
"""Sessions (clarens.sessions): signed tokens, expiry, revocation, and the handler that takes them (a fake
request, a real host booted without Apache).  Through Apache and browsers: tests/integration/test_sessions.py."""

import json
import os
import threading
import types
import xmlrpc.client

import pytest

from clarens import db, passwords, sessions
from clarens.faults import ACCESS_DENIED, INVALID_PARAMS
from clarens.sessions import SessionRefused, Sessions
from tests.unit import fakes
from tests.unit.fakes import FakeRequest
from tests.unit.test_credentials import Clock, header, write_htpasswd

handler = fakes.import_handler()
KEY = bytes(range(32))
IDLE, LIFETIME = 1800, 12 * 3600


@pytest.fixture
def store(tmp_path):
    table = db.open_db(str(tmp_path / "sessions.tdb"))
    entries = {"alice": b"$2y$10$hash-one", "ädmin": b"$2y$10$hash-two"}
    clock = Clock(1_000_000.0)
    kept = Sessions(table, KEY, IDLE, LIFETIME, entries.get, clock)
    kept.entries, kept.now = entries, clock
    yield kept
    table.close()


def refused(store, token):
    with pytest.raises(SessionRefused) as info:
        store.verify(token)
    return str(info.value)


def test_a_token_stands_for_its_session(store):
    token, opened = store.open("ädmin", "basic", "192.0.2.1", "curl/8")
    session = store.verify(token)
    assert session == opened and (session.name, session.source) == ("ädmin", "basic")
    assert session.expires == session.issued + LIFETIME
    assert token.startswith("cs1.") and len(token) < 250 and token.isascii()
    record = store.db.get("s:" + session.id)
    assert record["address"] == "192.0.2.1" and record["agent"] == "curl/8"
    assert token.split(".")[1] not in json.dumps(store.db.items())      # the host keeps a digest, not the id
    cert = store.verify(store.open("/C=UK/O=Home/CN=Carol", "certificate")[0])
    assert cert.source == "certificate"


def test_forged_altered_truncated_and_foreign_tokens_are_refused(store):
    token, _ = store.open("alice", "basic")
    body, _, mac = token.rpartition(".")
    fields = body.split(".")
    other = Sessions(store.db, bytes(32), IDLE, LIFETIME, store.entries.get, store.now)
    assert "signed with another key" in refused(store, other.open("alice", "basic")[0])   # another host's
    admin = fields[:7] + [sessions._b64("admin".encode())]
    assert "forged" in refused(store, ".".join(admin) + "." + mac)       # another name, the same MAC
    longer = fields[:3] + [str(int(fields[3]) + 86400)] + fields[4:]
    assert "forged" in refused(store, ".".join(longer) + "." + mac)      # a later end
    for bad in (token[:-1], token[:40], "", "cs1", "cs2" + token[3:], token + ".x", "é" + token, "x" * 5000,
                ".".join(fields[:7]) + "." + mac):
        assert refused(store, bad)


def test_a_session_ends_when_unused_and_at_the_latest_when_its_lifetime_is_over(store):
    token, _ = store.open("alice", "basic")
    store.now.now += IDLE - 10
    store.verify(token)                            # used: the idle time starts again
    store.now.now += IDLE - 10
    store.verify(token)
    store.now.now += IDLE + 1
    assert "unused for 30 minutes" in refused(store, token)
    token, session = store.open("alice", "basic")
    for _ in range(int(LIFETIME / (IDLE / 2)) - 1):       # used every 15 minutes, renewed as it goes
        store.now.now += IDLE / 2
        token = store.renewal(token, store.verify(token), store.now.now) or token
    store.now.now += IDLE / 2
    assert "it lasts 12 hours" in refused(store, token)


def test_the_last_use_is_written_at_most_once_a_minute(store):
    token, session = store.open("alice", "basic")
    writes = []
    real_put = store.db.put
    store.db.put = lambda key, value: (writes.append(key), real_put(key, value))
    for _ in range(100):
        store.now.now += 1
        store.verify(token)
    assert len(writes) <= 100 / sessions.SEEN_EVERY + 1


def test_a_token_verified_before_is_checked_in_full_after_any_change(store):
    """A process takes a token it verified lately on two comparisons: never past a revocation made by
    another process or the session's end, nor a minute past a password changed in the file alone."""
    token, session = store.open("alice", "basic")
    store.verify(token)
    other = Sessions(store.db, KEY, IDLE, LIFETIME, store.entries.get, store.now)      # another process
    other.revoke(session.id)
    assert "signed out" in refused(store, token)
    token, _ = store.open("alice", "basic")
    store.verify(token)
    store.entries["alice"] = b"$2y$10$a-new-hash"     # the file changed by other means than clarens-admin:
    store.verify(token)
    store.now.now += sessions.SEEN_EVERY                # within the minute
    assert "password changed" in refused(store, token)
    token, _ = store.open("ädmin", "basic")
    store.verify(token)
    store.now.now += IDLE + 1
    assert "unused for 30 minutes" in refused(store, token)
    token, _ = store.open("ädmin", "basic")
    store.verify(token)
    writes = []
    store.db.put = lambda key, value, put=store.db.put: (writes.append(key), put(key, value))
    store.now.now += sessions.SEEN_EVERY + 1
    store.verify(token)                                  # its last use is written once a minute all the same
    assert writes and writes[0].startswith("s:")


def test_a_renewed_token_carries_the_last_use_to_any_host(store, tmp_path):
    """A host that never saw a session tells an idle one from one in use elsewhere by the token."""
    token, session = store.open("alice", "basic")
    assert store.renewal(token, session, store.now.now) is None                         # fresh
    store.now.now += IDLE / 6 + 1
    renewed = store.renewal(token, store.verify(token), store.now.now)
    assert renewed is not None and store.verify(renewed).id == session.id
    elsewhere = Sessions(db.open_db(str(tmp_path / "other.tdb")), KEY, IDLE, LIFETIME, store.entries.get, store.now)
    store.now.now += IDLE - 60
    assert "unused" in refused(elsewhere, token)       # the token first handed out: idle too long, as far as it says
    assert elsewhere.verify(renewed).id == session.id


def test_sign_out_and_revocation_end_sessions(store):
    token, session = store.open("alice", "basic")
    other, _ = store.open("alice", "basic")
    third, _ = store.open("ädmin", "basic")
    assert store.revoke(session.id) and "signed out or revoked" in refused(store, token)
    store.verify(other)
    assert {s["identity"] for s in store.active()} == {"alice", "ädmin"}
    assert store.revoke_user("alice") == 1 and "revoked" in refused(store, other)
    store.verify(third)
    assert [s["identity"] for s in store.active()] == ["ädmin"]
    store.now.now += 1
    store.verify(store.open("alice", "basic")[0])                      # one opened after the revocation
    assert store.revoke("0" * 32) is False                             # unknown here: nothing to end


def test_a_users_sessions_end_at_the_revocation_not_at_its_second(store):
    before, _ = store.open("alice", "basic")
    store.now.now += 0.001
    store.revoke_user("alice")
    store.now.now += 0.001
    after, _ = store.open("alice", "basic")           # signed in again at once, within the same second
    assert "revoked" in refused(store, before)
    assert store.verify(after).name == "alice"


def test_a_revocation_is_never_overwritten_by_a_last_use(store):
    token, session = store.open("alice", "basic")
    store.now.now += sessions.SEEN_EVERY + 1
    real_get = store.db.get

    def get(key, default=None):          # another process signs the session out between the read and the write
        value = real_get(key, default)
        if key == "s:" + session.id and store.db.get is get:
            store.db.get = real_get
            store.revoke(session.id)
        return value
    store.db.get = get
    store.verify(token)
    assert "signed out" in refused(store, token)


def test_revocations_are_numbered_for_the_other_hosts_and_applied_there(store, tmp_path):
    peer = Sessions(db.open_db(str(tmp_path / "peer.tdb")), KEY, IDLE, LIFETIME, store.entries.get, store.now,
                    cluster=True)
    token, session = store.open("alice", "basic")
    other, _ = store.open("ädmin", "basic")
    assert peer.verify(token).id == session.id and peer.verify(other)        # the same key: valid there
    assert store.events(0)["events"] == []
    store.revoke(session.id)
    store.now.now += 0.001
    store.revoke_user("ädmin")
    feed = store.events(0)
    assert feed["host"] == store.host_id() != peer.host_id() and feed["seq"] == 2
    assert [e["seq"] for e in feed["events"]] == [1, 2] and store.events(1)["events"][0]["user"] == "ädmin"
    assert peer.apply(feed["events"]) == 1                                  # the one it had seen ended there
    assert "signed out" in refused(peer, token) and "revoked" in refused(peer, other)
    assert peer.events(0)["events"] == []                                   # not published again
    store.now.now += LIFETIME + sessions.PRUNE_EVERY + 1
    store.open("alice", "basic")
    assert store.events(0)["events"] == [] and store.events(0)["first"] == 3     # forgotten after a lifetime


def test_only_a_host_holding_the_key_may_fetch_revocations(store):
    signature = store.peer_signature(7)
    assert store.peer_allowed(signature, 7)
    assert not store.peer_allowed(signature, 8)                          # signed for another question
    other = Sessions(store.db, bytes(32), IDLE, LIFETIME, store.entries.get, store.now)
    assert not store.peer_allowed(other.peer_signature(7), 7)
    store.now.now += sessions.PEER_SKEW + 1
    assert not store.peer_allowed(signature, 7)                          # too old: no replay
    for bad in (None, "", "x.y", "12", "-1.abc"):
        assert not store.peer_allowed(bad, 7)


def test_a_cluster_host_revokes_a_session_it_never_saw(store):
    assert store.revoke("0" * 32) is False                               # one host alone: nothing to end
    store.cluster = True
    assert store.revoke("0" * 32) is True and store.events(0)["events"][0]["session"] == "0" * 32
    assert store.revoke("1" * 12) is False                               # a prefix names only sessions seen here


def test_a_session_is_named_by_a_prefix_of_its_id_that_names_one(store):
    _, session = store.open("alice", "basic")
    assert store.revoke(session.id[:8]) and store.revoke(session.id[:7]) is False   # too short to name one
    for suffix in ("0" * 24, "1" * 24):
        store.db.put("s:abcdef12" + suffix, {"name": "x", "source": "basic", "issued": 0, "expires": 2 ** 40,
                                              "seen": 0})
    with pytest.raises(ValueError, match="names 2 sessions"):
        store.revoke("abcdef12")


def test_a_new_password_or_a_deleted_user_ends_the_users_sessions(store):
    token, _ = store.open("alice", "basic")
    cert, _ = store.open("alice", "certificate")       # a certificate identity has no password to change
    store.entries["alice"] = b"$2y$10$a-new-hash"
    assert "password changed" in refused(store, token)
    token, _ = store.open("alice", "basic")
    del store.entries["alice"]
    assert "the user was removed" in refused(store, token)
    store.verify(cert)
    with pytest.raises(ValueError):
        store.open("alice", "basic")                   # no such user any more


def test_only_passwords_and_certificates_open_sessions(store):
    for source in ("anonymous", "unix", "digest"):
        with pytest.raises(ValueError):
            store.open("alice", source)


def test_ended_sessions_are_swept(store):
    for _ in range(5):
        store.open("alice", "basic")
    store.revoke_user("alice")
    store.now.now += LIFETIME + sessions.PRUNE_EVERY + 1
    store.open("ädmin", "basic")
    assert len(store.db.keys("s:")) == 1 and store.db.keys("e:") == [] and store.db.keys("u:") == []


def test_the_key_is_made_once_whatever_races(tmp_path):
    path = str(tmp_path / "session.key")
    keys = []
    with pytest.raises(FileNotFoundError):
        sessions.load_key(path)                        # a key that must be deployed is never made up
    threads = [threading.Thread(target=lambda: keys.append(sessions.load_key(path, make=True))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 8 and len(set(keys)) == 1 and len(keys[0]) == 32
    assert os.stat(path).st_mode & 0o777 == 0o600 and os.listdir(str(tmp_path)) == ["session.key"]
    (tmp_path / "bad.key").write_text("not hex")
    with pytest.raises(ValueError):
        sessions.load_key(str(tmp_path / "bad.key"))


# --- through the handler --------------------------------------------------------------------

ADMIN_POLICY = fakes.POLICY + """
<Acl session>
    Allow ädmin
</Acl>
"""


@pytest.fixture
def site(tmp_path):
    """The unit site, with passwords, and the shipped session module for the user ädmin."""
    htpasswd = str(tmp_path / "htpasswd")
    write_htpasswd(htpasswd, {"alice": "right", "ädmin": "right"})
    with fakes.isolated():
        options = fakes.write_site(str(tmp_path / "site"), policy=ADMIN_POLICY, htpasswd=htpasswd,
                                   passwords_over_http="on")
        os.symlink(os.path.join(fakes.ROOT, "modules", "session"),
                   os.path.join(options["clarens.server.modules_path"], "session"))
        host = fakes.host_mod.boot(options, None)
        log = fakes.LogRecorder()
        host.log.addHandler(log)
        host.credentials.tarpits = passwords.Turns(str(tmp_path), "tarpit", 0)
        yield types.SimpleNamespace(host=host, log=log, htpasswd=htpasswd)


def call(method, *params, headers=None, protocol="xmlrpc", http="POST", uri="/clarens/"):
    if protocol == "xmlrpc":
        body, ctype = xmlrpc.client.dumps(params, method, allow_none=True).encode(), "text/xml"
    else:
        body, ctype = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1}).encode(), \
            "application/json"
    req = FakeRequest(http, uri, body if http == "POST" else b"", dict({"Content-Type": ctype}, **(headers or {})))
    assert handler.handler(req) == handler.apache.OK
    return req


def answer(req):
    if req.content_type.startswith("application/json"):
        out = json.loads(req.output)
        if "error" in out:
            return xmlrpc.client.Fault(out["error"]["code"], out["error"]["message"])
        return out["result"]
    try:
        return xmlrpc.client.loads(req.output)[0][0]
    except xmlrpc.client.Fault as fault:
        return fault


@pytest.mark.parametrize("protocol", ["xmlrpc", "jsonrpc"])
def test_system_auth_then_calls_with_the_token(site, protocol):
    opened = answer(call("system.auth", headers={"Authorization": header("ädmin", "right")}, protocol=protocol))
    assert opened["identity"] == "ädmin" and opened["source"] == "basic" and opened["idle_timeout"] == IDLE
    bearer = {"Authorization": "Bearer " + opened["token"]}
    me = answer(call("system.whoami", headers=bearer, protocol=protocol))
    assert me["identity"] == "ädmin" and me["session"] == opened["id"] and me["source"] == "basic"
    refused = call("system.auth", headers=bearer, protocol=protocol)        # a session never extends itself
    assert answer(refused).faultCode == ACCESS_DENIED
    assert answer(call("system.logout", headers=bearer, protocol=protocol)) is True
    req = call("system.whoami", headers=bearer, protocol=protocol)
    fault = answer(req)
    assert req.status == 401 and fault.faultCode == ACCESS_DENIED and "signed out" in fault.faultString
    assert req.headers_out["WWW-Authenticate"].startswith("Bearer ")
    assert answer(call("system.logout", protocol=protocol)).faultCode == INVALID_PARAMS
    assert answer(call("system.auth", protocol=protocol)).faultCode == ACCESS_DENIED      # anonymous


def test_a_token_renewed_by_the_host_comes_back_in_a_header(site):
    token = answer(call("system.auth", headers={"Authorization": header("alice", "right")}))["token"]
    kept = site.host.credentials.sessions
    real = kept.clock
    kept.clock = lambda: real() + IDLE / 6 + 5
    try:
        req = call("system.whoami", headers={"Authorization": "Bearer " + token})
    finally:
        kept.clock = real
    renewed = req.headers_out[sessions.RENEWAL_HEADER]
    assert renewed != token and answer(call("system.whoami", headers={"Authorization": "Bearer " + renewed}))[
        "identity"] == "alice"


def test_an_ended_sessions_cookie_is_forgotten_pages_show_as_to_anyone_calls_are_refused(site):
    token = answer(call("system.auth", headers={"Authorization": header("alice", "right")}))["token"]
    cookie = {"Cookie": "theme=dark; %s=%s" % (sessions.COOKIE, token)}
    assert answer(call("system.whoami", headers=cookie))["identity"] == "alice"
    assert answer(call("system.logout", headers=cookie)) is True
    page = call("", headers=cookie, http="GET")
    assert page.status == 200 and "Sign in" in page.output.decode()
    assert page.headers_out["Set-Cookie"].startswith(sessions.COOKIE + "=; Path=/clarens; Max-Age=0; HttpOnly")
    req = call("system.whoami", headers=cookie)
    assert req.status == 401 and answer(req).faultCode == ACCESS_DENIED
    assert req.headers_out["Set-Cookie"].startswith(sessions.COOKIE + "=;")
    forged = {"Cookie": "%s=cs1.forged" % sessions.COOKIE}
    assert call("system.whoami", headers=forged).status == 401
    assert any("session refused" in m or "malformed session token" in m for m in site.log.messages())


def test_a_changed_password_ends_the_session(site):
    token = answer(call("system.auth", headers={"Authorization": header("alice", "right")}))["token"]
    write_htpasswd(site.htpasswd, {"alice": "new", "ädmin": "right"})
    fault = answer(call("system.whoami", headers={"Authorization": "Bearer " + token}))
    assert fault.faultCode == ACCESS_DENIED and "password changed" in fault.faultString


def test_administrators_list_and_revoke_sessions(site):
    admin = answer(call("system.auth", headers={"Authorization": header("ädmin", "right")}))["token"]
    user = answer(call("system.auth", headers={"Authorization": header("alice", "right")}))
    bearer = {"Authorization": "Bearer " + admin}
    listed = answer(call("session.list", "alice", headers=bearer))
    assert [s["id"] for s in listed] == [user["id"]]
    denied = answer(call("session.list", headers={"Authorization": "Bearer " + user["token"]}))
    assert denied.faultCode == ACCESS_DENIED                           # not for everyone
    assert answer(call("session.revoke", user["id"][:10], headers=bearer)) is True
    assert call("system.whoami", headers={"Authorization": "Bearer " + user["token"]}).status == 401
    assert answer(call("session.revoke", "f" * 32, headers=bearer)).faultCode == INVALID_PARAMS
    assert answer(call("session.revoke_user", "ädmin", headers=bearer)) == 1
    assert call("system.whoami", headers=bearer).status == 401


def page(path, body=b"", headers=None, method="POST", args=None, https=False):
    """A request to a web route: the answer's request object."""
    req = FakeRequest(method, "/clarens/" + path, body, dict({"Content-Type": "application/x-www-form-urlencoded"},
                                                            **(headers or {})),
                      args=args, ssl={"HTTPS": "on"} if https else None)
    assert handler.handler(req) == handler.apache.OK
    return req


def cookie_of(req):
    return req.headers_out["Set-Cookie"].split(";")[0].partition("=")[2]


@pytest.mark.parametrize("https", [False, True])
def test_the_sign_in_form_sets_a_cookie_only_this_site_sends(site, https):
    form = page("login", method="GET", args="to=burner", https=https)
    assert form.status == 200 and b"<form id=signin-form" in form.output and b"login?to=burner" in form.output
    assert "script-src 'self'" in form.headers_out["Content-Security-Policy"]
    req = page("login", "user=%C3%A4dmin&password=right".encode(), args="to=burner", https=https)
    assert req.status == 303 and req.headers_out["Location"] == "/clarens/burner"
    attributes = req.headers_out["Set-Cookie"].split("; ")
    assert attributes[0].startswith(sessions.COOKIE + "=cs1.") and "HttpOnly" in attributes
    assert "SameSite=Strict" in attributes and "Path=/clarens" in attributes
    assert ("Secure" in attributes) == https and "Max-Age=%d" % LIFETIME in attributes
    me = answer(call("system.whoami", headers={"Cookie": "%s=%s" % (sessions.COOKIE, cookie_of(req))}))
    assert me["identity"] == "ädmin" and me["session"]


def test_a_refused_sign_in_shows_the_form_again_without_a_browser_dialog(site):
    req = page("login", b"user=alice&password=wrong")
    assert req.status == 401 and "WWW-Authenticate" not in req.headers_out and "Set-Cookie" not in req.headers_out
    assert b"Wrong user name or password." in req.output and b"<form id=signin-form" in req.output
    assert page("login", b"user=alice&password=").status == 400
    assert any("wrong password" in m for m in site.log.messages())      # logged as a Basic refusal is
    for _ in range(10):
        req = page("login", b"user=alice&password=wrong")
    assert req.status == 429 and int(req.headers_out["Retry-After"]) >= 1   # throttled like Basic


def test_signing_out_ends_the_session_and_clears_the_cookie(site):
    token = cookie_of(page("login", b"user=alice&password=right"))
    jar = {"Cookie": "%s=%s" % (sessions.COOKIE, token)}
    assert page("logout", method="GET", headers=jar).status == 405          # a link cannot sign anybody out
    out = page("logout", headers=jar, args="to=burner")
    assert out.status == 303 and out.headers_out["Location"] == "/clarens/burner"
    assert out.headers_out["Set-Cookie"].startswith(sessions.COOKIE + "=; Path=/clarens; Max-Age=0")
    assert "signed out" in answer(call("system.whoami", headers={"Authorization": "Bearer " + token})).faultString
    forged = page("logout", headers=dict(jar, Origin="https://evil.example"))
    assert forged.status == 403                                             # the cross-site check, as before


def test_revocations_go_only_to_hosts_holding_the_key(site):
    kept = site.host.credentials.sessions
    opened = answer(call("system.auth", headers={"Authorization": header("alice", "right")}))
    assert answer(call("system.logout", headers={"Authorization": "Bearer " + opened["token"]})) is True
    refused = page("revocations", method="GET", args="since=0")
    assert refused.status == 403 and b"share this host's session key" in refused.output
    feed = page("revocations", method="GET", args="since=0", headers={"X-Clarens-Peer": kept.peer_signature(0)})
    events = json.loads(feed.output)["events"]
    assert feed.status == 200 and [e["session"] for e in events] == [opened["id"]]
    assert page("revocations", method="GET", args="since=x").status == 400
