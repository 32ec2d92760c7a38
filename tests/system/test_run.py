# SPDX-License-Identifier: Apache-2.0
"""``./run`` as a developer uses it: ``test PATH`` runs only those, ``restart`` loads a new module, and a
failed run names the temporary files it kept."""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import xmlrpc.client

import pytest

from clarens import procfs
from clarens.db import open_db
from clarens.dev.instance import Instance
from clarens.web import digests
from tests.helpers import ROOT, basic_proxy, free_port, make_state_dir, start_instance, wait_for

RUN = os.path.join(ROOT, "run")


def collected(*args: str) -> list[str]:
    """The test ids ``./run test ARGS --collect-only`` collects."""
    out = subprocess.run([RUN, "test", *args, "--collect-only", "-q", "-p", "no:cacheprovider"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return [line for line in out.stdout.splitlines() if "::" in line]


def test_run_test_with_paths_runs_only_those_and_each_once():
    one = collected("tests/unit/test_config.py")
    assert one and all(t.startswith("tests/unit/test_config.py::") for t in one) and len(set(one)) == len(one)
    picked = collected("tests/unit/test_config.py", "-k", "relative")
    assert picked and set(picked) < set(one)
    node = collected(one[0])
    assert node == one[:1]
    both = collected("tests/unit/test_config.py", "tests/integration/test_once.py")
    assert {t.split("::")[0] for t in both} == {"tests/unit/test_config.py", "tests/integration/test_once.py"}
    everything = collected("-k", "relative")                   # no path: the whole suite, filtered
    assert set(picked) <= set(everything) and {t.split("::")[0] for t in everything} - {"tests/unit/test_config.py"}


def test_run_test_with_a_layer_runs_that_layer_and_its_marker_selects_the_same():
    unit = collected("unit")
    assert unit and all(t.startswith("tests/unit/") for t in unit)
    assert collected("-m", "unit") == unit
    lint = collected("lint", "-k", "mypy")
    assert lint == ["tests/lint/test_style.py::test_mypy"]
    both = collected("lint", "tests/unit/test_config.py")
    assert {t.split("::")[0] for t in both} == {"tests/lint/test_style.py", "tests/unit/test_config.py"}
    assert set(collected("-m", "not system")) == set(collected("unit", "integration", "lint"))


def test_a_failed_run_names_the_temporary_files_it_kept():
    root = tempfile.mkdtemp(prefix="krun-", dir="/tmp")
    try:
        out = subprocess.run(["/usr/bin/python3", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              "tests/system/test_run.py::test_fail_on_purpose"], cwd=ROOT, capture_output=True,
                             text=True, env=dict(os.environ, TMPDIR=root, CLARENS_FAIL_ON_PURPOSE="1"), timeout=300)
        assert out.returncode == 1
        kept = re.findall(r"kept: (\S+) \(the temporary files of a run with failures, \d+ MB\): rm -rf \1 removes it",
                          out.stdout)
        assert len(kept) == 1 and kept[0].startswith(root + "/clarens-tests-") and os.path.isdir(kept[0]), out.stdout
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_fail_on_purpose():
    """Run only by the test above (a no-op otherwise): a run with a failure."""
    assert not os.environ.get("CLARENS_FAIL_ON_PURPOSE")


NEW_MODULE = '''"""fresh: a module a service author has just written."""


def hello():
    """Say hello."""
    return "hello"


methods_list = {"hello": hello}
'''


def test_restart_loads_a_new_module_and_restarts_fully_only_when_the_pool_needs_it():
    """The module-author section: a new module in modules/ serves after ./run restart (a graceful restart
    of the private instance: the same parent), with the configuration rendered again."""
    modules = make_state_dir("clarens-authors-modules-")
    inst = start_instance("clarens-restart-", burner=False, options={"clarens.server.access_control": "off"})
    inst.options["clarens.server.modules_path"] += ":" + modules
    try:
        assert inst.restart() == "restarted gracefully"
        parent = inst.running_pid()
        proxy = xmlrpc.client.ServerProxy(inst.url)
        assert "fresh.hello" not in proxy.system.listMethods()
        os.mkdir(os.path.join(modules, "fresh"))
        with open(os.path.join(modules, "fresh", "__init__.py"), "w") as f:
            f.write(NEW_MODULE)
        assert inst.restart() == "restarted gracefully" and inst.running_pid() == parent
        assert proxy.fresh.hello() == "hello"
        inst.options["clarens.server.workers"] = "40"               # fewer workers: a full restart
        assert inst.restart() == "restarted (MaxRequestWorkers went down: a graceful restart would not do)"
        assert inst.running_pid() != parent and proxy.fresh.hello() == "hello"
    finally:
        inst.stop()
        shutil.rmtree(inst.state_dir, ignore_errors=True)
        shutil.rmtree(modules, ignore_errors=True)
    # ./run restart reaches it (the command is known: only the made-up option is refused).
    out = subprocess.run([RUN, "restart", "--no-such-option"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "unrecognized arguments: --no-such-option" in out.stderr, out.stderr


def hashers(inst: Instance) -> list[int]:
    """Pids of the background hashing processes of ``inst``'s images (clarens.web.digests)."""
    return [p for p in procfs.pids() if b"clarens.web.digests" in (line := b" ".join(procfs.cmdline(p)))
            and inst.db_dir.encode() in line]


def test_run_stop_stops_the_background_hashing_and_leaves_no_partial_record():
    """Without systemd's cgroup: an image put in by hand is being hashed in the background (a process of
    its own session, init's child) when ./run stop stops the private instance; the hashing process
    ends with it, within a few seconds, leaving neither a digest of the image nor its progress."""
    inst = start_instance("clarens-stop-hashing-")
    big = os.path.join(inst.images_dir, "big-sparse.iso")
    try:
        with open(big, "wb") as f:
            f.truncate(200 * 10**9)                         # minutes of hashing
        proxy = basic_proxy(inst, "demo")
        wait_for("the big image's hashing to make progress", lambda: (proxy.burner.images()[0]["hashing"] or {})
                 .get("bytes"), timeout=60, interval=0.2)
        [hasher] = hashers(inst)
        out = subprocess.run([RUN, "stop"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                             env=dict(os.environ, CLARENS_STATE=inst.state_dir, CLARENS_PORT=str(inst.port),
                                      CLARENS_TLS_PORT=str(inst.tls_port)))
        assert out.returncode == 0 and "stopped" in out.stdout, out.stdout + out.stderr
        assert not inst.processes()
        wait_for("the hashing process to end after the server's stop", lambda: not procfs.alive(hasher), timeout=5)
        db = open_db(os.path.join(inst.db_dir, "burner.tdb"))
        try:
            assert db.get("image:big-sparse.iso") is None and db.get("image:" + digests.PROGRESS) is None
        finally:
            db.close()
        assert set(os.listdir(inst.images_dir)) == {"big-sparse.iso", ".uploads.lock"}     # nothing else written
    finally:
        inst.stop()
        for pid in hashers(inst):                            # (only when the test failed)
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(inst.state_dir, ignore_errors=True)


def test_a_private_state_directory_gets_only_the_traverse_bit_it_needs_and_says_so(capsys):
    """As root Apache's children run as www-data and must reach the state below CLARENS_STATE: a 0700
    directory becomes 0701, not 0755, and the change is said."""
    if os.geteuid() != 0:
        pytest.skip("Apache's children run as the caller")
    state = make_state_dir("clarens-private-state-")
    os.chmod(state, 0o700)
    try:
        Instance(state, free_port(), free_port(), burner=False).prepare()
        assert stat.S_IMODE(os.stat(state).st_mode) == 0o701
        assert "%s is now mode 0701 (it was 0700)" % state in capsys.readouterr().err
        Instance(state, free_port(), free_port(), burner=False).prepare()        # already so: nothing said
        assert "is now mode" not in capsys.readouterr().err
    finally:
        shutil.rmtree(state, ignore_errors=True)
