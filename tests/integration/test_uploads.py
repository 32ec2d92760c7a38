# SPDX-License-Identifier: Apache-2.0
"""Resumable uploads (clarens.web.uploads) on a real filesystem, without Apache: the request
body is a function handing out bytes, as mod_python's req.read does."""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import subprocess
import time

import pytest

from clarens.db import open_db
from clarens.web import reservations
from clarens.web.uploads import BodyError, ContentRange, Finished, Progress, UploadError, Uploads, parse_content_range

HEAD = 64


def check_head(head: bytes) -> str | None:
    return None if head.startswith(b"GOOD") else "not a good file"


def make(directory, **kw) -> Uploads:
    settings = dict(max_size=10_000_000, reserve=0, expiry=3600, check_head=check_head, head_size=HEAD)
    settings.update(kw)
    return Uploads(str(directory), **settings)


def payload(n: int) -> bytes:
    return b"GOOD" + os.urandom(n - 4)


def reader(data: bytes, fail_after: int | None = None):
    """req.read: hands out ``data``; raises BodyError (a client gone) after ``fail_after`` bytes."""
    stream = io.BytesIO(data)

    def read(size: int) -> bytes:
        if fail_after is not None and stream.tell() >= fail_after:
            raise BodyError(400, "client gone")
        return stream.read(size if fail_after is None else min(size, fail_after - stream.tell()))
    return read


def refusal(call) -> UploadError:
    with pytest.raises(UploadError) as info:
        call()
    return info.value


def hidden(directory) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.startswith(".") and n != reservations.LOCK_NAME)


@pytest.mark.parametrize("value, expected", [
    ("bytes 0-9/10", ContentRange(0, 9, 10)),
    ("bytes 5-5/6", ContentRange(5, 5, 6)),
    ("bytes */42", ContentRange(None, None, 42)),
    (" bytes 0-0/1 ", ContentRange(0, 0, 1)),
])
def test_content_range_parses(value, expected):
    assert parse_content_range(value) == expected


@pytest.mark.parametrize("value", ["bytes 0-10/10", "bytes 5-4/10", "bytes=0-9/10", "bytes 0-9/*", "items 0-1/2",
                                   "bytes -1-9/10", "bytes 0-9", "", "bytes 0-9/10, 10-19/20"])
def test_content_range_refuses(value):
    assert refusal(lambda: parse_content_range(value)).status == 400


def test_whole_upload(tmp_path):
    data = payload(3_000_000)
    done = make(tmp_path).receive("a.iso", "alice", len(data), None, reader(data))
    assert isinstance(done, Finished) and done.sha256 == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "a.iso").read_bytes() == data and done.stat.st_size == len(data)
    assert hidden(tmp_path) == [] and done.stat.st_nlink == 1


def test_query_resume_and_complete(tmp_path):
    up, data = make(tmp_path), payload(2_500_000)
    total = len(data)
    assert up.receive("r.iso", "alice", 0, ContentRange(None, None, total), reader(b"")).received == 0
    assert hidden(tmp_path) == []                              # a question leaves nothing behind
    first = up.receive("r.iso", "alice", 1_000_000, parse_content_range("bytes 0-999999/%d" % total),
                       reader(data[:1_000_000]))
    assert isinstance(first, Progress) and (first.received, first.total) == (1_000_000, total)
    assert first.headers == {"Upload-Offset": "1000000", "Upload-Length": str(total), "Upload-Complete": "?0"}
    assert up.status("r.iso", "alice").received == 1_000_000
    assert up.status("r.iso", "bob") is None                  # each uploader resumes only their own
    wrong = refusal(lambda: up.receive("r.iso", "alice", 10, parse_content_range("bytes 5-14/%d" % total),
                                       reader(data[5:15])))
    assert wrong.status == 409 and wrong.headers == {"Upload-Offset": "1000000"}
    assert "send from byte 1000000" in str(wrong)
    other = refusal(lambda: up.receive("r.iso", "alice", 10, parse_content_range("bytes 1000000-1000009/%d"
                                                                                 % (total + 1)), reader(b"x" * 10)))
    assert other.status == 409 and "start again" in str(other)
    rest = data[1_000_000:]
    done = up.receive("r.iso", "alice", len(rest), parse_content_range("bytes 1000000-%d/%d" % (total - 1, total)),
                      reader(rest))
    assert done.sha256 == hashlib.sha256(data).hexdigest()    # covers what came before the resume
    assert (tmp_path / "r.iso").read_bytes() == data and hidden(tmp_path) == []
    assert up.status("r.iso", "carol").headers["Upload-Complete"] == "?1"


def test_dropped_body_keeps_what_arrived(tmp_path):
    up, data = make(tmp_path), payload(3_000_000)
    cut = refusal(lambda: up.receive("d.iso", "alice", len(data), None, reader(data, fail_after=1_234_567)))
    assert cut.status == 400 and cut.headers == {"Upload-Offset": "1234567"}
    [partial] = hidden(tmp_path)
    assert (tmp_path / partial).read_bytes() == data[:1_234_567]
    assert os.stat(tmp_path / partial).st_mode & 0o777 == 0o640
    assert up.status("d.iso", "alice").received == 1_234_567
    whole = up.receive("d.iso", "alice", len(data), None, reader(data))   # without Content-Range: start over
    assert whole.sha256 == hashlib.sha256(data).hexdigest() and hidden(tmp_path) == []


@pytest.mark.parametrize("length, content_range, status", [
    (None, None, 411),
    (20_000_000, None, 413),
    (10, None, 415),                                    # smaller than the head: cannot be valid
    (5, "bytes */100000", 400),                         # a question has no body
    (10, "bytes 0-19/100000", 400),                     # the range and the length disagree
    (0, "bytes */20000000", 413),
])
def test_refusals_before_reading(tmp_path, length, content_range, status):
    def read(size):
        raise AssertionError("the body must not be read")
    got = refusal(lambda: make(tmp_path).receive("x.iso", "alice", length,
                                                 parse_content_range(content_range) if content_range else None, read))
    assert got.status == status and hidden(tmp_path) == []


def test_name_taken_and_bad_head(tmp_path):
    (tmp_path / "taken.iso").write_bytes(b"x")
    up = make(tmp_path)
    assert refusal(lambda: up.receive("taken.iso", "a", 100, None, reader(payload(100)))).status == 409
    bad = b"BAD!" + os.urandom(2_000_000)
    got = refusal(lambda: up.receive("bad.iso", "a", len(bad), None, reader(bad)))
    assert got.status == 415 and "not a good file" in str(got) and hidden(tmp_path) == []


def test_no_space_is_refused_before_reading(tmp_path):
    fs = os.statvfs(tmp_path)
    up = make(tmp_path, reserve=fs.f_blocks * fs.f_frsize)      # nothing to spare, whatever others free meanwhile
    got = refusal(lambda: up.receive("big.iso", "a", 1000, None, reader(payload(1000))))
    assert got.status == 507 and "not enough space" in str(got) and hidden(tmp_path) == []


def test_the_same_upload_twice_at_once_is_refused(tmp_path):
    up, data = make(tmp_path), payload(1_000_000)
    refusal(lambda: up.receive("l.iso", "alice", len(data), None, reader(data, fail_after=100_000)))
    [partial] = hidden(tmp_path)
    fd = os.open(tmp_path / partial, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)                         # another child is still writing it
    try:
        busy = refusal(lambda: up.receive("l.iso", "alice", 0, ContentRange(None, None, len(data)), reader(b"")))
        assert busy.status == 409 and busy.headers == {"Retry-After": "5"}
        assert up.sweep(time.time() + 10**6) == []         # nor is it swept while written
    finally:
        os.close(fd)


def test_sweep_removes_only_idle_partials(tmp_path):
    up, data = make(tmp_path, expiry=3600), payload(1_000_000)
    for name in ("old.iso", "new.iso"):
        refusal(lambda name=name: up.receive(name, "alice", len(data), None, reader(data, fail_after=200_000)))
    old = up._partials(up._prefix("alice", "old.iso"))[0][0]
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    (tmp_path / ".upload-0123.part").write_bytes(b"left by an older version")
    os.utime(tmp_path / ".upload-0123.part", (1, 1))
    (tmp_path / "image.iso").write_bytes(b"x")
    os.utime(tmp_path / "image.iso", (1, 1))
    linked = str(tmp_path / ".partial-0123-1")          # a process died between link and unlink
    os.link(tmp_path / "image.iso", linked)
    assert sorted(up.sweep()) == sorted([old, str(tmp_path / ".upload-0123.part"), linked])
    assert up.status("new.iso", "alice").received == 200_000 and up.status("old.iso", "alice") is None
    assert (tmp_path / "image.iso").exists() and os.stat(tmp_path / "image.iso").st_nlink == 1


@pytest.fixture
def small_fs(tmp_path):
    """A 4 MB filesystem of its own (tmpfs), to fill up."""
    mount = tmp_path / "fs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_disk_filling_up_mid_upload_is_507_and_the_partial_is_given_back(small_fs):
    """Something else fills the disk mid-upload: what the upload held is removed at once (it would
    otherwise sit there for days, keeping every other upload out)."""
    up, data = make(small_fs), payload(3_000_000)
    stream = reader(data)

    def read(size):
        chunk = stream(size)
        if not (small_fs / "filler").exists():          # someone else fills the disk meanwhile
            with open(small_fs / "filler", "wb") as f:
                try:
                    f.write(b"\0" * 4_000_000)
                except OSError:
                    pass
        return chunk
    full = refusal(lambda: up.receive("f.iso", "alice", len(data), None, read))
    assert full.status == 507 and "the partial upload was removed" in str(full)
    assert full.headers == {"Upload-Offset": "0"} and up.status("f.iso", "alice") is None and hidden(small_fs) == []
    os.unlink(small_fs / "filler")
    done = up.receive("f.iso", "alice", len(data), None, reader(data))
    assert done.sha256 == hashlib.sha256(data).hexdigest()


def test_concurrent_uploads_keep_the_reserve_between_them(small_fs):
    """4 MB, 1 MB reserved: while one upload of 2 MB is being written, a second is refused before its
    body (alone, each would fit), and is accepted once the first has finished or stopped."""
    up = make(small_fs, reserve=1_000_000)
    first, second = payload(2_000_000), payload(2_000_000)
    answers, stream = [], reader(first)

    def read_first(size):
        if not answers:      # with the first upload under way: the second asks for its room
            answers.append(refusal(lambda: up.receive("b.iso", "bob", len(second), None, reader(second))))
        return stream(size)
    assert isinstance(up.receive("a.iso", "alice", len(first), None, read_first), Finished)
    [refused] = answers
    assert refused.status == 507 and "promised to uploads under way" in str(refused) and hidden(small_fs) == []
    os.unlink(small_fs / "a.iso")
    assert isinstance(up.receive("b.iso", "bob", len(second), None, reader(second)), Finished)
    fs = os.statvfs(small_fs)
    assert fs.f_bavail * fs.f_frsize >= 1_000_000


def test_an_uploader_may_leave_only_so_much_unfinished(tmp_path):
    up, data = make(tmp_path, per_user=2_500_000), payload(1_000_000)
    for name in ("1.iso", "2.iso"):
        refusal(lambda name=name: up.receive(name, "alice", len(data), None, reader(data, fail_after=10)))
    over = refusal(lambda: up.receive("3.iso", "alice", len(data), None, reader(data)))
    assert over.status == 507 and "over the limit of 2500000 per uploader" in str(over)
    assert isinstance(up.receive("1.iso", "alice", len(data), None, reader(data)), Finished)   # its own: fine
    assert isinstance(up.receive("3.iso", "bob", len(data), None, reader(data)), Finished)     # others: theirs


def test_unfinished_uploads_are_listed_and_discarded(tmp_path):
    db = open_db(str(tmp_path / "records.tdb"))
    images = tmp_path / "images"
    images.mkdir()
    up, data = make(images, records=db), payload(1_000_000)
    for who, name in (("alice", "a.iso"), ("bob", "b.iso")):
        refusal(lambda who=who, name=name: up.receive(name, who, len(data), None, reader(data, fail_after=1000)))
    listed = up.unfinished()
    assert [(u["uploader"], u["name"], u["size"], u["received"], u["writing"]) for u in listed] == [
        ("alice", "a.iso", 1_000_000, 1000, False), ("bob", "b.iso", 1_000_000, 1000, False)]
    assert [u["name"] for u in up.unfinished("bob")] == ["b.iso"]
    assert refusal(lambda: up.discard("b.iso", "alice")).status == 404
    [partial] = [n for n in hidden(images) if up.unfinished("alice") and n.startswith(up._prefix("alice"))]
    fd = os.open(images / partial, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)                         # being written by another child
    try:
        assert up.unfinished("alice")[0]["writing"] is True
        assert refusal(lambda: up.discard("a.iso", "alice")).status == 409
    finally:
        os.close(fd)
    assert up.discard("a.iso", "alice") == 1000 and up.discard("b.iso", "bob") == 1000
    assert up.unfinished() == [] and hidden(images) == [] and db.keys("upload:") == []


def test_starting_again_with_another_size_waits_for_a_running_upload(tmp_path):
    up, data = make(tmp_path), payload(1_000_000)
    refusal(lambda: up.receive("s.iso", "alice", len(data), None, reader(data, fail_after=100_000)))
    [old] = hidden(tmp_path)
    fd = os.open(tmp_path / old, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)                    # its first upload is still being written
    try:
        bigger = payload(2_000_000)
        busy = refusal(lambda: up.receive("s.iso", "alice", len(bigger), None, reader(bigger)))
        assert busy.status == 409 and hidden(tmp_path) == [old]
    finally:
        os.close(fd)
    done = up.receive("s.iso", "alice", len(bigger), None, reader(bigger))
    assert done.sha256 == hashlib.sha256(bigger).hexdigest() and hidden(tmp_path) == []
