# SPDX-License-Identifier: Apache-2.0
"""A request's way through the dispatcher, whatever carried it.

Apache (:mod:`clarens.handler`), a ``local:`` client in the same process
(:mod:`clarens.client.transports`) and an SSH session (:mod:`clarens.stdio`) all
serve an RPC body the same way: a :class:`~clarens.context.CallContext` for the
caller, with the ACL groups it is in, current while the request is served (``with
ctx:``, which then logs the request's faults, one line per code); the codec's
``respond``, every call going through the dispatcher.
Nothing here knows about mod_python.
"""

from __future__ import annotations

import functools
from types import ModuleType

from clarens import context
from clarens import host as host_mod
from clarens.identity import Identity
from clarens.protocol import jsonrpc, xmlrpc

# The codec for each RPC Content-Type.  Both have the same shape: PROTOCOL, CONTENT_TYPE,
# respond(body, call, report, limits) and dumps_fault(fault).
CODECS: dict[str, ModuleType] = {"text/xml": xmlrpc, "application/xml": xmlrpc,
                                 "application/json": jsonrpc, "application/json-rpc": jsonrpc}


def codec_for(content_type: str | None) -> ModuleType | None:
    """The codec a Content-Type names (parameters, case and spaces aside), or None."""
    raw = content_type or ""
    return CODECS.get(raw) or CODECS.get(raw.partition(";")[0].strip().lower())


def context_for(host: host_mod.Host, request, protocol: str, caller: Identity,
                address: str | None = None) -> context.CallContext:
    """The one place a request's CallContext is made: ``caller`` with the ACL groups it is in,
    and a list gathering the request's faults, which ``with ctx:`` logs when the request ends."""
    # Once per request: a policy change applies from every child's next request on.
    if host.guard is not None:
        caller = host.guard.identify(caller)
    ctx = context.CallContext(host, request, caller, protocol, address=address)
    ctx.faults = []
    return ctx


def respond(host: host_mod.Host, ctx: context.CallContext, codec: ModuleType, body: bytes) -> bytes | None:
    """The codec's answer to ``body`` (None: notifications only), every call going through the
    dispatcher as the caller in ``ctx``, which must be current; faults the dispatcher never sees
    (malformed, too large, unencodable result) are noted through ``ctx``."""
    return codec.respond(body, functools.partial(host.dispatcher.call, ctx), ctx.note_fault, host.limits)


def serve(host: host_mod.Host, caller: Identity, codec: ModuleType, body: bytes, address: str = "-") -> bytes | None:
    """One whole RPC request outside Apache: ``body`` answered as ``caller`` calling from ``address``."""
    with context_for(host, None, codec.PROTOCOL, caller, address) as ctx:
        return respond(host, ctx, codec, body)
