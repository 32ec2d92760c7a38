# SPDX-License-Identifier: Apache-2.0
"""Service module discovery, validation and loading (clarens.loader), on fake modules and temporary packages."""

import compileall
import importlib.util
import logging
import os
import py_compile
import sys
import textwrap
import types

import pytest

from clarens import host as host_mod
from clarens import loader
from clarens.faults import INVALID_PARAMS, Fault
from tests.unit import fakes


def module(**attrs):
    """A fake imported service module with ``attrs``."""
    mod = types.ModuleType("fake")
    mod.__dict__.update(attrs)
    return mod


def refused(mod):
    """The ModuleError message collect_methods gives for ``mod``."""
    with pytest.raises(loader.ModuleError) as info:
        loader.collect_methods("m", mod)
    return str(info.value)


def add(a, b):
    """Add A and B.

    Both are integers:
        a + b
    """
    return a + b


def ping():
    return "pong"


# --- collect_methods -----------------------------------------------------------

def test_valid_module():
    methods = loader.collect_methods("m", module(methods_list={"add": add, "ping": ping},
                                                 methods_sig={"add": ["int,int,int"]}))
    by_name = {m.name: m for m in methods}
    assert sorted(by_name) == ["m.add", "m.ping"]
    assert by_name["m.add"].func is add and by_name["m.add"].signatures == [("int", "int", "int")]
    assert by_name["m.ping"].signatures is None
    assert by_name["m.add"].param_names == ["a", "b"] and by_name["m.ping"].param_names == []


def test_the_check_is_compiled_from_the_signatures():
    (method,) = loader.collect_methods("m", module(methods_list={"add": add}, methods_sig={"add": ["int,int,int"]}))
    method.check([1, 2])
    with pytest.raises(Fault) as info:
        method.check([1, "2"])
    assert info.value.code == INVALID_PARAMS and info.value.message.startswith("m.add(int, string)")


def test_without_methods_sig_only_arity_is_checked():
    (method,) = loader.collect_methods("m", module(methods_list={"add": add}))
    method.check(["a", "b"])
    with pytest.raises(Fault, match="m.add takes 2 parameter"):
        method.check([1])


def test_help_is_the_cleaned_docstring():
    methods = loader.collect_methods("m", module(methods_list={"add": add, "ping": ping}))
    helps = {m.name: m.help for m in methods}
    assert helps == {"m.add": "Add A and B.\n\nBoth are integers:\n    a + b", "m.ping": ""}


def test_an_empty_methods_list_is_valid():
    assert loader.collect_methods("m", module(methods_list={})) == []


@pytest.mark.parametrize("value, message", [
    (None, "methods_list is missing, expected a dict of name -> callable"),
    ([add], "methods_list is list, expected a dict"),
    ("add", "methods_list is str, expected a dict"),
])
def test_methods_list_must_be_a_dict(value, message):
    mod = module() if value is None else module(methods_list=value)
    assert refused(mod).startswith(message)


@pytest.mark.parametrize("name", ["_private", "__init__", "a.b", "system.listMethods", "", "1st", "has-dash",
                                  "ping\n", "ping ", "café", 1, None, ("a",)])
def test_invalid_method_names(name):
    assert refused(module(methods_list={name: ping})) == (
        "method name %r is not a valid name (letters, digits, _; not starting with _)" % (name,))


def test_valid_method_names():
    names = ["a", "A1", "get_all", "x_"]
    methods = loader.collect_methods("m", module(methods_list=dict.fromkeys(names, ping)))
    assert [m.name for m in methods] == ["m." + n for n in names]


@pytest.mark.parametrize("value", [42, "ping", None, object()])
def test_non_callables(value):
    assert refused(module(methods_list={"x": value})) == "methods_list['x'] is not callable"


def test_callables_of_other_kinds():
    class Counter:
        def __call__(self, n):
            return n

        def bump(self, n):
            return n + 1
    methods = loader.collect_methods("m", module(methods_list={"call": Counter(), "bump": Counter().bump, "len": len}))
    assert [m.param_names for m in methods] == [["n"], ["n"], ["obj"]]


@pytest.mark.parametrize("value", [["int,int,int"], None, "add"])
def test_methods_sig_must_be_a_dict(value):
    assert refused(module(methods_list={"add": add}, methods_sig=value)).startswith(
        "methods_sig is %s, expected a dict" % type(value).__name__)


def test_methods_sig_naming_unknown_methods():
    mod = module(methods_list={"add": add}, methods_sig={"add": ["int,int,int"], "sub": ["int,int,int"], "mul": []})
    assert refused(mod) == "methods_sig names methods not in methods_list: mul, sub"


@pytest.mark.parametrize("sigs", ["int,int,int", [], (), {"int,int,int"}, {"int,int,int": 1}, 7])
def test_signatures_must_be_a_non_empty_list(sigs):
    assert refused(module(methods_list={"add": add}, methods_sig={"add": sigs})) == (
        "methods_sig['add'] must be a non-empty list of strings")


@pytest.mark.parametrize("sigs, message", [
    (["int,int,integer"], "methods_sig['add']: signature 'int,int,integer': unknown type 'integer'"),
    (["int,int,int", "int,,int"], "methods_sig['add']: signature 'int,,int': unknown type ''"),
    ([("int", "int", "int")], "methods_sig['add']: signature ('int', 'int', 'int') is not a string"),
    ([None], "methods_sig['add']: signature None is not a string"),
])
def test_malformed_signatures(sigs, message):
    assert refused(module(methods_list={"add": add}, methods_sig={"add": sigs})).startswith(message)


def test_a_tuple_of_signatures_is_accepted():
    (method,) = loader.collect_methods("m", module(methods_list={"add": add}, methods_sig={"add": ("int,int,int",)}))
    assert method.signatures == [("int", "int", "int")]


def test_signature_that_does_not_fit_the_function():
    mod = module(methods_list={"add": add}, methods_sig={"add": ["int,int"]})
    assert refused(mod) == "signature 'int,int' of m.add does not fit the function's parameters"


def test_required_keyword_only_parameter():
    def f(*, token):
        pass
    assert "required keyword-only parameter 'token'" in refused(module(methods_list={"f": f}))


# --- discover and load, on a temporary directory of packages ------------------

PACKAGES = {
    "good": '''
        """A module that loads."""
        from . import helper

        received = None

        def _startup_init(config, dbs, log):
            global received
            received = (config, dbs, log)

        def hello(name):
            """Greet NAME."""
            return helper.greeting(name)

        methods_list = {"hello": hello}
        methods_sig = {"hello": ["string,string"]}
        ''',
    "broken": 'raise RuntimeError("boom at import")\n',
    "badinit": '''
        def _startup_init(config, dbs, log):
            raise ValueError("no database")

        methods_list = {"ping": lambda: "pong"}
        ''',
    "quitter": 'import sys\nsys.exit(3)\n',
    "malformed": 'methods_list = ["ping"]\n',
    "bad-name": 'methods_list = {}\n',
}


class ListHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def log():
    """A private logger whose records the test reads as ``log.handler.records``."""
    logger = logging.Logger("loader-test")
    logger.handler = ListHandler()
    logger.addHandler(logger.handler)
    return logger


@pytest.fixture
def modules_dir(tmp_path):
    """A modules directory with PACKAGES, a plain file and a directory without __init__.py."""
    for name, source in PACKAGES.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(textwrap.dedent(source))
    (tmp_path / "good" / "helper.py").write_text("def greeting(name):\n    return 'hello ' + name\n")
    (tmp_path / "stray.py").write_text("methods_list = {}\n")
    (tmp_path / "notapackage").mkdir()
    (tmp_path / "notapackage" / "code.py").write_text("methods_list = {}\n")
    return tmp_path


@pytest.fixture(autouse=True)
def forget_loaded_modules():
    """Drop the clarens_modules.* modules a test imported, so tests stay independent."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name == loader.PACKAGE or name.startswith(loader.PACKAGE + "."):
            del sys.modules[name]


def load(modules_dir, name, log, init_args=None):
    return loader.load(name, str(modules_dir / name), init_args, log)


def messages(log):
    return [(r.levelname, r.getMessage()) for r in log.handler.records]


def test_discover_finds_packages_sorted(modules_dir):
    assert loader.discover([str(modules_dir)]) == [
        (name, str(modules_dir / name)) for name in sorted(PACKAGES)]


def test_discover_skips_missing_directories_and_lists_the_first_path_first(tmp_path, modules_dir):
    other = tmp_path / "other"
    (other / "good").mkdir(parents=True)
    (other / "good" / "__init__.py").write_text("")
    (other / "extra").mkdir()
    (other / "extra" / "__init__.py").write_text("")
    found = loader.discover([str(tmp_path / "missing"), str(other), str(modules_dir)])
    assert found[:2] == [("extra", str(other / "extra")), ("good", str(other / "good"))]
    assert ("broken", str(modules_dir / "broken")) in found


def test_discover_of_nothing():
    assert loader.discover([]) == []


def test_a_valid_module_loads_and_its_startup_init_runs_once(modules_dir, log):
    init = ({"colour": "blue"}, "dbs", logging.getLogger("clarens.good"))
    asked = []

    def init_args(name):
        asked.append(name)
        return init
    record, methods = load(modules_dir, "good", log, init_args)
    assert (record.status, record.error) == ("loaded", None)
    assert record.methods == ["good.hello"] and [m.name for m in methods] == ["good.hello"]
    assert record.module is sys.modules["clarens_modules.good"]
    assert record.module.received == init and asked == ["good"] and record.startup_init_calls == 1
    assert methods[0].func("Bob") == "hello Bob"   # its relative import worked
    assert methods[0].help == "Greet NAME."
    assert record.describe() == {"name": "good", "status": "loaded", "path": str(modules_dir / "good"),
                                 "methods": ["good.hello"]}
    assert not [r for r in log.handler.records if r.levelno >= logging.WARNING]


def test_without_init_args_startup_init_is_not_called(modules_dir, log):
    record, _ = load(modules_dir, "good", log)
    assert record.status == "loaded" and record.startup_init_calls == 0 and record.module.received is None


def test_a_module_raising_on_import_is_recorded_and_forgotten(modules_dir, log):
    record, methods = load(modules_dir, "broken", log)
    assert (record.status, record.error, methods, record.module) == (
        "failed", "RuntimeError: boom at import", [], None)
    assert "clarens_modules.broken" not in sys.modules   # a later attempt imports it afresh
    assert record.describe()["error"] == "RuntimeError: boom at import"
    ((level, message),) = messages(log)
    assert level == "ERROR" and message.startswith("service module broken failed to load: RuntimeError: boom")
    assert "Traceback" in message and 'raise RuntimeError("boom at import")' in message


def test_a_failing_startup_init_fails_the_module(modules_dir, log):
    record, methods = load(modules_dir, "badinit", log, lambda name: ({}, None, log))
    assert (record.status, record.error, methods, record.methods) == ("failed", "ValueError: no database", [], [])
    assert record.startup_init_calls == 1
    assert "Traceback" in messages(log)[0][1]


def test_sys_exit_does_not_end_the_process(modules_dir, log):
    record, methods = load(modules_dir, "quitter", log)
    assert (record.status, record.error, methods) == ("failed", "SystemExit: 3", [])


def test_malformed_exports_are_reported_without_a_traceback(modules_dir, log):
    record, _ = load(modules_dir, "malformed", log)
    assert (record.status, record.error) == ("failed", "methods_list is list, expected a dict of name -> callable")
    assert messages(log) == [("ERROR", "service module malformed failed to load: %s\n" % record.error)]


def test_an_invalid_directory_name_is_not_imported(modules_dir, log):
    record, methods = load(modules_dir, "bad-name", log)
    assert (record.status, methods) == ("failed", [])
    assert record.error == "directory name 'bad-name' is not a valid module name"
    assert not any(name.startswith("clarens_modules.bad") for name in sys.modules)
    assert messages(log) == [("ERROR", "service module %s skipped: %s" % (modules_dir / "bad-name", record.error))]


def test_one_failure_does_not_stop_the_others(modules_dir, log):
    results = {name: loader.load(name, directory, lambda name: ({}, None, log), log)
               for name, directory in loader.discover([str(modules_dir)])}
    assert {name: record.status for name, (record, _) in results.items()} == {
        "bad-name": "failed", "badinit": "failed", "broken": "failed", "good": "loaded", "malformed": "failed",
        "quitter": "failed"}
    assert [m.name for m in results["good"][1]] == ["good.hello"]
    assert len(log.handler.records) == 5


# --- bytecode ------------------------------------------------------------------


def test_uncompiled_names_the_sources_a_process_compiled_and_could_not_save(modules_dir, log, monkeypatch):
    """As Apache's children, which cannot write __pycache__ where an administrator puts modules."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    record, _ = load(modules_dir, "good", log)
    loaded = [sys.modules["clarens_modules.good"], sys.modules["clarens_modules.good.helper"], sys, types]
    sources = [str(modules_dir / "good" / "__init__.py"), str(modules_dir / "good" / "helper.py")]
    assert loader.uncompiled(loaded) == sources          # built-in modules and the like have no source to compile

    compileall.compile_dir(str(modules_dir / "good"), quiet=2)
    assert loader.uncompiled(loaded) == []
    # A source changed after it was compiled: its bytecode is stale, which Python does not use.
    with open(sources[1], "a") as f:
        f.write("# changed\n")
    assert loader.uncompiled(loaded) == sources[1:]
    # Bytecode checked by a hash of the source is Python's to check.
    py_compile.compile(sources[1], invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
    assert loader.uncompiled(loaded) == []
    # Another Python's bytecode is no bytecode to this one.
    cached = importlib.util.cache_from_source(sources[0])
    with open(cached, "r+b") as f:
        f.write(b"\0\0\0\0")
    assert loader.uncompiled(loaded) == sources[:1]


def test_the_host_says_once_per_server_start_which_modules_each_child_compiles(tmp_path):
    with fakes.isolated():
        options = fakes.write_site(str(tmp_path), modules={"unit": fakes.UNIT_MODULE})
        compileall.compile_dir(options["clarens.server.modules_path"], quiet=2)
        host = host_mod.boot(options, None)
        said = os.path.join(options["clarens.server.db_dir"], "once", "uncompiled.done")
        assert not os.path.exists(said)                 # all compiled: nothing to say
        log = fakes.LogRecorder()
        host.log.addHandler(log)
        unit = os.path.join(host.modules["unit"].path, "__init__.py")
        with open(unit, "a") as f:                      # changed since: each child would compile it
            f.write("# changed\n")
        host._say_uncompiled()
        host._say_uncompiled()                          # another child of the same server start
        [warning] = log.messages(logging.WARNING)
        assert warning.startswith("1 file(s) of service modules have no current byte-compiled copy")
        assert unit in warning and warning.endswith("run: python3 -m compileall -q " + host.modules["unit"].path)
