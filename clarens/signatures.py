# SPDX-License-Identifier: Apache-2.0
"""Method signatures (``methods_sig``) and the parameter check derived from them.

A signature is ``"ret,arg1,arg2"`` using XML-RPC type names.  Each method's
signatures are compiled once, at load time, into a set of accepted tuples of
Python types, so checking a call is one tuple build and one set lookup.
"""

from __future__ import annotations

import datetime
import inspect
import itertools
from typing import Any, Callable, Sequence

from clarens.faults import INVALID_PARAMS, Fault

TYPE_NAMES = ("string", "int", "boolean", "double", "dateTime.iso8601", "base64", "array", "struct", "nil")

# The Python types each XML-RPC type decodes to.  An int is acceptable where a
# double is expected (a JSON number need not carry a fraction).
_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "int": (int,),
    "boolean": (bool,),
    "double": (float, int),
    "dateTime.iso8601": (datetime.datetime,),
    "base64": (bytes,),
    "array": (list,),
    "struct": (dict,),
    "nil": (type(None),),
}
# JSON has no dateTime or base64: those travel as strings in JSON-RPC.
_JSON_EXTRA: dict[str, tuple[type, ...]] = {"dateTime.iso8601": (str,), "base64": (str,)}

# For error messages: the XML-RPC name of a decoded value's type.
_NAME_OF = {str: "string", int: "int", bool: "boolean", float: "double", datetime.datetime: "dateTime.iso8601",
            bytes: "base64", list: "array", dict: "struct", type(None): "nil"}


def parse(spec: str) -> tuple[str, ...]:
    """``"int,string"`` -> ``("int", "string")``; ValueError naming the bad type."""
    if not isinstance(spec, str):
        raise ValueError("signature %r is not a string" % (spec,))
    types = tuple(t.strip() for t in spec.split(","))
    for t in types:
        if t not in _PY_TYPES:
            raise ValueError("signature %r: unknown type %r (known: %s)" % (spec, t, " ".join(TYPE_NAMES)))
    return types


class ParamCheck:
    """Validates a call's positional parameters against a method's signatures and arity.

    Construction raises ValueError for a callable no RPC call could invoke.
    """

    __slots__ = ("name", "signatures", "_exact", "_exact_json", "_min", "_max")

    def __init__(self, name: str, func: Callable, signatures: Sequence[tuple[str, ...]] | None):
        self.name = name
        self.signatures = list(signatures) if signatures else None
        self._exact = self._accepted(_PY_TYPES)
        self._exact_json = self._accepted({**_PY_TYPES, **{k: _PY_TYPES[k] + v for k, v in _JSON_EXTRA.items()}})
        self._min, self._max = _arity(func)
        for sig in self.signatures or ():
            if len(sig) - 1 < self._min or (self._max is not None and len(sig) - 1 > self._max):
                raise ValueError("signature %r of %s does not fit the function's parameters" % (",".join(sig), name))

    def _accepted(self, table: dict[str, tuple[type, ...]]) -> frozenset | None:
        if self.signatures is None:
            return None
        return frozenset(combo for sig in self.signatures
                         for combo in itertools.product(*(table[t] for t in sig[1:])))

    def __call__(self, params: list, json: bool = False) -> None:
        """Raise Fault(INVALID_PARAMS) unless ``params`` fit a signature (or, without one, the arity)."""
        accepted = self._exact_json if json else self._exact
        if accepted is not None and ((type(params[0]),) if len(params) == 1 else tuple(map(type, params))) in accepted:
            return      # (one parameter, the commonest call, without map's setup: a third less)
        n = len(params)
        counts = sorted({len(s) - 1 for s in self.signatures}) if self.signatures else None
        if counts is not None and n not in counts:
            raise Fault(INVALID_PARAMS, "%s takes %s parameter(s), %d given"
                        % (self.name, " or ".join(map(str, counts)), n))
        if accepted is not None:
            assert self.signatures is not None     # accepted is made from them
            raise Fault(INVALID_PARAMS, "%s(%s) does not match its signature(s): %s" % (
                self.name, ", ".join(map(type_name, params)),
                "; ".join("%s(%s) -> %s" % (self.name, ", ".join(s[1:]), s[0]) for s in self.signatures)))
        if n < self._min or (self._max is not None and n > self._max):
            expected = str(self._min) if self._min == self._max else (
                "%d or more" % self._min if self._max is None else "%d to %d" % (self._min, self._max))
            raise Fault(INVALID_PARAMS, "%s takes %s parameter(s), %d given" % (self.name, expected, n))


def _arity(func: Callable) -> tuple[int, int | None]:
    """(minimum, maximum or None) positional parameters ``func`` accepts."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return 0, None
    lo, hi = 0, 0
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            hi += 1
            if p.default is p.empty:
                lo += 1
        elif p.kind is p.VAR_POSITIONAL:
            return lo, None
        elif p.kind is p.KEYWORD_ONLY and p.default is p.empty:
            raise ValueError("%s has a required keyword-only parameter %r, which no RPC call can pass"
                             % (getattr(func, "__qualname__", func), p.name))
    return lo, hi


def positional_names(func: Callable) -> list[str] | None:
    """Names of ``func``'s positional parameters, to map JSON-RPC named params; None if unknown."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    return [p.name for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def type_name(value: Any) -> str:
    """The XML-RPC type name of a decoded value (for messages)."""
    return _NAME_OF.get(type(value), type(value).__name__)
