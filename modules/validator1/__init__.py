# SPDX-License-Identifier: Apache-2.0
"""validator1: the classic XML-RPC interoperability suite (the Userland validator1 methods),
with their published semantics, so that any third-party client can check this server."""

from clarens.faults import INVALID_PARAMS, Fault

_STOOGES = ("moe", "larry", "curly")


def _int_member(struct, key, where):
    value = struct.get(key) if isinstance(struct, dict) else None
    if type(value) is not int:
        raise Fault(INVALID_PARAMS, "%s: member %r must be an int" % (where, key))
    return value


def arrayOfStructsTest(structs):
    """Take an array of structs, each with int members moe, larry and curly; return the
    sum of all the curly members."""
    return sum(_int_member(s, "curly", "element %d" % i) for i, s in enumerate(structs))


def countTheEntities(text):
    """Take a string; return a struct counting the characters XML escapes as entities:
    ctLeftAngleBrackets, ctRightAngleBrackets, ctAmpersands, ctApostrophes, ctQuotes."""
    return {"ctLeftAngleBrackets": text.count("<"), "ctRightAngleBrackets": text.count(">"),
            "ctAmpersands": text.count("&"), "ctApostrophes": text.count("'"), "ctQuotes": text.count('"')}


def easyStructTest(struct):
    """Take a struct with int members moe, larry and curly; return their sum."""
    return sum(_int_member(struct, k, "struct") for k in _STOOGES)


def echoStructTest(struct):
    """Take a struct; return it unchanged."""
    return struct


def manyTypesTest(number, boolean, string, double, datetime, base64):
    """Take six parameters (int, boolean, string, double, dateTime.iso8601, base64);
    return them as an array, in order."""
    return [number, boolean, string, double, datetime, base64]


def moderateSizeArrayCheck(strings):
    """Take an array of strings (the suite sends 100 to 200); return the first and the last
    concatenated."""
    if not strings or not isinstance(strings[0], str) or not isinstance(strings[-1], str):
        raise Fault(INVALID_PARAMS, "expected a non-empty array of strings")
    return strings[0] + strings[-1]


def nestedStructTest(calendar):
    """Take a struct modelling a calendar (year -> month -> day, keys like "2000", "04",
    "01"); return the sum of the int members moe, larry and curly of April 1st, 2000."""
    day = calendar.get("2000", {})
    day = day.get("04", {}) if isinstance(day, dict) else {}
    day = day.get("01") if isinstance(day, dict) else None
    if not isinstance(day, dict):
        raise Fault(INVALID_PARAMS, "the calendar has no struct for 2000-04-01")
    return sum(_int_member(day, k, "2000-04-01") for k in _STOOGES)


def simpleStructReturnTest(number):
    """Take an int; return a struct with members times10, times100 and times1000."""
    return {"times10": number * 10, "times100": number * 100, "times1000": number * 1000}


methods_list = {f.__name__: f for f in (
    arrayOfStructsTest, countTheEntities, easyStructTest, echoStructTest, manyTypesTest,
    moderateSizeArrayCheck, nestedStructTest, simpleStructReturnTest)}

methods_sig = {
    "arrayOfStructsTest": ["int,array"],
    "countTheEntities": ["struct,string"],
    "easyStructTest": ["int,struct"],
    "echoStructTest": ["struct,struct"],
    "manyTypesTest": ["array,int,boolean,string,double,dateTime.iso8601,base64"],
    "moderateSizeArrayCheck": ["string,array"],
    "nestedStructTest": ["int,struct"],
    "simpleStructReturnTest": ["struct,int"],
}
