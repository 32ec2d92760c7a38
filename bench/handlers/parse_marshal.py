# SPDX-License-Identifier: Apache-2.0
"""Reference: parse the XML-RPC request and marshal the reply with the standard library, nothing else.

Echoes the parameters back (``xmlrpc.client.loads`` then ``dumps``): no access
control, no method registry, no signature check, no fault handling.  It is the
floor a Python XML-RPC dispatcher under mod_python can be compared with.
"""

import xmlrpc.client

from mod_python import apache

CONTENT_TYPE = "text/xml; charset=utf-8"


def handler(req) -> int:
    params, _method = xmlrpc.client.loads(req.read())
    body = xmlrpc.client.dumps(params, methodresponse=True).encode("utf-8")
    req.content_type = CONTENT_TYPE
    req.set_content_length(len(body))
    req.write(body, 0)
    return apache.OK
