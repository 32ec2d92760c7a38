# SPDX-License-Identifier: Apache-2.0
"""The client library (clarens.client) against the real Apache instance: both protocols, every kind of
credential, faults and transport errors, keep-alive, threads, uploads, and local: giving what https gives."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import threading
import xmlrpc.client

import pytest

from clarens import Fault, resumable
from clarens.client import TransportError, connect
from clarens.client import transports as transports_mod
from clarens.dev import devpki
from tests.helpers import ROOT, free_port, make_acl_dir, make_iso, shipped_modules

PROTOCOLS = ("xmlrpc", "jsonrpc")


def demo(server, protocol="xmlrpc", **kw):
    return connect(server.url, protocol=protocol, user="demo", password=devpki.credentials(server.state_dir)["demo"],
                   **kw)


def by_cert(server, name="demo-user", protocol="xmlrpc", **kw):
    pki = server.pki_dir
    return connect(server.tls_url, protocol=protocol, ca=os.path.join(pki, "ca.crt"),
                   cert=os.path.join(pki, name + ".crt"), key=os.path.join(pki, name + ".key"), **kw)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_each_credential_is_the_identity_the_host_sees(server, protocol):
    with connect(server.url, protocol=protocol) as anon:
        assert anon.system.whoami()["identity"] == "anonymous"
    with demo(server, protocol) as svc:          # a password: in a session (tests/integration/test_client_sessions.py)
        me = svc.system.whoami()
        assert me == {"identity": "demo", "source": "basic", "authenticated": True, "groups": ["users"],
                      "session": me["session"]}
    with by_cert(server, "demo-admin", protocol) as svc:
        me = svc.call("system.whoami")
        assert me["source"] == "certificate" and me["identity"].endswith("/CN=Demo Administrator")
        assert "admins" in me["groups"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_attribute_and_explicit_calls_round_trip_values(server, protocol):
    value = [1, -2, "café ☃", True, None, 2.5, {"nested": [[], {}, ["x"]]}]
    with demo(server, protocol) as svc:
        assert svc.echo.echo(value) == value
        assert svc.call("echo.echo", value) == value
        if protocol == "xmlrpc":   # XML-RPC's own types
            assert svc.echo.echo(b"\x00\xff") == b"\x00\xff"
            when = datetime.datetime(2026, 12, 1, 12, 30, 5)
            assert svc.echo.echo(when) == when


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_faults_are_clarens_faults_with_code_and_message(server, protocol):
    with connect(server.url, protocol=protocol) as anon:
        with pytest.raises(Fault) as unknown:
            anon.nosuch.method()
        assert unknown.value.code == -32601 and "nosuch.method" in unknown.value.message
        with pytest.raises(Fault) as denied:
            anon.acl.show()
        assert denied.value.code == -32001
        with pytest.raises(Fault) as wrong:
            anon.system.methodHelp(1, 2, 3)
        assert wrong.value.code == -32602


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_batch_and_multicall_give_each_call_its_result_or_fault(server, protocol):
    calls = [("echo.echo", [1]), ("nosuch.method", []), ("acl.show", []), ("system.whoami", [])]
    with connect(server.url, protocol=protocol) as anon:
        for results in (anon.batch(calls), anon.multicall(calls)):
            assert results[0] == 1 and results[3]["identity"] == "anonymous"
            assert isinstance(results[1], Fault) and results[1].code == -32601
            assert isinstance(results[2], Fault) and results[2].code == -32001


def _listener(handle):
    """A TCP server on a free port whose every connection is given to ``handle(sock)`` in a thread."""
    sock = socket.create_server(("127.0.0.1", 0))

    def accept():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()
    threading.Thread(target=accept, daemon=True).start()
    return sock


def test_tls_verifies_the_ca_and_the_host_name(server, tmp_path):
    pki = str(tmp_path)
    for name in ("ca.crt", "ca.key"):
        shutil.copy(os.path.join(server.pki_dir, name), pki)
    crt, key = devpki.issue(pki, "other", "/CN=other.example", "serverAuth", alt_names="DNS:other.example")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(crt, key)

    def handshake(conn):
        try:
            with context.wrap_socket(conn, server_side=True):
                pass
        except (OSError, ssl.SSLError):
            pass
    elsewhere = _listener(handshake)
    try:
        # the right CA, the wrong name
        with connect("https://127.0.0.1:%d/clarens/" % elsewhere.getsockname()[1],
                     ca=os.path.join(pki, "ca.crt")) as svc:
            with pytest.raises(TransportError) as e:
                svc.echo.echo(1)
        assert e.value.sent is False and "match" in str(e.value)
        assert e.value.transient is False         # refused at once, not tried again until the timeout
    finally:
        elsewhere.close()
    # the right name, a CA the client does not trust (the system's bundle by default)
    with connect(server.tls_url) as svc:
        with pytest.raises(TransportError) as e:
            svc.echo.echo(1)
    assert e.value.sent is False and "certificate verify failed" in str(e.value) and not e.value.transient


def test_a_client_certificate_needs_https(server):
    with pytest.raises(ValueError, match="https"):
        connect(server.url, cert=os.path.join(server.pki_dir, "demo-user.crt"))


def test_calls_keep_one_connection_alive_and_survive_its_close(server):
    with demo(server) as svc:
        http = svc.transports[server.url].inner        # (in a session: clarens.client.sessions)
        assert isinstance(http, transports_mod.Http)
        svc.echo.echo(1)
        first = http._idle[0]
        for n in range(5):
            assert svc.echo.echo(n) == n
        assert http._idle[0] is first and len(http._idle) == 1
        first.shutdown(socket.SHUT_RDWR)         # as the server does after KeepAliveTimeout
        assert svc.echo.echo("again") == "again"
        assert http._idle[0] is not first


def test_one_service_is_safe_to_share_between_threads(server):
    errors: list = []
    with by_cert(server) as svc:
        def work(n):
            try:
                for i in range(40):
                    value = [n, i, "t%d" % n]
                    assert svc.echo.echo(value) == value
            except Exception as e:   # reported below, with the thread's failure
                errors.append(e)
        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        http = svc.transports[server.tls_url]
        assert isinstance(http, transports_mod.Http) and 1 <= len(http._idle) <= 8
    assert errors == []


def test_upload_reports_progress_and_the_image_is_the_file(server, tmp_path):
    path = make_iso(str(tmp_path), "client-upload", 20)
    seen: list[tuple[int, int]] = []
    with demo(server) as svc:
        image = svc.upload(path, progress=lambda done, size: seen.append((done, size)))
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            assert image["sha256"] == hashlib.sha256(f.read()).hexdigest() and image["size"] == size
        assert seen[-1] == (size, size) and [d for d, _ in seen] == sorted(d for d, _ in seen)
        assert any(i["name"] == "client-upload.iso" for i in svc.burner.images())
        svc.burner.delete_image("client-upload.iso")
    with connect(server.url) as anon:                   # anonymous: refused before the body
        with pytest.raises(resumable.UploadRefused) as refused:
            anon.upload(path)
        assert refused.value.status == 403 and "anonymous" in refused.value.message


def test_uploads_need_an_http_url():
    svc = connect("ssh://nobody@127.0.0.1:1/")
    with pytest.raises(ValueError, match="http"):
        svc.upload(__file__)


# -- local: the same host in the calling process, giving what https gives ---------------------------
# Each in a process of its own, as an application would be: a local: host stays booted for the
# life of its process, which must not be this test run's.

LOCAL_CALLS = """
import sys, xmlrpc.client
from clarens import Fault
from clarens.client import TransportError, connect
(conf, protocol, calls), _ = xmlrpc.client.loads(sys.stdin.buffer.read(), use_builtin_types=True)
svc = connect("local:" + conf, protocol=protocol)
out = [svc.system.whoami()["identity"]]
for method, params in calls:
    try:
        out.append(svc.call(method, *params))
    except Fault as fault:
        out.append(["fault", fault.code])
try:
    connect("local:" + conf + ".other")
except TransportError as e:
    out.append(str(e))
sys.stdout.write(xmlrpc.client.dumps((out,), allow_none=True))
"""

VALIDATOR1 = [
    ("validator1.arrayOfStructsTest", [[{"curly": 3, "larry": 1, "moe": 2}, {"curly": -4, "larry": 0, "moe": 9}]]),
    ("validator1.countTheEntities", ["<a href='x'>&\"</a>"]),
    ("validator1.easyStructTest", [{"moe": 1, "larry": 2, "curly": 3}]),
    ("validator1.echoStructTest", [{"a": [1, {"b": "c"}], "d": 2.5}]),
    ("validator1.manyTypesTest", [7, True, "s", 1.5, datetime.datetime(2026, 1, 2, 3, 4, 5), b"\x01\x02"]),
    ("validator1.moderateSizeArrayCheck", [["first"] + ["x"] * 50 + ["last"]]),
    ("validator1.nestedStructTest", [{"2000": {"04": {"01": {"moe": 1, "larry": 2, "curly": 3}}}}]),
    ("validator1.simpleStructReturnTest", [5]),
    ("validator1.easyStructTest", [{"moe": "one"}]),           # a fault, the same one both ways
]


@pytest.fixture(scope="module")
def local_conf(tmp_path_factory):
    """A configuration for a local: host: the shipped modules and the test instances' ACL files,
    with databases of its own."""
    directory = tmp_path_factory.mktemp("local-host")
    path = directory / "clarens.conf"
    path.write_text("[server]\nmodules_path = %s\nacl_dir = %s\ndb_dir = %s\nsession_db_dir = %s\nlog_level = error\n"
                    % (shipped_modules(), make_acl_dir(), directory / "db", directory / "db"))
    return str(path)


def _local(conf: str, protocol: str, calls: list) -> list:
    request = xmlrpc.client.dumps((conf, protocol, calls), allow_none=True).encode()
    run = subprocess.run(["/usr/bin/python3", "-c", LOCAL_CALLS], input=request, capture_output=True, cwd=ROOT,
                         timeout=60)
    assert run.returncode == 0, run.stderr.decode()
    return xmlrpc.client.loads(run.stdout, use_builtin_types=True)[0][0]


def _outcome(call):
    try:
        return call()
    except Fault as fault:
        return ["fault", fault.code]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_local_and_https_give_the_same_results_for_validator1(server, local_conf, protocol):
    calls = [(m, p) for m, p in VALIDATOR1        # dateTime and base64 are XML-RPC's own
             if protocol == "xmlrpc" or m != "validator1.manyTypesTest"]
    identity, *here, refused = _local(local_conf, protocol, calls)
    assert identity == "unix:%s" % pwd.getpwuid(os.geteuid()).pw_name
    with by_cert(server, protocol=protocol) as remote:
        there = [_outcome(lambda method=method, params=params: remote.call(method, *params))
                 for method, params in calls]
    assert here == there and here[-1] == ["fault", -32602]
    # one local host per process: a second configuration is refused
    assert "already runs a local host from %s" % local_conf in refused


def test_the_command_line_calls_and_lists_from_any_directory(server, tmp_path):
    env = dict(os.environ, CLARENS_PASSWORD=devpki.credentials(server.state_dir)["demo"],
               PATH="/nonexistent:" + os.environ.get("PATH", ""))
    clarens = os.path.join(ROOT, "bin", "clarens")

    def run(*args):
        return subprocess.run([clarens, *args], capture_output=True, text=True, cwd=str(tmp_path), env=env,
                              timeout=60)
    ok = run("--user", "demo", "call", server.url, "echo.echo", '{"a": [1, 2]}')
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {"a": [1, 2]}
    words = run("--protocol", "jsonrpc", "call", server.url, "echo.echo", "plain words")   # not JSON: a string
    assert words.returncode == 0 and json.loads(words.stdout) == "plain words"
    who = run("--user", "demo", "call", server.url, "system.whoami")
    assert json.loads(who.stdout)["identity"] == "demo"
    fault = run("call", server.url, "acl.show")
    assert fault.returncode == 1 and fault.stderr.startswith("fault -32001:")
    down = run("--timeout", "1", "call", "http://127.0.0.1:%d/clarens/" % free_port(), "echo.echo", "1")
    assert down.returncode == 3 and "refused" in down.stderr
    unknown = run("call", "no-such-service", "echo.echo")
    assert unknown.returncode == 2 and "no-such-service" in unknown.stderr
    methods = run("methods", server.url, "echo.echo")
    assert methods.returncode == 0 and "echo.echo(string)" in methods.stdout and "unchanged" in methods.stdout
    # Options after the command too (./run call passes what follows it), without undoing those before it.
    after = run("--protocol", "jsonrpc", "call", "--user", "demo", server.url, "system.whoami", "--timeout", "20")
    assert after.returncode == 0 and json.loads(after.stdout)["identity"] == "demo", after.stderr
    listed = run("methods", server.url, "--user", "demo", "echo.echo")
    assert listed.returncode == 0 and "echo.echo(string)" in listed.stdout
    no_terminal = subprocess.run([clarens, "call", "--user", "demo", server.url, "system.whoami"], cwd=str(tmp_path),
                                 capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
                                 env={**{k: v for k, v in env.items() if k != "CLARENS_PASSWORD"},
                                      "XDG_CACHE_HOME": str(tmp_path / "no-tokens")})     # no session kept
    assert no_terminal.returncode == 2 and "set CLARENS_PASSWORD" in no_terminal.stderr, no_terminal.stderr


def test_a_local_call_prints_its_result_and_nothing_else(tmp_path):
    """The issue: every local: call printed "WARNING ... images_dir ... does not exist" (the shipped
    configuration's log level, the burner module's missing images directory)."""
    conf = tmp_path / "clarens.conf"
    conf.write_text("[server]\nmodules_path = %s\nacl_dir = %s\nsession_db_dir = %s\nlog_level = warning\n"
                    "[module:burner]\nimages_dir = %s\nmax_image_mb = 100\n"
                    % (shipped_modules(), make_acl_dir(), tmp_path / "db", tmp_path / "no-such-images"))
    out = subprocess.run([os.path.join(ROOT, "bin", "clarens"), "call", "local:%s" % conf, "echo.echo", "hi"],
                         capture_output=True, text=True, cwd=str(tmp_path), timeout=60)
    assert out.returncode == 0 and json.loads(out.stdout) == "hi" and out.stderr == "", out.stderr


def test_the_burner_command_line_shares_the_option_names_and_names_no_checkout(server, tmp_path):
    burn = [os.path.join(ROOT, "bin", "clarens-burn")]
    help_text = subprocess.run(burn + ["--help"], capture_output=True, text=True, cwd=str(tmp_path)).stdout
    assert "--ca CA" in help_text and "--cacert" not in help_text and "127.0.0.1:8080" not in help_text
    assert ":mod:" not in help_text and "``" not in help_text
    env = dict(os.environ, CLARENS_PASSWORD=devpki.credentials(server.state_dir)["demo"])
    tls = [*burn, "whoami", "--url", server.tls_url, "--ca", os.path.join(server.pki_dir, "ca.crt"), "--user", "demo"]
    out = subprocess.run(tls, capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=60)
    assert out.returncode == 0 and json.loads(out.stdout)["identity"] == "demo", out.stderr
    old_name = [*burn, "--cacert", os.path.join(server.pki_dir, "ca.crt"), "--url", server.tls_url, "whoami"]
    out = subprocess.run(old_name, capture_output=True, text=True, cwd=str(tmp_path), timeout=60)
    assert out.returncode == 0 and json.loads(out.stdout)["identity"] == "anonymous", out.stderr
    # No host named: the service "burner" of the client configuration, and the error says so.
    nowhere = subprocess.run([*burn, "drives"], capture_output=True, text=True, cwd=str(tmp_path), timeout=60,
                             env=dict(os.environ, CLARENS_CLIENT_CONF=str(tmp_path / "none.conf")))
    assert nowhere.returncode == 2 and "burner" in nowhere.stderr, nowhere.stderr


def test_a_configured_service_name_works_for_both_command_lines(server, tmp_path):
    (tmp_path / "pw").write_text(devpki.credentials(server.state_dir)["demo"] + "\n")
    (tmp_path / "client.conf").write_text("[service:dev]\nurl = %s\nprotocol = jsonrpc\nuser = demo\n"
                                          "password_file = %s\n" % (server.url, tmp_path / "pw"))
    env = dict(os.environ, CLARENS_CLIENT_CONF=str(tmp_path / "client.conf"))
    for argv in ([os.path.join(ROOT, "bin", "clarens"), "call", "dev", "system.whoami"],
                 ["/usr/bin/python3", "-m", "clarens.burner_cli", "--service", "dev", "whoami"]):
        out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["identity"] == "demo"


# A stand-in for ssh: greets as clarens.stdio does, then starts an answer and never finishes it.
HALF_ANSWER = """
import sys, time
out = sys.stdout.buffer
out.write(b"Content-Length: 0\\r\\nContent-Type: application/json\\r\\nClarens: test\\r\\n\\r\\n")
out.flush()
sys.stdin.buffer.readline()
out.write(b"Content-Length: 100\\r\\n\\r\\n{\\"jsonrpc\\": ")
out.flush()
time.sleep(60)
"""


def test_a_session_that_stops_mid_answer_times_out_and_ends():
    svc = connect("ssh://nobody@127.0.0.1/", protocol="jsonrpc", timeout=1,
                  ssh=["/usr/bin/python3", "-c", HALF_ANSWER])
    ssh = svc.transports["ssh://nobody@127.0.0.1/"]
    assert isinstance(ssh, transports_mod.Ssh)
    with pytest.raises(TransportError) as e:
        svc.echo.echo(1)
    assert e.value.sent is True and "ended inside a message body" in str(e.value)
    assert ssh._proc is None            # the session is over: the next call starts a new one
    svc.close()
