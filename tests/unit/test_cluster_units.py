# SPDX-License-Identifier: Apache-2.0
"""Many hosts, without Apache: trusted front ends, digests, the health route, cluster mode, the HAProxy template."""

import io
import json
import os
import resource
import types
import xmlrpc.client

import pytest

from clarens import cluster, loader, proxies, session_peers
from clarens import config as config_mod
from clarens import host as host_mod
from clarens.acl import store
from clarens.acl.files import load_dir, parse_text
from clarens.acl.model import Entry, Policy
from clarens.client.service import IDEMPOTENT_HEADER
from clarens.db import open_db
from clarens.faults import ACCESS_DENIED, READ_ONLY
from clarens.identity import ANONYMOUS, Identity, IdentityRefused, from_request
from clarens.web import routes
from tests.unit import fakes
from tests.unit.fakes import FakeRequest

handler = fakes.import_handler()
ROOT = fakes.ROOT
FRONT = "10.0.0.2"
DN = "CN=Carol,O=Home,C=UK"


def via_front(req: FakeRequest, peer: str = FRONT) -> FakeRequest:
    req.connection = types.SimpleNamespace(client_ip=peer)   # mod_python: the connection's TCP peer
    return req


# --- trusted front ends (clarens.proxies) ----------------------------------------------------

def test_trusted_proxies_are_addresses_and_networks():
    trusted = proxies.parse("10.0.0.2, 192.0.2.0/28  2001:db8::1")
    assert [trusted.trusts(a) for a in ("10.0.0.2", "192.0.2.15", "192.0.2.16", "::ffff:10.0.0.2", "2001:db8::1",
                                        "10.0.0.3", "", None, "not an address")] == \
        [True, True, False, True, True, False, False, False, False]
    assert not proxies.parse("") and not proxies.parse("").trusts("10.0.0.2")
    with pytest.raises(ValueError, match="'10.0.0.300' is not an IP address"):
        proxies.parse("10.0.0.1 10.0.0.300")


def test_what_a_trusted_front_end_says():
    trusted = proxies.parse(FRONT)
    req = via_front(FakeRequest(headers={"X-Clarens-Client-DN": DN, "X-Forwarded-For": "6.6.6.6, 192.0.2.9",
                                         "X-Forwarded-Proto": "HTTPS"}))
    assert trusted.forwarded(req) == proxies.Forwarded(FRONT, DN, "192.0.2.9", "https")
    bare = via_front(FakeRequest(headers={"X-Forwarded-For": "garbage", "X-Forwarded-Proto": "gopher"}))
    assert trusted.forwarded(bare) == proxies.Forwarded(FRONT, None, None, None)
    assert trusted.forwarded(via_front(FakeRequest(headers={"X-Clarens-Client-DN": DN}), "10.0.0.9")) is None


def test_through_a_front_end_its_word_is_the_certificate_never_the_connections():
    req = FakeRequest(ssl={"SSL_CLIENT_VERIFY": "SUCCESS", "SSL_CLIENT_S_DN": "CN=The Front End,O=Home,C=UK"})
    assert from_request(req, {"O": "Home"}, proxies.Forwarded(FRONT, DN, None, "https")) == \
        Identity("/C=UK/O=Home/CN=Carol", "certificate")
    # A client without a certificate: the front end's own (on a TLS link to the host) is not the caller's.
    assert from_request(req, {}, proxies.Forwarded(FRONT, None, None, "https")) is ANONYMOUS
    basic = FakeRequest(user="bob", auth_type="Basic")
    assert from_request(basic, {}, proxies.Forwarded(FRONT, None, None, "https")) == Identity("bob", "basic")
    with pytest.raises(IdentityRefused, match="must have O=Work"):
        from_request(req, {"O": "Work"}, proxies.Forwarded(FRONT, DN, None, "https"))


@pytest.mark.parametrize("extra", [{}, {"SSL_CLIENT_VERIFY": "SUCCESS", "SSL_CLIENT_S_DN": DN}])
def test_a_client_dn_header_from_anyone_else_is_refused(extra):
    req = FakeRequest(headers={"X-Clarens-Client-DN": "CN=Demo Administrator,O=Clarens Demo,C=UK"}, ssl=extra)
    with pytest.raises(IdentityRefused, match="X-Clarens-Client-DN header from a client that is not a trusted"):
        from_request(req, {})


@pytest.fixture
def site(tmp_path):
    """A booted host that trusts the front end FRONT."""
    with fakes.isolated():
        host, log = fakes.boot(str(tmp_path), trusted_proxies=FRONT, cluster="on")
        yield types.SimpleNamespace(host=host, log=log)


def whoami(req):
    assert handler.handler(req) == handler.apache.OK
    return xmlrpc.client.loads(req.output, use_builtin_types=True)[0][0]


def call(method, *params, peer="192.0.2.7", **kw):
    """An XML-RPC request from ``peer`` (a client, unless it is FRONT)."""
    return via_front(FakeRequest("POST", "/clarens/", xmlrpc.client.dumps(params, method).encode(),
                                 dict({"Content-Type": "text/xml"}, **kw.pop("headers", {})), **kw), peer)


def test_the_handler_believes_the_front_end_only(site):
    me = whoami(call("system.whoami", headers={"X-Clarens-Client-DN": DN}, peer=FRONT))
    assert (me["identity"], me["source"]) == ("/C=UK/O=Home/CN=Carol", "certificate")
    with pytest.raises(xmlrpc.client.Fault) as info:
        whoami(call("system.whoami", headers={"X-Clarens-Client-DN": DN}, peer="10.0.0.66"))
    assert info.value.faultCode == ACCESS_DENIED and info.value.faultString.startswith("credentials refused: a X-")
    assert any("credentials refused" in m for m in site.log.messages())


def test_the_callers_address_and_scheme_are_the_ones_the_front_end_saw(site):
    # Refused calls are logged with the client's address, not the front end's.
    req = call("unit.secret", headers={"X-Forwarded-For": "192.0.2.9"}, peer=FRONT)
    assert handler.handler(req) == handler.apache.OK
    assert [line for line in site.log.faults(ACCESS_DENIED) if "anonymous@192.0.2.9 'unit.secret'" in line]
    # A browser's page on https://server.example posting through a front end that terminated TLS.
    origin = {"Origin": "https://server.example", "X-Forwarded-Proto": "https"}
    assert whoami(call("unit.echo", "x", headers=origin, peer=FRONT)) == "x"
    with pytest.raises(xmlrpc.client.Fault):      # the same headers straight from a client: plain http here
        whoami(call("unit.echo", "x", headers=origin))


# --- digests -------------------------------------------------------------------------------

POLICY = """
<Group staff>
    Member bob
    Member alice
</Group>
<Acl unit>
    Allow alice
    Deny mallory
    AllowGroup staff
</Acl>
"""


def policy_of(text: str) -> Policy:
    groups: dict = {}
    entries: dict = {}
    parse_text(text, "x.acl", groups, entries)
    return Policy(entries, groups)


def test_the_policy_digest_covers_what_decides_and_nothing_else():
    digest = policy_of(POLICY).digest()
    assert len(digest) == 64
    reordered = POLICY.replace("    Member bob\n    Member alice\n",
                               "    Member alice\n    Member bob\n    Member bob\n")
    assert policy_of("\n\n# elsewhere\n" + reordered).digest() == digest       # order, repeats, file lines
    for changed in (POLICY.replace("Deny mallory", "Deny eve"), POLICY.replace("Member bob", "Member bobby"),
                    POLICY + "<Acl echo>\n    Allow anonymous\n</Acl>\n",
                    POLICY.replace("    Deny mallory\n", "    Deny mallory\n    NotAfter 2030-01-01\n"),
                    POLICY.replace("<Acl unit>", "<Acl unit>\n    Order deny,allow")):
        assert policy_of(changed).digest() != digest, changed


def test_the_loaded_policy_has_the_files_digest(tmp_path):
    acl = tmp_path / "acl"
    acl.mkdir()
    (acl / "x.acl").write_text(POLICY)
    db = open_db(str(tmp_path / "acl.tdb"))
    try:
        files = store.load_files(db, str(acl), "test")
        assert store.read_policy(db).digest() == files.digest() == load_dir(str(acl)).digest()
        store.change(db, "admin", {"what": "test"}, lambda p: p.entries.__setitem__("echo", Entry("echo")))
        assert store.read_policy(db).digest() != files.digest()
    finally:
        db.close()


def test_the_modules_digest_follows_their_files(tmp_path):
    for name in ("one", "two"):
        (tmp_path / name / "web").mkdir(parents=True)
        (tmp_path / name / "__init__.py").write_text("x = 1\n")
    (tmp_path / "two" / "web" / "page.html").write_text("<p>")
    found = [("one", str(tmp_path / "one")), ("two", str(tmp_path / "two"))]
    digest = loader.modules_digest(found)
    assert loader.modules_digest(list(reversed(found))) == digest
    (tmp_path / "one" / "__pycache__").mkdir()
    (tmp_path / "one" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    assert loader.modules_digest(found) == digest                         # compiled files are not the module
    (tmp_path / "two" / "web" / "page.html").write_text("<p>changed")
    assert loader.modules_digest(found) != digest
    assert loader.modules_digest(found[:1]) != loader.modules_digest(found)


# --- the fetching of the peers' session revocations, as health reports it ----------------------------

def test_a_peer_is_late_past_three_rounds_and_one_fetch(tmp_path):
    status = open_db(str(tmp_path / "peers.tdb"))
    urls = ["http://a/clarens/", "http://b/clarens/", "http://c/clarens/", "http://d/clarens/"]
    status.put(urls[0], {"self": True})
    status.put(urls[1], {"since": 100, "fetched": 990, "error": "timed out", "error_at": 980})
    status.put(urls[2], {"since": 100, "error": "[Errno 111] Connection refused", "error_at": 999})
    late = session_peers.late_after(5)
    assert late == 17
    peers, problems = session_peers.report(status, urls, 5, 1000, started=990, with_urls=False)
    assert peers == [{"peer": 1, "self": True},
                     {"peer": 2, "fetched": 990, "error": "timed out", "error_at": 980},
                     {"peer": 3, "fetched": None, "error": "[Errno 111] Connection refused", "error_at": 999},
                     {"peer": 4, "fetched": None, "error": None, "error_at": None}]
    # c never answered since its first attempt 900 s ago; d has not been tried yet, within the bound of the start
    assert problems == ["session revocations from peer 3 of session_peers not fetched for 900 s (more than 17 s): "
                        "[Errno 111] Connection refused: sessions revoked there may still be accepted here"]
    _, problems = session_peers.report(status, urls, 5, 990 + late + 1, started=990, with_urls=True)
    assert [p.split(" of ")[0] for p in problems] == ["session revocations from peer %d" % n for n in (2, 3, 4)]
    assert [p.get("url") for p in session_peers.report(status, urls, 5, 1000, 990, True)[0]] == urls


def test_check_fails_on_a_degraded_host_and_says_why(monkeypatch):
    digests = {key: "d" for _, key, _ in routes.EXPECTED}
    answers = {"http://a/clarens/": (200, {"status": "ok", "problems": [], **digests}),
               "http://b/clarens/": (200, {"status": "degraded", **digests, "problems": [
                   "session revocations from peer 1 of session_peers not fetched for 40 s (more than 17 s)"]})}
    monkeypatch.setattr(cluster, "health", lambda url, headers=None: answers[url])
    monkeypatch.setattr(cluster, "forged_identity", lambda url: None)
    out = io.StringIO()
    assert cluster.check(["http://a/clarens/"], out) == 0
    assert cluster.check(list(answers), out) == 1
    assert "degraded" in out.getvalue() and "peer 1 of session_peers not fetched" in out.getvalue()


# --- the health route --------------------------------------------------------------------

def health(headers=None, method="GET"):
    req = via_front(FakeRequest(method, "/clarens/health", headers=headers), FRONT)
    assert handler.handler(req) == handler.apache.OK
    return req.status, (json.loads(req.output) if req.content_type == "application/json" and req.output else None), req


def test_health_is_ok_and_says_what_a_host_runs(site):
    status, answer, req = health()
    facts = site.host.policy_state()
    assert status == 200 and req.headers_out["Cache-Control"] == "no-store"
    assert answer == {"status": "ok", "problems": [], "modules": {"loaded": ["system", "unit"], "failed": []},
                      "access_control": "on", "policy_digest": facts[1], "modules_digest": site.host.modules_digest,
                      "trust_digest": proxies.trust_digest(proxies.parse(FRONT), True),
                      "cluster": True, "started": int(site.host.started), "session_peers": []}
    assert health({"X-Clarens-Expect-Policy": facts[1], "X-Clarens-Expect-Modules": site.host.modules_digest,
                   "X-Clarens-Expect-Trust": answer["trust_digest"]})[0] == 200
    assert health({"X-Clarens-Expect-Policy": "%s %s" % ("0" * 64, facts[1])})[0] == 200    # a rolling deployment
    assert health(method="HEAD")[0] == 200 and health(method="POST")[0] == 405


def test_health_is_503_when_the_host_differs_or_failed(site):
    status, answer, _ = health({"X-Clarens-Expect-Modules": "abc"})
    assert status == 503 and answer["status"] == "failing"
    assert answer["problems"] == ["the module set digest is %s, not the expected abc" % site.host.modules_digest]
    site.host.modules["unit"].status = "failed"
    site.host.guard.broken = "x.acl:3: nonsense"
    status, answer, _ = health()
    assert status == 503 and answer["problems"] == [
        "module(s) failed to load: unit", "the access-control policy failed to load: every call is refused"]
    assert answer["access_control"] == "failed" and answer["policy_digest"] == ""


def test_a_host_that_trusts_other_front_ends_is_not_fit(site):
    """A host started without trusted_proxies, with others, or out of cluster mode reports another
    trust digest: the health check the front end sends takes it out."""
    expected = proxies.trust_digest(proxies.parse(FRONT), True)
    assert site.host.trust_digest == expected
    for trusted, cluster_mode in (("", True), ("10.0.0.2 127.0.0.1", True), (FRONT, False)):
        other = proxies.trust_digest(proxies.parse(trusted), cluster_mode)
        status, answer, _ = health({"X-Clarens-Expect-Trust": other})
        assert status == 503 and answer["problems"] == [
            "the trust configuration digest is %s, not the expected %s" % (expected, other)]
    # Only what the host believes counts: the same networks, however written.
    assert proxies.trust_digest(proxies.parse("10.0.0.2/32, 10.0.0.2 192.0.2.0/24"), True) == \
        proxies.trust_digest(proxies.parse("192.0.2.7/24 10.0.0.2"), True)


def test_server_info_reports_the_digests(site):
    info = whoami(call("system.serverInfo"))
    assert (info["access_control"], info["policy_digest"], info["modules_digest"], info["trust_digest"],
            info["cluster"]) == ("on", site.host.policy_state()[1], site.host.modules_digest, site.host.trust_digest,
                                 True)


# --- cluster mode refuses live policy changes -------------------------------------------------

def test_the_acl_module_refuses_changes_in_cluster_mode(tmp_path):
    with fakes.isolated():
        options = fakes.write_site(str(tmp_path), policy=fakes.POLICY + "<Acl acl>\n    Allow alice\n</Acl>\n",
                                   cluster="on")
        os.symlink(os.path.join(ROOT, "modules", "acl"), os.path.join(options["clarens.server.modules_path"], "acl"))
        host_mod.boot(options, None)
        alice = {"user": "alice", "auth_type": "Basic"}
        assert "staff" in whoami(call("acl.show", **alice))["groups"]
        for method, params in (("acl.set_group", ("staff", ["eve"])), ("acl.delete_entry", ("unit",)),
                               ("acl.set_entry", ("unit", {"allow": ["eve"]}))):
            with pytest.raises(xmlrpc.client.Fault) as info:
                whoami(call(method, *params, **alice))
            assert info.value.faultCode == READ_ONLY == -32003 and "cluster = on" in info.value.faultString


# --- the HAProxy configuration ------------------------------------------------------------

def test_the_shipped_haproxy_configuration_is_the_templates_rendering():
    with open(os.path.join(ROOT, "conf", "haproxy", "clarens.cfg")) as f:
        assert f.read() == cluster.haproxy_config(cluster.EXAMPLE_SERVERS)


def test_the_haproxy_configuration_retries_only_what_may_run_twice():
    """The client pool's rule: L7 retries (a host that closed without answering, timed out, 502/503)
    only for requests the client marked idempotent; for the rest, only a connection never made."""
    text = cluster.haproxy_config([("a", "10.0.0.1:80")], source="10.0.0.2")
    lines = [line.strip() for line in text.splitlines()]
    assert [x for x in lines if x.startswith("retry-on")] == ["retry-on conn-failure empty-response response-timeout "
                                                              "502 503"]
    assert "http-request disable-l7-retry unless { req.hdr(%s) -m str 1 }" % IDEMPOTENT_HEADER in lines
    for header in ("X-Clarens-Client-DN", "X-Forwarded-For", "X-Forwarded-Proto"):
        assert lines.index("http-request del-header " + header) < min(
            i for i, x in enumerate(lines) if x.startswith("http-request set-header"))
    assert "server a 10.0.0.1:80" in lines
    server = next(x.split() for x in lines if x.startswith("default-server"))
    # A host is taken out on its first failed live response, and checked every 500 ms until it is back.
    for option in ("observe layer7", "error-limit 1", "on-error mark-down", "fastinter 500ms", "downinter 500ms",
                   "source 10.0.0.2"):
        assert option in " ".join(server), option
    # Every digest the hosts report is checked, from the environment HAProxy refuses to start without.
    for name, key in (("Policy", "POLICY"), ("Modules", "MODULES"), ("Trust", "TRUST")):
        assert 'hdr X-Clarens-Expect-%s "${CLARENS_%s_DIGEST}"' % (name, key) in text
        assert "!defined(CLARENS_%s_DIGEST)" % key in text
    assert set(cluster.environment({"policy_digest": "p", "modules_digest": "m", "trust_digest": "t"}).items()) == \
        {("CLARENS_POLICY_DIGEST", "p"), ("CLARENS_MODULES_DIGEST", "m"), ("CLARENS_TRUST_DIGEST", "t")}


def test_maxconn_fits_the_descriptor_limit():
    """Two descriptors per connection and a reserve: the default HAProxy can start with."""
    assert cluster.default_maxconn(3, 20000) == (20000 - cluster.FD_RESERVE - 6) // 2
    assert cluster.default_maxconn(3, 1 << 20) == cluster.MAXCONN == 20000
    assert cluster.default_maxconn(3, resource.RLIM_INFINITY) == cluster.MAXCONN
    assert cluster.default_maxconn(3, 100) == 1
    assert cluster.default_maxconn(3) == cluster.default_maxconn(3, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    out = io.StringIO()
    assert cluster.main(["haproxy", "--server", "a=10.0.0.1:80", "--maxconn", "500", "--foreground"], out) == 0
    text = out.getvalue()
    assert text.count("maxconn 500\n") == 2 and "daemon" not in text and "log stdout format raw local0" in text


CLUSTER_FILE = """[hosts]
a = 10.0.0.11:80
B = 10.0.0.12:8080
c6 = [2001:db8::13]:80

[fronts]
front1 = 10.0.0.2
"""


def test_the_cluster_file_names_the_hosts_with_their_ports(tmp_path):
    path = tmp_path / "cluster.conf"
    path.write_text(CLUSTER_FILE)
    found = cluster.read_cluster(str(path))
    assert found.hosts == [("a", "10.0.0.11", 80), ("B", "10.0.0.12", 8080), ("c6", "2001:db8::13", 80)]
    assert found.fronts == [("front1", "10.0.0.2")]
    out = io.StringIO()
    assert cluster.main(["list", "--cluster", str(path)], out) == 0
    assert out.getvalue() == ("host a 10.0.0.11 80 http://10.0.0.11:80/clarens/\n"
                              "host B 10.0.0.12 8080 http://10.0.0.12:8080/clarens/\n"
                              "host c6 2001:db8::13 80 http://[2001:db8::13]:80/clarens/\nfront front1 10.0.0.2\n")
    out = io.StringIO()
    assert cluster.main(["haproxy", "--cluster", str(path)], out) == 0
    assert "    server B 10.0.0.12:8080\n    server c6 [2001:db8::13]:80\n" in out.getvalue()
    # The shipped example is one.
    assert [h[0] for h in cluster.read_cluster(os.path.join(ROOT, "conf", "cluster", "cluster.conf")).hosts] == \
        [name for name, _ in cluster.EXAMPLE_SERVERS]


@pytest.mark.parametrize("text, says", [
    ("[hosts]\na = 10.0.0.1\n", "[hosts] a: expected ADDRESS:PORT, not '10.0.0.1'"),
    ("[hosts]\na = 10.0.0.1:http\n", "expected ADDRESS:PORT"),
    ("[fronts]\nf = 10.0.0.2\n", "needs a [hosts] section"),
    ("[hosts]\na = 10.0.0.1:80\n[others]\n", "needs a [hosts] section"),
    ("hosts = a\n", "File contains no section headers"),
])
def test_a_broken_cluster_file_is_named(tmp_path, text, says):
    path = tmp_path / "cluster.conf"
    path.write_text(text)
    with pytest.raises(config_mod.ConfigError) as info:
        cluster.read_cluster(str(path))
    assert str(path) in str(info.value) and says in str(info.value)
