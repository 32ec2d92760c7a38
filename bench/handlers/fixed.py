# SPDX-License-Identifier: Apache-2.0
"""Reference: a bare mod_python handler writing a fixed XML-RPC response without reading the request.

The response is byte for byte what Clarens answers to ``echo.echo('hi')``, so the
two rows move the same number of bytes.
"""

from mod_python import apache

BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<methodResponse><params><param>'
        b"<value><string>hi</string></value></param></params></methodResponse>\n")
CONTENT_TYPE = "text/xml; charset=utf-8"


def handler(req) -> int:
    req.content_type = CONTENT_TYPE
    req.set_content_length(len(BODY))
    req.write(BODY, 0)
    return apache.OK
