"""Several Clarens hosts behind HAProxy: the digests a front end expects, its configuration, a check.

Why: every host of a cluster must decide alike and serve the same code.  The ACL
files and the modules are deployed to every host as ordinary configuration
(conf/cluster/); each host reports digests of the policy it loaded and of its
module set (``GET /clarens/health``, ``system.serverInfo``); HAProxy's health check
sends the digests computed here from the deployed files, and a host that differs
answers 503 and is taken out.  Nothing here imports a service module.

    python3 -m clarens.cluster digest [--config FILE] [--acl-dir DIR] [--modules-path PATH] [--env]
        the digests of the ACL files and modules a configuration names, or of a staged
        copy (--env: as CLARENS_POLICY_DIGEST=... lines for /etc/default/haproxy)
    python3 -m clarens.cluster haproxy --server NAME=ADDRESS:PORT ... [--bind ADDR:PORT]
            [--crt PEM] [--ca CA] [--http-bind ADDR:PORT] [--source ADDR] [--stats-socket PATH]
        HAProxy's configuration, rendered from conf/haproxy/clarens.cfg.in
    python3 -m clarens.cluster check URL ...
        each host's health and digests, side by side; exit status 1 unless all are
        healthy and alike (for monitoring)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Sequence, TextIO

from clarens import apacheconf, loader
from clarens import config as config_mod
from clarens.acl.files import load_dir
from clarens.acl.model import AclError

HAPROXY_TEMPLATE = apacheconf.shipped("haproxy", "clarens.cfg.in")
# The shipped example (conf/haproxy/clarens.cfg is this rendering; a test keeps them equal).
EXAMPLE_SERVERS = (("a", "10.0.0.11:80"), ("b", "10.0.0.12:80"), ("c", "10.0.0.13:80"))
PROCESS = "    chroot /var/lib/haproxy\n    user haproxy\n    group haproxy\n    daemon"
HEALTH_PATH = "health"


def digests(cfg: config_mod.ServerConfig) -> dict[str, str]:
    """``policy_digest`` (of the ACL files in ``acl_dir``; "" with access control off) and
    ``modules_digest`` (of the modules on ``modules_path``, the first of a name winning), as a
    host booted with ``cfg`` reports them.  AclError if the files do not load."""
    found: dict[str, str] = {}
    for name, directory in loader.discover(cfg.modules_path):
        found.setdefault(name, directory)
    policy = load_dir(cfg.acl_dir).digest() if cfg.access_control else ""
    return {"policy_digest": policy, "modules_digest": loader.modules_digest(found.items())}


def haproxy_config(servers: Sequence[tuple[str, str]], bind: str = ":443", crt: str = "/etc/haproxy/clarens.pem",
                   ca: str = "/etc/clarens/ca.crt", http_bind: str | None = None, source: str | None = None,
                   stats_socket: str = "/run/haproxy/admin.sock", process: str = PROCESS, maxconn: int = 20000,
                   server_maxconn: int = 64, log: str = "/dev/log local0", template: str = HAPROXY_TEMPLATE) -> str:
    """HAProxy's configuration for Clarens hosts ``servers`` ((name, address:port) pairs).

    ``bind``: where clients connect over TLS, with the front end's certificate and key
    ``crt`` (one PEM) and client certificates verified against ``ca``; ``http_bind``: a
    plain-HTTP listener too (a LAN without TLS; no certificate identities there);
    ``source``: the address HAProxy connects to the hosts from (what their
    ``trusted_proxies`` must name); ``process``: the global lines that make it a daemon
    of its own user (empty to run it in the foreground, as the tests do); ``log``: where it logs
    (``stdout format raw local0`` in the foreground).
    """
    binds = ["    bind %s ssl crt %s ca-file %s verify optional alpn h2,http/1.1" % (bind, crt, ca)]
    if http_bind:
        binds.append("    bind %s" % http_bind)
    with open(template) as f:
        text = f.read()
    return apacheconf.render_template(text, {
        "LOG": log, "PROCESS": process, "STATS_SOCKET": stats_socket, "MAXCONN": str(maxconn),
        "BINDS": "\n".join(binds),
        "SERVER_MAXCONN": str(server_maxconn), "SOURCE": " source %s" % source if source else "",
        "SERVERS": "\n".join("    server %s %s" % (name, address) for name, address in servers)})


def health(url: str, timeout: float = 5.0, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """``GET URL/health`` of one host (URL: its ``.../clarens/``): (HTTP status, the answer), or
    (0, {"error": why}) if it did not answer."""
    request = urllib.request.Request(url.rstrip("/") + "/" + HEALTH_PATH, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read())
        except ValueError:
            return e.code, {"error": "HTTP %d" % e.code}
    except (OSError, ValueError) as e:
        return 0, {"error": str(e)}


def check(urls: Sequence[str], out: TextIO = sys.stdout) -> int:
    """Print each host's health and digests; 0 if every host is healthy and all report the same digests."""
    seen = []
    for url in urls:
        status, answer = health(url)
        seen.append((status, answer))
        out.write("%-40s %s  policy %s  modules %s%s\n" % (
            url, answer.get("status", "unreachable") if status else "unreachable",
            (answer.get("policy_digest") or "-")[:16], (answer.get("modules_digest") or "-")[:16],
            "  " + "; ".join(answer.get("problems") or [answer.get("error", "")]) if status != 200 else ""))
    alike = len({(a.get("policy_digest"), a.get("modules_digest")) for _, a in seen}) == 1
    if not alike:
        out.write("the hosts differ: their policies or module sets are not the same\n")
    return 0 if alike and all(status == 200 for status, _ in seen) else 1


def _server(text: str) -> tuple[str, str]:
    name, sep, address = text.partition("=")
    if not sep or not name or ":" not in address:
        raise argparse.ArgumentTypeError("expected NAME=ADDRESS:PORT, not %r" % text)
    return name, address


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module's docstring); its exit status."""
    parser = argparse.ArgumentParser(prog="python3 -m clarens.cluster", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("digest", help="the digests of the deployed ACL files and modules")
    d.add_argument("--config", default=config_mod.DEFAULT_CONFIG)
    d.add_argument("--acl-dir", help="these ACL files instead of the configuration's (e.g. a staged copy)")
    d.add_argument("--modules-path", help="these module directories instead of the configuration's")
    d.add_argument("--env", action="store_true", help="as environment lines for HAProxy")
    h = sub.add_parser("haproxy", help="print HAProxy's configuration")
    h.add_argument("--server", action="append", type=_server, required=True, metavar="NAME=ADDRESS:PORT")
    h.add_argument("--bind", default=":443")
    h.add_argument("--crt", default="/etc/haproxy/clarens.pem")
    h.add_argument("--ca", default="/etc/clarens/ca.crt")
    h.add_argument("--http-bind")
    h.add_argument("--source")
    h.add_argument("--stats-socket", default="/run/haproxy/admin.sock")
    c = sub.add_parser("check", help="compare the hosts' health and digests")
    c.add_argument("urls", nargs="+", metavar="URL")
    args = parser.parse_args(argv)
    try:
        if args.command == "digest":
            options = {"clarens.server.acl_dir": os.path.abspath(args.acl_dir)} if args.acl_dir else {}
            if args.modules_path:
                options["clarens.server.modules_path"] = ":".join(os.path.abspath(p)
                                                                  for p in args.modules_path.split(":"))
            found = digests(config_mod.load(args.config, options))
            if args.env:
                print("CLARENS_POLICY_DIGEST=%s\nCLARENS_MODULES_DIGEST=%s" % (found["policy_digest"],
                                                                              found["modules_digest"]))
            else:
                print(json.dumps(found, indent=2))
        elif args.command == "haproxy":
            print(haproxy_config(args.server, args.bind, args.crt, args.ca, args.http_bind, args.source,
                                 args.stats_socket), end="")
        else:
            return check(args.urls)
    except (config_mod.ConfigError, AclError, OSError) as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
