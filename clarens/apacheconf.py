"""Apache's side of the configuration, rendered from ``clarens.conf`` so that the two never disagree.

Apache refuses a body over ``LimitRequestBody`` before the host sees the request,
so its limits must follow the host's: RPC bodies get ``[server] max_body`` (plus
some slack, so that the host, not Apache, answers an oversized call with a proper
fault), and image uploads (``/clarens/images/``) get ``[module:burner]
max_image_mb``, in a ``<Location>`` of their own, whose 413 carries a JSON error
like the host's own.  Both the private instance
(``clarens.dev.instance``) and the include shipped for the system Apache
(``conf/apache/clarens.conf``, rendered from ``clarens.conf.in``) take their limits
from :func:`body_limits`.

    python3 -m clarens.apacheconf [--config conf/clarens.conf] [--root /opt/clarens] > clarens.conf
    python3 -m clarens.apacheconf --package [--config /etc/clarens/clarens.conf] > clarens.conf

prints the system include for a configuration (the shipped file is this command's
output for the shipped ``conf/clarens.conf``; a test keeps them equal).  With
``--package`` it prints the one the Debian package installs (rendered when the
package is built, and again by ``clarens-admin apache-conf`` after a change): it
names ``/etc/clarens/clarens.conf``, needs no ``PythonPath`` (clarens is installed
in Python's own path) and refuses any MPM but prefork.  Neither checks passwords:
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


# Server-wide settings both configurations carry (placeholder @@SERVER_SETTINGS@@).
SERVER_SETTINGS = """\
# Slow and idle clients.  Under prefork a connection holds a whole process while it
# lasts, so every wait is bounded: a stalled read or write after Timeout, an idle
# keep-alive connection after KeepAliveTimeout, and (mod_reqtimeout) a client sending
# its headers or body too slowly: headers within 5 s, extended while at least 500 B/s
# arrive, 20 s at most; a body within 10 s, extended while at least 8 kB/s arrive (any
# upload on a LAN is far faster, and a dropped upload keeps what arrived and resumes).
Timeout 20
KeepAliveTimeout 3
<IfModule reqtimeout_module>
    RequestReadTimeout handshake=5 header=5-20,MinRate=500 body=10,MinRate=8000
</IfModule>
# Processes ([server] spare_workers, workers in clarens.conf).  Slow clients arriving
# together take idle processes; prefork forks more at no more than 32 a second, each
# booting the host, so a burst larger than the idle pool waits seconds for them.  The
# pool is kept at least spare_workers idle, at about 14 MB each.
<IfModule mpm_prefork_module>
    StartServers @@SPARE@@
    MinSpareServers @@SPARE@@
    MaxSpareServers @@MAX_SPARE@@
    ServerLimit @@WORKERS@@
    MaxRequestWorkers @@WORKERS@@
    MaxConnectionsPerChild 0
</IfModule>
# Say no more than needed: no versions in headers and error pages, no TRACE.
ServerTokens Prod
ServerSignature Off
TraceEnable Off"""


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


def server_settings(config: config_mod.ServerConfig) -> str:
    """The server-wide block (timeouts, process pool, what the server tells about itself) for ``config``."""
    return render_template(SERVER_SETTINGS, {"SPARE": str(config.spare_workers), "WORKERS": str(config.workers),
                                             "MAX_SPARE": str(min(2 * config.spare_workers, config.workers))})


def body_limits(config: config_mod.ServerConfig) -> dict[str, str]:
    """``LIMIT_BODY`` (RPC calls) and ``LIMIT_IMAGES`` (image uploads), as Apache's ``LimitRequestBody``,
    and ``IMAGES_TOO_LARGE``: the JSON error Apache answers an upload over the limit with (it
    does so from the request's Content-Length, before the host sees the request)."""
    images = config.for_module(IMAGES_MODULE).get_int(IMAGES_KEY, minimum=1) * 1000 * 1000
    too_large = json.dumps({"error": {"code": 413, "message": "the image is larger than the limit of %d bytes"
                                                              % images}}, separators=(",", ":"))
    return {"LIMIT_BODY": str(config.max_body + RPC_SLACK), "LIMIT_IMAGES": str(images),
            "IMAGES_TOO_LARGE": '"%s"' % too_large.replace('"', '\\"')}


# What differs between the include for a checkout (served from ``root``) and the one the Debian
# package installs, by template placeholder.
CHECKOUT_LAYOUT = {
    "HEADER": """\
# Clarens service host for the system Apache (Debian layout).
#
# Rendered from conf/apache/clarens.conf.in and conf/clarens.conf, whose body
# limits it carries: after changing max_body or max_image_mb there, render it again:
#   python3 -m clarens.apacheconf --root /opt/clarens > /etc/apache2/conf-available/clarens.conf
#   a2dismod mpm_event && a2enmod mpm_prefork python && a2enconf clarens
#   install -d -o www-data -g www-data -m 0700 /var/lib/clarens
#   apachectl configtest && apachectl graceful
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
# Rendered from /etc/clarens/clarens.conf, whose body limits (max_body, max_image_mb)
# and process pool (workers, spare_workers) it carries.  After changing those, render
# it again (it is a conffile: once changed, upgrades keep your copy) and restart:
#   clarens-admin apache-conf > /etc/apache2/conf-available/clarens.conf
#   apachectl configtest && apachectl graceful
#
# mod_python 3.5 with Python 3.11 crashes under the event and worker MPMs: the package
# switched Apache to prefork, and this file refuses to run under any other.
<IfModule !mpm_prefork_module>
    Error "Clarens needs the prefork MPM: a2dismod mpm_event mpm_worker && a2enmod mpm_prefork"
</IfModule>""",
    "PYTHON_PATH": "    # (clarens itself is in Python's own path, /usr/lib/python3/dist-packages)",
    "CLIENT_CERTIFICATES": """\
# HTTPS, with client certificates (and passwords): the site clarens-ssl,
# /etc/apache2/sites-available/clarens-ssl.conf (a2enmod ssl && a2ensite clarens-ssl).""",
}


def render_system(config_path: str = config_mod.DEFAULT_CONFIG, root: str = "/opt/clarens",
                  package: bool = False) -> str:
    """The include for the system Apache (Debian's conf-available/) with the configuration at
    ``config_path``: serving the checkout at ``root`` (the shipped configuration is named inside
    ``root``), or, with ``package``, as the Debian package installs it (it names
    ``/etc/clarens/clarens.conf`` whichever file it was rendered from)."""
    with open(SYSTEM_TEMPLATE, encoding="utf-8") as f:
        template = f.read()
    config_path = os.path.abspath(config_path)
    if package:
        named = PACKAGE_CONFIG
        layout = dict(PACKAGE_LAYOUT)
    else:
        named = "${CLARENS_ROOT}/conf/clarens.conf" if config_path == config_mod.DEFAULT_CONFIG else config_path
        layout = {k: v % {"root": root} if "%(root)s" in v else v for k, v in CHECKOUT_LAYOUT.items()}
    config = config_mod.load(config_path)
    return render_template(template, {"CONFIG": named, "SERVER_SETTINGS": server_settings(config),
                                      "ERROR_DOCUMENTS": textwrap.indent(error_documents(), " " * 8),
                                      **layout, **body_limits(config)})


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
