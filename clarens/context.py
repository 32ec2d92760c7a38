# SPDX-License-Identifier: Apache-2.0
"""The call context: what service code may know and ask about the call it is serving.

This is the service modules' API at call time (with what ``_startup_init``
receives: the module's config, the tdb registry and a logger); the host's own
objects are private.  Inside a service method::

    from clarens import context
    ctx = context.current()
    ctx.identity.name           # "/C=UK/O=Home/CN=Alice", "alice" or "anonymous"
    ctx.client_address          # "192.0.2.7"
    ctx.method                  # "burner.burn"
    ctx.methods["echo.echo"]    # the method table, read-only: .name, .signatures, .help
    ctx.may_call("acl.show")    # would the policy let the caller call it?
    ctx.explain("acl.show")     # {allowed, entry, reason, groups}: which entry decides, and why

The context reaches its host only through :class:`HostServices`: what it needs of it.
"""

from __future__ import annotations

import contextvars
import os
import types
from typing import Any, Mapping, Protocol

from clarens.acl.model import Decision, Policy
from clarens.faults import ACCESS_DENIED, INVALID_PARAMS, SERVICE_UNAVAILABLE, Fault
from clarens.identity import ANONYMOUS, Identity, normal_name
from clarens.loader import ServiceModule
from clarens.registry import Method
from clarens.sessions import SOURCES as SESSION_SOURCES
from clarens.sessions import Sessions

_current: contextvars.ContextVar[CallContext] = contextvars.ContextVar("clarens_call_context")


class HostServices(Protocol):
    """What a call context needs from the host serving it: the one way from service code to
    the host's objects.  :class:`clarens.host.Host` implements it; unit tests use fakes."""

    @property
    def methods(self) -> Mapping[str, Method]:
        """Every method offered, by full name."""

    @property
    def modules(self) -> Mapping[str, ServiceModule]:
        """Every service module found, loaded or failed, by name."""

    @property
    def admin_group(self) -> str:
        """The group whose members administer this server."""

    def identify(self, identity: Identity) -> Identity:
        """``identity`` with the groups the policy in force puts it in."""

    def allows(self, identity: Identity, method: str) -> bool:
        """Whether ``identity`` may call ``method`` now (the enforcing check)."""

    def decide(self, identity: Identity, method: str) -> Decision | None:
        """Whether ``identity`` may call ``method``, which entry decides and why; None when access
        control is off."""

    def policy(self) -> Policy | None:
        """The live policy, or None when access control is off."""

    def multicall(self, ctx: CallContext, calls: list) -> list:
        """Run ``calls`` (``[{methodName, params}]``) as the caller in ``ctx``, each on its own."""

    def note(self, ctx: CallContext, method: str, fault: Fault) -> None:
        """Record a fault of ``method`` in the request of ``ctx``, for the log."""

    def end(self, ctx: CallContext) -> None:
        """The request of ``ctx`` is over: log its faults."""

    def facts(self) -> dict:
        """Facts about the server process that anyone may see (:meth:`CallContext.server`)."""

    def sessions(self) -> Sessions | None:
        """The server's sessions, or None if it has none."""

    def session_sync(self, with_urls: bool) -> tuple[list[dict], list[str]]:
        """How the fetching of ``session_peers``' revocations goes, per peer, and its problems."""

    def check_password(self, name: str, password: bytes, address: str, secure: bool) -> Identity:
        """Who user ``name`` is, proved by ``password`` from ``address``: IdentityRefused (logged) if
        refused, Fault -32002 if no password can be checked."""

    def passwords_accepted(self) -> bool:
        """Whether the server checks passwords."""


class CallContext:
    """One request's context, shared by every call it carries (e.g. multicall sub-calls).

    ``with ctx:`` makes it the current one (:func:`current`) while the request is served, and
    then logs the request's faults."""

    __slots__ = ("_host", "request", "identity", "protocol", "method", "_debug", "faults", "_address", "_token")

    def __init__(self, host: HostServices, request: Any = None, identity: Identity = ANONYMOUS,
                 protocol: str = "xmlrpc", debug: bool | None = None, address: str | None = None):
        self._host = host
        self.request = request                # the mod_python request, or None outside Apache
        self._address = address               # where the caller is: outside Apache (an SSH client's address),
                                              # or as a trusted front end said
        self.identity = identity
        self.protocol = protocol              # "xmlrpc", "jsonrpc", or "http" (web routes)
        self.method: str | None = None        # the method being called, set by the dispatcher
        self._debug = debug
        # (method, fault) of each call refused or failed, gathered for one log line per code
        # when the request ends (clarens.faultlog); None: log each at once (outside a request).
        self.faults: list[tuple[str, Fault]] | None = None
        self._token: contextvars.Token | None = None

    def __enter__(self) -> CallContext:
        self._token = _current.set(self)
        return self

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        try:
            self._host.end(self)
        finally:
            if self._token is not None:
                _current.reset(self._token)

    @property
    def client_address(self) -> str:
        """The client's IP address (read from the request only when someone asks): where a trusted
        front end says the client is, if the request came through one."""
        if self._address is not None:
            return self._address
        if self.request is not None:
            return self.request.useragent_ip
        return "-"

    @property
    def debug(self) -> bool:
        """True when ``PythonDebug On`` applies to this request: faults then carry tracebacks."""
        if self._debug is None:
            self._debug = self.request is not None and self.request.get_config().get("PythonDebug") == "1"
        return self._debug

    def describe(self) -> str:
        """``identity@address`` for log lines."""
        return "%s@%s" % (self.identity.name, self.client_address)

    def note_fault(self, fault: Fault) -> None:
        """Record a refusal the dispatcher never saw (a web route's own, a malformed request...)
        as the current method's: it is logged with the request's other faults when the request
        ends, one line per code, rate-limited and summarised across the server (clarens.refusals)."""
        self._host.note(self, self.method or "-", fault)

    # -- what service modules may ask of the host ---------------------------------------

    @property
    def methods(self) -> Mapping[str, Method]:
        """Every method this server offers, by full name (read-only)."""
        return types.MappingProxyType(self._host.methods)

    def may_call(self, method: str) -> bool:
        """Whether the policy lets the caller call ``method`` now."""
        return self._host.allows(self.identity, method)

    def explain(self, method: str, identity: Identity | None = None) -> dict:
        """Whether ``identity`` (default: the caller) may call ``method``, which entry decides and
        why, and the identity's groups: ``{allowed, entry, reason, groups}``."""
        who = self._host.identify(identity or self.identity)
        decision = self._host.decide(who, method)
        if decision is None:
            return {"allowed": True, "entry": None, "reason": "access control is off on this server",
                    "groups": list(who.groups)}
        return dict(decision.describe(), groups=list(who.groups))

    def policy(self) -> Policy | None:
        """The live access-control policy, or None when access control is off."""
        return self._host.policy()

    def multicall(self, calls: list) -> list:
        """Run ``calls`` (``[{methodName, params}]``) as this caller, each on its own (system.multicall)."""
        return self._host.multicall(self, calls)

    # -- sessions (clarens.sessions) ---------------------------------------------------------

    def sessions(self) -> Sessions:
        """The server's sessions (:class:`clarens.sessions.Sessions`: ``active``, ``revoke``, ``revoke_user``...);
        Fault -32002 if it has none (see its error log)."""
        sessions = self._host.sessions()
        if sessions is None:
            raise Fault(SERVICE_UNAVAILABLE, "sessions are unavailable on this server (see its error log)")
        return sessions

    def open_session(self) -> dict:
        """A new session for the caller, who proved who it is in this request with a password or a client
        certificate: ``{token, id, identity, source, issued, expires, idle_timeout}``.  Fault -32001 for
        any other caller (anonymous, or calling in a session already: a session never extends itself)."""
        return self._open_session(self.identity)

    def _open_session(self, who: Identity) -> dict:
        if who.session is not None:
            raise Fault(ACCESS_DENIED, "this call comes in a session already: a new one needs a password or a "
                                       "client certificate")
        if who.source not in SESSION_SOURCES:
            raise Fault(ACCESS_DENIED, "a session is opened by a caller who proves who it is: a password (Basic "
                                       "authentication, over HTTPS) or a client certificate")
        sessions = self.sessions()
        agent = self.request.headers_in.get("User-Agent", "") if self.request is not None else ""
        try:
            token, session = sessions.open(who.name, who.source, self.client_address, agent)
        except ValueError as e:
            raise Fault(ACCESS_DENIED, str(e)) from None
        return dict(session.describe(sessions.idle), token=token)

    def sign_in(self, name: str, password: bytes, secure: bool) -> dict:
        """Check user ``name``'s ``password`` as the host checks Basic credentials (throttled, over HTTPS
        only unless ``passwords_over_http``), then open a session as :meth:`open_session` does.
        IdentityRefused (logged) if the password is refused; Fault -32002 if no password can be checked."""
        return self._open_session(self._host.check_password(normal_name(name), password, self.client_address,
                                                             secure))

    def passwords_accepted(self) -> bool:
        """Whether this server checks passwords (``[server] htpasswd``)."""
        return self._host.passwords_accepted()

    def close_session(self) -> bool:
        """End the session this call comes in, on every host (for those of a cluster, within the bound
        of docs/scaling.md); True.  Fault -32602 if the call comes in none."""
        if self.identity.session is None:
            raise Fault(INVALID_PARAMS, "this call comes in no session (sign-out ends the one a token stands for)")
        return self.sessions().revoke(self.identity.session) or True

    @property
    def is_admin(self) -> bool:
        """Whether the caller is in the server's admin group (``[server] admin_group``)."""
        return self._host.admin_group in self.identity.groups

    def modules(self) -> list[dict]:
        """Every service module with its status and methods, and for failed ones their error.
        Where a module was loaded from, and why it failed, only for administrators: paths (a
        module's error often names a file) tell an attacker about the host."""
        out = [m.describe() for m in sorted(self._host.modules.values(), key=lambda m: m.name)]
        if not self.is_admin:
            for module in out:
                del module["path"]
                if "error" in module:
                    module["error"] = "failed to load: an administrator sees why (system.listModules, the error log)"
        return out

    def server(self) -> dict:
        """Facts about this server process: ``{started, startup_init_calls, modules_loaded,
        modules_failed, access_control, policy_digest, modules_digest, trust_digest, cluster}``, and
        ``pid`` for administrators.  ``access_control`` is on, off or failed (every call refused);
        ``policy_digest``, ``modules_digest`` and ``trust_digest`` are equal on hosts that decide
        alike, serve the same code and believe the same front ends (the policy's is "" unless
        access control is on)."""
        facts = self._host.facts()
        if self.is_admin:
            facts["pid"] = os.getpid()
        return facts

    def session_sync(self) -> tuple[list[dict], list[str]]:
        """Per peer of ``[server] session_peers`` (numbered from 1; its URL for administrators only: the
        cluster's inner addresses), when its session revocations were last fetched and the last error;
        and a problem for each not fetched from within the bound (:mod:`clarens.session_peers`)."""
        return self._host.session_sync(self.is_admin)


def current() -> CallContext:
    """The context of the call being served (LookupError outside a call)."""
    return _current.get()
