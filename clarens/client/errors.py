# SPDX-License-Identifier: Apache-2.0
"""What the client library raises besides :class:`clarens.Fault` (all exported by :mod:`clarens.client`).

Besides these: ``ValueError`` for arguments that cannot work (an unknown protocol, a
URL of no known kind, a request header with a line break), ``TypeError`` for a value
the protocol cannot carry, and ``OSError`` when a certificate or key file cannot be
read, all raised before anything is sent.
"""

from __future__ import annotations


class TransportError(Exception):
    """A call that got no answer in its protocol from ``url``; ``cause`` says why.

    ``sent`` is False only when the request provably never reached a server (the
    connection was refused, the TLS handshake or SSH login failed, the front answered
    503): only then may it go to another server without being marked idempotent.
    ``transient`` is False when trying again cannot help (a certificate the server
    refuses, an answer over the size limit, a redirect, a login refused): the call then
    gives up on that server at once instead of retrying it until its timeout.
    ``status`` is the HTTP status of an answer that was not an RPC answer (None otherwise).
    """

    def __init__(self, url: str, cause: object, sent: bool = True, *, transient: bool = True,
                 status: int | None = None):
        super().__init__("%s: %s" % (url, cause))
        self.url = url
        self.cause = cause
        self.sent = sent
        self.transient = transient
        self.status = status


class AllServersDown(TransportError):
    """Every server of a pool failed the call: ``failures`` holds each server's last TransportError."""

    def __init__(self, failures: list[TransportError]):
        super().__init__(" ".join(f.url for f in failures), "; ".join(str(f) for f in failures),
                         sent=any(f.sent for f in failures), transient=any(f.transient for f in failures))
        self.failures = failures

    def __str__(self) -> str:
        return "every server failed: %s" % self.cause


class UploadRefused(Exception):
    """The server refused the upload: ``status`` (HTTP) and its ``message``."""

    def __init__(self, status: int, message: str, retry_after: float | None = None, offset: int | None = None):
        super().__init__("upload refused (HTTP %d): %s" % (status, message))
        self.status = status
        self.message = message
        self.retry_after = retry_after      # the same upload is still running: try again after this
        self.offset = offset                # the server holds this much, not what the request assumed


class UploadFailed(TransportError):
    """The upload could not be completed: the connection kept failing (a TransportError)."""


class ClientConfigError(Exception):
    """A client configuration that cannot be used; the message names the file and line."""
