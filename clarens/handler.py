# SPDX-License-Identifier: Apache-2.0
"""The mod_python entry point: ``PythonHandler clarens.handler``.

Adapts an Apache request for the dispatcher and writes its answer:

* ``POST`` with ``text/xml``: XML-RPC;  with ``application/json``: JSON-RPC 2.0
* ``GET`` / ``HEAD``: the HTML discovery page
* ``OPTIONS``: the allowed methods;  anything else: 405
* ``/clarens/NAME/...``: the web route ``NAME`` a service module exports

State-changing requests that a browser sends from another site's page are
refused (the ``Origin`` and ``Sec-Fetch-Site`` headers), against cross-site
request forgery with the caller's ambient credentials.

It serves the ``<Location>`` it is configured for, whatever its path.  Every
request that reaches the dispatcher is answered with a well-formed response in
its protocol, faults included, never with Apache's HTML error page.
"""

from __future__ import annotations

import logging
import secrets

from mod_python import apache

from clarens import context, credentials, faults, serving, sessions
from clarens import host as host_mod
from clarens import identity as identity_mod
from clarens.config import ConfigError
from clarens.faults import Fault
from clarens.identity import Identity, IdentityRefused
from clarens.protocol import jsonrpc, xmlrpc
from clarens.proxies import Forwarded
from clarens.web import discovery, routes

ALLOW = "GET, HEAD, POST, OPTIONS"


def handler(req) -> int:
    """Serve one request."""
    try:
        host = host_mod.current_or_none() or _boot()
        if host is None:
            return _plain(req, apache.HTTP_SERVICE_UNAVAILABLE,
                          "The service host failed to start: see the error log.\n")
        uri = req.uri
        base, sub = host.places.get(uri) or _place(host, req, uri)
        if sub is None:
            return _plain(req, apache.HTTP_NOT_FOUND, "Not found: %s\n" % uri)
        method = req.method
        route = codec = None
        if sub:
            name, _, sub = sub.partition("/")
            route = host.routes.get(name)
            if route is None:
                return _plain(req, apache.HTTP_NOT_FOUND, "Not found: %s\n" % uri)
        elif method == "POST":
            codec = serving.codec_for(req.headers_in.get("Content-Type"))
            if codec is None:
                host.refusals.refuse("content type", req.useragent_ip, "%s: POST with unsupported Content-Type %r"
                                     % (req.useragent_ip, (req.headers_in.get("Content-Type") or "")[:60]),
                                     level=logging.INFO)
                return _plain(req, apache.HTTP_UNSUPPORTED_MEDIA_TYPE,
                              "POST text/xml for XML-RPC or application/json for JSON-RPC 2.0.\n")
        elif method != "GET" and method != "HEAD":
            req.headers_out["Allow"] = ALLOW
            if method == "OPTIONS":
                return _send(req, apache.HTTP_NO_CONTENT, None, b"")
            return _plain(req, apache.HTTP_METHOD_NOT_ALLOWED,
                          "Method %s not allowed here; use %s.\n" % (method, ALLOW))
        # Through a trusted front end (HAProxy terminating TLS): what it says about the client.
        proxies = host.config.trusted_proxies
        via = proxies.forwarded(req) if proxies.networks else None
        try:
            ctx = _context(host, req, "http" if codec is None else codec.PROTOCOL, None, via, base)
        except IdentityRefused as e:
            return _refused(req, host, codec, route is None, e, via)
        with ctx:
            if route is not None:
                return _web(req, host, ctx, route, base, sub, via)
            if codec is not None:
                return _rpc(req, host, ctx, codec, via)
            return _page(req, host, ctx, base)
    except UnicodeDecodeError:
        # mod_python decodes the URI and header values as UTF-8 when they are first read:
        # bytes that are not UTF-8 in the request line or a header end up here, from anywhere.
        host = host_mod.current_or_none()
        if host is not None:
            host.refusals.refuse("not UTF-8", req.useragent_ip,
                                 "%s: request line or header not UTF-8: 400" % req.useragent_ip)
        return _plain(req, apache.HTTP_BAD_REQUEST, "Bad request: the request line or a header is not UTF-8.\n")


def _boot() -> host_mod.Host | None:
    """Boot the host now if ``PythonImport clarens.startup`` was not configured; None if it cannot."""
    try:
        host = host_mod.boot(apache.main_server.get_options())
    except ConfigError as e:
        apache.log_error("clarens: configuration error: %s" % e, apache.APLOG_CRIT, apache.main_server)
        return None
    host.log.warning("modules were loaded by a request: add 'PythonImport clarens.startup INTERPRETER' "
                     "so that children load them at start")
    return host


def _place(host: host_mod.Host, req, uri: str) -> tuple[str, str | None]:
    """Where ``uri`` is: the ``<Location>`` serving it, and what follows (None if outside it).
    Remembered in ``host.places``: reading the handler list on every request cost 0.25 us of the
    echo call's 4.6 us in-process (bench.profile)."""
    directory = req.hlist.directory
    base = directory.rstrip("/") if directory else ""
    place = (base, uri[len(base):].strip("/") if uri.startswith(base) else None)
    if len(host.places) < 256:   # URIs come from clients: remember only a few
        host.places[uri] = place
    return place


def _context(host: host_mod.Host, req, protocol: str, caller: Identity | None = None,
             via: Forwarded | None = None, base: str = "") -> context.CallContext:
    """A request's CallContext: the caller identified from ``req`` (unless given), calling from
    where a trusted front end (``via``) says it is.  IdentityRefused for credentials this server refuses."""
    address = via.address if via is not None else None
    if caller is None:
        caller = _identify(host, req, via, address or req.useragent_ip, base, protocol != "http")
    return serving.context_for(host, req, protocol, caller, address)


def _identify(host: host_mod.Host, req, via: Forwarded | None, address: str, base: str, rpc: bool) -> Identity:
    """Who ``req`` comes from: a certificate or a user some Apache module authenticated
    (:mod:`clarens.identity`), else what its ``Authorization`` header or session cookie proves
    (:mod:`clarens.credentials`; the access log then names the user, and a renewed session token goes
    back with the answer), else anonymous.

    A session cookie that is refused (the session ended) is forgotten: the answer clears it, and a
    page or web route is served as to anyone (the page offers to sign in again); an ``rpc`` call is
    refused (401), never served as someone else."""
    caller = identity_mod.from_request(req, host.config.cert_require, via)
    if caller is not identity_mod.ANONYMOUS:
        return caller
    # Presence first: for the header a call lacks, mod_python's `in` costs a fraction of its get().
    headers = req.headers_in
    authorization = headers.get("Authorization") if "Authorization" in headers else None
    cookie = credentials.cookie(headers.get("Cookie")) if not authorization and "Cookie" in headers else None
    if not authorization and cookie is None:
        return caller
    if host.credentials is None:
        raise IdentityRefused("credentials cannot be checked now (see the server's error log)", 503)
    secure = (via.scheme if via is not None and via.scheme else routes.request_scheme(req)) == "https"
    try:
        proof = host.credentials.authorization(authorization, address, secure) if authorization \
            else host.credentials.session(cookie or "", secure)
    except IdentityRefused as e:
        if cookie is None:
            raise
        e.headers["Set-Cookie"] = routes.session_cookie("", base, secure, 0)
        if rpc:
            raise
        host.refuse_credentials(address, e)
        req.headers_out["Set-Cookie"] = e.headers["Set-Cookie"]
        return caller
    if proof is None:
        return caller       # a scheme for another Apache module, which let the request through
    if proof.renewal is not None:
        if cookie is None:
            req.headers_out[sessions.RENEWAL_HEADER] = proof.renewal
        else:
            req.headers_out["Set-Cookie"] = routes.session_cookie(proof.renewal, base, secure, proof.lasts)
    req.user = identity_mod.to_apache(proof.identity.name)
    return proof.identity


def _refused(req, host: host_mod.Host, codec, page: bool, error: IdentityRefused, via: Forwarded | None) -> int:
    """The one answer to credentials this server refuses: logged, then a fault in the request's
    protocol (an RPC fault, a plain text for the discovery page, a JSON error for a web route),
    with the status and headers a refusal of :mod:`clarens.credentials` asks for (401 and a
    challenge for a wrong password, 429 and Retry-After when throttled...)."""
    fault = Fault(faults.ACCESS_DENIED, "credentials refused: %s" % error)
    host.refuse_credentials(via.address if via is not None and via.address else req.useragent_ip, error)
    for key, value in error.headers.items():
        req.headers_out[key] = value
    if codec is not None:
        return _fault_response(req, codec, fault, error.status or apache.HTTP_OK)
    if page:
        return _plain(req, error.status or apache.HTTP_FORBIDDEN, "Refused: %s\n" % error)
    response = routes.WebResponse.fault(fault)
    req.headers_out["Connection"] = "close"    # any body stays unread
    return _send(req, error.status or response.status, response.content_type, response.body, flush=True)


def _cross_site(req, via: Forwarded | None) -> str | None:
    """Why a state-changing request looks forged by another site's page (CSRF), or None.

    Browsers name the page's origin in ``Origin`` (and, lately, ``Sec-Fetch-Site``)
    on every POST/PUT they send; other clients send neither.
    """
    headers = req.headers_in
    if "Origin" in headers:
        origin = headers.get("Origin")
        if origin != routes.request_origin(req, scheme=via.scheme if via is not None else None):
            return "request from another origin (%s)" % origin[:100]
    elif "Sec-Fetch-Site" in headers and headers.get("Sec-Fetch-Site") == "cross-site":
        return "request from another site"
    return None


def _page(req, host: host_mod.Host, ctx: context.CallContext, base: str) -> int:
    """GET/HEAD of the host's own URL: the discovery page."""
    for key, value in routes.PAGE_HEADERS.items():
        req.headers_out[key] = value
    page = discovery.render(ctx, base, host.pages).encode("utf-8")
    return _send(req, apache.HTTP_OK, "text/html; charset=utf-8", page)


def _web(req, host: host_mod.Host, ctx: context.CallContext, route: routes.Route, base: str, path: str,
         via: Forwarded | None = None) -> int:
    """Serve a module's web route, as the identified caller."""
    forged = _cross_site(req, via) if req.method not in ("GET", "HEAD", "OPTIONS") else None
    web = None
    try:
        if forged:
            raise Fault(faults.ACCESS_DENIED, "refused: %s" % forged)
        web = routes.WebRequest(req, ctx, base, path, host.dispatcher.authorise,
                                via.scheme if via is not None else None)
        response = route(web)
    except UnicodeDecodeError:
        raise              # a header that is not UTF-8: the handler answers 400
    except Fault as fault:
        ctx.note_fault(fault)
        response = routes.WebResponse.fault(fault)
    except Exception:
        incident = secrets.token_hex(4)
        host.log.exception("%s %s %s failed (incident %s)", ctx.describe(), req.method, req.uri, incident)
        response = routes.WebResponse.fault(Fault(faults.INTERNAL_ERROR, "internal error (incident %s)" % incident))
    for key, value in response.headers.items():
        req.headers_out[key] = value
    if web is None or web.body_unread:
        # Answer at once and close, instead of letting Apache read and discard the rest of a
        # body that may be gigabytes.  A client that sent "Expect: 100-continue" has sent none.
        req.headers_out["Connection"] = "close"
        return _send(req, response.status, response.content_type, response.body, flush=True)
    return _send(req, response.status, response.content_type, response.body)


def _rpc(req, host: host_mod.Host, ctx: context.CallContext, codec, via: Forwarded | None = None) -> int:
    """A POSTed call or batch, in either protocol: one path, the codec's ``respond``."""
    try:
        forged = _cross_site(req, via)
        if forged:
            fault = Fault(faults.ACCESS_DENIED, "refused: %s" % forged)
            ctx.note_fault(fault)
            return _fault_response(req, codec, fault, apache.HTTP_FORBIDDEN)
        problem = _body_problem(req.headers_in, host.config.max_body)
        if problem is not None:
            ctx.note_fault(problem[1])
            return _fault_response(req, codec, problem[1], problem[0])
        try:
            body = req.read()
        except OSError as e:   # the client went away, or stalled past Apache's timeouts, mid-body
            host.refusals.refuse("body unread", ctx.client_address, "%s: the request body could not be read (%s)"
                                 % (ctx.describe(), e), level=logging.INFO)
            return _plain(req, apache.HTTP_BAD_REQUEST, "The request body could not be read.\n")
        out = serving.respond(host, ctx, codec, body)
        if out is None:   # notifications only: nothing to answer
            return _send(req, apache.HTTP_NO_CONTENT, None, b"")
        return _send_ok(req, codec.CONTENT_TYPE, out)
    except UnicodeDecodeError:
        raise              # a header that is not UTF-8: the handler answers 400
    except Exception:   # a bug in the host itself: still answer in protocol
        host.log.exception("%s: internal error serving %s request", ctx.describe(), ctx.protocol)
        return _fault_response(req, codec, Fault(faults.INTERNAL_ERROR, "internal server error; see the server log"),
                               apache.HTTP_OK)


_WARM_METHOD, _WARM_ARG = "system.methodHelp", "system.listMethods"   # one string parameter: most calls' shape
_WARM_XMLRPC = ("<?xml version='1.0'?>\n<methodCall>\n<methodName>%s</methodName>\n<params>\n<param>\n"
                "<value><string>%s</string></value>\n</param>\n</params>\n</methodCall>\n"
                % (_WARM_METHOD, _WARM_ARG)).encode("utf-8")
_WARM_JSONRPC = ('{"jsonrpc": "2.0", "method": "%s", "params": ["%s"], "id": 1}'
                 % (_WARM_METHOD, _WARM_ARG)).encode("utf-8")


def warm_up(host: host_mod.Host, rounds: int = 16) -> None:
    """Run the request path a few times at child start, calling system.methodHelp as an
    anonymous caller (nothing changes anywhere), so that the first real request finds
    its bytecode already specialised by the interpreter and its memos filled."""
    try:
        host.dispatcher.authorise(identity_mod.ANONYMOUS, _WARM_METHOD)
    except Fault:
        return   # a policy that refuses it: nothing to warm without logging refusals
    for _ in range(rounds):
        for codec, body in ((xmlrpc, _WARM_XMLRPC), (jsonrpc, _WARM_JSONRPC)):
            serving.serve(host, identity_mod.ANONYMOUS, codec, body)


def _body_problem(headers, limit: int) -> tuple[int, Fault] | None:
    """Why the body cannot be read (HTTP status and fault), or None if it can."""
    length = headers.get("Content-Length")
    if length is None:   # mod_python cannot read chunked bodies
        return apache.HTTP_LENGTH_REQUIRED, Fault(
            faults.INVALID_REQUEST, "a Content-Length header is required (chunked bodies are not supported)")
    if int(length) > limit:   # Apache has already rejected a malformed Content-Length
        return apache.HTTP_REQUEST_ENTITY_TOO_LARGE, Fault(
            faults.INVALID_REQUEST, "request body of %s bytes is larger than the limit of %d" % (length, limit))
    return None


def _fault_response(req, codec, fault: Fault, status: int) -> int:
    return _send(req, status, codec.CONTENT_TYPE, codec.dumps_fault(fault))


def _plain(req, status: int, text: str) -> int:
    return _send(req, status, "text/plain; charset=utf-8", text.encode("utf-8"))


def _send_ok(req, content_type: str, body: bytes) -> int:
    """An RPC answer: 200 is already the status, and the method is POST."""
    req.content_type = content_type
    req.set_content_length(len(body))
    req.write(body, 0)
    return apache.OK


def _send(req, status: int, content_type: str | None, body: bytes, flush: bool = False) -> int:
    req.status = status
    if content_type:
        req.content_type = content_type
    req.set_content_length(len(body))
    try:
        if body and req.method != "HEAD":
            req.write(body, 0)
        if flush:
            req.flush()
    except OSError:   # the client has gone: nobody to answer (why was logged where it was found)
        pass
    return apache.OK
