# SPDX-License-Identifier: Apache-2.0
"""What one request costs inside Apache, per row: instructions (callgrind) and CPU time (prefork).

    /usr/bin/python3 -m bench.cost instructions [--only REGEX] [--requests 2000] [--objects]
    /usr/bin/python3 -m bench.cost cpu [--only REGEX] [--rounds 5] [--duration 5] [--connections 16]
    /usr/bin/python3 -m bench.cost memory [--only REGEX] [--duration 5]
    /usr/bin/python3 -m bench.cost turns [--only REGEX] [--children 6] [--requests 500] [--rounds 9]

wrk's req/s on a shared 2-core VM moves by tens of percent with what else runs;
these two do not, or far less, and they are what docs/performance.md accounts with.

*instructions*: the bench's Apache (:func:`bench.servers.apache`) runs as one
process (``-X``) under valgrind's callgrind; each row's request is sent over one
kept-alive connection, warmed up, then the counters are zeroed, ``--requests`` are
sent, and the counters dumped: instructions per request, everything the process
did for them (Apache, mod_python, the interpreter, the C library; not the
kernel).  Repeatable to a few hundredths of a percent on a loaded machine; it
counts no cache misses, which is what a child of a pool pays on top.
``--objects`` splits each row by the shared object the instructions ran in.

*cpu*: the same Apache as shipped (prefork), settled under load; for each row and
round, wrk's usual load (``-t2 -c16``), and the CPU time the instance's processes
used meanwhile (``/proc/PID/schedstat``, in ns) over the requests wrk counted.
Rows alternate within each round, and the table gives medians.

*turns*: CPU time per request when every request finds its child's caches cold, as in a pool
of many children on few cores.  Each row holds ``--children`` kept-alive connections (a child
each); the rows' requests are sent one at a time, taking turns over the connections and
interleaved request by request across the rows, so that every row meets the same machine at the
same moments; each row's CPU is what its own children used (``/proc/PID/schedstat``) over its
requests.  No wrk, whose CPU and contention would be counted in, and paired in time: the ratio
of two rows holds on a loaded machine where req/s does not (it moves by a few percent between
runs, req/s by tens).

*memory*: the proportional set size (``/proc/PID/smaps_rollup``) of a child of the
same Apache, the median over the children, idle once they have booted, and after
each row's load for ``--duration`` seconds (the children that served it).

The ``session`` row is the XML-RPC echo row's call made in a session (``Authorization:
Bearer``, opened with ``system.auth`` as the demo user), beside the anonymous one.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import http.client
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from typing import Any

from bench import load, machine, probes, servers, targets
from clarens.dev import devpki
from clarens.dev.instance import APACHE, CLEAN_ENV, Instance

SESSION = "session"       # the extra row: echo with a session token
VALGRIND_START = 300.0    # seconds Apache may take to listen under valgrind on a loaded machine


@dataclasses.dataclass(frozen=True)
class Row:
    """A request to measure: the target, and any headers besides its own."""
    key: str
    target: targets.Target
    headers: dict[str, str] = dataclasses.field(default_factory=dict)

    def send(self, conn: http.client.HTTPConnection) -> None:
        headers = dict({"Content-Type": self.target.content_type} if self.target.content_type else {},
                       **self.headers)
        conn.request(self.target.method, self.target.path, body=self.target.body, headers=headers)
        response = conn.getresponse()
        targets.verify(self.target, response.status, response.read())


def rows(only: str | None) -> list[str]:
    """The keys measured: the Apache rows (access control on) and the session row."""
    keys = [t.key for t in targets.ROWS if t.server == targets.APACHE] + [SESSION]
    return [k for k in keys if not only or re.search(only, k)]


def _session_token(inst: Instance) -> str:
    password = devpki.credentials(inst.state_dir)["demo"]
    basic = base64.b64encode(("demo:%s" % password).encode()).decode()
    # Any: the result is whatever the server sent (typeshed's union of every marshallable type can't be indexed)
    proxy: Any = xmlrpc.client.ServerProxy(inst.url, headers=[("Authorization", "Basic " + basic)])
    return proxy.system.auth()["token"]


def _rows(inst: Instance, keys: list[str]) -> list[Row]:
    by_key = {t.key: t for t in targets.ROWS}
    out = [Row(k, by_key[k]) for k in keys if k != SESSION]
    if SESSION in keys:
        out.append(Row(SESSION, by_key["xmlrpc_echo_acl"], {"Authorization": "Bearer " + _session_token(inst)}))
    return out


# -- instructions (callgrind) ----------------------------------------------------------------

class Callgrind:
    """The bench's Apache as one process under callgrind, run as Apache's user (so that valgrind's
    control files and dumps stay its own: no switch of user after they are made)."""

    def __init__(self, state_dir: str, port: int, keep: str | None = None):
        self.inst = servers.apache(state_dir, port)
        self.user = Instance.apache_user()
        self.keep = keep
        if keep:
            os.makedirs(keep, exist_ok=True)
        self.out_dir = keep or tempfile.mkdtemp(prefix="bench-cost-")
        self.process: subprocess.Popen | None = None
        self.pid = 0
        self.dumps = 0
        self.names: dict[str, str] = {}    # callgrind's compressed object names, over the dumps
    def _as_apache(self) -> list[str]:
        return ["runuser", "-u", self.user.pw_name, "--"] if os.geteuid() == 0 else []

    def start(self) -> None:
        self.inst.prepare()
        with open(self.inst.conf_path) as f:
            conf = f.read()
        with open(self.inst.conf_path, "w") as f:     # started as that user already
            f.write(re.sub(r"(?m)^(User|Group) .*\n", "", conf))
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "%d:%d" % (self.user.pw_uid, self.user.pw_gid), self.inst.state_dir,
                            self.out_dir], check=True)
        # Without USER in the environment, as Apache runs: valgrind names its control files by it.
        argv = self._as_apache() + ["env", "-i"] + ["%s=%s" % kv for kv in CLEAN_ENV.items()] + [
            "valgrind", "--tool=callgrind", "--vgdb=yes", "--vgdb-prefix=%s/vgdb" % self.out_dir,
            "--callgrind-out-file=%s/callgrind.out" % self.out_dir, APACHE, "-f", self.inst.conf_path, "-X"]
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        servers.wait_port(self.inst.port, VALGRIND_START, self.process)
        found = [re.search(r"vgdb-shared-mem-vgdb-(\d+)-", n) for n in os.listdir(self.out_dir)]
        self.pid = next(int(m.group(1)) for m in found if m)

    def control(self, *args: str) -> None:
        subprocess.run(self._as_apache() + ["env", "-i", "PATH=" + CLEAN_ENV["PATH"], "callgrind_control",
                                            "--vgdb-prefix=%s/vgdb" % self.out_dir, *args, str(self.pid)],
                       check=True, capture_output=True)

    def measure(self, row: Row, requests: int) -> dict[tuple[str, str], int]:
        """Instructions per (shared object, function) for ``requests`` of ``row``, warmed up first."""
        conn = http.client.HTTPConnection("127.0.0.1", self.inst.port, timeout=120)
        try:
            for _ in range(max(50, requests // 5)):
                row.send(conn)
            self.control("--zero")
            for _ in range(requests):
                row.send(conn)
            self.dumps += 1
            self.control("--dump=" + row.key)
        finally:
            conn.close()
        return self_costs("%s/callgrind.out.%d" % (self.out_dir, self.dumps), self.names)

    def stop(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()
        if not self.keep:
            subprocess.run(["rm", "-rf", self.out_dir], check=False)


def self_costs(path: str, names: dict[str, str]) -> dict[tuple[str, str], int]:
    """Instructions (self cost) per (shared object, function) in a callgrind dump (``--dump-instr=no``
    format).  ``names``: the compressed names, ``(N) name`` where first used and ``(N)`` after, as read
    so far: callgrind keeps them from one dump of a run to the next, so read the dumps in order."""
    costs: dict[tuple[str, str], int] = {}
    obj = fn = "?"
    skip = False
    with open(path) as f:
        for line in f:
            if line[0].isdigit() or line[0] in "+-*":
                if skip:                         # the inclusive cost of a call: not this function's own
                    skip = False
                elif " " in line:
                    costs[obj, fn] = costs.get((obj, fn), 0) + int(line.split()[1])
                continue
            kind, eq, value = line.partition("=")
            if not eq or kind not in ("ob", "cob", "fn", "cfn", "calls"):
                continue
            if kind == "calls":
                skip = True
                continue
            ref, _, name = value.strip().partition(" ")
            space = "ob" if kind.endswith("ob") else "fn"
            if name:
                names[space + ref] = name
            if kind == "ob":
                obj = names.get(space + ref, ref)
            elif kind == "fn":
                fn = names.get(space + ref, ref)
    return costs


def object_group(path: str) -> str:
    """A column for a shared object: Apache, mod_python, Python, libc, or other."""
    name = os.path.basename(path)
    if name.startswith("libpython"):
        return "python"
    if name == "mod_python.so":
        return "mod_python"
    if name in ("apache2", "httpd") or name.startswith(("libapr", "mod_")):
        return "apache"
    if name.startswith(("libc.so", "libc-", "ld-linux", "libm.so")):
        return "libc"
    return "other"


GROUPS = ("apache", "mod_python", "python", "libc", "other")


def instructions(keys: list[str], requests: int, port: int, objects: bool, functions: int, state: str,
                 keep: str | None = None) -> list[dict]:
    cg = Callgrind(state, port, keep)
    out = []
    try:
        cg.start()
        for row in _rows(cg.inst, keys):
            costs = cg.measure(row, requests)
            by_object: dict[str, int] = {}
            for (path, _), cost in costs.items():
                by_object[path] = by_object.get(path, 0) + cost
            total = sum(by_object.values())
            entry: dict[str, Any] = {"key": row.key, "instructions": round(total / requests)}
            if row.target.calls > 1:
                entry["per_call"] = round(total / requests / row.target.calls)
            groups = {g: 0 for g in GROUPS}
            for path, cost in by_object.items():
                groups[object_group(path)] += cost
            entry["groups"] = {g: round(c / requests) for g, c in groups.items()}
            if objects:
                entry["objects"] = {os.path.basename(p): round(c / requests)
                                    for p, c in sorted(by_object.items(), key=lambda kv: -kv[1]) if c >= requests}
            if functions:
                entry["functions"] = {"%s %s" % (fn, os.path.basename(path)): round(c / requests) for (path, fn), c in
                                      sorted(costs.items(), key=lambda kv: -kv[1])[:functions]}
            out.append(entry)
            _progress(_instructions_line(entry))
    finally:
        cg.stop()
    return out


def _instructions_line(entry: dict) -> str:
    per_call = "  (%d per call)" % entry["per_call"] if "per_call" in entry else ""
    return "%-16s %9d instructions/request%s  %s" % (entry["key"], entry["instructions"], per_call, "  ".join(
        "%s %d" % kv for kv in entry["groups"].items()))


# -- CPU time (prefork) ----------------------------------------------------------------------

def _booted(inst: Instance) -> None:
    """Wait until every child Apache started has run PythonImport and gone idle: a child still
    booting would add its start to the CPU measured (on a loaded machine, for minutes)."""
    with open(inst.conf_path) as f:
        spare = int(machine.mpm_settings(f.read())["StartServers"])
    probes._wait_children_idle(inst, spare, timeout=300)


def cpu_ns(pids: list[int]) -> int:
    """CPU time used so far by the processes in ``pids`` that still exist, in ns (/proc/PID/schedstat)."""
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/schedstat" % pid) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def cpu(keys: list[str], settings: load.Load, port: int, state: str) -> list[dict]:
    inst = servers.apache(state, port)
    measured: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-cost-") as tmp:
        inst.start()
        try:
            _booted(inst)
            chosen = _rows(inst, keys)
            scripts = {r.key: load.write_script(tmp, r.key, r.target.method, r.target.body, r.target.content_type,
                                                r.headers) for r in chosen}
            url = "http://127.0.0.1:%d" % port
            _progress("settled at %d processes" % servers.settle(
                inst, url + chosen[0].target.path, scripts[chosen[0].key], settings))
            for n in range(settings.rounds):
                for row in chosen:
                    if settings.warmup:
                        load.run(url + row.target.path, scripts[row.key], settings.warmup, settings)
                    pids = inst.processes()
                    before = cpu_ns(pids)
                    result = load.run(url + row.target.path, scripts[row.key], settings.duration, settings)
                    used = cpu_ns(pids) - before
                    servers.truncate_access_log(inst)
                    entry = {"rps": result.rps, "p99_ms": result.p99_ms, "requests": result.requests,
                             "errors": result.errors, "cpu_us": used / 1000 / max(result.requests, 1)}
                    measured.setdefault(row.key, []).append(entry)
                    _progress("round %d/%d %-16s %7.1f us CPU/request  %8.0f req/s  p99 %.2f ms" % (
                        n + 1, settings.rounds, row.key, entry["cpu_us"], result.rps, result.p99_ms))
        finally:
            inst.stop()
    return [{"key": key, "cpu_us": statistics.median(r["cpu_us"] for r in runs),
             "rps": statistics.median(r["rps"] for r in runs), "p99_ms": statistics.median(r["p99_ms"] for r in runs),
             "errors": sum(r["errors"] for r in runs), "rounds": runs} for key, runs in measured.items()]


# -- cold turns ----------------------------------------------------------------------------

def server_pids(inst: Instance, conns: list[http.client.HTTPConnection]) -> list[int | None]:
    """The pid of the child of ``inst`` holding each of ``conns`` (by the client's port)."""
    want = {c.sock.getsockname()[1]: i for i, c in enumerate(conns) if c.sock is not None}
    inodes: dict[str, int] = {}
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)
            if local == inst.port and remote in want:
                inodes["socket:[%s]" % fields[9]] = want[remote]
    out: list[int | None] = [None] * len(conns)
    for pid in inst.processes():
        try:
            for fd in os.listdir("/proc/%d/fd" % pid):
                at = inodes.get(os.readlink("/proc/%d/fd/%s" % (pid, fd)))
                if at is not None:
                    out[at] = pid
        except OSError:
            pass
    return out


def _children_of(inst: Instance, conns: list[http.client.HTTPConnection]) -> list[int]:
    for _ in range(50):     # /proc/net/tcp read while connections open and close elsewhere can miss lines
        pids = server_pids(inst, conns)
        if None not in pids:
            return [p for p in pids if p is not None]
    raise RuntimeError("the children holding the connections were not found")


def turns(keys: list[str], children: int, requests: int, rounds: int, port: int, state: str) -> list[dict]:
    """CPU per request of each row, its requests taking turns over ``children`` children, all rows
    interleaved request by request; the median over ``rounds``, and each row's ratio to the first
    row (the median of the per-round ratios)."""
    inst = servers.apache(state, port)
    measured: dict[str, list[float]] = {}
    dropped = 0
    inst.start()
    try:
        _booted(inst)
        chosen = _rows(inst, keys)
        for n in range(rounds):
            conns = {r.key: [http.client.HTTPConnection("127.0.0.1", port, timeout=60) for _ in range(children)]
                     for r in chosen}
            try:
                for row in chosen:
                    for conn in conns[row.key]:
                        conn.connect()      # all at once: each connection a child of its own
                for row in chosen:
                    for conn in conns[row.key]:
                        for _ in range(5):
                            row.send(conn)
                pids = {r.key: _children_of(inst, conns[r.key]) for r in chosen}
                before = {key: cpu_ns(p) for key, p in pids.items()}
                for i in range(requests):
                    for row in chosen:
                        conn = conns[row.key][i % children]
                        try:
                            row.send(conn)
                        except (http.client.HTTPException, ConnectionError):
                            # A stall longer than KeepAliveTimeout (a loaded machine): a new connection,
                            # a new child, whose CPU counts from here and the old one's up to here.
                            dropped += 1
                            old = pids[row.key][i % children]
                            conn.close()
                            conn.connect()
                            row.send(conn)
                            new = _children_of(inst, [conn])[0]
                            pids[row.key][i % children] = new
                            before[row.key] += cpu_ns([new]) - cpu_ns([old])
                for row in chosen:
                    us = (cpu_ns(pids[row.key]) - before[row.key]) / 1000 / requests
                    measured.setdefault(row.key, []).append(us)
                    _progress("round %d/%d %-16s %7.1f us CPU/request" % (n + 1, rounds, row.key, us))
            finally:
                for conn in (c for cs in conns.values() for c in cs):
                    conn.close()
    finally:
        inst.stop()
    first = next(iter(measured.values()))
    return [{"key": key, "cpu_us": statistics.median(runs), "rounds": runs, "dropped": dropped,
             "ratio": statistics.median(a / b for a, b in zip(runs, first, strict=True))}
            for key, runs in measured.items()]


# -- memory (PSS) ---------------------------------------------------------------------------

def pss_kb(pid: int) -> int | None:
    """The proportional set size of ``pid`` (its private pages, and its share of those it shares), kB."""
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
    except (OSError, StopIteration):
        return None


def _children_pss(inst: Instance) -> dict[int, int]:
    parent = inst.running_pid()
    out = {}
    for pid in inst.processes():
        kb = pss_kb(pid) if pid != parent else None
        if kb is not None:
            out[pid] = kb
    return out


def memory(keys: list[str], settings: load.Load, port: int, state: str) -> list[dict]:
    """PSS per child: idle once every child has booted, and after the rows' load (the children that
    served it: the most CPU used meanwhile, one per connection)."""
    inst = servers.apache(state, port)
    with tempfile.TemporaryDirectory(prefix="bench-cost-") as tmp:
        inst.start()
        try:
            _booted(inst)
            idle = _children_pss(inst)
            chosen = _rows(inst, keys)
            url = "http://127.0.0.1:%d" % port
            before = {pid: cpu_ns([pid]) for pid in inst.processes()}
            for row in chosen:
                script = load.write_script(tmp, row.key, row.target.method, row.target.body, row.target.content_type,
                                           row.headers)
                load.run(url + row.target.path, script, settings.duration, settings)
            used = sorted(inst.processes(), key=lambda pid: before.get(pid, 0) - cpu_ns([pid]))
            everyone = _children_pss(inst)
            loaded = {pid: kb for pid, kb in everyone.items() if pid in used[:settings.connections]}
        finally:
            inst.stop()
    return [{"key": "idle", "children": len(idle), "pss_median_kb": statistics.median(idle.values()),
             "pss_total_kb": sum(idle.values())},
            {"key": "loaded (%s)" % " ".join(keys), "children": len(loaded),
             "pss_median_kb": statistics.median(loaded.values()), "pss_total_kb": sum(everyone.values()),
             "all_children": len(everyone)}]


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.cost", description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("instructions", "cpu", "memory", "turns"))
    p.add_argument("--only", metavar="REGEX", help="rows whose key matches (default: %s)" % " ".join(rows(None)))
    p.add_argument("--port", type=int, default=18190)
    p.add_argument("--requests", type=int, default=2000, help="instructions: requests counted per row")
    p.add_argument("--objects", action="store_true", help="instructions: per shared object too")
    p.add_argument("--functions", type=int, default=0, metavar="N", help="instructions: the N costliest functions")
    p.add_argument("--keep", metavar="DIR", help="instructions: keep callgrind's dumps (callgrind.out.N, one per row, "
                   "in order) in DIR, for callgrind_annotate --tree=caller or kcachegrind")
    p.add_argument("--rounds", type=int, default=5, help="cpu, turns: rounds, rows alternated in each")
    p.add_argument("--duration", type=int, default=5, help="cpu: seconds measured per row and round")
    p.add_argument("--connections", type=int, default=16, help="cpu: wrk's connections (one thread each, two at most)")
    p.add_argument("--children", type=int, default=6, help="turns: children (kept-alive connections) per row")
    p.add_argument("--turn-requests", type=int, default=500, help="turns: requests per row and round")
    p.add_argument("--state-dir", metavar="DIR", help="keep the instance's state in DIR/cost (default: a new "
                   "temporary directory per run, removed at its end)")
    args = p.parse_args(argv)
    keys = rows(args.only)
    if not keys:
        p.error("--only %r matches none of the rows: %s" % (args.only, " ".join(rows(None))))
    started = {"load_average": _load_average(), "cpu": _cpu_model(), "date": time.strftime("%Y-%m-%d %H:%M")}
    with servers.run_dir(args.state_dir) as run:
        state = os.path.join(run, "cost")
        if args.what == "instructions":
            result = instructions(keys, args.requests, args.port, args.objects, args.functions, state, args.keep)
        elif args.what == "turns":
            result = turns(keys, args.children, args.turn_requests, args.rounds, args.port, state)
        else:
            settings = load.Load(threads=min(2, args.connections), connections=args.connections,
                                 duration=args.duration, warmup=1, rounds=args.rounds)
            result = (cpu if args.what == "cpu" else memory)(keys, settings, args.port, state)
    print("# %s on %s, %d cores; load average %s at the start, %s at the end" % (
        started["date"], started["cpu"], os.cpu_count() or 0, started["load_average"], _load_average()))
    if args.what == "turns":
        print("# %d children per row, %d requests per row and round, rows interleaved request by request; "
              "%d connections closed by Apache (a stall past KeepAliveTimeout) and opened again" % (
                  args.children, args.turn_requests, result[0]["dropped"] if result else 0))
    for entry in result:
        if args.what == "memory":
            print("%-16s %4d children: PSS %.1f MB each (median); %d children, %.1f MB together" % (
                entry["key"], entry["children"], entry["pss_median_kb"] / 1024,
                entry.get("all_children", entry["children"]), entry["pss_total_kb"] / 1024))
        elif args.what == "turns":
            print("%-16s %7.1f us CPU/request  %.2fx %s  (rounds: %s)" % (
                entry["key"], entry["cpu_us"], entry["ratio"], result[0]["key"],
                " ".join("%.0f" % us for us in entry["rounds"])))
        elif args.what == "instructions":
            print(_instructions_line(entry))
            for name, count in list(entry.get("objects", {}).items()) + list(entry.get("functions", {}).items()):
                print("    %-60s %9d" % (name, count))
        else:
            print("%-16s %7.1f us CPU/request  %8.0f req/s  p99 %6.2f ms%s" % (
                entry["key"], entry["cpu_us"], entry["rps"], entry["p99_ms"],
                "  %d errors" % entry["errors"] if entry["errors"] else ""))
    return 0


def _cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
    return m.group(1).strip() if m else "?"


if __name__ == "__main__":
    sys.exit(main())
