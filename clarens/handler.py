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

import secrets

from mod_python import apache

from clarens import context, faults, host as host_mod
from clarens.config import ConfigError
from clarens.faults import Fault
from clarens import identity as identity_mod
from clarens.identity import Identity, IdentityRefused
from clarens.protocol import jsonrpc, xmlrpc
from clarens.web import discovery, routes

ALLOW = "GET, HEAD, POST, OPTIONS"
_PROTOCOLS = {"text/xml": "xmlrpc", "application/xml": "xmlrpc",
              "application/json": "jsonrpc", "application/json-rpc": "jsonrpc"}


def handler(req) -> int:
    """Serve one request."""
    host = _booted or _host()
    if host is None:
        return _plain(req, apache.HTTP_SERVICE_UNAVAILABLE, "The service host failed to start: see the error log.\n")
    uri = req.uri
    base, sub = _places.get(uri) or _place(req, uri)
    if sub:
        name, _, rest = sub.partition("/")
        route = host.routes.get(name)
        if route is None:
            return _plain(req, apache.HTTP_NOT_FOUND, "Not found: %s\n" % uri)
        return _web(req, host, route, base, rest)
    if sub is None:
        return _plain(req, apache.HTTP_NOT_FOUND, "Not found: %s\n" % uri)
    method = req.method
    if method == "POST":
        return _rpc(req, host)
    if method == "GET" or method == "HEAD":
        try:
            caller = _identify(req, host)
        except IdentityRefused as e:
            host.log.warning("%s: credentials refused: %s", req.useragent_ip, e)
            return _plain(req, apache.HTTP_FORBIDDEN, "Refused: %s\n" % e)
        ctx = context.CallContext(host, req, caller)
        for key, value in routes.PAGE_HEADERS.items():
            req.headers_out[key] = value
        page = discovery.render(host, ctx, base).encode("utf-8")
        return _send(req, apache.HTTP_OK, "text/html; charset=utf-8", page)
    req.headers_out["Allow"] = ALLOW
    if method == "OPTIONS":
        return _send(req, apache.HTTP_NO_CONTENT, None, b"")
    return _plain(req, apache.HTTP_METHOD_NOT_ALLOWED, "Method %s not allowed here; use %s.\n" % (method, ALLOW))


def _cross_site(req) -> str | None:
    """Why a state-changing request looks forged by another site's page (CSRF), or None.

    Browsers name the page's origin in ``Origin`` (and, lately, ``Sec-Fetch-Site``)
    on every POST/PUT they send; other clients send neither.
    """
    origin = req.headers_in.get("Origin")
    if origin is not None:
        if origin != routes.request_origin(req):
            return "request from another origin (%s)" % origin[:100]
    elif req.headers_in.get("Sec-Fetch-Site") == "cross-site":
        return "request from another site"
    return None


def _web(req, host: host_mod.Host, route: routes.Route, base: str, path: str) -> int:
    """Serve a module's web route, as the identified caller."""
    try:
        caller = _identify(req, host)
    except IdentityRefused as e:
        host.log.warning("%s: credentials refused: %s", req.useragent_ip, e)
        response = routes.WebResponse.fault(Fault(faults.ACCESS_DENIED, "credentials refused: %s" % e))
        return _send(req, response.status, response.content_type, response.body)
    ctx = context.CallContext(host, req, caller, "http")
    forged = _cross_site(req) if req.method not in ("GET", "HEAD", "OPTIONS") else None
    web = None
    token = context.activate(ctx)
    try:
        if forged:
            raise Fault(faults.ACCESS_DENIED, "refused: %s" % forged)
        web = routes.WebRequest(req, ctx, base, path)
        response = route(web)
    except Fault as fault:
        _report(ctx, fault)
        response = routes.WebResponse.fault(fault)
    except Exception:
        incident = secrets.token_hex(4)
        host.log.exception("%s %s %s failed (incident %s)", ctx.describe(), req.method, req.uri, incident)
        response = routes.WebResponse.fault(Fault(faults.INTERNAL_ERROR, "internal error (incident %s)" % incident))
    finally:
        context.deactivate(token)
    for key, value in response.headers.items():
        req.headers_out[key] = value
    if web is None or web.body_unread:
        # Answer at once and close, instead of letting Apache read and discard the rest of a
        # body that may be gigabytes.  A client that sent "Expect: 100-continue" has sent none.
        req.headers_out["Connection"] = "close"
        return _send(req, response.status, response.content_type, response.body, flush=True)
    return _send(req, response.status, response.content_type, response.body)


_booted: host_mod.Host | None = None
_places: dict[str, tuple[str, str | None]] = {}   # URI -> (its <Location>, the rest): fixed per configuration


def _place(req, uri: str) -> tuple[str, str | None]:
    """Where ``uri`` is: the ``<Location>`` serving it, and what follows (None if outside it)."""
    directory = req.hlist.directory
    base = directory.rstrip("/") if directory else ""
    place = (base, uri[len(base):].strip("/") if uri.startswith(base) else None)
    if len(_places) < 256:   # URIs come from clients: remember only a few
        _places[uri] = place
    return place


def _host() -> host_mod.Host | None:
    """The booted host (remembered for the next requests); boots it now if PythonImport
    clarens.startup was not configured."""
    global _booted
    if host_mod.booted():
        _booted = host_mod.current()
        return _booted
    try:
        host = host_mod.boot(apache.main_server.get_options())
    except ConfigError as e:
        apache.log_error("clarens: configuration error: %s" % e, apache.APLOG_CRIT, apache.main_server)
        return None
    host.log.warning("modules were loaded by a request: add 'PythonImport clarens.startup INTERPRETER' "
                     "so that children load them at start")
    _booted = host
    return host


def _identify(req, host: host_mod.Host) -> Identity:
    """Who is calling, with the ACL groups they are in (IdentityRefused for unacceptable credentials)."""
    caller = identity_mod.from_request(req, host.config.cert_require)
    # Once per request: a policy change applies from every child's next request on.
    return caller if host.guard is None else host.guard.identify(caller)


def _rpc(req, host: host_mod.Host) -> int:
    headers = req.headers_in
    raw = headers.get("Content-Type") or ""
    protocol = _PROTOCOLS.get(raw)   # the usual exact type spares the normalising below
    if protocol is None:
        ctype = raw.partition(";")[0].strip().lower()
        protocol = _PROTOCOLS.get(ctype)
    if protocol is None:
        host.log.warning("%s: POST with unsupported Content-Type %r", req.useragent_ip, ctype[:60])
        return _plain(req, apache.HTTP_UNSUPPORTED_MEDIA_TYPE,
                      "POST text/xml for XML-RPC or application/json for JSON-RPC 2.0.\n")
    ctx = context.CallContext(host, req, identity_mod.ANONYMOUS, protocol)
    token = context.activate(ctx)
    try:
        forged = _cross_site(req)
        if forged:
            fault = Fault(faults.ACCESS_DENIED, "refused: %s" % forged)
            _report(ctx, fault)
            return _fault_response(req, protocol, fault, apache.HTTP_FORBIDDEN)
        try:
            ctx.identity = _identify(req, host)
        except IdentityRefused as e:
            fault = Fault(faults.ACCESS_DENIED, "credentials refused: %s" % e)
            _report(ctx, fault)
            return _fault_response(req, protocol, fault, apache.HTTP_OK)
        problem = _body_problem(headers, host.config.max_body)
        if problem is not None:
            _report(ctx, problem[1])
            return _fault_response(req, protocol, problem[1], problem[0])
        body = req.read()
        if protocol == "xmlrpc":
            return _send_ok(req, xmlrpc.CONTENT_TYPE, _xmlrpc(ctx, body))
        out = jsonrpc.respond(body, lambda name, params: host.dispatcher.call(ctx, name, params),
                              lambda fault: _report(ctx, fault), host.config.max_depth)
        if out is None:   # notifications only: nothing to answer
            return _send(req, apache.HTTP_NO_CONTENT, None, b"")
        return _send_ok(req, jsonrpc.CONTENT_TYPE, out)
    except Exception:   # a bug in the host itself: still answer in protocol
        host.log.exception("%s: internal error serving %s request", ctx.describe(), protocol)
        return _fault_response(req, protocol, Fault(faults.INTERNAL_ERROR, "internal server error; see the server log"),
                               apache.HTTP_OK)
    finally:
        context.deactivate(token)


def _xmlrpc(ctx: context.CallContext, body: bytes) -> bytes:
    host = ctx.host
    try:
        name, params = xmlrpc.loads(body, host.config.max_depth)
    except Fault as fault:
        _report(ctx, fault)
        return xmlrpc.dumps_fault(fault)
    try:
        return xmlrpc.dumps_response(host.dispatcher.call(ctx, name, params))
    except Fault as fault:
        if fault.code == faults.INTERNAL_ERROR:   # result not encodable: the dispatcher did not see it
            _report(ctx, fault)
        return xmlrpc.dumps_fault(fault)


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
    ctx = context.CallContext(host, None, identity_mod.ANONYMOUS)
    try:
        host.dispatcher.authorise(ctx, _WARM_METHOD)
    except Fault:
        return   # a policy that refuses it: nothing to warm without logging refusals
    for _ in range(rounds):
        ctx = context.CallContext(host, None, identity_mod.ANONYMOUS)
        if host.guard is not None:
            ctx.identity = host.guard.identify(ctx.identity)
        token = context.activate(ctx)
        try:
            _xmlrpc(ctx, _WARM_XMLRPC)
            ctx.protocol = "jsonrpc"
            jsonrpc.respond(_WARM_JSONRPC, lambda name, params: host.dispatcher.call(ctx, name, params),
                            lambda fault: None, host.config.max_depth)
        finally:
            context.deactivate(token)


def _report(ctx: context.CallContext, fault: Fault) -> None:
    """Log a request the dispatcher never saw (malformed, too large, unencodable result)."""
    ctx.host.log.warning("%s %s: fault %d: %s", ctx.describe(), ctx.method or "-", fault.code, fault.message)


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


def _fault_response(req, protocol: str, fault: Fault, status: int) -> int:
    codec = xmlrpc if protocol == "xmlrpc" else jsonrpc
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
    if body and req.method != "HEAD":
        req.write(body, 0)
    if flush:
        req.flush()
    return apache.OK
