# SPDX-License-Identifier: Apache-2.0
"""JSON-RPC 2.0 request handling on its own, with a stand-in call function."""

import json
import random
import tracemalloc

import pytest

from clarens.faults import INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR, Fault
from clarens.protocol import Limits, jsonrpc


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


def test_lone_surrogates_refuse_only_the_calls_they_are_in():
    """UTF-8 cannot carry a lone surrogate: refused when decoded, per call, never the whole batch."""
    reported = []
    body = ('[{"jsonrpc": "2.0", "method": "sum", "params": [1, 2], "id": 1},'
            ' {"jsonrpc": "2.0", "method": "echo", "params": ["\\ud800"], "id": 2},'
            ' {"jsonrpc": "2.0", "method": "sum", "params": [3], "id": "\\udfff"}]').encode()
    replies = run(body, reported)
    assert replies[0] == {"jsonrpc": "2.0", "result": 3, "id": 1}
    assert replies[1]["id"] == 2 and replies[1]["error"]["code"] == -32600
    assert "lone surrogate" in replies[1]["error"]["message"]
    assert replies[2]["id"] is None and replies[2]["error"]["code"] == -32600
    assert len(reported) == 2
    # an escaped backslash before "ud800" is text, not a surrogate
    assert run(b'{"jsonrpc": "2.0", "method": "sum", "params": {"\\\\ud800": 4}, "id": 3}')["result"] == 4


@pytest.mark.parametrize("number", [b"1e400", b"-1e999"])
def test_numbers_out_of_range_are_refused(number):
    reply = run(b'{"jsonrpc": "2.0", "method": "sum", "params": [' + number + b'], "id": 1}')
    assert reply["error"]["code"] == -32700 and "out of range" in reply["error"]["message"]


def test_a_result_utf8_cannot_carry_fails_that_call_alone():
    reported = []

    def call(method, params):
        return "\ud800" if method == "bad" else 1
    body = json.dumps([{"jsonrpc": "2.0", "method": m, "id": i} for i, m in enumerate(["ok", "bad", "ok"])])
    replies = json.loads(jsonrpc.respond(body.encode(), call, reported.append))
    assert [r.get("result") for r in replies] == [1, None, 1] and replies[1]["error"]["code"] == -32603
    assert "the result of bad cannot be encoded" in replies[1]["error"]["message"] and len(reported) == 1


def test_a_multicall_keeps_the_results_it_can_encode():
    reported = []

    def call(method, params):
        return [[1], ["\ud800"], [float("nan")], [2]]
    reply = json.loads(jsonrpc.respond(b'{"jsonrpc": "2.0", "method": "system.multicall", "params": [[]], "id": 1}',
                                       call, reported.append))
    results = reply["result"]
    assert results[0] == [1] and results[3] == [2]
    assert results[1]["faultCode"] == results[2]["faultCode"] == -32603 and len(reported) == 2


@pytest.mark.parametrize("params, limits, message", [
    (list(range(101)), Limits(items=100), "an array or object of more than 100 items"),
    ([[1, 2]] * 40, Limits(values=100), "more than 100 values in one request"),
    ([[[[1]]]], Limits(depth=4), "values nested deeper than 4 levels"),
])
def test_what_one_request_may_cost_is_bounded(params, limits, message):
    body = json.dumps({"jsonrpc": "2.0", "method": "sum", "params": params, "id": 1}).encode()
    reply = json.loads(jsonrpc.respond(body, lambda m, p: 0, [].append, limits))
    assert reply["error"]["message"] == message


@pytest.mark.parametrize("params", [
    [[], {}, [[]], {"a": {}}, "[{,,,}]", {"[": ",]"}, 1, [1, [2, {"b": [3, "x,y"]}]]],
    [[i, str(i) + ",[{"] for i in range(30)],
])
def test_values_are_counted_exactly_before_decoding(params):
    """The count made on the raw body (strings holding brackets and commas, empty arrays and objects)
    agrees with the decoded value: the limit at the count passes, one below it is refused."""
    body = json.dumps({"jsonrpc": "2.0", "method": "sum", "params": params, "id": 1}).encode()

    def count(value):
        return 1 + sum(count(v) for v in (value.values() if isinstance(value, dict) else
                                          value if isinstance(value, list) else ()))
    exact = count(json.loads(body))
    assert jsonrpc.loads(body, Limits(values=exact)) == json.loads(body)
    with pytest.raises(Fault) as info:
        jsonrpc.loads(body, Limits(values=exact - 1))
    assert info.value.message == "more than %d values in one request" % (exact - 1)


def test_the_shape_is_the_depth_and_width_of_the_value():
    def shape(value, level=1):       # the definition, recursively
        children = list(value.values()) if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            return 0, 0
        inner = [shape(c, level + 1) for c in children]
        return max([level] + [d for d, _ in inner]), max([len(children)] + [w for _, w in inner])
    rng = random.Random(25)

    def value(depth=0):
        r = rng.random()
        if depth > 6 or r < 0.4:
            return rng.choice([1, "s", None, 2.5, True])
        items = [value(depth + 1) for _ in range(rng.randint(0, 4))]
        return items if r < 0.7 else {str(i): v for i, v in enumerate(items)}
    for _ in range(3000):
        v = value()
        assert jsonrpc._shape(v) == shape(v), v


def test_a_body_of_a_million_values_is_refused_before_it_is_built():
    body = b"[" + b",".join([b"{}"] * 1000000) + b"]"
    tracemalloc.start()
    try:
        with pytest.raises(Fault) as info:
            jsonrpc.loads(body)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.code == INVALID_REQUEST and peak < 1 << 20, peak


@pytest.mark.parametrize("digits, refused", [(40, False), (41, True), (1000000, True)])
def test_integers_are_bounded_in_length(digits, refused):
    """Decimal conversion is quadratic; the interpreter's own bound is not in force in every interpreter."""
    body = b'{"jsonrpc":"2.0","method":"m","params":[-%s,"%s"],"id":1}' % (b"9" * digits, b"9" * digits)
    if refused:
        with pytest.raises(Fault) as info:
            jsonrpc.loads(body)
        assert info.value.code == PARSE_ERROR and "more than 40 digits" in info.value.message
    else:
        assert jsonrpc.loads(body)["params"] == [-int("9" * digits), "9" * digits]


def _texts(rng):
    """Strings a result or an id may hold: every character class JSON escapes or passes through."""
    alphabet = ["a", "Z", "0", " ", '"', "\\", "/", "\n", "\r", "\t", "\x00", "\x1f", "\x7f", "é", "\u2028",
                "\u20ac", "\U0001f600", "\ud800", "\udfff", "<", "&"]
    return [""] + ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(3000)]


def test_the_direct_reply_is_the_encoders_byte_for_byte():
    """_reply writes a text result itself: it must be what the general encoder writes, or fail alike."""
    rng = random.Random(25)
    texts = _texts(rng)
    ids = [0, 1, -7, 2**63, -(10**30), "", "x", "id-\u20ac", '"q"', None, 1.5, True] + texts[:50]
    for result in texts + [1, None, ["x"]]:
        request_id = rng.choice(ids)
        general: bytes | type[Exception]
        try:
            general = jsonrpc._encoder.encode({"jsonrpc": "2.0", "result": result, "id": request_id}).encode("utf-8")
        except ValueError as e:      # a lone surrogate: UnicodeEncodeError
            general = type(e)
        direct: bytes | type[Exception]
        try:
            direct = jsonrpc._reply(result, request_id)
        except ValueError as e:
            direct = type(e)
        assert direct == general, (result, request_id)


def test_the_scanner_alone_decodes_as_decode_does():
    """loads reads a text that starts and ends with its value without decode's searches for
    whitespace: on any text, the same value or the same error as the decoder's own decode."""
    rng = random.Random(2025)
    pieces = ['{"jsonrpc": "2.0", "method": "m", "params": [1, "a"], "id": 1}', "[1, 2.5, null, true]", '{"a": {}}',
              "[]", "{}", " ", "\n", "\t", "\r", "x", "]", "}", "[", "{", ",", '"', "NaN", "1e999", "9" * 45, "\ufeff",
              '"\\ud800"', "0", "-", ":"]
    texts = ["", *pieces]
    for _ in range(4000):
        texts.append("".join(rng.choice(pieces) for _ in range(rng.randint(1, 4))))
    scanned = 0
    for decoder in (jsonrpc._decoder, jsonrpc._long_int_decoder):
        for text in texts:
            outcomes = []
            for decode in (lambda t, d=decoder: jsonrpc._decode(d, t), decoder.decode):
                try:
                    outcomes.append(("ok", repr(decode(text))))
                except (ValueError, RecursionError) as e:
                    outcomes.append((type(e).__name__, str(e)))
            assert outcomes[0] == outcomes[1], text
            scanned += text[:1] in "{[" and outcomes[0][0] == "ok"
    assert scanned > 500
