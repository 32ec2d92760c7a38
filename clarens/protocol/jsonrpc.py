"""JSON-RPC 2.0 over HTTP POST: single calls, batches and notifications.

Values map to the XML-RPC types as JSON allows: base64 results travel as
base64 text and dateTime results as ISO 8601 text; parameters a signature
declares as base64 or dateTime.iso8601 are accepted as strings.
"""

from __future__ import annotations

import binascii
import datetime
import json
import xmlrpc.client
from typing import Any, Callable

from clarens.faults import INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR, Fault

PROTOCOL = "jsonrpc"
CONTENT_TYPE = "application/json"


def _reject_constant(name: str) -> None:
    raise ValueError("%s is not valid JSON" % name)


def _encode_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return binascii.b2a_base64(value, newline=False).decode("ascii")
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, xmlrpc.client.DateTime):
        return value.value
    if isinstance(value, xmlrpc.client.Binary):
        return binascii.b2a_base64(value.data, newline=False).decode("ascii")
    if isinstance(value, tuple):
        return list(value)
    raise TypeError("cannot encode a %s in JSON" % type(value).__name__)


_decoder = json.JSONDecoder(parse_constant=_reject_constant)
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_encode_default)


def _depth(value: Any) -> int:
    """Container nesting depth of a decoded value (iterative: no recursion limit)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, level)
        todo.extend((child, level + 1) for child in item if isinstance(child, (list, dict)))
    return deepest


def loads(body: bytes, max_depth: int = 64) -> Any:
    """Decode a request body (strict UTF-8 JSON, nesting capped); raises Fault(PARSE_ERROR)."""
    try:
        value = _decoder.decode(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise Fault(PARSE_ERROR, "body is not UTF-8: %s" % e.reason) from None
    except ValueError as e:
        raise Fault(PARSE_ERROR, "not valid JSON: %s" % e) from None
    except RecursionError:
        raise Fault(PARSE_ERROR, "JSON nested too deeply") from None
    # The walk costs time only when the body has more brackets than the cap allows.
    if body.count(b"[") + body.count(b"{") > max_depth and _depth(value) > max_depth:
        raise Fault(PARSE_ERROR, "values nested deeper than %d levels" % max_depth)
    return value


def _error(fault: Fault, request_id: Any) -> str:
    return _encoder.encode({"jsonrpc": "2.0", "error": {"code": fault.code, "message": fault.message},
                            "id": request_id})


Call = Callable[[str, Any], Any]   # (method, params) -> result, raising Fault (and logging it)
Report = Callable[[Fault], None]   # told of each fault the dispatcher never saw


def _one(request: Any, call: Call, report: Report) -> str | None:
    """Run one request object; its encoded response, or None for a notification."""
    if not isinstance(request, dict):
        return _invalid("a request must be a JSON object", None, report)
    request_id = request.get("id")
    if request_id is not None and (type(request_id) not in (str, int, float)):
        return _invalid("id must be a string, a number or null", None, report)
    notification = "id" not in request
    if request.get("jsonrpc") != "2.0":
        return _invalid('missing "jsonrpc": "2.0"', request_id, report)
    method, params = request.get("method"), request.get("params", [])
    if not isinstance(method, str):
        return _invalid('"method" must be a string', request_id, report)
    if not isinstance(params, (list, dict)):
        return _invalid('"params" must be an array or an object', request_id, report)
    try:
        result = call(method, params)
    except Fault as fault:
        return None if notification else _error(fault, request_id)
    if notification:
        return None
    try:
        return _encoder.encode({"jsonrpc": "2.0", "result": result, "id": request_id})
    except (TypeError, ValueError, RecursionError) as e:
        unencodable = Fault(INTERNAL_ERROR, "the result of %s cannot be encoded: %s" % (method, e))
        report(unencodable)
        return _error(unencodable, request_id)


def dumps_fault(fault: Fault) -> bytes:
    """A complete error response for a request whose id is unknown."""
    return _error(fault, None).encode("utf-8")


def _invalid(message: str, request_id: Any, report: Report) -> str:
    fault = Fault(INVALID_REQUEST, message)
    report(fault)
    return _error(fault, request_id)


def respond(body: bytes, call: Call, report: Report, max_depth: int = 64) -> bytes | None:
    """Answer a request body: the response bytes, or None when nothing is owed (notifications only).

    Faults raised by ``call`` are the dispatcher's, already logged; malformed
    requests and results that cannot be encoded are told to ``report``.
    """
    try:
        request = loads(body, max_depth)
    except Fault as fault:
        report(fault)
        return _error(fault, None).encode("utf-8")
    if isinstance(request, list):
        if not request:
            return _invalid("empty batch", None, report).encode("utf-8")
        replies = [r for r in (_one(item, call, report) for item in request) if r is not None]
        return ("[" + ",".join(replies) + "]").encode("utf-8") if replies else None
    reply = _one(request, call, report)
    return None if reply is None else reply.encode("utf-8")
