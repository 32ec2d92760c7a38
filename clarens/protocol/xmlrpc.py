"""XML-RPC: decode a methodCall, encode a methodResponse or a fault.

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
from typing import Any

from clarens.faults import INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR, Fault

CONTENT_TYPE = "text/xml; charset=utf-8"

_INT_RE = re.compile(r"\s*[+-]?[0-9]{1,20}\s*\Z")
_DOUBLE_RE = re.compile(r"\s*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?\s*\Z")
_DATETIME_RE = re.compile(r"\s*([0-9]{4})-?([0-9]{2})-?([0-9]{2})T([0-9]{2}):?([0-9]{2}):?([0-9]{2})"
                          r"(\.[0-9]+)?(Z|[+-][0-9]{2}:?[0-9]{2})?\s*\Z")
_INT64 = 1 << 63
_INT32 = 1 << 31

_SCALARS = {"string", "int", "i4", "i8", "ex:i8", "boolean", "double", "dateTime.iso8601", "base64", "nil", "ex:nil"}
_STRUCTURE = {"methodCall", "methodName", "params", "param", "value", "array", "data", "struct", "member", "name"}


class _Decoder:
    """expat callbacks building (method, params) from a methodCall."""

    def __init__(self, max_depth: int):
        self.max_depth = max_depth
        self.stack: list[Any] = []     # decoded values; struct member names as _Name
        self.marks: list[int] = []     # stack index where each open array/struct begins
        self.data = ""                 # character data since the last start tag
        self.bare = False              # inside <value> with no type element (yet)
        self.stray = False             # a <name> decoded outside any array/struct
        self.method: str | None = None
        self.root: str | None = None

    def start(self, tag: str, attrs: Any) -> None:
        self.data = ""
        if self.root is None:
            self.root = tag
            if tag != "methodCall":
                raise Fault(INVALID_REQUEST, "expected a <methodCall> document, got <%s>" % tag[:40])
        if tag == "value":
            self.bare = True
        elif tag in _SCALARS:
            self.bare = False
        elif tag == "array" or tag == "struct":
            self.bare = False
            self.marks.append(len(self.stack))
            if len(self.marks) > self.max_depth:
                raise Fault(PARSE_ERROR, "values nested deeper than %d levels" % self.max_depth)
        elif tag not in _STRUCTURE:
            raise Fault(PARSE_ERROR, "unknown element <%s>" % tag[:40])

    def chars(self, text: str) -> None:
        self.data += text              # buffer_text: usually the only piece

    def end(self, tag: str) -> None:
        decode = _END.get(tag)
        if decode is not None:
            decode(self, self.data)

    def value(self, data: str) -> None:
        if self.bare:          # <value>text</value> is a string
            self.stack.append(data)
            self.bare = False

    def string(self, data: str) -> None:
        self.stack.append(data)

    def integer(self, data: str) -> None:
        if not _INT_RE.match(data):
            raise Fault(PARSE_ERROR, "invalid integer %r" % data[:40])
        value = int(data)
        if not -_INT64 <= value < _INT64:
            raise Fault(PARSE_ERROR, "integer %s out of the 64-bit range" % data.strip()[:40])
        self.stack.append(value)

    def boolean(self, data: str) -> None:
        data = data.strip()
        if data not in ("0", "1"):
            raise Fault(PARSE_ERROR, "invalid boolean %r (expected 0 or 1)" % data[:40])
        self.stack.append(data == "1")

    def double(self, data: str) -> None:
        if not _DOUBLE_RE.match(data):
            raise Fault(PARSE_ERROR, "invalid double %r" % data[:40])
        value = float(data)
        if math.isinf(value):
            raise Fault(PARSE_ERROR, "double %r out of range" % data.strip()[:40])
        self.stack.append(value)

    def datetime(self, data: str) -> None:
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
            value = datetime.datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), min(micro, 999999), tzinfo)
        except ValueError:
            raise Fault(PARSE_ERROR, "invalid dateTime.iso8601 %r" % data[:40]) from None
        self.stack.append(value)

    def base64(self, data: str) -> None:
        try:
            self.stack.append(binascii.a2b_base64("".join(data.split()).encode("ascii"), strict_mode=True))
        except (binascii.Error, UnicodeEncodeError):
            raise Fault(PARSE_ERROR, "invalid base64 data") from None

    def nil(self, data: str) -> None:
        self.stack.append(None)

    def name(self, data: str) -> None:
        if not self.marks:             # nothing can take it off the top level
            self.stray = True
        self.stack.append(_Name(data))

    def array(self, data: str) -> None:
        mark = self.marks.pop()
        items = self.stack[mark:]
        if any(type(i) is _Name for i in items):
            raise Fault(PARSE_ERROR, "<name> outside a <struct> member")
        self.stack[mark:] = [items]

    def struct(self, data: str) -> None:
        mark = self.marks.pop()
        items = self.stack[mark:]
        keys, values = items[0::2], items[1::2]
        if len(keys) != len(values) or any(type(k) is not _Name for k in keys) or any(
                type(v) is _Name for v in values):
            raise Fault(PARSE_ERROR, "<struct> members must each hold one <name> and one <value>")
        self.stack[mark:] = [{str.__str__(k): v for k, v in zip(keys, values)}]

    def method_name(self, data: str) -> None:
        self.method = data.strip()


class _Name(str):
    """A struct member name on the decode stack (distinguishes it from a string value)."""


_END = {
    "value": _Decoder.value, "string": _Decoder.string, "int": _Decoder.integer, "i4": _Decoder.integer,
    "i8": _Decoder.integer, "ex:i8": _Decoder.integer, "boolean": _Decoder.boolean, "double": _Decoder.double,
    "dateTime.iso8601": _Decoder.datetime, "base64": _Decoder.base64, "nil": _Decoder.nil,
    "ex:nil": _Decoder.nil, "name": _Decoder.name, "array": _Decoder.array, "struct": _Decoder.struct,
    "methodName": _Decoder.method_name,
}


def _refuse_dtd(*args: Any) -> None:
    raise Fault(PARSE_ERROR, "document type declarations are not allowed")


def loads(body: bytes, max_depth: int = 64) -> tuple[str, list]:
    """Decode a methodCall into (method name, parameters); raises Fault."""
    # expat detects UTF-16/32 by itself, despite the UTF-8 override; such a body always
    # holds NUL bytes (its ASCII markup), which UTF-8 XML never does.
    if b"\x00" in body or body[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise Fault(PARSE_ERROR, "the body is not UTF-8")
    decoder = _Decoder(max_depth)
    parser = expat.ParserCreate("UTF-8")
    parser.buffer_text = True
    parser.StartDoctypeDeclHandler = _refuse_dtd
    parser.EntityDeclHandler = _refuse_dtd
    parser.StartElementHandler = decoder.start
    parser.EndElementHandler = decoder.end
    parser.CharacterDataHandler = decoder.chars
    try:
        parser.Parse(body, True)
    except expat.ExpatError as e:
        raise Fault(PARSE_ERROR, "not well-formed XML: %s" % e) from None
    except RecursionError:
        raise Fault(PARSE_ERROR, "document nested too deeply") from None
    if decoder.method is None:
        raise Fault(INVALID_REQUEST, "methodCall has no <methodName>")
    if decoder.stray:
        raise Fault(PARSE_ERROR, "<name> outside a <struct> member")
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
        _dump(item, out)
    out.append("</data></array></value>")


def _dump_dict(v: dict, out: list) -> None:
    out.append("<value><struct>")
    for key, item in v.items():
        if not isinstance(key, str):
            raise ValueError("struct key %r is not a string" % (key,))
        out.append("<member><name>%s</name>" % _escape(key))
        _dump(item, out)
        out.append("</member>")
    out.append("</struct></value>")


_DUMPERS = {
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


def dumps_response(value: Any) -> bytes:
    """Encode a successful result; raises Fault(INTERNAL_ERROR) if it cannot be represented."""
    out = [_RESPONSE_HEAD]
    try:
        _dump(value, out)
    except (ValueError, RecursionError) as e:
        raise Fault(INTERNAL_ERROR, "the result cannot be encoded: %s" % e) from None
    out.append(_RESPONSE_TAIL)
    return "".join(out).encode("utf-8")


def dumps_fault(fault: Fault) -> bytes:
    """Encode a fault response."""
    message = _INVALID_CHAR.sub("\ufffd", fault.message)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<methodResponse><fault><value><struct>'
            "<member><name>faultCode</name><value><int>%d</int></value></member>"
            "<member><name>faultString</name><value><string>%s</string></value></member>"
            "</struct></value></fault></methodResponse>\n" % (fault.code, _escape(message))).encode("utf-8")
