"""What a client call can raise besides :class:`clarens.Fault`."""

from __future__ import annotations


class TransportError(Exception):
    """A call that got no answer in its protocol from ``url``; ``cause`` says why.

    ``sent`` is False only when the request provably never reached a server (the
    connection was refused, the TLS handshake or SSH login failed, the front answered
    503): only then may it go to another server without being marked idempotent.
    """

    def __init__(self, url: str, cause: object, sent: bool = True):
        super().__init__("%s: %s" % (url, cause))
        self.url = url
        self.cause = cause
        self.sent = sent


class AllServersDown(TransportError):
    """Every server of a pool failed the call: ``failures`` holds each server's TransportError."""

    def __init__(self, failures: list[TransportError]):
        super().__init__(" ".join(f.url for f in failures), "; ".join(str(f) for f in failures),
                         sent=any(f.sent for f in failures))
        self.failures = failures

    def __str__(self) -> str:
        return "every server failed: %s" % self.cause


class ClientConfigError(Exception):
    """A client configuration that cannot be used; the message names the file and line."""
