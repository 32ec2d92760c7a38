"""The discovery page: every module, method, signature and help text, as HTML."""

from __future__ import annotations

from html import escape

from clarens import __version__
from clarens.context import CallContext

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:1rem;color:#222}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ccc}
code,pre{font:13px ui-monospace,monospace}pre{white-space:pre-wrap;background:#f6f6f6;padding:.5rem;margin:.3rem 0}
.method{margin:1rem 0 1.4rem}.failed{color:#a00}.loaded{color:#070}.sig{color:#555}
"""


def render(host, ctx: CallContext) -> str:
    """The page for the caller in ``ctx``."""
    parts = ["<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
             "<meta name=viewport content='width=device-width,initial-scale=1'>"
             "<title>Clarens services</title><style>%s</style></head><body>" % _STYLE,
             "<h1>Clarens services</h1><p>Framework %s, process %d. You are <b>%s</b> (%s). "
             "Call these methods with XML-RPC (<code>POST text/xml</code>) or JSON-RPC 2.0 "
             "(<code>POST application/json</code>) at this URL.</p>"
             % (escape(__version__), host.pid, escape(ctx.identity.name), escape(ctx.identity.source))]
    for module in sorted(host.modules.values(), key=lambda m: m.name):
        parts.append("<h2 id='m-%s'>%s <small class=%s>%s</small></h2>" % (
            escape(module.name), escape(module.name), module.status, module.status))
        if module.error:
            parts.append("<pre class=failed>%s</pre>" % escape(module.error))
        for name in module.methods:
            method = host.methods[name]
            sigs = ["%s(%s) &rarr; %s" % (escape(name), escape(", ".join(s[1:])), escape(s[0]))
                    for s in method.signatures or ()] or ["%s(&hellip;) <i>(no signature)</i>" % escape(name)]
            parts.append("<div class=method id='%s'><code><b>%s</b></code><div class=sig>%s</div>%s</div>" % (
                escape(name), escape(name), "<br>".join("<code>%s</code>" % s for s in sigs),
                "<pre>%s</pre>" % escape(method.help) if method.help else ""))
    parts.append("</body></html>")
    return "".join(parts)
