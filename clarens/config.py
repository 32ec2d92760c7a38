# SPDX-License-Identifier: Apache-2.0
"""Server configuration: an INI file, overridable key by key from Apache.

The file (``conf/clarens.conf``) has a ``[server]`` section, an optional
``[certificate]`` section (subject fields every client certificate must carry),
and one ``[module:NAME]`` section per service module that wants settings.  Apache can
override any key with ``PythonOption clarens.SECTION.KEY VALUE`` (for example
``PythonOption clarens.server.db_dir /srv/clarens``) and name the file itself with
``PythonOption clarens.config PATH``.  Relative paths in ``[server]`` are relative
to the directory holding the file.
"""

from __future__ import annotations

import ast
import configparser
import os
from collections.abc import Mapping
from typing import Iterator

from clarens import proxies, sizing

# The configuration used when none is named (PythonOption clarens.config, --config): the
# checkout's own, or, where clarens is installed as a package (no checkout around it),
# the system's.
CHECKOUT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf", "clarens.conf")
SYSTEM_CONFIG = "/etc/clarens/clarens.conf"
DEFAULT_CONFIG = CHECKOUT_CONFIG if os.path.exists(CHECKOUT_CONFIG) else SYSTEM_CONFIG
OPTION_PREFIX = "clarens."
CONFIG_OPTION = "clarens.config"

SERVER_DEFAULTS = {
    "modules_path": "../modules",
    "db_dir": "/var/lib/clarens",
    "session_db_dir": "~/.local/state/clarens",
    "max_body": "10485760",
    "max_depth": "64",
    "max_items": "10000",
    "max_values": "100000",
    "max_base64": "10485760",
    "log_level": "info",
    "log_interval": "60",
    "log_lines": "20",
    "acl_dir": "../acl",
    "access_control": "on",
    "admin_group": "admins",
    "acl_audit_keep": "1000",
    "acl_audit_days": "365",
    "workers": "auto",
    "spare_workers": "auto",
    "cluster": "off",
    "trusted_proxies": "",
    "htpasswd": "/etc/clarens/htpasswd",
    "passwords_over_http": "off",
    "session_idle_minutes": "30",
    "session_lifetime_hours": "12",
    "session_key": "",
    "session_peers": "",
    "session_sync_seconds": "5",
}


class ConfigError(Exception):
    """The configuration is unusable; the message says which file, section and key."""


class Settings(Mapping):
    """A read-only mapping of string settings with typed accessors."""

    def __init__(self, values: Mapping[str, str], where: str = "configuration"):
        self._values = dict(values)
        self._where = where

    def __getitem__(self, key: str) -> str:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return "Settings(%r)" % self._values

    def get_int(self, key: str, default: int | None = None, minimum: int | None = None) -> int:
        """``key`` as an integer; ConfigError if it is not one (or below ``minimum``)."""
        if key not in self._values:
            if default is None:
                raise ConfigError("%s: missing setting %r" % (self._where, key))
            return default
        try:
            value = int(self._values[key])
        except ValueError:
            raise ConfigError("%s: %s = %r is not an integer" % (self._where, key, self._values[key])) from None
        if minimum is not None and value < minimum:
            raise ConfigError("%s: %s = %d is below %d" % (self._where, key, value, minimum))
        return value

    def get_bool(self, key: str, default: bool = False) -> bool:
        """``key`` as a boolean (on/off, yes/no, true/false, 1/0)."""
        if key not in self._values:
            return default
        value = self._values[key].strip().lower()
        if value in ("1", "on", "yes", "true"):
            return True
        if value in ("0", "off", "no", "false"):
            return False
        raise ConfigError("%s: %s = %r is not a boolean" % (self._where, key, self._values[key]))


class ServerConfig:
    """The parsed configuration: typed server settings plus per-module sections."""

    def __init__(self, path: str | None, server: dict[str, str], modules: dict[str, dict[str, str]],
                 certificate: dict[str, str] | None = None):
        self.path = path
        self.server = Settings(server, "[server] of %s" % (path or "defaults"))
        self._modules = modules
        self.cert_require = {k.upper(): v for k, v in (certificate or {}).items()}
        base = os.path.dirname(path) if path else os.getcwd()
        self.modules_path = [os.path.normpath(os.path.join(base, p))
                             for p in server["modules_path"].split(os.pathsep) if p.strip()]
        self.db_dir = os.path.normpath(os.path.join(base, server["db_dir"]))
        self.acl_dir = os.path.normpath(os.path.join(base, server["acl_dir"]))
        self.access_control = self.server.get_bool("access_control")
        self.admin_group = server["admin_group"].strip()
        self.acl_audit_keep = self.server.get_int("acl_audit_keep", minimum=1)
        self.acl_audit_days = self.server.get_int("acl_audit_days", minimum=1)
        self.max_body = self.server.get_int("max_body", minimum=1)
        self.max_depth = self.server.get_int("max_depth", minimum=1)
        self.max_items = self.server.get_int("max_items", minimum=1)
        self.max_values = self.server.get_int("max_values", minimum=1)
        self.max_base64 = self.server.get_int("max_base64", minimum=1)
        # Apache's pool as set: numbers, or None for auto (sized to the machine: clarens.sizing).
        self.workers_setting = self._auto_int("workers", minimum=2)
        self.spare_workers_setting = self._auto_int("spare_workers", minimum=1)
        self._pool: sizing.Pool | None = None
        if self.workers_setting is not None and self.spare_workers_setting is not None:
            self.pool_on()        # ConfigError now if spare_workers is not below workers
        self.log_level = server["log_level"].upper()
        if self.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError("%s: log_level = %r is not a logging level" % (self.server._where, server["log_level"]))
        self.log_interval = self.server.get_int("log_interval", minimum=1)
        self.log_lines = self.server.get_int("log_lines", minimum=1)
        # One of several hosts behind a front end: the ACL files are the only source of the policy.
        self.cluster = self.server.get_bool("cluster")
        # Passwords: the htpasswd file the host checks them against (None: it takes none).
        self.htpasswd = os.path.normpath(os.path.join(base, server["htpasswd"])) if server["htpasswd"].strip() \
            else None
        self.passwords_over_http = self.server.get_bool("passwords_over_http")
        # Sessions (clarens.sessions): how long one lasts unused and at most, and the key that signs
        # them (the same on every host of a cluster; None: one made for this host in db_dir).
        self.session_idle = 60 * self.server.get_int("session_idle_minutes", minimum=1)
        self.session_lifetime = 3600 * self.server.get_int("session_lifetime_hours", minimum=1)
        self.session_key = os.path.normpath(os.path.join(base, server["session_key"])) \
            if server["session_key"].strip() else None
        # The other hosts of a cluster, whose revocations this one fetches every session_sync_seconds.
        self.session_peers = server["session_peers"].split()
        for url in self.session_peers:
            if not url.startswith(("http://", "https://")):
                raise ConfigError("%s: session_peers: %r is not an http(s) URL" % (self.server._where, url))
        self.session_sync = self.server.get_int("session_sync_seconds", minimum=1)
        try:   # the front ends whose forwarding headers (client DN, address) are believed
            self.trusted_proxies = proxies.parse(server["trusted_proxies"])
        except ValueError as e:
            raise ConfigError("%s: trusted_proxies: %s" % (self.server._where, e)) from None

    def pool_on(self, machine: sizing.Machine | None = None) -> sizing.Pool:
        """Apache's pool: the numbers set, or what ``auto`` gives on ``machine`` (by default this one,
        once).  ConfigError if spare_workers is not below workers."""
        if machine is None and self._pool is not None:
            return self._pool
        try:
            pool = sizing.pool(self.workers_setting, self.spare_workers_setting, machine)
        except ValueError as e:
            raise ConfigError("%s: %s" % (self.server._where, e)) from None
        if machine is None:
            self._pool = pool
        return pool

    @property
    def workers(self) -> int:
        """The most requests Apache serves at once (MaxRequestWorkers) on this machine."""
        return self.pool_on().workers

    @property
    def spare_workers(self) -> int:
        """The idle processes Apache keeps ready (MinSpareServers) on this machine."""
        return self.pool_on().spare

    def _auto_int(self, key: str, minimum: int) -> int | None:
        """``key`` as an integer, or None for ``auto``."""
        return None if self.server[key].strip().lower() == "auto" else self.server.get_int(key, minimum=minimum)

    def for_module(self, name: str) -> Settings:
        """What ``_startup_init`` receives: server settings plus ``[module:NAME]`` (which wins)."""
        merged = dict(self.server)
        merged["db_dir"] = self.db_dir
        merged.update(self._modules.get(name, {}))
        return Settings(merged, "[module:%s] of %s" % (name, self.path or "defaults"))


def read_ini(path: str) -> configparser.ConfigParser:
    """Parse the INI file at ``path`` (no interpolation); ConfigError naming the file if unreadable."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except OSError as e:
        raise ConfigError("cannot read configuration %s: %s" % (path, e.strerror)) from None
    except configparser.Error as e:
        raise ConfigError(_syntax_error(path, e)) from None
    return parser


def _syntax_error(path: str, error: configparser.Error) -> str:
    """``PATH, line N: what`` for an INI syntax error (configparser's own messages repeat the path)."""
    if isinstance(error, configparser.MissingSectionHeaderError):     # a kind of ParsingError: first
        return "%s, line %s: a setting before any [section]" % (path, error.lineno)
    if isinstance(error, configparser.ParsingError):
        line, text = error.errors[0]     # configparser keeps the line as its repr()
        try:
            text = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            pass
        return "%s, line %d: not a [section] or a key = value line: %s" % (path, line, str(text).strip())
    if isinstance(error, configparser.DuplicateOptionError):
        return "%s, line %s: [%s] sets %s a second time" % (path, error.lineno, error.section, error.option)
    if isinstance(error, configparser.DuplicateSectionError):
        return "%s, line %s: a second [%s] section" % (path, error.lineno, error.section)
    return "configuration %s: %s" % (path, error)


def load(path: str | None, options: Mapping[str, str] | None = None) -> ServerConfig:
    """Read the file at ``path`` (None: defaults only) and apply ``clarens.*`` options."""
    options = dict(options or {})
    path = options.get(CONFIG_OPTION, path)
    if path is not None:
        path = os.path.abspath(path)
    parser = read_ini(path) if path is not None else configparser.ConfigParser(interpolation=None)
    server = dict(SERVER_DEFAULTS)
    modules: dict[str, dict[str, str]] = {}
    certificate: dict[str, str] = {}
    for section in parser.sections():
        if section == "server":
            unknown = set(parser[section]) - set(SERVER_DEFAULTS)
            if unknown:
                raise ConfigError("%s [server]: unknown setting(s) %s" % (path, ", ".join(sorted(unknown))))
            server.update(parser[section])
        elif section == "certificate":
            certificate.update(parser[section])
        elif section.startswith("module:") and section[7:]:
            modules[section[7:]] = dict(parser[section])
        else:
            raise ConfigError("%s: unknown section [%s] (expected [server], [certificate] or [module:NAME])"
                              % (path, section))
    for option, value in options.items():
        if option == CONFIG_OPTION or not option.startswith(OPTION_PREFIX):
            continue
        section, _, key = option[len(OPTION_PREFIX):].rpartition(".")
        if section == "server":
            if key not in SERVER_DEFAULTS:
                raise ConfigError("PythonOption %s: unknown server setting %r" % (option, key))
            server[key] = value
        elif section == "certificate" and key:
            certificate[key] = value
        elif section.startswith("module:") and section[7:] and key:
            modules.setdefault(section[7:], {})[key] = value
        else:
            raise ConfigError("PythonOption %s: expected clarens.server.KEY, clarens.certificate.FIELD "
                              "or clarens.module:NAME.KEY" % option)
    return ServerConfig(path, server, modules, certificate)
