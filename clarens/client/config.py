# SPDX-License-Identifier: Apache-2.0
"""Services named by configuration, not code: ``clarens.client.service("burner")``.

The client configuration is an INI file: ``$CLARENS_CLIENT_CONF`` if set (that
file alone), else ``/etc/clarens/client.conf`` and then
``~/.config/clarens/client.conf``, the user's settings winning.  Each
``[service:NAME]`` section names a service::

    [service:burner]
    # one URL, or several (a failover pool): http(s)://, local:[CONFIG], ssh://[USER@]HOST[:PORT][/CONFIG]
    url = https://a.example/clarens/ https://b.example/clarens/
    protocol = xmlrpc                  # or jsonrpc
    ca = /etc/clarens/ca.crt           # trust this CA (default: the system's)
    cert = ~/.config/clarens/me.crt    # a client certificate, with its key
    key = ~/.config/clarens/me.key
    user = alice                       # Basic authentication, the password in a file of its own
    password_file = ~/.config/clarens/password
    timeout = 30                       # seconds a call may take, its retries included
    max_answer = 67108864              # bytes: a larger answer is refused (64 MiB)
    idempotent = burner.status burner.images echo.*    # may run twice: retried until the timeout
    # ssh:// URLs: what runs on the remote host (split into words, no shell), and the ssh command
    remote = env PYTHONPATH=/home/alice/clarens /usr/bin/python3 -m clarens.stdio
    ssh = ssh -i ~/.ssh/clarens -o ConnectTimeout=5

Moving an application from a local host to a cluster is a change of ``url``.
"""

from __future__ import annotations

import configparser
import os
import re

from clarens.client.errors import ClientConfigError
from clarens.client.service import Service
from clarens.config import ConfigError, read_ini

ENV = "CLARENS_CLIENT_CONF"
SEARCH = ("/etc/clarens/client.conf", "~/.config/clarens/client.conf")
KEYS = ("url", "protocol", "ca", "cert", "key", "user", "password_file", "timeout", "max_answer", "idempotent",
        "remote", "ssh")
PATHS = ("ca", "cert", "key", "password_file")


def files() -> list[str]:
    """The configuration files that apply, in the order they are read (later ones win)."""
    named = os.environ.get(ENV)
    if named:
        return [os.path.expanduser(named)]
    return [p for p in (os.path.expanduser(p) for p in SEARCH) if os.path.exists(p)]


def _line(path: str, section: str, key: str | None = None) -> int | None:
    """The line of ``[section]`` (or of ``key`` in it) in ``path``, for error messages."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    inside = None
    for number, text in enumerate(lines, 1):
        header = re.match(r"\s*\[(.*)\]\s*$", text)
        if header:
            inside = header.group(1).strip() == section
            if inside and key is None:
                return number
        elif inside and key is not None and re.match(r"\s*%s\s*[=:]" % re.escape(key), text):
            return number
    return None


class _Source:
    """Which file each section's keys came from."""

    def __init__(self, paths: list[str]):
        self.parser = configparser.ConfigParser(interpolation=None)
        self.origin: dict[tuple[str, str], str] = {}
        for path in paths:
            try:
                one = read_ini(path)
            except ConfigError as e:
                raise ClientConfigError(str(e)) from None
            for section in one.sections():
                if not self.parser.has_section(section):
                    self.parser.add_section(section)
                for key, value in one.items(section):
                    self.parser.set(section, key, value)
                    self.origin[(section, key)] = path
                self.origin.setdefault((section, ""), path)

    def where(self, section: str, key: str | None = None) -> str:
        path = self.origin.get((section, key or ""), self.origin.get((section, ""), "?"))
        line = _line(path, section, key)
        return "%s, line %s" % (path, line) if line else path


def service(name: str, paths: list[str] | None = None, **overrides) -> Service:
    """The service called ``name`` in the client configuration (``paths``: these files instead).
    ClientConfigError naming the file and line if it is missing or broken."""
    paths = files() if paths is None else paths
    if not paths:
        raise ClientConfigError("no client configuration to find service %r in: create ~/.config/clarens/client.conf"
                                " or /etc/clarens/client.conf, or set %s" % (name, ENV))
    source = _Source(paths)
    section = "service:" + name
    if not source.parser.has_section(section):
        known = [s[len("service:"):] for s in source.parser.sections() if s.startswith("service:")]
        raise ClientConfigError("no [%s] in %s (services: %s)" % (section, " or ".join(paths),
                                                                  ", ".join(known) or "none"))
    values = dict(source.parser.items(section))
    for key in values:
        if key not in KEYS:
            raise ClientConfigError("%s: [%s] has an unknown key %r (known: %s)"
                                    % (source.where(section, key), section, key, ", ".join(KEYS)))
    urls = values.get("url", "").split()
    if not urls:
        raise ClientConfigError("%s: [%s] needs url = ..." % (source.where(section), section))
    settings: dict = {k: os.path.expanduser(values[k]) if k in PATHS else values[k]
                      for k in ("protocol", "ca", "cert", "key", "remote", "ssh") if k in values}
    for key, kind, what in (("timeout", float, "a number of seconds"), ("max_answer", int, "a number of bytes")):
        if key in values:
            try:
                settings[key] = kind(values[key])
            except ValueError:
                raise ClientConfigError("%s: %s = %r is not %s"
                                        % (source.where(section, key), key, values[key], what)) from None
    if "user" in values:
        settings["user"] = values["user"]
        if "password_file" in values:
            password_file = os.path.expanduser(values["password_file"])
            try:
                with open(password_file, encoding="utf-8") as f:
                    settings["password"] = f.readline().rstrip("\r\n")
            except OSError as e:
                raise ClientConfigError("%s: password_file %s: %s" % (source.where(section, "password_file"),
                                                                      password_file, e.strerror)) from None
    settings["idempotent"] = values.get("idempotent", "").split()
    settings.update(overrides)
    try:
        return Service(urls, **settings)
    except (ValueError, OSError) as e:   # a bad protocol or URL, an unreadable certificate
        raise ClientConfigError("%s: [%s]: %s" % (source.where(section), section, e)) from None
