# SPDX-License-Identifier: Apache-2.0
"""Digests of files put into a directory by hand: computed by a background process, never in a listing."""

import fcntl
import glob
import hashlib
import os
import subprocess
import time

from clarens import procfs
from clarens.db import open_db
from clarens.image_names import name_problem
from clarens.web import digests


def make(directory, name, data):
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def test_run_hashes_what_lacks_a_digest_and_skips_odd_names(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    make(images, "a.iso", b"a" * 10_000_000)
    make(images, "b.iso", b"b")
    make(images, ".partial-x", b"hidden")
    make(images, "bad\udcff.iso".encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape"), b"odd")
    os.mkdir(images / "dir.iso")
    store = digests.Digests(str(images), open_db(str(tmp_path / "burner.tdb")), "image:")
    assert store.run() == 2
    assert store.known("a.iso")["sha256"] == hashlib.sha256(b"a" * 10_000_000).hexdigest()
    assert digests.current(store.known("b.iso"), os.lstat(images / "b.iso"))
    assert store.progress() is None and store.known(".partial-x") is None
    assert store.run() == 0                                 # nothing left to do
    make(images, "b.iso", b"changed")                       # a file replaced: stale, hashed again
    assert not digests.current(store.known("b.iso"), os.lstat(images / "b.iso"))
    assert store.run() == 1 and store.known("b.iso")["sha256"] == hashlib.sha256(b"changed").hexdigest()


def test_a_second_process_leaves_the_work_to_the_first(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    make(images, "a.iso", b"a")
    store = digests.Digests(str(images), open_db(str(tmp_path / "b.tdb")), "image:")
    fd = os.open(store.lock_path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert store.run() == 0 and store.request() is False
    finally:
        os.close(fd)


def test_the_background_process_stops_with_the_server_it_watches(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    make(images, "a.iso", b"a")
    store = digests.Digests(str(images), open_db(str(tmp_path / "b.tdb")), "image:")
    gone = subprocess.Popen(["/bin/true"])
    started = procfs.start_time(gone.pid)
    gone.wait()
    store.server = (gone.pid, started)                      # the server has stopped: nothing is hashed
    store.db.put("image:" + digests.PROGRESS, {"name": "a.iso", "bytes": 1})     # left by a killed process
    assert store.run() == 0 and store.known("a.iso") is None and store.progress() is None
    store.server = (os.getpid(), procfs.start_time(os.getpid()) + "0")           # the pid, reused by another
    assert store.run() == 0
    store.server = (os.getpid(), procfs.start_time(os.getpid()))
    assert store.run() == 1 and store.known("a.iso")["sha256"]


def test_the_background_process_refuses_a_command_line_without_its_server():
    for argv in (["db", "dir", "image:"], ["db", "dir", "image:", "123"], ["db", "dir", "image:", "1:x"]):
        assert digests.main(argv) == 2


def test_only_what_the_listing_shows_is_hashed(tmp_path):
    """The background process reads no file the image listing leaves out: the one image-name rule."""
    images = tmp_path / "images"
    images.mkdir()
    shown = ["disc.iso", "café.iso", "UPPER.ISO"]
    left_out = ["notes.txt", "README", ".partial-1", "x\ufffe.iso", "a\u202eb.iso", "iso", "%s.iso" % ("n" * 197)]
    for name in shown + left_out:
        make(images, name, b"data")
    assert [n for n in shown + left_out if name_problem(n) is None] == shown
    store = digests.Digests(str(images), open_db(str(tmp_path / "burner.tdb")), "image:")
    assert store.run() == len(shown)
    assert {key for key in store.db.keys("image:")} == {"image:" + n for n in shown}


def zombies_of(pid):
    """The processes that ``pid`` started, ended and never waited for."""
    found = []
    for path in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(path) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == pid:
            found.append(path)
    return found


def test_a_request_starts_a_process_that_hashes_and_leaves_no_zombie(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    make(images, "a.iso", b"a" * 1000)
    store = digests.Digests(str(images), open_db(str(tmp_path / "burner.tdb")), "image:")
    assert store.request() is True and store.request() is False     # looked again within REQUEST_EVERY
    deadline = time.monotonic() + 60
    while not (store.known("a.iso") or {}).get("sha256") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.known("a.iso")["sha256"] == hashlib.sha256(b"a" * 1000).hexdigest()
    fd = os.open(store.lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)      # the hashing process holds it until it exits
    finally:
        os.close(fd)
    assert zombies_of(os.getpid()) == []
