# SPDX-License-Identifier: Apache-2.0
"""XML-RPC: decode a methodCall, encode a methodResponse or a fault; :func:`respond` does all three.

Decoding is strict and safe by construction: any document type declaration is
refused (so no entity can be defined, expanded or fetched from outside), the
body is parsed as UTF-8 whatever it declares, container nesting is capped, and
each scalar must be a valid literal of its type.  Anything that is not
well-formed or cannot be decoded is a PARSE_ERROR fault; a well-formed document
that is not a methodCall is an INVALID_REQUEST fault.

Types: string, int/i4 (and the i8 / ex:i8 extension), boolean, double,
dateTime.iso8601 (as datetime.datetime), base64 (as bytes), array (list),
struct (dict), nil / ex:nil (None).
"""

from __future__ import annotations

import binascii
import datetime
import math
import re
import xml.parsers.expat as expat
import xmlrpc.client
from typing import Any, Callable

from clarens.dispatch import MULTICALL
from clarens.faults import INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR, Fault
from clarens.protocol import DEFAULT_LIMITS, Call, Limits, Report, salvage_multicall
from clarens.protocol.xmlrpc_fast import (
    XML_SPACE,
    NotPlain,
    flat_call,
    flat_multicall,
    plain_pieces,
    plain_text,
    unescape,
    xml_name,
)

PROTOCOL = "xmlrpc"
CONTENT_TYPE = "text/xml; charset=utf-8"

_INT_RE = re.compile(r"\s*[+-]?[0-9]{1,20}\s*\Z")
_DOUBLE_RE = re.compile(r"\s*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?\s*\Z")
_DATETIME_RE = re.compile(r"\s*([0-9]{4})-?([0-9]{2})-?([0-9]{2})T([0-9]{2}):?([0-9]{2}):?([0-9]{2})"
                          r"(\.[0-9]+)?(Z|[+-][0-9]{2}:?[0-9]{2})?\s*\Z")
_INT64 = 1 << 63
_INT32 = 1 << 31

_SCALARS = {"string", "int", "i4", "i8", "ex:i8", "boolean", "double", "dateTime.iso8601", "base64", "nil", "ex:nil"}
_STRUCTURE = {"methodCall", "methodName", "params", "param", "value", "array", "data", "struct", "member", "name"}
# Where each element may appear (its parent; "" for the root).  Checked at every start tag, so that
# a misplaced element is refused where it starts, and no nesting grows but that of values (bounded
# by max_depth): <param> in <param>, scalars outside <value>, a <name> outside a <member>.
_PARENTS: dict[str, frozenset[str]] = {
    "methodCall": frozenset({""}), "methodName": frozenset({"methodCall"}), "params": frozenset({"methodCall"}),
    "param": frozenset({"params"}), "value": frozenset({"param", "data", "member"}),
    "array": frozenset({"value"}), "struct": frozenset({"value"}), "data": frozenset({"array"}),
    "member": frozenset({"struct"}), "name": frozenset({"member"}), **{t: frozenset({"value"}) for t in _SCALARS}}


def _integer(data: str) -> int:
    if not _INT_RE.match(data):
        raise Fault(PARSE_ERROR, "invalid integer %r" % data[:40])
    value = int(data)
    if not -_INT64 <= value < _INT64:
        raise Fault(PARSE_ERROR, "integer %s out of the 64-bit range" % data.strip()[:40])
    return value


def _boolean(data: str) -> bool:
    data = data.strip()
    if data not in ("0", "1"):
        raise Fault(PARSE_ERROR, "invalid boolean %r (expected 0 or 1)" % data[:40])
    return data == "1"


def _double(data: str) -> float:
    if not _DOUBLE_RE.match(data):
        raise Fault(PARSE_ERROR, "invalid double %r" % data[:40])
    value = float(data)
    if math.isinf(value):
        raise Fault(PARSE_ERROR, "double %r out of range" % data.strip()[:40])
    return value


def _datetime(data: str) -> datetime.datetime:
    m = _DATETIME_RE.match(data)
    try:
        if not m:
            raise ValueError
        y, mo, d, h, mi, s, frac, tz = m.groups()
        tzinfo = None
        if tz == "Z":
            tzinfo = datetime.timezone.utc
        elif tz:
            sign = -1 if tz[0] == "-" else 1
            tzinfo = datetime.timezone(sign * datetime.timedelta(hours=int(tz[1:3]), minutes=int(tz[-2:])))
        micro = int(round(float(frac) * 1e6)) if frac else 0
        return datetime.datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), min(micro, 999999), tzinfo)
    except ValueError:
        raise Fault(PARSE_ERROR, "invalid dateTime.iso8601 %r" % data[:40]) from None


def _base64(data: str) -> bytes:
    try:
        return binascii.a2b_base64("".join(data.split()).encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        raise Fault(PARSE_ERROR, "invalid base64 data") from None


def _too_many(limits: Limits) -> Fault:
    return Fault(INVALID_REQUEST, "an array or struct of more than %d items" % limits.items)


def _nil(data: str) -> None:
    return None


_SCALAR = {"int": _integer, "i4": _integer, "i8": _integer, "ex:i8": _integer, "boolean": _boolean,
           "double": _double, "dateTime.iso8601": _datetime, "base64": _base64, "nil": _nil, "ex:nil": _nil}
_PLAIN = {"param", "params", "data", "member", "methodCall"}   # structure whose end needs no work
_KNOWN_NAMES = _SCALARS | _STRUCTURE
_CHUNK = 1 << 16            # bytes expat is given at a time: memory stays bounded


class _Name(str):
    """A struct member name on the decode stack (distinguishes it from a string value)."""


class _Decoder:
    """The XML-RPC rules, applied to a document as a sequence of *pieces*: ``"tag>text"`` for
    a start tag and ``"/tag>text"`` for an end tag, where ``text`` is the character data
    that follows the tag up to the next one.  Both readers (expat below, the piece reader
    of :mod:`~clarens.protocol.xmlrpc_fast`) produce pieces; the rules live only here.

    ``raw`` pieces come straight from splitting the document at ``<``: their text is
    still escaped and nothing has checked them yet, so :meth:`feed` also checks that
    they stay inside the plain subset of XML (element names without attributes, the five
    predefined entities and valid character references, properly nested, nothing after
    the root) and raises :class:`~clarens.protocol.xmlrpc_fast.NotPlain` as soon as they do not.
    """

    def __init__(self, limits: Limits):
        self.limits = limits
        self.max_depth = limits.depth
        self.values = 0                # <value> elements so far
        self.stack: list[Any] = []     # decoded values; struct member names as _Name
        self.marks: list[int] = []     # stack index where each open array/struct begins
        self.data = ""                 # character data since the last start tag
        self.bare = False              # inside <value> with no type element (yet)
        self.method: str | None = None
        self.root = False
        self.open: list[str] = []      # elements not yet closed

    def feed(self, pieces: list[str], raw: bool = False) -> None:
        stack, marks, push = self.stack, self.marks, self.stack.append
        elements = self.open
        data, bare, root, values = self.data, self.bare, self.root, self.values
        limits = self.limits
        try:
            for piece in pieces:
                tag, gt, text = piece.partition(">")
                if raw:
                    if not gt or not tag or (root and not elements):   # "<" alone, "<>", after the root
                        raise NotPlain
                    if "&" in text:
                        text = unescape(text)
                if tag[0] == "/":
                    tag = tag[1:]
                    if not raw:
                        elements.pop()             # expat has checked that it matches
                    elif not elements or elements.pop() != tag:
                        raise NotPlain
                else:
                    empty = raw and tag[-1] == "/"         # <tag/>: a start, then at once its end
                    if raw:
                        if empty:
                            tag = tag[:-1]
                        if tag not in _KNOWN_NAMES and not xml_name(tag):   # attributes, "!", odd names
                            raise NotPlain
                    parent = elements[-1] if elements else ""
                    if not empty:
                        elements.append(tag)
                    data = "" if empty else text
                    if not root:
                        if tag != "methodCall":
                            raise Fault(INVALID_REQUEST, "expected a <methodCall> document, got <%s>" % tag[:40])
                        root = True
                    if tag == "value":
                        bare = True
                        values += 1
                        if values > limits.values:
                            raise Fault(INVALID_REQUEST, "more than %d values in one request" % limits.values)
                    elif tag in _SCALARS:
                        bare = False
                    elif tag == "array" or tag == "struct":
                        bare = False
                        marks.append(len(stack))
                        if len(marks) > self.max_depth:
                            raise Fault(PARSE_ERROR, "values nested deeper than %d levels" % self.max_depth)
                    elif tag not in _STRUCTURE:
                        raise Fault(PARSE_ERROR, "unknown element <%s>" % tag[:40])
                    if parent not in _PARENTS[tag]:
                        raise Fault(PARSE_ERROR, "<%s> inside <%s>: not where XML-RPC has it"
                                    % (tag, parent or "nothing"))
                    if not empty:
                        continue
                # an end tag
                if raw and not elements and text.strip(XML_SPACE):   # text after the root
                    raise NotPlain
                if tag == "value":
                    if bare:              # <value>text</value> is a string
                        push(data)
                        bare = False
                elif tag == "string":
                    push(data)
                elif tag in _PLAIN:
                    pass
                elif tag == "base64":
                    if len(data) > limits.base64:
                        raise Fault(INVALID_REQUEST, "a base64 value of more than %d bytes" % limits.base64)
                    push(_base64(data))
                elif tag in _SCALAR:
                    push(_SCALAR[tag](data))
                elif tag == "name":
                    push(_Name(data))
                elif tag == "array":
                    mark = marks.pop()
                    items = stack[mark:]
                    if len(items) > limits.items:
                        raise _too_many(limits)
                    stack[mark:] = [items]
                elif tag == "struct":
                    mark = marks.pop()
                    items = stack[mark:]
                    if len(items) > 2 * limits.items:
                        raise _too_many(limits)
                    keys, members = items[0::2], items[1::2]
                    if len(keys) != len(members) or any(type(k) is not _Name for k in keys) or any(
                            type(v) is _Name for v in members):
                        raise Fault(PARSE_ERROR, "<struct> members must each hold one <name> and one <value>")
                    stack[mark:] = [{str.__str__(k): v for k, v in zip(keys, members, strict=True)}]
                elif tag == "methodName":
                    self.method = data.strip()
                data += text
        finally:
            self.data, self.bare, self.root, self.values = data, bare, root, values
        # Containers still open hold their items on the stack: refuse one that has already
        # grown past the bound (checked per batch of pieces, so a huge one stops early).
        top = len(stack)
        for mark in reversed(marks):
            if top - mark > 2 * limits.items:
                raise _too_many(limits)
            top = mark


def _refuse_dtd(*args: Any) -> None:
    raise Fault(PARSE_ERROR, "document type declarations are not allowed")


def _expat(body: bytes, decoder: _Decoder) -> None:
    """Read with expat, in chunks so that memory stays bounded, feeding ``decoder`` as it goes.

    Pieces already read are decoded before an error of expat's is raised, so the
    first problem in the document is the one reported.
    """
    pieces: list[str] = []
    append = pieces.append

    def chars(text: str) -> None:
        if pieces:                    # before the root: only whitespace, which expat has checked
            pieces[-1] += text

    parser = expat.ParserCreate("UTF-8")
    parser.buffer_text = True
    parser.StartDoctypeDeclHandler = _refuse_dtd
    parser.EntityDeclHandler = _refuse_dtd
    parser.StartElementHandler = lambda tag, attrs: append(tag + ">")
    parser.EndElementHandler = lambda tag: append("/" + tag + ">")
    parser.CharacterDataHandler = chars
    view = memoryview(body)
    try:
        for offset in range(0, max(len(body), 1), _CHUNK):
            parser.Parse(view[offset:offset + _CHUNK], offset + _CHUNK >= len(body))
            if len(pieces) > 1:       # the last piece's text may continue in the next chunk
                decoder.feed(pieces[:-1])
                del pieces[:-1]
    except expat.ExpatError as e:
        decoder.feed(pieces)
        raise Fault(PARSE_ERROR, "not well-formed XML: %s" % e) from None
    except RecursionError:
        raise Fault(PARSE_ERROR, "document nested too deeply") from None
    decoder.feed(pieces)


def loads(body: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[str, list]:
    """Decode a methodCall into (method name, parameters), within ``limits``; raises Fault."""
    # expat detects UTF-16/32 by itself, despite the UTF-8 override; such a body always
    # holds NUL bytes (its ASCII markup), which UTF-8 XML never does.
    if 0 in body or body[:2] in (b"\xff\xfe", b"\xfe\xff"):     # (0: NUL as a byte, a third of a substring's search)
        raise Fault(PARSE_ERROR, "the body is not UTF-8")
    text = plain_text(body)
    try:
        if text is None:
            raise NotPlain
        call = flat_call(text, _SCALAR, limits.values)
        if call is None:
            call = flat_multicall(text, _SCALAR, limits.depth, limits.items, limits.values)
        if call is not None:
            return call
        pieces = plain_pieces(text)
        if pieces is None:
            raise NotPlain
        decoder = _Decoder(limits)
        decoder.feed(pieces, raw=True)
        if decoder.open or not decoder.root:
            raise NotPlain
    except NotPlain:
        decoder = _Decoder(limits)
        _expat(body, decoder)
    if decoder.method is None:
        raise Fault(INVALID_REQUEST, "methodCall has no <methodName>")
    return decoder.method, decoder.stack


# -- encoding ---------------------------------------------------------------

_ESCAPE_NEEDED = re.compile("[&<>\r\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_INVALID_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _escape(text: str) -> str:
    if _ESCAPE_NEEDED.search(text) is None:
        return text
    bad = _INVALID_CHAR.search(text)
    if bad:
        raise ValueError("string contains %r, which XML 1.0 cannot carry" % bad.group())
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def _dump_str(v: str, out: list) -> None:
    out.append("<value><string>%s</string></value>" % _escape(v))


def _dump_int(v: int, out: list) -> None:
    if -_INT32 <= v < _INT32:
        out.append("<value><int>%d</int></value>" % v)
    elif -_INT64 <= v < _INT64:
        out.append("<value><i8>%d</i8></value>" % v)
    else:
        raise ValueError("integer %d exceeds the 64-bit range" % v)


def _dump_bool(v: bool, out: list) -> None:
    out.append("<value><boolean>1</boolean></value>" if v else "<value><boolean>0</boolean></value>")


def _dump_float(v: float, out: list) -> None:
    if not math.isfinite(v):
        raise ValueError("double %r cannot be sent in XML-RPC" % v)
    out.append("<value><double>%r</double></value>" % v)


def _dump_datetime(v: datetime.datetime, out: list) -> None:
    out.append("<value><dateTime.iso8601>%04d%02d%02dT%02d:%02d:%02d</dateTime.iso8601></value>"
               % (v.year, v.month, v.day, v.hour, v.minute, v.second))


def _dump_bytes(v: bytes, out: list) -> None:
    out.append("<value><base64>%s</base64></value>" % binascii.b2a_base64(v, newline=False).decode("ascii"))


def _dump_none(v: None, out: list) -> None:
    out.append("<value><nil/></value>")


def _dump_list(v: list, out: list) -> None:
    out.append("<value><array><data>")
    for item in v:
        (_DUMPERS.get(type(item)) or _dump)(item, out)     # (_dump's first step, without its call)
    out.append("</data></array></value>")


def _dump_dict(v: dict, out: list) -> None:
    out.append("<value><struct>")
    for key, item in v.items():
        if not isinstance(key, str):
            raise ValueError("struct key %r is not a string" % (key,))
        out.append("<member><name>%s</name>" % _escape(key))
        (_DUMPERS.get(type(item)) or _dump)(item, out)
        out.append("</member>")
    out.append("</struct></value>")


_DUMPERS: dict[type, Callable[[Any, list], None]] = {
    str: _dump_str, int: _dump_int, bool: _dump_bool, float: _dump_float, datetime.datetime: _dump_datetime,
    bytes: _dump_bytes, bytearray: _dump_bytes, type(None): _dump_none, list: _dump_list, tuple: _dump_list,
    dict: _dump_dict,
    xmlrpc.client.DateTime: lambda v, out: out.append(
        "<value><dateTime.iso8601>%s</dateTime.iso8601></value>" % _escape(v.value)),
    xmlrpc.client.Binary: lambda v, out: _dump_bytes(v.data, out),
}
_BASES = (bool, int, float, str, bytes, datetime.datetime, dict, list, tuple)


def _dump(value: Any, out: list) -> None:
    dumper = _DUMPERS.get(type(value))
    if dumper is None:
        base = next((b for b in _BASES if isinstance(value, b)), None)   # e.g. an IntEnum or a str subclass
        if base is None:
            raise ValueError("cannot encode a %s in XML-RPC" % type(value).__name__)
        dumper = _DUMPERS[base]
    dumper(value, out)


_RESPONSE_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n<methodResponse><params><param>'
_RESPONSE_TAIL = "</param></params></methodResponse>\n"


def dumps_response(value: Any, method: str | None = None) -> bytes:
    """Encode a successful result (of ``method``, named in the fault); raises Fault(INTERNAL_ERROR)
    if it cannot be represented."""
    if type(value) is str and _ESCAPE_NEEDED.search(value) is None:   # the commonest result
        return (_RESPONSE_HEAD + "<value><string>" + value + "</string></value>" + _RESPONSE_TAIL).encode("utf-8")
    out = [_RESPONSE_HEAD]
    try:
        _dump(value, out)
    except (ValueError, RecursionError) as e:
        raise Fault(INTERNAL_ERROR, "the result%s cannot be encoded: %s" % (" of " + method if method else "", e)
                    ) from None
    out.append(_RESPONSE_TAIL)
    return "".join(out).encode("utf-8")


def dumps_fault(fault: Fault) -> bytes:
    """Encode a fault response."""
    message = _INVALID_CHAR.sub("\ufffd", fault.message)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<methodResponse><fault><value><struct>'
            "<member><name>faultCode</name><value><int>%d</int></value></member>"
            "<member><name>faultString</name><value><string>%s</string></value></member>"
            "</struct></value></fault></methodResponse>\n" % (fault.code, _escape(message))).encode("utf-8")


def respond(body: bytes, call: Call, report: Report, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Answer a request body: decode it (within ``limits``), ``call`` the method, encode the
    result or fault.

    Faults raised by ``call`` are the dispatcher's, already logged; a body that
    cannot be decoded and a result that cannot be encoded are told to ``report``.
    A multicall result that cannot be encoded loses only the sub-results at fault.
    """
    try:
        name, params = loads(body, limits)
    except Fault as fault:
        report(fault)
        return dumps_fault(fault)
    try:
        result = call(name, params)
    except Fault as fault:
        return dumps_fault(fault)
    try:
        return dumps_response(result, name)
    except Fault as fault:
        if name == MULTICALL and isinstance(result, list):
            return dumps_response(salvage_multicall(result, _encodable, report), name)
        report(fault)
        return dumps_fault(fault)


def _encodable(value: Any) -> bool:
    try:
        _dump(value, [])
    except (ValueError, RecursionError):
        return False
    return True
