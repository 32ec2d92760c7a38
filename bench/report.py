# SPDX-License-Identifier: Apache-2.0
"""Aggregate the rounds, check the targets, and render the table (terminal, markdown, JSON)."""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import asdict
from typing import Any

from bench import load, signin, targets
from bench.probes import ProbeRow

# The references every row's req/s is divided by: (row key, column heading).
REFERENCES = (("static", "x static"), ("fixed", "x fixed"), ("read_fixed", "x read+fixed"),
              ("parse", "x parse+marshal"))
P99_LIMIT_MS = 5.0
IDLE_MIN_RPS_RATIO, IDLE_MAX_P99_RATIO = 0.9, 1.5
P99_ROWS = ("xmlrpc_echo", "xmlrpc_echo_acl", "jsonrpc_echo")   # single small calls: the latency target


def row(target: targets.Target, rounds: list[load.Result]) -> dict[str, Any]:
    """A measured row: medians over its rounds, and every round."""
    return {
        "key": target.key, "label": target.label, "group": target.group,
        "rps": statistics.median(r.rps for r in rounds),
        "p50_ms": statistics.median(r.p50_ms for r in rounds),
        "p99_ms": statistics.median(r.p99_ms for r in rounds),
        "calls_per_request": target.calls, "single": target.single,
        "errors": sum(r.errors for r in rounds),
        "rounds": [asdict(r) for r in rounds],
    }


def probe_row(probe: ProbeRow) -> dict[str, Any]:
    return {"key": probe.key, "label": probe.label, "group": probe.group, "rps": None, "p50_ms": probe.latency_ms,
            "p99_ms": None, "ratio": probe.ratio, "note": probe.note, "detail": probe.detail}


def build(machine: dict, settings: load.Load, rows: list[dict]) -> dict[str, Any]:
    """The complete result: machine, load, rows with their ratios, and the targets."""
    by_key = {r["key"]: r for r in rows}
    for r in rows:
        r["ratios"] = {ref: _rps_ratio(by_key, r["key"], ref) for ref, _ in REFERENCES}
        if r["rps"] is not None:
            notes = ["%s calls/s" % _int(r["rps"] * r["calls_per_request"])] if r["calls_per_request"] > 1 else []
            if r.get("single"):
                r["calls_ratio"] = _calls_ratio(by_key, r["key"], r["single"])
                if r["calls_ratio"] is not None:
                    notes.append("%.2fx %s's req/s" % (r["calls_ratio"], r["single"]))
            if r["errors"]:
                notes.append("%d ERRORS (non-2xx or socket)" % r["errors"])
            r["note"] = "; ".join(notes)
    return {"machine": machine, "load": asdict(settings), "rows": rows, "targets": goals(by_key)}


def _rps_ratio(rows: dict, a: str, b: str) -> float | None:
    """Row ``a``'s req/s over row ``b``'s: the median of the per-round ratios.

    Rounds run round-robin, so round n of ``a`` and of ``b`` ran minutes apart at
    most; pairing them cancels the machine's drift between rounds (on a shared VM
    the larger part of the noise), which a ratio of the two medians would keep.
    """
    if a not in rows or b not in rows or not rows[a]["rps"] or not rows[b]["rps"]:
        return None
    return statistics.median(x["rps"] / y["rps"] for x, y in zip(rows[a]["rounds"], rows[b]["rounds"], strict=True))


def _own_cost_ratio(rows: dict, a: str, b: str, floor: str) -> float | None:
    """How many times less row ``a`` costs than row ``b`` above what row ``floor`` costs.

    Apache and mod_python's dispatch cost every handler the same (the ``floor`` row
    is that cost); a ratio of whole requests divides it out of neither side and can never
    show a handler's own lead: with the floor at 60% of the stdlib reference's request,
    a handler whose own cost were nil would measure 1.67x.  Each round's time per
    request (1/req/s, the rows alternated) less the floor's, summed over the rounds:
    a difference of two noisy figures, so summed rather than a median of ratios.
    """
    if not all(k in rows and rows[k]["rps"] for k in (a, b, floor)):
        return None
    own_a = own_b = 0.0
    for x, y, f in zip(rows[a]["rounds"], rows[b]["rounds"], rows[floor]["rounds"], strict=True):
        own_a += 1 / x["rps"] - 1 / f["rps"]
        own_b += 1 / y["rps"] - 1 / f["rps"]
    return own_b / own_a if own_a > 0 else None


def _calls_ratio(rows: dict, a: str, single: str) -> float | None:
    """The calls/s of row ``a`` (several calls a request) over the req/s of ``single`` (one such call
    a request), paired by round: how much cheaper a call is in a multicall or batch than alone."""
    ratio = _rps_ratio(rows, a, single)
    return None if ratio is None else ratio * rows[a]["calls_per_request"]


def goals(rows: dict[str, dict]) -> list[dict[str, Any]]:
    """The performance targets, each with its measured value and whether it is met (informational)."""
    out = []

    def goal(text: str, value: float | None, met: bool, shown: str) -> None:
        if value is not None:
            out.append({"target": text, "value": value, "met": met, "shown": shown})

    # The product as shipped: access control on.
    lead = _own_cost_ratio(rows, "xmlrpc_echo_acl", "parse", "read_fixed")
    goal("XML-RPC echo (with ACL check): its own cost per request, above a handler that reads the body and "
         "writes a fixed answer, <= 1/1.3 of the stdlib parse+marshal handler's (issue 25)", lead,
         lead is not None and lead >= 1.3, "%.2fx lead" % (lead or 0))
    for a, b, minimum, text in (("xmlrpc_echo_acl", "read_fixed", 0.6,
                                 "XML-RPC echo (with ACL check) >= 0.6x a handler that reads the body and "
                                 "writes a fixed answer"),
                                ("xmlrpc_echo_acl", "stdlib_server", 3.0,
                                 "XML-RPC echo (with ACL check) >= 3x the threaded stdlib server"),
                                ("jsonrpc_echo", "xmlrpc_echo_acl", 1.0,
                                 "JSON-RPC echo no slower than the XML-RPC echo (>= 1.0x)")):
        ratio = _rps_ratio(rows, a, b)
        goal(text, ratio, ratio is not None and ratio >= minimum, "%.2fx" % (ratio or 0))
    measured = [rows[k] for k in P99_ROWS if k in rows]
    if measured:
        worst = max(measured, key=lambda r: r["p99_ms"])
        goal("p99 < %g ms at 16 connections (echo rows)" % P99_LIMIT_MS, worst["p99_ms"],
             worst["p99_ms"] < P99_LIMIT_MS, "worst %.2f ms (%s)" % (worst["p99_ms"], worst["key"]))
    if "burn" in rows:
        burn = rows["burn"]
        goal("burn + verify (1 GiB) within 1.0x of dd copy + sha256sum", burn["ratio"], burn["ratio"] <= 1.0,
             "%.2fx" % burn["ratio"])
    if "upload" in rows:
        up = rows["upload"]
        goal("upload through Apache (1 GiB) >= 0.7x the speed of dd conv=fsync", up["ratio"], up["ratio"] >= 0.7,
             "%.2fx" % up["ratio"])
    if "upload_memory" in rows:
        mem = rows["upload_memory"]
        goal("an upload's memory does not grow with the image: peak RSS for 2 GiB <= 1.1x that for 256 MiB",
             mem["ratio"], mem["ratio"] <= 1.1, "%.2fx (%s)" % (mem["ratio"], mem["note"]))
    if "haproxy_idle" in rows:
        idle = rows["haproxy_idle"]["detail"]
        # What the idle clients cost, against the same load without them in the same run (paired rounds):
        # the p99 of a saturating load on shared cores varies by a quarter from round to round.
        held = idle["still_open"] == idle["idle"] and not idle["errors"]
        goal("%s idle keep-alive clients held by HAProxy cost the 16 calling connections nothing: >= %.1fx the "
             "calls/s and <= %.1fx the p99 of the same load without them, no errors, all still open" % (
                 format(idle["idle"], ","), IDLE_MIN_RPS_RATIO, IDLE_MAX_P99_RATIO), rows["haproxy_idle"]["ratio"],
             held and rows["haproxy_idle"]["ratio"] >= IDLE_MIN_RPS_RATIO and idle["p99_ratio"] <= IDLE_MAX_P99_RATIO,
             "%.2fx the calls/s, %.2fx the p99, %d errors, %s of them still open" % (
                 rows["haproxy_idle"]["ratio"], idle["p99_ratio"], idle["errors"], format(idle["still_open"], ",")))
        goal("p99 < %g ms and no errors for 16 connections calling echo while HAProxy holds %s idle keep-alive "
             "clients" % (P99_LIMIT_MS, format(idle["idle"], ",")), idle["worst_p99_ms"],
             idle["worst_p99_ms"] < P99_LIMIT_MS and not idle["errors"] and idle["still_open"] == idle["idle"],
             "p99 %.2f ms (worst round %.2f), %d errors, %s of them still open" % (
                 idle["p99_ms"], idle["worst_p99_ms"], idle["errors"], format(idle["still_open"], ",")))
    if "session_echo" in rows:
        session = rows["session_echo"]
        goal("echo in a session (Bearer token) >= %.1fx anonymous echo" % signin.MIN_SESSION_RATIO, session["ratio"],
             session["ratio"] >= signin.MIN_SESSION_RATIO, "%.2fx" % session["ratio"])
    if "open_pages" in rows:
        pages = rows["open_pages"]["detail"]
        goal("%d open burner pages polling once a second: the host's CPU < %d %% of %d cores, p99 < %g ms, no errors"
             % (signin.PAGES, 100 * signin.MAX_PAGES_CPU, pages["cores"], signin.MAX_PAGES_P99_MS),
             pages["cpu_share"], pages["cpu_share"] < signin.MAX_PAGES_CPU and pages["p99_ms"] < signin.MAX_PAGES_P99_MS
             and not pages["error_count"], "%.1f %%, p99 %.2f ms, %d errors" % (
                 100 * pages["cpu_share"], pages["p99_ms"], pages["error_count"]))
    if "password_flood" in rows:
        flood = rows["password_flood"]
        goal("a password-guess flood (%d connections, %d s): anonymous echo's median <= %gx its value without it"
             % (signin.FLOOD_CONNECTIONS, signin.FLOOD_SECONDS, signin.MAX_FLOOD_RATIO), flood["ratio"],
             flood["ratio"] <= signin.MAX_FLOOD_RATIO, "%.2fx" % flood["ratio"])
        check = flood["detail"]["check_cpu_share"]
        goal("... and the host spends < %d %% of one core on password checks" % (100 * signin.MAX_CHECK_CPU), check,
             check < signin.MAX_CHECK_CPU, "%.1f %%" % (100 * check))
    if "slow_crowd" in rows:
        slow = rows["slow_crowd"]
        uploads = [r["upload"][0] for r in slow["detail"].values()]
        goal("200 slow clients (9 kB/s bodies, 1 B/s headers; from 1 and 200 addresses): echo p99 < 2 s, "
             "uploads at 1 MB/s complete", slow["p50_ms"], slow["ratio"] < 1.0 and set(uploads) == {201},
             "worst p99 %.2f s; uploads %s" % (slow["p50_ms"] / 1000, uploads))
    if "log_ratio" in rows:
        logs = rows["log_ratio"]
        goal("error-log bytes per request byte < 0.2 for 1,000 refused requests of each kind (1 and 400 addresses)",
             logs["ratio"], logs["ratio"] < 0.2, "worst %.3f" % logs["ratio"])
    if "first_request" in rows:
        first = rows["first_request"]
        served, idle = first["detail"]["served_ratio"], first["detail"]["idle_served_ratio"]
        goal("a call after a start, and after 10 s idle, within 2x the steady state in Apache (%D)",
             max(served, idle), max(served, idle) <= 2.0,
             "%.2fx after a start, %.2fx after idle (%.2fx after a start as the client sees it)" % (
                 served, idle, first["ratio"]))
    return out


# -- rendering ------------------------------------------------------------------

def _int(value: float) -> str:
    return "{:,.0f}".format(value)


def _cells(result: dict) -> list[list[str]]:
    head = ["row", "req/s", "p50 ms", "p99 ms"] + [title for _, title in REFERENCES] + ["notes"]
    body = []
    for r in result["rows"]:
        body.append([r["label"], _int(r["rps"]) if r["rps"] is not None else "-",
                     "%.2f" % r["p50_ms"] if r["p50_ms"] is not None else "-",
                     "%.2f" % r["p99_ms"] if r["p99_ms"] is not None else "-"]
                    + ["%.2fx" % r["ratios"][ref] if r["ratios"][ref] is not None else "-" for ref, _ in REFERENCES]
                    + [r["note"]])
    return [head] + body


def _machine_lines(result: dict) -> list[str]:
    m, ld = result["machine"], result["load"]
    mpm = m["mpm"]
    return [
        "%s; %d cores, %s; %.1f GiB; %s, kernel %s" % (m["date"], m["cores"], m["cpu"], m["memory_gib"], m["os"],
                                                       m["kernel"]),
        "Apache %s, %s MPM (%s); Python %s, mod_python %s; Clarens %s" % (
            m["apache"], mpm["MPM"], ", ".join("%s %s" % kv for kv in mpm.items() if kv[0] != "MPM"),
            m["python"], m["mod_python"], m["clarens"]),
        "%s: -t%d -c%d, keep-alive, %d s per round after %d s warm-up, median of %d rounds (round-robin), "
        "ratios paired by round" % (
            m["wrk"].split(" [")[0], ld["threads"], ld["connections"], ld["duration"], ld["warmup"], ld["rounds"]),
    ]


def _goal_lines(result: dict) -> list[str]:
    return ["%-6s %s: %s" % ("met" if g["met"] else "MISSED", g["target"], g["shown"]) for g in result["targets"]]


def text(result: dict) -> str:
    """The report for a terminal."""
    cells = _cells(result)
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    numeric = range(1, len(widths) - 1)
    lines = []
    for n, r in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if i in numeric else c.ljust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(_machine_lines(result) + [""] + lines + ["", "Targets (informational):"]
                     + ["  " + g for g in _goal_lines(result)]) + "\n"


def markdown(result: dict) -> str:
    """The report as markdown (for the README)."""
    cells = _cells(result)
    rows = ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in cells]
    rows.insert(1, "|" + "|".join(["---"] + ["--:"] * (len(cells[0]) - 2) + ["---"]) + "|")
    return "\n".join(["%s  " % line for line in _machine_lines(result)] + [""] + rows + ["", "Targets:", ""]
                     + ["- %s" % g for g in _goal_lines(result)]) + "\n"


def write(result: dict, directory: str) -> list[str]:
    """Write ``latest.json`` and ``latest.md`` into ``directory``; returns their paths."""
    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(directory, "latest.json"), os.path.join(directory, "latest.md")]
    with open(paths[0], "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    with open(paths[1], "w") as f:
        f.write(markdown(result))
    return paths
