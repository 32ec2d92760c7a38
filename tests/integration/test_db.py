# SPDX-License-Identifier: Apache-2.0
"""The tdb registry: one handle per file per process, JSON values, transactions."""

import multiprocessing
import os
import shutil
import stat
import subprocess
import sys
import threading

import pytest

from clarens import db
from tests.helpers import ROOT


@pytest.fixture
def registry(tmp_path):
    yield db.Registry(str(tmp_path))
    for name in os.listdir(tmp_path):
        if name.endswith(".tdb"):
            db.open_db(str(tmp_path / name)).close()


def test_register_dbs_opens_several_at_once(registry, tmp_path):
    """Clarens' own name for opening a module's databases in _startup_init."""
    dbs = registry.register_dbs("jobs", "users")
    assert sorted(dbs) == ["jobs", "users"] and dbs["jobs"] is registry.open("jobs")
    assert os.path.exists(tmp_path / "users.tdb")


def test_same_file_is_opened_once_and_values_are_json(registry, tmp_path):
    a = registry.open("things")
    assert registry.open("things") is a is db.open_db(str(tmp_path / "things.tdb"))
    a.put("k", {"list": [1, 2.5, None, True], "text": "é"})
    assert a.get("k") == {"list": [1, 2.5, None, True], "text": "é"}
    assert a.get("missing", "dflt") == "dflt"
    dump = subprocess.run(["tdbdump", a.path], capture_output=True, text=True, check=True).stdout
    assert r'{\22list\22:[1,2.5,null,true]' in dump   # readable JSON records, never pickle
    assert stat.S_IMODE(os.stat(a.path).st_mode) == 0o600


def test_transaction_commits_all_or_nothing(registry):
    d = registry.open("tx")
    with d.transaction():
        d.put("a", 1)
        d.put("b", 2)
    with pytest.raises(RuntimeError):
        with d.transaction():
            d.put("a", 100)
            d.delete("b")
            raise RuntimeError("abort")
    assert d.items() == [("a", 1), ("b", 2)]


def test_seqnum_changes_on_write(registry):
    d = registry.open("seq")
    before = d.seqnum
    d.put("x", 1)
    assert d.seqnum != before


def test_seqnum_is_read_from_the_header_and_follows_other_processes(registry):
    d = registry.open("seq")
    assert d._header is not None   # the lock-free read is in use (tdb's file layout is the known one)
    script = ("import sys, tdb, os\n"
              "t = tdb.Tdb(sys.argv[1], 0, tdb.DEFAULT, os.O_RDWR, 0o600)\n"
              "t.enable_seqnum()\n"
              "for i in range(50): t.store(b'k%d' % i, b'v' * 4000, tdb.REPLACE)\n"   # grows the file
              "t.transaction_start(); t.store(b'x', b'1', tdb.REPLACE); t.transaction_commit()\n")
    before = d.seqnum
    subprocess.run([sys.executable, "-c", script, d.path], check=True)
    assert d.seqnum != before
    with d._lock:
        assert d.seqnum == d._handle().seqnum   # the same counter tdb itself reads


def test_invalid_names_are_refused(registry):
    for name in ("", "../etc", ".hidden", "a/b"):
        with pytest.raises(ValueError):
            registry.open(name)


def _increment(path, n):
    d = db.open_db(path)   # inherited handle: must be reopened after the fork
    for _ in range(n):
        with d.transaction():
            d.put("count", d.get("count", 0) + 1)


def test_threads_and_forked_processes_do_not_lose_updates(registry, caplog):
    d = registry.open("counter")
    d.put("count", 0)
    threads = [threading.Thread(target=_increment, args=(d.path, 50)) for _ in range(4)]
    procs = [multiprocessing.get_context("fork").Process(target=_increment, args=(d.path, 50)) for _ in range(4)]
    for t in threads + procs:
        t.start()
    for t in threads + procs:
        t.join()
    assert [p.exitcode for p in procs] == [0] * 4
    assert d.get("count") == 400
    assert not [r for r in caplog.records if "died inside a commit" in r.getMessage()]   # no repair without a death
    check = subprocess.run(["tdbtool", d.path, "check"], capture_output=True, text=True)
    assert check.stdout.startswith("Database integrity is OK")


# One change of an ACL-sized file in a process of its own: it rewrites every record larger, and adds
# some, so that its commit grows the file.
_GROWING_CHANGE = """
import os, sys
from clarens import db
print(os.getpid(), flush=True)
d = db.open_db(sys.argv[1])
with d.transaction():
    for key, value in d.items("entry:"):
        d.put(key, dict(value, pad="z" * 200))
    for n in range(50):
        d.put("entry:new%d" % n, {"allow": ["x" * 300]})
"""


def test_a_commit_killed_midway_leaves_no_leaked_space(registry, tmp_path, caplog):
    """tdb rolls back a commit killed midway but keeps what it had appended past the old end of
    the file, reachable from nothing, and ``tdbtool check`` fails on it ever after.  The next
    transaction reclaims it: the file checks out, and holds the state before the killed change
    (or after it, if it was killed once the commit was durable), never a mixture."""
    base = registry.open("base")
    with base.transaction():
        for n in range(300):
            base.put("entry:bulk.m%03d" % n, {"allow": ["someone%d" % n]})
    before = dict(base.items())
    changed = dict({k: dict(v, pad="z" * 200) for k, v in before.items()},
                   **{"entry:new%d" % n: {"allow": ["x" * 300]} for n in range(50)})
    base.close()
    grown = 0
    for kill_at in range(1, 5):        # the commit's 1st to 4th fdatasync: before, at and after its writes
        path = str(tmp_path / ("killed%d.tdb" % kill_at))
        shutil.copy(base.path, path)
        size = os.path.getsize(path)
        run = subprocess.run(["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=fdatasync", "-e",
                              "inject=fdatasync:signal=KILL:when=%d" % kill_at, sys.executable, "-c", _GROWING_CHANGE,
                              path], cwd=ROOT, capture_output=True, text=True)
        assert run.returncode in (-9, 128 + 9), run.stderr       # killed inside its transaction
        grown += os.path.getsize(path) > size
        after = db.open_db(path)
        caplog.clear()
        with after.transaction():
            after.put("after", True)
        assert [r.getMessage() for r in caplog.records if "died inside a commit" in r.getMessage()] == [
            "%s: process %d died inside a commit (rolled back); reclaiming the space it had appended" % (
                after.path, int(run.stdout))]
        assert dict(after.items()) in (dict(before, after=True), dict(changed, after=True))
        after.close()
        check = subprocess.run(["tdbtool", path, "check"], capture_output=True, text=True)
        assert check.stdout.startswith("Database integrity is OK"), (kill_at, check.stdout + check.stderr)
    assert grown, "no commit was killed after growing the file: the case this is about did not happen"
