# SPDX-License-Identifier: Apache-2.0
"""Refusals are counted by every process of a server together: lines within budgets, the rest summarised."""

import logging
import multiprocessing
import os

import pytest

from clarens import refusals

KEY_LINES = refusals.LINES // 4


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def log():
    logger = logging.getLogger("test.refusals.%d" % id(object()))
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = Lines()
    logger.addHandler(handler)
    logger.lines = handler.lines
    return logger


class Clock:
    def __init__(self, now=1_000_020.0):
        self.now = now

    def __call__(self):
        return self.now


def test_a_key_writes_its_budget_then_is_counted(tmp_path, log):
    counter = refusals.RefusalLog(str(tmp_path / "r"), log, clock=Clock())
    written = [counter.refuse("credentials", "192.0.2.7", "line %d" % i) for i in range(100)]
    assert written.count(True) == KEY_LINES and written[:KEY_LINES] == [True] * KEY_LINES
    assert counter.refuse("credentials", "192.0.2.8", "another address") is True      # others are not held back
    assert counter.counts()["credentials"] == {"refused": 101, "logged": 6, "top": {"192.0.2.7": 100, "192.0.2.8": 1}}


def test_a_class_writes_at_most_its_budget_from_any_number_of_addresses(tmp_path, log):
    counter = refusals.RefusalLog(str(tmp_path / "r"), log, clock=Clock())
    written = [counter.refuse("fault -32001", "127.0.%d.%d" % (i // 250, i % 250 + 1), "denied") for i in range(400)]
    assert written.count(True) == refusals.LINES == len(log.lines)
    assert counter.refuse("credentials", "127.0.9.9", "a class of its own") is True


def test_the_summary_says_how_many_and_from_where_once_the_interval_is_over(tmp_path, log):
    clock = Clock()
    counter = refusals.RefusalLog(str(tmp_path / "r"), log, clock=clock)
    for i in range(300):
        counter.refuse("not UTF-8", "10.0.0.1" if i % 3 else "10.0.%d.2" % i, "line")
    log.lines.clear()
    counter.flush()
    assert log.lines == []                                   # the interval is not over yet
    clock.now += refusals.INTERVAL
    counter.flush()
    [summary] = log.lines
    assert summary.startswith("refused (not UTF-8): 300 in the 60 s from ")
    assert summary.endswith(", 20 logged; most from 10.0.0.1 (200), others 100")
    counter.flush()
    assert len(log.lines) == 1                               # once
    assert counter.refuse("not UTF-8", "10.0.0.1", "line") is True    # a new interval, a new budget


def test_no_summary_when_every_refusal_was_logged(tmp_path, log):
    clock = Clock()
    counter = refusals.RefusalLog(str(tmp_path / "r"), log, clock=clock)
    counter.refuse("credentials", "192.0.2.7", "one")
    clock.now += refusals.INTERVAL
    counter.flush()
    assert log.lines == ["one"]


def test_the_address_table_is_bounded_and_keeps_the_heavy_hitters(tmp_path, log):
    counter = refusals.RefusalLog(str(tmp_path / "r"), log, clock=Clock())
    for i in range(5000):
        counter.refuse("fault -32001", "10.1.%d.%d" % (i // 200, i % 200) if i % 2 else "10.9.9.9", "x")
    top = counter.counts()["fault -32001"]["top"]
    assert len(top) == refusals.TOP and max(top, key=top.get) == "10.9.9.9" and top["10.9.9.9"] >= 2500


def test_classes_beyond_the_table_fold_into_other(tmp_path, log):
    counter = refusals.RefusalLog(str(tmp_path / "r"), log, clock=Clock())
    for i in range(refusals.CLASSES + 10):
        counter.refuse("fault %d" % i, "192.0.2.7", "x")
    counts = counter.counts()
    assert len(counts) == refusals.CLASSES and counts[refusals.OTHER]["refused"] == 11


def test_a_level_the_log_leaves_out_is_not_counted(tmp_path, log):
    log.setLevel(logging.WARNING)
    counter = refusals.RefusalLog(str(tmp_path / "r"), log, clock=Clock())
    assert counter.refuse("content type", "192.0.2.7", "x", level=logging.INFO) is False
    assert counter.counts() == {}


def _refuse_in_child(path, n, queue):
    logger = logging.getLogger("child")
    logger.setLevel(logging.WARNING)
    logger.addHandler(logging.NullHandler())
    counter = refusals.RefusalLog(path, logger, clock=Clock())
    queue.put(sum(counter.refuse("credentials", "192.0.2.%d" % (i % 7), "x") for i in range(n)))


def test_processes_share_the_counts_and_the_budget(tmp_path, log):
    path = str(tmp_path / "r")
    queue = multiprocessing.get_context("fork").Queue()
    children = [multiprocessing.get_context("fork").Process(target=_refuse_in_child, args=(path, 200, queue))
                for _ in range(4)]
    for child in children:
        child.start()
    for child in children:
        child.join(30)
    written = sum(queue.get(timeout=5) for _ in children)
    assert written == min(refusals.LINES, 7 * KEY_LINES)
    counts = refusals.RefusalLog(path, log, clock=Clock()).counts()["credentials"]
    assert counts["refused"] == 800 and counts["logged"] == written
    assert os.stat(path).st_mode & 0o077 == 0


def test_a_table_left_half_written_reads_as_empty(tmp_path, log):
    path = str(tmp_path / "r")
    counter = refusals.RefusalLog(path, log, clock=Clock())
    counter.refuse("credentials", "192.0.2.7", "x")
    with open(path, "r+b") as f:      # a process died while writing the slot's state
        f.seek(refusals._SLOT + refusals._HEAD.size)
        f.write(b"{\"n\":\xff")
    again = refusals.RefusalLog(path, log, clock=Clock())
    assert again.refuse("credentials", "192.0.2.7", "y") is True
    assert again.counts()["credentials"]["refused"] == 1


def test_without_the_shared_file_the_process_keeps_its_own(tmp_path, log):
    counter = refusals.RefusalLog(str(tmp_path / "missing" / "r"), log, clock=Clock())
    assert counter.refuse("credentials", "192.0.2.7", "x") is True
    assert any("refusal counters are this process's own" in line for line in log.lines)
    assert counter.counts()["credentials"]["refused"] == 1


def test_an_authenticated_caller_has_a_budget_of_its_own(tmp_path, log):
    counter = refusals.RefusalLog(str(tmp_path / "r"), log, clock=Clock())
    for i in range(400):
        counter.refuse("fault -32001", "127.0.%d.%d" % (i // 250, i % 250 + 1), "anonymous, denied")
    written = [counter.refuse("fault -32001", "127.0.%d.1" % i, "alice, denied", caller="alice") for i in range(9)]
    assert written == [True] * KEY_LINES + [False] * 4     # its own five, from any address
    assert counter.counts()["fault -32001"] == {"refused": 409, "logged": refusals.LINES + KEY_LINES,
                                                "top": counter.counts()["fault -32001"]["top"]}
