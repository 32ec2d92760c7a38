# SPDX-License-Identifier: Apache-2.0
"""Hostile crowds against a private instance, and what they cost everyone else (tests, bench, soak).

A crowd is many slow clients at once (:class:`Crowd`): each keeps one connection open
from its own loopback source address (``127.0.0.0/8``: Apache on 127.0.0.1 sees each as
another client), sends its request slowly, and connects again whenever the server cuts it
off, until stopped.  Two kinds, as an attacker would send them:

* ``body``: ``POST /clarens/`` with ``Content-Length: 5000000``, the headers at once,
  then the body at ``rate`` bytes a second (9 kB/s: just above mod_reqtimeout's old
  MinRate, so that it never cut them);
* ``header``: a request line and headers that never end, at ``rate`` bytes a second (1 B/s).

Meanwhile :func:`probe` calls ``echo.echo`` on a fresh connection every ``every`` seconds
and keeps each call's time (a timeout counts as its whole length), and :func:`upload_at`
sends an image at a given rate, as a legitimate client on a LAN would.  :func:`log_ratio`
measures error-log bytes per request byte for a burst of refused requests.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

BODY_HEAD = b"POST /clarens/ HTTP/1.1\r\nHost: crowd\r\nContent-Type: text/xml\r\nContent-Length: 5000000\r\n\r\n"
HEADER_HEAD = b"POST /clarens/ HTTP/1.1\r\nHost: crowd\r\nContent-Type: text/xml\r\nX-Slow: " + b"y" * 100000
ECHO = (b"<?xml version='1.0'?><methodCall><methodName>echo.echo</methodName><params><param><value>"
        b"<string>probe</string></value></param></params></methodCall>")
TICK = 0.1                      # seconds between two sends of a slow client


def addresses(n: int, first: int = 1) -> list[str]:
    """``n`` distinct loopback addresses (127.1.x.y), or ``["127.0.0.1"]`` repeated when ``first`` is 0."""
    if first == 0:
        return ["127.0.0.1"] * n
    return ["127.%d.%d.%d" % (first, 1 + i // 250, 1 + i % 250) for i in range(n)]


class Crowd:
    """``size`` slow clients of ``kind`` (``body`` or ``header``) sending ``rate`` bytes a second to
    ``port``, from ``sources`` (one address each, or all from one)."""

    def __init__(self, port: int, kind: str, size: int, rate: float, sources: list[str]):
        self.port, self.kind, self.rate, self.sources = port, kind, rate, sources
        self.size = size
        self.stop_event = threading.Event()
        self.connects = 0             # connections opened (the first of each client included)
        self.cut = 0                  # connections the server ended
        self._threads = [threading.Thread(target=self._client, args=(sources[i % len(sources)],), daemon=True)
                         for i in range(size)]

    def __enter__(self) -> "Crowd":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.stop_event.set()
        for t in self._threads:
            t.join(5)

    def _client(self, source: str) -> None:
        every = max(TICK, 1 / self.rate)
        step = max(1, int(self.rate * every))
        while not self.stop_event.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=60,
                                              source_address=(source, 0)) as sock:
                    self.connects += 1
                    if self.kind == "body":
                        sock.sendall(BODY_HEAD)
                    slow = b"x" * 5000000 if self.kind == "body" else HEADER_HEAD
                    for sent in range(0, len(slow), step):
                        if self.stop_event.wait(every):
                            return
                        sock.sendall(slow[sent:sent + step])
            except OSError:
                pass
            self.cut += 1
            self.stop_event.wait(0.05)


@dataclass
class Probes:
    """The times of the probe calls, in seconds (a failed call counts as ``timeout``)."""
    times: list[float] = field(default_factory=list)
    failed: int = 0

    def p(self, percent: float) -> float:
        ordered = sorted(self.times)
        return ordered[min(len(ordered) - 1, int(len(ordered) * percent / 100))] if ordered else float("nan")

    def summary(self) -> dict:
        return {"calls": len(self.times), "failed": self.failed, "p50_s": round(self.p(50), 3),
                "p99_s": round(self.p(99), 3), "max_s": round(max(self.times, default=float("nan")), 3),
                "mean_s": round(statistics.fmean(self.times), 3) if self.times else None}


def call_echo(port: int, timeout: float) -> float:
    """Seconds to call echo.echo on a fresh connection and read the whole answer (OSError on failure)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"POST /clarens/ HTTP/1.1\r\nHost: probe\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n%s" % (len(ECHO), ECHO))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    if not answer.startswith(b"HTTP/1.1 200") or b"probe" not in answer:
        raise OSError("a wrong answer: %r" % answer[:200])
    return time.monotonic() - started


def probe(port: int, seconds: float, every: float = 0.25, timeout: float = 15.0) -> Probes:
    """Call echo every ``every`` seconds for ``seconds``, each in a thread of its own (a slow call does
    not delay the next); the times."""
    out = Probes()
    lock = threading.Lock()
    threads = []

    def one():
        try:
            took = call_echo(port, timeout)
        except OSError:
            took = timeout
            with lock:
                out.failed += 1
        with lock:
            out.times.append(took)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = threading.Thread(target=one, daemon=True)
        t.start()
        threads.append(t)
        time.sleep(every)
    for t in threads:
        t.join(timeout + 5)
    return out


def upload_at(port: int, path: str, name: str, rate: float, auth: str, timeout: float = 120) -> tuple[int, float]:
    """PUT the file at ``path`` as image ``name`` at about ``rate`` bytes a second; (status, seconds)."""
    size = os.path.getsize(path)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock, open(path, "rb") as f:
        sock.sendall(b"PUT /clarens/images/%s HTTP/1.1\r\nHost: upload\r\nAuthorization: %s\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n" % (name.encode(), auth.encode(), size))
        sent = 0
        piece = max(1, int(rate * TICK))
        while chunk := f.read(piece):
            sock.sendall(chunk)
            sent += len(chunk)
            ahead = started + sent / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        answer = b""
        while part := sock.recv(65536):
            answer += part
    return int(answer.split(b" ", 2)[1]), time.monotonic() - started


class CrowdProcess:
    """A :class:`Crowd` in a process of its own (``python3 -m clarens.dev.crowd``), so that its hundreds of
    threads do not slow down the measuring process; ``stop()`` returns its counts."""

    def __init__(self, port: int, kind: str, size: int, rate: float, spread: int):
        self.proc = subprocess.Popen([sys.executable, "-m", "clarens.dev.crowd", str(port), kind, str(size),
                                      str(rate), str(spread)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

    def __enter__(self) -> "CrowdProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> dict:
        """Stop the crowd; {connects, cut}."""
        if self.proc.poll() is not None:
            return {}
        out, _ = self.proc.communicate(b"stop\n", timeout=30)
        return json.loads(out or b"{}")


def sparse_image(path: str, size: int = 8 * 10**6) -> str:
    """A sparse file of ``size`` bytes with the ISO 9660 signature, to upload; its path."""
    with open(path, "wb") as f:
        f.truncate(size)
        f.seek(32769)
        f.write(b"CD001")
    return path


@dataclass
class Measured:
    """What a crowd cost: the probes' times, the legitimate upload's (status, seconds), the crowd's counts,
    and the seconds it took to settle (see :func:`under_crowd`)."""
    probes: Probes
    upload: tuple[int, float] | None
    counts: dict
    settle_s: float


def under_crowd(port: int, kind: str, size: int, rate: float, spread: int, seconds: float,
                upload: tuple[str, str, float, str] | None = None, warm: float = 10.0,
                settled: Callable[[], bool] | None = None) -> Measured:
    """Start a crowd (:class:`CrowdProcess`), give it ``warm`` seconds and until ``settled()`` (at most
    a minute: e.g. until Apache has forked all the processes it may), then probe for ``seconds``
    while uploading ``upload`` = (file, image name, bytes a second, Authorization), if given."""
    done: dict = {}
    with CrowdProcess(port, kind, size, rate, spread) as slow:
        started = time.monotonic()
        time.sleep(warm)
        while settled is not None and not settled() and time.monotonic() - started < 60:
            time.sleep(0.5)
        settle = time.monotonic() - started
        lan = None
        if upload is not None:
            path, name, speed, auth = upload
            lan = threading.Thread(target=lambda: done.update(result=upload_at(port, path, name, speed, auth)))
            lan.start()
        probes = probe(port, seconds)
        if lan is not None:
            lan.join(120)
        counts = slow.stop()
    return Measured(probes, done.get("result"), counts, round(settle, 1))


# One request of each kind the host refuses (head, body), for bursts of them: each is refused, and logged
# in proportion (clarens.refusals), whatever the number of addresses it comes from.
_DENIED_CALL = (b"<?xml version='1.0'?><methodCall><methodName>acl.show</methodName><params></params>"
                b"</methodCall>")
REFUSED: dict[str, tuple[bytes, bytes]] = {
    "forged client DN header": (b"GET /clarens/ HTTP/1.1\r\nHost: x\r\n"
                                b"X-Clarens-Client-DN: /C=UK/O=Clarens Demo/CN=Forged\r\n", b""),
    "request line not UTF-8": (b"GET /clarens/%FF HTTP/1.1\r\nHost: x\r\n", b""),
    "denied call": (b"POST /clarens/ HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n"
                    % len(_DENIED_CALL), _DENIED_CALL),
    "anonymous upload": (b"PUT /clarens/images/x.iso HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n", b""),
    "wrong password": (b"GET /clarens/ HTTP/1.1\r\nHost: x\r\nAuthorization: Basic ZGVtbzp3cm9uZw==\r\n", b""),
    "no such user": (b"GET /clarens/ HTTP/1.1\r\nHost: x\r\nAuthorization: Basic bm9ib2R5OnNlY3JldA==\r\n", b""),
}


def send_from(port: int, source: str, data: bytes, timeout: float = 30) -> bytes:
    """``data`` on a fresh connection from the loopback address ``source``; the answer, read to its end."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0)) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def burst(port: int, request: bytes, count: int, spread: int, threads: int = 8) -> tuple[int, dict[int, int]]:
    """Send ``request`` (with ``Connection: close`` added to its head) ``count`` times from ``spread``
    source addresses, ``threads`` at a time: the bytes sent, and how many answers had each status."""
    head, _, body = request.partition(b"\r\n\r\n") if b"\r\n\r\n" in request else (request, b"", b"")
    data = head.rstrip(b"\r\n") + b"\r\nConnection: close\r\n\r\n" + body
    sources = addresses(spread)
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def send(indices):
        for i in indices:
            answer = send_from(port, sources[i % spread], data)
            with lock:
                status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
                statuses[status] = statuses.get(status, 0) + 1
    workers = [threading.Thread(target=send, args=(range(i, count, threads),)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return len(data) * count, statuses


def log_ratio(port: int, error_log: str, kind: str, count: int = 1000, spread: int = 1) -> dict:
    """A burst of ``count`` refused requests of ``kind`` (:data:`REFUSED`) from ``spread`` addresses:
    ``{ratio, logged, sent, statuses}``, ``ratio`` being error-log bytes per request byte."""
    head, body = REFUSED[kind]
    before = os.path.getsize(error_log)
    sent, statuses = burst(port, head + b"\r\n" + body, count, spread)
    logged = os.path.getsize(error_log) - before
    return {"ratio": logged / sent, "logged": logged, "sent": sent, "statuses": statuses}


def main(argv: list[str] | None = None) -> int:
    """``python3 -m clarens.dev.crowd PORT KIND SIZE RATE SPREAD``: a crowd until a line on standard input
    (SPREAD: how many source addresses, 1 for 127.0.0.1 alone); then its counts as JSON."""
    parser = argparse.ArgumentParser(prog="python3 -m clarens.dev.crowd")
    parser.add_argument("port", type=int)
    parser.add_argument("kind", choices=["body", "header"])
    parser.add_argument("size", type=int)
    parser.add_argument("rate", type=float)
    parser.add_argument("spread", type=int)
    args = parser.parse_args(argv)
    sources = addresses(args.size) if args.spread > 1 else addresses(args.size, 0)
    with Crowd(args.port, args.kind, args.size, args.rate, sources[:args.spread] if args.spread > 1 else sources) \
            as crowd:
        sys.stdin.readline()
    print(json.dumps({"connects": crowd.connects, "cut": crowd.cut}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
