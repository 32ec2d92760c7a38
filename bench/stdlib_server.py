# SPDX-License-Identifier: Apache-2.0
"""The alternative a user would pick: the standard library's threaded XML-RPC server.

``SimpleXMLRPCServer`` with ``socketserver.ThreadingMixIn`` (a thread per
connection), HTTP/1.1 keep-alive and a listen backlog of 128, serving the same
``echo.echo``.  Request logging is off, as it would be under load (it writes a
line to stderr per request).  Run as a subprocess by the benchmark::

    /usr/bin/python3 -m bench.stdlib_server PORT
"""

from __future__ import annotations

import socketserver
import sys
from typing import Any
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

PATH = "/RPC2"


class Handler(SimpleXMLRPCRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive
    rpc_paths = (PATH,)


class Server(socketserver.ThreadingMixIn, SimpleXMLRPCServer):
    daemon_threads = True
    request_queue_size = 128        # listen backlog
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):   # wrk closing its connections
            super().handle_error(request, client_address)


def echo(value: Any) -> Any:
    return value


def main(port: int) -> None:
    server = Server(("127.0.0.1", port), Handler, logRequests=False, allow_none=True)
    server.register_function(echo, "echo.echo")
    server.serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]))
