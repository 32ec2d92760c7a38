# SPDX-License-Identifier: Apache-2.0
"""The mod_python handler (clarens.handler) on a fake request and a real host booted without Apache."""

import json
import logging
import re
import sys
import types
import xmlrpc.client

import pytest

from clarens import context, serving
from clarens import host as host_mod
from clarens.faults import ACCESS_DENIED, APPLICATION_ERROR, INTERNAL_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND
from clarens.identity import ANONYMOUS
from clarens.protocol import xmlrpc as xmlrpc_codec
from clarens.web.routes import PAGE_HEADERS
from tests.unit import fakes
from tests.unit.fakes import FakeRequest

handler = fakes.import_handler()

MAX_BODY = 4096
XML = {"Content-Type": "text/xml"}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def site(tmp_path):
    """A booted host with the ``unit`` and ``system`` modules; ``calls`` is what ``unit`` saw."""
    with fakes.isolated():
        host, log = fakes.boot(str(tmp_path), max_body=str(MAX_BODY))
        yield types.SimpleNamespace(host=host, log=log, calls=host.modules["unit"].module.calls)


def xml_call(method, *params, **kw):
    body = xmlrpc.client.dumps(params, method, allow_none=True).encode()
    return FakeRequest("POST", "/clarens/", body, dict(XML, **kw.pop("headers", {})), **kw)


def json_call(value, **kw):
    return FakeRequest("POST", "/clarens/", json.dumps(value).encode(), dict(JSON, **kw.pop("headers", {})), **kw)


def serve(req):
    """Run the handler; every answer declares the length of what it sends."""
    assert handler.handler(req) == handler.apache.OK
    if req.method != "HEAD":
        assert req.content_length == len(req.output)
    return req


def xml_answer(req):
    """The result of an XML-RPC answer (xmlrpc.client.Fault for a fault)."""
    assert req.content_type == "text/xml; charset=utf-8"
    return xmlrpc.client.loads(req.output, use_builtin_types=True)[0][0]


def xml_fault(req):
    with pytest.raises(xmlrpc.client.Fault) as info:
        xml_answer(req)
    return info.value.faultCode, info.value.faultString


def json_answer(req):
    assert req.content_type == "application/json"
    return json.loads(req.output)


def rpc_fault(req):
    """(code, message) of the fault a request was answered with, in its own protocol."""
    if req.headers_in["Content-Type"] == "text/xml":
        return xml_fault(req)
    error = json_answer(req)["error"]
    return error["code"], error["message"]


def rpc(method, protocol, **kw):
    """A call of ``method`` without parameters in either protocol."""
    if protocol == "xmlrpc":
        return xml_call(method, **kw)
    return json_call({"jsonrpc": "2.0", "method": method, "id": 1}, **kw)


PROTOCOLS = ["xmlrpc", "jsonrpc"]


# --- RPC ---------------------------------------------------------------------------

def test_an_xml_rpc_call_is_answered(site):
    value = {"a": [1, "x", None, True], "b": b"\x00\xff"}
    req = serve(xml_call("unit.echo", value))
    assert req.status == 200 and xml_answer(req) == value
    assert site.calls == [("echo", "unit.echo", "xmlrpc", "anonymous")]
    assert site.log.records == []


def test_a_json_rpc_call_is_answered(site):
    req = serve(json_call({"jsonrpc": "2.0", "method": "unit.echo", "params": {"value": [1, {"k": None}]}, "id": "q"}))
    assert req.status == 200 and json_answer(req) == {"jsonrpc": "2.0", "result": [1, {"k": None}], "id": "q"}
    assert site.calls == [("echo", "unit.echo", "jsonrpc", "anonymous")]


@pytest.mark.parametrize("content_type, protocol", [
    ("text/xml; charset=utf-8", "xmlrpc"), ("Application/XML", "xmlrpc"),
    ("application/json; charset=UTF-8", "jsonrpc"), ("application/json-rpc", "jsonrpc"),
])
def test_the_content_type_chooses_the_protocol_whatever_its_case_and_parameters(site, content_type, protocol):
    req = xml_call("unit.echo", 1) if protocol == "xmlrpc" else json_call(
        {"jsonrpc": "2.0", "method": "unit.echo", "params": [1], "id": 1})
    req.headers_in["Content-Type"] = content_type
    serve(req)
    assert req.status == 200 and site.calls == [("echo", "unit.echo", protocol, "anonymous")]


def test_a_json_rpc_notification_is_answered_with_204_and_no_body(site):
    req = serve(json_call({"jsonrpc": "2.0", "method": "unit.note", "params": ["hi"]}))
    assert req.status == 204 and req.output == b"" and req.content_length == 0
    assert site.calls == [("note", "hi")]


def test_a_json_rpc_batch_is_answered_element_by_element(site):
    req = serve(json_call([
        {"jsonrpc": "2.0", "method": "unit.echo", "params": ["a"], "id": 1},
        {"jsonrpc": "2.0", "method": "unit.note", "params": ["n"]},
        {"jsonrpc": "2.0", "method": "no.such", "id": 2},
        42,
        {"jsonrpc": "2.0", "method": "unit.fault", "id": 3},
    ]))
    out = json_answer(req)
    assert req.status == 200 and [r["id"] for r in out] == [1, 2, None, 3]
    assert out[0]["result"] == "a"
    assert [r["error"]["code"] for r in out[1:]] == [METHOD_NOT_FOUND, INVALID_REQUEST, 4242]
    assert [c[0] for c in site.calls] == ["echo", "note"]
    # Each fault once: the dispatcher's two, and the malformed element the codec reported.
    assert [len(site.log.faults(c)) for c in (METHOD_NOT_FOUND, INVALID_REQUEST, 4242)] == [1, 1, 1]


def test_a_batch_of_notifications_only_is_answered_with_204(site):
    req = serve(json_call([{"jsonrpc": "2.0", "method": "unit.note", "params": [t]} for t in "ab"]))
    assert req.status == 204 and req.output == b""
    assert site.calls == [("note", "a"), ("note", "b")]


def test_system_multicall_runs_sub_calls_through_the_host(site):
    req = serve(xml_call("system.multicall", [{"methodName": "unit.echo", "params": ["x"]},
                                              {"methodName": "unit.secret", "params": []},
                                              {"methodName": "unit.fault", "params": []}]))
    out = xml_answer(req)
    assert out[0] == ["x"] and [r["faultCode"] for r in out[1:]] == [ACCESS_DENIED, 4242]
    assert site.calls == [("echo", "unit.echo", "xmlrpc", "anonymous")]


def test_the_policy_decides_with_the_callers_groups(site):
    assert xml_fault(serve(xml_call("unit.secret")))[0] == ACCESS_DENIED
    assert xml_answer(serve(xml_call("unit.secret", user="alice", auth_type="Basic"))) == "for staff"
    assert xml_fault(serve(xml_call("unit.secret", user="bob", auth_type="Basic")))[0] == ACCESS_DENIED


def test_a_verified_client_certificate_is_the_callers_identity(site):
    ssl = {"SSL_CLIENT_VERIFY": "SUCCESS", "SSL_CLIENT_S_DN": "CN=Carol,O=Home,C=UK", "HTTPS": "on"}
    out = xml_answer(serve(xml_call("system.whoami", ssl=ssl)))
    assert (out["identity"], out["source"]) == ("/C=UK/O=Home/CN=Carol", "certificate")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_application_error_hides_the_traceback_unless_python_debug(site, protocol):
    code, message = rpc_fault(serve(rpc("unit.boom", protocol)))
    assert code == APPLICATION_ERROR and "Traceback" not in message and "secret" not in message
    incident = re.search(r"incident ([0-9a-f]{8})", message).group(1)
    assert "the secret detail" in site.log.text().split(incident, 1)[1]    # the traceback follows in the log
    code, message = rpc_fault(serve(rpc("unit.boom", protocol, config={"PythonDebug": "1"})))
    assert code == APPLICATION_ERROR and "ZeroDivisionError: the secret detail" in message


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_result_that_cannot_be_encoded_is_an_internal_error_logged_once(site, protocol):
    req = serve(rpc("unit.unencodable", protocol))
    code, message = rpc_fault(req)
    assert req.status == 200 and code == INTERNAL_ERROR and "cannot be encoded" in message
    assert site.calls == [("unencodable",)]
    assert len(site.log.faults(INTERNAL_ERROR)) == 1 and len(site.log.records) == 1


# --- what is refused before the dispatcher ----------------------------------------

@pytest.mark.parametrize("content_type", ["text/plain", "", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_a_post_of_another_content_type_is_415(site, content_type):
    req = serve(FakeRequest("POST", "/clarens/", b"unit.echo", {"Content-Type": content_type}))
    assert req.status == 415 and req.content_type.startswith("text/plain")
    assert req.reads == 0 and site.calls == []
    assert len(site.log.messages()) == 1 and "unsupported Content-Type" in site.log.messages()[0]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_body_without_content_length_is_411_with_a_fault_in_protocol(site, protocol):
    req = serve(rpc("unit.echo", protocol, content_length=False))
    code, message = rpc_fault(req)
    assert req.status == 411 and code == INVALID_REQUEST and "Content-Length" in message
    assert req.reads == 0 and site.calls == []
    assert len(site.log.faults(INVALID_REQUEST)) == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_body_over_max_body_is_413_with_a_fault_in_protocol_and_left_unread(site, protocol):
    req = rpc("unit.echo", protocol)
    req.headers_in["Content-Length"] = str(MAX_BODY + 1)
    req.body += b" " * (MAX_BODY + 1 - len(req.body))
    serve(req)
    code, message = rpc_fault(req)
    assert req.status == 413 and code == INVALID_REQUEST and "larger than the limit of %d" % MAX_BODY in message
    assert req.reads == 0 and site.calls == []
    assert len(site.log.faults(INVALID_REQUEST)) == 1


def test_a_body_of_exactly_max_body_is_read(site):
    req = json_call({"jsonrpc": "2.0", "method": "unit.echo", "params": ["x"], "id": 1})
    req.body += b" " * (MAX_BODY - len(req.body))
    req.headers_in["Content-Length"] = str(MAX_BODY)
    assert json_answer(serve(req))["result"] == "x"


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "https://server.example"},           # another scheme is another origin
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
])
def test_a_cross_site_post_is_refused_with_a_403_fault(site, protocol, headers):
    req = serve(rpc("unit.echo", protocol, headers=headers))
    code, message = rpc_fault(req)
    assert req.status == 403 and code == ACCESS_DENIED and message.startswith("refused: request from another")
    assert req.reads == 0 and site.calls == []
    assert len(site.log.faults(ACCESS_DENIED)) == 1


@pytest.mark.parametrize("headers, ssl", [
    ({"Origin": "http://server.example"}, {}),
    ({"Origin": "https://server.example"}, {"HTTPS": "on"}),
    ({"Sec-Fetch-Site": "same-origin"}, {}),
    ({"Sec-Fetch-Site": "none"}, {}),
])
def test_a_same_origin_post_is_served(site, headers, ssl):
    assert xml_answer(serve(xml_call("unit.echo", "x", headers=headers, ssl=ssl))) == "x"


# --- refused credentials ---------------------------------------------------------

REFUSED_USERS = ["anonymous", "authenticated", "/C=UK/O=Clarens Demo/CN=Demo Administrator"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("user", REFUSED_USERS)
def test_refused_credentials_get_one_fault_in_the_rpc_protocol(site, protocol, user):
    req = serve(rpc("unit.echo", protocol, user=user, auth_type="Basic"))
    code, message = rpc_fault(req)
    assert req.status == 200 and code == ACCESS_DENIED and message.startswith("credentials refused: ")
    assert len(req.chunks) == 1 and req.reads == 0 and site.calls == []
    assert len(site.log.messages()) == 1 and "credentials refused" in site.log.messages()[0]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_refused_credentials_get_a_plain_403_for_the_discovery_page(site, method):
    req = serve(FakeRequest(method, "/clarens/", user="anonymous", auth_type="Basic"))
    assert req.status == 403 and req.content_type.startswith("text/plain")
    assert req.output == (b"" if method == "HEAD" else b"Refused: user name 'anonymous' is reserved "
                          b"(it could pass for a DN or a special identity)\n")
    assert len(req.chunks) == (0 if method == "HEAD" else 1) and len(site.log.messages()) == 1


def test_refused_credentials_get_a_json_403_for_a_web_route(site):
    req = serve(FakeRequest("PUT", "/clarens/hello/x", b"data", user="/CN=Mallory", auth_type="Basic"))
    assert req.status == 403 and req.content_type == "application/json"
    error = json.loads(req.output)["error"]
    assert error["code"] == ACCESS_DENIED and error["message"].startswith("credentials refused: ")
    assert req.headers_out["Connection"] == "close" and req.flushed and req.reads == 0
    assert len(req.chunks) == 1 and site.calls == [] and len(site.log.messages()) == 1


def test_a_user_apache_did_not_authenticate_is_anonymous_not_refused(site):
    out = xml_answer(serve(xml_call("system.whoami", user="anonymous")))   # no ap_auth_type
    assert (out["identity"], out["source"]) == ("anonymous", "anonymous")


# --- pages, methods and places ---------------------------------------------------

def test_the_discovery_page(site):
    req = serve(FakeRequest("GET", "/clarens/"))
    page = req.output.decode()
    assert req.status == 200 and req.content_type == "text/html; charset=utf-8"
    assert {k: req.headers_out.get(k) for k in PAGE_HEADERS} == PAGE_HEADERS
    assert page.startswith("<!DOCTYPE html>") and "data-endpoint='/clarens/'" in page
    assert "unit.echo" in page and "system.listMethods" in page and "Remember TEXT." in page
    # What the caller may not call is marked: anonymous may not call unit.secret, alice may.
    marked = re.search(r"id='unit\.secret'.*?</li>", page).group()
    assert "not allowed for you" in marked
    staff = serve(FakeRequest("GET", "/clarens/", user="alice", auth_type="Basic")).output.decode()
    assert "not allowed for you" not in re.search(r"id='unit\.secret'.*?</li>", staff).group()
    # The try-it form starts on a method the caller may call (no echo.echo here), with no arguments.
    first = re.search(r"<option value='([^']*)' selected>([^<]*)</option>", page)
    assert first.group(1) == first.group(2) and not first.group(2).endswith("(not allowed)")
    assert "<textarea id=try-params rows=3 spellcheck=false>[]</textarea>" in page


def test_head_of_the_discovery_page_sends_the_headers_only(site):
    get = serve(FakeRequest("GET", "/clarens"))
    head = serve(FakeRequest("HEAD", "/clarens"))
    assert head.status == 200 and head.output == b"" and head.content_length == get.content_length > 0
    assert head.headers_out == get.headers_out


def test_the_handler_follows_its_location(site):
    req = serve(FakeRequest("GET", "/svc/rpc/", directory="/svc/rpc/"))
    assert req.status == 200 and "data-endpoint='/svc/rpc/'" in req.output.decode()


def test_options_is_204_with_allow(site):
    req = serve(FakeRequest("OPTIONS", "/clarens/"))
    assert req.status == 204 and req.output == b"" and req.headers_out["Allow"] == "GET, HEAD, POST, OPTIONS"


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "TRACE", "PROPFIND"])
def test_other_methods_are_405_with_allow(site, method):
    req = serve(FakeRequest(method, "/clarens/", b"x"))
    assert req.status == 405 and req.headers_out["Allow"] == "GET, HEAD, POST, OPTIONS"
    assert req.content_type.startswith("text/plain") and req.reads == 0


@pytest.mark.parametrize("uri", ["/clarens/nothing", "/clarens/nothing/deeper", "/elsewhere/"])
def test_an_unknown_place_is_404(site, uri):
    req = serve(FakeRequest("GET", uri))
    assert req.status == 404 and req.content_type.startswith("text/plain")


# --- web routes ------------------------------------------------------------------

def test_a_web_route_is_served_as_the_caller(site):
    req = serve(FakeRequest("GET", "/clarens/hello/a/b.iso", args="x=1&x=2&y=", user="alice", auth_type="Basic"))
    assert req.status == 200 and req.content_type == "application/json"
    assert json.loads(req.output) == {"path": "a/b.iso", "query": {"x": ["1", "2"]}, "who": "alice",
                                      "method": "unit.echo", "body": ""}
    assert "Connection" not in req.headers_out


def test_a_web_route_reads_the_body(site):
    req = serve(FakeRequest("PUT", "/clarens/hello/f", b"payload", {"Origin": "http://server.example"}))
    assert req.status == 200 and json.loads(req.output)["body"] == "payload"
    assert "Connection" not in req.headers_out


def test_a_cross_site_put_to_a_web_route_is_refused_unread(site):
    req = serve(FakeRequest("PUT", "/clarens/hello/f", b"payload", {"Origin": "http://evil.example"}))
    assert req.status == 403 and json.loads(req.output)["error"]["code"] == ACCESS_DENIED
    assert req.reads == 0 and req.headers_out["Connection"] == "close" and req.flushed
    assert site.calls == [] and len(site.log.faults(ACCESS_DENIED)) == 1


def test_a_web_route_that_raises_is_a_500_with_an_incident(site):
    req = serve(FakeRequest("PUT", "/clarens/crash/", b"unread body"))
    error = json.loads(req.output)["error"]
    assert req.status == 500 and error["code"] == INTERNAL_ERROR
    incident = re.fullmatch(r"internal error \(incident ([0-9a-f]{8})\)", error["message"]).group(1)
    assert "RuntimeError: a bug in a route" in site.log.text().split(incident, 1)[1]
    assert req.headers_out["Connection"] == "close"     # the body was never read


# --- the call context ------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: xml_call("unit.echo", 1),
    lambda: xml_call("unit.boom"),
    lambda: xml_call("unit.unencodable"),
    lambda: json_call({"jsonrpc": "2.0", "method": "unit.echo", "params": [1], "id": 1}),
    lambda: json_call([{"jsonrpc": "2.0", "method": "unit.fault", "id": 1}]),
    lambda: FakeRequest("GET", "/clarens/"),
    lambda: FakeRequest("GET", "/clarens/hello/"),
    lambda: FakeRequest("GET", "/clarens/crash/"),
    lambda: xml_call("unit.echo", 1, headers={"Origin": "http://evil.example"}),
], ids=["xmlrpc", "app-error", "unencodable", "jsonrpc", "batch-fault", "page", "route", "route-crash",
        "cross-site"])
def test_the_context_is_active_during_the_request_only(site, make):
    with pytest.raises(LookupError):
        context.current()
    serve(make())
    with pytest.raises(LookupError):
        context.current()


def test_a_host_bug_is_still_answered_in_protocol(site, monkeypatch):
    def broken(*args):
        raise RuntimeError("a bug in the host")
    monkeypatch.setattr(site.host.dispatcher, "call", broken)
    req = serve(json_call({"jsonrpc": "2.0", "method": "unit.echo", "params": [1], "id": 1}))
    assert req.status == 200 and rpc_fault(req) == (INTERNAL_ERROR, "internal server error; see the server log")
    assert "RuntimeError: a bug in the host" in site.log.text()
    with pytest.raises(LookupError):
        context.current()


# --- booting ---------------------------------------------------------------------

def test_the_stand_in_for_mod_python_apache_is_gone_once_the_handler_is_imported():
    # Only clarens.handler holds it: nothing imported later may take it for the real one.
    import mod_python
    if handler.apache.__doc__ and "stand-in" in handler.apache.__doc__:
        assert "mod_python.apache" not in sys.modules and not hasattr(mod_python, "apache")


def test_a_request_before_boot_boots_the_host_from_apaches_options(tmp_path, monkeypatch):
    with fakes.isolated():
        host_mod._host = None
        options = fakes.write_site(str(tmp_path))
        monkeypatch.setattr(handler.apache, "main_server", types.SimpleNamespace(get_options=lambda: options))
        recorder = fakes.LogRecorder()
        logging.getLogger("clarens").addHandler(recorder)
        assert xml_answer(serve(xml_call("unit.echo", "first"))) == "first"
        assert host_mod.current_or_none() is not None
        assert any("modules were loaded by a request" in m for m in recorder.messages())


def test_a_configuration_error_is_503_and_logged_to_apache(tmp_path, monkeypatch):
    logged = []
    with fakes.isolated():
        host_mod._host = None
        options = {"clarens.server.max_body": "lots"}
        monkeypatch.setattr(handler.apache, "main_server", types.SimpleNamespace(get_options=lambda: options))
        monkeypatch.setattr(handler.apache, "log_error", lambda *args: logged.append(args), raising=False)
        req = serve(xml_call("unit.echo", 1))
        assert req.status == 503 and req.content_type.startswith("text/plain")
        assert host_mod.current_or_none() is None
    assert len(logged) == 1 and "max_body" in logged[0][0] and logged[0][1] == handler.apache.APLOG_CRIT


def test_warm_up_runs_the_request_path_without_a_trace(site):
    handler.warm_up(site.host, rounds=2)
    assert site.log.records == [] and site.calls == []
    with pytest.raises(LookupError):
        context.current()


def test_warm_up_calls_nothing_a_policy_refuses_and_logs_no_refusal(tmp_path):
    with fakes.isolated():
        host, recorder = fakes.boot(str(tmp_path), policy="<Acl system>\n    Allow authenticated\n</Acl>\n")
        calls = []
        host.dispatcher.call = lambda *args: calls.append(args)
        handler.warm_up(host)
        assert calls == [] and recorder.records == []


def test_the_look_for_refusal_summaries_comes_after_the_answer(site):
    """When a look at the refusals' shared table is due, the request that finds it due registers
    it to run after its answer (a mod_python cleanup) instead of making its caller wait; out of
    Apache (no request) it runs at once; and it is not due again for a while."""
    looks = []
    site.host.refusals._summarise = looks.append           # what a look writes
    site.host.refusals._next_tick = 0.0                     # due now
    req = serve(xml_call("unit.echo", "hi"))
    assert xml_answer(req) == "hi" and looks == [] and len(req.cleanups) == 1
    for cleanup, data in req.cleanups:                      # as mod_python runs them
        cleanup(data)
    assert looks == [[]]
    assert serve(xml_call("unit.echo", "hi")).cleanups == []     # not due again within TICK seconds
    site.host.refusals._next_tick = 0.0
    serving.serve(site.host, ANONYMOUS, xmlrpc_codec, xmlrpc.client.dumps(("x",), "unit.echo").encode())
    assert looks == [[], []]
