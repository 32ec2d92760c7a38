# SPDX-License-Identifier: Apache-2.0
"""The XML-RPC decoder's fast paths: performance machinery, fenced off from the rules.

Small bodies are first read here, as long as they stay inside a strict subset of
XML: UTF-8 without carriage returns or characters XML forbids, elements without
attributes, the five predefined entities and valid character references, an
optional XML declaration, nothing after the root element.  A call with only
scalar parameters is read whole by two regular expressions (the flat reader,
:func:`flat_call`); any other plain document is split at ``<`` into pieces for
the decoder's rules (the piece reader, :func:`plain_pieces`).  Anything else
(comments, CDATA, a DOCTYPE, attributes, any error) raises or returns what sends
the document to expat, from the start.

**The contract**: no fast path accepts a document expat would refuse, or reads
one differently.  ``tests/unit/test_xmlrpc_codec.py`` holds it to that, comparing
each reader with expat on thousands of generated, hand-written and mutated
documents.  Why it exists (``./run bench``, bench/README.md): for ``echo('hi')``
the flat reader takes 1.7 us in-process against 7.4 us for the stdlib's
``xmlrpc.client.loads``, and about 7 us less per request inside Apache than the
piece reader, which is itself faster than expat on small documents.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping

FAST_MAX = 1 << 16          # larger bodies go to expat, which reads them in bounded chunks
XML_SPACE = " \t\n"

_XML_NAME = re.compile(r"[A-Za-z_][-A-Za-z0-9._:]*\Z")
_XML_DECL = re.compile(r"""\?xml[ \t\n]+version[ \t\n]*=[ \t\n]*(["'])1\.[0-9]+\1"""
                       r"""(?:[ \t\n]+encoding[ \t\n]*=[ \t\n]*(["'])[A-Za-z][-A-Za-z0-9._]*\2)?"""
                       r"""(?:[ \t\n]+standalone[ \t\n]*=[ \t\n]*(["'])(?:yes|no)\3)?[ \t\n]*\?\Z""")
_REFERENCE = re.compile(r"&(?:(lt|gt|amp|quot|apos)|#([0-9]{1,7})|#x([0-9a-fA-F]{1,6}));")
_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}
# Bytes XML forbids in text (controls, NUL included), and the carriage return, which XML
# normalises: documents with any of them are left to expat.  The table maps each of them to NUL
# and every other byte to itself, so that one translate and one byte search find any (a third of
# what deleting them cost).
_NOT_PLAIN = bytes(0 if byte < 0x20 and byte not in (0x09, 0x0A) else byte for byte in range(256))
_USUAL_DECLS = {"?xml version='1.0'?", '?xml version="1.0"?', '?xml version="1.0" encoding="UTF-8"?',
                "?xml version='1.0' encoding='UTF-8'?", '?xml version="1.0" encoding="utf-8"?'}


class NotPlain(Exception):
    """The document leaves the subset the fast paths read: expat must read it from the start."""


def xml_name(tag: str) -> bool:
    """Whether ``tag`` is a plain element name (no attributes, no ``!`` or ``?``)."""
    return _XML_NAME.match(tag) is not None


def _xml_char(code: int) -> bool:
    return code in (0x9, 0xA, 0xD) or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD or 0x10000 <= code <= 0x10FFFF


def unescape(text: str) -> str:
    """Resolve predefined entities and character references; NotPlain if anything else follows an ``&``."""
    out, pos = [], 0
    for m in _REFERENCE.finditer(text):
        before = text[pos:m.start()]
        if "&" in before:
            raise NotPlain
        named, decimal, hexadecimal = m.groups()
        if named:
            out.append(before + _ENTITIES[named])
        else:
            code = int(decimal) if decimal else int(hexadecimal, 16)
            if not _xml_char(code):
                raise NotPlain
            out.append(before + chr(code))
        pos = m.end()
    rest = text[pos:]
    if "&" in rest:
        raise NotPlain
    out.append(rest)
    return "".join(out)


def plain_text(body: bytes) -> str | None:
    """A small body decoded, if its bytes allow a plain document; None for expat."""
    if len(body) > FAST_MAX or 0 in body.translate(_NOT_PLAIN) or b"]]>" in body:
        return None
    if not body.isascii() and (b"\xef\xbf\xbe" in body or b"\xef\xbf\xbf" in body):   # U+FFFE, U+FFFF
        return None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _usual_declaration(decl: str) -> bool:
    return decl in _USUAL_DECLS or _XML_DECL.match(decl) is not None


def plain_pieces(text: str) -> list[str] | None:
    """The raw pieces of a plain text for the piece reader, or None for expat."""
    pieces = text.split("<")
    if pieces[0].strip(XML_SPACE) or len(pieces) < 2:    # text (or a byte-order mark) before the first tag
        return None
    if pieces[1][:1] == "?":                             # the XML declaration: first thing in the document
        decl, gt, after = pieces[1].partition(">")
        if pieces[0] or not gt or not _usual_declaration(decl) or after.strip(XML_SPACE):
            return None
        return pieces[2:]
    return pieces[1:]


# The commonest call by far has only scalar parameters.  A plain text that is exactly
# such a call (whitespace only between elements, no empty-element tags but <nil/>)
# is read by two regular expressions instead of tag by tag, with the same scalar rules.
# Every repetition is possessive (*+): what each one takes (spaces, text up to a "<", whole
# <param> elements) never holds what must follow it, so giving some back could never make a
# match, and not keeping the places to give back from saves a quarter of the match.
_S = r"[ \t\n]*+"
_FLAT_TYPES = ("string", "int", "i4", "i8", "boolean", "double")
_FLAT_VALUE = (r"<value>(?:{s}<(?P<type>{types})>(?P<text>[^<]*+)</(?P=type)>{s}"
               r"|{s}<(?P<nil>nil)/>{s}|(?P<bare>[^<]*+))</value>").format(s=_S, types="|".join(_FLAT_TYPES))
_FLAT_CALL = re.compile(
    r"(?:<(?P<decl>\?xml[^<>]*+)>)?{s}<methodCall>{s}<methodName>(?P<name>[^<]*+)</methodName>{s}"
    r"(?:<params>{s}(?P<params>(?:<param>{s}{value}{s}</param>{s})*+)</params>{s})?</methodCall>{s}\Z".format(
        s=_S, value=_FLAT_VALUE))
_FLAT_PARAM = re.compile(_FLAT_VALUE)

# system.multicall as clients send it: one parameter, an array of structs of two members each,
# methodName (a string) and params (an array of scalars), in either order (a hash's order, for
# some clients).  Each call is matched where the one before it ends (from the array's start), its
# values read with the flat reader's scalar rules; what follows the last call must end the document.
_SCALAR_VALUE = r"<value>(?:{s}(?:{typed}){s}|{s}<nil/>{s}|[^<]*+)</value>".format(
    s=_S, typed="|".join("<{0}>[^<]*+</{0}>".format(t) for t in _FLAT_TYPES))
_NAME_MEMBER = (r"<member>{s}<name>methodName</name>{s}<value>(?:{s}<string>(?P<{o}string>[^<]*+)</string>{s}"
                r"|(?P<{o}bare>[^<]*+))</value>{s}</member>")
_PARAMS_MEMBER = (r"<member>{s}<name>params</name>{s}<value>{s}<array>{s}<data>{s}(?P<{o}params>(?:{scalar}{s})*+)"
                  r"</data>{s}</array>{s}</value>{s}</member>")
_MULTICALL_HEAD = re.compile(
    r"(?:<(?P<decl>\?xml[^<>]*+)>)?{s}<methodCall>{s}<methodName>(?P<name>[^<]*+)</methodName>{s}"
    r"<params>{s}<param>{s}<value>{s}<array>{s}<data>{s}".format(s=_S))
# Its groups, in this order: astring, abare, aparams (methodName first), reversed, bparams, bstring, bbare.
_MULTICALL_CALL = re.compile(
    r"<value>{s}<struct>{s}(?:{a_name}{s}{a_params}|(?P<reversed>{b_params}){s}{b_name}){s}</struct>{s}</value>{s}"
    .format(s=_S, a_name=_NAME_MEMBER.format(s=_S, o="a"), b_name=_NAME_MEMBER.format(s=_S, o="b"),
            a_params=_PARAMS_MEMBER.format(s=_S, o="a", scalar=_SCALAR_VALUE),
            b_params=_PARAMS_MEMBER.format(s=_S, o="b", scalar=_SCALAR_VALUE)))
_MULTICALL_TAIL = re.compile(r"</data>{s}</array>{s}</value>{s}</param>{s}</params>{s}</methodCall>{s}\Z".format(s=_S))
MULTICALL_DEPTH = 3         # arrays and structs nested in such a call: array, struct, array


def _scalars(section: str, scalars: Mapping[str, Callable[[str], Any]]) -> list[Any]:
    """The values of a run of flat scalar <value> elements, in order."""
    params: list[Any] = []
    push = params.append
    for kind, data, nil, bare in _FLAT_PARAM.findall(section):
        if nil:
            push(None)
            continue
        if not kind:
            data = bare
        if "&" in data:
            data = unescape(data)
        push(data if not kind or kind == "string" else scalars[kind](data))
    return params


def flat_call(text: str, scalars: Mapping[str, Callable[[str], Any]], values: int) -> tuple[str, list] | None:
    """(method name, parameters) of a plain text that is a call with only scalar parameters,
    or None; ``scalars`` are the decoder's converters by type name (Fault for an invalid
    scalar); NotPlain for a reference the plain subset lacks.  None too for more parameters
    than ``values`` (the request's bound): the piece reader refuses those, with its reason."""
    m = _FLAT_CALL.match(text)
    if m is None:
        return None
    decl, name, section = m.group("decl", "name", "params")
    if decl is not None and not _usual_declaration(decl):
        return None
    if section and section.count("<value>") > values:    # a plain text's strings hold no "<"
        return None
    if "&" in name:
        name = unescape(name)
    return name.strip(), _scalars(section, scalars) if section else []


def flat_multicall(text: str, scalars: Mapping[str, Callable[[str], Any]], depth: int, items: int,
                   values: int) -> tuple[str, list] | None:
    """(method name, [calls]) of a plain text that is a call whose one parameter is an array of
    calls each with only scalar parameters (``{"methodName": str, "params": [scalars]}``, the
    members in the document's order), as :func:`flat_call` reads them; None for any other text,
    and for any that reaches the decoder's limits (``depth``, ``items``, ``values``): the piece
    reader refuses those, with its reasons."""
    if depth < MULTICALL_DEPTH or items < 2:
        return None
    m = _MULTICALL_HEAD.match(text)
    if m is None:
        return None
    decl, name = m.group("decl", "name")
    if decl is not None and not _usual_declaration(decl):
        return None
    if "&" in name:
        name = unescape(name)
    # The shape first: a call after another, then the end of the document (an array of anything else,
    # such as validator1's strings, stops here at its first value, unread).
    found = []
    end = m.end()
    while (call := _MULTICALL_CALL.match(text, end)) is not None:
        found.append(call.groups())
        end = call.end()
    if _MULTICALL_TAIL.match(text, end) is None:
        return None
    # Then the limits, before any value is converted: where the piece reader would refuse the request
    # before it reaches an invalid value, this reader must not report that value.  Every <value> tag
    # counts towards the request's values; a call's parameters can be too many only if the request
    # holds more values than one array may (looked at call by call, where the piece reader meets them).
    if len(found) > items:
        return None
    tags = text.count("<value>")
    if tags > values:
        return None
    calls: list[dict[str, Any]] = []
    push = calls.append
    for string, bare, given, reverse, given_b, string_b, bare_b in found:
        if reverse is not None:
            string, bare, given = string_b, bare_b, given_b
        if tags > items and given.count("<value>") > items:
            return None
        method = bare if string is None else string
        if "&" in method:
            method = unescape(method)
        params = _scalars(given, scalars)
        push({"params": params, "methodName": method} if reverse is not None else
             {"methodName": method, "params": params})
    return name.strip(), [calls]
