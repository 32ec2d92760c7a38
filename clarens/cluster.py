# SPDX-License-Identifier: Apache-2.0
"""Several Clarens hosts behind HAProxy: the digests a front end expects, its configuration, checks, draining.

Why: every host of a cluster must decide alike, serve the same code and believe the
same front ends.  The ACL files and the modules are deployed to every host as
ordinary configuration (conf/cluster/); each host reports digests of the policy it
loaded, of its module set and of its trust configuration (``trusted_proxies`` and
``cluster``) (``GET /clarens/health``, ``system.serverInfo``); HAProxy's health check
sends the digests computed here from the deployed files, and a host that differs
answers 503 and is taken out.  Nothing here imports a service module.

The cluster file (``conf/cluster/cluster.conf``) names the hosts (``NAME = ADDRESS:PORT``,
where the front ends reach their Apache) and the front ends (``NAME = ADDRESS``, reached
by SSH); the commands that take ``--cluster FILE`` read the hosts from it.

    python3 -m clarens.cluster digest [--config FILE] [--acl-dir DIR] [--modules-path PATH] [--env]
        the digests a host started with a configuration reports, or those of a staged copy
        (--env: as CLARENS_*_DIGEST=... lines for /etc/default/haproxy)
    python3 -m clarens.cluster haproxy (--server NAME=ADDRESS:PORT ... | --cluster FILE) [--bind ADDR:PORT]
            [--crt PEM] [--ca CA] [--http-bind ADDR:PORT] [--source ADDR] [--stats-socket PATH]
            [--maxconn N] [--foreground]
        HAProxy's configuration, rendered from conf/haproxy/clarens.cfg.in
    python3 -m clarens.cluster check [--expect-policy DIGEST] (URL ... | --cluster FILE)
        each host's health and digests, side by side, and whether it believes a forged
        identity header from this machine; exit status 1 unless all are healthy, alike
        and refuse the forgery (for monitoring)
    python3 -m clarens.cluster list --cluster FILE
        the hosts and front ends, one a line: "host NAME ADDRESS PORT URL", "front NAME ADDRESS"
    python3 -m clarens.cluster drain|ready NAME [--stats-socket PATH] [--timeout SECONDS]
        on this front end, take host NAME out of rotation and wait until its requests
        have ended (drain), or put it back (ready)
"""

from __future__ import annotations

import argparse
import configparser
import csv
import io
import json
import os
import resource
import socket
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Sequence, TextIO

from clarens import apacheconf, loader, proxies
from clarens import config as config_mod
from clarens.acl.files import load_dir
from clarens.acl.model import AclError
from clarens.client import TransportError, transports, wire
from clarens.faults import ACCESS_DENIED, Fault
from clarens.web import routes

HAPROXY_TEMPLATE = apacheconf.shipped("haproxy", "clarens.cfg.in")
# The shipped example (conf/haproxy/clarens.cfg is this rendering; a test keeps them equal).
EXAMPLE_SERVERS = (("a", "10.0.0.11:80"), ("b", "10.0.0.12:80"), ("c", "10.0.0.13:80"))
PROCESS = "    chroot /var/lib/haproxy\n    user haproxy\n    group haproxy\n    daemon"
LOG = "/dev/log local0"
HEALTH_PATH = "health"
BACKEND = "clarens"
STATS_SOCKET = "/run/haproxy/admin.sock"
MAXCONN = 20000          # the shipped example's, and the most the default gives where descriptors abound
FD_RESERVE = 200         # descriptors HAProxy needs besides two per connection (listeners, checks, logs)
FORGED_DN = "CN=clarens.cluster check: a forged identity,O=nowhere"


def digests(cfg: config_mod.ServerConfig) -> dict[str, str]:
    """``policy_digest`` (of the ACL files in ``acl_dir``; "" with access control off),
    ``modules_digest`` (of the modules on ``modules_path``, the first of a name winning) and
    ``trust_digest`` (of ``trusted_proxies`` and ``cluster``), as a host booted with ``cfg``
    reports them.  AclError if the files do not load."""
    found: dict[str, str] = {}
    for name, directory in loader.discover(cfg.modules_path):
        found.setdefault(name, directory)
    policy = load_dir(cfg.acl_dir).digest() if cfg.access_control else ""
    return {"policy_digest": policy, "modules_digest": loader.modules_digest(found.items()),
            "trust_digest": proxies.trust_digest(cfg.trusted_proxies, cfg.cluster)}


def environment(found: dict[str, str]) -> dict[str, str]:
    """The digests as HAProxy's environment (``CLARENS_POLICY_DIGEST``...), which its health check sends."""
    return {"CLARENS_%s" % key.upper(): value for key, value in found.items()}


def default_maxconn(servers: int, limit: int | None = None) -> int:
    """The most connections HAProxy can hold within ``limit`` descriptors (by default this process's
    hard limit, which HAProxy started from here inherits): two each, less a reserve; at most
    :data:`MAXCONN`.  HAProxy refuses to start with a ``maxconn`` its limit cannot hold."""
    if limit is None:
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if limit == resource.RLIM_INFINITY:
        return MAXCONN
    return max(1, min(MAXCONN, (limit - FD_RESERVE - 2 * servers) // 2))


def haproxy_config(servers: Sequence[tuple[str, str]], bind: str = ":443", crt: str = "/etc/haproxy/clarens.pem",
                   ca: str = "/etc/clarens/ca.crt", http_bind: str | None = None, source: str | None = None,
                   stats_socket: str = STATS_SOCKET, process: str = PROCESS, maxconn: int = MAXCONN,
                   server_maxconn: int = 64, log: str = LOG, template: str = HAPROXY_TEMPLATE) -> str:
    """HAProxy's configuration for Clarens hosts ``servers`` ((name, address:port) pairs).

    ``bind``: where clients connect over TLS, with the front end's certificate and key
    ``crt`` (one PEM) and client certificates verified against ``ca``; ``http_bind``: a
    plain-HTTP listener too (a LAN without TLS; no certificate identities there);
    ``source``: the address HAProxy connects to the hosts from (what their
    ``trusted_proxies`` must name, and no one else's); ``process``: the global lines that
    make it a daemon of its own user (empty to run it in the foreground); ``maxconn``: the
    client connections it holds (see :func:`default_maxconn`); ``log``: where it logs
    (``stdout format raw local0`` in the foreground).
    """
    binds = ["    bind %s ssl crt %s ca-file %s verify optional alpn h2,http/1.1" % (bind, crt, ca)]
    if http_bind:
        binds.append("    bind %s" % http_bind)
    with open(template) as f:
        text = f.read()
    return apacheconf.render_template(text, {
        "LOG": log, "PROCESS": process, "STATS_SOCKET": stats_socket, "MAXCONN": str(maxconn),
        "BINDS": "\n".join(binds), "BACKEND": BACKEND,
        "SERVER_MAXCONN": str(server_maxconn), "SOURCE": " source %s" % source if source else "",
        "SERVERS": "\n".join("    server %s %s" % (name, address) for name, address in servers)})


# -- the cluster file ------------------------------------------------------------------------------


@dataclass
class Cluster:
    """The cluster file: its hosts (name, address, port) and front ends (name, address), in order."""
    hosts: list[tuple[str, str, int]]
    fronts: list[tuple[str, str]]

    def host_urls(self) -> list[str]:
        return ["http://%s/clarens/" % _netloc(address, port) for _, address, port in self.hosts]


def _netloc(address: str, port: int) -> str:
    return "[%s]:%d" % (address, port) if ":" in address else "%s:%d" % (address, port)


def _address_port(text: str) -> tuple[str, int]:
    """``ADDRESS:PORT`` (``[V6]:PORT``); ValueError if it is not one."""
    address, colon, port = text.strip().rpartition(":")
    if not colon or not address or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected ADDRESS:PORT, not %r" % text)
    return address.strip("[]"), int(port)


def read_cluster(path: str) -> Cluster:
    """The cluster file at ``path``; ConfigError naming the file and what is wrong."""
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.optionxform = str            # type: ignore[assignment]  # host names keep their case
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except (OSError, configparser.Error) as e:
        raise config_mod.ConfigError("%s: %s" % (path, e)) from None
    unknown = set(parser.sections()) - {"hosts", "fronts"}
    if unknown or not parser.has_section("hosts") or not parser["hosts"]:
        raise config_mod.ConfigError("%s: needs a [hosts] section naming each host (NAME = ADDRESS:PORT), and "
                                     "[fronts] (NAME = ADDRESS) at most besides" % path)
    hosts = []
    for name, value in parser["hosts"].items():
        try:
            hosts.append((name, *_address_port(value)))
        except ValueError as e:
            raise config_mod.ConfigError("%s: [hosts] %s: %s" % (path, name, e)) from None
    fronts = list(parser["fronts"].items()) if parser.has_section("fronts") else []
    return Cluster(hosts, fronts)


# -- checks ---------------------------------------------------------------------------------------------


def health(url: str, timeout: float = 5.0, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """``GET URL/health`` of one host (URL: its ``.../clarens/``): (HTTP status, the answer), or
    (0, {"error": why}) if it did not answer."""
    request = urllib.request.Request(url.rstrip("/") + "/" + HEALTH_PATH, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read(1 << 20))
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read(1 << 20))
        except ValueError:
            return e.code, {"error": "HTTP %d" % e.code}
    except (OSError, ValueError) as e:
        return 0, {"error": str(e)}


def forged_identity(url: str, timeout: float = 5.0) -> str | None:
    """Whether the host at ``url`` believes an identity header sent straight to it from this machine:
    None if it refuses it (as it must, unless this machine is a trusted front end), else what it did."""
    xml = wire.WIRES["xmlrpc"]
    try:
        answer = transports.Http(url, timeout=timeout).exchange(
            xml.call("system.whoami", []), xml.CONTENT_TYPE, headers={proxies.CLIENT_DN_HEADER: FORGED_DN})
        me = xml.result(answer.body)
    except Fault as fault:
        # Refused for where it came from; any other answer (a certificate requirement it failed) means
        # the header was believed far enough to be judged.
        if fault.code == ACCESS_DENIED and "not a trusted front end" in fault.message:
            return None
        return ("believed a forged %s from this machine far enough to judge it (fault %d: %s): its trusted_proxies "
                "name an address other clients use" % (proxies.CLIENT_DN_HEADER, fault.code, fault.message[:200]))
    except (TransportError, wire.ProtocolError) as e:
        return "the forged identity probe got no answer: %s" % e
    return ("believed a forged %s from this machine (it answered as %r): its trusted_proxies name an address "
            "other clients use; the front end needs a source address of its own"
            % (proxies.CLIENT_DN_HEADER, me.get("identity") if isinstance(me, dict) else me))


def check(urls: Sequence[str], out: TextIO = sys.stdout, expect_policy: str | None = None) -> int:
    """Print each host's health, digests and whether it refuses a forged identity; 0 if every host is
    healthy, refuses the forgery and all report the same digests (with ``expect_policy``: that one)."""
    headers = {routes.EXPECT_POLICY_HEADER: expect_policy} if expect_policy else {}
    seen = []
    for url in urls:
        status, answer = health(url, headers=headers)
        problems = answer.get("problems") or ([] if status == 200 else [answer.get("error", "")])
        forged = forged_identity(url) if status else None
        if forged:
            problems.append(forged)
        seen.append((status == 200 and answer.get("status") == "ok" and not forged, answer))
        out.write("%-40s %s  policy %s  modules %s  trust %s%s\n" % (
            url, answer.get("status", "unreachable") if status else "unreachable",
            *((answer.get(key) or "-")[:16] for _, key, _ in routes.EXPECTED),
            "  " + "; ".join(problems) if problems else ""))
    alike = len({tuple(a.get(key) for _, key, _ in routes.EXPECTED) for _, a in seen}) == 1
    if not alike:
        out.write("the hosts differ: their policies, module sets or trust configurations are not the same\n")
    return 0 if alike and all(ok for ok, _ in seen) else 1


# -- HAProxy's runtime API (its stats socket) --------------------------------------------------------


def admin(stats_socket: str, command: str, timeout: float = 10.0) -> str:
    """One command on HAProxy's runtime API (``stats socket ... level admin``); its answer."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(stats_socket)
        s.sendall(command.encode() + b"\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.decode(errors="replace")


def server_stats(stats_socket: str) -> dict[str, dict[str, str]]:
    """``show stat`` of the Clarens backend's servers, by name (status, scur, check_status...)."""
    rows = csv.DictReader(io.StringIO(admin(stats_socket, "show stat").lstrip("# ")))
    return {r["svname"]: r for r in rows if r["pxname"] == BACKEND and r["svname"] not in ("BACKEND", "FRONTEND")}


def set_state(stats_socket: str, name: str, state: str) -> None:
    """Set host ``name``'s administrative state (``ready``, ``drain``, ``maint``); OSError if HAProxy refuses."""
    said = admin(stats_socket, "set server %s/%s state %s" % (BACKEND, name, state)).strip()
    if said:                               # HAProxy answers nothing when it did it
        raise OSError("HAProxy: %s" % said)


def drain(stats_socket: str, name: str, timeout: float, out: TextIO = sys.stdout) -> int:
    """Take host ``name`` out of rotation and wait until its requests have ended: 0 once they have,
    1 if some are still running after ``timeout`` seconds."""
    set_state(stats_socket, name, "drain")
    deadline = time.monotonic() + timeout
    while (running := int(server_stats(stats_socket).get(name, {}).get("scur") or 0)) \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    if running:
        out.write("%s: draining, %d request(s) still running after %g s\n" % (name, running, timeout))
        return 1
    out.write("%s: drained, no requests running: it may be stopped\n" % name)
    return 0


# -- the command line -------------------------------------------------------------------------------


def _server(text: str) -> tuple[str, str]:
    name, sep, address = text.partition("=")
    if not sep or not name or ":" not in address:
        raise argparse.ArgumentTypeError("expected NAME=ADDRESS:PORT, not %r" % text)
    return name, address


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    """The command line (see the module's docstring); its exit status."""
    parser = argparse.ArgumentParser(prog="python3 -m clarens.cluster", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("digest", help="the digests of the deployed ACL files, modules and trust configuration")
    d.add_argument("--config", default=config_mod.DEFAULT_CONFIG)
    d.add_argument("--acl-dir", help="these ACL files instead of the configuration's (e.g. a staged copy)")
    d.add_argument("--modules-path", help="these module directories instead of the configuration's")
    d.add_argument("--env", action="store_true", help="as environment lines for HAProxy")
    h = sub.add_parser("haproxy", help="print HAProxy's configuration")
    hosts = h.add_mutually_exclusive_group(required=True)
    hosts.add_argument("--server", action="append", type=_server, metavar="NAME=ADDRESS:PORT")
    hosts.add_argument("--cluster", metavar="FILE", help="the hosts of this cluster file")
    h.add_argument("--bind", default=":443")
    h.add_argument("--crt", default="/etc/haproxy/clarens.pem")
    h.add_argument("--ca", default="/etc/clarens/ca.crt")
    h.add_argument("--http-bind")
    h.add_argument("--source", help="the address HAProxy connects to the hosts from: their trusted_proxies")
    h.add_argument("--stats-socket", default=STATS_SOCKET)
    h.add_argument("--maxconn", type=int, help="client connections HAProxy holds (default: what this process's "
                   "descriptor limit allows, two each, at most %d)" % MAXCONN)
    h.add_argument("--foreground", action="store_true", help="no daemon, chroot or user lines; log to standard output")
    c = sub.add_parser("check", help="compare the hosts' health and digests, and probe them with a forged identity")
    c.add_argument("urls", nargs="*", metavar="URL")
    c.add_argument("--cluster", metavar="FILE", help="the hosts of this cluster file")
    c.add_argument("--expect-policy", metavar="DIGEST", help="fail unless every host has this policy digest")
    lst = sub.add_parser("list", help="the hosts and front ends of a cluster file")
    lst.add_argument("--cluster", metavar="FILE", required=True)
    for action, what in (("drain", "take host NAME out of rotation, and wait until its requests have ended"),
                         ("ready", "put host NAME back in rotation")):
        a = sub.add_parser(action, help=what)
        a.add_argument("name", metavar="NAME")
        a.add_argument("--stats-socket", default=STATS_SOCKET)
        if action == "drain":
            a.add_argument("--timeout", type=float, default=120.0, help="seconds to wait (default 120)")
    args = parser.parse_args(argv)
    try:
        if args.command == "digest":
            options = {"clarens.server.acl_dir": os.path.abspath(args.acl_dir)} if args.acl_dir else {}
            if args.modules_path:
                options["clarens.server.modules_path"] = ":".join(os.path.abspath(p)
                                                                  for p in args.modules_path.split(":"))
            found_digests = digests(config_mod.load(args.config, options))
            out.write("".join("%s=%s\n" % kv for kv in environment(found_digests).items()) if args.env
                      else json.dumps(found_digests, indent=2) + "\n")
        elif args.command == "haproxy":
            servers = args.server or [(name, _netloc(address, port))
                                      for name, address, port in read_cluster(args.cluster).hosts]
            out.write(haproxy_config(servers, args.bind, args.crt, args.ca, args.http_bind, args.source,
                                     args.stats_socket, "" if args.foreground else PROCESS,
                                     args.maxconn or default_maxconn(len(servers)),
                                     log="stdout format raw local0" if args.foreground else LOG))
        elif args.command == "check":
            if bool(args.urls) == bool(args.cluster):
                parser.error("check takes URLs or --cluster FILE")
            return check(args.urls or read_cluster(args.cluster).host_urls(), out, args.expect_policy)
        elif args.command == "list":
            found = read_cluster(args.cluster)
            out.write("".join("host %s %s %d %s\n" % (*host, url) for host, url in zip(found.hosts, found.host_urls(),
                                                                                   strict=True))
                      + "".join("front %s %s\n" % front for front in found.fronts))
        elif args.command == "drain":
            return drain(args.stats_socket, args.name, args.timeout, out)
        else:
            set_state(args.stats_socket, args.name, "ready")
            out.write("%s: ready, back in rotation once its health check passes\n" % args.name)
    except (config_mod.ConfigError, AclError, OSError) as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
