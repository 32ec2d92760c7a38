# SPDX-License-Identifier: Apache-2.0
"""XML-RPC and JSON-RPC through the real Apache + mod_python: discovery, echo, multicall, faults."""

import datetime
import json
import re
import xmlrpc.client

import pytest

from clarens import faults
from tests.helpers import basic_header

SHIPPED = {
    "echo.echo": ["%s,%s" % (t, t) for t in
                  ("string", "int", "boolean", "double", "dateTime.iso8601", "base64", "array", "struct", "nil")],
    "system.listMethods": ["array"], "system.methodSignature": ["array,string", "string,string"],
    "system.methodHelp": ["string,string"], "system.multicall": ["array,array"],
    "system.getCapabilities": ["struct"], "system.listModules": ["array"], "system.whoami": ["struct"],
    "system.mayCall": ["struct,array"], "system.serverInfo": ["struct"],
    "validator1.arrayOfStructsTest": ["int,array"], "validator1.countTheEntities": ["struct,string"],
    "validator1.easyStructTest": ["int,struct"], "validator1.echoStructTest": ["struct,struct"],
    "validator1.manyTypesTest": ["array,int,boolean,string,double,dateTime.iso8601,base64"],
    "validator1.moderateSizeArrayCheck": ["string,array"], "validator1.nestedStructTest": ["int,struct"],
    "validator1.simpleStructReturnTest": ["struct,int"],
}


def test_every_shipped_method_is_discoverable_with_signature_and_help(proxy):
    methods = proxy.system.listMethods()
    assert set(SHIPPED) <= set(methods) and methods == sorted(methods)
    for name, sigs in SHIPPED.items():
        assert proxy.system.methodSignature(name) == [s.split(",") for s in sigs], name
        assert len(proxy.system.methodHelp(name)) > 20, name
    assert proxy.system.methodSignature("probe.add") == "undef"
    assert "Return A + B" in proxy.system.methodHelp("probe.add")


def test_discovery_page_lists_modules_methods_signatures_and_help(raw):
    resp = raw.request("GET", content_type=None)
    page = resp.body.decode()
    assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/html")
    for name in SHIPPED:
        assert name in page
    assert "validator1.manyTypesTest(int, boolean, string, double, dateTime.iso8601, base64) &rarr; array" in page
    assert "Return VALUE unchanged." in page
    # failed modules are listed; why they failed (often a path) only for administrators
    assert "broken" in page and "an administrator sees why" in page and "No module named" not in page
    # Process ids are for the admin group: an anonymous caller is told nothing, not "process -".
    assert "process" not in page.split("Call these methods")[0].split("Framework")[1]
    admin = raw.request("GET", content_type=None, headers=basic_header(raw.inst, "admin")).body.decode()
    assert re.search(r"Framework [^,<]+, process \d+\. Call these methods", admin)


@pytest.mark.parametrize("value", [
    "", "hello", "<&>\"' äöü 𝄞", 0, -2**31, 2**31 - 1, True, False, 3.25, -0.0, 1e-300,
    datetime.datetime(2026, 11, 21, 16, 5, 0), b"\x00\x01\xfe\xff" * 100, None, [], {}, [1, "two", 3.0, [None]],
    {"nested": {"list": [True, {"deep": b"bytes"}]}, "date": datetime.datetime(1970, 1, 1)},
])
def test_echo_returns_every_xmlrpc_type_unchanged(proxy, value):
    result = proxy.echo.echo(value)
    assert result == value and type(result) is type(value)


def test_echo_of_64_bit_integer_via_i8(raw):
    status, result = raw.xmlrpc("<methodCall><methodName>echo.echo</methodName><params>"
                                "<param><value><i8>-9000000000</i8></value></param></params></methodCall>")
    assert status == 200 and result == -9000000000


def test_validator1_suite(proxy):
    v = proxy.validator1
    assert v.arrayOfStructsTest([{"moe": 1, "larry": 2, "curly": 3}, {"moe": 0, "larry": 0, "curly": -4}]) == -1
    assert v.countTheEntities("<<>&'\"\"") == {"ctLeftAngleBrackets": 2, "ctRightAngleBrackets": 1,
                                              "ctAmpersands": 1, "ctApostrophes": 1, "ctQuotes": 2}
    assert v.easyStructTest({"moe": 1, "larry": 20, "curly": 300}) == 321
    assert v.echoStructTest({"a": {"b": [1]}}) == {"a": {"b": [1]}}
    when = datetime.datetime(2000, 4, 1, 12, 0, 0)
    assert v.manyTypesTest(7, True, "s", 1.5, when, b"\x01") == [7, True, "s", 1.5, when, b"\x01"]
    strings = ["s%d" % i for i in range(150)]
    assert v.moderateSizeArrayCheck(strings) == "s0s149"
    calendar = {"2000": {"03": {"31": {}}, "04": {"01": {"moe": 1, "larry": 2, "curly": 4}}}}
    assert v.nestedStructTest(calendar) == 7
    assert v.simpleStructReturnTest(3) == {"times10": 30, "times100": 300, "times1000": 3000}
    with pytest.raises(xmlrpc.client.Fault) as info:
        v.easyStructTest({"moe": 1})
    assert info.value.faultCode == faults.INVALID_PARAMS and "larry" in info.value.faultString


def test_multicall_runs_each_call_independently(proxy):
    results = proxy.system.multicall([
        {"methodName": "echo.echo", "params": ["a"]},
        {"methodName": "probe.boom", "params": []},
        {"methodName": "no.such", "params": []},
        {"methodName": "echo.echo", "params": [1, 2]},
        {"methodName": "system.multicall", "params": [[]]},
        "not a struct",
        {"methodName": "echo.echo", "params": [{"x": 1}]},
    ])
    assert results[0] == ["a"] and results[6] == [{"x": 1}]
    codes = [r["faultCode"] for r in results[1:6]]
    assert codes == [faults.APPLICATION_ERROR, faults.METHOD_NOT_FOUND, faults.INVALID_PARAMS,
                     faults.INVALID_REQUEST, faults.INVALID_REQUEST]
    assert "recursively" in results[4]["faultString"]


def test_multicall_is_usable_through_the_stdlib_helper(proxy):
    multi = xmlrpc.client.MultiCall(proxy)
    multi.echo.echo("x")
    multi.probe.fault()
    it = iter(multi())
    assert next(it) == "x"
    with pytest.raises(xmlrpc.client.Fault) as info:
        next(it)
    assert info.value.faultCode == 4242


def _fault(call):
    with pytest.raises(xmlrpc.client.Fault) as info:
        call()
    return info.value


def test_fault_codes(proxy, raw, server):
    assert raw.xmlrpc("<methodCall>")[1].faultCode == faults.PARSE_ERROR
    assert raw.xmlrpc("<methodResponse/>")[1].faultCode == faults.INVALID_REQUEST
    assert _fault(lambda: proxy.no.such()).faultCode == faults.METHOD_NOT_FOUND
    assert _fault(lambda: proxy.echo.echo()).faultCode == faults.INVALID_PARAMS
    assert _fault(lambda: proxy.validator1.simpleStructReturnTest("3")).faultCode == faults.INVALID_PARAMS
    assert _fault(lambda: proxy.probe.add(1, 2, 3)).faultCode == faults.INVALID_PARAMS
    unencodable = _fault(lambda: proxy.probe.unencodable())
    assert unencodable.faultCode == faults.INTERNAL_ERROR and "cannot be encoded" in unencodable.faultString
    own = _fault(lambda: proxy.probe.fault())
    assert (own.faultCode, own.faultString) == (4242, "the probe says no")


def test_application_error_hides_the_traceback_but_logs_it(proxy, server):
    fault = _fault(lambda: proxy.probe.boom())
    assert fault.faultCode == faults.APPLICATION_ERROR
    assert "ZeroDivisionError" in fault.faultString and "Traceback" not in fault.faultString
    incident = fault.faultString.split("incident ")[1].split(",")[0]
    with open(server.error_log) as f:
        log = f.read()
    line = next(text for text in log.splitlines() if incident in text)
    assert "demo@127.0.0.1 probe.boom raised ZeroDivisionError" in line
    assert "1 / 0" in log.split(incident, 1)[1]   # the traceback follows


def test_jsonrpc_single_batch_named_and_notifications(raw, server):
    status, out = raw.json('{"jsonrpc": "2.0", "method": "echo.echo", "params": ["hi"], "id": 1}')
    assert status == 200 and out == {"jsonrpc": "2.0", "result": "hi", "id": 1}
    status, out = raw.json(json.dumps([
        {"jsonrpc": "2.0", "method": "probe.add", "params": {"a": 2, "b": 3}, "id": "named"},
        {"jsonrpc": "2.0", "method": "echo.echo", "params": [{"k": [1, None]}], "id": 2},
        {"jsonrpc": "2.0", "method": "echo.echo", "params": ["note"]},
        {"jsonrpc": "2.0", "method": "no.such", "id": 3},
        {"jsonrpc": "2.0", "method": "probe.info", "id": 4},
        {"jsonrpc": "2.0", "method": "validator1.manyTypesTest",
         "params": [1, True, "s", 2, "2000-01-01T00:00:00", "AAE="], "id": 5},
    ]), headers=basic_header(server, "demo"))
    assert status == 200
    assert out[0] == {"jsonrpc": "2.0", "result": 5, "id": "named"}
    assert out[1]["result"] == {"k": [1, None]}
    assert out[2]["error"]["code"] == faults.METHOD_NOT_FOUND and out[2]["id"] == 3
    assert out[3]["result"]["protocol"] == "jsonrpc"
    assert out[4]["result"] == [1, True, "s", 2, "2000-01-01T00:00:00", "AAE="]
    assert raw.json('[{"jsonrpc": "2.0", "method": "echo.echo", "params": [1]}]')[0] == 204
    status, out = raw.json("{broken")
    assert status == 200 and out["error"]["code"] == faults.PARSE_ERROR and out["id"] is None
    status, out = raw.json('{"jsonrpc": "2.0", "method": "probe.add", "params": {"zz": 1}, "id": 9}')
    assert out["error"]["code"] == faults.INVALID_PARAMS and "zz" in out["error"]["message"]


def test_binary_and_dates_travel_as_text_in_json(raw):
    status, out = raw.json('{"jsonrpc": "2.0", "method": "system.serverInfo", "id": 1}')
    assert status == 200 and isinstance(out["result"]["started"], int)


def test_http_methods_and_content_types(raw):
    resp = raw.request("PUT", b"x")
    assert resp.status == 405 and resp.getheader("Allow") == "GET, HEAD, POST, OPTIONS"
    resp = raw.request("DELETE")
    assert resp.status == 405
    resp = raw.request("OPTIONS", content_type=None)
    assert resp.status == 204 and "POST" in resp.getheader("Allow")
    resp = raw.request("HEAD", content_type=None)
    assert resp.status == 200 and resp.body == b""
    resp = raw.request("POST", b"x=1", content_type="application/x-www-form-urlencoded")
    assert resp.status == 415 and b"text/xml" in resp.body
    assert raw.request("GET", content_type=None, path="/clarens/elsewhere").status == 404


def test_whoami_and_server_info(anon, proxy):
    assert anon.system.whoami() == {"identity": "anonymous", "source": "anonymous", "authenticated": False,
                                    "groups": []}
    assert proxy.system.whoami() == {"identity": "demo", "source": "basic", "authenticated": True,
                                     "groups": ["users"]}
    info = proxy.system.serverInfo()
    assert info["framework_version"] and info["api_version"] == 1
    assert info["python_version"].startswith("3.11") and info["mod_python_version"].startswith("3.5")
    assert info["startup_init_calls"] == 5   # acl, burner, probe, counter and initfail define _startup_init
    caps = proxy.system.getCapabilities()
    assert {"introspection", "system.multicall", "faults_interop"} <= set(caps)
    assert caps["faults_interop"]["specVersion"] == 20010516


def test_may_call_says_what_the_policy_lets_the_caller_call(anon, proxy):
    """What the burner page asks to offer only what the caller may do; the discovery page's marks."""
    names = ["echo.echo", "burner.burn", "burner.upload", "acl.show", "no.such"]
    assert anon.system.mayCall(names) == {"echo.echo": True, "burner.burn": False, "burner.upload": False,
                                          "acl.show": False, "no.such": False}
    assert proxy.system.mayCall(names) == {"echo.echo": True, "burner.burn": True, "burner.upload": True,
                                           "acl.show": False, "no.such": False}
    with pytest.raises(xmlrpc.client.Fault) as too_many:
        anon.system.mayCall(["echo.echo"] * 101)
    assert too_many.value.faultCode == faults.INVALID_PARAMS and "at most 100" in too_many.value.faultString
