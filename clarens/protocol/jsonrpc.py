# SPDX-License-Identifier: Apache-2.0
"""JSON-RPC 2.0 over HTTP POST: single calls, batches and notifications.

Values map to the XML-RPC types as JSON allows: base64 results travel as
base64 text and dateTime results as ISO 8601 text; parameters a signature
declares as base64 or dateTime.iso8601 are accepted as strings.
"""

from __future__ import annotations

import binascii
import datetime
import json
import math
import re
import xmlrpc.client
from typing import Any

from clarens.dispatch import MULTICALL
from clarens.faults import INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR, Fault
from clarens.protocol import DEFAULT_LIMITS, Call, Limits, Report, salvage_multicall

PROTOCOL = "jsonrpc"
CONTENT_TYPE = "application/json"


def _reject_constant(name: str) -> None:
    raise ValueError("%s is not valid JSON" % name)


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError("number %s is out of range" % text[:40])
    return value


MAX_INT_DIGITS = 40     # a 128-bit integer has 39: past this, decimal conversion's quadratic cost is a weapon


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError("an integer of more than %d digits" % MAX_INT_DIGITS)
    return int(text)


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


_decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite)
# A hook for every integer slows all of them: this one decodes only bodies holding a long run of digits.
_long_int_decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite, parse_int=_bounded_int)
# (Found as a run of "0" in the body with every digit made "0" and every other byte ".": half the
# instructions of a regular expression's search.)
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x2E for byte in range(256))
_LONG_RUN = b"0" * (MAX_INT_DIGITS + 1)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_encode_default)
_error_encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_text = json.encoder.encode_basestring  # type: ignore[attr-defined]  # what _encoder.encode does with a str (in C)
_ID_TEXT = {int: int.__repr__, str: _text}   # an id as _encoder writes it, for the ids _reply writes itself
# A \uD800-\uDFFF escape: the body may hold a lone surrogate, which is not text (UTF-8 cannot carry it).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _more_values_than(body: bytes, limit: int) -> bool:
    """Whether a JSON text holds more than ``limit`` values, found without decoding it (nor copying it):
    one for the whole, then one per member of each non-empty array or object, that is, one per comma
    and per opening bracket but that of "[]" or "{}", counted between the strings.  An empty array
    or object written with spaces inside is counted as one member too many: never too few."""
    count, start = 1, 0
    for string in _STRING.finditer(body):
        count += _members(body, start, string.start())
        if count > limit:
            return True
        start = string.end()
    return count + _members(body, start, len(body)) > limit


def _members(body: bytes, start: int, end: int) -> int:
    c = body.count
    return c(b",", start, end) + c(b"[", start, end) + c(b"{", start, end) - c(b"[]", start, end) - c(b"{}", start, end)


def _shape(value: Any) -> tuple[int, int]:
    """(nesting depth, largest array or object) of a decoded value, level by level (no recursion):
    each level's children are gathered by ``extend``, and only the containers among them looked into."""
    deepest, widest, level, depth = 0, 0, [value], 0
    while level:
        depth += 1
        below: list = []
        for item in level:
            kind = type(item)              # (the decoder makes no subclasses)
            if kind is dict:
                item = item.values()
            elif kind is not list:
                continue
            deepest = depth
            if len(item) > widest:
                widest = len(item)
            below.extend(item)
        level = below
    return deepest, widest


def _has_surrogate(value: Any) -> bool:
    """Whether a string anywhere in ``value`` (object keys included) holds a lone surrogate."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            todo.extend(item)
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return False


def _decode(decoder: json.JSONDecoder, text: str) -> Any:
    """``decoder.decode(text)``: the same value, or the same error.  A text that starts with its value
    and ends with it (a request as clients send one) is read without the two searches for whitespace
    around it (a quarter of a small request's decoding); any other text by ``decode``."""
    if text[:1] in ("{", "["):
        value, end = decoder.raw_decode(text)      # what decode does after the whitespace, errors included
        if end == len(text):
            return value
    return decoder.decode(text)


def loads(body: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Decode a request body (strict UTF-8 JSON, finite numbers, integers of at most MAX_INT_DIGITS
    digits), within ``limits``; raises Fault.  Memory and time stay in proportion to what the limits
    allow, not to the body: the values are counted before anything is built."""
    # Each value but the first in an array or object follows a comma: only a body with more
    # brackets or commas than the limits allow costs a count (before decoding) or a walk (after).
    brackets = body.count(b"[") + body.count(b"{")
    most = body.count(b",") + brackets + 1
    if most > limits.values and _more_values_than(body, limits.values):
        raise Fault(INVALID_REQUEST, "more than %d values in one request" % limits.values)
    decoder = _long_int_decoder if _LONG_RUN in body.translate(_DIGITS_AS_ZERO) else _decoder
    try:
        value = _decode(decoder, body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise Fault(PARSE_ERROR, "body is not UTF-8: %s" % e.reason) from None
    except ValueError as e:
        raise Fault(PARSE_ERROR, "not valid JSON: %s" % e) from None
    except RecursionError:
        raise Fault(PARSE_ERROR, "JSON nested too deeply") from None
    if brackets > limits.depth or most > limits.items:
        depth, widest = _shape(value)
        if depth > limits.depth:
            raise Fault(PARSE_ERROR, "values nested deeper than %d levels" % limits.depth)
        if widest > limits.items:
            raise Fault(INVALID_REQUEST, "an array or object of more than %d items" % limits.items)
    return value


def _error(fault: Fault, request_id: Any) -> bytes:
    """An error response, always encodable: ASCII, whatever the message holds."""
    return _error_encoder.encode({"jsonrpc": "2.0", "error": {"code": fault.code, "message": fault.message},
                                  "id": request_id}).encode("ascii")


def _one(request: Any, call: Call, report: Report, suspect: bool) -> bytes | None:
    """Run one request object; its encoded response, or None for a notification.  ``suspect``:
    the body may hold lone surrogates, which refuse the requests they are in, not the batch."""
    if not isinstance(request, dict):
        return _invalid("a request must be a JSON object", None, report)
    request_id = request.get("id")
    if request_id is not None and (type(request_id) not in (str, int, float)):
        return _invalid("id must be a string, a number or null", None, report)
    if suspect and _has_surrogate(request):
        return _invalid("a string holds a lone surrogate (U+D800-U+DFFF), which is not text",
                        None if _has_surrogate(request_id) else request_id, report)
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
        return _reply(result, request_id)
    except (TypeError, ValueError, RecursionError) as e:
        if method == MULTICALL and isinstance(result, list):
            return _reply(salvage_multicall(result, _encodable, report), request_id)
        unencodable = Fault(INTERNAL_ERROR, "the result of %s cannot be encoded: %s" % (method, e))
        report(unencodable)
        return _error(unencodable, request_id)


def _reply(result: Any, request_id: Any) -> bytes:
    """A result's response, as bytes: each is encoded on its own, so that one that UTF-8 cannot
    carry (a lone surrogate) fails alone (UnicodeEncodeError, a ValueError).  A text result with
    a number or text id, the commonest reply, is written directly, byte for byte as the encoder
    writes it (tests/unit/test_jsonrpc_codec.py holds it to that): the encoder's own setup for a
    small object costs more than the writing."""
    id_text = _ID_TEXT.get(type(request_id))
    if type(result) is str and id_text is not None:
        return ('{"jsonrpc":"2.0","result":%s,"id":%s}' % (_text(result), id_text(request_id))).encode("utf-8")
    return _encoder.encode({"jsonrpc": "2.0", "result": result, "id": request_id}).encode("utf-8")


def _encodable(value: Any) -> bool:
    try:
        _encoder.encode(value).encode("utf-8")
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def dumps_fault(fault: Fault) -> bytes:
    """A complete error response for a request whose id is unknown."""
    return _error(fault, None)


def _invalid(message: str, request_id: Any, report: Report) -> bytes:
    fault = Fault(INVALID_REQUEST, message)
    report(fault)
    return _error(fault, request_id)


def respond(body: bytes, call: Call, report: Report, limits: Limits = DEFAULT_LIMITS) -> bytes | None:
    """Answer a request body (decoded within ``limits``): the response bytes, or None when nothing
    is owed (notifications only).

    Faults raised by ``call`` are the dispatcher's, already logged; malformed
    requests and results that cannot be encoded are told to ``report``.  Each call of
    a batch succeeds or fails on its own, and so does each of a multicall's.
    """
    try:
        request = loads(body, limits)
    except Fault as fault:
        report(fault)
        return _error(fault, None)
    suspect = b"\\u" in body and _SURROGATE_ESCAPE.search(body) is not None
    if isinstance(request, list):
        if not request:
            return _invalid("empty batch", None, report)
        replies = []
        for item in request:
            reply = _one(item, call, report, suspect)
            if reply is not None:
                replies.append(reply)
        return b"[" + b",".join(replies) + b"]" if replies else None
    return _one(request, call, report, suspect)
