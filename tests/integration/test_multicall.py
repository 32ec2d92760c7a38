# SPDX-License-Identifier: Apache-2.0
"""Multicalls and JSON-RPC batches through the real Apache: every call they carry goes through the
dispatcher (registry, access control, signature check), each fault comes back in its call's place
and is logged, and the decoder's limits hold at and past them, whichever reader reads the request."""

import json
import os
import shutil
import xmlrpc.client

import pytest

from clarens import faults
from clarens.protocol import xmlrpc as codec
from clarens.protocol import xmlrpc_fast
from tests.helpers import Raw, start_instance, wait_for

# A private instance with small limits, so that a multicall at them is small enough for the fast reader.
ITEMS, VALUES, DEPTH = 40, 300, 4


@pytest.fixture(scope="module")
def small():
    inst = start_instance("clarens-multicall-", options={
        "clarens.server.max_items": str(ITEMS), "clarens.server.max_values": str(VALUES),
        "clarens.server.max_depth": str(DEPTH)})
    yield inst
    inst.stop()
    shutil.rmtree(inst.state_dir, ignore_errors=True)


def _multicall(calls: list) -> bytes:
    return xmlrpc.client.dumps((calls,), "system.multicall", allow_none=True).encode("utf-8")


def _fast(body: bytes) -> bool:
    """Whether the flat multicall reader reads ``body`` (within the small instance's limits)."""
    text = xmlrpc_fast.plain_text(body)
    return text is not None and xmlrpc_fast.flat_multicall(text, codec._SCALAR, DEPTH, ITEMS, VALUES) is not None


def _log_after(inst, offset: int, *needles: str) -> str:
    """The first line of the error log past ``offset`` holding every one of ``needles`` (waited for: a
    request's faults are written when it ends)."""
    def found():
        with open(inst.error_log, errors="replace") as f:
            f.seek(offset)
            return next((line for line in f if all(n in line for n in needles)), None)
    return wait_for(lambda: "a log line with %s" % (needles,), found, timeout=10)


def test_every_call_of_a_multicall_is_checked_and_its_fault_logged(small):
    """An anonymous multicall in the shape clients send (the fast reader's): the registry, the policy
    and the signatures decide each call as they would alone."""
    calls = [{"methodName": "echo.echo", "params": ["a"]},
             {"params": [7], "methodName": "echo.echo"},                  # a hash's order: params first
             {"methodName": "acl.show", "params": []},                    # administrators only
             {"methodName": "no.such", "params": []},
             {"methodName": "no.other", "params": [1]},
             {"methodName": "echo.echo", "params": ["a", "b"]},           # it takes one
             {"methodName": "system.multicall", "params": []},
             {"methodName": "echo._hidden", "params": []},
             {"methodName": "probe.boom", "params": []},
             {"methodName": "echo.echo", "params": ["z"]}]
    body = _multicall(calls)
    assert _fast(body)
    offset = os.path.getsize(small.error_log)
    status, results = Raw(small).xmlrpc(body)
    assert status == 200 and results[0] == ["a"] and results[1] == [7] and results[9] == ["z"]
    assert [r["faultCode"] for r in results[2:9]] == [
        faults.ACCESS_DENIED, faults.METHOD_NOT_FOUND, faults.METHOD_NOT_FOUND, faults.INVALID_PARAMS,
        faults.INVALID_REQUEST, faults.INVALID_REQUEST, faults.APPLICATION_ERROR]
    assert "recursively" in results[6]["faultString"] and "ZeroDivisionError" in results[8]["faultString"]
    _log_after(small, offset, "anonymous@127.0.0.1", "acl.show", "fault %d" % faults.ACCESS_DENIED)
    _log_after(small, offset, "2 calls got fault %d" % faults.METHOD_NOT_FOUND, "no.such", "no.other")
    _log_after(small, offset, "2 calls got fault %d" % faults.INVALID_REQUEST, "system.multicall", "echo._hidden")
    _log_after(small, offset, "probe.boom raised ZeroDivisionError")


def test_a_multicall_at_the_limits_is_served_and_past_them_refused(small):
    at_items = [{"methodName": "echo.echo", "params": [i]} for i in range(ITEMS)]
    # <value>s: the array's, and each call's struct, name, params, its one parameter and that one's items
    at_values = [{"methodName": "echo.echo", "params": [["v"] * 39]}] * 6 + [
        {"methodName": "echo.echo", "params": [["v"] * 37]}]                  # 1 + 6 x 43 + 41 = 300
    at_depth = [{"methodName": "echo.echo", "params": [[1]]}]                 # array, struct, array, array
    for calls in (at_items, at_values, at_depth):
        status, results = Raw(small).xmlrpc(_multicall(calls))
        assert status == 200 and results == [c["params"] for c in calls]
    assert _fast(_multicall(at_items))
    for calls, message in (
            (at_items + [{"methodName": "echo.echo", "params": []}],
             "an array or struct of more than %d items" % ITEMS),
            (at_values[:-1] + [{"methodName": "echo.echo", "params": [["v"] * 38]}],
             "more than %d values in one request" % VALUES),
            ([{"methodName": "echo.echo", "params": [[[1]]]}], "values nested deeper than %d levels" % DEPTH),
            ([{"methodName": "echo.echo", "params": [[[[[[[[1]]]]]]]]}] * 3, "values nested deeper than %d" % DEPTH)):
        status, fault = Raw(small).xmlrpc(_multicall(calls))
        assert status == 200 and isinstance(fault, xmlrpc.client.Fault), fault
        assert message in fault.faultString


def test_a_batch_mixing_notifications_and_faults(small):
    """Notifications owe no answer, even when they fail or are refused; the other calls are answered in
    order, each with its result or error; every fault is logged, the notifications' too."""
    batch = [{"jsonrpc": "2.0", "method": "echo.echo", "params": ["a"], "id": 1},
             {"jsonrpc": "2.0", "method": "acl.show", "params": []},                  # refused, notification
             {"jsonrpc": "2.0", "method": "no.such"},                                 # unknown, notification
             {"jsonrpc": "2.0", "method": "echo.echo", "params": ["note"]},           # served, notification
             {"jsonrpc": "2.0", "method": "acl.show", "params": [], "id": "denied"},
             {"jsonrpc": "1.0", "method": "echo.echo", "params": ["x"], "id": 3},      # malformed
             "not an object",
             {"jsonrpc": "2.0", "method": "no.such", "params": [], "id": 4},
             {"jsonrpc": "2.0", "method": "echo.echo", "params": ["a", "b"], "id": 5}]
    offset = os.path.getsize(small.error_log)
    status, replies = Raw(small).json(json.dumps(batch))
    assert status == 200 and [r["id"] for r in replies] == [1, "denied", 3, None, 4, 5]
    assert replies[0]["result"] == "a" and replies[1]["error"]["code"] == faults.ACCESS_DENIED
    assert replies[2]["error"]["code"] == replies[3]["error"]["code"] == faults.INVALID_REQUEST
    assert replies[4]["error"]["code"] == faults.METHOD_NOT_FOUND
    assert replies[5]["error"]["code"] == faults.INVALID_PARAMS
    _log_after(small, offset, "2 calls got fault %d" % faults.ACCESS_DENIED, "acl.show")
    _log_after(small, offset, "2 calls got fault %d" % faults.METHOD_NOT_FOUND, "no.such")
    assert Raw(small).json(json.dumps([batch[1], batch[2], batch[3]]))[0] == 204    # notifications only
    past = [{"jsonrpc": "2.0", "method": "echo.echo", "params": [i], "id": i} for i in range(ITEMS + 1)]
    status, replies = Raw(small).json(json.dumps(past[:ITEMS]))
    assert status == 200 and [r["result"] for r in replies] == list(range(ITEMS))
    status, reply = Raw(small).json(json.dumps(past))
    assert reply["error"]["message"] == "an array or object of more than %d items" % ITEMS
