# SPDX-License-Identifier: Apache-2.0
"""The soak's request mix: one wrk run whose connections interleave every kind of call.

One wrk (not one per kind) so that every keep-alive connection, and so every
Apache child, alternates between XML-RPC and JSON-RPC, anonymous and Basic-
authenticated callers, cheap calls and multicalls, allowed and refused ones, as
real clients make it.  wrk does not tell a response which request it answers, so
each kind's answer identifies it: kinds with a fixed answer are recognised byte
for byte (the answer taken from the server once, and checked, before the load),
the others are JSON-RPC calls whose ``id`` names the kind.  The Lua script counts
sent, correct and wrong answers per kind and prints them after wrk's report.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import subprocess
import xmlrpc.client
from dataclasses import dataclass
from typing import Any

from bench import load

PATH = "/clarens/"
ECHO_XML, ECHO_JSON, ECHO_NAMED = "soak xml", "soak json", "soak named"
MULTICALL_ECHOES = 10
STOOGES = {"moe": 1, "larry": 2, "curly": 3}
ACCESS_DENIED = -32001


@dataclass(frozen=True)
class Kind:
    """One kind of call in the mix."""
    name: str                  # also the JSON-RPC id of JSON-RPC kinds
    weight: int                # its slots in each thread's rotation
    content_type: str
    body: bytes
    user: str | None           # sent with Basic authentication as this demo user
    expect: Any                # the decoded result, or None: any result will do (it changes)
    fault: int | None = None   # the fault it must get instead (an expected fault)

    @property
    def fixed(self) -> bool:
        """Whether its answer is the same every time, and so compared byte for byte."""
        return self.expect is not None or self.fault is not None


def _xmlrpc(name: str, weight: int, method: str, params: list, expect: Any) -> Kind:
    body = xmlrpc.client.dumps(tuple(params), method, allow_none=True).encode()
    return Kind(name, weight, "text/xml", body, None, expect)


def _jsonrpc(name: str, weight: int, method: str, params: list | dict, expect: Any = None,
             user: str | None = None, fault: int | None = None) -> Kind:
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": name}).encode()
    return Kind(name, weight, "application/json", body, user, expect, fault)


def kinds(job_id: int) -> list[Kind]:
    """The mix, 64 calls per rotation: echoes over both protocols, multicalls, calls by name, a call
    that must be refused, and the demo user polling the burner (``job_id`` is one of its jobs).

    Few calls carry a password: Apache checks it against the bcrypt hash on every
    request (about 45 ms of CPU at the demo's cost 10), which would otherwise be
    most of what the soak measures."""
    multicall = [{"methodName": "echo.echo", "params": [ECHO_XML]}] * MULTICALL_ECHOES
    return [
        _xmlrpc("xmlrpc_echo", 22, "echo.echo", [ECHO_XML], ECHO_XML),
        _jsonrpc("jsonrpc_echo", 18, "echo.echo", [ECHO_JSON], ECHO_JSON),
        _xmlrpc("multicall", 6, "system.multicall", [multicall], [[ECHO_XML]] * MULTICALL_ECHOES),
        _jsonrpc("jsonrpc_named", 10, "echo.echo", {"value": ECHO_NAMED}, ECHO_NAMED),
        _jsonrpc("denied", 5, "burner.jobs", [], fault=ACCESS_DENIED),   # anonymous may not burn
        _jsonrpc("validator_named", 1, "validator1.easyStructTest", {"struct": STOOGES}, sum(STOOGES.values()),
                 user="demo"),
        _jsonrpc("burner_status", 1, "burner.status", [job_id], user="demo"),
        _jsonrpc("burner_jobs", 1, "burner.jobs", [], user="demo"),
    ]


def auth_header(user: str, password: str) -> str:
    """The value of a Basic Authorization header."""
    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


def _headers(kind: Kind, passwords: dict[str, str]) -> dict[str, str]:
    headers = {"Content-Type": kind.content_type}
    if kind.user:
        headers["Authorization"] = auth_header(kind.user, passwords[kind.user])
    return headers


def _decode(kind: Kind, body: bytes) -> tuple[Any, int | None]:
    """(result, fault code or None) of an answer."""
    if kind.content_type == "text/xml":
        try:
            return xmlrpc.client.loads(body)[0][0], None  # type: ignore[arg-type]  # expat takes the bytes
        except xmlrpc.client.Fault as fault:
            return None, fault.faultCode
    reply = json.loads(body)
    if reply.get("id") != kind.name:
        raise AssertionError("%s: answered with id %r" % (kind.name, reply.get("id")))
    return (None, reply["error"]["code"]) if "error" in reply else (reply["result"], None)


def answer(kind: Kind, port: int, passwords: dict[str, str]) -> bytes:
    """Send ``kind``'s request once and check its answer (AssertionError if wrong); the answer's bytes."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", PATH, body=kind.body, headers=_headers(kind, passwords))
        response = conn.getresponse()
        status, body = response.status, response.read()
    finally:
        conn.close()
    if status != 200:
        raise AssertionError("%s: HTTP %d: %r" % (kind.name, status, body[:300]))
    result, fault = _decode(kind, body)
    if fault != kind.fault or (kind.expect is not None and result != kind.expect):
        raise AssertionError("%s: expected %s, got %r" % (
            kind.name, "fault %s" % kind.fault if kind.fault else repr(kind.expect), body[:300]))
    return body


_LUA = r"""
local rotation = {%(rotation)s}
local threads = {}

function setup(thread)
    table.insert(threads, thread)
    thread:set("turn", #threads * 7)      -- threads start at different points of the rotation
end

function init(args)
    requests, answers, ids, dynamic, sent, ok, bad = {}, {}, {}, {}, {}, {}, {}
    for i, k in ipairs(kinds) do
        requests[i] = wrk.format("POST", "%(path)s", k.headers, k.body)
        if k.answer then answers[k.answer] = k.name else dynamic[k.name] = true end
        if k.id then ids[k.id] = k.name end
        sent[k.name], ok[k.name], bad[k.name] = 0, 0, 0
    end
    unattributed, samples = 0, {}
end

function request()
    turn = turn %% #rotation + 1
    local k = kinds[rotation[turn]]
    sent[k.name] = sent[k.name] + 1
    return requests[rotation[turn]]
end

local function keep(status, body)
    if #samples < 5 then table.insert(samples, status .. " " .. string.sub(body, 1, 400)) end
end

function response(status, headers, body)
    local name = answers[body]
    if name and status == 200 then ok[name] = ok[name] + 1 return end
    local id = string.match(body, '"id": ?"([%%w_]+)"}$')
    name = id and ids[id]
    if not name then
        unattributed = unattributed + 1
        keep(status, body)
    elseif status == 200 and dynamic[name] and string.find(body, '^{"jsonrpc": ?"2%%.0", ?"result": ?') then
        ok[name] = ok[name] + 1
    else
        bad[name] = bad[name] + 1
        keep(status, body)
    end
end

function done(summary, latency, requests)
    local total, lost, kept = {}, 0, {}
    for _, t in ipairs(threads) do
        for _, field in ipairs({"sent", "ok", "bad"}) do
            for name, n in pairs(t:get(field)) do
                total[name] = total[name] or {sent = 0, ok = 0, bad = 0}
                total[name][field] = total[name][field] + n
            end
        end
        lost = lost + t:get("unattributed")
        for _, s in ipairs(t:get("samples")) do table.insert(kept, s) end
    end
    for name, c in pairs(total) do
        io.write(string.format("soak-kind %%s %%d %%d %%d\n", name, c.sent, c.ok, c.bad))
    end
    io.write(string.format("soak-unattributed %%d\n", lost))
    for _, s in ipairs(kept) do io.write("soak-sample " .. string.gsub(s, "[\r\n]", " ") .. "\n") end
end
"""


def _lua_table(values: dict[str, str | None]) -> str:
    return "{%s}" % ", ".join("%s = %s" % (k, v) for k, v in values.items() if v is not None)


def write_script(directory: str, mix: list[Kind], answers: dict[str, bytes], passwords: dict[str, str]) -> str:
    """Write the wrk Lua script sending ``mix`` (``answers``: the fixed answers by kind); its path."""
    entries = []
    for kind in mix:
        headers = ", ".join('["%s"] = %s' % (k, load._lua_string(v.encode()))
                            for k, v in _headers(kind, passwords).items())
        entries.append(_lua_table({
            "name": '"%s"' % kind.name, "headers": "{%s}" % headers, "body": load._lua_string(kind.body),
            "answer": load._lua_string(answers[kind.name]) if kind.fixed else None,
            "id": '"%s"' % kind.name if kind.content_type == "application/json" else None}))
    rotation = [i + 1 for i, kind in enumerate(mix) for _ in range(kind.weight)]
    interleaved = [rotation[j] for start in range(8) for j in range(start, len(rotation), 8)]
    path = os.path.join(directory, "soak.lua")
    with open(path, "w") as f:
        f.write("-- written by bench/soak_mix.py\nkinds = {\n    %s,\n}\n" % ",\n    ".join(entries))
        f.write(_LUA % {"rotation": ", ".join(map(str, interleaved)), "path": PATH})
    return path


@dataclass(frozen=True)
class Counts:
    """What wrk and the script counted."""
    wrk: load.Result
    non_2xx: int
    socket_errors: dict[str, int]
    kinds: dict[str, dict[str, int]]     # name -> {sent, ok, bad}
    unattributed: int                    # wrong answers no kind could be told from
    samples: list[str]                   # the first wrong answers, for the report


def run(url: str, script: str, seconds: int, threads: int = 2, connections: int = 16) -> Counts:
    """Run the mix against ``url`` for ``seconds``; what was counted."""
    argv = [load.WRK, "-t%d" % threads, "-c%d" % connections, "-d%ds" % seconds, "--latency",
            "--timeout", "10s", "-s", script, url]
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError("wrk failed (%d): %s" % (out.returncode, out.stderr.strip() or out.stdout.strip()))
    return parse(out.stdout)


def parse(output: str) -> Counts:
    """Parse wrk's report and the lines the script adds to it."""
    socket = re.search(r"^\s*Socket errors: (.*)$", output, re.M)
    non_2xx = re.search(r"^\s*Non-2xx or 3xx responses: (\d+)", output, re.M)
    kinds = {m[0]: {"sent": int(m[1]), "ok": int(m[2]), "bad": int(m[3])}
             for m in re.findall(r"^soak-kind (\S+) (\d+) (\d+) (\d+)$", output, re.M)}
    lost = re.search(r"^soak-unattributed (\d+)$", output, re.M)
    if not kinds or lost is None:
        raise ValueError("wrk's output lacks the soak script's counts:\n%s" % output)
    return Counts(load.parse(output), int(non_2xx.group(1)) if non_2xx else 0,
                  {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", socket.group(1))} if socket else {},
                  kinds, int(lost.group(1)), re.findall(r"^soak-sample (.*)$", output, re.M))
