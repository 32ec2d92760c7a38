# SPDX-License-Identifier: Apache-2.0
"""Signature parsing and the compiled parameter check (clarens.signatures), without Apache."""

import datetime

import pytest

from clarens import signatures
from clarens.faults import INVALID_PARAMS, Fault
from clarens.signatures import ParamCheck

WHEN = datetime.datetime(2024, 5, 1, 12, 0, 0)


def invalid(check, params, json=False):
    """The message of the INVALID_PARAMS fault ``check`` raises for ``params``."""
    with pytest.raises(Fault) as info:
        check(params, json=json)
    assert info.value.code == INVALID_PARAMS
    return info.value.message


# --- parse -------------------------------------------------------------------

@pytest.mark.parametrize("spec, expected", [
    ("int", ("int",)),
    ("string,string,int", ("string", "string", "int")),
    (" boolean , dateTime.iso8601 ,base64 ", ("boolean", "dateTime.iso8601", "base64")),
    ("nil,array,struct,double", ("nil", "array", "struct", "double")),
    ("int,int,int", ("int", "int", "int")),   # a type may repeat
])
def test_parse_valid(spec, expected):
    assert signatures.parse(spec) == expected


@pytest.mark.parametrize("spec, bad", [
    ("", ""),
    ("   ", ""),
    ("int,", ""),
    ("int,,string", ""),
    ("integer,string", "integer"),
    ("Int", "Int"),                     # type names are case-sensitive
    ("string,datetime", "datetime"),
    ("string,i4", "i4"),
])
def test_parse_rejects_unknown_or_empty_types(spec, bad):
    with pytest.raises(ValueError) as info:
        signatures.parse(spec)
    assert "unknown type %r" % bad in str(info.value)
    assert "known: string int boolean" in str(info.value)


@pytest.mark.parametrize("spec", [None, ["int", "int"], 3, b"int"])
def test_parse_rejects_non_strings(spec):
    with pytest.raises(ValueError, match="is not a string"):
        signatures.parse(spec)


# --- ParamCheck without signatures: arity only ------------------------------

def test_without_signatures_only_the_count_is_checked():
    check = ParamCheck("m.f", lambda a, b: None, None)
    check(["x", 1])
    check([None, {"any": "type"}])
    assert invalid(check, ["x"]) == "m.f takes 2 parameter(s), 1 given"
    assert invalid(check, [1, 2, 3]) == "m.f takes 2 parameter(s), 3 given"


def test_defaults_give_a_range():
    check = ParamCheck("m.f", lambda a, b=1, c=2: None, None)
    for params in ([1], [1, 2], [1, 2, 3]):
        check(params)
    assert invalid(check, []) == "m.f takes 1 to 3 parameter(s), 0 given"
    assert invalid(check, [1, 2, 3, 4]) == "m.f takes 1 to 3 parameter(s), 4 given"


def test_star_args_has_no_maximum():
    check = ParamCheck("m.f", lambda a, *rest: None, None)
    check([1] * 50)
    assert invalid(check, []) == "m.f takes 1 or more parameter(s), 0 given"


def test_no_parameters():
    check = ParamCheck("m.f", lambda: None, None)
    check([])
    assert invalid(check, [1]) == "m.f takes 0 parameter(s), 1 given"


def test_keyword_only_parameters():
    def optional(a, *, verbose=False):
        pass

    def required(a, *, token):
        pass
    ParamCheck("m.f", optional, None)([1])
    with pytest.raises(ValueError, match="required keyword-only parameter 'token'"):
        ParamCheck("m.f", required, None)


def test_a_callable_without_a_signature_takes_any_count():
    check = ParamCheck("m.f", max, None)   # inspect.signature cannot read builtin max
    check([])
    check([1, 2, 3])


def test_empty_signature_list_means_no_signatures():
    check = ParamCheck("m.f", lambda a: None, [])
    assert check.signatures is None
    check([b"anything"])


# --- ParamCheck with signatures ---------------------------------------------

def test_one_signature():
    check = ParamCheck("m.add", lambda a, b: a + b, [("int", "int", "int")])
    check([1, 2])
    assert invalid(check, [1, "2"]) == "m.add(int, string) does not match its signature(s): m.add(int, int) -> int"
    assert invalid(check, [1]) == "m.add takes 2 parameter(s), 1 given"


def test_several_signatures():
    check = ParamCheck("m.f", lambda a, b=None: None, [("string", "string"), ("string", "string", "int")])
    check(["x"])
    check(["x", 3])
    assert invalid(check, []) == "m.f takes 1 or 2 parameter(s), 0 given"
    assert invalid(check, ["x", "y"]) == (
        "m.f(string, string) does not match its signature(s): m.f(string) -> string; m.f(string, int) -> string")


def test_several_signatures_of_the_same_length():
    check = ParamCheck("m.f", lambda a: None, [("nil", "int"), ("nil", "string")])
    check([1])
    check(["1"])
    assert invalid(check, [1.5]).startswith("m.f(double) does not match")


def test_duplicate_signatures_behave_as_one():
    check = ParamCheck("m.f", lambda a: None, [("int", "int"), ("int", "int")])
    check([1])
    assert invalid(check, []) == "m.f takes 1 parameter(s), 0 given"


def test_a_signature_with_no_parameters():
    check = ParamCheck("m.f", lambda: None, [("string",)])
    check([])
    assert invalid(check, [1]) == "m.f takes 0 parameter(s), 1 given"


@pytest.mark.parametrize("sig, ok, refused", [
    # bool is a subclass of int in Python, but not an XML-RPC int, nor an int a boolean
    ("int", [0, -7, 2 ** 40], [True, False, 1.0, "1", None]),
    ("boolean", [True, False], [0, 1, "true", None]),
    # a JSON number need not carry a fraction, so a double accepts an int; still not a bool
    ("double", [1.5, 0.0, 3], [True, "1.5", None]),
    ("string", ["", "x"], [b"x", 1, None]),
    ("array", [[], [1, "a"]], [(), {}, "[]"]),
    ("struct", [{}, {"a": 1}], [[], "{}"]),
    ("nil", [None], ["", 0, False, []]),
    ("base64", [b"", b"\x00\xff"], ["AAE=", bytearray(b"x")]),
    ("dateTime.iso8601", [WHEN], ["20240501T12:00:00", WHEN.date()]),
])
def test_types_over_xmlrpc(sig, ok, refused):
    check = ParamCheck("m.f", lambda a: None, [("nil", sig)])
    for value in ok:
        check([value])
    for value in refused:
        assert "does not match" in invalid(check, [value]), value


@pytest.mark.parametrize("sig, value", [("base64", "AAE="), ("dateTime.iso8601", "2024-05-01T12:00:00")])
def test_json_rpc_accepts_strings_for_base64_and_datetime(sig, value):
    check = ParamCheck("m.f", lambda a: None, [("nil", sig)])
    assert "does not match" in invalid(check, [value])   # XML-RPC has real types for these
    check([value], json=True)


@pytest.mark.parametrize("sig, value", [("base64", b"\x01"), ("dateTime.iso8601", WHEN)])
def test_json_rpc_still_accepts_the_native_types(sig, value):
    ParamCheck("m.f", lambda a: None, [("nil", sig)])([value], json=True)


@pytest.mark.parametrize("sig, value", [("string", b"x"), ("int", "1"), ("base64", 1), ("dateTime.iso8601", None),
                                        ("boolean", 1)])
def test_json_rpc_is_otherwise_as_strict(sig, value):
    check = ParamCheck("m.f", lambda a: None, [("nil", sig)])
    assert "does not match" in invalid(check, [value], json=True)


def test_json_rpc_leniency_is_per_position():
    check = ParamCheck("m.f", lambda a, b: None, [("nil", "base64", "int")])
    check(["AAE=", 1], json=True)
    assert "does not match" in invalid(check, ["AAE=", "1"], json=True)


@pytest.mark.parametrize("func, sig", [
    (lambda a: None, ("nil",)),                       # too few for a required parameter
    (lambda a: None, ("nil", "int", "int")),          # too many
    (lambda a, b=1: None, ("nil", "int", "int", "int")),
])
def test_a_signature_that_does_not_fit_the_function_is_refused(func, sig):
    with pytest.raises(ValueError, match="signature %r of m.f does not fit" % ",".join(sig)):
        ParamCheck("m.f", func, [sig])


def test_signatures_may_use_defaults_and_star_args():
    ParamCheck("m.f", lambda a, b=1: None, [("nil", "int"), ("nil", "int", "int")])
    check = ParamCheck("m.f", lambda *values: None, [("nil",), ("nil", "int", "int", "int")])
    check([])
    check([1, 2, 3])
    assert invalid(check, [1]) == "m.f takes 0 or 3 parameter(s), 1 given"


def test_fault_message_names_unknown_python_types():
    check = ParamCheck("m.f", lambda a: None, [("nil", "int")])
    assert invalid(check, [object()]).startswith("m.f(object) does not match")


# --- positional_names and type_name -------------------------------------------

def test_positional_names():
    def f(a, b=1, *rest, c, d=2, **kw):
        pass

    def g(a, /, b):
        pass

    class Service:
        def call(self, x, y):
            pass
    assert signatures.positional_names(f) == ["a", "b"]
    assert signatures.positional_names(g) == ["a", "b"]
    assert signatures.positional_names(Service().call) == ["x", "y"]   # bound: no self
    assert signatures.positional_names(lambda: None) == []
    assert signatures.positional_names(max) is None


@pytest.mark.parametrize("value, name", [
    ("s", "string"), (1, "int"), (True, "boolean"), (1.0, "double"), (WHEN, "dateTime.iso8601"),
    (b"", "base64"), ([], "array"), ({}, "struct"), (None, "nil"), ((), "tuple"),
])
def test_type_name(value, name):
    assert signatures.type_name(value) == name
