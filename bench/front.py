# SPDX-License-Identifier: Apache-2.0
"""The front end, measured: echo through HAProxy against echo straight to Apache, and idle clients held.

Why: HAProxy in front of the hosts (conf/haproxy/) costs something on every
call, and buys holding idle keep-alive clients that under prefork would each pin
an Apache process.  Both are measured in the same run, against the same instance:

* ``haproxy_echo``: wrk's echo load (the XML-RPC echo row's request), rounds
  alternated between Apache directly, HAProxy over plain HTTP, and HAProxy over
  HTTPS (TLS terminated there); the ratio is HAProxy's req/s over Apache's,
  paired by round.
* ``haproxy_idle``: the same load through HAProxy without, then with 10,000
  idle keep-alive client connections held open (each has made one request and
  waits), rounds alternated in pairs (without, then with them: each opened
  afresh, since HAProxy closes a client idle for 60 s); the ratio is req/s with
  them over without, paired by round.  One HAProxy process holds them all, as
  one front end would.  HAProxy sizes its descriptor table at two per
  connection and refuses to start if it cannot raise its limit that far; an
  idle client needs only one, so where the limit cannot be raised (this
  machine's is 20,000, and no privilege to raise it) the bench tells HAProxy to
  run within it (``no strict-limits``).

The HAProxy configuration is the shipped template's (``clarens.cluster``), with
the instance as its only host and log lines going to a file.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import socket
import statistics
import struct
import subprocess
import tempfile
import time
from typing import Callable, Sequence

from bench import load, servers, targets
from bench.probes import ProbeEnv, ProbeRow
from clarens import cluster
from clarens.dev.instance import Instance, free_port

HAPROXY = "/usr/sbin/haproxy"
PROXY_SOURCE = "127.0.0.2"     # HAProxy connects from here: the instance trusts only this address
IDLE_CLIENTS = 10_000


class Front:
    """One HAProxy process in front of instances ``hosts`` (their policies alike), from the shipped template."""

    def __init__(self, hosts: Sequence[Instance], directory: str, maxconn: int = 2000):
        inst = hosts[0]
        self.http_port, self.tls_port = free_port(), free_port()
        pem = os.path.join(directory, "front.pem")
        with open(pem, "w") as f:
            for name in ("server.crt", "server.key"):
                with open(os.path.join(inst.pki_dir, name)) as part:
                    f.write(part.read())
        os.chmod(pem, 0o600)
        digests = cluster.digests(inst.server_config())
        self.env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **cluster.environment(digests)}
        # HAProxy asks for two descriptors per connection and will not start short of them
        # unless told to run within the limit it has (enough: an idle client needs one).
        _, fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)
        process = "    no strict-limits" if 2 * maxconn + 1000 > fd_limit else ""
        config = os.path.join(directory, "haproxy.cfg")
        with open(config, "w") as f:
            f.write(cluster.haproxy_config(
                [("h%d" % n, "127.0.0.1:%d" % host.port) for n, host in enumerate(hosts)],
                bind="127.0.0.1:%d" % self.tls_port, crt=pem,
                ca=os.path.join(inst.pki_dir, "ca.crt"), http_bind="127.0.0.1:%d" % self.http_port,
                source=PROXY_SOURCE, stats_socket=os.path.join(directory, "haproxy.sock"), process=process,
                maxconn=maxconn, log="stdout format raw local0"))
        with open(os.path.join(directory, "haproxy.log"), "ab") as log:
            self.proc = subprocess.Popen([HAPROXY, "-db", "-f", config], env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, start_new_session=True)
        servers.wait_port(self.http_port, process=self.proc)
        echo = _echo()
        deadline = time.monotonic() + 30
        while True:      # until the health check has put a host in rotation
            try:
                targets.check(echo, "127.0.0.1", self.http_port)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def rss_kb(self) -> int:
        """HAProxy's resident memory, in kB."""
        with open("/proc/%d/status" % self.proc.pid) as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

    def stop(self) -> None:
        """Stop HAProxy."""
        servers.stop_process(self.proc)


def _echo() -> targets.Target:
    return next(t for t in targets.ROWS if t.key == "xmlrpc_echo_acl")


def _instance(env: ProbeEnv) -> Instance:
    inst = servers.instance(env.state_dir, env.port)
    inst.options["clarens.server.trusted_proxies"] = PROXY_SOURCE
    return inst


def haproxy_echo(env: ProbeEnv) -> ProbeRow:
    """echo.echo (XML-RPC, with the ACL check) through HAProxy against straight to Apache, same run."""
    inst = _instance(env)
    echo = _echo()
    with tempfile.TemporaryDirectory(prefix="bench-front-") as tmp:
        script = load.write_script(tmp, echo.key, echo.method, echo.body, echo.content_type)
        inst.start()
        front = None
        try:
            front = Front([inst], tmp)
            urls = {"direct": "http://127.0.0.1:%d%s" % (inst.port, echo.path),
                    "http": "http://127.0.0.1:%d%s" % (front.http_port, echo.path),
                    "https": "https://127.0.0.1:%d%s" % (front.tls_port, echo.path)}
            servers.settle(inst, urls["direct"], script, env.load)
            rounds = servers.alternate(inst, {name: (url, script) for name, url in urls.items()}, env.load)
        finally:
            if front is not None:
                front.stop()
            inst.stop()
    med = {name: {k: statistics.median(getattr(r, k) for r in rs) for k in ("rps", "p50_ms", "p99_ms")}
           for name, rs in rounds.items()}
    ratio = statistics.median(h.rps / d.rps for h, d in zip(rounds["http"], rounds["direct"], strict=True))
    tls = statistics.median(h.rps / d.rps for h, d in zip(rounds["https"], rounds["direct"], strict=True))
    errors = sum(r.errors for rs in rounds.values() for r in rs)
    note = ("%.2fx direct. Direct %s req/s, p99 %.2f ms; through HAProxy (HTTP) %s req/s, p99 %.2f ms; "
            "HTTPS terminated at HAProxy %s req/s, p99 %.2f ms (%.2fx direct)%s" % (
                ratio, format(round(med["direct"]["rps"]), ","), med["direct"]["p99_ms"],
                format(round(med["http"]["rps"]), ","), med["http"]["p99_ms"], format(round(med["https"]["rps"]), ","),
                med["https"]["p99_ms"], tls, "; %d ERRORS" % errors if errors else ""))
    return ProbeRow("haproxy_echo", "echo.echo through HAProxy (HTTP) vs direct", targets.PRODUCT,
                    med["http"]["p50_ms"], ratio, note,
                    {"medians": med, "https_ratio": tls, "errors": errors,
                     "rounds": {k: [dataclasses.asdict(r) for r in v] for k, v in rounds.items()}})


def _hold_idle(port: int, count: int) -> list[socket.socket]:
    """``count`` keep-alive connections that each made one request (GET /clarens/health) and now wait."""
    request = b"GET /clarens/health HTTP/1.1\r\nHost: bench\r\n\r\n"
    held = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        while len(body) < length:
            body += s.recv(65536)
        if not head.startswith(b"HTTP/1.1 200"):
            raise AssertionError("an idle client's request failed: %r" % head[:100])
        held.append(s)
    return held


def _close(held: list[socket.socket]) -> None:
    """Close with a reset, not a FIN: 10,000 connections a round would otherwise leave as many
    ports in TIME_WAIT here, and a few rounds would run out of them."""
    for s in held:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()


def _still_open(held: list[socket.socket]) -> int:
    """How many of the held connections the front end has not closed."""
    open_ = 0
    for s in held:
        s.setblocking(False)
        try:
            open_ += s.recv(1) != b""         # b"": closed by the front end
        except BlockingIOError:
            open_ += 1                        # nothing to read: still open and idle
        except OSError:
            pass
    return open_


def haproxy_idle(env: ProbeEnv, idle: int = IDLE_CLIENTS) -> ProbeRow:
    """16 connections calling echo through HAProxy while ``idle`` idle keep-alive clients are held open."""
    inst = _instance(env)
    without: list[load.Result] = []
    with_idle: list[load.Result] = []
    echo = _echo()
    held: list[socket.socket] = []
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
        script = load.write_script(tmp, echo.key, echo.method, echo.body, echo.content_type)
        inst.start()
        front = None
        try:
            front = Front([inst], tmp, maxconn=idle + 1000)
            url = "http://127.0.0.1:%d%s" % (front.http_port, echo.path)
            servers.settle(inst, url, script, env.load)
            survivors, opened_s, per_client = [], [], []
            for _ in range(env.load.rounds):      # pairs, alternated: without, then with them
                if env.load.warmup:
                    load.run(url, script, env.load.warmup, env.load)
                without.append(load.run(url, script, env.load.duration, env.load))
                started, rss_before = time.monotonic(), front.rss_kb()
                held = _hold_idle(front.http_port, idle)
                opened_s.append(time.monotonic() - started)
                per_client.append((front.rss_kb() - rss_before) / idle)
                # HAProxy closes a client idle for 60 s (timeout http-keep-alive, client): well within it.
                if env.load.warmup:
                    load.run(url, script, env.load.warmup, env.load)
                with_idle.append(load.run(url, script, env.load.duration, env.load))
                survivors.append(_still_open(held))
                _close(held)
                held = []
                servers.truncate_access_log(inst)
            apache_processes = len(inst.processes())
        finally:
            _close(held)
            if front is not None:
                front.stop()
            inst.stop()
    rps = statistics.median(r.rps for r in with_idle)
    p50 = statistics.median(r.p50_ms for r in with_idle)
    p99 = statistics.median(r.p99_ms for r in with_idle)
    worst_p99 = max(r.p99_ms for r in with_idle)
    errors = sum(r.errors for r in with_idle)
    ratio = statistics.median(w.rps / o.rps for w, o in zip(with_idle, without, strict=True))
    p99_ratio = statistics.median(w.p99_ms / o.p99_ms for w, o in zip(with_idle, without, strict=True))
    note = ("%s idle clients held (at least %s still open after each round; opened in %.1f s) by one HAProxy "
            "process (+%.1f kB each), Apache at %d processes: %s req/s, p99 %.2f ms (worst round %.2f ms), %d errors;"
            " %.2fx the calls/s and %.2fx the p99 of the same load without them (p99 %.2f ms), rounds alternated" % (
                format(idle, ","), format(min(survivors), ","), statistics.median(opened_s),
                max(per_client), apache_processes, format(round(rps), ","), p99, worst_p99, errors,
                ratio, p99_ratio, statistics.median(r.p99_ms for r in without)))
    return ProbeRow("haproxy_idle", "echo through HAProxy, %s idle keep-alive clients held" % format(idle, ","),
                    targets.PRODUCT, p50, ratio, note,
                    {"idle": idle, "still_open": min(survivors), "p99_ms": p99, "worst_p99_ms": worst_p99,
                     "p99_ratio": p99_ratio,
                     "errors": errors, "rps": rps, "apache_processes": apache_processes,
                     "kb_per_idle_client": per_client, "opened_s": opened_s, "still_open_per_round": survivors,
                     "with_idle": [dataclasses.asdict(r) for r in with_idle],
                     "without": [dataclasses.asdict(r) for r in without]})


PROBES: list[Callable[[ProbeEnv], ProbeRow]] = [haproxy_echo, haproxy_idle]
