# SPDX-License-Identifier: Apache-2.0
"""Who is calling: the identity the host establishes for each request.

Sources, in order:

1. a TLS client certificate that mod_ssl verified (``SSL_CLIENT_VERIFY`` is
   ``SUCCESS``): the identity is its subject DN in the ``/C=../O=../CN=..`` form;
2. a user that Apache itself authenticated (any Apache auth module an administrator
   configures): ``req.user`` is trusted only when ``req.ap_auth_type`` says Apache
   authenticated it;
3. otherwise ``anonymous``, unless the request carries credentials the host checks
   itself (a password, :mod:`clarens.credentials`).

Behind a trusted front end that terminates TLS (:mod:`clarens.proxies`), the
certificate of step 1 is the one the front end verified and named in a header;
that header from anyone else is refused.

Outside Apache (an SSH session served by :mod:`clarens.stdio`, a ``local:``
client) the caller is the operating-system user the process runs as, named
``unix:NAME``: the OS authenticated it (SSH keys, login).  ``unix:alice`` and
the Apache user ``alice`` are different identities, since different systems
vouch for them; a policy that means both names both, or puts both in a group.
No Apache user name may start with ``unix:``.

A certificate whose subject lacks the fields required by the ``[certificate]``
configuration section, or an Apache user name that could pass for a DN or a
special identity, is refused rather than downgraded.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any, Mapping

from clarens.proxies import CLIENT_DN_HEADER, Forwarded

RESERVED_NAMES = ("anonymous", "authenticated")
UNIX_PREFIX = "unix:"


@dataclass(frozen=True)
class Identity:
    """A caller.  ``name`` is a certificate DN, a user name or ``anonymous``; ``source`` says how it
    was established; ``groups`` are the ACL groups it is in; ``session``, the id of the session it
    calls in (:mod:`clarens.sessions`), if it does (``source`` then says how it opened it)."""
    name: str
    source: str                 # "certificate", the Apache auth type in lower case ("basic"), "unix" or "anonymous"
    groups: tuple[str, ...] = ()
    session: str | None = None

    @property
    def authenticated(self) -> bool:
        return self.source != "anonymous"

    def describe(self) -> dict:
        """The struct system.whoami returns (with ``session``, the session's id, in a session)."""
        out = {"identity": self.name, "source": self.source, "authenticated": self.authenticated,
               "groups": list(self.groups)}
        if self.session is not None:
            out["session"] = self.session
        return out


ANONYMOUS = Identity("anonymous", "anonymous")


def unix_user(name: str) -> Identity:
    """The identity of operating-system user ``name``: ``unix:NAME``."""
    return Identity(UNIX_PREFIX + name, "unix")


class IdentityRefused(Exception):
    """The request carries credentials this server will not accept; the message says why (to the
    client).  ``status``: an HTTP status to answer with, when the protocol's usual one (200 for an
    RPC fault, 403 otherwise) would not do (401 and a challenge for a wrong password, 429 when
    throttled...), with ``headers`` (``WWW-Authenticate``, ``Retry-After``); ``detail``: for the
    log only (what the client is not told, e.g. that no such user exists); ``kind``: what was refused,
    as the log counts refusals (:mod:`clarens.refusals`)."""

    def __init__(self, message: str, status: int | None = None, headers: dict[str, str] | None = None,
                 detail: str | None = None, kind: str = "credentials"):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}
        self.detail = detail or message
        self.kind = kind


def parse_dn(dn: str) -> list[list[tuple[str, str]]]:
    """Split an RFC 2253/4514 DN (as mod_ssl gives it, most specific RDN first) into
    RDNs, each a list of (attribute, value) pairs, with escapes resolved.

    Unescaped spaces around an attribute or a value are not part of it; escaped
    ones are (``CN=Alice\\ `` is "Alice ", not "Alice").
    """
    rdns: list[list[tuple[str, bytes]]] = []
    rdn: list[tuple[str, bytes]] = []
    attr: str | None = None
    buf = bytearray()
    kept = 0          # bytes of buf that trailing-space stripping must keep (up to the last escape)
    i, n = 0, len(dn)
    while i <= n:
        c = dn[i] if i < n else ","
        if c == "\\" and i + 1 < n:
            nxt = dn[i + 1]
            if nxt in "0123456789abcdefABCDEF" and i + 2 < n and dn[i + 2] in "0123456789abcdefABCDEF":
                buf.append(int(dn[i + 1:i + 3], 16))   # \XX: a byte of UTF-8
                i += 3
            else:
                buf += nxt.encode("utf-8")
                i += 2
            kept = len(buf)
            continue
        if c == "=" and attr is None:
            attr = buf.decode("utf-8", "replace").strip()
            buf.clear()
            kept = 0
        elif c in ",+;":
            if attr is None:
                if i < n or rdn or buf.strip():
                    raise ValueError("malformed DN %r" % dn)
            else:
                rdn.append((attr, bytes(buf[:kept]) + bytes(buf[kept:]).rstrip()))
                attr = None
                buf.clear()
                kept = 0
                if c != "+":
                    rdns.append(rdn)
                    rdn = []
        elif c == " " and not buf:
            pass              # an unescaped leading space
        else:
            buf += c.encode("utf-8")
        i += 1
    return [[(a, v.decode("utf-8", "replace")) for a, v in r] for r in rdns]


def slash_form(rdns: list[list[tuple[str, str]]]) -> str:
    """``/C=UK/O=Home/CN=Alice``: the Clarens/OpenSSL-legacy form, least specific RDN first.

    A ``/``, ``+`` or ``\\`` inside a value is escaped with ``\\``, so that no value can
    pass for a further RDN or attribute (and so match a DN prefix it is not under).
    """
    def esc(value: str) -> str:
        return value.replace("\\", "\\\\").replace("/", "\\/").replace("+", "\\+")
    return "".join("/" + "+".join("%s=%s" % (a, esc(v)) for a, v in rdn) for rdn in reversed(rdns))


def certificate_problem(rdns: list[list[tuple[str, str]]], required: Mapping[str, str]) -> str | None:
    """Why a subject fails the required fields (attribute -> value), or None if it passes."""
    present: dict[str, list[str]] = {}
    for rdn in rdns:
        for attr, value in rdn:
            present.setdefault(attr.upper(), []).append(value)
    for attr, value in required.items():
        if value not in present.get(attr.upper(), []):
            return "client certificate subject must have %s=%s" % (attr.upper(), value)
    return None


def certificate_identity(raw: str, cert_require: Mapping[str, str]) -> Identity:
    """The identity of a verified certificate whose subject DN is ``raw`` (RFC 2253, as mod_ssl or a
    trusted front end gives it); IdentityRefused if it lacks a required field or is not a usable DN."""
    try:
        rdns = parse_dn(raw)
    except ValueError:
        rdns = []
    if not rdns:
        raise IdentityRefused("client certificate subject %r cannot be used as an identity" % raw[:200])
    problem = certificate_problem(rdns, cert_require)
    if problem:
        raise IdentityRefused(problem)
    return Identity(slash_form(rdns), "certificate")


def from_request(req: Any, cert_require: Mapping[str, str], via: Forwarded | None = None) -> Identity:
    """The identity of a mod_python request (IdentityRefused for unacceptable credentials).

    ``via``: what a trusted front end said about the request (:mod:`clarens.proxies`), or None
    when it did not come through one.  Through one, the certificate is the one the front end
    verified, never the connection's own (that would be the front end's); from anyone else, a
    client DN header is a forgery and refused.
    """
    if via is not None:
        if via.client_dn is not None:
            return certificate_identity(via.client_dn, cert_require)
    elif CLIENT_DN_HEADER in req.headers_in:
        raise IdentityRefused("a %s header from a client that is not a trusted front end" % CLIENT_DN_HEADER)
    # (is_https first: mod_ssl's variable lookup costs several times as much, and plain HTTP has no certificate)
    elif req.is_https() and req.ssl_var_lookup("SSL_CLIENT_VERIFY") == "SUCCESS":
        return certificate_identity(req.ssl_var_lookup("SSL_CLIENT_S_DN") or "", cert_require)
    user = req.user
    if user:
        auth_type = req.ap_auth_type
        if auth_type:
            user = apache_user(user)
            if reserved(user):
                raise IdentityRefused(RESERVED_REASON % user[:100])
            return Identity(user, auth_type.lower())
    return ANONYMOUS


def apache_user(user: str) -> str:
    """The user name an Apache module authenticated, as UTF-8 text in normal form C: mod_python hands
    on Apache's bytes decoded as Latin-1 (``ädmin`` arrives as ``Ã¤dmin``).  :func:`to_apache` is
    the way back."""
    try:
        user = user.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        pass      # not UTF-8 bytes: Latin-1 is all that can be made of them
    return normal_name(user)


def to_apache(user: str) -> str:
    """``user`` as mod_python's ``req.user`` takes it (Latin-1 only): its UTF-8 bytes, one character
    each, so that Apache (its access log, other modules) sees the name in UTF-8."""
    return user.encode("utf-8").decode("latin-1")


RESERVED_REASON = "user name %r is reserved (it could pass for a DN or a special identity)"


def reserved(user: str) -> bool:
    """Whether a password user's name could pass for a certificate DN, an OS user or a special identity."""
    return user.startswith(("/", UNIX_PREFIX)) or user in RESERVED_NAMES


def normal_name(name: str) -> str:
    """A user name as the host compares it: Unicode normal form C (``ä`` typed as one character or as
    ``a`` and a combining mark is the same user)."""
    return unicodedata.normalize("NFC", name)
