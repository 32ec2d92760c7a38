# SPDX-License-Identifier: Apache-2.0
"""Module loading in the real Apache: failures isolated, _startup_init once per child,
the once-per-server block once per start, config and tdb handed to modules."""

import os
import time
import urllib.request
import xmlrpc.client

import pytest

from tests.helpers import on_many_children, start_instance


def test_failed_modules_are_reported_and_the_rest_work(proxy, admin, server):
    modules = {m["name"]: m for m in admin.system.listModules()}
    assert {n: modules[n]["status"] for n in ("system", "echo", "validator1", "probe")} == dict.fromkeys(
        ("system", "echo", "validator1", "probe"), "loaded")
    assert modules["broken"]["status"] == "failed"
    assert "ModuleNotFoundError: No module named 'no_such_module_anywhere'" == modules["broken"]["error"]
    assert modules["malformed"]["status"] == "failed" and "methods_list is list" in modules["malformed"]["error"]
    assert modules["initfail"]["status"] == "failed" and "initfail refuses to start" in modules["initfail"]["error"]
    assert "initfail.hello" not in proxy.system.listMethods()
    # Why is for administrators only (an error often names a file): others see that it failed.
    others = {m["name"]: m for m in proxy.system.listModules()}
    assert others["initfail"]["status"] == "failed" and "refuses" not in others["initfail"]["error"]
    assert "initfail refuses to start" not in raw_page(server)
    with open(server.error_log) as f:
        log = f.read()
    assert "service module broken failed to load" in log and "no_such_module_anywhere" in log
    assert "Traceback" in log.split("service module broken failed to load")[1][:2000]


def raw_page(inst) -> str:
    """The discovery page as an anonymous caller sees it."""
    with urllib.request.urlopen(inst.url) as response:
        return response.read().decode()


def _probe_many(inst, n=12):
    """Call probe.info on many fresh connections at once, so several children answer."""
    return on_many_children(lambda: xmlrpc.client.ServerProxy(inst.url), lambda proxy: proxy.probe.info(), n)


def _lines(path):
    with open(path) as f:
        return f.read().split()


def test_startup_init_once_per_child_and_once_per_server_start():
    inst = start_instance("clarens-lifecycle-")
    try:
        results = _probe_many(inst)
        pids = {r["pid"] for r in results}
        assert len(pids) > 1, "concurrent requests should reach several children"
        assert all(r["init_calls"] == 1 for r in results)
        assert all(r["greeting"] == "hello from PythonOption" and r["db_dir"] == inst.db_dir for r in results)
        init_pids = _lines(os.path.join(inst.db_dir, "probe-init.log"))
        assert len(init_pids) == len(set(init_pids)), "a child ran _startup_init twice"
        assert {str(p) for p in pids} <= set(init_pids)
        assert len(_lines(os.path.join(inst.db_dir, "probe-once.log"))) == 1

        # A graceful restart is a new server start: new children, the block runs once more.
        # (A child whose pid is new may still be of the old generation: prefork can spawn one
        # before the signal lands.  A new-generation child has run the block before answering.)
        before = {r["start"] for r in results}
        assert len(before) == 1
        inst.graceful()
        deadline = time.monotonic() + 20
        while True:
            fresh = {r["start"] for r in _probe_many(inst, 8)} - before
            if fresh or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert fresh, "graceful restart produced no new-generation children"
        assert len(_lines(os.path.join(inst.db_dir, "probe-once.log"))) == 2
        init_after = _lines(os.path.join(inst.db_dir, "probe-init.log"))
        assert len(init_after) == len(set(init_after))
    finally:
        inst.stop()
    assert inst.processes() == []


def test_children_serve_from_their_main_interpreter_only():
    """The host runs in each child's main interpreter: mod_python releases every request
    object there, so a host in a named interpreter made each child set up a second one
    (mod_python.apache, pdb, inspect...) after its first request, ~20 ms in which it could
    not answer its connection, and 5 MB more per child."""
    inst = start_instance("clarens-interpreter-")
    try:
        for _ in range(3):           # fresh connections, so children that have served before answer too
            results = _probe_many(inst)
            assert len({r["pid"] for r in results}) > 1
            assert [(r["interpreters"], r["main_interpreter"]) for r in results] == [(1, True)] * len(results)
    finally:
        inst.stop()


def test_modules_get_the_process_tdb_registry(server):
    import subprocess
    out = subprocess.run(["tdbdump", os.path.join(server.db_dir, "probe.tdb")], capture_output=True, text=True)
    assert out.returncode == 0 and 'key(13) = "last_init_pid"' in out.stdout
    mode = os.stat(os.path.join(server.db_dir, "probe.tdb")).st_mode & 0o777
    assert mode == 0o600 and os.stat(server.db_dir).st_mode & 0o777 == 0o700


def test_first_request_after_start_does_not_import_modules(server):
    """Every child preloads modules at start (PythonImport), so none was loaded by a request."""
    with open(server.error_log) as f:
        log = f.read()
    assert "modules were loaded by a request" not in log
    assert log.count("clarens: pid ") >= 1   # the per-child load summary


def test_debug_mode_sends_tracebacks_to_the_client():
    inst = start_instance("clarens-debug-", debug=True)
    try:
        proxy = xmlrpc.client.ServerProxy(inst.url)
        with pytest.raises(xmlrpc.client.Fault) as info:
            proxy.probe.boom()
        text = info.value.faultString
        assert "Traceback" in text and "1 / 0" in text and "caller: anonymous from 127.0.0.1" in text
    finally:
        inst.stop()
