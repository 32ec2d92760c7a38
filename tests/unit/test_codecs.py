# SPDX-License-Identifier: Apache-2.0
"""What the codecs' shared respond(body, call, report, limits) reports, beyond tests/unit/test_*_codec.py."""

import json
import xmlrpc.client

import pytest

from clarens.faults import INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR, Fault
from clarens.protocol import Limits, jsonrpc
from clarens.protocol import xmlrpc as xmlrpc_codec

CODECS = [xmlrpc_codec, jsonrpc]


def codec_id(value):
    """Test ids: a codec by its short name, anything else as pytest would."""
    return value.__name__.rpartition(".")[2] if value in CODECS else None


class Service:
    """The ``call`` respond() is given: "ok" answers, "fault" raises a Fault, "bad" returns the unencodable."""

    def __init__(self):
        self.called = []

    def __call__(self, method, params):
        self.called.append(method)
        if method == "fault":
            raise Fault(4242, "the service says no")
        if method == "bad":
            return {"x": object()}
        return params


def request(codec, method, params=()):
    if codec is xmlrpc_codec:
        return xmlrpc.client.dumps(tuple(params), method).encode()
    return json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1}).encode()


def answer(codec, out):
    """("result", value) or ("fault", code, message) of one encoded answer."""
    if codec is xmlrpc_codec:
        try:
            return ("result", xmlrpc.client.loads(out, use_builtin_types=True)[0][0])
        except xmlrpc.client.Fault as f:
            return ("fault", f.faultCode, f.faultString)
    out = json.loads(out)
    return ("result", out["result"]) if "result" in out else ("fault", out["error"]["code"], out["error"]["message"])


def respond(codec, body, max_depth=64):
    """respond()'s answer, what it reported, and what it called."""
    service, reported = Service(), []
    out = codec.respond(body, service, reported.append, Limits(depth=max_depth))
    return out, reported, service.called


@pytest.mark.parametrize("codec", CODECS, ids=codec_id)
def test_a_call_that_answers_reports_nothing(codec):
    out, reported, called = respond(codec, request(codec, "ok", ["x"]))
    assert answer(codec, out) == ("result", ["x"]) and reported == [] and called == ["ok"]


@pytest.mark.parametrize("codec", CODECS, ids=codec_id)
def test_faults_raised_by_call_are_answered_but_not_reported(codec):
    # The dispatcher has logged them already: reporting them again would log them twice.
    out, reported, called = respond(codec, request(codec, "fault"))
    assert answer(codec, out) == ("fault", 4242, "the service says no")
    assert reported == [] and called == ["fault"]


@pytest.mark.parametrize("codec", CODECS, ids=codec_id)
def test_a_result_that_cannot_be_encoded_is_answered_and_reported_once(codec):
    out, reported, called = respond(codec, request(codec, "bad"))
    kind, code, message = answer(codec, out)
    assert code == INTERNAL_ERROR and "cannot be encoded" in message and called == ["bad"]
    assert [(f.code, f.message) for f in reported] == [(code, message)]


@pytest.mark.parametrize("codec, body, code", [
    (xmlrpc_codec, b"<methodCall>", PARSE_ERROR),
    (xmlrpc_codec, b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]><methodCall/>", PARSE_ERROR),
    (xmlrpc_codec, b"<methodResponse><params/></methodResponse>", INVALID_REQUEST),
    (xmlrpc_codec, b"<methodCall><params/></methodCall>", INVALID_REQUEST),
    (xmlrpc_codec, "<methodCall/>".encode("utf-16"), PARSE_ERROR),
    (jsonrpc, b"{", PARSE_ERROR),
    (jsonrpc, b"\xff", PARSE_ERROR),
    (jsonrpc, b"[]", INVALID_REQUEST),
    (jsonrpc, b'"a string"', INVALID_REQUEST),
    (jsonrpc, b'{"jsonrpc": "2.0", "method": 1, "id": 1}', INVALID_REQUEST),
    (jsonrpc, b'{"jsonrpc": "2.0", "method": "ok", "id": {}}', INVALID_REQUEST),
], ids=codec_id)
def test_a_body_that_is_not_a_call_is_answered_and_reported_once_and_nothing_is_called(codec, body, code):
    out, reported, called = respond(codec, body)
    assert answer(codec, out)[:2] == ("fault", code) and called == []
    assert [(f.code, f.message) for f in reported] == [answer(codec, out)[1:]]


@pytest.mark.parametrize("codec", CODECS, ids=codec_id)
def test_max_depth_is_the_callers(codec):
    body = request(codec, "ok", [[[["deep"]]]])
    out, reported, called = respond(codec, body, max_depth=2)
    assert answer(codec, out)[:2] == ("fault", PARSE_ERROR) and len(reported) == 1 and called == []
    out, reported, called = respond(codec, body, max_depth=10)
    assert answer(codec, out) == ("result", [[[["deep"]]]]) and reported == []


def test_a_json_rpc_batch_keeps_the_other_results_when_one_cannot_be_encoded():
    out, reported, called = respond(jsonrpc, json.dumps([
        {"jsonrpc": "2.0", "method": "ok", "params": [1], "id": 1},
        {"jsonrpc": "2.0", "method": "bad", "id": 2},
        {"jsonrpc": "2.0", "method": "ok", "params": [3], "id": 3},
        {"jsonrpc": "2.0", "method": "fault", "id": 4},
        {"jsonrpc": "2.0", "method": "bad"},                 # a notification: never encoded, nothing owed
        {"jsonrpc": "1.0", "method": "ok", "id": 6},
    ]).encode())
    out = json.loads(out)
    assert [r["id"] for r in out] == [1, 2, 3, 4, 6]
    assert out[0]["result"] == [1] and out[2]["result"] == [3]
    assert [r["error"]["code"] for r in (out[1], out[3], out[4])] == [INTERNAL_ERROR, 4242, INVALID_REQUEST]
    # Reported: the unencodable result and the malformed element, in order; not the service's fault.
    assert [(f.code, f.message) for f in reported] == [(r["error"]["code"], r["error"]["message"])
                                                       for r in (out[1], out[4])]
    assert called == ["ok", "bad", "ok", "fault", "bad"]


def test_a_json_rpc_notification_whose_call_faults_is_neither_answered_nor_reported():
    out, reported, called = respond(jsonrpc, b'{"jsonrpc": "2.0", "method": "fault"}')
    assert out is None and reported == [] and called == ["fault"]
