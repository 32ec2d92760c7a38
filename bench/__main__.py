# SPDX-License-Identifier: Apache-2.0
"""``/usr/bin/python3 -m bench``: measure Clarens against references served by the same Apache
and against the standard library's threaded XML-RPC server, then print and save one table.

Every row gets the same wrk load; rounds alternate between the rows (round-robin)
and the table shows medians.  Results go to ``bench-results/latest.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import traceback

from bench import crowds, front, load, machine, probes, report, servers, signin, targets
from clarens.dev.instance import ROOT, InstanceError

GROUP_ORDER = (targets.REFERENCE, targets.PRODUCT, targets.ALTERNATIVE)
# front: through HAProxy; signin: sessions and passwords; crowds: hostile crowds and refused bursts
ALL_PROBES = probes.PROBES + front.PROBES + signin.PROBES + crowds.PROBES


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 -m bench", description=__doc__.splitlines()[0].strip("`"))
    p.add_argument("--quick", action="store_true", help="2 s rounds after 1 s warm-up (development only)")
    p.add_argument("--duration", type=int, help="seconds measured per row and round (default 10; --quick 2)")
    p.add_argument("--warmup", type=int,
                   help="seconds of discarded load before each measurement (default 2; --quick 1)")
    p.add_argument("--rounds", type=int, default=5, help="rounds per row, alternated between rows (default 5)")
    p.add_argument("--only", metavar="REGEX", help="measure only rows whose key matches (keys: %s)"
                   % ", ".join([t.key for t in targets.ROWS] + [f.__name__ for f in ALL_PROBES]))
    p.add_argument("--port", type=int, default=18180,
                   help="first of the ports used: PORT to PORT+4 for the rows, PORT+6 up for the probes")
    p.add_argument("--out", default=os.path.join(ROOT, "bench-results"), help="directory for latest.json/.md")
    p.add_argument("--state-dir", metavar="DIR", help="keep the instances' state in DIR, one directory each (default: "
                   "a new temporary directory per run, removed at its end)")
    args = p.parse_args(argv)
    args.duration = args.duration or (2 if args.quick else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    return args


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def measure(chosen: list[targets.Target], settings: load.Load, port: int, state: str) -> tuple[dict, dict[str, list]]:
    """Serve and measure the wrk rows; returns (machine facts, results per row key).

    Ports: the product as shipped on PORT (HTTPS PORT+1), the same with access
    control off on PORT+2 (PORT+3), the stdlib server on PORT+4.  State: below ``state``.
    """
    instances = {targets.APACHE: servers.apache(os.path.join(state, "apache"), port)}
    if any(t.server == targets.APACHE_OPEN for t in chosen):
        instances[targets.APACHE_OPEN] = servers.apache(os.path.join(state, "apache-open"), port + 2,
                                                        access_control=False)
    ports = {targets.APACHE: port, targets.APACHE_OPEN: port + 2, targets.STDLIB: port + 4}
    stdlib = None
    results: dict[str, list[load.Result]] = {t.key: [] for t in chosen}
    try:
        for inst in instances.values():
            inst.start()
        if any(t.server == targets.STDLIB for t in chosen):
            stdlib = servers.start_stdlib(ports[targets.STDLIB])
        for t in chosen:
            targets.check(t, "127.0.0.1", ports[t.server])
        facts = machine.describe(instances[targets.APACHE].conf_path, instances[targets.APACHE].url)
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            scripts = {t.key: load.write_script(tmp, t.key, t.method, t.body, t.content_type) for t in chosen}
            for server, inst in instances.items():
                first = next((t for t in chosen if t.server == server), None)
                if first is not None:
                    count = servers.settle(inst, "http://127.0.0.1:%d%s" % (ports[server], first.path),
                                           scripts[first.key], settings)
                    _progress("Apache (%s) settled at %d processes" % (server, count))
            for n in range(settings.rounds):
                for t in chosen:
                    url = "http://127.0.0.1:%d%s" % (ports[t.server], t.path)
                    if settings.warmup:
                        load.run(url, scripts[t.key], settings.warmup, settings)
                    r = load.run(url, scripts[t.key], settings.duration, settings)
                    results[t.key].append(r)
                    for inst in instances.values():
                        servers.truncate_access_log(inst)
                    _progress("round %d/%d  %-16s %9.0f req/s  p50 %6.2f ms  p99 %6.2f ms%s" % (
                        n + 1, settings.rounds, t.key, r.rps, r.p50_ms, r.p99_ms,
                        "  %d errors" % r.errors if r.errors else ""))
    finally:
        if stdlib is not None:
            servers.stop_process(stdlib)
        for inst in instances.values():
            inst.stop()
    return facts, results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not load.available():
        print("wrk is not installed: %s" % load.INSTALL_HINT, file=sys.stderr)
        return 2
    settings = load.Load(duration=args.duration, warmup=args.warmup, rounds=args.rounds)
    only = re.compile(args.only) if args.only else None
    chosen = [t for t in targets.ROWS if not only or only.search(t.key)]
    chosen_probes = [p for p in ALL_PROBES if not only or only.search(p.__name__)]
    if not chosen and not chosen_probes:   # nothing to measure: keep the last results
        print("error: --only %r matches no row or probe" % args.only, file=sys.stderr)
        return 2
    with servers.run_dir(args.state_dir) as state:
        try:
            facts, results = measure(chosen, settings, args.port, state)
        except (InstanceError, RuntimeError, AssertionError) as e:
            print("error: %s" % e, file=sys.stderr)
            return 1
        rows = [report.row(t, results[t.key]) for t in chosen]
        failed = []
        for i, probe in enumerate(chosen_probes):
            _progress("probe %s" % probe.__name__)
            env = probes.ProbeEnv(args.port + 6 + 2 * i, os.path.join(state, probe.__name__), settings)
            try:
                rows.append(report.probe_row(probe(env)))
            except Exception as e:   # the rows measured so far are still reported
                traceback.print_exc()
                failed.append("probe %s failed: %s: %s" % (probe.__name__, type(e).__name__, e))
    rows.sort(key=lambda r: GROUP_ORDER.index(r["group"]))
    result = report.build(facts, settings, rows)
    print(report.text(result), end="")
    print("\nwritten: %s" % " ".join(report.write(result, args.out)))
    for failure in failed:
        print("error: %s" % failure, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
