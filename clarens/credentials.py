# SPDX-License-Identifier: Apache-2.0
"""The credentials a request carries, and the caller they make: a password (Basic), checked by the
host, or a session token (``Authorization: Bearer``, or the pages' cookie: :mod:`clarens.sessions`).

The order of a password's way in (:meth:`Credentials.password`), each step costing
less than the next:

1. refused over plain HTTP unless ``[server] passwords_over_http = on`` (403);
2. the throttle's verdict for the user name at the client's address (one read of a
   shared table, :mod:`clarens.throttle`): too soon, a wait or 429 (below);
3. a password this process, or another of the host's, found right lately
   (:class:`clarens.passwords.Checker`): accepted, microseconds (a few milliseconds the
   first time in this process);
4. one of the host's few turns to run bcrypt in (503 if none came: nothing was counted);
5. in the turn, a look at whether another process has found it right meanwhile (calls
   arriving at once with a password run bcrypt once), then the attempt counted (refused,
   429, if the checks that finished meanwhile made it too soon), then bcrypt, and the
   attempt given back if the password was right.

Counting inside the turn makes the count hold every check that finished before this one:
48 calls arriving at once with the right password, each in a child that has not checked
it yet, never throttle each other (counted before their turn, the sixth got 429), and
32 guesses arriving at once still stop at the free ones.

An attempt that comes too soon waits for its turn, up to :data:`TARPIT` seconds, while
no more than a quarter of the workers are waiting so (the process sleeps: free for
the host, a growing delay for the caller), and is then checked; one whose turn is
further away, or that finds every such place taken, is refused with 429 and
``Retry-After``.  A flood from a few connections thus turns into a trickle instead
of a load, and a person who mistyped a few times only waits.

The user name is UTF-8 (as ``WWW-Authenticate: Basic ... charset="UTF-8"`` asks),
compared in normal form C.
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from typing import NamedTuple

from clarens.identity import RESERVED_REASON, Identity, IdentityRefused, normal_name, reserved
from clarens.passwords import RIGHT, UNUSABLE, BusyError, Checker, Turns
from clarens.sessions import COOKIE, MEMO, SessionRefused, Sessions
from clarens.throttle import Throttle

TARPIT = 2.0             # seconds a refused password attempt may hold its connection before the answer
CHALLENGE = 'Basic realm="Clarens", charset="UTF-8"'
BEARER_CHALLENGE = 'Bearer realm="Clarens", error="invalid_token"'
HTTPS_ONLY = "passwords and session tokens are accepted over https only"


def basic(value: str) -> tuple[str, bytes]:
    """(user name, password) of the credentials of an ``Authorization: Basic`` header; IdentityRefused
    (400) if they are malformed or the name is not UTF-8."""
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise IdentityRefused("malformed Basic credentials", 400) from None
    name, sep, password = decoded.partition(b":")
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        raise IdentityRefused("the user name is not UTF-8", 400) from None
    if not sep or not text:
        raise IdentityRefused("malformed Basic credentials", 400)
    return normal_name(text), password


def cookie(header: str | None, name: str = COOKIE) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` header, or None."""
    for part in (header or "").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip('"')
    return None


class Proof(NamedTuple):
    """What a request's credentials proved: the caller, and in a session, a renewed token to hand back
    (:meth:`clarens.sessions.Sessions.renewal`; None: the one it came with is fresh enough) and the
    seconds the session may still last."""
    identity: Identity
    renewal: str | None = None
    lasts: int = 0


class Credentials:
    """Checks the credentials of this host's requests (one per process, see :mod:`clarens.host`).

    ``checker`` is None when the host takes no passwords (``[server] htpasswd`` empty);
    ``tarpits`` bounds how many processes may hold a refused attempt at once.
    """

    def __init__(self, checker: Checker | None, throttle: Throttle, tarpits: Turns, sessions: Sessions | None,
                 over_http: bool = False):
        self.checker = checker
        self.throttle = throttle
        self.tarpits = tarpits
        self.sessions = sessions
        self.over_http = over_http
        self._identities: dict[str, Identity] = {}

    def password(self, name: str, password: bytes, address: str, secure: bool) -> Identity:
        """The identity of user ``name`` (normal form C) if ``password`` is right; IdentityRefused otherwise."""
        if not secure and not self.over_http:
            raise IdentityRefused(HTTPS_ONLY, 403)
        if self.checker is None:
            raise IdentityRefused("this server does not accept passwords: use a client certificate", 403)
        if reserved(name):
            raise IdentityRefused(RESERVED_REASON % name[:100], 403)
        who = "user %r" % name[:100]
        wait = self.throttle.wait(address, name)
        if wait > 0:
            held = self._hold(wait)
            if held < wait:
                raise _throttled(wait - held, who)
        if self.checker.remembered(name, password):
            return Identity(name, "basic")
        try:
            with self.checker.turn():
                if self.checker.remembered(name, password):   # checked by another child while this one waited
                    return Identity(name, "basic")
                wait = self.throttle.attempt(address, name)
                if wait > 0:              # the checks that finished meanwhile made this one too soon
                    raise _throttled(wait, who)
                outcome = self.checker.verify(name, password)
                if outcome == RIGHT:      # given back before the next check counts
                    self.throttle.succeeded(address, name)
        except BusyError as e:
            raise IdentityRefused(str(e), 503, {"Retry-After": "1"}) from None
        if outcome == RIGHT:
            return Identity(name, "basic")
        kind = ("unusable hash" if outcome == UNUSABLE else
                "wrong password" if self.checker.htpasswd.entry(name) else "no such user")
        detail = "%s: %s" % (who, "the htpasswd entry is not a bcrypt hash (set the password again: clarens-admin "
                                  "user passwd)" if outcome == UNUSABLE else kind)
        raise IdentityRefused("wrong user name or password", 401, {"WWW-Authenticate": CHALLENGE}, detail, kind)

    def authorization(self, header: str, address: str, secure: bool) -> Proof | None:
        """What an ``Authorization`` header proves (``Basic``: a password; ``Bearer``: a session token),
        None for a scheme this host does not take (another Apache module's); IdentityRefused if it
        proves nothing."""
        scheme, _, value = header.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            return Proof(self.password(*basic(value), address, secure))
        if scheme == "bearer":
            return self.session(value.strip(), secure)
        return None

    def session(self, token: str, secure: bool) -> Proof:
        """The caller of the session ``token`` stands for; IdentityRefused saying why it is none (401 and
        a ``Bearer`` challenge: sign in again).  Like passwords, refused over plain HTTP unless
        ``passwords_over_http`` is on: a token stands for the password until it ends."""
        if not secure and not self.over_http:
            raise IdentityRefused(HTTPS_ONLY, 403)
        if self.sessions is None:
            raise IdentityRefused("sessions cannot be checked now (see the server's error log)", 503)
        try:
            session = self.sessions.verify(token)
        except SessionRefused as e:
            raise IdentityRefused(str(e), 401, {"WWW-Authenticate": BEARER_CHALLENGE}, kind="session refused") \
                from None
        # One Identity per session, not one per request (the ACL guard then finds its groups by it).
        identity = self._identities.get(session.id)
        if identity is None:
            if len(self._identities) >= MEMO:
                self._identities.clear()
            identity = self._identities[session.id] = Identity(session.name, session.source, session=session.id)
        now = self.sessions.clock()
        return Proof(identity, self.sessions.renewal(token, session, now), int(session.expires - now))

    def _hold(self, wait: float) -> float:
        """Sleep until a throttled attempt's turn comes, up to TARPIT seconds, if a tarpit is free; the
        seconds slept (0 when every tarpit is taken: the attempt is then refused at once)."""
        try:
            turn = self.tarpits.take()
        except BusyError:
            return 0.0
        try:
            held = min(TARPIT, wait)
            time.sleep(held)
            return held
        finally:
            self.tarpits.give_back(turn)


def _throttled(wait: float, who: str) -> IdentityRefused:
    """The refusal of an attempt ``wait`` seconds too soon: 429 with Retry-After."""
    after = max(1, math.ceil(wait))
    return IdentityRefused("too many failed sign-ins: try again in %d s" % after, 429, {"Retry-After": str(after)},
                           "%s: throttled, %.0f s to wait" % (who, wait), "sign-ins throttled")
