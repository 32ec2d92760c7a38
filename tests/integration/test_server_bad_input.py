# SPDX-License-Identifier: Apache-2.0
"""Bad input through the real Apache: a precise fault, logged, and the child keeps serving."""

import json

import pytest

from clarens import faults

CALL = "<?xml version='1.0'?><methodCall><methodName>%s</methodName><params>%s</params></methodCall>"
LAUGHS = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
          + "".join('<!ENTITY lol%d "%s">' % (i, ("&lol%d;" % (i - 1) if i > 1 else "&lol;") * 10)
                    for i in range(1, 10))
          + ']><methodCall><methodName>&lol9;</methodName></methodCall>')
XXE = ('<?xml version="1.0"?><!DOCTYPE m [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
       "<methodCall><methodName>echo.echo</methodName><params><param><value>&x;</value></param></params></methodCall>")


def deep_xml(levels):
    return CALL % ("echo.echo", "<param>" + "<value><array><data>" * levels + "</data></array></value>" * levels
                   + "</param>")


XML_CASES = {
    "entity expansion": (LAUGHS, faults.PARSE_ERROR),
    "external entity": (XXE, faults.PARSE_ERROR),
    "not UTF-8": ((CALL % ("echo.echo", "<param><value>caf\xe9</value></param>")).encode("latin-1"),
                  faults.PARSE_ERROR),
    "malformed": ("<methodCall><methodName>echo.echo</methodName><params><param>", faults.PARSE_ERROR),
    "empty body": ("", faults.PARSE_ERROR),
    "too deep": (deep_xml(65), faults.PARSE_ERROR),
    "underscore method": (CALL % ("_private", ""), faults.INVALID_REQUEST),
    "underscore attribute": (CALL % ("echo._startup_init", ""), faults.INVALID_REQUEST),
    "dunder traversal": (CALL % ("echo.__class__.__init__", ""), faults.INVALID_REQUEST),
    "bad characters": (CALL % ("echo.echo;rm -rf", ""), faults.INVALID_REQUEST),
    "slash": (CALL % ("echo/echo", ""), faults.INVALID_REQUEST),
    "unlisted attribute": (CALL % ("echo.SIGNATURE_TYPES", ""), faults.METHOD_NOT_FOUND),
    "module global": (CALL % ("system.os", ""), faults.METHOD_NOT_FOUND),
    "failed module": (CALL % ("initfail.hello", ""), faults.METHOD_NOT_FOUND),
    "wrong root": ("<methodResponse><params/></methodResponse>", faults.INVALID_REQUEST),
}


@pytest.mark.parametrize("case", sorted(XML_CASES))
def test_bad_xmlrpc_gets_a_precise_fault_and_the_server_keeps_serving(raw, proxy, case):
    body, code = XML_CASES[case]
    status, fault = raw.xmlrpc(body)
    assert status == 200 and fault.faultCode == code, fault
    assert "root:" not in fault.faultString   # no file content leaked
    assert proxy.echo.echo("still here") == "still here"


def test_nesting_at_the_cap_is_fine(raw):
    status, result = raw.xmlrpc(deep_xml(64))
    assert status == 200 and isinstance(result, list)


@pytest.mark.parametrize("content_type", ["text/xml", "application/json"])
def test_oversized_body_is_refused_with_413_and_a_fault(raw, proxy, content_type):
    resp = raw.request("POST", b" " * (10485760 + 1), content_type=content_type)
    assert resp.status == 413
    text = resp.body.decode()
    assert str(faults.INVALID_REQUEST) in text and "larger than the limit" in text
    assert proxy.echo.echo(1) == 1


def test_chunked_body_gets_411_and_a_fault(raw, proxy):
    resp = raw.request("POST", iter([(CALL % ("echo.echo", "")).encode()]), headers={"Transfer-Encoding": "chunked"})
    assert resp.status == 411 and b"Content-Length" in resp.body
    assert proxy.echo.echo(1) == 1


@pytest.mark.parametrize("body, code", [
    ("caf\xe9".encode("latin-1"), faults.PARSE_ERROR),
    ('{"jsonrpc": "2.0", "method": "echo.echo", "params": [' + "[" * 80 + "]" * 80 + '], "id": 1}',
     faults.PARSE_ERROR),
    ('{"jsonrpc": "2.0", "method": "_x", "id": 1}', faults.INVALID_REQUEST),
    ('{"jsonrpc": "2.0", "method": "echo.__dict__", "id": 1}', faults.INVALID_REQUEST),
    ('{"jsonrpc": "2.0", "method": "echo.echo", "params": 5, "id": 1}', faults.INVALID_REQUEST),
    ('{"jsonrpc": "2.0", "method": "echo.echo", "params": [Infinity], "id": 1}', faults.PARSE_ERROR),
])
def test_bad_jsonrpc_gets_a_precise_error(raw, proxy, body, code):
    status, out = raw.json(body)
    assert status == 200 and out["error"]["code"] == code
    assert proxy.echo.echo(1) == 1


def test_bad_input_is_logged_but_never_as_a_crash(raw, server):
    with open(server.error_log) as f:
        f.seek(0, 2)
        mark = f.tell()
    for body, _ in XML_CASES.values():
        raw.xmlrpc(body)
    raw.json(json.dumps({"jsonrpc": "2.0", "method": "_x", "id": 1}))
    with open(server.error_log) as f:
        f.seek(mark)
        log = f.read()
    assert "Traceback" not in log and "internal error" not in log and "Segmentation" not in log
    assert "fault -32700: document type declarations are not allowed" in log
    assert "fault -32600: invalid method name '_private'" in log
