# SPDX-License-Identifier: Apache-2.0
"""Command line: run the helper, or ask a running one for its status.

    python3 -m clarens.burnerd --config PATH                    # run (foreground)
    python3 -m clarens.burnerd status --config PATH [--json]    # status, drives, jobs
    python3 -m clarens.burnerd status --socket PATH [--json]

``status`` exits 0 when the helper answered, 2 when it is unavailable, 1 when it refused.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from clarens.burnerd import client as burner_client
from clarens.burnerd import config as burner_config
from clarens.burnerd import daemon


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def print_status(status: dict, drives: list[dict], jobs: list[dict], out=sys.stdout) -> None:
    """The human-readable report of ``status``."""
    print("clarens-burnerd %s, pid %d, up %.0f s since %s" % (
        status["version"], status["pid"], status["uptime"], _when(status["started"])), file=out)
    print("drives busy: %d, jobs queued: %d, jobs by state: %s" % (
        status["drives_busy"], status["queued"],
        ", ".join("%s %d" % kv for kv in status["jobs"].items() if kv[1]) or "none"), file=out)
    print("\nDRIVE        KIND    BUSY  QUEUED  CAPACITY(MB)  MEDIUM  DEV", file=out)
    for d in drives:
        medium = " ".join("%s=%s" % kv for kv in d["medium"].items())
        print("%-12s %-7s %-5s %6d  %12d  %s  %s" % (
            d["name"], d["kind"], "yes" if d["busy"] else "no", d["queued"], d["capacity"] // 10**6, medium,
            d["dev"]), file=out)
    print("\n  ID  STATE        PROGRESS  DRIVE        SUBMITTED            IMAGE / IDENTITY / ERROR", file=out)
    for j in jobs:
        print("%4d  %-11s  %7.1f%%  %-12s %s  %s / %s%s" % (
            j["id"], j["state"], j["progress"]["percent"], j["drive"], _when(j["submitted"]), j["image"],
            j["identity"], " / " + j["error"] if j["error"] else ""), file=out)


def main(argv: list[str] | None = None, prog: str = "python3 -m clarens.burnerd",
         default_config: str | None = None) -> int:
    """The command line; ``prog`` is the name it goes by, ``default_config`` the configuration used
    when neither --config nor --socket is given (``clarens-burnerd``: /etc/clarens/burnerd.conf)."""
    parser = argparse.ArgumentParser(prog=prog,
                                     description="Clarens burner helper: burns ISO images for the web tier.")
    parser.add_argument("command", nargs="?", choices=("run", "status"), default="run",
                        help="run the helper in the foreground (default), or print a running helper's status")
    parser.add_argument("--config", help="the helper's configuration file")
    parser.add_argument("--socket", help="status: the helper's socket (instead of --config)")
    parser.add_argument("--json", action="store_true", help="status: print JSON")
    args = parser.parse_args(argv)
    if not args.config and not args.socket:
        args.config = default_config
    if args.command == "run":
        if not args.config:
            parser.error("run needs --config")
        return daemon.run(args.config)
    if bool(args.config) == bool(args.socket):
        parser.error("status needs --config or --socket")
    try:
        path = args.socket or burner_config.load(args.config).socket
    except burner_config.ConfigError as e:
        print("clarens-burnerd: %s" % e, file=sys.stderr)
        return 2
    try:
        with burner_client.BurnerClient(path) as client:
            status, drives, jobs = client.status(), client.drives(), client.jobs()
    except burner_client.HelperUnavailable as e:
        print(e, file=sys.stderr)
        return 2
    except burner_client.BurnerError as e:
        print("burner helper refused: %s" % e, file=sys.stderr)
        return 1
    if args.json:
        json.dump({"status": status, "drives": drives, "jobs": jobs}, sys.stdout, indent=2)
        print()
    else:
        print_status(status, drives, jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
