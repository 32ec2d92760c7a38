# SPDX-License-Identifier: Apache-2.0
"""Load generation with wrk: build the request script, run wrk, parse what it prints."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Callable

WRK = "wrk"
INSTALL_HINT = "apt-get install wrk"


@dataclass(frozen=True)
class Load:
    """The load every row is measured with."""
    threads: int = 2
    connections: int = 16
    duration: int = 10      # seconds measured per round
    warmup: int = 2         # seconds run and discarded before each measurement
    rounds: int = 5
    timeout: int = 2        # seconds after which wrk counts a request as timed out (its own default)


@dataclass(frozen=True)
class Result:
    """One wrk run."""
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int             # non-2xx/3xx responses plus socket errors


def available() -> bool:
    return shutil.which(WRK) is not None


def version() -> str:
    out = subprocess.run([WRK, "-v"], capture_output=True, text=True)
    return (out.stdout or out.stderr).splitlines()[0].strip()


def _lua_string(data: bytes) -> str:
    """``data`` as a double-quoted Lua string literal (decimal escapes for anything not plain ASCII)."""
    return '"%s"' % "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else "\\%03d" % b for b in data)


def write_script(directory: str, name: str, method: str, body: bytes | None, content_type: str | None,
                 headers: dict[str, str] | None = None) -> str:
    """Write the wrk Lua script that sends this request (with ``headers`` besides); returns its path."""
    lines = ['wrk.method = "%s"' % method]
    if body is not None:
        lines.append("wrk.body = %s" % _lua_string(body))
    for key, value in dict({"Content-Type": content_type} if content_type else {}, **(headers or {})).items():
        lines.append("wrk.headers[%s] = %s" % (_lua_string(key.encode()), _lua_string(value.encode())))
    path = os.path.join(directory, "%s.lua" % name)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def run(url: str, script: str | None, seconds: int, load: Load) -> Result:
    """Run wrk against ``url`` for ``seconds`` and return what it measured."""
    return start(url, script, seconds, load)()


def start(url: str, script: str | None, seconds: int, load: Load) -> Callable[[], Result]:
    """Start wrk against ``url`` for ``seconds`` in the background; a function that waits for it to end
    and returns what it measured."""
    argv = [WRK, "-t%d" % load.threads, "-c%d" % load.connections, "-d%ds" % seconds, "--latency",
            "--timeout", "%ds" % load.timeout]
    if script:
        argv += ["-s", script]
    proc = subprocess.Popen(argv + [url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def result() -> Result:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError("wrk failed (%d): %s" % (proc.returncode, err.strip() or out.strip()))
        return parse(out)
    return result


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError("unexpected wrk latency %r" % text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse(output: str) -> Result:
    """Parse the report of ``wrk --latency``."""
    def field(pattern: str, default: str | None = None) -> str:
        m = re.search(pattern, output, re.M)
        if m:
            return m.group(1)
        if default is None:
            raise ValueError("wrk output lacks %r:\n%s" % (pattern, output))
        return default

    socket_errors = field(r"^\s*Socket errors: (.*)$", "")
    errors = int(field(r"^\s*Non-2xx or 3xx responses: (\d+)", "0")) + sum(
        int(n) for n in re.findall(r"\d+", socket_errors))
    return Result(rps=float(field(r"^Requests/sec:\s+([0-9.]+)")),
                  p50_ms=_ms(field(r"^\s+50%\s+(\S+)")),
                  p99_ms=_ms(field(r"^\s+99%\s+(\S+)")),
                  requests=int(field(r"^\s*(\d+) requests in")),
                  errors=errors)
