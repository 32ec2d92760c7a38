# SPDX-License-Identifier: Apache-2.0
"""The XML-RPC codec on its own: strict, safe decoding and faithful encoding."""

import datetime
import random
import xmlrpc.client

import pytest

from clarens.faults import INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR, Fault
from clarens.protocol import DEFAULT_LIMITS, Limits
from clarens.protocol import xmlrpc as codec
from clarens.protocol import xmlrpc_fast as fastpath


def call(*params, method="echo.echo"):
    return xmlrpc.client.dumps(params, method, allow_none=True).encode("utf-8")


def fault_code(body, *args):
    with pytest.raises(Fault) as info:
        codec.loads(body, *args)
    return info.value.code


@pytest.mark.parametrize("value", [
    "", "plain", "äöü € 𝄞 <&> ]]> \"'", 0, -1, 2**31 - 1, -2**31, True, False, 0.5, -1e-300, 1e300,
    datetime.datetime(1999, 12, 31, 23, 59, 58), b"", b"\x00\xffbinary", None, [], {}, [1, "a", [2, [3]]],
    {"a": {"b": [None, {"c": 1.5}]}, "": "empty key"},
])
def test_round_trip_through_stdlib_client(value):
    method, params = codec.loads(call(value))
    assert method == "echo.echo" and params == [value]
    decoded = xmlrpc.client.loads(codec.dumps_response(value), use_builtin_types=True)[0][0]
    assert decoded == value and type(decoded) is type(value)


def test_bare_value_text_is_a_string_and_types_are_exact():
    body = (b"<?xml version='1.0'?><methodCall><methodName>m</methodName><params>"
            b"<param><value>bare</value></param><param><value><i4>7</i4></value></param>"
            b"<param><value><i8>-9000000000</i8></value></param><param><value><ex:nil/></value></param>"
            b"<param><value><dateTime.iso8601>2024-02-29T12:30:00Z</dateTime.iso8601></value></param>"
            b"</params></methodCall>")
    _, params = codec.loads(body)
    assert params[:4] == ["bare", 7, -9000000000, None]
    assert params[4] == datetime.datetime(2024, 2, 29, 12, 30, tzinfo=datetime.timezone.utc)


def test_64_bit_integers_use_i8():
    body = codec.dumps_response([2**40, -2**63])
    assert b"<i8>1099511627776</i8>" in body
    assert xmlrpc.client.loads(body)[0][0] == [2**40, -2**63]


def test_base64_with_line_breaks():
    body = (b"<methodCall><methodName>m</methodName><params><param><value><base64>aGVs\nbG8=\n"
            b"</base64></value></param></params></methodCall>")
    assert codec.loads(body)[1] == [b"hello"]


def test_no_params_element_means_no_parameters():
    assert codec.loads(b"<methodCall><methodName>system.listMethods</methodName></methodCall>") == (
        "system.listMethods", [])


@pytest.mark.parametrize("body", [
    b"<methodCall><methodName>x</methodName><params><param><value><int>1.5</int></value></param></params></methodCall>",
    b"<methodCall><methodName>x</methodName><params><param><value><int>1_000</int></value></param></params></methodCall>",
    b"<methodCall><methodName>x</methodName><params><param><value><int>99999999999999999999</int></value></param></params></methodCall>",
    b"<methodCall><methodName>x</methodName><params><param><value><boolean>yes</boolean></value></param></params></methodCall>",
    b"<methodCall><methodName>x</methodName><params><param><value><double>nan</double></value></param></params></methodCall>",
    b"<methodCall><methodName>x</methodName><params><param><value><double>1e999</double></value></param></params></methodCall>",
    b"<methodCall><methodName>x</methodName><params><param><value><dateTime.iso8601>2024-13-01T00:00:00</dateTime.iso8601></value></param></params></methodCall>",
    b"<methodCall><methodName>x</methodName><params><param><value><base64>!!!=</base64></value></param></params></methodCall>",
    b"<methodCall><methodName>x</methodName><params><param><value><object/></value></param></params></methodCall>",
    b"<methodCall><methodName>x</methodName><params><param><value><struct><member><value>1</value></member></struct></value></param></params></methodCall>",
    b"<methodCall><methodName>x</methodName><params><param><value><array><data><name>n</name></data></array></value></param></params></methodCall>",
    b"<methodCall><methodName>x</methodName><params>",   # truncated
    b"not xml at all",
    "<methodCall><methodName>caf\xe9</methodName></methodCall>".encode("latin-1"),   # not UTF-8
    ("<?xml version='1.0' encoding='ISO-8859-1'?><methodCall><methodName>caf\xe9</methodName>"
     "</methodCall>").encode("latin-1"),
])
def test_malformed_bodies_are_parse_errors(body):
    assert fault_code(body) == PARSE_ERROR


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_bodies_are_refused_even_though_expat_could_read_them(encoding):
    body = "<?xml version='1.0'?><methodCall><methodName>echo.echo</methodName></methodCall>".encode(encoding)
    assert fault_code(body) == PARSE_ERROR


def test_entity_expansion_and_external_entities_are_refused():
    laughs = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
              b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
              b"<methodCall><methodName>&lol2;</methodName></methodCall>")
    xxe = (b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
           b"<methodCall><methodName>&x;</methodName></methodCall>")
    undefined = b"<methodCall><methodName>&x;</methodName></methodCall>"
    assert fault_code(laughs) == fault_code(xxe) == fault_code(undefined) == PARSE_ERROR


def test_nesting_is_capped():
    value = [[[[["x"]]]]]
    deep = call(value)
    assert codec.loads(deep, Limits(depth=5))[1] == [value]
    assert fault_code(deep, Limits(depth=4)) == PARSE_ERROR


def test_structure_errors_are_invalid_requests():
    assert fault_code(b"<methodResponse><params/></methodResponse>") == INVALID_REQUEST
    assert fault_code(b"<methodCall><params/></methodCall>") == INVALID_REQUEST


@pytest.mark.parametrize("value", [object(), {1: "int key"}, 2**64, float("nan"), "bell\x07", [float("inf")]])
def test_unencodable_results_are_internal_errors(value):
    with pytest.raises(Fault) as info:
        codec.dumps_response(value)
    assert info.value.code == INTERNAL_ERROR


def test_carriage_return_survives():
    assert xmlrpc.client.loads(codec.dumps_response("a\r\nb"))[0][0] == "a\r\nb"


def test_fault_response_is_well_formed_even_with_unsafe_text():
    body = codec.dumps_fault(Fault(-32500, "bad <thing> & \x00 control"))
    with pytest.raises(xmlrpc.client.Fault) as info:
        xmlrpc.client.loads(body)
    assert info.value.faultCode == -32500 and "<thing> &" in info.value.faultString


# -- the fast paths (clarens.protocol.xmlrpc_fast) never disagree with expat: their contract --

def _outcome(feed, limits=DEFAULT_LIMITS):
    decoder = codec._Decoder(limits)
    try:
        feed(decoder)
        if decoder.method is None:
            return ("fault", INVALID_REQUEST)
        return ("ok", decoder.method, repr(decoder.stack))
    except Fault as fault:
        return ("fault", fault.code, fault.message)


_PIECES = ["<", ">", "&", "&amp;", "&lt;", "&#65;", "&#x10FFFF;", "&#0;", "&#xD800;", "&bogus;", "&#;", "/", " ", "\t",
           "\n", "\r", "\r\n", "?", "!", "]]>", "<!-- c -->", "<![CDATA[x]]>", "<?pi x?>", "é", "\u2028", "\ufeff",
           "<x a='1'>", "<value/>", "</value>", "<value>", "<string>", "</string>", "<nil/>", "<i4>7</i4>",
           "<?xml version='1.0'?>", '<?xml version="1.0" encoding="ISO-8859-1"?>', "<methodCall>", "</methodCall>"]


def _mutations(seed: int, count: int):
    rng = random.Random(seed)
    base = [xmlrpc.client.dumps(params, "m.x", allow_none=True) for params in (
        ("hi",), (1, True, 2.5), ([1, ["a", {"k": None}]],), ({"a": b"\x00\x01", "b": "<&>"},), ())]
    for _ in range(count):
        doc = rng.choice(base)
        for _ in range(rng.randint(1, 3)):
            at = rng.randint(0, len(doc))
            cut = rng.choice([0, 0, 1, 2, 5])
            doc = doc[:at] + rng.choice(_PIECES) + doc[at + cut:]
        yield doc.encode("utf-8")


def _random_value(rng, depth=0):
    r = rng.random()
    if depth > 3 or r < 0.55:
        return rng.choice(["hi", "", "a<b&c>\"'", 0, -7, 2**31 - 1, True, False, 1.5, None, b"\x00\xff",
                           datetime.datetime(2020, 1, 2, 3, 4, 5), "é\U0001F600\u2028", "  spaced  ", "\t\n"])
    if r < 0.8:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["a", "b&c", "", "<k>"]): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def _well_formed(seed: int, count: int):
    """Valid calls with references and spacing varied where XML allows it (in text, between tags)."""
    rng = random.Random(seed)
    for _ in range(count):
        params = tuple(_random_value(rng) for _ in range(rng.randint(0, 3)))
        doc = xmlrpc.client.dumps(params, "m.x", allow_none=True)
        doc = doc.replace("&amp;", rng.choice(["&amp;", "&#38;", "&#x26;"]))
        doc = doc.replace("&lt;", rng.choice(["&lt;", "&#60;", "&#x3C;"]))
        doc = doc.replace(">\n<", rng.choice([">\n<", "><", "> \t <"]))
        if rng.random() < 0.3:
            doc = doc.replace("<?xml version='1.0'?>", rng.choice(["", '<?xml version="1.0" encoding="utf-8"?>',
                                                                  "<?xml version='1.0' standalone='yes'?>"]))
        yield doc.encode("utf-8")


def _fast(body):
    """What the piece reader alone makes of ``body``: an outcome, or None where it defers to expat."""
    text = fastpath.plain_text(body)
    pieces = None if text is None else fastpath.plain_pieces(text)
    if pieces is None:
        return None

    def feed(decoder):
        decoder.feed(pieces, raw=True)
        if decoder.open or not decoder.root:
            raise fastpath.NotPlain
    try:
        return _outcome(feed)
    except fastpath.NotPlain:
        return None


def test_fast_path_agrees_with_expat_on_every_document_it_reads():
    fast_taken = 0
    for body in list(_well_formed(2, 4000)) + list(_mutations(1, 20000)):
        fast = _fast(body)
        if fast is None:
            continue
        fast_taken += 1
        assert fast == _outcome(lambda d, body=body: codec._expat(body, d)), body
    assert fast_taken > 4000   # the comparison covered many documents the fast path accepts


def _flat(body, limits=DEFAULT_LIMITS):
    """What the flat reader alone makes of ``body`` within ``limits``: an outcome, or None where it defers."""
    text = fastpath.plain_text(body)
    try:
        call = None if text is None else fastpath.flat_call(text, codec._SCALAR, limits.values)
    except fastpath.NotPlain:
        return None
    except Fault as fault:
        return ("fault", fault.code, fault.message)
    return None if call is None else ("ok", call[0], repr(call[1]))


_HAND_WRITTEN = ["<int>x</int>", "<int> 12 </int>", "<i4>+3</i4>", "<boolean>2</boolean>", "<boolean> 1 </boolean>",
                 "<double>1e999</double>", "<double>.5</double>", "<i8>99999999999999999999</i8>", "<int>1 2</int>"]


def _flat_calls(seed: int, count: int):
    """Calls with only scalar parameters, spaced and escaped in the ways XML allows, some mutated."""
    rng = random.Random(seed)
    scalars = ["hi", "", "a<b&c>\"'", " spaced ", "\t\n", "é\U0001F600", 0, -7, 2**31 - 1, True, 1.5, -0.0, None]
    for _ in range(count):
        params = tuple(rng.choice(scalars) for _ in range(rng.randint(0, 4)))
        doc = xmlrpc.client.dumps(params, rng.choice(["m.x", " m.x ", "a&amp;b"]), allow_none=True)
        if rng.random() < 0.25:   # scalars written by hand, some of them invalid
            doc = doc.replace("<params>\n", "<params>\n<param>\n<value>%s</value>\n</param>\n" % rng.choice(
                _HAND_WRITTEN), 1)
        yield _varied(rng, doc, 1)


def _varied(rng, doc: str, strings: int) -> bytes:
    """``doc`` as written otherwise: its first ``strings`` <string> tags dropped or spaced, the first end
    tag of one changed, other spacing between tags, references for "<", another declaration or none,
    and sometimes a piece of markup or text put in anywhere."""
    doc = doc.replace("<string>", rng.choice(["<string>", "", " <string>"]), strings)
    doc = doc.replace("</string>", rng.choice(["</string>", "</int>", "</string> \n"]), 1)
    doc = doc.replace(">\n<", rng.choice([">\n<", "><", "> \t <"])).replace("&lt;", rng.choice(["&lt;", "&#60;"]))
    if rng.random() < 0.3:
        doc = doc.replace("<?xml version='1.0'?>", rng.choice(["", " ", '<?xml version="1.0" encoding="utf-8"?>',
                                                              "<?xml version='1.0' encoding='latin-1'?>"]))
    if rng.random() < 0.3:
        at = rng.randint(0, len(doc))
        doc = doc[:at] + rng.choice(_PIECES) + doc[at + rng.choice([0, 1, 3]):]
    return doc.encode("utf-8")


@pytest.mark.parametrize("limits, taken", [(DEFAULT_LIMITS, 3000), (Limits(values=2), 2000)],
                         ids=["default", "values=2"])
def test_flat_reader_agrees_with_expat_on_every_document_it_reads(limits, taken):
    bodies = list(_flat_calls(3, 6000)) + list(_well_formed(4, 2000)) + list(_mutations(5, 10000))
    flat_taken, faults_seen = _agrees_with_expat(_flat, bodies, limits)
    assert flat_taken > taken and faults_seen > taken // 10, (flat_taken, faults_seen)   # many, some invalid scalars


def _agrees_with_expat(reader, bodies, limits):
    """Assert that ``reader`` (a fast reader's outcome, or None where it defers) decodes each of
    ``bodies`` it reads as expat does within ``limits``: (bodies it read, of which faults)."""
    read = faults = 0
    for body in bodies:
        fast = reader(body, limits)
        if fast is None:
            continue
        read += 1
        faults += fast[0] == "fault"
        assert fast == _outcome(lambda d, body=body: codec._expat(body, d), limits), body
    return read, faults


def test_a_flat_call_past_the_values_bound_is_refused_as_any_other():
    """The flat reader takes a call of scalars at the bound, and leaves one past it to the
    decoder, which refuses it (it took any number once, whatever ``values`` said)."""
    limits = Limits(values=10)
    assert codec.loads(call(*range(10)), limits) == ("echo.echo", list(range(10)))
    assert _flat(call(*range(11)), limits) is None
    with pytest.raises(Fault) as info:
        codec.loads(call(*range(11)), limits)
    assert (info.value.code, info.value.message) == (INVALID_REQUEST, "more than 10 values in one request")


def _flat_multicall(body, limits=DEFAULT_LIMITS):
    """What the multicall reader alone makes of ``body`` within ``limits``: an outcome, or None where it defers."""
    text = fastpath.plain_text(body)
    try:
        call = None if text is None else fastpath.flat_multicall(text, codec._SCALAR, limits.depth, limits.items,
                                                                 limits.values)
    except fastpath.NotPlain:
        return None
    except Fault as fault:
        return ("fault", fault.code, fault.message)
    return None if call is None else ("ok", call[0], repr(call[1]))


def _multicalls(seed: int, count: int):
    """system.multicall bodies as clients send them, their members in either order, spaced and escaped
    in the ways XML allows, some with values the reader leaves to the others, some mutated."""
    rng = random.Random(seed)
    scalars = ["hi", "", "a<b&c>\"'", " spaced ", "\t\n", "é\U0001F600", 0, -7, 2**31 - 1, True, 1.5, None]
    others = [[1], {"k": 1}, b"\x00", datetime.datetime(2020, 1, 2)]
    for _ in range(count):
        calls = []
        for _ in range(rng.randint(0, 5)):
            method = rng.choice(["echo.echo", " m.x ", "a&b", "system.multicall", "", "echo.echo"])
            params = [rng.choice(scalars) for _ in range(rng.randint(0, 3))]
            if rng.random() < 0.05:
                params.append(rng.choice(others))
            members = [("methodName", method if rng.random() > 0.03 else 7), ("params", params)]
            if rng.random() < 0.4:
                members.reverse()
            if rng.random() < 0.04:
                members.pop(rng.randrange(2))
            elif rng.random() < 0.04:
                members.append(("extra", 1))
            calls.append(dict(members))
        doc = xmlrpc.client.dumps((calls,), rng.choice(["system.multicall", " system.multicall ", "a&amp;b"]),
                                  allow_none=True)
        if rng.random() < 0.25 and "<name>params</name>" in doc:   # a scalar written by hand, maybe invalid
            at = rng.choice([i for i in range(len(doc)) if doc.startswith("<name>params</name>", i)])
            at = doc.index("<data>\n", at) + 7
            doc = doc[:at] + "<value>%s</value>\n" % rng.choice(_HAND_WRITTEN) + doc[at:]
        yield _varied(rng, doc, rng.randint(1, 3))


@pytest.mark.parametrize("limits", [Limits(), Limits(items=3, values=14), Limits(depth=3, items=2), Limits(depth=2)])
def test_multicall_reader_agrees_with_expat_on_every_document_it_reads(limits):
    bodies = list(_multicalls(6, 6000)) + list(_flat_calls(7, 1000)) + list(_mutations(8, 3000))
    taken, faults_seen = _agrees_with_expat(_flat_multicall, bodies, limits)
    if limits.depth >= 3:
        assert taken > 500 and faults_seen > 20, (taken, faults_seen)   # many, some invalid scalars
    else:
        assert taken == 0     # too shallow for a multicall: the piece reader refuses it


def test_multicall_reader_reads_what_clients_send_and_leaves_the_rest():
    calls = [{"methodName": "echo.echo", "params": ["hi", 1, None]}, {"params": [], "methodName": "a.b"}]
    body = call(calls, method="system.multicall")
    assert _flat_multicall(body) == ("ok", "system.multicall", repr([calls])) and _flat(body) is None
    for other in ([{"methodName": "m.x", "params": [[1]]}], [{"methodName": "m.x"}], [1], [{}], [[]]):
        body = call(other, method="system.multicall")
        assert _flat_multicall(body) is None and _fast(body) is not None
    assert _flat_multicall(call([], method="system.multicall")) == ("ok", "system.multicall", repr([[]]))


@pytest.mark.parametrize("limits, message", [
    (Limits(items=100), "an array or struct of more than 100 items"),
    (Limits(values=301), "more than 301 values in one request"),
    (Limits(depth=2), "values nested deeper than 2 levels"),
])
def test_a_multicall_at_a_limit_is_read_and_past_it_refused(limits, message):
    """The multicall reader takes a call at each limit, and leaves one past it to the decoder, which refuses it."""
    at = [{"methodName": "echo.echo", "params": []}] * 100          # 100 items, 301 values, 3 levels
    if limits.depth >= 3:
        assert _flat_multicall(call(at, method="system.multicall"), limits) is not None
        assert codec.loads(call(at, method="system.multicall"), limits) == ("system.multicall", [at])
    past = at + [{"methodName": "echo.echo", "params": []}]
    body = call(past, method="system.multicall")
    assert _flat_multicall(body, limits) is None
    with pytest.raises(Fault) as info:
        codec.loads(body, limits)
    assert info.value.message == message


def test_flat_reader_leaves_structure_to_the_other_readers():
    for params in (([1, 2],), ({"a": 1},), (b"\x00",), (datetime.datetime(2020, 1, 2),)):
        body = call(*params)
        assert _flat(body) is None and _fast(body) is not None
    assert _flat(call("a", 1, True, 2.5, None)) == ("ok", "echo.echo", repr(["a", 1, True, 2.5, None]))


def test_documents_outside_the_fast_subset_still_decode():
    cases = {
        b"<methodCall><!-- a comment --><methodName>m.x</methodName></methodCall>": ("m.x", []),
        b"<methodCall><methodName>m.x</methodName><params><param><value><string><![CDATA[<b>]]></string>"
        b"</value></param></params></methodCall>": ("m.x", ["<b>"]),
        b"<methodCall>\r\n<methodName>m.x</methodName><params><param><value>a\r\nb</value></param></params>"
        b"</methodCall>": ("m.x", ["a\nb"]),
        b"<methodCall xmlns:ex='http://ws.apache.org/xmlrpc/namespaces/extensions'><methodName>m.x</methodName>"
        b"<params><param><value><ex:nil/></value></param></params></methodCall>": ("m.x", [None]),
        b"\xef\xbb\xbf<methodCall><methodName>m.x</methodName></methodCall>": ("m.x", []),
    }
    for body, expected in cases.items():
        assert _fast(body) is None and _flat(body) is None
        assert codec.loads(body) == expected


def test_large_bodies_are_decoded_in_bounded_chunks():
    strings = ["s%05d" % i for i in range(20000)]
    body = call(strings)
    assert len(body) > 4 * codec._CHUNK and fastpath.plain_text(body) is None
    assert codec.loads(body, Limits(items=20000))[1] == [strings]


@pytest.mark.parametrize("value, limits, message", [
    (list(range(101)), Limits(items=100), "an array or struct of more than 100 items"),
    ({"k%d" % i: i for i in range(101)}, Limits(items=100), "an array or struct of more than 100 items"),
    ([[1, 2]] * 40, Limits(values=100), "more than 100 values in one request"),
    (b"x" * 100, Limits(base64=100), "a base64 value of more than 100 bytes"),
])
def test_what_one_request_may_cost_is_bounded(value, limits, message):
    for body in (call(value), call(value).replace(b"\n", b"\r\n")):     # the fast path, then expat
        with pytest.raises(Fault) as info:
            codec.loads(body, limits)
        assert (info.value.code, info.value.message) == (INVALID_REQUEST, message)
    codec.loads(call(value[:-1] if not isinstance(value, dict) else dict(list(value.items())[:-1])),
                Limits(items=100, values=1000))


def test_a_huge_struct_is_refused_long_before_its_end():
    """A 9 MB struct costs far more to decode than 9 MB of text: it stops at the bound."""
    body = call({"k%06d" % i: i for i in range(180000)})

    class Counting(codec._Decoder):
        fed = 0

        def feed(self, pieces, raw=False):
            Counting.fed += 1
            super().feed(pieces, raw)
    with pytest.raises(Fault):
        codec._expat(body, Counting(Limits()))
    assert Counting.fed < len(body) // codec._CHUNK / 10    # a tenth of the document at most


def test_a_multicall_keeps_the_results_it_can_encode():
    reported = []
    body = xmlrpc.client.dumps(([],), "system.multicall").encode()
    out = codec.respond(body, lambda name, params: [[1], ["\ud800"], [2]], reported.append)
    results = xmlrpc.client.loads(out)[0][0]
    assert results[0] == [1] and results[2] == [2] and results[1]["faultCode"] == INTERNAL_ERROR
    assert len(reported) == 1
