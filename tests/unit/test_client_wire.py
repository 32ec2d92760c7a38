# SPDX-License-Identifier: Apache-2.0
"""The client's side of the protocols (clarens.client.wire), checked against the host's own codecs."""

from __future__ import annotations

import functools
import json

import pytest

from clarens.client.wire import WIRES, ProtocolError
from clarens.faults import Fault
from clarens.protocol import Limits, jsonrpc, xmlrpc

LIMITS = Limits(64, 10000, 100000, 1 << 20)
CODECS = {"xmlrpc": xmlrpc, "jsonrpc": jsonrpc}


def host_answer(protocol, body, call):
    """What the host's codec answers to ``body`` with ``call(method, params)`` as its dispatcher."""
    return CODECS[protocol].respond(body, call, lambda fault: None, LIMITS)


def echo_or_fault(method, params):
    if method == "bad":
        raise Fault(-32602, "bad params")
    return params[0] if params else None


@pytest.mark.parametrize("protocol", sorted(WIRES))
def test_a_call_and_its_answer_through_the_hosts_codec(protocol):
    wire = WIRES[protocol]
    value = {"a": [1, "é", None, 2.5, True]}
    assert wire.result(host_answer(protocol, wire.call("echo", [value]), echo_or_fault)) == value
    with pytest.raises(Fault) as e:
        wire.result(host_answer(protocol, wire.call("bad", []), echo_or_fault))
    assert (e.value.code, e.value.message) == (-32602, "bad params")


def test_a_json_batch_maps_answers_by_id_whatever_their_order():
    wire = WIRES["jsonrpc"]
    answer = json.dumps([{"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "no"}},
                         {"jsonrpc": "2.0", "id": 0, "result": "first"}]).encode()
    results = wire.results(answer, 3)
    assert results[0] == "first" and results[1].code == -32601
    assert isinstance(results[2], Fault) and "no result" in results[2].message


def test_a_json_batch_refused_whole_raises_its_fault():
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "too many"}}).encode()
    with pytest.raises(Fault, match="too many"):
        WIRES["jsonrpc"].results(body, 2)


def test_multicall_through_the_hosts_codec():
    wire = WIRES["xmlrpc"]

    def dispatch(method, params):
        assert method == "system.multicall"
        out = []
        for call in params[0]:
            try:
                out.append([echo_or_fault(call["methodName"], call["params"])])
            except Fault as fault:
                out.append(fault.as_struct())
        return out
    body = wire.batch([("echo", [1]), ("bad", []), ("echo", ["x"])])
    results = wire.results(host_answer("xmlrpc", body, dispatch), 3)
    assert results[0] == 1 and results[2] == "x" and results[1].code == -32602


@pytest.mark.parametrize("protocol, body", [
    ("jsonrpc", b"<html>"), ("jsonrpc", b'{"result": 1}'), ("jsonrpc", b'{"jsonrpc": "2.0", "id": 0}'),
    ("jsonrpc", b'{"jsonrpc": "2.0", "error": {"code": "x"}}'),
    ("xmlrpc", b"<html>"), ("xmlrpc", b"<?xml version='1.0'?><methodResponse><params></params></methodResponse>"),
])
def test_answers_not_in_the_protocol_are_protocol_errors(protocol, body):
    with pytest.raises(ProtocolError):
        WIRES[protocol].result(body)


def test_values_json_cannot_carry_are_refused_before_sending():
    with pytest.raises(TypeError, match="JSON-RPC"):
        WIRES["jsonrpc"].call("echo", [float("nan")])
    with pytest.raises(TypeError, match="JSON-RPC"):
        WIRES["jsonrpc"].call("echo", [b"bytes"])


def test_the_same_call_means_the_same_through_either_wire():
    seen = []
    record = functools.partial(lambda out, m, p: out.append((m, p)) or p[0], seen)
    for protocol, wire in sorted(WIRES.items()):
        wire.result(host_answer(protocol, wire.call("m", [[1, {"k": "v"}]]), record))
    assert seen[0] == seen[1] == ("m", [[1, {"k": "v"}]])
