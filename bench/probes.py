# SPDX-License-Identifier: Apache-2.0
"""Measurements that are not a request under steady load, each giving one table row.

:data:`PROBES` lists them; a probe is a function of a :class:`ProbeEnv` returning a
:class:`ProbeRow`.
"""

from __future__ import annotations

import base64
import os
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from bench import load, machine, servers, targets
from clarens import procfs, resumable
from clarens.burnerd.client import BurnerClient
from clarens.dev import devpki
from clarens.dev.instance import Instance


@dataclass(frozen=True)
class ProbeEnv:
    """What a probe may use: its own port and state directory, the load settings."""
    port: int
    state_dir: str
    load: load.Load


@dataclass(frozen=True)
class ProbeRow:
    key: str
    label: str
    group: str
    latency_ms: float | None  # shown in the p50 column
    ratio: float | None      # shown in the notes, and checked by a target
    note: str
    detail: dict = field(default_factory=dict)


def _cpu_ticks(pids: list[int]) -> int:
    """User and system CPU ticks used so far by the processes in ``pids`` that still exist."""
    stats = [procfs.stat(pid) for pid in pids]
    return sum(int(st[1][11]) + int(st[1][12]) for st in stats if st is not None)


def _wait_children_idle(inst: Instance, children: int, timeout: float = 60.0) -> float:
    """Wait until ``children`` children exist and none uses CPU (PythonImport has finished).

    Returns the seconds it waited."""
    start = time.monotonic()
    deadline = start + timeout
    last, quiet = -1, 0
    while quiet < 3:
        if time.monotonic() > deadline:
            raise RuntimeError("Apache children did not settle within %.0fs" % timeout)
        time.sleep(0.2)
        pids = inst.processes()
        ticks = _cpu_ticks(pids)
        quiet = quiet + 1 if len(pids) > children and ticks == last else 0
        last = ticks
    return time.monotonic() - start


def _timed(target: targets.Target, port: int) -> float:
    """Milliseconds to send the request on a new connection and read the whole (correct) answer."""
    start = time.perf_counter()
    status, body = targets.request(target, "127.0.0.1", port)
    elapsed = (time.perf_counter() - start) * 1000
    targets.verify(target, status, body)
    return elapsed


def _served_ms(access_log: str, offset: int, count: int, timeout: float = 10.0) -> list[float]:
    """Apache's own time to serve each of the ``count`` requests logged after ``offset`` (%D, the
    last field), in ms.  Apache writes a request's line after sending its answer, so the last
    lines may still be coming: they are waited for, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with open(access_log, "rb") as f:
            f.seek(offset)
            lines = f.read().split(b"\n")[:-1]      # whole lines only
        if len(lines) >= count:
            return [int(line.rsplit(None, 1)[1]) / 1000 for line in lines[:count]]
        if time.monotonic() > deadline:
            raise RuntimeError("Apache logged %d of %d requests in %s within %.0f s"
                               % (len(lines), count, access_log, timeout))
        time.sleep(0.01)


IDLE_SECONDS = 10.0     # the pause of an interactive user (issue 25)


def first_request(env: ProbeEnv, samples: int = 200, idle_samples: int = 3) -> ProbeRow:
    """Latency of the very first echo call to a freshly started instance vs its steady state.

    Each start waits (sending no request) until every child has run its
    PythonImport, times one echo call on a new connection, loads every child with
    wrk for a second, then times ``samples`` sequential calls the same way, then
    ``idle_samples`` calls each after :data:`IDLE_SECONDS` of silence.  Apache's own
    serving time (%D in the access log) of the same calls separates what the host
    does from what the machine does (waking an idle VM's CPU, the client's own start).
    """
    echo = next(t for t in targets.ROWS if t.key == "xmlrpc_echo")
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        script = load.write_script(tmp, echo.key, echo.method, echo.body, echo.content_type)
        for _ in range(env.load.rounds):
            inst = servers.instance(env.state_dir, env.port)
            inst.prepare()
            inst.configtest()
            with open(inst.conf_path) as f:
                conf = f.read()
            if "PythonImport clarens.startup" not in conf:
                raise RuntimeError("%s does not preload the host with PythonImport" % inst.conf_path)
            log = os.path.join(inst.state_dir, "log", "access.log")
            open(log, "w").close()
            # Not Instance.start(): its readiness poll would send the first request.
            inst.process = subprocess.Popen(inst.command(), stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                servers.wait_port(env.port, process=inst.process)
                _wait_children_idle(inst, int(machine.mpm_settings(conf)["StartServers"]))
                first = _timed(echo, env.port)
                first_served = _served_ms(log, 0, 1)[0]
                load.run("http://127.0.0.1:%d%s" % (env.port, echo.path), script, 1, env.load)
                mark = os.path.getsize(log)
                steady = statistics.median(_timed(echo, env.port) for _ in range(samples))
                steady_served = statistics.median(_served_ms(log, mark, samples))
                idle, mark = [], os.path.getsize(log)
                for _ in range(idle_samples):
                    time.sleep(IDLE_SECONDS)
                    idle.append(_timed(echo, env.port))
                idle_served = statistics.median(_served_ms(log, mark, idle_samples))
            finally:
                inst.stop()
            runs.append({"first_ms": first, "steady_ms": steady, "after_idle_ms": statistics.median(idle),
                         "first_served_ms": first_served, "steady_served_ms": steady_served,
                         "after_idle_served_ms": idle_served})
    m = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    ratio, served_ratio = m["first_ms"] / m["steady_ms"], m["first_served_ms"] / m["steady_served_ms"]
    idle_ratio = m["after_idle_served_ms"] / m["steady_served_ms"]
    note = ("%.2fx steady %.2f ms; after %.0f s idle %.2f ms. In Apache (%%D): %.2f ms, %.2fx steady %.2f ms;"
            " after %.0f s idle %.2f ms, %.2fx" % (
                ratio, m["steady_ms"], IDLE_SECONDS, m["after_idle_ms"], m["first_served_ms"], served_ratio,
                m["steady_served_ms"], IDLE_SECONDS, m["after_idle_served_ms"], idle_ratio))
    return ProbeRow("first_request", "first request after a start (echo, XML-RPC)", targets.PRODUCT,
                    m["first_ms"], ratio, note,
                    {**m, "served_ratio": served_ratio, "idle_served_ratio": idle_ratio, "runs": runs,
                     "samples": samples, "idle_seconds": IDLE_SECONDS,
                     "method": "sequential calls, each on a new connection"})


def _make_iso(directory: str, megabytes: int) -> str:
    src = os.path.join(directory, "src")
    os.makedirs(src)
    with open(os.path.join(src, "data.bin"), "wb") as f:
        for _ in range(megabytes):
            f.write(os.urandom(1 << 20))
    path = os.path.join(directory, "bench.iso")
    subprocess.run(["xorriso", "-as", "mkisofs", "-R", "-V", "BENCH", "-o", path, src], check=True,
                   capture_output=True)
    os.unlink(os.path.join(src, "data.bin"))
    return path


def _copy_and_hash(iso: str, directory: str) -> float:
    """Seconds to copy the image with dd (flushed to disk, as the burn is) and sha256sum the copy."""
    copy = os.path.join(directory, "copy.iso")
    start = time.perf_counter()
    subprocess.run(["dd", "if=" + iso, "of=" + copy, "bs=4M", "conv=fsync"], check=True, capture_output=True)
    subprocess.run(["sha256sum", copy], check=True, capture_output=True)
    elapsed = time.perf_counter() - start
    os.unlink(copy)
    return elapsed


def _burn_and_verify(client: BurnerClient, disc: str) -> float:
    """Seconds from the helper starting the job to its verified end (the job's own timestamps)."""
    if os.path.exists(disc):
        os.unlink(disc)          # a fresh "disc" each time, as dd writes a fresh file
    job = client.submit("bench.iso", "sim0", identity="bench", verify=True)
    while job["state"] in ("queued", "burning", "verifying"):
        time.sleep(0.05)
        job = client.job(job["id"])
    if job["state"] != "done" or not job["verification"]["match"]:
        raise RuntimeError("the bench burn ended %s: %s" % (job["state"], job.get("error")))
    return job["finished"] - job["started"]


def burn(env: ProbeEnv, megabytes: int = 1024) -> ProbeRow:
    """Burn and verify a 1 GiB ISO to the stdio: drive, against dd + sha256sum of the same file.

    Rounds alternate the two; both read the image from the page cache and write
    to the same file system, so the ratio is the burner's overhead over the
    disk's own limit.
    """
    inst = servers.instance(env.state_dir, env.port, burner=True)
    burns, copies = [], []
    with tempfile.TemporaryDirectory(prefix="bench-burn-", dir=env.state_dir if os.path.isdir(env.state_dir)
                                     else None) as tmp:
        iso = _make_iso(tmp, megabytes)
        inst.start()
        try:
            image = os.path.join(inst.images_dir, "bench.iso")
            subprocess.run(["cp", iso, image], check=True)
            images_dir = os.stat(inst.images_dir)
            os.chown(image, images_dir.st_uid, images_dir.st_gid)
            os.chmod(image, 0o640)
            client = BurnerClient(os.path.join(inst.state_dir, "burner-socket", "burnerd.sock"), timeout=600)
            disc = os.path.join(inst.burner_dir, "sim0.disc")
            for _ in range(env.load.rounds):
                burns.append(_burn_and_verify(client, disc))
                copies.append(_copy_and_hash(image, tmp))
            client.close()
        finally:
            inst.stop()
    b, c = statistics.median(burns), statistics.median(copies)
    size = os.path.getsize(iso) if os.path.exists(iso) else megabytes << 20
    note = "%.2fx dd copy + sha256sum %.2f s; burn + verify %.2f s (%.0f MB/s)" % (b / c, c, b, size / b / 1e6)
    return ProbeRow("burn", "burn + verify, %d MiB ISO to a stdio: drive" % megabytes, targets.PRODUCT,
                    b * 1000, b / c, note, {"burn_s": burns, "copy_and_hash_s": copies, "image_bytes": size})


def _image_file(directory: str, size: int) -> str:
    """A file of ``size`` random bytes with the ISO 9660 signature the upload route checks."""
    path = os.path.join(directory, "upload.iso")
    block = os.urandom(1 << 20)            # repeated: the content's entropy does not matter here
    with open(path, "wb") as f:
        for offset in range(0, size, len(block)):
            f.write(block[:min(len(block), size - offset)])
        f.seek(32769)
        f.write(b"CD001")
    return path


def _upload_target(inst: Instance, name: str) -> resumable.Target:
    password = devpki.credentials(inst.state_dir)["demo"]
    token = base64.b64encode(("demo:%s" % password).encode()).decode()
    return resumable.Target(inst.url + "images/" + name, {"Authorization": "Basic " + token}, timeout=600)


def _dd_write(source: str, directory: str) -> float:
    """Seconds for dd to write the same bytes to the same file system, flushed (conv=fsync)."""
    copy = os.path.join(directory, "dd-copy")
    start = time.perf_counter()
    subprocess.run(["dd", "if=" + source, "of=" + copy, "bs=4M", "conv=fsync"], check=True, capture_output=True)
    elapsed = time.perf_counter() - start
    os.unlink(copy)
    return elapsed


def upload(env: ProbeEnv, megabytes: int = 1024) -> ProbeRow:
    """Upload a 1 GiB image through Apache, as the command-line client does (Expect: 100-continue,
    streamed, hashed, fsynced, linked into place), against dd writing the same bytes to the same
    file system with conv=fsync.  Rounds alternate the two, both reading from the page cache."""
    inst = servers.instance(env.state_dir, env.port, burner=True)
    uploads, copies = [], []
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp:
        source = _image_file(tmp, megabytes << 20)
        inst.start()
        try:
            # A round not measured: the first writes into memory this VM has never touched cost
            # the kernel 2-3 s of CPU per GiB (the host backs guest memory lazily), later ones 0.2 s.
            resumable.upload(_upload_target(inst, "warm-up.iso"), source)
            os.unlink(os.path.join(inst.images_dir, "warm-up.iso"))
            _dd_write(source, inst.images_dir)
            for i in range(env.load.rounds):
                # Each side starts with nothing left to write back: this VM's disk otherwise
                # makes whichever runs next pay for the last one's flush.
                os.sync()
                start = time.perf_counter()
                resumable.upload(_upload_target(inst, "round%d.iso" % i), source)
                uploads.append(time.perf_counter() - start)
                os.unlink(os.path.join(inst.images_dir, "round%d.iso" % i))
                os.sync()
                copies.append(_dd_write(source, inst.images_dir))
        finally:
            inst.stop()
    ratio = statistics.median(c / u for u, c in zip(uploads, copies, strict=True))     # paired by round
    u, c = statistics.median(uploads), statistics.median(copies)
    size = megabytes << 20
    note = "%.2fx dd conv=fsync (%.2f s, %.0f MB/s); upload %.2f s (%.0f MB/s)" % (
        ratio, c, size / c / 1e6, u, size / u / 1e6)
    return ProbeRow("upload", "upload %d MiB image through Apache" % megabytes, targets.PRODUCT, u * 1000, ratio,
                    note, {"upload_s": uploads, "dd_s": copies, "bytes": size})


def _rss_kb(pid: int) -> int | None:
    try:
        with open("/proc/%d/status" % pid) as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None


def _peak_rss_during_upload(inst: Instance, source: str, name: str) -> tuple[int, int]:
    """(RSS when the request started, peak RSS while it ran), in kB, of the child receiving the upload."""
    samples: list[int] = []
    done = threading.Event()

    def watch() -> None:
        child = None
        while not done.is_set():
            if child is None:
                partial = [n for n in os.listdir(inst.images_dir) if n.startswith(".partial-")]
                holders = procfs.holders(os.path.join(inst.images_dir, partial[0])) if partial else []
                child = holders[0] if holders else None
            rss = _rss_kb(child) if child else None
            if rss:
                samples.append(rss)
            time.sleep(0.01)
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        resumable.upload(_upload_target(inst, name), source)
    finally:
        done.set()
        watcher.join()
    if not samples:
        raise RuntimeError("the child receiving the upload was never seen")
    return samples[0], max(samples)


def upload_memory(env: ProbeEnv, megabytes: int = 2048, small: int = 256) -> ProbeRow:
    """Peak RSS of the Apache child receiving a 2 GiB upload, against the same for 256 MiB: the
    memory of an upload must not grow with the image."""
    inst = servers.instance(env.state_dir, env.port, burner=True)
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp:
        inst.start()
        try:
            measured = {}
            for size in (small, megabytes):
                source = _image_file(tmp, size << 20)
                measured[size] = _peak_rss_during_upload(inst, source, "rss%d.iso" % size)
                os.unlink(os.path.join(inst.images_dir, "rss%d.iso" % size))
                os.unlink(source)
        finally:
            inst.stop()
    (b_small, p_small), (b_big, p_big) = measured[small], measured[megabytes]
    growth_small, growth_big = p_small - b_small, p_big - b_big
    note = "peak %.1f MB, +%.1f MB over the child's %.1f MB at the start; a %d MiB upload: +%.1f MB" % (
        p_big / 1000, growth_big / 1000, b_big / 1000, small, growth_small / 1000)
    return ProbeRow("upload_memory", "peak RSS of the Apache child, %d MiB upload" % megabytes, targets.PRODUCT,
                    None, p_big / max(p_small, 1), note,
                    {"start_kb": b_big, "peak_kb": p_big, "small_start_kb": b_small, "small_peak_kb": p_small})


PROBES: list[Callable[[ProbeEnv], ProbeRow]] = [first_request, burn, upload, upload_memory]
