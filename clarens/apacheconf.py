# SPDX-License-Identifier: Apache-2.0
"""Apache's side of the configuration, rendered from ``clarens.conf`` and the machine so that they never disagree.

Apache refuses a body over ``LimitRequestBody`` before the host sees the request,
so its limits must follow the host's: RPC bodies get ``[server] max_body`` (plus
some slack, so that the host, not Apache, answers an oversized call with a proper
fault), and image uploads (``/clarens/images/``) get ``[module:burner]
max_image_mb``, in a ``<Location>`` of their own, whose 413 carries a JSON error
like the host's own.  The prefork pool follows ``workers`` and ``spare_workers``,
which are sized to the machine by default (:mod:`clarens.sizing`).

Three parts, each rendered in one place:

* :data:`GENERATED` (:func:`generated`): what follows the configuration and the
  machine, the limits as ``Define CLARENS_LIMIT_BODY``/``CLARENS_LIMIT_IMAGES`` and
  the pool;
* :data:`SERVER_WIDE`: the server-wide settings (timeouts, what Apache says
  about itself), the same everywhere;
* the include, ``conf/apache/clarens.conf.in``: mod_python and the
  ``<Location>``s, whose limits are ``${CLARENS_LIMIT_...}``.

The private instance (``clarens.dev.instance``) and a checkout's include for the
system Apache carry all three in one file; the Debian package's include (a
conffile, rendered when the package is built) includes :data:`GENERATED_PATH`,
which ``clarens-admin apache-conf`` writes at every install and upgrade and after
a change, so that no administrator ever has to overwrite a conffile.

    python3 -m clarens.apacheconf [--config conf/clarens.conf] [--root /opt/clarens] > clarens.conf
    python3 -m clarens.apacheconf --package > clarens.conf

prints the system include for a checkout installed at ``--root``, sized to this
machine, or with ``--package`` the one the Debian package installs: it names
``/etc/clarens/clarens.conf``, needs no ``PythonPath`` (clarens is installed in
Python's own path) and refuses any MPM but prefork.  Neither checks passwords:
the host does (``[server] htpasswd``, :mod:`clarens.credentials`).
"""

from __future__ import annotations

import argparse
import http
import json
import os
import re
import sys
import textwrap
from typing import Mapping

from clarens import config as config_mod
from clarens import sizing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE_SHARE = "/usr/share/clarens"


def shipped(*parts: str) -> str:
    """A file shipped under ``conf/`` (``shipped("apache", "clarens.conf.in")``): the checkout's,
    or where clarens is installed as a package, the package's copy in /usr/share/clarens."""
    checkout = os.path.join(ROOT, "conf", *parts)
    return checkout if os.path.exists(checkout) else os.path.join(PACKAGE_SHARE, *parts)


SYSTEM_TEMPLATE = shipped("apache", "clarens.conf.in")
PACKAGE_CONFIG = config_mod.SYSTEM_CONFIG
RPC_SLACK = 65536                 # bytes over max_body that Apache lets through to the host
IMAGES_MODULE, IMAGES_KEY = "burner", "max_image_mb"


class TemplateError(Exception):
    """A template names a placeholder nobody gave a value for."""


def render_template(template: str, values: Mapping[str, str]) -> str:
    """Replace every ``@@NAME@@``; a placeholder without a value is an error."""
    def sub(m: re.Match) -> str:
        if m.group(1) not in values:
            raise TemplateError("template placeholder @@%s@@ has no value" % m.group(1))
        return values[m.group(1)]
    return re.sub(r"@@([A-Z_]+)@@", sub, template)


# Server-wide settings every configuration carries (placeholder @@SERVER_WIDE@@): they apply
# to the whole Apache they are in, every site of it (docs/administration.md, "A shared Apache").
SERVER_WIDE = """\
# Slow and idle clients.  Under prefork a connection holds a whole process while it
# lasts, so every wait is bounded: a stalled read or write after Timeout, an idle
# keep-alive connection after KeepAliveTimeout, and (mod_reqtimeout) a client sending
# its headers or body too slowly: headers within 2 s, extended while at least 500 B/s
# arrive, 20 s at most; a body within 2 s, extended while at least 64 kB/s arrive.  A
# crowd of slow clients is thus cut within about 2 s each (and mod_reqtimeout shortens
# Apache's lingering close after a cut to 2 s), so that the processes they hold turn
# over fast enough for everyone else's turn.  A request on a LAN sends its headers at
# once and its body far faster (an upload at 1 MB/s is 16 times the minimum), and a
# dropped upload keeps what arrived and resumes.
Timeout 20
KeepAliveTimeout 3
<IfModule reqtimeout_module>
    RequestReadTimeout handshake=5 header=2-20,MinRate=500 body=2,MinRate=65536
</IfModule>
# Say no more than needed: no versions in headers and error pages, no TRACE.
ServerTokens Prod
ServerSignature Off
TraceEnable Off"""

# The settings that follow clarens.conf and the machine (placeholder @@GENERATED@@): the body
# limits, as Defines the include's <Location>s use, and the process pool.  The Debian package
# keeps them in a file of their own, GENERATED_PATH, which is not a conffile: the package's
# include (a conffile) never changes with them, and upgrades write them again.
GENERATED = """\
# Body limits: [server] max_body + 64 KiB (so that the host, not Apache, answers an
# oversized call with a proper fault), and [module:burner] max_image_mb for uploads.
Define CLARENS_LIMIT_BODY @@LIMIT_BODY@@
Define CLARENS_LIMIT_IMAGES @@LIMIT_IMAGES@@
# Processes: at most `workers` at work, at least `spare_workers` kept idle (a burst of
# slow clients takes idle processes; prefork forks more at no more than 32 a second,
# each booting the host), at most twice that many idle after a burst.
#   workers = @@WORKERS_HOW@@
#   spare_workers = @@SPARE_HOW@@
# ServerLimit is at least @@LIMIT_FLOOR@@ (a few hundred bytes of shared memory each), so that
# raising workers below it needs only a graceful restart; changing ServerLimit, or lowering
# workers, needs a full one (clarens-admin apache-conf does what the change needs).
<IfModule mpm_prefork_module>
    StartServers @@SPARE@@
    MinSpareServers @@SPARE@@
    MaxSpareServers @@MAX_SPARE@@
    ServerLimit @@SERVER_LIMIT@@
    MaxRequestWorkers @@WORKERS@@
    MaxConnectionsPerChild 0
</IfModule>"""
GENERATED_PATH = "/etc/clarens/apache-generated.conf"
SERVER_LIMIT_FLOOR = 256


# Errors Apache answers by itself (a malformed request line or header, failed Basic
# authentication, no route...) as one plain line instead of its HTML page.  mod_headers
# relabels that line, since Apache serves an ErrorDocument string as Latin-1 HTML; the
# host's own answers never carry that exact type, so they are left alone.
APACHE_ERRORS = (400, 401, 403, 404, 405, 408, 411, 413, 414, 415, 417, 431, 500, 501, 502, 503, 505)


def error_documents() -> str:
    """``ErrorDocument`` lines giving each of :data:`APACHE_ERRORS` a one-line text body."""
    lines = ['ErrorDocument %d "%d %s"' % (code, code, http.HTTPStatus(code).phrase) for code in APACHE_ERRORS]
    lines += ["<IfModule headers_module>",
              '    Header always set Content-Type "text/plain; charset=utf-8" '
              '"expr=%{CONTENT_TYPE} == \'text/html; charset=iso-8859-1\'"',
              "</IfModule>"]
    return "\n".join(lines)


# Apache's answer to an upload over the limit, which it makes from the request's Content-Length
# before the host sees the request: a JSON error like the host's own.
IMAGES_TOO_LARGE = '"%s"' % json.dumps(
    {"error": {"code": 413, "message": "the image is larger than the limit of ${CLARENS_LIMIT_IMAGES} bytes"}},
    separators=(",", ":")).replace('"', '\\"')


def body_limits(config: config_mod.ServerConfig) -> tuple[int, int]:
    """Apache's ``LimitRequestBody`` for RPC calls (``max_body`` and some slack) and for image uploads."""
    return (config.max_body + RPC_SLACK,
            config.for_module(IMAGES_MODULE).get_int(IMAGES_KEY, minimum=1) * 1000 * 1000)


def generated(config: config_mod.ServerConfig, machine: sizing.Machine | None = None) -> str:
    """The settings that follow ``config`` and ``machine`` (by default this one): :data:`GENERATED`."""
    machine = machine or sizing.this_machine()
    size = config.pool_on(machine)
    rpc, images = body_limits(config)
    how = {"WORKERS_HOW": "%d%s" % (size.workers, "" if config.workers_setting is not None else
                                    " (auto on %s: min(512, memory / 2 / 14 MB))" % machine),
           "SPARE_HOW": "%d%s" % (size.spare, "" if config.spare_workers_setting is not None else
                                  " (auto: min(48 x cores, memory / 5 / 28 MB))")}
    return render_template(GENERATED, {
        "LIMIT_BODY": str(rpc), "LIMIT_IMAGES": str(images), "SPARE": str(size.spare),
        "MAX_SPARE": str(size.max_spare), "WORKERS": str(size.workers), "LIMIT_FLOOR": str(SERVER_LIMIT_FLOOR),
        "SERVER_LIMIT": str(server_limit(size)), **how})


def server_limit(size: sizing.Pool) -> int:
    """Apache's ``ServerLimit`` for a pool: only a full restart changes it, so it has a floor."""
    return max(size.workers, SERVER_LIMIT_FLOOR)


def full_restart_needed(old: str | None, new: str) -> str | None:
    """Why the configuration ``new`` needs a full restart of an Apache running ``old`` (None: a graceful
    one does).  A graceful restart cannot change ``ServerLimit`` (AH00179), and one that lowers
    ``MaxRequestWorkers`` loses track of the old children beyond it ("long lost child came home")."""
    def number(name: str, text: str | None) -> int | None:
        match = re.search(r"^\s*%s\s+(\d+)" % name, text or "", re.M)
        return int(match.group(1)) if match else None
    if number("ServerLimit", old) != number("ServerLimit", new):
        return "ServerLimit changed"
    before, after = number("MaxRequestWorkers", old), number("MaxRequestWorkers", new)
    if before is not None and after is not None and after < before:
        return "MaxRequestWorkers went down"
    return None


# What differs between the include for a checkout (served from ``root``) and the one the Debian
# package installs, by template placeholder.
CHECKOUT_LAYOUT = {
    "HEADER": """\
# Clarens service host for the system Apache (Debian layout).
#
# Rendered from conf/apache/clarens.conf.in, conf/clarens.conf (body limits, process
# pool) and the size of the machine it was rendered on: after changing max_body,
# max_image_mb, workers or spare_workers there, or on another machine, render it again:
#   python3 -m clarens.apacheconf --root /opt/clarens > /etc/apache2/conf-available/clarens.conf
#   a2dismod mpm_event && a2enmod mpm_prefork python && a2enconf clarens
#   install -d -o www-data -g www-data -m 0700 /var/lib/clarens
#   apachectl configtest && apachectl graceful      (a full restart if ServerLimit changed)
#
# mod_python 3.5 with Python 3.11 must run under the prefork MPM.

<IfDefine !CLARENS_ROOT>
    Define CLARENS_ROOT %(root)s
</IfDefine>""",
    "PYTHON_PATH": "    PythonPath \"['${CLARENS_ROOT}'] + sys.path\"",
    "CLIENT_CERTIFICATES": """\
# Client certificates: in your SSL virtual host (a2enmod ssl), trust the CA that
# issues your users' certificates and ask for one, optionally:
#     SSLCACertificateFile /etc/clarens/users-ca.crt
#     SSLVerifyClient optional
#     SSLVerifyDepth 2""",
}
PACKAGE_LAYOUT = {
    "HEADER": """\
# Clarens service host for the system Apache, installed by the Debian package clarens
# and enabled by it (a2enconf clarens).
#
# What follows /etc/clarens/clarens.conf (body limits, process pool) and the size of
# this machine is not in this file but in %(generated)s, which
# "clarens-admin apache-conf" writes, checks and applies (a graceful restart, or a
# full one when ServerLimit changes); installs and upgrades run it too.
#
# mod_python 3.5 with Python 3.11 crashes under the event and worker MPMs: the package
# switched Apache to prefork, and this file refuses to run under any other.
<IfModule !mpm_prefork_module>
    Error "Clarens needs the prefork MPM: a2dismod mpm_event mpm_worker && a2enmod mpm_prefork"
</IfModule>""",
    "GENERATED": """\
# Generated: the body limits and the process pool (clarens-admin apache-conf).
Include %(generated)s""",
    "PYTHON_PATH": "    # (clarens itself is in Python's own path, /usr/lib/python3/dist-packages)",
    "CLIENT_CERTIFICATES": """\
# HTTPS, with client certificates (and passwords): the site clarens-ssl,
# /etc/apache2/sites-available/clarens-ssl.conf (a2enmod ssl && a2ensite clarens-ssl).""",
}


def render_system(config_path: str = config_mod.DEFAULT_CONFIG, root: str = "/opt/clarens",
                  package: bool = False, machine: sizing.Machine | None = None) -> str:
    """The include for the system Apache (Debian's conf-available/) with the configuration at
    ``config_path``: serving the checkout at ``root`` (the shipped configuration is named inside
    ``root``), with the settings of :func:`generated` for ``machine`` in it; or, with ``package``,
    the one the Debian package installs: it names ``/etc/clarens/clarens.conf`` and includes
    :data:`GENERATED_PATH`, so that it depends on neither the configuration nor the machine."""
    with open(SYSTEM_TEMPLATE, encoding="utf-8") as f:
        template = f.read()
    if package:
        values = {k: v % {"generated": GENERATED_PATH} for k, v in PACKAGE_LAYOUT.items()}
        values["CONFIG"] = PACKAGE_CONFIG
    else:
        config_path = os.path.abspath(config_path)
        values = {k: v % {"root": root} if "%(root)s" in v else v for k, v in CHECKOUT_LAYOUT.items()}
        values["CONFIG"] = "${CLARENS_ROOT}/conf/clarens.conf" if config_path == config_mod.DEFAULT_CONFIG \
            else config_path
        values["GENERATED"] = generated(config_mod.load(config_path), machine)
    return render_template(template, {"SERVER_WIDE": SERVER_WIDE, "IMAGES_TOO_LARGE": IMAGES_TOO_LARGE,
                                      "ERROR_DOCUMENTS": textwrap.indent(error_documents(), " " * 8), **values})


def generated_file(config_path: str, machine: sizing.Machine | None = None) -> str:
    """:data:`GENERATED_PATH`'s text: :func:`generated` for the configuration at ``config_path``,
    saying where it comes from."""
    machine = machine or sizing.this_machine()
    return ("# Generated by clarens-admin apache-conf from %s for this machine (%s).\n"
            "# Do not edit: change that file and run clarens-admin apache-conf again (installs and\n"
            "# upgrades of the package clarens do too).  Included by the include of conf-available/.\n"
            % (config_path, machine)) + generated(config_mod.load(config_path), machine) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m clarens.apacheconf", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=config_mod.DEFAULT_CONFIG,
                        help="the clarens.conf whose limits Apache must follow")
    parser.add_argument("--root", default="/opt/clarens", help="where the checkout is installed")
    parser.add_argument("--package", action="store_true", help="the include of the Debian package")
    args = parser.parse_args(argv)
    try:
        sys.stdout.write(render_system(args.config, args.root, args.package))
    except config_mod.ConfigError as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
