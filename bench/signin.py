# SPDX-License-Identifier: Apache-2.0
"""Sessions and password guessing, measured: what signing in once saves, and what guessing costs others.

Why: a password check is bcrypt (about 50 ms of CPU); a session token is checked in
microseconds (clarens.sessions).  Three probes, each against its own instance:

* ``session_echo``: wrk's echo load (the XML-RPC echo row's request) sent anonymously and
  with a session token (``Authorization: Bearer``), rounds alternated; the ratio is the
  session's req/s over the anonymous, paired by round (target >= 0.9x).  Beside it, the
  cost of verifying a token in-process (µs), and of one bcrypt check at the host's cost.
* ``open_pages``: 100 burner pages left open, each polling the page's status batch
  (``burner.jobs`` and ``burner.drives``, as modules/burner/web/burner.js does) once a
  second with its own session cookie, their starts spread over the second, for twice the
  row duration: the CPU the host spends (Apache and the burner helper) as a share of
  the machine's cores (target < 25 % of 2 cores), and the polls' p99 (target < 50 ms),
  measured once prefork has stopped forking under the pages.
* ``password_flood``: anonymous echo (16 connections) alone, then while 32 connections
  guess the admin's password (``Authorization: Basic``) as fast as they are answered, for
  20 s; the ratio is the echo's median latency with the flood over without it, paired by
  round (target <= 2x), after a first flood that is not measured (it makes prefork fork a
  worker for each held guess: the note gives what that cost).  The CPU spent on password
  checks is the checks the host ran (the attempts its throttle counted, read from
  throttle.tdb) times the CPU of one check, over the flood's length (target < 10 % of
  one core).  The throttle's counts are cleared between rounds, so that each round is a
  fresh flood.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import statistics
import tempfile
import time
import xmlrpc.client
from typing import Any, Callable

import bcrypt

from bench import load, servers, targets
from bench.probes import ProbeEnv, ProbeRow, _cpu_ticks
from clarens import credentials, db, passwords, sessions, throttle
from clarens.dev import devpki
from clarens.dev.instance import Instance

PAGES = 100
POLL = json.dumps([{"jsonrpc": "2.0", "method": "burner.jobs", "params": [], "id": 1},
                   {"jsonrpc": "2.0", "method": "burner.drives", "params": [], "id": 2}]).encode()
FLOOD_CONNECTIONS, FLOOD_SECONDS = 32, 20
MIN_SESSION_RATIO, MAX_PAGES_CPU, MAX_PAGES_P99_MS, MAX_FLOOD_RATIO, MAX_CHECK_CPU = 0.9, 0.25, 50.0, 2.0, 0.10


def _echo() -> targets.Target:
    return next(t for t in targets.ROWS if t.key == "xmlrpc_echo_acl")


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


def _open_session(inst: Instance, user: str = "demo") -> Any:
    """system.auth with the user's password: the session's {token, expires...}."""
    proxy = xmlrpc.client.ServerProxy(inst.url, headers=[
        ("Authorization", _basic(user, devpki.credentials(inst.state_dir)[user]))])
    return proxy.system.auth()


def _cpu_seconds(pids: list[int]) -> float:
    return _cpu_ticks(pids) / os.sysconf("SC_CLK_TCK")


def _verify_us(rounds: int = 5000) -> tuple[float, float]:
    """CPU microseconds to verify a session token in-process (a fresh table, as a host keeps it): in full
    (the first time in a process, or after the table changed), and again (unchanged since)."""
    with tempfile.TemporaryDirectory(prefix="bench-sessions-") as tmp:
        table = db.open_db(os.path.join(tmp, "sessions.tdb"))
        try:
            kept = sessions.Sessions(table, os.urandom(32), 1800, 43200, lambda name: b"$2y$10$entry")
            token, _ = kept.open("demo", "basic")
            kept.verify(token)
            timings = []
            for forget in (True, False):
                start = time.process_time()
                for _ in range(rounds):
                    if forget:
                        kept._verified.clear()
                    kept.verify(token)
                timings.append((time.process_time() - start) / rounds * 1e6)
            return timings[0], timings[1]
        finally:
            table.close()


def _bcrypt_ms(inst: Instance, user: str = "admin") -> float:
    """CPU milliseconds of one password check against the user's own htpasswd entry (a wrong password)."""
    hashed = passwords.Htpasswd(os.path.join(inst.state_dir, "htpasswd")).entry(user)
    assert hashed is not None
    start = time.process_time()
    for _ in range(5):
        bcrypt.checkpw(b"guess", hashed)
    return (time.process_time() - start) / 5 * 1000


def session_echo(env: ProbeEnv) -> ProbeRow:
    """echo.echo with a session token against anonymous echo, same run, same instance."""
    inst = servers.instance(env.state_dir, env.port)
    echo = _echo()
    with tempfile.TemporaryDirectory(prefix="bench-session-") as tmp:
        inst.start()
        try:
            token = _open_session(inst)["token"]
            scripts = {"anonymous": load.write_script(tmp, "anonymous", echo.method, echo.body, echo.content_type),
                       "session": load.write_script(tmp, "session", echo.method, echo.body, echo.content_type,
                                                    {"Authorization": "Bearer " + token})}
            url = "http://127.0.0.1:%d%s" % (inst.port, echo.path)
            servers.settle(inst, url, scripts["anonymous"], env.load)
            rounds = servers.alternate(inst, {name: (url, script) for name, script in scripts.items()}, env.load)
            bcrypt_ms = _bcrypt_ms(inst)
        finally:
            inst.stop()
    verify_us = _verify_us()
    ratio = statistics.median(s.rps / a.rps for s, a in zip(rounds["session"], rounds["anonymous"], strict=True))
    med = {name: {k: statistics.median(getattr(r, k) for r in rs) for k in ("rps", "p50_ms", "p99_ms")}
           for name, rs in rounds.items()}
    errors = sum(r.errors for rs in rounds.values() for r in rs)
    note = ("%.2fx anonymous echo (%s req/s, p99 %.2f ms; in a session %s req/s, p99 %.2f ms)%s. A token verified "
            "in %.1f µs of CPU in-process (%.1f µs again while the table is unchanged); one password check (bcrypt, "
            "the host's cost) %.0f ms" % (
                ratio, format(round(med["anonymous"]["rps"]), ","), med["anonymous"]["p99_ms"],
                format(round(med["session"]["rps"]), ","), med["session"]["p99_ms"],
                "; %d ERRORS" % errors if errors else "", verify_us[0], verify_us[1], bcrypt_ms))
    return ProbeRow("session_echo", "echo.echo in a session (Bearer token) vs anonymous", targets.PRODUCT,
                    med["session"]["p50_ms"], ratio, note,
                    {"medians": med, "errors": errors, "verify_us": verify_us, "bcrypt_ms": bcrypt_ms,
                     "rounds": {k: [dataclasses.asdict(r) for r in v] for k, v in rounds.items()}})


# -- 100 open pages -----------------------------------------------------------------------------

async def _page(port: int, cookie: str, start: float, window: list[float], latencies: list[float],
                errors: list[str]) -> None:
    """One open page: its poll once a second on one kept-alive connection, from ``start`` until the
    ``window`` in which latencies are recorded ends."""
    request = ("POST /clarens/ HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
               "Content-Length: %d\r\nCookie: %s=%s\r\n\r\n" % (port, len(POLL), sessions.COOKIE, cookie)
               ).encode() + POLL
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        tick = start
        while tick < window[1]:
            sent = time.monotonic()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            body = await reader.readexactly(length)
            if sent >= window[0]:
                latencies.append((time.monotonic() - sent) * 1000)
            answer = json.loads(body)
            if not head.startswith(b"HTTP/1.1 200") or not isinstance(answer, list) or any(
                    "error" in a for a in answer):
                errors.append(head.split(b"\r\n")[0].decode() + " " + body[:200].decode("utf-8", "replace"))
            tick += 1.0
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
    finally:
        writer.close()


async def _settled(inst: Instance, quiet: float = 3.0, timeout: float = 60.0) -> None:
    """Once Apache's process count has held for ``quiet`` seconds: prefork has forked what the open pages
    need (a new child boots the host: its CPU is not the pages')."""
    deadline = time.monotonic() + timeout
    count, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now_count = len(inst.processes())
        if now_count != count:
            count, since = now_count, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        await asyncio.sleep(0.25)
    raise RuntimeError("Apache kept forking children for %.0f s under the open pages" % timeout)


def open_pages(env: ProbeEnv, pages: int = PAGES) -> ProbeRow:
    """``pages`` burner pages polling once a second with their cookies: the host's CPU and the p99, measured
    once every page is open and prefork has stopped forking."""
    inst = servers.instance(env.state_dir, env.port, burner=True)
    seconds = 2 * env.load.duration
    inst.start()
    try:
        cookies = [_open_session(inst)["token"] for _ in range(pages)]
        latencies: list[float] = []
        errors: list[str] = []
        helper = inst.helper_pid()

        async def run() -> tuple[float, float]:
            begin = time.monotonic() + 1.0
            window = [float("inf"), float("inf")]           # set once the pages are open and Apache settled
            polling = asyncio.gather(*(_page(inst.port, cookie, begin + n / pages, window, latencies, errors)
                                       for n, cookie in enumerate(cookies)))
            await asyncio.sleep(begin + 1.0 - time.monotonic())
            await _settled(inst)
            window[:] = [time.monotonic(), time.monotonic() + seconds]
            apache, helpers = inst.processes(), [helper] if helper else []
            before = _cpu_seconds(apache), _cpu_seconds(helpers)
            await asyncio.sleep(window[1] - time.monotonic())
            # (a process forked meanwhile counts whole: it started within the window)
            spent = _cpu_seconds(sorted(set(apache + inst.processes()))) - before[0], _cpu_seconds(helpers) - before[1]
            await polling
            return spent
        apache_cpu, helper_cpu = asyncio.run(run())
    finally:
        inst.stop()
    cores = os.cpu_count() or 1
    cpu = apache_cpu + helper_cpu
    share = cpu / seconds / cores
    p50, p99 = statistics.median(latencies), statistics.quantiles(latencies, n=100)[98]
    note = ("%d pages polled %d times in %d s (%d errors): the host used %.1f %% of %d cores (%.2f s of CPU a "
            "second: Apache %.2f, the burner helper %.2f; %.2f ms a poll); p50 %.2f ms, p99 %.2f ms" % (
                pages, len(latencies), seconds, len(errors), 100 * share, cores, cpu / seconds, apache_cpu / seconds,
                helper_cpu / seconds, 1000 * cpu / max(1, len(latencies)), p50, p99))
    return ProbeRow("open_pages", "%d open burner pages polling once a second with their cookies" % pages,
                    targets.PRODUCT, p50, share, note,
                    {"cpu_share": share, "cores": cores, "p99_ms": p99, "polls": len(latencies), "errors": errors[:5],
                     "error_count": len(errors), "apache_cpu_s": apache_cpu, "helper_cpu_s": helper_cpu})


# -- the password-guess flood -----------------------------------------------------------------------

def _forget_attempts(inst: Instance) -> int:
    """The password checks the throttle counted (one bcrypt each), forgotten: each round a fresh flood."""
    table = db.open_db(os.path.join(inst.db_dir, throttle.DB_NAME + ".tdb"))
    try:
        with table.locked():
            counted = sum(record["n"] for key, record in table.items("a:"))
            for key in table.keys("a:") + table.keys("u:"):
                table.delete(key)
        return counted
    finally:
        table.close()


def password_flood(env: ProbeEnv) -> ProbeRow:
    """Anonymous echo alone, then while 32 connections guess a password for 20 s: medians, and check CPU."""
    inst = servers.instance(env.state_dir, env.port)
    echo = _echo()
    alone: list[load.Result] = []
    flooded: list[load.Result] = []
    floods: list[load.Result] = []
    checks: list[int] = []
    # (a refused guess is held up to 2 s before its answer: no timeouts for the flood's wrk)
    flood_load = load.Load(connections=FLOOD_CONNECTIONS, timeout=30)
    measured = min(env.load.duration, FLOOD_SECONDS - 4)
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp:
        inst.start()
        try:
            script = load.write_script(tmp, "echo", echo.method, echo.body, echo.content_type)
            guess = load.write_script(tmp, "guess", echo.method, echo.body, echo.content_type,
                                      {"Authorization": _basic("admin", "guess")})
            url = "http://127.0.0.1:%d%s" % (inst.port, echo.path)
            servers.settle(inst, url, script, env.load)
            bcrypt_ms = _bcrypt_ms(inst)
            # A first flood, not measured: each guess held for its turn pins a worker, and prefork forks
            # as many more to keep its idle ones (each booting the host); the pool then stays that size.
            apache = inst.processes()
            before = _cpu_seconds(apache)
            load.run(url, guess, 10, flood_load)
            first_cpu, grown = _cpu_seconds(sorted(set(apache + inst.processes()))) - before, len(inst.processes())
            time.sleep(credentials.TARPIT)      # its last guesses, held after it stopped, answered
            for _ in range(env.load.rounds):
                _forget_attempts(inst)
                if env.load.warmup:
                    load.run(url, script, env.load.warmup, env.load)
                alone.append(load.run(url, script, measured, env.load))
                flood = load.start(url, guess, FLOOD_SECONDS, flood_load)
                time.sleep(2)                       # the flood under way
                flooded.append(load.run(url, script, measured, env.load))
                floods.append(flood())
                checks.append(_forget_attempts(inst))
                servers.truncate_access_log(inst)
        finally:
            inst.stop()
    ratio = statistics.median(f.p50_ms / a.p50_ms for f, a in zip(flooded, alone, strict=True))
    check_cpu = statistics.median(checks) * bcrypt_ms / 1000 / FLOOD_SECONDS
    note = ("anonymous echo's median %.2f ms alone, %.2f ms during the flood: %.2fx. The flood: %d connections, "
            "%d s, %s requests answered (%s refused or throttled); the host ran %s password checks (median of "
            "rounds) at %.0f ms of CPU each: %.1f %% of one core. The first flood on the fresh host (not measured, "
            "10 s): prefork went from %d to %d processes, %.1f s of CPU" % (
                statistics.median(a.p50_ms for a in alone), statistics.median(f.p50_ms for f in flooded), ratio,
                FLOOD_CONNECTIONS, FLOOD_SECONDS, format(round(statistics.median(f.requests for f in floods)), ","),
                format(round(statistics.median(f.errors for f in floods)), ","), statistics.median(checks),
                bcrypt_ms, 100 * check_cpu, len(apache), grown, first_cpu))
    return ProbeRow("password_flood", "anonymous echo during a password-guess flood (32 connections, 20 s)",
                    targets.PRODUCT, statistics.median(f.p50_ms for f in flooded), ratio, note,
                    {"check_cpu_share": check_cpu, "checks": checks, "bcrypt_ms": bcrypt_ms,
                     "first_flood": {"processes": [len(apache), grown], "cpu_s": first_cpu},
                     **{name: [dataclasses.asdict(r) for r in rs]
                        for name, rs in (("alone", alone), ("flooded", flooded), ("floods", floods))}})


PROBES: list[Callable[[ProbeEnv], ProbeRow]] = [session_echo, open_pages, password_flood]
