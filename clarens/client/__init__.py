# SPDX-License-Identifier: Apache-2.0
"""The Python client of a Clarens host.

    from clarens.client import connect, service
    svc = connect("https://a.example/clarens/", cert="me.crt", key="me.key", ca="ca.crt")
    svc.echo.echo([1, 2])                 # attribute calls, like xmlrpc.client
    svc.call("burner.status", 7)          # the explicit form
    svc.batch([("echo.echo", [1]), ("burner.drives", [])])   # results or Faults, in order
    burner = service("burner")            # named in the client configuration (clarens.client.config)

URLs: ``http(s)://HOST/clarens/``; ``local:[CONFIG]`` (the host in this process,
as the OS user); ``ssh://[USER@]HOST[:PORT][/CONFIG]`` (the host started over
OpenSSH for the session, as the SSH user).  Several URLs make a failover pool.

Errors (:mod:`clarens.client.errors`): a fault is raised as :class:`clarens.Fault`
(``code``, ``message``), the class service modules raise; no answer at all, or a
malformed one, is a :class:`TransportError` (``url``, ``cause``, ``sent``,
``transient``, ``status``), or :class:`AllServersDown` for a pool; an upload refused
is :class:`UploadRefused`, one that kept failing :class:`UploadFailed`; a broken client
configuration :class:`ClientConfigError`.

A call never runs twice by accident: it is sent again, to another server or the
same one, only if it provably never reached the first, or if it is idempotent (see
:func:`clarens.client.pool.may_retry`); then it is tried until its timeout runs out.
"""

from clarens.client.config import service
from clarens.client.errors import AllServersDown, ClientConfigError, TransportError, UploadFailed, UploadRefused
from clarens.client.service import Service, connect
from clarens.faults import Fault

__all__ = ["connect", "service", "Service", "Fault", "TransportError", "AllServersDown", "UploadRefused",
           "UploadFailed", "ClientConfigError"]
