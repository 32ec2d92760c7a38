# SPDX-License-Identifier: Apache-2.0
"""Clarens in an Apache of its own, so that the administrator's Apache stays as it was.

mod_python needs the prefork MPM, and the package's include sets server-wide
settings, so Clarens in the system's Apache changes it for every site on it (no
HTTP/2, one process per connection).  The Debian way to keep that apart is an
instance: ``/etc/apache2-clarens``, run as ``apache2@clarens`` by systemd or
``/etc/init.d/apache2-clarens`` otherwise (Debian's README.multiple-instances),
with prefork, mod_python and Clarens, listening on the loopback; the main Apache,
back on the event MPM with HTTP/2, proxies ``/clarens/`` to it (the configuration
``clarens-proxy``) and passes who the client is the way the HAProxy front end
does, with a key only root can read (``/etc/clarens/apache-dedicated.conf``), so
that no other local user can pass for the owner of a certificate.

    clarens-admin apache-instance dedicated [--port 8280]
    clarens-admin apache-instance shared
    clarens-admin apache-instance                 which one this host runs
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from typing import Callable

from clarens import apacheconf, apachectl

INSTANCE = apachectl.DEDICATED
MAIN = apachectl.MAIN
DEFAULT_PORT = 8280
SETTINGS = "/etc/clarens/apache-dedicated.conf"      # the port and the key: root's alone
PROXY_CONF = "clarens-proxy"                         # the main Apache's side (a conffile of the package)
INSTANCE_CONF = os.path.join(apacheconf.PACKAGE_SHARE, "apache", "clarens-dedicated.conf")
INIT_SCRIPT = "/etc/init.d/" + INSTANCE.name
LOGROTATE = "/etc/logrotate.d/" + INSTANCE.name
LOG_DIR = "/var/log/" + INSTANCE.name
STATE_DIR = "/var/lib/" + INSTANCE.name              # a2enmod's records for the instance, apart from the main's
# What the instance loads (a2enmod adds what these depend on), and what the package gives the main Apache.
INSTANCE_MODULES = ("mpm_prefork", "authz_core", "authz_host", "mime", "headers", "reqtimeout", "python")
SHARED_MODULES = ("python", "headers", "reqtimeout")
PROXY_MODULES = ("proxy", "proxy_http", "headers", "http2")
INIT = """\
#!/bin/sh
### BEGIN INIT INFO
# Provides:          %(name)s
# Required-Start:    $local_fs $remote_fs $network $syslog $named
# Required-Stop:     $local_fs $remote_fs $network $syslog $named
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: Apache for Clarens (configuration %(confdir)s)
### END INIT INFO
# Written by clarens-admin apache-instance dedicated, as Debian's setup-instance writes it:
# Apache's own init script, which takes the instance from this script's name.
. /etc/init.d/apache2
"""


class InstanceError(Exception):
    """The instance could not be set up or removed; the message says why and what was left."""


def dedicated() -> bool:
    """Whether this host runs Clarens in its dedicated instance."""
    return os.path.isdir(INSTANCE.confdir)


def _run(argv: list[str], apache: apachectl.Apache = MAIN) -> None:
    env = {"PATH": apachectl.CLEAN_PATH, "LANG": "C.UTF-8"}
    if apache.suffix:
        env.update(APACHE_CONFDIR=apache.confdir, APACHE_STATE_DIRECTORY=STATE_DIR)
    out = subprocess.run(argv, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise InstanceError("%s failed: %s" % (" ".join(argv), (out.stderr + out.stdout).strip()))


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _write(path: str, text: str, mode: int) -> None:
    tmp = "%s.tmp.%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _make_instance(port: int) -> None:
    """/etc/apache2-clarens as Debian's setup-instance would make it, holding Clarens only."""
    confdir = INSTANCE.confdir
    os.makedirs(os.path.join(confdir, "sites-available"))
    for name in ("mods-enabled", "conf-enabled", "sites-enabled"):
        os.mkdir(os.path.join(confdir, name))
    for name in ("apache2.conf", "envvars", "magic"):
        if os.path.exists(os.path.join(MAIN.confdir, name)):
            shutil.copy2(os.path.join(MAIN.confdir, name), confdir)
    # The module and configuration definitions are the main Apache's (the package's clarens.conf among them).
    for name in ("mods-available", "conf-available"):
        os.symlink(os.path.join(MAIN.confdir, name), os.path.join(confdir, name))
    with open(os.path.join(confdir, "ports.conf"), "w") as f:
        f.write("# The instance listens where clarens-dedicated.conf says: 127.0.0.1, CLARENS_INSTANCE_PORT.\n")
    for module in INSTANCE_MODULES:
        _run(["a2enmod", "-q", module], INSTANCE)
    _run(["a2enconf", "-q", "clarens"], INSTANCE)
    os.symlink(INSTANCE_CONF, os.path.join(confdir, "conf-enabled", "clarens-dedicated.conf"))
    _write(SETTINGS, "# Written by clarens-admin apache-instance dedicated: the port of the Apache instance\n"
                     "# apache2-clarens, and the key with which the main Apache's forwarding headers are\n"
                     "# believed there (root's alone).\n"
                     "Define CLARENS_INSTANCE_PORT %d\nDefine CLARENS_PROXY_KEY %s\n" % (port, secrets.token_hex(32)),
           0o600)
    os.makedirs(LOG_DIR, exist_ok=True)
    shutil.chown(LOG_DIR, "root", "adm")
    os.chmod(LOG_DIR, 0o750)
    if os.path.exists("/etc/logrotate.d/apache2"):
        with open("/etc/logrotate.d/apache2") as f:
            rotate = f.read().replace("/var/log/apache2", LOG_DIR)
        _write(LOGROTATE, rotate.replace(" apache2 ", " %s " % (INSTANCE.unit if apachectl.systemd_running()
                                                                  else INSTANCE.name)), 0o644)
    if not apachectl.systemd_running():
        _write(INIT_SCRIPT, INIT % {"name": INSTANCE.name, "confdir": confdir}, 0o755)


def _port() -> int | None:
    """The instance's port, as :data:`SETTINGS` says (None without it)."""
    try:
        with open(SETTINGS) as f:
            match = re.search(r"^Define CLARENS_INSTANCE_PORT (\d+)$", f.read(), re.M)
    except FileNotFoundError:
        return None
    return int(match.group(1)) if match else None


def _remove_instance(timeout: float = 60.0) -> None:
    """Stop the instance and remove what :func:`_make_instance` made (its logs stay).  Returns once its
    port is free (its last children may outlive its parent for a moment), or ``timeout`` has passed."""
    port = _port()
    if apachectl.systemd_running():
        subprocess.run(["systemctl", "disable", "--now", INSTANCE.unit + ".service"], capture_output=True)
    elif INSTANCE.running():
        subprocess.run(INSTANCE.command("stop"), capture_output=True)
    deadline = time.monotonic() + timeout
    while port is not None and not _port_free(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    if os.path.exists(INIT_SCRIPT):
        subprocess.run(["update-rc.d", INSTANCE.name, "remove"], capture_output=True)
    shutil.rmtree(INSTANCE.confdir, ignore_errors=True)
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    for path in (INIT_SCRIPT, LOGROTATE, SETTINGS):
        if os.path.exists(path):
            os.unlink(path)


def _start_instance() -> str:
    if apachectl.systemd_running():
        _run(["systemctl", "enable", "--now", INSTANCE.unit + ".service"])
    else:
        _run(["update-rc.d", INSTANCE.name, "defaults"])
        _run(INSTANCE.command("start"))
    return "%s: started" % INSTANCE.name


def _main_apache(enable: tuple[str, ...], disable: tuple[str, ...], conf_on: str, conf_off: str,
                 mpm: str) -> Callable[[], None]:
    """Switch the main Apache's MPM, modules and configurations; a function that undoes it."""
    previous = subprocess.run(["a2query", "-M"], capture_output=True, text=True).stdout.strip()
    enabled = [m for m in enable if subprocess.run(["a2query", "-m", m], capture_output=True).returncode != 0]
    disabled = [m for m in disable if subprocess.run(["a2query", "-m", m], capture_output=True).returncode == 0]
    if previous != mpm:
        _run(["a2dismod", "-q", "mpm_" + previous])
        _run(["a2enmod", "-q", "mpm_" + mpm])
    for module in disabled:
        _run(["a2dismod", "-q", "-f", module])
    for module in enabled:
        _run(["a2enmod", "-q", module])
    _run(["a2disconf", "-q", conf_off])
    _run(["a2enconf", "-q", conf_on])

    def undo() -> None:
        _run(["a2disconf", "-q", conf_on])
        _run(["a2enconf", "-q", conf_off])
        for module in enabled:
            _run(["a2dismod", "-q", "-f", module])
        for module in disabled:
            _run(["a2enmod", "-q", module])
        if previous != mpm:
            _run(["a2dismod", "-q", "mpm_" + mpm])
            _run(["a2enmod", "-q", "mpm_" + previous])
    return undo


def _checked(apache: apachectl.Apache, undo: Callable[[], None]) -> None:
    problem = apache.configtest()
    if problem:
        undo()
        raise InstanceError("%s rejects its new configuration, so nothing was changed:\n%s" % (apache.name, problem))


def _restart_main() -> str:
    try:
        return MAIN.apply("restart")
    except apachectl.ApacheError as e:
        return str(e)


def make_dedicated(port: int = DEFAULT_PORT) -> list[str]:
    """Run Clarens in its instance and give the main Apache back its event MPM, with HTTP/2, proxying
    /clarens/ to it; what was done, to show the administrator.  InstanceError if it cannot."""
    if dedicated():
        raise InstanceError("this host already runs Clarens in %s" % INSTANCE.confdir)
    if not _port_free(port):
        raise InstanceError("something listens on 127.0.0.1:%d already: choose another port (--port)" % port)
    try:
        _make_instance(port)
        _checked(INSTANCE, _remove_instance)
        done = [_start_instance()]
    except BaseException:
        _remove_instance()
        raise
    try:
        undo = _main_apache(PROXY_MODULES, ("python",), PROXY_CONF, "clarens", "event")
        _checked(MAIN, undo)
    except BaseException:
        _remove_instance()
        raise
    done.append(_restart_main())
    return done + ["the main Apache runs the event MPM with HTTP/2 and passes /clarens/ to %s on 127.0.0.1:%d; "
                   "'clarens-admin apache-instance shared' undoes it" % (INSTANCE.name, port)]


def make_shared() -> list[str]:
    """Run Clarens in the main Apache again (prefork, mod_python) and remove the instance."""
    if not dedicated():
        raise InstanceError("Clarens already runs in the main Apache")
    undo = _main_apache(SHARED_MODULES, ("http2",), "clarens", PROXY_CONF, "prefork")
    _checked(MAIN, undo)
    _remove_instance()
    return ["%s removed (its logs stay in %s)" % (INSTANCE.name, LOG_DIR), _restart_main(),
            "the main Apache runs the prefork MPM and Clarens, with the server-wide changes of "
            "/usr/share/doc/clarens/docs/administration.md (A shared Apache)"]
