# SPDX-License-Identifier: Apache-2.0
"""The burner's settings: ``[module:burner]`` in ``clarens.conf``, read once per process.

``socket`` (the helper's socket; empty: no helper of this host's own), ``drive_hosts``
(``NAME=SOCKET`` pairs: the helpers of other hosts), ``images_dir`` (shared with the
helpers), ``max_image_mb`` (required: Apache's body limit for uploads is rendered from
it too, see :mod:`clarens.apacheconf`), ``upload_reserve_mb``, ``unfinished_upload_mb``,
``partial_upload_hours``, ``admin_group``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import references

MB = 1000 * 1000


@dataclass(frozen=True)
class Settings:
    """What ``[module:burner]`` says, checked."""
    images_dir: str
    max_image: int             # bytes
    upload_reserve: int        # bytes uploads leave free on the images directory's file system
    unfinished_uploads: int    # bytes one uploader's unfinished uploads may declare in all
    partial_upload_expiry: int  # seconds after which an untouched partial upload is removed
    helpers: tuple[tuple[str, str], ...]   # (host, socket): this host's own (host "") first
    admin_group: str

    @classmethod
    def from_config(cls, config: Any) -> Settings:
        """The settings in ``config`` (the module's, on top of ``[server]``'s); ConfigError or
        ValueError for a bad one."""
        max_image_mb = config.get_int("max_image_mb", minimum=1)
        return cls(images_dir=config.get("images_dir", "/srv/clarens/images"),
                   max_image=max_image_mb * MB,
                   upload_reserve=config.get_int("upload_reserve_mb", 1000, minimum=0) * MB,
                   unfinished_uploads=config.get_int("unfinished_upload_mb", max_image_mb, minimum=1) * MB,
                   partial_upload_expiry=config.get_int("partial_upload_hours", 48, minimum=1) * 3600,
                   helpers=parse_helpers(config.get("socket", "/run/clarens-burner/burnerd.sock"),
                                         config.get("drive_hosts", "")),
                   admin_group=config.get("admin_group", "admins"))


def parse_helpers(socket: str, drive_hosts: str) -> tuple[tuple[str, str], ...]:
    """(host, socket) of each helper of ``[module:burner]``: ``socket`` (this host's own, host "",
    unless empty) and ``drive_hosts``, ``NAME=SOCKET`` pairs separated by spaces.  ValueError for a
    malformed one."""
    found = {"": socket.strip()} if socket.strip() else {}
    for item in drive_hosts.split():
        host, sep, path = item.partition("=")
        if not sep or not references.HOST_RE.match(host) or not path.startswith("/"):
            raise ValueError("drive_hosts: %r is not NAME=/absolute/socket/path (NAME: letters, digits, _ . -)"
                             % item)
        if host in found:
            raise ValueError("drive_hosts: %s is named twice" % host)
        found[host] = path
    return tuple(found.items())
