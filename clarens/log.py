# SPDX-License-Identifier: Apache-2.0
"""Logging to Apache's error log (or to stderr outside Apache).

Every logger under ``clarens`` (the host's, and ``clarens.module.NAME`` given to
each service module) ends up here.  Multi-line messages (tracebacks) are written
line by line, as Apache's log expects.
"""

from __future__ import annotations

import logging
import sys

try:
    from mod_python import apache as _apache
except ImportError:
    _apache = None

ROOT = "clarens"


class ApacheHandler(logging.Handler):
    """Writes records to the main server's error log through mod_python."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = (_apache.APLOG_ERR if record.levelno >= logging.ERROR else
                     _apache.APLOG_WARNING if record.levelno >= logging.WARNING else
                     _apache.APLOG_INFO if record.levelno >= logging.INFO else _apache.APLOG_DEBUG)
            for line in self.format(record).splitlines():
                _apache.log_error(line, level, _apache.main_server)
        except Exception:
            self.handleError(record)


def setup(level: str = "INFO") -> logging.Logger:
    """Configure the ``clarens`` logger once per process and return it."""
    root = logging.getLogger(ROOT)
    if not root.handlers:
        if _apache is not None and _apache.main_server is not None:
            handler: logging.Handler = ApacheHandler()
            handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        else:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.propagate = False
    root.setLevel(level)
    return root


def for_module(name: str) -> logging.Logger:
    """The logger handed to a service module's ``_startup_init``."""
    return logging.getLogger("%s.module.%s" % (ROOT, name))
