# SPDX-License-Identifier: Apache-2.0
"""once_per_server: exactly one process runs the block per server start, even if one dies in it."""

import multiprocessing
import os
import time

import pytest

from clarens import procfs
from clarens.once import once_per_server


def _record(directory, log, delay):
    def block():
        time.sleep(delay)
        with open(log, "a") as f:
            f.write("%d\n" % os.getpid())
    once_per_server("load", block, directory)


def _die_inside(directory):
    once_per_server("load", lambda: os._exit(9), directory)


def _spawn(target, *args):
    p = multiprocessing.get_context("fork").Process(target=target, args=args)
    p.start()
    return p


def test_concurrent_processes_run_the_block_once(tmp_path):
    log = tmp_path / "ran.log"
    procs = [_spawn(_record, str(tmp_path), str(log), 0.2) for _ in range(6)]
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0] * 6
    assert len(log.read_text().split()) == 1
    # The children's "server" is their parent, this process.
    assert (tmp_path / "once" / "load.done").read_text().split(":")[0] == str(os.getpid())


def test_a_holder_that_dies_releases_the_lock_and_the_next_one_runs(tmp_path):
    dying = _spawn(_die_inside, str(tmp_path))
    dying.join(10)
    assert dying.exitcode == 9
    log = tmp_path / "ran.log"
    survivor = _spawn(_record, str(tmp_path), str(log), 0)
    survivor.join(10)
    assert survivor.exitcode == 0 and len(log.read_text().split()) == 1


def test_a_new_server_start_runs_it_again(tmp_path):
    (tmp_path / "once").mkdir()
    (tmp_path / "once" / "load.done").write_text("1:12345:0")   # an earlier start
    ran = []
    assert once_per_server("load", lambda: ran.append(1), str(tmp_path)) is True
    assert once_per_server("load", lambda: ran.append(2), str(tmp_path)) is False
    assert ran == [1]


def test_a_failing_block_records_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        once_per_server("load", lambda: (_ for _ in ()).throw(RuntimeError("no")), str(tmp_path))
    assert not (tmp_path / "once" / "load.done").exists()


def test_a_late_child_of_an_older_generation_does_not_run_it_again(tmp_path):
    (tmp_path / "once").mkdir()
    stamp = tmp_path / "once" / "load.done"
    parent, start = os.getppid(), procfs.start_time(os.getppid())
    stamp.write_text("%d:%s:3" % (parent, start))   # generation 3 already ran it; we are generation 0
    assert once_per_server("load", lambda: pytest.fail("ran again"), str(tmp_path)) is False
    assert stamp.read_text().endswith(":3")


@pytest.mark.parametrize("name", ["", "../x", ".hidden", "a/b", "sp ace"])
def test_names_are_validated(tmp_path, name):
    with pytest.raises(ValueError):
        once_per_server(name, lambda: None, str(tmp_path))
