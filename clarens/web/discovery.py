# SPDX-License-Identifier: Apache-2.0
"""The discovery page: every module with its status, every method with signatures and help,
marked when the caller may not call it, and a form to try any method with JSON arguments."""

from __future__ import annotations

from html import escape
from typing import Mapping

from clarens import __version__
from clarens.context import CallContext


def _process(server: dict) -> str:
    """", process PID" for those who may see process ids (the admin group); nothing for others."""
    return ", process %d" % server["pid"] if "pid" in server else ""


def render(ctx: CallContext, base: str, pages: Mapping[str, str]) -> str:
    """The page for the caller in ``ctx``; ``base`` is where the host is served, ``pages`` the
    modules' pages (route -> title) for the navigation."""
    who = ctx.identity
    identity = "%s (%s%s)" % (who.name, who.source, "; groups " + ", ".join(who.groups) if who.groups else "")
    methods = ctx.methods
    allowed = {name: ctx.may_call(name) for name in methods}
    # The form starts on a method the caller may call: echo.echo, whose example fits, if it can.
    first = "echo.echo" if allowed.get("echo.echo") else next((n for n in sorted(methods) if allowed[n]), "")
    example = '["hello"]' if first == "echo.echo" else "[]"
    options = "".join("<option value='%s'%s>%s%s</option>" % (escape(n), " selected" if n == first else "", escape(n),
                                                                "" if allowed[n] else " (not allowed)")
                      for n in sorted(methods))
    nav = "".join("<a href='%s/%s'>%s</a>" % (escape(base), escape(route), escape(title))
                  for route, title in sorted(pages.items(), key=lambda kv: kv[1]))
    parts = [
        "<!DOCTYPE html><html lang=en data-endpoint='%s/'><head><meta charset=utf-8>" % escape(base),
        "<meta name=viewport content='width=device-width,initial-scale=1'><title>Clarens services</title>"
        "<link rel=icon href='data:,'>",
        "<link rel=stylesheet href='%s/static/clarens.css'>" % escape(base),
        "<script defer src='%s/static/rpc.js'></script>" % escape(base),
        "<script defer src='%s/static/discovery.js'></script></head><body>" % escape(base),
        "<header class=top><h1>Clarens services</h1><span id=whoami>You are <b>%s</b></span>"
        "<nav>%s%s</nav></header><main>" % (escape(identity), nav, _account(ctx, base)),
        "<section class='card wide'><div id=messages></div>",
        "<p>Framework %s%s. Call these methods with XML-RPC (<code>POST text/xml</code>) or "
        "JSON-RPC 2.0 (<code>POST application/json</code>) at <code>%s/</code>.</p>" % (
            escape(__version__), _process(ctx.server()), escape(base)),
        "<h2 class=spaced>Try a method</h2><form id=try class=form><label for=try-method>Method</label>"
        "<select id=try-method>%s</select><label for=try-params>Parameters</label>"
        "<textarea id=try-params rows=3 spellcheck=false>%s</textarea>"
        "<div class=actions><button type=submit>Call</button> <span class='muted small'>a JSON array "
        "(or object, for parameters by name)</span></div></form>"
        "<pre id=try-result class='mono hash' hidden></pre></section>" % (options, escape(example)),
    ]
    for module in ctx.modules():
        parts.append("<section class='card wide' id='m-%s'><h2>%s <span class='badge %s'>%s</span></h2>" % (
            escape(module["name"]), escape(module["name"]), module["status"], module["status"]))
        if module.get("error"):
            parts.append("<pre class='notice error mono hash'>%s</pre>" % escape(module["error"]))
        parts.append("<ul class=list>")
        for name in module["methods"]:
            method = methods[name]
            sigs = ["%s(%s) &rarr; %s" % (escape(name), escape(", ".join(s[1:])), escape(s[0]))
                    for s in method.signatures or ()] or ["%s(&hellip;) <i>no signature</i>" % escape(name)]
            parts.append(
                "<li id='%s' class=method><div class=row><span><code><b>%s</b></code>%s</span>"
                "<button type=button class='secondary try' data-method='%s'>Try</button></div>"
                "<div class='mono muted'>%s</div>%s</li>" % (
                    escape(name), escape(name),
                    "" if allowed[name] else " <span class='badge denied'>not allowed for you</span>",
                    escape(name), "<br>".join(sigs),
                    "<pre class=small>%s</pre>" % escape(method.help) if method.help else ""))
        parts.append("</ul></section>")
    parts.append("</main></body></html>")
    return "".join(parts)


def _account(ctx: CallContext, base: str) -> str:
    """Sign in (anonymous callers), Sign out (a session: a form, since signing out changes state), or
    nothing (a client certificate: the browser's to forget)."""
    if ctx.identity.session is not None:
        return ("<form class=signout method=post action='%s/logout'><button type=submit class=secondary id=signout>"
                "Sign out</button></form>" % escape(base))
    return "" if ctx.identity.authenticated else "<a href='%s/login'>Sign in</a>" % escape(base)
