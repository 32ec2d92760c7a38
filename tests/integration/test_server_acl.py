# SPDX-License-Identifier: Apache-2.0
"""Identities and ACLs through the real Apache, over HTTPS with real client certificates."""

import base64
import json
import os
import ssl
import subprocess
import time
import xmlrpc.client

import pytest

from clarens import faults
from clarens.dev import devpki
from clarens.dev.instance import InstanceError
from tests.helpers import (
    ORG,
    ROOT,
    basic_header,
    basic_proxy,
    cert_proxy,
    make_acl_dir,
    on_many_children,
    start_instance,
)


def fault_of(call):
    with pytest.raises(xmlrpc.client.Fault) as info:
        call()
    return info.value


@pytest.fixture(scope="module")
def certs(server):
    """Extra client certificates for this session: one outside the required O, one from a foreign CA."""
    pki = server.pki_dir
    devpki.issue(pki, "outsider", "/C=UK/O=Elsewhere/CN=Outsider")
    devpki.issue(pki, "lab-alice", ORG + "/OU=Lab/CN=Alice")
    devpki.make_ca(pki, "foreign-ca", "/O=Foreign/CN=Foreign CA")
    devpki.issue(pki, "foreign", ORG + "/CN=Forged", ca="foreign-ca")
    return pki


def test_whoami_for_each_kind_of_caller(server, anon, proxy, admin):
    assert anon.system.whoami()["identity"] == "anonymous"
    assert proxy.system.whoami() == {"identity": "demo", "source": "basic", "authenticated": True, "groups": ["users"]}
    assert cert_proxy(server, "demo-user").system.whoami() == {
        "identity": ORG + "/CN=Demo User", "source": "certificate", "authenticated": True, "groups": ["users"]}
    assert admin.system.whoami()["groups"] == ["admins", "users"]
    # HTTPS without a certificate is anonymous; with Basic auth it is the user.
    assert cert_proxy(server, None).system.whoami()["identity"] == "anonymous"


def test_shipped_policy_anonymous_gets_only_introspection_and_echo(anon, proxy, server):
    assert anon.echo.echo("x") == "x" and "echo.echo" in anon.system.listMethods()
    for call in (lambda: anon.validator1.easyStructTest({"moe": 1, "larry": 1, "curly": 1}),
                 lambda: anon.acl.show()):
        fault = fault_of(call)
        assert fault.faultCode == faults.ACCESS_DENIED and "anonymous may not call" in fault.faultString
    # The demo user's group may use validator1 but not administration.
    user = cert_proxy(server, "demo-user")
    assert user.validator1.easyStructTest({"moe": 1, "larry": 2, "curly": 3}) == 6
    assert fault_of(lambda: user.acl.show()).faultCode == faults.ACCESS_DENIED
    with open(server.error_log) as f:
        log = f.read()
    assert "%s/CN=Demo User@127.0.0.1 'acl.show': fault -32001: access denied" % ORG in log


def test_certificate_outside_the_required_fields_is_refused(server, certs):
    fault = fault_of(lambda: cert_proxy(server, "outsider").system.whoami())
    assert fault.faultCode == faults.ACCESS_DENIED and "must have O=Clarens Demo" in fault.faultString
    assert cert_proxy(server, "lab-alice").system.whoami()["identity"] == ORG + "/OU=Lab/CN=Alice"


def test_certificate_from_an_unknown_ca_does_not_get_through_tls(server, certs):
    with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
        cert_proxy(server, "foreign").system.whoami()


def test_basic_user_names_that_could_pass_for_a_dn_are_refused(server, raw):
    name = ORG + "/CN=Demo Administrator"
    subprocess.run(["htpasswd", "-bB", os.path.join(server.state_dir, "htpasswd"), name, "pw"], check=True,
                   capture_output=True)
    token = base64.b64encode(("%s:pw" % name).encode()).decode()
    status, fault = raw.xmlrpc(xmlrpc.client.dumps((), "system.whoami"), headers={"Authorization": "Basic " + token})
    assert status == 403 and fault.faultCode == faults.ACCESS_DENIED and "reserved" in fault.faultString


def test_wrong_basic_password_is_refused(server):
    proxy = xmlrpc.client.ServerProxy(server.url.replace("http://", "http://demo:wrong@"))
    with pytest.raises(xmlrpc.client.ProtocolError) as info:
        proxy.system.whoami()
    assert info.value.errcode == 401


def test_denied_calls_inside_multicall_and_json_batch_while_others_succeed(anon, raw, server):
    results = anon.system.multicall([{"methodName": "echo.echo", "params": [1]},
                                     {"methodName": "acl.show", "params": []},
                                     {"methodName": "validator1.simpleStructReturnTest", "params": [2]},
                                     {"methodName": "system.whoami", "params": []}])
    assert results[0] == [1] and results[3][0]["identity"] == "anonymous"
    assert results[1]["faultCode"] == results[2]["faultCode"] == faults.ACCESS_DENIED
    status, out = raw.json(json.dumps([
        {"jsonrpc": "2.0", "method": "echo.echo", "params": [1], "id": 1},
        {"jsonrpc": "2.0", "method": "acl.show", "id": 2},
        {"jsonrpc": "2.0", "method": "validator1.simpleStructReturnTest", "params": [2], "id": 3}]),
        headers=basic_header(server, "demo"))
    assert out[0]["result"] == 1 and out[1]["error"]["code"] == faults.ACCESS_DENIED
    assert out[2]["result"]["times10"] == 20


def test_acl_check_explains_the_decision(admin):
    out = admin.acl.check("demo", "acl.set_entry")
    assert out["allowed"] is False and out["entry"] == "acl" and out["groups"] == ["users"]
    assert "no allow rule matches" in out["reason"] and "00-defaults.acl" in out["reason"]
    out = admin.acl.check(ORG + "/CN=Demo Administrator", "acl.set_entry")
    assert out["allowed"] is True and "group admins" in out["reason"]


def test_acl_change_is_enforced_by_every_child_at_its_next_request(server, admin):
    def call(proxy):
        out = proxy.system.multicall(
            [{"methodName": "probe.info", "params": []}, {"methodName": "probe.pid", "params": []}])
        return out[1][0], isinstance(out[0], list)

    def probe(n):
        return on_many_children(lambda: xmlrpc.client.ServerProxy(server.url), call, n)

    before = probe(48)
    assert all(ok for _, ok in before)
    warm = {pid for pid, _ in before}
    assert len(warm) > 1
    try:
        assert admin.acl.set_entry("probe.info", {"allow": ["authenticated"]}) is True
        after = probe(48)
        assert not any(ok for _, ok in after)
        assert warm & {pid for pid, _ in after}, "children that cached the old policy must enforce the new one"
    finally:
        admin("close")()   # its kept-alive connection may have outlived KeepAliveTimeout meanwhile
        admin.acl.delete_entry("probe.info")
    assert all(ok for _, ok in probe(16))
    audit = admin.acl.audit(5)
    assert [r["what"]["action"] for r in audit[-2:]] == ["set_entry", "delete_entry"]
    assert audit[-1]["who"] == ORG + "/CN=Demo Administrator"


def test_groups_prefixes_windows_and_orders_through_the_acl_module(server, admin, anon, certs):
    tester = basic_proxy(server, "demo")
    alice = cert_proxy(server, "lab-alice")
    now = time.time()
    try:
        admin.acl.set_group("testers", ["demo", ORG + "/OU=Lab/"])
        assert tester.system.whoami()["groups"] == ["testers", "users"]
        admin.acl.set_entry("probe", {"order": "allow,deny", "allow_groups": ["testers"], "deny": [ORG + "/OU=Lab/"]})
        assert tester.probe.add(1, 2) == 3
        assert fault_of(lambda: alice.probe.add(1, 2)).faultCode == faults.ACCESS_DENIED       # deny wins
        admin.acl.set_entry("probe", {"order": "deny,allow", "allow_groups": ["testers"], "deny": [ORG + "/OU=Lab/"]})
        assert alice.probe.add(1, 2) == 3                                                     # allow wins
        assert anon.probe.add(1, 2) == 3                                                      # default allow
        admin.acl.set_entry("probe.add", {"allow": ["anonymous"], "not_after": now - 60})     # expired: ignored
        assert fault_of(lambda: tester.probe.fault()).faultCode == 4242
        admin.acl.set_entry("probe.add", {"deny": ["anonymous"], "order": "deny,allow", "not_before": now - 60})
        assert fault_of(lambda: anon.probe.add(1, 2)).faultCode == faults.ACCESS_DENIED       # method entry wins
        assert tester.probe.add(1, 2) == 3
        fault = fault_of(lambda: admin.acl.set_entry("probe", {"allow_groups": ["nosuchgroup"]}))
        assert fault.faultCode == faults.INVALID_PARAMS and "undefined group" in fault.faultString
        fault = fault_of(lambda: admin.acl.set_group("testers", []))   # still named by an entry
        assert fault.faultCode == faults.INVALID_PARAMS
        # What the ACL files could not hold is refused, so that clarens-acl dump keeps every live change.
        fault = fault_of(lambda: admin.acl.set_entry("probe", {"allow": ["demo"], "not_after": 99999999999999.0}))
        assert fault.faultCode == faults.INVALID_PARAMS and "between years 1 and 9999" in fault.faultString
        for member in ("#demo", "demo # not a comment"):
            fault = fault_of(lambda member=member: admin.acl.set_group("testers", [member]))
            assert fault.faultCode == faults.INVALID_PARAMS and "would begin a comment" in fault.faultString
    finally:
        for target in ("probe.add", "probe"):
            try:
                admin.acl.delete_entry(target)
            except xmlrpc.client.Fault:
                pass
        admin.acl.set_group("testers", ["tester"])
    # Restored: the test file's open entry for probe is gone too, so only admins may call it now.
    assert fault_of(lambda: anon.probe.add(1, 1)).faultCode == faults.ACCESS_DENIED
    admin.acl.set_entry("probe", {"allow": ["anonymous", "authenticated"]})


def test_acl_tdb_is_readable_only_by_its_owner(server):
    path = os.path.join(server.db_dir, "acl.tdb")
    assert os.stat(path).st_mode & 0o777 == 0o600
    out = subprocess.run(["runuser", "-u", "nobody", "--", "cat", path], capture_output=True)
    assert out.returncode != 0 and b"Permission denied" in out.stderr


def test_command_line_shows_checks_reloads_and_dumps(server, admin):
    def acl(*args):
        return subprocess.run(["/usr/bin/python3", "-m", "clarens.acl", "--db-dir", server.db_dir,
                               "--acl-dir", server.server_config().acl_dir, *args],
                              capture_output=True, text=True, cwd=ROOT)
    assert acl("validate").returncode == 0
    out = acl("check", "demo", "acl.show")
    assert out.returncode == 1 and out.stdout.startswith("DENY: demo may not call acl.show")
    admin.acl.set_entry("validator1.easyStructTest", {"allow": ["anonymous"]})
    assert "<Acl validator1.easyStructTest>" in acl("dump").stdout
    assert "validator1.easyStructTest" in acl("show").stdout
    out = acl("reload")
    assert out.returncode == 0 and "loaded" in out.stdout
    assert "validator1.easyStructTest" not in acl("dump").stdout   # the files replaced the live change
    assert acl("audit", "1").stdout.count("\n") == 1


def test_broken_acl_file_stops_the_start_with_file_and_line(tmp_path):
    broken = tmp_path / "zz-broken.acl"
    broken.write_text("<Acl burner>\n    Allow demo\n    Ordr allow,deny\n</Acl>\n")
    with pytest.raises(InstanceError) as info:
        start_instance("clarens-broken-acl-", options={"clarens.server.acl_dir": make_acl_dir(str(broken))})
    assert "refusing to start" in str(info.value) and "zz-broken.acl:3" in str(info.value)
    assert "unknown directive 'ordr'" in str(info.value)


def test_policy_broken_after_start_fails_closed_at_the_next_start(tmp_path):
    acl_dir = make_acl_dir()
    inst = start_instance("clarens-failclosed-", options={"clarens.server.acl_dir": acl_dir})
    try:
        anon = xmlrpc.client.ServerProxy(inst.url)
        assert anon.echo.echo(1) == 1
        with open(os.path.join(acl_dir, "zz.acl"), "w") as f:
            f.write("<Acl x>\n")
        inst.graceful()   # a new server start: the files are loaded again and fail
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                anon.echo.echo(1)
            except xmlrpc.client.Fault as fault:
                assert fault.faultCode == faults.ACCESS_DENIED and "failed to load" in fault.faultString
                break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail("the broken policy was not refused")
        with open(inst.error_log) as f:
            assert "zz.acl:1: <Acl x> is never closed; every call will be refused" in f.read()
    finally:
        inst.stop()
