# SPDX-License-Identifier: Apache-2.0
"""Sign in once: a password user's calls carry a session token, not the password.

A host checks a password with bcrypt (about 50 ms of CPU) and throttles the
attempts; a session token costs it microseconds.  So a :class:`SessionTransport`
wraps the HTTP(S) transport of a service that has ``user`` and ``password``: its
first call opens a session (``system.auth``, the only request that carries the
password), every call sends ``Authorization: Bearer TOKEN``, a renewed token the
host hands back (``X-Clarens-Session``) replaces the old one, and when the host
refuses the token (expired, revoked, the password changed: 401 with a ``Bearer``
challenge) the transport signs in again, once, and sends the call again: a call
refused so never ran.  A host without sessions (``system.auth`` unknown, or
sessions unavailable there) gets the password with every call, as before.

:class:`TokenFile` keeps tokens between processes (the command lines use it:
``~/.cache/clarens/sessions``, readable by its owner only), so that a script
calling ``clarens call`` a hundred times signs in once.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
import threading
import time
from typing import Callable, Mapping

from clarens.client import wire as wire_mod
from clarens.client.errors import ClientConfigError, TransportError
from clarens.client.transports import Answer, Http, basic_authorization
from clarens.faults import METHOD_NOT_FOUND, SERVICE_UNAVAILABLE, Fault

RENEWAL = "x-clarens-session"     # an answer's renewed token (clarens.sessions.RENEWAL_HEADER)
NO_SESSIONS = ""                  # what a host without sessions is remembered as


def asked_password(user: str) -> Callable[[], str]:
    """The command lines' password of ``user``: ``$CLARENS_PASSWORD``, else asked on the terminal, only when
    a session must be opened (a token kept from an earlier run needs none); ClientConfigError when there is
    neither (a script, a pipe)."""
    def ask() -> str:
        password = os.environ.get("CLARENS_PASSWORD")
        if password:
            return password
        if not sys.stdin.isatty():
            raise ClientConfigError("no password for %s: set CLARENS_PASSWORD (there is no terminal to ask on)"
                                    % user)
        return getpass.getpass("password for %s: " % user)
    return ask


def default_token_file() -> str:
    """Where the command lines keep their session tokens."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "clarens", "sessions")


class TokenFile:
    """Session tokens by URL and user, with when each session ends at the latest, in a JSON file only its
    owner may read (0600, in a 0700 directory).  Ended ones are dropped whenever it is written."""

    def __init__(self, path: str, clock: Callable[[], float] = time.time):
        self.path = path
        self.clock = clock
        self._lock = threading.Lock()

    def _read(self) -> dict[str, dict]:
        try:
            with open(self.path, encoding="utf-8") as f:
                kept = json.load(f)
        except (OSError, ValueError):
            return {}
        now = self.clock()
        return {k: v for k, v in kept.items() if isinstance(v, dict) and isinstance(v.get("token"), str)
                and isinstance(v.get("expires"), (int, float)) and v["expires"] > now} if isinstance(kept, dict) else {}

    def get(self, key: str) -> tuple[str, float] | None:
        """(token, expires) kept for ``key``, unless its session has ended."""
        found = self._read().get(key)
        return (found["token"], found["expires"]) if found else None

    def put(self, key: str, token: str | None, expires: float = 0) -> None:
        """Keep ``token`` for ``key`` (None: forget it); a file that cannot be written keeps nothing."""
        with self._lock:
            kept = self._read()
            if token is None:
                kept.pop(key, None)
            else:
                kept[key] = {"token": token, "expires": expires}
            tmp = "%s.%d.tmp" % (self.path, os.getpid())
            try:
                os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(kept, f)
                os.replace(tmp, self.path)
            except OSError:
                pass


class SessionTransport:
    """``inner`` (an :class:`~clarens.client.transports.Http` without credentials of its own), calling as
    ``user`` in a session opened with ``password`` (a string, or a function asked for it when it is
    first needed); ``tokens``: where tokens outlive this object."""

    def __init__(self, inner: Http, wire: wire_mod.Wire, user: str, password: str | Callable[[], str],
                 tokens: TokenFile | None = None):
        self.inner = inner
        self.url = inner.url
        self.wire = wire
        self.user = user
        self._password = password
        self._tokens = tokens
        self._key = "%s %s" % (inner.url, user)
        kept = tokens.get(self._key) if tokens is not None else None
        self._token, self._expires = kept if kept is not None else (None, 0.0)
        self._lock = threading.Lock()

    def password(self) -> str:
        if callable(self._password):
            self._password = self._password()
        return self._password

    def _keep(self, token: str | None, expires: float | None = None) -> None:
        """Hold ``token`` (None: none; NO_SESSIONS: the host has none), and keep it in the token file."""
        self._token = token
        self._expires = self._expires if expires is None else expires
        if self._tokens is not None and token != NO_SESSIONS:
            self._tokens.put(self._key, token, self._expires)

    def _sign_in(self, refused: str | None, deadline: float) -> str:
        """The token to send: the one held, unless it is ``refused``; else a new session's."""
        with self._lock:
            if self._token is not None and self._token != refused:
                return self._token          # another thread signed in meanwhile, or nothing was refused
            answer = self.inner.exchange(self.wire.call("system.auth", ()), self.wire.CONTENT_TYPE,
                                         max(0.0, deadline - time.monotonic()),
                                         {"Authorization": basic_authorization(self.user, self.password())})
            try:
                opened = self.wire.result(answer.body)
                self._keep(str(opened["token"]), float(opened["expires"]))
            except Fault as fault:
                if fault.code not in (METHOD_NOT_FOUND, SERVICE_UNAVAILABLE):
                    raise
                self._keep(NO_SESSIONS)     # a host without sessions: the password goes with every call
            except (wire_mod.ProtocolError, LookupError, TypeError, ValueError) as e:
                raise TransportError(self.url, "a malformed answer to system.auth (%s)" % e, transient=False) \
                    from None
            return self._token or NO_SESSIONS

    def authorization(self, deadline: float) -> str:
        """The ``Authorization`` header value a request sends now (a session opened if need be)."""
        token = self._token if self._token is not None else self._sign_in(None, deadline)
        return "Bearer " + token if token else basic_authorization(self.user, self.password())

    def exchange(self, body: bytes, content_type: str, timeout: float | None = None,
                 headers: Mapping[str, str] | None = None) -> Answer:
        """The inner transport's exchange, in the session."""
        deadline = time.monotonic() + (self.inner.timeout if timeout is None else timeout)
        authorization = self.authorization(deadline)
        answer = self._send(body, content_type, deadline, headers, authorization)
        if _refused(answer):                # the call never ran: once more, signed in anew
            self._sign_in(authorization[len("Bearer "):], deadline)
            answer = self._send(body, content_type, deadline, headers, self.authorization(deadline))
        renewed = answer.headers.get(RENEWAL)
        if renewed and not _refused(answer):
            self._keep(renewed)
        return answer

    def _send(self, body: bytes, content_type: str, deadline: float, headers: Mapping[str, str] | None,
              authorization: str) -> Answer:
        return self.inner.exchange(body, content_type, max(0.0, deadline - time.monotonic()),
                                   {**(headers or {}), "Authorization": authorization})

    def logout(self, timeout: float | None = None) -> bool:
        """End the session (``system.logout``) and forget its token; whether there was one."""
        token = self._token
        self._keep(None)
        if not token:
            return False
        answer = self.inner.exchange(self.wire.call("system.logout", ()), self.wire.CONTENT_TYPE, timeout,
                                     {"Authorization": "Bearer " + token})
        return not _refused(answer) and self.wire.result(answer.body) is True

    def close(self) -> None:
        self.inner.close()


def _refused(answer: Answer) -> bool:
    """Whether the host refused the session token (and asks for a new sign-in)."""
    return answer.status == 401 and answer.headers.get("www-authenticate", "").lower().startswith("bearer")
