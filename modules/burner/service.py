# SPDX-License-Identifier: Apache-2.0
"""The burner as this process runs it: its settings, its helpers, its images, and the
sweep of partial uploads nobody resumed.

Built once per Apache child by ``_startup_init`` (:func:`start`); the methods and
routes reach it with :func:`current`.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from clarens import context, once_per_server
from clarens.burnerd.images import HEAD_SIZE, head_problem
from clarens.db import Database
from clarens.web.uploads import Uploads

from .helpers import Helper, Helpers
from .images import ImageStore
from .settings import Settings

SWEEP_EVERY = 600        # seconds between two sweeps of expired partial uploads, per process


class Burner:
    """The burner in this process."""

    def __init__(self, settings: Settings, db: Database, log: logging.Logger):
        self.settings = settings
        self.log = log
        uploads = Uploads(settings.images_dir, max_size=settings.max_image, reserve=settings.upload_reserve,
                          expiry=settings.partial_upload_expiry, check_head=head_problem, head_size=HEAD_SIZE,
                          per_user=settings.unfinished_uploads, records=db)
        self.store = ImageStore(settings.images_dir, db, uploads, log)
        self.helpers = Helpers((Helper(host, socket) for host, socket in settings.helpers), db)
        self.swept = time.monotonic()

    def caller(self) -> tuple[str, bool]:
        """Who is calling, and whether they are in the burner's admin group."""
        identity = context.current().identity
        return identity.name, self.settings.admin_group in identity.groups

    def sweep(self) -> None:
        """Remove partial uploads nobody has resumed within partial_upload_hours (and any left
        behind by a process that died while linking a finished one into place)."""
        self.swept = time.monotonic()
        for path in self.store.uploads.sweep():
            self.log.info("removed stale partial upload %s", path)

    def sweep_if_due(self) -> None:
        """Sweep if this process has not for SWEEP_EVERY seconds (callers who list or upload pay for it)."""
        if time.monotonic() - self.swept > SWEEP_EVERY:
            self.sweep()


_burner: Burner | None = None


def start(config: Any, dbs: Any, log: logging.Logger) -> Burner:
    """Build this process's burner from ``[module:burner]`` (the module's ``_startup_init``), and
    sweep stale partial uploads once per server start."""
    global _burner
    settings = Settings.from_config(config)
    _burner = Burner(settings, dbs.open("burner"), log)
    if not os.path.isdir(settings.images_dir):
        # Not a warning: every local: call and SSH session boots a host, most of them never touching
        # images; a call that does fails, and that is logged with the path.
        log.info("images_dir %s does not exist: uploads and burns will fail until it does", settings.images_dir)
    once_per_server("burner-sweep", _burner.sweep)
    return _burner


def current() -> Burner:
    """This process's burner (RuntimeError before :func:`start`)."""
    if _burner is None:
        raise RuntimeError("the burner module has not been started in this process")
    return _burner
