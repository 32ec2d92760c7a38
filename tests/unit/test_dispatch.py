# SPDX-License-Identifier: Apache-2.0
"""The dispatcher (clarens.dispatch) on a hand-built method table, without Apache."""

import logging
import re

import pytest

from clarens import signatures
from clarens.context import CallContext
from clarens.dispatch import Dispatcher
from clarens.faults import ACCESS_DENIED, APPLICATION_ERROR, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, Fault
from clarens.identity import Identity
from clarens.registry import Method
from clarens.signatures import ParamCheck
from tests.unit.fakes import FakeHost, FakeRequest, own_logger

ALICE = Identity("alice", "basic", ("staff",))


def method(name, func, *sigs):
    """A registry record as the loader builds it."""
    parsed = [signatures.parse(s) for s in sigs] or None
    return Method(name, func, parsed, func.__doc__ or "", ParamCheck(name, func, parsed),
                  signatures.positional_names(func))


class Table:
    """A method table whose functions record what they were called with and what ctx.method said."""

    def __init__(self):
        self.calls = []
        self.ctx = None
        self.refusal = Fault(4242, "the service says no")

    def methods(self):
        def add(a, b=0):
            self.calls.append(("add", a, b))
            return a + b

        def sub(a, b):
            self.calls.append(("sub", a, b))
            return a - b

        def blob(data):
            return data

        def where():
            return self.ctx.method

        def fault():
            raise self.refusal

        def boom():
            secret = "the secret detail"
            raise ZeroDivisionError(secret)

        def multicall(calls):
            return self.ctx.multicall(calls)

        return {m.name: m for m in [
            method("m.add", add), method("m.sub", sub, "int,int,int"), method("m.blob", blob, "base64,base64"),
            method("m.where", where, "string"), method("m.fault", fault, "int"), method("m.boom", boom, "int"),
            method("m.max", max),   # a builtin whose parameters cannot be named
            method("system.multicall", multicall, "array,array")]}


class Refuse:
    """An authoriser that records what it is asked and refuses some methods."""

    def __init__(self, *refused):
        self.refused = set(refused)
        self.asked = []

    def __call__(self, identity, name):
        self.asked.append((identity, name))
        if name in self.refused:
            raise Fault(ACCESS_DENIED, "access denied: %s may not call %s" % (identity.name, name))


@pytest.fixture
def table():
    return Table()


@pytest.fixture
def log():
    return own_logger("tests.unit.dispatch")


@pytest.fixture
def dispatcher(table, log):
    return Dispatcher(table.methods(), log[0])


@pytest.fixture
def recorder(log):
    return log[1]


def context(table, dispatcher, protocol="xmlrpc", identity=ALICE, debug=False):
    """A call context on a fake host holding just the dispatcher and its table."""
    host = FakeHost(dispatcher)
    request = FakeRequest("POST", config={"PythonDebug": "1"} if debug else {})
    table.ctx = CallContext(host, request, identity, protocol)
    return table.ctx


@pytest.fixture
def ctx(table, dispatcher):
    return context(table, dispatcher)


def fault_of(call, *args):
    with pytest.raises(Fault) as info:
        call(*args)
    return info.value


# --- names -----------------------------------------------------------------------

def test_a_listed_method_is_called_with_its_parameters(dispatcher, ctx, table):
    assert dispatcher.call(ctx, "m.sub", [5, 3]) == 2
    assert table.calls == [("sub", 5, 3)]


@pytest.mark.parametrize("name", ["no.such", "m.nothing", "m", "a.b.c", "A_1.b2", "x" * 200])
def test_a_well_formed_name_that_is_not_listed_is_not_found(dispatcher, ctx, name):
    fault = fault_of(dispatcher.call, ctx, name, [])
    assert fault.code == METHOD_NOT_FOUND and name in fault.message


@pytest.mark.parametrize("name", [
    "", "m add", "m-add", "m/add", "m.add()", "é.x", "m.add\n", "m.add\x00",   # characters
    "_m.add", "m._add", "m.__class__", "m.add._x",                          # a part starting with _
    ".m", "m.", "m..add", ".",                                              # empty parts
    "x" * 201,                                                              # too long
])
def test_an_invalid_name_is_an_invalid_request(dispatcher, ctx, table, name):
    fault = fault_of(dispatcher.call, ctx, name, [])
    assert fault.code == INVALID_REQUEST and "invalid method name" in fault.message
    assert table.calls == []


def test_a_long_invalid_name_is_cut_short_in_the_message(dispatcher, ctx, recorder):
    fault = fault_of(dispatcher.call, ctx, "<" * 100000, [])
    assert fault.code == INVALID_REQUEST and len(fault.message) < 200
    assert all(len(m) < 300 for m in recorder.messages())   # nor does it flood the log


# --- the authoriser --------------------------------------------------------------

def test_the_authoriser_is_asked_with_the_identity_and_method_before_parameters_are_checked(table, log):
    authorise = Refuse("m.sub")
    dispatcher = Dispatcher(table.methods(), log[0], authorise)
    ctx = context(table, dispatcher)
    fault = fault_of(dispatcher.call, ctx, "m.sub", ["not", "ints", "either"])   # wrong parameters too
    assert fault.code == ACCESS_DENIED and fault.message == "access denied: alice may not call m.sub"
    assert authorise.asked == [(ALICE, "m.sub")]
    assert table.calls == []


def test_the_authorisers_fault_passes_through_unchanged(table, log):
    refusal = Fault(ACCESS_DENIED, "not on Tuesdays")

    def authorise(identity, name):
        raise refusal
    dispatcher = Dispatcher(table.methods(), log[0], authorise)
    assert fault_of(dispatcher.call, context(table, dispatcher), "m.add", [1]) is refusal


def test_an_allowed_call_then_has_its_parameters_checked(table, log):
    authorise = Refuse()
    dispatcher = Dispatcher(table.methods(), log[0], authorise)
    assert fault_of(dispatcher.call, context(table, dispatcher), "m.sub", [1]).code == INVALID_PARAMS
    assert authorise.asked == [(ALICE, "m.sub")]


def test_the_authoriser_is_not_asked_about_names_that_are_not_listed(table, log):
    authorise = Refuse()
    dispatcher = Dispatcher(table.methods(), log[0], authorise)
    ctx = context(table, dispatcher)
    assert fault_of(dispatcher.call, ctx, "no.such", []).code == METHOD_NOT_FOUND
    assert fault_of(dispatcher.call, ctx, "m._x", []).code == INVALID_REQUEST
    assert authorise.asked == []


# --- parameters ------------------------------------------------------------------

def test_parameters_by_name_are_mapped_to_positions(dispatcher, ctx, table):
    assert dispatcher.call(ctx, "m.sub", {"b": 3, "a": 10}) == 7
    assert dispatcher.call(ctx, "m.add", {"a": 1}) == 1            # b keeps its default
    assert table.calls == [("sub", 10, 3), ("add", 1, 0)]


def test_parameters_by_name_are_then_checked_against_the_signature(dispatcher, ctx, table):
    fault = fault_of(dispatcher.call, ctx, "m.sub", {"a": 1, "b": "2"})
    assert fault.code == INVALID_PARAMS and "m.sub(int, string)" in fault.message
    assert table.calls == []


def test_unknown_parameter_names_are_refused(dispatcher, ctx, table):
    fault = fault_of(dispatcher.call, ctx, "m.sub", {"a": 1, "b": 2, "zeta": 3, "c": 4})
    assert fault.code == INVALID_PARAMS and fault.message == "m.sub has no parameter(s) named c, zeta"
    assert table.calls == []


def test_missing_parameter_names_are_refused(dispatcher, ctx, table):
    fault = fault_of(dispatcher.call, ctx, "m.sub", {"b": 2})
    assert fault.code == INVALID_PARAMS and fault.message == "m.sub: missing parameter(s) a"
    fault = fault_of(dispatcher.call, ctx, "m.sub", {})                 # nothing: the arity check says so
    assert fault.code == INVALID_PARAMS and "2 parameter(s), 0 given" in fault.message
    assert table.calls == []


def test_a_method_whose_parameters_have_no_names_refuses_them_by_name(dispatcher, ctx):
    assert dispatcher.call(ctx, "m.max", [3, 9]) == 9
    fault = fault_of(dispatcher.call, ctx, "m.max", {"a": 1})
    assert fault.code == INVALID_PARAMS and fault.message == "m.max does not accept parameters by name"


@pytest.mark.parametrize("params", [[1], [1, 2, 3], ["1", 2], [1.0, 2], [True, 2]])
def test_parameters_that_match_no_signature_are_invalid(dispatcher, ctx, table, params):
    assert fault_of(dispatcher.call, ctx, "m.sub", params).code == INVALID_PARAMS
    assert table.calls == []


def test_json_rpc_calls_may_send_base64_as_text(table, dispatcher):
    # JSON has no base64 type: the protocol of the context chooses the lenient check.
    assert dispatcher.call(context(table, dispatcher, "jsonrpc"), "m.blob", ["AAE="]) == "AAE="
    assert fault_of(dispatcher.call, context(table, dispatcher, "xmlrpc"), "m.blob", ["AAE="]).code == INVALID_PARAMS


# --- what the service raises -----------------------------------------------------

def test_a_fault_from_the_service_passes_through_unchanged(dispatcher, ctx, table, recorder):
    fault = fault_of(dispatcher.call, ctx, "m.fault", [])
    assert fault is table.refusal and (fault.code, fault.message) == (4242, "the service says no")
    assert recorder.faults(4242) == ["alice@192.0.2.7 'm.fault': fault 4242: the service says no"]


def test_another_exception_is_an_application_error_with_an_incident_id(dispatcher, ctx, recorder):
    fault = fault_of(dispatcher.call, ctx, "m.boom", [])
    assert fault.code == APPLICATION_ERROR
    incident = re.fullmatch(r"m\.boom failed: ZeroDivisionError \(incident ([0-9a-f]{8}), see the server log\)",
                            fault.message).group(1)
    # The traceback goes to the log, under the same incident; the exception's text only there.
    (logged,) = [r for r in recorder.records if r.levelno == logging.ERROR]
    text = logged.getMessage()
    assert "alice@192.0.2.7 m.boom raised ZeroDivisionError (incident %s)" % incident in text
    assert "Traceback" in text and "raise ZeroDivisionError(secret)" in text and "the secret detail" in text
    assert "secret" not in fault.message and "Traceback" not in fault.message


def test_incident_ids_differ(dispatcher, ctx):
    assert fault_of(dispatcher.call, ctx, "m.boom", []).message != fault_of(dispatcher.call, ctx, "m.boom", []).message


def test_under_python_debug_the_traceback_is_in_the_message_too(table, dispatcher):
    fault = fault_of(dispatcher.call, context(table, dispatcher, debug=True), "m.boom", [])
    assert fault.code == APPLICATION_ERROR
    assert "caller: alice from 192.0.2.7" in fault.message
    assert "Traceback" in fault.message and "ZeroDivisionError: the secret detail" in fault.message


# --- ctx.method ------------------------------------------------------------------

def test_ctx_method_names_the_method_during_the_call_and_is_restored_after(dispatcher, ctx):
    ctx.method = "outer.call"
    assert dispatcher.call(ctx, "m.where", []) == "m.where"
    assert ctx.method == "outer.call"


@pytest.mark.parametrize("name", ["m.fault", "m.boom", "m.sub", "no.such"])
def test_ctx_method_is_restored_when_the_call_fails(dispatcher, ctx, name):
    with pytest.raises(Fault):
        dispatcher.call(ctx, name, [])
    assert ctx.method is None


# --- multicall -------------------------------------------------------------------

def test_multicall_runs_each_call_on_its_own_with_faults_in_place(dispatcher, ctx, table):
    results = dispatcher.multicall(ctx, [
        {"methodName": "m.add", "params": [1, 2]},
        {"methodName": "m.fault", "params": []},
        {"methodName": "m.boom"},                          # params default to none
        {"methodName": "no.such", "params": []},
        {"methodName": "m.sub", "params": ["x", 1]},
        {"methodName": "m.add", "params": [3]},
    ])
    assert results[0] == [3] and results[5] == [3]
    assert results[1] == {"faultCode": 4242, "faultString": "the service says no"}
    assert [r["faultCode"] for r in results[2:5]] == [APPLICATION_ERROR, METHOD_NOT_FOUND, INVALID_PARAMS]
    assert table.calls == [("add", 1, 2), ("add", 3, 0)]


@pytest.mark.parametrize("element, code", [
    ("m.add", INVALID_REQUEST),
    ([], INVALID_REQUEST),
    (None, INVALID_REQUEST),
    ({"params": [1]}, INVALID_REQUEST),
    ({"methodName": 5, "params": [1]}, INVALID_REQUEST),
    ({"methodName": "m.add", "params": {"a": 1}}, INVALID_PARAMS),   # by name: not in multicall
    ({"methodName": "m.add", "params": "1"}, INVALID_PARAMS),
])
def test_malformed_multicall_elements_are_faults_in_place(dispatcher, ctx, table, element, code):
    results = dispatcher.multicall(ctx, [{"methodName": "m.add", "params": [1]}, element,
                                         {"methodName": "m.add", "params": [2]}])
    assert results[0] == [1] and results[2] == [2]
    assert results[1]["faultCode"] == code and "element 1" in results[1]["faultString"]


def test_multicall_may_not_be_called_recursively(dispatcher, ctx, table):
    inner = [{"methodName": "m.add", "params": [100]}]
    results = dispatcher.multicall(ctx, [{"methodName": "system.multicall", "params": [inner]},
                                         {"methodName": "m.add", "params": [1]}])
    assert results[0]["faultCode"] == INVALID_REQUEST and "recursively" in results[0]["faultString"]
    assert results[1] == [1] and table.calls == [("add", 1, 0)]    # the inner call never ran


def test_each_sub_call_is_authorised_on_its_own(table, log):
    authorise = Refuse("m.sub")
    dispatcher = Dispatcher(table.methods(), log[0], authorise)
    ctx = context(table, dispatcher)
    results = dispatcher.call(ctx, "system.multicall", [[{"methodName": "m.sub", "params": [2, 1]},
                                                         {"methodName": "m.add", "params": [2, 1]}]])
    assert results[0]["faultCode"] == ACCESS_DENIED and results[1] == [3]
    assert [name for _, name in authorise.asked] == ["system.multicall", "m.sub", "m.add"]


def test_sub_calls_see_their_own_method_name_and_the_multicall_is_restored(dispatcher, ctx):
    results = dispatcher.call(ctx, "system.multicall", [[{"methodName": "m.where", "params": []}] * 2])
    assert results == [["m.where"], ["m.where"]]
    assert ctx.method is None


# --- logging ---------------------------------------------------------------------

@pytest.mark.parametrize("name, params, code", [
    ("no.such", [], METHOD_NOT_FOUND),
    ("m._x", [], INVALID_REQUEST),
    ("m.sub", {"zeta": 1}, INVALID_PARAMS),
    ("m.sub", [1], INVALID_PARAMS),
    ("m.fault", [], 4242),
    ("m.boom", [], APPLICATION_ERROR),
    ("m.add", [1], ACCESS_DENIED),
])
def test_every_fault_is_logged_once(table, log, name, params, code):
    logger, recorder = log
    dispatcher = Dispatcher(table.methods(), logger, Refuse("m.add"))
    with pytest.raises(Fault):
        dispatcher.call(context(table, dispatcher), name, params)
    assert len(recorder.faults(code)) == 1
    # Besides it, only an application error's traceback (its own ERROR record).
    assert len(recorder.records) == (2 if code == APPLICATION_ERROR else 1)


def test_a_successful_call_logs_nothing(dispatcher, ctx, recorder):
    dispatcher.call(ctx, "m.add", [1, 2])
    dispatcher.multicall(ctx, [{"methodName": "m.add", "params": [1]}])
    assert recorder.records == []


def test_multicall_sub_call_faults_are_logged_once_each(dispatcher, ctx, recorder):
    dispatcher.multicall(ctx, [{"methodName": "no.such"}, {"methodName": "m.fault"}, {"methodName": "no.such"}])
    assert len(recorder.faults(METHOD_NOT_FOUND)) == 2 and len(recorder.faults(4242)) == 1


def test_malformed_multicall_elements_are_logged_like_every_other_fault(dispatcher, ctx, recorder):
    # Every fault is logged once (by Dispatcher.call, or by the codecs' report for the elements of
    # a JSON-RPC batch): malformed elements and recursive calls must leave a trace too.
    dispatcher.multicall(ctx, ["not a struct", {"methodName": "system.multicall", "params": [[]]},
                               {"methodName": "m.add", "params": "1"}])
    assert len(recorder.faults(INVALID_REQUEST)) == 2 and len(recorder.faults(INVALID_PARAMS)) == 1
