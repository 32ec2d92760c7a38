# SPDX-License-Identifier: Apache-2.0
"""The client's side of the two protocols: requests as bytes, answers back as values or Faults.

Both wires have the same shape: ``CONTENT_TYPE``, :meth:`call` and :meth:`result`
for one call, :meth:`batch` and :meth:`results` for several (a JSON-RPC batch,
an XML-RPC ``system.multicall``), where each result is a value or a
:class:`~clarens.faults.Fault`.
"""

from __future__ import annotations

import json
import xmlrpc.client
from typing import Any, Sequence

from clarens.faults import INTERNAL_ERROR, Fault

Call = tuple[str, Sequence[Any]]      # (method, params)


class ProtocolError(Exception):
    """An answer that is not well-formed in the protocol (never raised for a fault)."""


class Wire:
    """A protocol as the client speaks it."""
    NAME: str
    CONTENT_TYPE: str

    def call(self, method: str, params: Sequence[Any]) -> bytes:
        raise NotImplementedError

    def result(self, body: bytes) -> Any:
        raise NotImplementedError

    def batch(self, calls: Sequence[Call]) -> bytes:
        raise NotImplementedError

    def results(self, body: bytes, count: int) -> list[Any]:
        raise NotImplementedError


class XmlRpc(Wire):
    """XML-RPC, as :mod:`xmlrpc.client` writes and reads it (nil and builtin types on)."""
    NAME = "xmlrpc"
    CONTENT_TYPE = "text/xml"

    def call(self, method: str, params: Sequence[Any]) -> bytes:
        return xmlrpc.client.dumps(tuple(params), method, allow_none=True, encoding="utf-8").encode("utf-8")

    def result(self, body: bytes) -> Any:
        try:
            # bytes, so that expat honours the answer's declared encoding (typeshed says str)
            values, _ = xmlrpc.client.loads(body, use_builtin_types=True)  # type: ignore[arg-type]
        except xmlrpc.client.Fault as fault:
            raise _fault(fault.faultCode, fault.faultString) from None
        except Exception as e:   # expat's errors and malformed structures alike
            raise ProtocolError("not an XML-RPC answer: %s" % e) from None
        if len(values) != 1:
            raise ProtocolError("an XML-RPC answer with %d values" % len(values))
        return values[0]

    def batch(self, calls: Sequence[Call]) -> bytes:
        return self.call("system.multicall", [[{"methodName": m, "params": list(p)} for m, p in calls]])

    def results(self, body: bytes, count: int) -> list[Any]:
        return _from_multicall(self.result(body), count)


class JsonRpc(Wire):
    """JSON-RPC 2.0: strict JSON both ways (no NaN), ids 0..n-1 in a batch."""
    NAME = "jsonrpc"
    CONTENT_TYPE = "application/json"

    def call(self, method: str, params: Sequence[Any]) -> bytes:
        return _dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 0})

    def result(self, body: bytes) -> Any:
        return _outcome(_loads(body))

    def batch(self, calls: Sequence[Call]) -> bytes:
        return _dumps([{"jsonrpc": "2.0", "method": m, "params": list(p), "id": i} for i, (m, p) in enumerate(calls)])

    def results(self, body: bytes, count: int) -> list[Any]:
        answer = _loads(body)
        if isinstance(answer, dict):      # the server refused the batch as a whole
            _outcome(answer)
            raise ProtocolError("a JSON-RPC batch answered with one result")
        if not isinstance(answer, list):
            raise ProtocolError("a JSON-RPC batch answered with %s" % type(answer).__name__)
        by_id: dict[Any, Any] = {}
        for item in answer:
            try:
                by_id[item["id"]] = _outcome(item)
            except Fault as fault:
                by_id[item.get("id")] = fault
            except (TypeError, KeyError):
                raise ProtocolError("a malformed element in a JSON-RPC batch answer") from None
        missing = Fault(INTERNAL_ERROR, "the server's answer has no result for this call")
        return [by_id.get(i, by_id.get(None, missing)) for i in range(count)]


WIRES: dict[str, Wire] = {"xmlrpc": XmlRpc(), "jsonrpc": JsonRpc()}


def _dumps(value: Any) -> bytes:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise TypeError("cannot send this over JSON-RPC: %s" % e) from None


def _not_json(constant: str) -> Any:
    raise ValueError("%s is not JSON" % constant)


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body, parse_constant=_not_json)
    except ValueError as e:
        raise ProtocolError("not a JSON-RPC answer: %s" % e) from None


def _outcome(answer: Any) -> Any:
    """The result of one JSON-RPC response object, or its error raised as a Fault."""
    if not isinstance(answer, dict) or answer.get("jsonrpc") != "2.0":
        raise ProtocolError("not a JSON-RPC 2.0 response object")
    if "error" in answer:
        error = answer["error"]
        if not isinstance(error, dict):
            raise ProtocolError("a JSON-RPC error that is not an object")
        raise _fault(error.get("code"), error.get("message", ""))
    if "result" not in answer:
        raise ProtocolError("a JSON-RPC response with neither result nor error")
    return answer["result"]


def _from_multicall(answer: Any, count: int) -> list[Any]:
    """system.multicall's list: ``[value]`` for a result, a fault struct for a fault."""
    if not isinstance(answer, list) or len(answer) != count:
        raise ProtocolError("system.multicall answered with %r, not %d results" % (type(answer).__name__, count))
    out: list[Any] = []
    for item in answer:
        if isinstance(item, list) and len(item) == 1:
            out.append(item[0])
        elif isinstance(item, dict) and "faultCode" in item:
            out.append(_fault(item["faultCode"], item.get("faultString", "")))
        else:
            raise ProtocolError("a malformed system.multicall result (%s)" % type(item).__name__)
    return out


def _fault(code: Any, message: Any) -> Fault:
    """The Fault an answer describes; ProtocolError unless its code is an integer and its message a string."""
    if type(code) is not int or not isinstance(message, str):
        raise ProtocolError("a fault whose code is %s and message %s, not an integer and a string"
                            % (type(code).__name__, type(message).__name__))
    return Fault(code, message)
