# SPDX-License-Identifier: Apache-2.0
"""The burner's web routes: ``/clarens/images/NAME`` (uploads) and ``/clarens/burner`` (the page).

Uploads are resumable and streamed (the protocol is :mod:`clarens.web.uploads`'s),
authorised as ``burner.upload``.  The page gets its data from the ``burner.*``
methods, as the caller, and is plain HTML, CSS and JavaScript from ``web/``.
"""

from __future__ import annotations

import os
from html import escape

from clarens import context
from clarens.faults import Fault
from clarens.web.routes import WebRequest, WebResponse, static_file
from clarens.web.uploads import Progress, UploadError, parse_content_range

from .service import current

_WEB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")
with open(os.path.join(_WEB, "page.html"), encoding="utf-8") as _f:
    _PAGE = _f.read()


def upload(web: WebRequest) -> WebResponse:
    """PUT or HEAD /clarens/images/NAME: upload an ISO image (resumable), or ask how much of it
    the server holds.  The protocol is described in :mod:`clarens.web.uploads`."""
    if web.method not in ("PUT", "HEAD"):
        return WebResponse(405, b'{"error":{"code":405,"message":"use PUT or HEAD /clarens/images/NAME"}}',
                           headers={"Allow": "PUT, HEAD"})
    web.authorise("burner.upload")
    burner = current()
    who, _ = burner.caller()
    burner.sweep_if_due()
    try:
        if web.method == "HEAD":
            progress = burner.store.status(web.path, who)
            return WebResponse(404) if progress is None else WebResponse(200, headers=progress.headers)
        content_range = web.headers.get("Content-Range")
        result = burner.store.receive(web.path, who, web.content_length,
                                      parse_content_range(content_range) if content_range else None, web.read)
    except UploadError as e:
        context.current().note_fault(Fault(e.status, "upload of %s refused: %s" % (ascii(web.path), e)))
        response = WebResponse.json({"error": {"code": e.status, "message": str(e)}}, e.status)
        response.headers.update(e.headers)
        return response
    if isinstance(result, Progress):
        response = WebResponse.json({"upload": {"name": result.name, "size": result.total,
                                                "received": result.received, "expires": result.expires}})
        response.headers.update(result.headers)
        return response
    return WebResponse.json({"image": result}, 201)


def page(web: WebRequest) -> WebResponse:
    """GET /clarens/burner: the burner page (its data comes from the burner.* methods, as the caller)."""
    if web.method not in ("GET", "HEAD"):
        return WebResponse(405, b"use GET", "text/plain", {"Allow": "GET, HEAD"})
    if not web.path:
        return WebResponse.html(_PAGE.replace("@BASE@", escape(web.base)))
    return static_file(_WEB, web.path)
