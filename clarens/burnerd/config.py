# SPDX-License-Identifier: Apache-2.0
"""The helper's configuration: an INI file with ``[burnerd]`` and one ``[drive:NAME]`` per writer.

Relative paths are relative to the directory holding the file.  Every key is
documented in the shipped example, ``conf/burnerd.conf``.  Unknown sections and
keys are errors, so a typo cannot silently weaken a setting.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
from dataclasses import dataclass

from clarens.config import ConfigError, Settings, read_ini

DEFAULTS = {
    "socket": "/run/clarens-burner/burnerd.sock",
    "socket_mode": "0660",
    "socket_owner": "",
    "socket_group": "www-data",
    "allowed_uids": "www-data",
    "images_dir": "/srv/clarens/images",
    "db": "/var/lib/clarens-burner/jobs.tdb",
    "keep_jobs": "100",
    "max_speed": "16",
    "cancel_grace": "10",
    "xorriso": "/usr/bin/xorriso",
    "log_level": "info",
    "user": "clarens-burner",
}
DRIVE_KEYS = {"kind", "dev", "capacity_mb", "max_speed", "fifo_size"}
DRIVE_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,32}\Z")
FIFO_SIZE_RE = re.compile(r"[0-9]+[km]?\Z")
STDIO_PREFIX = "stdio:"

__all__ = ["BurnerConfig", "ConfigError", "DriveConfig", "load"]


@dataclass(frozen=True)
class DriveConfig:
    """One writer.  ``address`` is what xorriso is given after ``dev=``."""
    name: str
    kind: str            # a key of ADDRESSES: "stdio" (a regular file standing in for the disc) or "device"
    address: str         # "stdio:/abs/path" or "/dev/sr0"
    capacity: int        # bytes the medium holds (capacity_mb * 10**6)
    max_speed: int
    fifo_size: str

    @property
    def path(self) -> str:
        """The file or device node behind the drive."""
        return self.address.removeprefix(STDIO_PREFIX)


@dataclass(frozen=True)
class BurnerConfig:
    """The parsed configuration."""
    path: str
    socket: str
    socket_mode: int
    socket_uid: int      # -1: leave as created
    socket_gid: int      # -1: leave as created
    allowed_uids: frozenset[int]
    images_dir: str      # real path
    db: str
    keep_jobs: int
    max_speed: int
    cancel_grace: int
    xorriso: str
    log_level: str
    user: str            # the account a helper started as root drops to (resolved when it starts)
    drives: dict[str, DriveConfig]


def _uid(value: str, where: str) -> int:
    if value.isdigit():
        return int(value)
    try:
        return pwd.getpwnam(value).pw_uid
    except KeyError:
        raise ConfigError("%s: no such user %r" % (where, value)) from None


def _gid(value: str, where: str) -> int:
    if value.isdigit():
        return int(value)
    try:
        return grp.getgrnam(value).gr_gid
    except KeyError:
        raise ConfigError("%s: no such group %r" % (where, value)) from None


def _mode(value: str, where: str) -> int:
    try:
        mode = int(value, 8)
    except ValueError:
        raise ConfigError("%s: socket_mode = %r is not an octal mode" % (where, value)) from None
    if mode & ~0o770:
        # Anyone outside owner and group could connect: the uid check would be the only barrier.
        raise ConfigError("%s: socket_mode = %s grants access to others; use at most 0770" % (where, value))
    return mode


def _stdio_address(dev: str, base: str, where: str) -> str:
    if not dev.startswith(STDIO_PREFIX):
        raise ConfigError("%s: kind = stdio needs dev = stdio:PATH" % where)
    return STDIO_PREFIX + os.path.normpath(os.path.join(base, dev[len(STDIO_PREFIX):]))


def _device_address(dev: str, base: str, where: str) -> str:
    if dev.startswith(STDIO_PREFIX) or not os.path.isabs(dev):
        raise ConfigError("%s: kind = device needs an absolute device path such as /dev/sr0" % where)
    return dev


# The kinds of drive: for each, the drive's address (what xorriso is given after dev=) from its
# ``dev`` setting, relative paths relative to ``base``.  clarens.burnerd.backends has a backend for each.
ADDRESSES = {"stdio": _stdio_address, "device": _device_address}


def _drive(name: str, values: dict[str, str], base: str, max_speed: int, where: str) -> DriveConfig:
    if not DRIVE_NAME_RE.match(name):
        raise ConfigError("%s: drive name %r: use 1-32 letters, digits, _ or -" % (where, name))
    unknown = set(values) - DRIVE_KEYS
    if unknown:
        raise ConfigError("%s: unknown setting(s) %s" % (where, ", ".join(sorted(unknown))))
    settings = Settings(values, where)
    dev = values.get("dev", "").strip()
    if not dev:
        raise ConfigError("%s: missing setting 'dev'" % where)
    kind = values.get("kind", "stdio" if dev.startswith(STDIO_PREFIX) else "device").strip()
    if kind not in ADDRESSES:
        raise ConfigError("%s: kind = %r is neither %s" % (where, kind, " nor ".join(ADDRESSES)))
    address = ADDRESSES[kind](dev, base, where)
    fifo_size = values.get("fifo_size", "64m").strip().lower()
    if not FIFO_SIZE_RE.match(fifo_size):
        raise ConfigError("%s: fifo_size = %r: use a number with optional k or m" % (where, fifo_size))
    return DriveConfig(name=name, kind=kind, address=address,
                       capacity=settings.get_int("capacity_mb", minimum=1) * 10**6,
                       max_speed=settings.get_int("max_speed", max_speed, minimum=1),
                       fifo_size=fifo_size)


def load(path: str) -> BurnerConfig:
    """Read and check the configuration file at ``path``."""
    path = os.path.abspath(path)
    parser = read_ini(path)
    base = os.path.dirname(path)
    values = dict(DEFAULTS)
    drive_sections = {}
    for section in parser.sections():
        if section == "burnerd":
            unknown = set(parser[section]) - set(DEFAULTS)
            if unknown:
                raise ConfigError("%s [burnerd]: unknown setting(s) %s" % (path, ", ".join(sorted(unknown))))
            values.update(parser[section])
        elif section.startswith("drive:"):
            drive_sections[section[6:]] = dict(parser[section])
        else:
            raise ConfigError("%s: unknown section [%s] (expected [burnerd] or [drive:NAME])" % (path, section))
    where = "%s [burnerd]" % path
    settings = Settings(values, where)
    max_speed = settings.get_int("max_speed", minimum=1)
    drives = {name: _drive(name, v, base, max_speed, "%s [drive:%s]" % (path, name))
              for name, v in drive_sections.items()}
    allowed = frozenset(_uid(u, where) for u in values["allowed_uids"].replace(",", " ").split())
    if not allowed:
        raise ConfigError("%s: allowed_uids is empty: nobody could use the helper" % where)
    xorriso = values["xorriso"].strip()
    if not os.path.isabs(xorriso):
        raise ConfigError("%s: xorriso = %r must be an absolute path" % (where, xorriso))
    user = values["user"].strip()
    if not user:
        raise ConfigError("%s: user is empty: name the account the helper runs as" % where)
    log_level = values["log_level"].strip().upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("%s: log_level = %r is not debug, info, warning or error" % (where, values["log_level"]))

    def rel(key: str) -> str:
        return os.path.normpath(os.path.join(base, values[key].strip()))

    return BurnerConfig(
        path=path,
        socket=rel("socket"),
        socket_mode=_mode(values["socket_mode"].strip(), where),
        socket_uid=_uid(values["socket_owner"].strip(), where) if values["socket_owner"].strip() else -1,
        socket_gid=_gid(values["socket_group"].strip(), where) if values["socket_group"].strip() else -1,
        allowed_uids=allowed,
        images_dir=os.path.realpath(rel("images_dir")),
        db=rel("db"),
        keep_jobs=settings.get_int("keep_jobs", minimum=0),
        max_speed=max_speed,
        cancel_grace=settings.get_int("cancel_grace", minimum=1),
        xorriso=xorriso,
        log_level=log_level,
        user=user,
        drives=drives,
    )
