"""JSON-RPC 2.0 request handling on its own, with a stand-in call function."""

import json

import pytest

from clarens.faults import INVALID_PARAMS, Fault
from clarens.protocol import jsonrpc


def run(body, reported=None):
    def call(method, params):
        if method == "sum":
            return sum(params.values()) if isinstance(params, dict) else sum(params)
        if method == "bytes":
            return b"\x00\x01"
        if method == "nan":
            return float("nan")
        raise Fault(INVALID_PARAMS, "no such thing")
    out = jsonrpc.respond(body if isinstance(body, bytes) else json.dumps(body).encode(), call,
                          (reported if reported is not None else []).append)
    return None if out is None else json.loads(out)


def test_single_call_and_named_params():
    assert run({"jsonrpc": "2.0", "method": "sum", "params": [1, 2], "id": 7}) == {
        "jsonrpc": "2.0", "result": 3, "id": 7}
    assert run({"jsonrpc": "2.0", "method": "sum", "params": {"a": 1, "b": 5}, "id": "x"})["result"] == 6


def test_batch_mixes_results_errors_and_notifications():
    out = run([{"jsonrpc": "2.0", "method": "sum", "params": [1], "id": 1},
               {"jsonrpc": "2.0", "method": "sum", "params": [2]},            # notification: no reply
               {"jsonrpc": "2.0", "method": "other", "id": 2},
               {"jsonrpc": "1.0", "method": "sum", "id": 3},
               42])
    assert out == [{"jsonrpc": "2.0", "result": 1, "id": 1},
                   {"jsonrpc": "2.0", "error": {"code": -32602, "message": "no such thing"}, "id": 2},
                   {"jsonrpc": "2.0", "error": {"code": -32600, "message": 'missing "jsonrpc": "2.0"'}, "id": 3},
                   {"jsonrpc": "2.0", "error": {"code": -32600, "message": "a request must be a JSON object"},
                    "id": None}]


def test_notifications_only_owe_nothing():
    assert run([{"jsonrpc": "2.0", "method": "sum", "params": [1]}]) is None
    assert run({"jsonrpc": "2.0", "method": "other"}) is None


@pytest.mark.parametrize("body, code", [
    (b"{not json", -32700), (b'{"a": NaN}', -32700), ("{\"x\": \"caf\xe9\"}".encode("latin-1"), -32700),
    (b"[]", -32600), (b'{"jsonrpc": "2.0", "method": 5, "id": 1}', -32600),
    (b'{"jsonrpc": "2.0", "method": "sum", "params": "x", "id": 1}', -32600),
    (b'{"jsonrpc": "2.0", "method": "sum", "id": [1]}', -32600),
    (b'{"jsonrpc": "2.0", "method": "sum", "params": ' + b"[" * 70 + b"]" * 70 + b', "id": 1}', -32700),
    (b"[" * 100000 + b"]" * 100000, -32700),
])
def test_bad_requests_get_precise_error_codes(body, code):
    reported = []
    out = run(body, reported)
    assert out["error"]["code"] == code
    assert [f.code for f in reported] == [code]


def test_results_json_cannot_carry_are_encoded_or_refused():
    assert run({"jsonrpc": "2.0", "method": "bytes", "id": 1})["result"] == "AAE="
    assert run({"jsonrpc": "2.0", "method": "nan", "id": 1})["error"]["code"] == -32603
