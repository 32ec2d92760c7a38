# SPDX-License-Identifier: Apache-2.0
"""The helper's parts on their own: configuration, image checks, backends and xorriso, read-back, socket, job store."""

from __future__ import annotations

import ast
import hashlib
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import threading

import pytest

from clarens import procfs
from clarens.burnerd import backends, images, processes, sockets, verify, xorriso
from clarens.burnerd import config as burner_config
from clarens.burnerd.config import ConfigError, DriveConfig
from clarens.burnerd.errors import STATUS, Refused
from clarens.burnerd.jobs import JobStore
from clarens.burnerd.worker import DriveWorker
from clarens.db import open_db
from tests.helpers import wait_for
from tests.integration.burnerd.support import ROOT, XORRISO

# -- configuration ------------------------------------------------------------------


def write(path, text: str) -> str:
    with open(path, "w") as f:
        f.write(text)
    return str(path)


MINIMAL = "[burnerd]\n[drive:d]\ndev = stdio:disc\ncapacity_mb = 700\n"


def test_shipped_example_config_loads():
    c = burner_config.load(os.path.join(ROOT, "conf", "burnerd.conf"))
    assert c.socket == "/run/clarens-burner/burnerd.sock" and c.socket_mode == 0o660
    assert c.socket_gid == 33 and c.socket_uid == -1 and c.allowed_uids == {33, 0}   # www-data, root
    assert c.user == "clarens-burner"
    assert c.drives == {}        # production: no simulated drive, real ones only as commented examples


def test_relative_paths_and_defaults(tmp_path):
    c = burner_config.load(write(tmp_path / "b.conf",
                                 MINIMAL.replace("[burnerd]\n", "[burnerd]\nallowed_uids = www-data, 0\n")
                                 + "[drive:dvd]\ndev = /dev/sr0\ncapacity_mb = 4700\n"
                                 "max_speed = 4\nfifo_size = 4m\n"))
    assert c.allowed_uids == {0, 33}
    assert c.drives["d"].address == "stdio:%s/disc" % tmp_path and c.drives["d"].path == "%s/disc" % tmp_path
    assert c.drives["d"].max_speed == 16 and c.drives["d"].fifo_size == "64m"
    dvd = c.drives["dvd"]
    assert (dvd.kind, dvd.address, dvd.path, dvd.max_speed, dvd.fifo_size) == (
        "device", "/dev/sr0", "/dev/sr0", 4, "4m")
    assert c.db == "/var/lib/clarens-burner/jobs.tdb" and c.keep_jobs == 100 and c.cancel_grace == 10


@pytest.mark.parametrize("extra, message", [
    ("[burnerd]\nsocket_mode = 0666\n", "grants access to others"),
    ("[burnerd]\nsocket_mode = rw\n", "not an octal mode"),
    ("[burnerd]\nsocket_group = no-such-group\n", "no such group"),
    ("[burnerd]\nallowed_uids = no-such-user\n", "no such user"),
    ("[burnerd]\nallowed_uids =\n", "allowed_uids is empty"),
    ("[burnerd]\nsokcet = /tmp/x\n", "unknown setting(s) sokcet"),
    ("[burnerd]\nxorriso = xorriso\n", "absolute path"),
    ("[burnerd]\nkeep_jobs = -1\n", "below 0"),
    ("[drives:x]\n", "unknown section"),
    ("[drive:bad name]\ndev = /dev/sr0\ncapacity_mb = 1\n", "drive name"),
    ("[drive:x]\ncapacity_mb = 1\n", "missing setting 'dev'"),
    ("[drive:x]\ndev = /dev/sr0\n", "missing setting 'capacity_mb'"),
    ("[drive:x]\nkind = device\ndev = stdio:/tmp/f\ncapacity_mb = 1\n", "absolute device path"),
    ("[drive:x]\nkind = stdio\ndev = /dev/sr0\ncapacity_mb = 1\n", "needs dev = stdio:PATH"),
    ("[drive:x]\nkind = tape\ndev = /dev/st0\ncapacity_mb = 1\n", "neither stdio nor device"),
    ("[drive:x]\ndev = /dev/sr0\ncapacity_mb = 1\nfifo_size = lots\n", "fifo_size"),
    ("[drive:x]\ndev = /dev/sr0\ncapacity_mb = 1\nspeed = 4\n", "unknown setting(s) speed"),
])
def test_config_errors(tmp_path, extra, message):
    text = MINIMAL.replace("[burnerd]\n", "[burnerd]\n" + extra.split("\n", 1)[1]) \
        if extra.startswith("[burnerd]") else MINIMAL + extra
    with pytest.raises(ConfigError) as error:
        burner_config.load(write(tmp_path / "b.conf", text))
    assert message in str(error.value)


def test_config_without_drives_loads(tmp_path):
    """A helper with no drive yet still runs (socket activation would otherwise fail over and over)."""
    c = burner_config.load(write(tmp_path / "b.conf", "[burnerd]\n"))
    assert c.drives == {} and c.user == "clarens-burner"


def test_config_user_may_not_be_empty(tmp_path):
    with pytest.raises(ConfigError, match="user is empty"):
        burner_config.load(write(tmp_path / "b.conf", "[burnerd]\nuser =\n"))


def test_every_refusal_code_has_a_status():
    assert Refused("not_iso", "x").status == 400 and Refused("unknown_drive", "x", 404).status == 404
    assert all(400 <= s < 600 for s in STATUS.values())


# -- images -------------------------------------------------------------------------


@pytest.fixture
def image_dir(tmp_path, iso_cache):
    root = tmp_path / "images"
    root.mkdir()
    with open(iso_cache["small"], "rb") as f:
        (root / "good.iso").write_bytes(f.read())
    return str(root)


def test_open_image_returns_checked_descriptor(image_dir, iso_cache):
    with images.open_image(image_dir, "good.iso", 10**9) as image:
        assert image.size == os.path.getsize(iso_cache["small"])
        assert os.readlink(image.proc_path) == os.path.join(image_dir, "good.iso")
        assert os.pread(image.fd, 5, 32769) == b"CD001"
        fd = image.fd
    assert image.fd == -1
    with pytest.raises(OSError):
        os.fstat(fd)


def test_open_image_refusals(image_dir, tmp_path):
    good = os.path.join(image_dir, "good.iso")

    def copy(name: str) -> str:
        path = os.path.join(image_dir, name)
        with open(good, "rb") as src, open(path, "wb") as dst:
            dst.write(src.read())
        return path

    os.mkdir(os.path.join(image_dir, "sub"))
    os.mkdir(os.path.join(image_dir, "dir.iso"))
    copy("sub/inner.iso")
    copy("notes.txt")
    copy(".upload-1234.part")
    os.symlink(copy("../outside.iso"), os.path.join(image_dir, "away.iso"))      # a symlink out
    os.symlink("good.iso", os.path.join(image_dir, "alias.iso"))                 # stays inside: refused too
    os.symlink("/dev/zero", os.path.join(image_dir, "zero.iso"))
    os.link(copy("linked.iso"), str(tmp_path / "elsewhere.iso"))                # a second name outside
    os.chown(copy("foreign.iso"), 65534, 65534)                                 # not the directory's owner
    os.mkfifo(os.path.join(image_dir, "fifo.iso"))
    cases = [("/abs.iso", "absolute_path"), ("a/../good.iso", "parent_reference"), ("..", "parent_reference"),
             ("sub/inner.iso", "subdirectory"), (".upload-1234.part", "hidden_file"), (".", "hidden_file"),
             ("away.iso", "symlink"), ("alias.iso", "symlink"), ("zero.iso", "symlink"), ("linked.iso", "hard_linked"),
             ("foreign.iso", "wrong_owner"), ("fifo.iso", "not_regular"), ("dir.iso", "not_regular"),
             ("sub", "bad_image_name"), ("notes.txt", "bad_image_name"),
             ("nope.iso", "image_not_found"), ("\ud800.iso", "bad_image_name"), ("\udcff.iso", "bad_image_name"),
             ("x" * 256, "bad_image_name"), ("tab\t.iso", "bad_image_name"), ("", "bad_image_name"),
             (None, "bad_request")]
    for name, code in cases:
        with pytest.raises(Refused) as refused:
            images.open_image(image_dir, name, 10**9)
        assert refused.value.code == code and refused.value.status == 400, name
    with pytest.raises(Refused) as refused:
        images.open_image(image_dir, "good.iso", 1000)
    assert refused.value.code == "too_large"
    longest = "x" * 196 + ".ISO"                                              # 200 characters: fine
    os.rename(good, os.path.join(image_dir, longest))
    with images.open_image(image_dir, longest, 10**9) as image:
        assert image.size > 0


@pytest.mark.parametrize("name, code", [
    ("disc.iso", None), ("Disc 2 (final).ISO", None), ("x" * 196 + ".iso", None), ("é" * 125 + ".iso", None),
    ("x" * 197 + ".iso", "bad_image_name"),            # 201 characters
    ("é" * 126 + ".iso", "bad_image_name"),            # 130 characters, but 256 bytes: more than a file name holds
    ("disc.img", "bad_image_name"), ("disc.iso.part", "bad_image_name"), ("iso", "bad_image_name"),
    ("disc.iso\n", "bad_image_name"), ("disc\x00.iso", "bad_image_name"), ("\u202etxt.iso", "bad_image_name"),
    ("disc\u200b.iso", "bad_image_name"), ("\ufffe.iso", "bad_image_name"), ("\udcff.iso", "bad_image_name"),
    ("", "bad_image_name"), ("/etc/passwd", "absolute_path"), ("/x.iso", "absolute_path"),
    ("../x.iso", "parent_reference"), ("a/../../db/acl.tdb", "parent_reference"), ("..", "parent_reference"),
    ("a/b.iso", "subdirectory"), (".iso", "hidden_file"), (".partial-1-2-3", "hidden_file"), (".", "hidden_file"),
])
def test_one_rule_names_images_for_the_web_tier_and_the_helper(name, code):
    """name_problem is the rule both sides apply (modules/burner refuses with it before asking the
    helper, and lists only the names it accepts); the helper refuses by it in open_image."""
    problem = images.name_problem(name)
    assert (problem and problem[0]) == code, problem
    if code is not None:
        assert STATUS[code] == 400 and ascii(name)[:20] in problem[1]     # the name, shown safely
        with pytest.raises(Refused) as refused:
            images.check_name(name)
        assert refused.value.code == code


def test_the_iso_signature_is_checked_on_the_head_of_a_file(iso_cache):
    with open(iso_cache["small"], "rb") as f:
        head = f.read(images.HEAD_SIZE)
    assert images.head_problem(head) is None
    assert "CD001" in images.head_problem(head[:images.ISO_MAGIC_OFFSET] + b"CD002")
    assert images.head_problem(b"\0" * images.HEAD_SIZE) is not None


@pytest.mark.parametrize("swapped_in, code", [("other", "image_changed"), ("symlink", "symlink"),
                                              ("fifo", "not_regular"), ("directory", "not_regular")])
def test_open_image_when_the_name_is_swapped_after_the_check(image_dir, monkeypatch, swapped_in, code):
    """Between fstatat and open, another file, a symlink, a FIFO or a directory takes the name."""
    good = os.path.join(image_dir, "good.iso")
    real_open = os.open

    def swapping_open(path, flags, mode=0o777, *, dir_fd=None):
        if path == "good.iso":
            os.rename(good, good + ".moved")
            if swapped_in == "other":                         # an equally good ISO, but another inode
                shutil.copyfile(good + ".moved", good)
            elif swapped_in == "symlink":
                os.symlink("good.iso.moved", good)
            elif swapped_in == "fifo":
                os.mkfifo(good)
            else:
                os.mkdir(good)
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(images.os, "open", swapping_open)
    with pytest.raises(Refused) as refused:
        images.open_image(image_dir, "good.iso", 10**9)
    assert refused.value.code == code


def test_xorriso_reads_the_opened_inode_not_the_name(image_dir, tmp_path):
    """Once open, replacing the file under its name does not change what /proc/self/fd/N names."""
    with images.open_image(image_dir, "good.iso", 10**9) as image:
        original = hashlib.sha256(open(image.proc_path, "rb").read()).hexdigest()
        os.rename(os.path.join(image_dir, "good.iso"), str(tmp_path / "moved.iso"))
        with open(os.path.join(image_dir, "good.iso"), "wb") as f:
            f.write(b"replaced")
        out = subprocess.run(["/usr/bin/sha256sum", image.proc_path], pass_fds=(image.fd,),
                             capture_output=True, text=True, check=True)
        assert out.stdout.split()[0] == original


# -- backends and xorriso -----------------------------------------------------------


def drive(kind: str, address: str) -> DriveConfig:
    return DriveConfig(name="d", kind=kind, address=address, capacity=10**9, max_speed=8, fifo_size="64m")


SHIPPED = burner_config.load(os.path.join(ROOT, "conf", "burnerd.conf"))     # xorriso = XORRISO, cancel_grace = 10


def backend(d: DriveConfig):
    """The backend of drive ``d``'s kind, under the shipped configuration."""
    return backends.BACKENDS[d.kind](d, SHIPPED, logging.getLogger("test"))


def run(argv: list[str]) -> tuple[int, str]:
    """Run a short command outside any worker (unrecorded, no drive lock)."""
    return processes.finish(processes.Process(argv), 60)


def test_every_kind_of_drive_has_a_backend():
    assert set(burner_config.ADDRESSES) == set(backends.BACKENDS)
    assert backend(drive("device", "/dev/sr0")).grace == 10 and backend(drive("stdio", "stdio:/d")).grace == 0


def test_backends_start_processes_only_through_their_worker():
    """What keeps the crash-safety rules for every backend: each process is recorded first, carries the run
    token and the drive's lock, and is killed on cancel, all by the worker's Runner.started."""
    with open(backends.__file__) as f:
        tree = ast.parse(f.read())
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | \
            {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    imported = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    assert not names & {"Popen", "subprocess", "spawn", "system", "fork", "exec"} and "subprocess" not in imported
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert "Process" not in calls


def test_a_worker_records_each_process_before_it_starts_and_leaves_nothing_running(tmp_path):
    """The Runner a backend gets: the run record (with the token the process carries, then its pid) exists
    while it runs; a process still running when the backend's block ends is killed, and its record cleared."""
    config = burner_config.load(write(tmp_path / "b.conf", MINIMAL.replace("[burnerd]", "[burnerd]\ndb = jobs.tdb")))
    db = open_db(config.db)
    try:
        store = JobStore(db, 10)
        worker = DriveWorker(config.drives["d"], config, store, logging.getLogger("test"))
        with worker._drive_held(), pytest.raises(RuntimeError):
            with worker.started("media", ["/bin/sleep", "60"]) as proc:
                record = store.leftover_processes()["d"]
                assert record["pid"] == proc.pid and record["purpose"] == "media"
                wait_for("sleep to run", lambda: processes.run_token(proc.pid) == record["token"])
                raise RuntimeError("the backend fails while its process runs")
        assert not processes.group_alive(proc.pid) and proc.popen.wait(5) == -signal.SIGKILL   # stdio: at once
        assert store.leftover_processes() == {}
    finally:
        db.close()


def test_progress_lines():
    assert xorriso.parse_progress("xorriso : UPDATE :   11 of   40 MB written (fifo 99%) [buf  50%]   6.0x.") \
        == 11 * 1024 * 1024
    assert xorriso.parse_progress("xorriso : UPDATE :    0 of    6 MB written [buf  50%]") == 0
    assert xorriso.parse_progress("xorriso : UPDATE :   41 MB written (fifo 99%) [buf  50%]") == 41 * 1024 * 1024
    assert xorriso.parse_progress("Beginning to write data track.") is None
    assert xorriso.is_problem("xorriso : FAILURE : Cannot acquire drive '/dev/sr0'")
    assert not xorriso.is_problem("xorriso : NOTE : Re-assessing -outdev 'stdio:/x'")


def test_argv_for_devices_bans_stdio_writes():
    dev, sim = backend(drive("device", "/dev/sr0")).commands, backend(drive("stdio", "stdio:/tmp/d")).commands
    burn = dev.burn("/proc/self/fd/5", 4)
    assert burn[:2] == [XORRISO, "-ban_stdio_write"] and "dev=/dev/sr0" in burn and "speed=4" in burn
    assert burn[-1] == "/proc/self/fd/5" and not any(a.startswith("stdio_sync") for a in burn)
    for argv in (dev.read_back(1), dev.media(), dev.eject()):
        assert argv[1] == "-ban_stdio_write"
    burn = sim.burn("/proc/self/fd/5", None)
    assert "-ban_stdio_write" not in burn and "stdio_sync=end" in burn
    assert not any(a.startswith("speed=") for a in burn)
    assert sim.read_back(2049)[-2] == "max_lba=1"      # two sectors: 0 and 1


def test_ban_stdio_write_really_refuses_files(tmp_path, iso_cache):
    target = tmp_path / "not-a-drive"
    misconfigured = drive("device", "stdio:%s" % target)       # config.load refuses this; xorriso too
    rc, output = run(backend(misconfigured).commands.burn(iso_cache["small"], None))
    assert rc != 0 and "banned" in output and not target.exists()


def test_media_info_of_a_stdio_drive(tmp_path, iso_cache):
    d = drive("stdio", "stdio:%s/disc" % tmp_path)
    rc, output = run(backend(d).commands.media())
    info = xorriso.parse_media(output)
    assert rc == 0 and info.status == "is blank" and info.free_bytes > 0 and "stdio" in info.current
    assert not (tmp_path / "disc").exists()                  # inspecting does not create the pseudo-disc


def test_xorriso_carries_its_token_and_dies_with_the_thread_that_started_it():
    """setpriv --pdeathsig: the kernel sends SIGTERM when the *thread* that forked exits."""
    started = []

    def start():
        proc = processes.Process(["/bin/sleep", "60"], token="t0ken")
        started.append(proc)
        # Once sleep's environment is readable, setpriv has set the signal and exec'd (until exec has
        # set up the new environment, /proc/PID/environ reads empty).
        started.append(wait_for("the job to exec sleep",
                                lambda: procfs.stat(proc.pid)[0] == "sleep" and processes.run_token(proc.pid)))

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    proc, token = started
    assert token == "t0ken" and proc.popen.wait(30) == -signal.SIGTERM
    assert processes.run_token(os.getpid()) is None


def test_terminate_group_without_grace_kills_at_once():
    proc = processes.Process(["/bin/sh", "-c", "trap '' TERM; sleep 60"])
    wait_for("the child to run sh", lambda: procfs.stat(proc.pid)[0] == "sh")
    proc.kill_group(0)
    assert proc.popen.wait(30) == -signal.SIGKILL


def test_procfs_environ_holders_and_group(tmp_path):
    path = str(tmp_path / "lock")
    open(path, "w").close()
    fd = os.open(path, os.O_RDONLY)
    try:
        child = subprocess.Popen(["/bin/sleep", "60"], env={"A": "1", "B": "x=y"}, pass_fds=(fd,),
                                 start_new_session=True)
    finally:
        os.close(fd)
    try:
        # empty until exec sets it up
        assert wait_for("the child's environment", lambda: procfs.environ(child.pid)) == {"A": "1", "B": "x=y"}
        assert procfs.holders(path) == [child.pid]
        assert procfs.pgid(child.pid) == child.pid != procfs.pgid(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert procfs.environ(child.pid) == {} and procfs.pgid(child.pid) is None and procfs.holders(path) == []


def test_terminate_group_kills_children_too():
    proc = processes.Process(["/bin/sh", "-c", "sleep 60 & sleep 60; wait"])
    assert processes.group_alive(proc.pid)
    proc.kill_group(2)
    assert not processes.group_alive(proc.pid)


# -- read-back ----------------------------------------------------------------------


@pytest.fixture
def burnt(tmp_path, iso_cache):
    """A stdio: pseudo-disc with small.iso burnt onto it; (drive, image size, image sha256)."""
    d = drive("stdio", "stdio:%s/disc" % tmp_path)
    rc, output = run(backend(d).commands.burn(iso_cache["small"], None))
    assert rc == 0, output
    data = open(iso_cache["small"], "rb").read()
    return d, len(data), hashlib.sha256(data).hexdigest()


def read_back(d: DriveConfig, size: int, method: str, progress=None) -> str:
    """The stdio backend's read-back (the file), or a real drive's (xorriso, which reads stdio: too)."""
    if method == "file":
        return verify.read_back_file(d.path, size, progress)
    proc = processes.Process(backend(d).commands.read_back(size), merge_output=False)
    return verify.read_back_xorriso(proc, size, progress)


@pytest.mark.parametrize("method", ["file", "xorriso"])
def test_read_back(burnt, method):
    d, size, expected = burnt
    seen = []
    assert read_back(d, size, method, seen.append) == expected and seen[-1] == size


@pytest.mark.parametrize("method", ["file", "xorriso"])
def test_read_back_detects_a_flipped_byte(burnt, method):
    d, size, expected = burnt
    with open(d.path, "r+b") as f:
        f.seek(size // 2)
        byte = f.read(1)
        f.seek(size // 2)
        f.write(bytes([byte[0] ^ 0x01]))
    assert read_back(d, size, method) != expected


def test_read_back_of_a_short_disc_fails(burnt):
    d, size, _ = burnt
    os.truncate(d.path, size - 4096)
    with pytest.raises(verify.VerifyError, match="ended after"):
        verify.read_back_file(d.path, size)


def test_read_back_can_be_stopped(burnt):
    d, size, _ = burnt
    with pytest.raises(verify.Aborted):
        verify.read_back_file(d.path, size, should_stop=lambda: True)


def test_background_hash(iso_cache):
    data = open(iso_cache["small"], "rb").read()
    fd = os.open(iso_cache["small"], os.O_RDONLY)
    try:
        assert verify.BackgroundHash(fd, len(data)).digest() == hashlib.sha256(data).hexdigest()
        with pytest.raises(verify.VerifyError):
            verify.BackgroundHash(fd, len(data) + 1).digest()
    finally:
        os.close(fd)


# -- socket -------------------------------------------------------------------------


def test_socket_is_never_wider_than_0600_before_its_final_mode(tmp_path, monkeypatch):
    path = str(tmp_path / "run" / "s.sock")
    seen = []
    real_chown, real_chmod = os.chown, os.chmod

    def chown(p, uid, gid, **kw):
        if p == path:
            seen.append(("chown", stat.S_IMODE(os.lstat(p).st_mode)))
        return real_chown(p, uid, gid, **kw)

    def chmod(p, mode, **kw):
        if p == path:
            seen.append(("chmod", stat.S_IMODE(os.lstat(p).st_mode)))
        return real_chmod(p, mode, **kw)

    monkeypatch.setattr(sockets.os, "chown", chown)
    monkeypatch.setattr(sockets.os, "chmod", chmod)
    old = os.umask(0)                   # the most permissive umask a caller could leave behind
    try:
        sock = sockets.create_socket(path, 0o660, -1, 33)
    finally:
        os.umask(old)
    try:
        assert seen == [("chown", 0o600), ("chmod", 0o600)]
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == 33
        parent = os.stat(os.path.dirname(path))
        assert stat.S_IMODE(parent.st_mode) == 0o710 and parent.st_gid == 33
    finally:
        sock.close()


def test_create_socket_replaces_a_stale_socket_but_not_a_file(tmp_path):
    path = str(tmp_path / "s.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()
    sockets.create_socket(path, 0o660).close()
    os.unlink(path)
    open(path, "w").close()
    with pytest.raises(sockets.SocketError, match="not a socket"):
        sockets.create_socket(path, 0o660)


# -- job store ----------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    db = open_db(str(tmp_path / "jobs.tdb"))
    yield JobStore(db, keep_finished=2)
    db.close()


def new_job(store: JobStore, drive: str = "d", identity: str = "a") -> dict:
    return store.create(identity=identity, uid=33, image="x.iso", image_size=100, drive=drive, speed=None,
                        verify=True)


def test_store_ids_order_and_filters(store):
    jobs = [new_job(store, drive=d, identity=i) for d, i in (("d", "a"), ("e", "b"), ("d", "b"))]
    assert [j["id"] for j in jobs] == [1, 2, 3]
    assert store.next_queued("d")["id"] == 1
    assert [j["id"] for j in store.list(identity="b")] == [2, 3]
    assert store.counts()["queued"] == 3


def test_store_transitions_are_conditional(store):
    job = new_job(store)
    assert store.transition(job["id"], {"burning"}, state="done") is None
    burning = store.transition(job["id"], {"queued"}, state="burning")
    assert burning["state"] == "burning" and burning["finished"] is None
    done = store.transition(job["id"], {"burning"}, state="done")
    assert done["finished"] is not None


def test_store_interrupts_running_jobs_and_prunes_oldest_finished(store):
    jobs = [new_job(store) for _ in range(5)]
    store.transition(jobs[0]["id"], {"queued"}, state="burning")
    store.transition(jobs[1]["id"], {"queued"}, state="verifying")
    token = store.begin_run("d", jobs[1]["id"], "verify")                  # recorded before xorriso starts
    assert store.leftover_processes() == {"d": {"token": token, "job": 2, "purpose": "verify", "pid": None,
                                                "start_time": None}}
    store.set_process("d", 12345, "999")                                     # and completed once it runs
    assert store.leftover_processes()["d"]["pid"] == 12345
    assert store.begin_run("e", None, "eject") != token                     # a fresh token every time
    assert store.interrupt_running("gone") == [1, 2]
    assert store.leftover_processes() == {}
    assert store.get(1)["state"] == "interrupted" and store.get(1)["error"] == "gone"
    store.transition(jobs[2]["id"], {"queued"}, state="cancelled")
    assert store.prune() == 1                                  # three finished, keep two
    assert [j["id"] for j in store.list()] == [2, 3, 4, 5]


def test_store_progress_is_throttled(store):
    job = new_job(store)
    store.transition(job["id"], {"queued"}, state="burning")
    record = store.recorder(job["id"], 100)
    record(10)
    record(20)                                                 # within 0.5 s of the last write: skipped
    assert store.get(job["id"])["progress"] == {"percent": 10.0, "bytes": 10}
    record(150, force=True)                                    # clamped to the total
    assert store.get(job["id"])["progress"] == {"percent": 100.0, "bytes": 100}


def test_store_is_usable_from_threads(store):
    threads = [threading.Thread(target=lambda: [new_job(store) for _ in range(20)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [j["id"] for j in store.list()] == list(range(1, 81))
