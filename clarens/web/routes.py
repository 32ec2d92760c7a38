# SPDX-License-Identifier: Apache-2.0
"""Web routes: plain-HTTP endpoints that service modules add under the host's URL.

A module exports ``web_routes = {"images": handle}`` to serve
``/clarens/images/...``; ``handle(web)`` receives a :class:`WebRequest` and
returns a :class:`WebResponse`.  ``web_pages = {"burner": "Burner"}`` puts a
route that is a page in the discovery page's navigation.  The caller is identified exactly as for RPC,
and a route authorises itself against the same ACLs with
``web.authorise("module.action")`` before doing anything.  Faults become JSON
errors with a fitting HTTP status.
"""

from __future__ import annotations

import html
import json
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from clarens import faults, session_peers, sessions
from clarens.context import CallContext
from clarens.dispatch import Authoriser
from clarens.faults import Fault
from clarens.identity import IdentityRefused
from clarens.web.uploads import BodyError

# Pages load scripts and styles only from this server, never inline; nothing may frame them; they name
# themselves to this server only (with no-referrer, a browser sends "Origin: null" with their forms' POSTs,
# which the cross-site check must refuse).
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".svg": "image/svg+xml", ".png": "image/png"}
_STATIC_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*\.(css|js|svg|png)\Z")

_STATUS = {faults.ACCESS_DENIED: 403, faults.METHOD_NOT_FOUND: 404, faults.SERVICE_UNAVAILABLE: 503,
           faults.INTERNAL_ERROR: 500, faults.APPLICATION_ERROR: 500}   # anything else: 400


@dataclass
class WebResponse:
    """What a route answers: status, content type, body and extra headers."""
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, value: Any, status: int = 200) -> "WebResponse":
        return cls(status, json.dumps(value, separators=(",", ":"), default=str).encode("utf-8"))

    @classmethod
    def html(cls, text: str, status: int = 200) -> "WebResponse":
        """A page, with the security headers every page gets."""
        return cls(status, text.encode("utf-8"), "text/html; charset=utf-8", dict(PAGE_HEADERS))

    @classmethod
    def redirect(cls, location: str) -> "WebResponse":
        return cls(303, b"", "text/plain", {"Location": location})

    @classmethod
    def fault(cls, fault: Fault) -> "WebResponse":
        """A JSON error for a fault: {"error": {"code", "message"}}."""
        return cls.json({"error": {"code": fault.code, "message": fault.message}}, _STATUS.get(fault.code, 400))


def request_origin(req: Any, scheme: str | None = None) -> str:
    """``scheme://host[:port]`` of a mod_python request, as the client addressed the server
    (``scheme``, when a trusted front end that terminated TLS says which the client used)."""
    return "%s://%s" % (scheme or request_scheme(req), req.headers_in.get("Host", ""))


def session_cookie(token: str, base: str, secure: bool, max_age: int) -> str:
    """The ``Set-Cookie`` value carrying a session token to the pages under ``base`` (an empty token
    and ``max_age`` 0: the cookie's end): script cannot read it, no other site's page makes the
    browser send it, and over HTTPS it never travels over plain HTTP."""
    return "%s=%s; Path=%s; Max-Age=%d; HttpOnly; SameSite=Strict%s" % (
        sessions.COOKIE, token, base or "/", max_age, "; Secure" if secure else "")


def request_scheme(req: Any) -> str:
    """``https`` or ``http``: how a mod_python request reached this server."""
    return "https" if req.is_https() else "http"


class WebRequest:
    """One request to a route, adapted from mod_python."""

    def __init__(self, req: Any, ctx: CallContext, base: str, path: str, authorise: Authoriser,
                 scheme: str | None = None):
        self._req = req
        self.ctx = ctx
        self._authorise = authorise
        self.method: str = req.method
        self.base = base                     # where the host is served, e.g. "/clarens"
        self.path = path                     # what follows the route's name, e.g. "disc.iso"
        self.query: dict[str, list[str]] = urllib.parse.parse_qs(req.args or "")
        self.headers: Mapping[str, str] = req.headers_in
        self.bytes_read = 0
        # Whether the client reached the server over HTTPS (as a trusted front end says, if through one).
        self.secure = (scheme or request_scheme(req)) == "https"

    @property
    def content_length(self) -> int | None:
        """The body's length: 0 without a body, None for a chunked one (mod_python cannot read those)."""
        value = self.headers.get("Content-Length")
        if value is not None:
            return int(value)   # Apache has refused a malformed one
        return None if "Transfer-Encoding" in self.headers else 0

    @property
    def body_unread(self) -> bool:
        """Whether part of the body was never read (the connection is then closed after the
        answer, rather than Apache reading and discarding what may be gigabytes)."""
        return self.bytes_read < (self.content_length or 0)

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of the body (b"" at its end).  BodyError if it cannot be read:
        the client went away or stalled, or the body is over Apache's ``LimitRequestBody``."""
        try:
            data = self._req.read(size)
        except Exception as e:    # mod_python: IOError, or SERVER_RETURN(status) past LimitRequestBody
            status = e.args[0] if e.args and isinstance(e.args[0], int) else 400
            raise BodyError(status, "the request body could not be read (%s)" % (
                "over Apache's LimitRequestBody" if status == 413 else e)) from None
        self.bytes_read += len(data)
        return data

    def authorise(self, method: str) -> None:
        """Fault(ACCESS_DENIED) unless the policy lets the caller call ``method``, exactly as for an
        RPC call of it; from then on the request counts as a call of ``method`` (in the log)."""
        self.ctx.method = method
        self._authorise(self.ctx.identity, method)


Route = Callable[[WebRequest], WebResponse]


def static_file(directory: str, name: str) -> WebResponse:
    """A stylesheet, script or image from ``directory`` (plain names only: no paths, no dotfiles)."""
    if not _STATIC_NAME.match(name):
        return WebResponse(404, b"not found", "text/plain")
    try:
        with open(os.path.join(directory, name), "rb") as f:
            body = f.read()
    except FileNotFoundError:
        return WebResponse(404, b"not found", "text/plain")
    return WebResponse(200, body, _STATIC_TYPES[os.path.splitext(name)[1]],
                       {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


def static(web: WebRequest) -> WebResponse:
    """GET /clarens/static/NAME: the framework's shared stylesheet and scripts."""
    return static_file(STATIC_DIR, web.path)


def _target(web: WebRequest) -> str:
    """Where a sign-in or sign-out goes next: ``?to=PAGE``, a path on this server, never built from the
    Host header (a forged one would send the browser elsewhere)."""
    page = web.query.get("to", [""])[0]
    return "%s/%s" % (web.base, page if re.fullmatch(r"[a-z0-9_]*", page) else "")


def login(web: WebRequest) -> WebResponse:
    """/clarens/login?to=PAGE: the sign-in form (GET), and signing in with it (POST ``user``, ``password``).

    The password is checked by the host as for Basic authentication (throttled, over HTTPS only
    unless ``passwords_over_http``); then a session opens, its token in a cookie that scripts cannot
    read, that no other site's page makes the browser send, path-scoped to the host and, over HTTPS,
    never sent over plain HTTP; and the browser goes on to PAGE (303).  A caller who is signed in
    already (a session, a client certificate) goes there at once.  A server without password
    authentication says so.
    """
    target = _target(web)
    if web.method not in ("GET", "HEAD", "POST"):
        return WebResponse(405, b"use GET or POST", "text/plain", {"Allow": "GET, HEAD, POST"})
    if web.ctx.identity.authenticated:
        return WebResponse.redirect(target)
    if web.method != "POST":
        return _sign_in_page(web, "")
    if (web.content_length or 0) > MAX_FORM:
        return _sign_in_page(web, "The form is too large.", 413)
    form = urllib.parse.parse_qs(web.read(MAX_FORM + 1).decode("utf-8", "replace"), keep_blank_values=True)
    name, password = (form.get(key, [""])[0] for key in ("user", "password"))
    if not name or not password:
        return _sign_in_page(web, "Give your user name and password.", 400, name)
    try:
        opened = web.ctx.sign_in(name, password.encode("utf-8"), web.secure)
    except IdentityRefused as e:
        # Never a WWW-Authenticate challenge here: the browser would ask for a password in a dialog of its own.
        response = _sign_in_page(web, str(e).capitalize() + ".", e.status or 403, name)
        response.headers.update({k: v for k, v in e.headers.items() if k == "Retry-After"})
        return response
    response = WebResponse.redirect(target)
    response.headers["Set-Cookie"] = session_cookie(opened["token"], web.base, web.secure,
                                                    opened["expires"] - opened["issued"])
    return response


def logout(web: WebRequest) -> WebResponse:
    """POST /clarens/logout?to=PAGE: sign out: the session ends (on every host), its cookie is cleared,
    and the browser goes on to PAGE (303).  POST only: no other site's page can sign anybody out
    (the cross-site check of every state-changing request applies)."""
    if web.method != "POST":
        return WebResponse(405, b"use POST", "text/plain", {"Allow": "POST"})
    if web.ctx.identity.session is not None:
        web.ctx.close_session()
    response = WebResponse.redirect(_target(web))
    response.headers["Set-Cookie"] = session_cookie("", web.base, web.secure, 0)
    return response


MAX_FORM = 4096          # bytes of a sign-in form


def _sign_in_page(web: WebRequest, message: str, status: int = 200, user: str = "") -> WebResponse:
    """The sign-in form, with ``message`` (why the last attempt was refused) and the ``user`` name given."""
    if not web.ctx.passwords_accepted():
        return WebResponse.html(_LOGIN_UNAVAILABLE, 403)
    base = html.escape(web.base)
    note = "<p class='notice error' role=alert>%s</p>" % html.escape(message) if message else ""
    return WebResponse.html(_SIGN_IN % {"base": base, "to": html.escape(urllib.parse.quote(web.query.get(
        "to", [""])[0], safe="")), "note": note, "user": html.escape(user[:200])}, status)


_SIGN_IN = ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width,initial-scale=1'><title>Sign in</title>"
            "<link rel=icon href='data:,'><link rel=stylesheet href='%(base)s/static/clarens.css'></head><body>"
            "<header class=top><h1>Clarens</h1><nav><a href='%(base)s/'>Services</a></nav></header><main>"
            "<section class=card><h2>Sign in</h2>%(note)s"
            "<form id=signin-form class=form method=post action='%(base)s/login?to=%(to)s'>"
            "<label for=user>User name</label>"
            "<input id=user name=user value='%(user)s' autocomplete=username required autofocus>"
            "<label for=password>Password</label>"
            "<input id=password name=password type=password autocomplete=current-password required>"
            "<div class=actions><button type=submit>Sign in</button></div></form>"
            "<p class='muted small'>Or open this page over HTTPS with your client certificate installed in the "
            "browser.</p></section></main></body></html>")
_LOGIN_UNAVAILABLE = ("<!DOCTYPE html><title>Sign-in unavailable</title><p>This server does not accept passwords. "
                      "Use a client certificate over HTTPS instead.")


def revocations(web: WebRequest) -> WebResponse:
    """GET /clarens/revocations?since=N: the session revocations this host made after number N, for the
    other hosts of a cluster (:mod:`clarens.session_peers`), answered only to a request signed with
    the session key they share (``X-Clarens-Peer``)."""
    if web.method != "GET":
        return WebResponse(405, b"use GET", "text/plain", {"Allow": "GET"})
    since = web.query.get("since", ["0"])[0]
    if not re.fullmatch(r"[0-9]{1,18}", since):
        return WebResponse.fault(Fault(faults.INVALID_PARAMS, "since must be a number"))
    kept = web.ctx.sessions()
    if not kept.peer_allowed(web.headers.get(session_peers.HEADER), int(since)):
        raise Fault(faults.ACCESS_DENIED, "revocations are for the hosts that share this host's session key")
    response = WebResponse.json(kept.events(int(since)))
    response.headers["Cache-Control"] = "no-store"
    return response


# A health check names the digests deployed to the cluster in these headers; a host that differs
# answers 503, and the front end takes it out of rotation (conf/haproxy/clarens.cfg).
EXPECT_POLICY_HEADER = "X-Clarens-Expect-Policy"
EXPECT_MODULES_HEADER = "X-Clarens-Expect-Modules"
EXPECT_TRUST_HEADER = "X-Clarens-Expect-Trust"
EXPECTED = ((EXPECT_POLICY_HEADER, "policy_digest", "policy"),
            (EXPECT_MODULES_HEADER, "modules_digest", "module set"),
            (EXPECT_TRUST_HEADER, "trust_digest", "trust configuration"))


def health(web: WebRequest) -> WebResponse:
    """GET /clarens/health: whether this host should be sent calls, for a front end's health check
    and for monitoring.  Anonymous, cheap, and changes nothing.

    200 with ``{"status": "ok", ...}``; 503 with ``"status": "failing"`` and the ``problems`` when a
    module failed to load, when the access-control policy failed to load (every call is then
    refused: fail closed), or when the policy, the module set or the trust configuration
    (``trusted_proxies`` and ``cluster``) differs from the digest the checker expects
    (``X-Clarens-Expect-Policy`` / ``-Modules`` / ``-Trust``: one digest, or several separated by
    spaces while a deployment rolls from one to the next).  200 with ``"status": "degraded"`` and
    the ``problems`` when the session revocations of a peer (``session_peers``) have not been fetched
    for longer than the bound (:func:`clarens.session_peers.late_after`): sessions revoked there may
    still be accepted here, which monitoring should see, but a front end keeps serving (one host
    down would otherwise take every other host out).  Also: the modules loaded and failed (names
    only), ``access_control`` (on, off, failed), the three digests, ``cluster``, when the server
    started, and ``session_peers``: per peer, when its revocations were last fetched and the last error.
    """
    if web.method not in ("GET", "HEAD"):
        return WebResponse(405, b"use GET", "text/plain", {"Allow": "GET, HEAD"})
    facts = web.ctx.server()
    modules = web.ctx.modules()
    failed = sorted(m["name"] for m in modules if m["status"] != "loaded")
    problems = ["module(s) failed to load: %s" % ", ".join(failed)] if failed else []
    if facts["access_control"] == "failed":
        problems.append("the access-control policy failed to load: every call is refused")
    for header, key, what in EXPECTED:
        # One digest, or several during a rolling deployment (the old and the new).
        expected = (web.headers.get(header) or "").replace(",", " ").split()
        if expected and facts[key] not in expected:
            problems.append("the %s digest is %s, not the expected %s" % (
                what, facts[key] or "(none)", " or ".join(expected)[:300]))
    peers, late = web.ctx.session_sync()
    response = WebResponse.json({
        "status": "failing" if problems else "degraded" if late else "ok", "problems": problems + late,
        "modules": {"loaded": sorted(m["name"] for m in modules if m["status"] == "loaded"), "failed": failed},
        "access_control": facts["access_control"], **{key: facts[key] for _, key, _ in EXPECTED},
        "cluster": facts["cluster"], "started": facts["started"], "session_peers": peers,
    }, 503 if problems else 200)
    response.headers["Cache-Control"] = "no-store"
    return response


BUILTIN = {"static": static, "login": login, "logout": logout, "health": health, "revocations": revocations}


def collect(modules: Mapping[str, Any], log: Any) -> tuple[dict[str, Route], dict[str, str]]:
    """The routes exported by loaded modules (first module wins a name; clashes are logged), and
    the pages among them for the navigation (``web_pages = {"route": "Title"}``)."""
    routes: dict[str, Route] = dict(BUILTIN)
    pages: dict[str, str] = {}
    for record in modules.values():
        if record.status != "loaded":
            continue
        own = set()
        for name, route in (getattr(record.module, "web_routes", None) or {}).items():
            if name in routes or not callable(route) or not name.isidentifier():
                log.error("module %s: web route %r ignored (taken, invalid, or not callable)", record.name, name)
                continue
            routes[name] = route
            own.add(name)
        for name, title in (getattr(record.module, "web_pages", None) or {}).items():
            if name in own and isinstance(title, str):
                pages[name] = title
            else:
                log.error("module %s: web page %r ignored (not one of its routes)", record.name, name)
    return routes, pages
