# SPDX-License-Identifier: Apache-2.0
"""Reference: a bare mod_python handler that reads the request body and writes a fixed answer.

What every RPC handler must do at the least (take the call in, send an answer
out) with nothing in between: the same answer as :mod:`bench.handlers.fixed`,
byte for byte, after ``req.read()``.
"""

from mod_python import apache

from bench.handlers.fixed import BODY, CONTENT_TYPE


def handler(req) -> int:
    req.read()
    req.content_type = CONTENT_TYPE
    req.set_content_length(len(BODY))
    req.write(BODY, 0)
    return apache.OK
