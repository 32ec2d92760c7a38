# SPDX-License-Identifier: Apache-2.0
"""``./run soak [SECONDS]``: a bounded soak of a private instance under a realistic mix of work at once.

The bench measures one kind of request at a time; a soak looks for what only
shows when everything happens together for a while: errors under concurrent
policy changes, burns and polling, and Apache children whose memory keeps
growing.  For SECONDS (60 by default) wrk keeps 16 connections busy with a mix of
calls (:mod:`bench.soak_mix`), while a thread changes the access-control policy
as the demo administrator about once a second (and checks that each change is
enforced at once), and another burns a small image again and again on the
simulated drive at 1x, checking each verification.  The resident memory of every
Apache child is sampled at the start, after a warm-up and at the end
(:mod:`bench.rss`).  Then comes a slow-crowd phase (:mod:`clarens.dev.crowd`): 200
clients sending their bodies at 9 kB/s from 200 addresses while echo is called every
0.25 s (the p99 is reported against the 2 s target, for information).  It prints a
short report, writes ``bench-results/soak.json``, and exits 0 only if there were no
errors and the children's memory stayed flat.

    /usr/bin/python3 -m bench.soak [SECONDS] [--port PORT] [--keep]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import xmlrpc.client
from typing import Any

from bench import load, rss, servers, soak_mix
from clarens import resumable
from clarens.dev import crowd, devpki
from clarens.dev.instance import ROOT, Instance, InstanceError

DRIVE = "sim0"
ACL_GROUP = "soak-scratch"            # toggled between the demo user and nobody
ACL_GUARDED = "validator1.countTheEntities"   # allowed to that group only, for the run
ACL_SCRATCH = "soakscratch"           # an entry rewritten at every tick
FINISHED = ("done", "failed", "cancelled", "interrupted")
CROWD, CROWD_RATE, CROWD_P99_S = 200, 9000, 2.0   # the slow-crowd phase, and the p99 target it reports against


@dataclasses.dataclass(frozen=True)
class Settings:
    """What to run, and what "flat" means."""
    seconds: int = 60
    port: int = 18280                 # HTTPS on port + 1
    threads: int = 2
    connections: int = 16
    iso_mb: float = 4.0               # about 3 s a burn at 1x (1.3 MB/s), verification included
    acl_interval: float = 1.0
    crowd_seconds: int = 30           # the slow-crowd phase's probing (0: none)
    criterion: rss.Criterion = dataclasses.field(default_factory=rss.Criterion)

    @property
    def warmup(self) -> float:
        """Seconds of load before the memory baseline: 20% of the run, 3 to 15 s."""
        return min(15.0, max(3.0, self.seconds * 0.2))


# -- the access-control churn ---------------------------------------------------------------------

def _proxy(url: str, user: str, password: str) -> Any:
    """An XML-RPC proxy authenticating as ``user`` (Any: its answers are whatever the server sends)."""
    return xmlrpc.client.ServerProxy(url.replace("http://", "http://%s:%s@" % (user, password)), allow_none=True)


class AclChurn(threading.Thread):
    """Changes the policy as the administrator every ``interval`` seconds until stopped: the scratch
    group alternately holds the demo user and nobody (and the guarded method is allowed to that
    group only), and the scratch entry is rewritten.  After each change the demo user calls the
    guarded method on a new connection (any child): it must be allowed exactly when a member."""

    def __init__(self, url: str, passwords: dict[str, str], interval: float):
        super().__init__(name="acl-churn", daemon=True)
        self.url, self.passwords, self.interval = url, passwords, interval
        self.admin = _proxy(url, "admin", passwords["admin"])
        self.stop = threading.Event()
        self.started_at = time.time()
        self.applied = self.checked = 0
        self.errors: list[str] = []

    def _change(self, method: str, *params: Any) -> None:
        if getattr(self.admin.acl, method)(*params) is not True:
            raise AssertionError("acl.%s%r did not answer true" % (method, params))
        self.applied += 1

    def _demo_allowed(self) -> bool:
        demo = _proxy(self.url, "demo", self.passwords["demo"])
        try:
            demo.validator1.countTheEntities("<&>")
            return True
        except xmlrpc.client.Fault as fault:
            if fault.faultCode != soak_mix.ACCESS_DENIED:
                raise
            return False

    def prepare(self) -> None:
        """The scratch group (with the demo user) and the entry guarding the method with it."""
        self._change("set_group", ACL_GROUP, ["demo"])
        self._change("set_entry", ACL_GUARDED, {"allow_groups": [ACL_GROUP]})

    def run(self) -> None:
        tick, start = 0, time.monotonic()
        while not self.stop.wait(max(0.0, start + (tick + 1) * self.interval - time.monotonic())):
            tick += 1
            member = tick % 2 == 0
            try:
                self._change("set_group", ACL_GROUP, ["demo"] if member else ["soak-nobody"])
                self._change("set_entry", ACL_SCRATCH, {"allow": ["soak-%d" % tick], "deny": ["anonymous"]})
                allowed = self._demo_allowed()
                self.checked += 1
                if allowed != member:
                    self.errors.append("tick %d: demo %s the guarded method as %sa member" % (
                        tick, "could call" if allowed else "was refused", "" if member else "not "))
            except (OSError, xmlrpc.client.Error, AssertionError) as e:
                self.errors.append("tick %d: %s: %s" % (tick, type(e).__name__, e))

    def audited(self) -> int:
        """How many of this run's changes the audit log holds (it returns 1000 records at most)."""
        records = self.admin.acl.audit(1000)
        return sum(1 for r in records if r["who"] == "admin" and r["when"] >= self.started_at - 1
                   and (r["what"].get("group") == ACL_GROUP or r["what"].get("target") in (ACL_GUARDED, ACL_SCRATCH)))

    def summary(self) -> dict:
        try:
            audited = self.audited()
        except (OSError, xmlrpc.client.Error) as e:
            audited = -1
            self.errors.append("acl.audit: %s: %s" % (type(e).__name__, e))
        return {"applied": self.applied, "audited": audited, "enforcement_checks": self.checked,
                "audit_matches": audited == self.applied or self.applied >= 1000, "errors": self.errors}


# -- the burns ------------------------------------------------------------------------------------

def make_iso(directory: str, megabytes: float) -> str:
    """``directory/soak.iso``: an ISO 9660 image holding one file of random bytes (as tests.helpers.make_iso)."""
    src = os.path.join(directory, "soak.d")
    os.makedirs(src)
    with open(os.path.join(src, "data.bin"), "wb") as f:
        f.write(os.urandom(int(megabytes * 1000 * 1000)))
    path = os.path.join(directory, "soak.iso")
    subprocess.run(["xorriso", "-as", "mkisofs", "-R", "-V", "SOAK", "-o", path, src], check=True,
                   capture_output=True)
    shutil.rmtree(src)
    return path


def upload(inst: Instance, path: str, password: str) -> dict:
    """Upload the image at ``path`` as the demo user, as the command-line client does; the image record."""
    target = resumable.Target(inst.url + "images/" + os.path.basename(path),
                              {"Authorization": soak_mix.auth_header("demo", password)}, timeout=120)
    return resumable.upload(target, path)["image"]


class Burns(threading.Thread):
    """Burns the image on the simulated drive at 1x, one job after another, as the demo user, until
    ``until`` (time.monotonic); each must end done with a matching verification."""

    def __init__(self, url: str, password: str, image: dict, until: float):
        super().__init__(name="burns", daemon=True)
        self.proxy = _proxy(url, "demo", password)
        self.image, self.until = image, until
        self.first_job = threading.Event()
        self.jobs: list[dict] = []
        self.errors: list[str] = []
        # 1x is about 1.3 MB/s; a burn that takes five times longer than that has hung
        self.timeout = self.image["size"] / 1.3e6 * 5 + 60

    def _follow(self, job_id: int) -> dict:
        deadline = time.monotonic() + self.timeout
        while True:
            job = self.proxy.burner.status(job_id)
            if job["state"] in FINISHED or time.monotonic() > deadline:
                return job
            time.sleep(0.5)     # each poll costs a bcrypt check (Basic authentication)

    def _burn(self) -> None:
        job_id = self.proxy.burner.burn(self.image["name"], DRIVE, {"speed": 1})
        self.jobs.append({"id": job_id})
        self.first_job.set()
        job = self._follow(job_id)
        verification = job.get("verification") or {}
        self.jobs[-1] = {"id": job_id, "state": job["state"], "match": verification.get("match"),
                         "seconds": round((job.get("finished") or 0) - (job.get("started") or 0), 2)}
        if job["state"] != "done" or not verification.get("match") \
                or verification.get("image_sha256") != self.image["sha256"]:
            self.errors.append("job %d ended %s (error %s, verification %s)" % (
                job_id, job["state"], job.get("error"), verification))

    def run(self) -> None:
        try:
            while True:
                self._burn()
                if time.monotonic() >= self.until - 1:
                    return
        except (OSError, xmlrpc.client.Error) as e:
            self.errors.append("%s: %s" % (type(e).__name__, e))
        finally:
            self.first_job.set()

    def summary(self) -> dict:
        verified = sum(1 for j in self.jobs if j.get("state") == "done" and j.get("match"))
        return {"image": self.image["name"], "image_bytes": self.image["size"], "jobs": self.jobs,
                "verified": verified, "errors": self.errors}


# -- watching the children ------------------------------------------------------------------------

class Watch(threading.Thread):
    """Every second: which children exist (replacements are counted), and the access log emptied (it
    grows by tens of MB a minute).  The memory baseline is taken after the warm-up, once prefork has
    added or removed no child for ``STABLE_S`` seconds (under load it spawns children until enough
    are idle, and a new child runs PythonImport), or at ``latest`` seconds into the load at most."""

    STABLE_S = 5.0

    def __init__(self, inst: Instance, parent: int, warmup: float, latest: float):
        super().__init__(name="watch", daemon=True)
        self.inst, self.parent, self.warmup, self.latest = inst, parent, warmup, latest
        self.stop = threading.Event()
        self.seen: set[rss.Key] = set()
        self.warm: dict[rss.Key, rss.Child] = {}
        self.warm_at: float | None = None      # seconds into the load
        self.warm_stable = False               # whether the children had stopped changing by then

    def run(self) -> None:
        start = changed = time.monotonic()
        previous: set[rss.Key] = set()
        while not self.stop.wait(1.0):
            now, current = time.monotonic(), rss.children(self.parent)
            if set(current) != previous:
                previous, changed = set(current), now
            self.seen |= previous
            stable = now - changed >= self.STABLE_S
            if self.warm_at is None and now - start >= self.warmup and (stable or now - start >= self.latest):
                self.warm, self.warm_at, self.warm_stable = current, round(now - start, 1), stable
            servers.truncate_access_log(self.inst)


# -- the server's log -----------------------------------------------------------------------------

_LOG_TAG = re.compile(r"^\[[^]]*\] \[(\w*:\w+)\]")
_SERIOUS = {"crashes": re.compile(r"exit signal|seg(mentation)? ?fault", re.I),
            "application_errors": re.compile(r"raised \w+ \(incident"),
            "tracebacks": re.compile(r"Traceback \(most recent call last\)"),
            "critical": re.compile(r"\[\w*:(crit|alert|emerg)\]")}


def scan_log(path: str, offset: int) -> dict:
    """What the error log says since ``offset``: lines per module:level, and the serious ones."""
    with open(path, errors="replace") as f:
        f.seek(offset)
        lines = f.readlines()
    levels: dict[str, int] = {}
    for line in lines:
        m = _LOG_TAG.match(line)
        if m:
            levels[m.group(1)] = levels.get(m.group(1), 0) + 1
    serious = {name: [line.rstrip() for line in lines if rx.search(line)] for name, rx in _SERIOUS.items()}
    return {"lines": len(lines), "levels": levels, **{k: len(v) for k, v in serious.items()},
            "examples": [line for found in serious.values() for line in found[:3]]}


# -- the run --------------------------------------------------------------------------------------

def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _load_errors(counts: soak_mix.Counts) -> int:
    return counts.non_2xx + sum(counts.socket_errors.values()) + counts.unattributed + sum(
        k["bad"] for k in counts.kinds.values())


def _set_up(inst: Instance, settings: Settings, tmp: str) -> tuple[AclChurn, Burns, str]:
    """Upload the image, start burning it, prepare the policy churn and write the wrk script (its
    fixed answers taken from the server and checked)."""
    passwords = devpki.credentials(inst.state_dir)
    image = upload(inst, make_iso(tmp, settings.iso_mb), passwords["demo"])
    churn = AclChurn(inst.url, passwords, settings.acl_interval)
    churn.prepare()
    burns = Burns(inst.url, passwords["demo"], image, time.monotonic() + settings.seconds)
    burns.start()
    burns.first_job.wait(60)
    if not burns.jobs:
        raise RuntimeError("the first burn did not start: %s" % burns.errors)
    mix = soak_mix.kinds(burns.jobs[0]["id"])
    answers = {k.name: soak_mix.answer(k, inst.port, passwords) for k in mix}
    return churn, burns, soak_mix.write_script(tmp, mix, answers, passwords)


def _soak(inst: Instance, settings: Settings, tmp: str) -> dict:
    """Everything between the instance's start and its stop."""
    parent = inst.running_pid()
    if parent is None:
        raise InstanceError("the instance has no Apache parent")
    churn, burns, script = _set_up(inst, settings, tmp)
    log_offset = os.path.getsize(inst.error_log)
    start = rss.children(parent)
    watch = Watch(inst, parent, settings.warmup, settings.seconds / 2)
    _progress("soak: %d s, %d connections, %d Apache children; burning %s at 1x" % (
        settings.seconds, settings.connections, len(start), burns.image["name"]))
    watch.start()
    churn.start()
    began = time.monotonic()
    try:
        counts = soak_mix.run(inst.url, script, settings.seconds, settings.threads, settings.connections)
    finally:
        churn.stop.set()
        watch.stop.set()
    end, elapsed = rss.children(parent), time.monotonic() - began
    for thread, timeout in ((churn, 30.0), (watch, 10.0), (burns, burns.timeout)):
        thread.join(timeout)
    if burns.is_alive():
        burns.errors.append("the last burn was still running %.0f s after the load" % burns.timeout)
    return {"seconds": round(elapsed, 1), "load": _load_summary(counts), "acl": churn.summary(),
            "burns": burns.summary(), "server_log": scan_log(inst.error_log, log_offset),
            "rss": _memory(settings, watch, start, end), "crowd": _crowd(inst, settings)}


def _crowd(inst: Instance, settings: Settings) -> dict | None:
    """The slow-crowd phase: other callers' times while CROWD slow bodies come from as many addresses."""
    if not settings.crowd_seconds:
        return None
    workers = inst.server_config().workers
    _progress("soak: slow crowd, %d bodies at %d B/s from %d addresses" % (CROWD, CROWD_RATE, CROWD))
    measured = crowd.under_crowd(inst.port, "body", CROWD, CROWD_RATE, CROWD, settings.crowd_seconds,
                                 settled=lambda: len(inst.processes()) > workers)
    return dict(measured.probes.summary(), settle_s=measured.settle_s, workers=workers, **measured.counts)


def _memory(settings: Settings, watch: Watch, start: dict[rss.Key, rss.Child], end: dict[rss.Key, rss.Child]) -> dict:
    """The children's growth from the baseline to the end (and, for reference, from the start,
    which includes every child's first requests)."""
    criterion = dataclasses.replace(settings.criterion, busy=settings.connections)
    return {"baseline_at_s": watch.warm_at, "baseline_stable": watch.warm_stable,
            "children_seen": len(watch.seen | set(start) | set(end)),
            "warm_to_end": rss.compare(watch.warm if watch.warm_at is not None else start, end, criterion),
            "start_to_end": rss.compare(start, end, criterion)}


def _load_summary(counts: soak_mix.Counts) -> dict:
    return {"requests": counts.wrk.requests, "rps": counts.wrk.rps, "p50_ms": counts.wrk.p50_ms,
            "p99_ms": counts.wrk.p99_ms, "non_2xx": counts.non_2xx, "socket_errors": counts.socket_errors,
            "kinds": counts.kinds, "unattributed": counts.unattributed, "wrong_answers": counts.samples,
            "errors": _load_errors(counts)}


def _verdict(result: dict) -> dict:
    log = result["server_log"]
    errors = {"load": result["load"]["errors"], "acl": len(result["acl"]["errors"]),
              "burns": len(result["burns"]["errors"]),
              "server": log["crashes"] + log["application_errors"] + log["tracebacks"] + log["critical"]}
    verdict = {"errors": errors, "errors_total": sum(errors.values()),
               "burn_verified": result["burns"]["verified"] > 0 and not result["burns"]["errors"],
               "acl_applied": result["acl"]["audit_matches"] and result["acl"]["enforcement_checks"] > 0,
               "rss_flat": result["rss"]["warm_to_end"]["flat"]}
    verdict["passed"] = verdict["errors_total"] == 0 and verdict["burn_verified"] and verdict["acl_applied"] \
        and verdict["rss_flat"]
    if result["crowd"] is not None:     # for information: on a loaded machine the queue behind the pool grows
        verdict["crowd_p99_under_2s"] = result["crowd"]["failed"] == 0 and result["crowd"]["p99_s"] < CROWD_P99_S
    return verdict


def run(settings: Settings, keep: bool = False) -> dict:
    """Start a private instance on ``settings.port``, soak it, stop it; the result (see :func:`text`).

    Its state goes to a new directory under /tmp, removed afterwards unless ``keep``
    or the run failed (the result names it).
    """
    if not load.available():
        raise RuntimeError("wrk is not installed: %s" % load.INSTALL_HINT)
    state = tempfile.mkdtemp(prefix="clarens-soak-", dir="/tmp")
    os.chmod(state, 0o755)        # Apache's children traverse it
    inst = servers.instance(state, settings.port, burner=True)
    settings_out = {**dataclasses.asdict(settings), "warmup": settings.warmup}
    try:
        with tempfile.TemporaryDirectory(prefix="soak-", dir=state) as tmp:
            inst.start()
            try:
                result = _soak(inst, settings, tmp)
            finally:
                inst.stop()
    except BaseException:
        print("soak: state kept in %s" % state, file=sys.stderr)
        raise
    result = {"settings": settings_out, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "state_dir": state,
              **result}
    result["verdict"] = _verdict(result)
    if keep or not result["verdict"]["passed"]:
        result["state_kept"] = True
    else:
        shutil.rmtree(state, ignore_errors=True)
    return result


def text(result: dict) -> str:
    """A short human report of a run."""
    load_, acl, burns, v = result["load"], result["acl"], result["burns"], result["verdict"]
    warm, crit = result["rss"]["warm_to_end"], result["rss"]["warm_to_end"]["criterion"]
    lines = ["soak: %.0f s at %d connections, %d requests (%.0f/s), p50 %.2f ms, p99 %.2f ms" % (
        result["seconds"], result["settings"]["connections"], load_["requests"], load_["rps"], load_["p50_ms"],
        load_["p99_ms"]), "", "%-16s %9s %9s %7s" % ("kind", "sent", "correct", "wrong")]
    for name, c in load_["kinds"].items():
        lines.append("%-16s %9d %9d %7d" % (name, c["sent"], c["ok"], c["bad"]))
    sockets = ", ".join("%s %d" % kv for kv in load_["socket_errors"].items()) or "none"
    lines += ["wrk: non-2xx %d; socket errors: %s; wrong answers of no known kind: %d" % (
        load_["non_2xx"], sockets, load_["unattributed"])]
    lines += ["  " + s[:200] for s in load_["wrong_answers"]]
    lines += ["acl: %d changes applied, %d audited, %d enforcement checks, %d errors" % (
        acl["applied"], acl["audited"], acl["enforcement_checks"], len(acl["errors"]))]
    lines += ["  " + e for e in acl["errors"][:5]]
    lines += ["burns: %d of %d verified (%s, %d bytes, 1x), %d errors" % (
        burns["verified"], len(burns["jobs"]), burns["image"], burns["image_bytes"], len(burns["errors"]))]
    lines += ["  " + e for e in burns["errors"][:5]]
    log = result["server_log"]
    lines += ["server log: %d lines (%s); crashes %d, application errors %d, tracebacks %d, critical %d" % (
        log["lines"], ", ".join("%s %d" % kv for kv in sorted(log["levels"].items())) or "-", log["crashes"],
        log["application_errors"], log["tracebacks"], log["critical"])]
    lines += ["  " + e[:200] for e in log["examples"][:5]]
    rss_ = result["rss"]
    lines += ["rss: %d children seen; %d at the baseline (%s s into the load%s), %d at the end (%d started, %d exited)"
              % (rss_["children_seen"], warm["children_before"], rss_["baseline_at_s"],
                 "" if rss_["baseline_stable"] else ", still changing", warm["children_after"], warm["started"],
                 warm["exited"]),
              "  growth of the %d that lived through it (%d busy; %d too young to compare): median of the busy %s MB,"
              " largest %s MB" % (warm["survivors"], warm["busy_survivors"], warm["young"], warm["median_growth_mb"],
                                  warm["max_growth_mb"]),
        "  flat (median < %.1f MB and largest < %.1f MB): %s" % (crit["median_mb"], crit["max_mb"],
                                                                 "yes" if warm["flat"] else "NO")]
    slow = result["crowd"]
    if slow is not None:
        lines += ["slow crowd: %d bodies at %d B/s from %d addresses (workers %d, settled after %.1f s): echo "
                  "p50 %.2f s, p99 %.2f s, max %.2f s, %d of %d failed (target p99 < %.0f s: %s)" % (
                      CROWD, CROWD_RATE, CROWD, slow["workers"], slow["settle_s"], slow["p50_s"], slow["p99_s"],
                      slow["max_s"], slow["failed"], slow["calls"], CROWD_P99_S,
                      "met" if v.get("crowd_p99_under_2s") else "NOT met")]
    lines += ["", "errors: %d (%s); burn verified: %s; ACL changes applied: %s; RSS flat: %s => %s" % (
        v["errors_total"], ", ".join("%s %d" % kv for kv in v["errors"].items()), v["burn_verified"],
        v["acl_applied"], v["rss_flat"], "PASS" if v["passed"] else "FAIL")]
    if result.get("state_kept"):
        lines.append("state kept in %s" % result["state_dir"])
    return "\n".join(lines) + "\n"


def write(result: dict, directory: str) -> str:
    """Write the result as ``directory/soak.json``; its path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "soak.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.soak", description=__doc__.splitlines()[0].strip("`"))
    p.add_argument("seconds", nargs="?", type=int, default=60, help="how long the load lasts (default 60)")
    p.add_argument("--port", type=int, default=18280, help="the instance's port (HTTPS on PORT+1; default 18280)")
    p.add_argument("--keep", action="store_true", help="keep the instance's state directory")
    p.add_argument("--out", default=os.path.join(ROOT, "bench-results"), help="directory for soak.json")
    args = p.parse_args(argv)
    if args.seconds < 5:
        p.error("a soak lasts 5 seconds at least")
    try:
        result = run(Settings(seconds=args.seconds, port=args.port), keep=args.keep)
    except (InstanceError, RuntimeError, AssertionError) as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    print(text(result), end="")
    print("written: %s" % write(result, args.out))
    return 0 if result["verdict"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
