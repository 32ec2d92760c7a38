# SPDX-License-Identifier: Apache-2.0
"""The machine and software a run was measured on, recorded beside the results."""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
import xmlrpc.client
from typing import Any

from bench import load
from clarens.dev.instance import APACHE, ROOT

MPM_DIRECTIVES = ("StartServers", "MinSpareServers", "MaxSpareServers", "ServerLimit", "MaxRequestWorkers",
                  "ThreadsPerChild", "MaxConnectionsPerChild", "KeepAlive", "MaxKeepAliveRequests",
                  "KeepAliveTimeout")


def mpm_settings(conf: str) -> dict[str, str]:
    """The MPM and its settings, parsed from a rendered Apache configuration."""
    mpm = re.search(r"^\s*LoadModule\s+mpm_(\w+)_module", conf, re.M)
    out = {"MPM": mpm.group(1) if mpm else "?"}
    for name in MPM_DIRECTIVES:
        m = re.search(r"^\s*%s\s+(\S+)" % name, conf, re.M)
        if m:
            out[name] = m.group(1)
    return out


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    except OSError:
        return "?"
    return ((out.stdout or out.stderr).strip().splitlines() or ["?"])[0]


def _cpuinfo_model() -> str:
    with open("/proc/cpuinfo") as f:
        m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
    return m.group(1).strip() if m else platform.machine()


def _memory_gib() -> float:
    with open("/proc/meminfo") as f:
        m = re.search(r"^MemTotal:\s+(\d+)", f.read(), re.M)
    assert m is not None     # Linux always reports MemTotal
    return round(int(m.group(1)) / 1048576, 1)


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            m = re.search(r'^PRETTY_NAME="?([^"\n]*)', f.read(), re.M)
    except OSError:
        return "?"
    return m.group(1) if m else "?"


def describe(conf_path: str, url: str) -> dict:
    """Facts about this machine, the Apache configuration at ``conf_path`` and the host at ``url``."""
    with open(conf_path) as f:
        conf = f.read()
    # Any: the result is whatever the server sent (typeshed's union of every marshallable type can't be indexed)
    proxy: Any = xmlrpc.client.ServerProxy(url)
    info = proxy.system.serverInfo()
    dirty = _first_line(["git", "status", "--porcelain", "--untracked-files=no"]) not in ("", "?")
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "cpu": _cpuinfo_model(),
        "memory_gib": _memory_gib(),
        "os": _os_name(),
        "kernel": platform.release(),
        "apache": _first_line([APACHE, "-v"]).partition("Apache/")[2].strip(),
        "mpm": mpm_settings(conf),
        "python": info["python_version"],
        "mod_python": info["mod_python_version"],
        "clarens": "%s (%s%s)" % (info["framework_version"], _first_line(["git", "rev-parse", "--short", "HEAD"]),
                                  ", uncommitted changes" if dirty else ""),
        "wrk": load.version(),
    }
