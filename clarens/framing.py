# SPDX-License-Identifier: Apache-2.0
"""Messages on a byte stream (the pipes of an SSH session), one after another.

Each message is a header block and a body, as in HTTP and the Language Server
Protocol::

    Content-Length: 52\\r\\n
    Content-Type: application/json\\r\\n
    \\r\\n
    {"jsonrpc": "2.0", "method": "echo.echo", "params": [1], "id": 1}

``Content-Length`` is required; ``Content-Type`` names the protocol (JSON-RPC
unless it says ``text/xml``).  An answer with no body (notifications only) has
``Content-Length: 0``, so that every request gets exactly one answer.  The
server speaks first: an empty greeting with a ``Clarens`` header (its version),
once the host has booted, so that a client knows any request it sends after
that reaches a running host.
"""

from __future__ import annotations

from typing import BinaryIO, Callable

DEFAULT_TYPE = "application/json"
MAX_HEADER_LINE = 1024
MAX_HEADERS = 16


class FramingError(Exception):
    """The stream does not hold a well-formed message; it cannot be read any further."""


class TooLarge(FramingError):
    """A message whose body is over the reader's limit (nothing of it was read)."""


def read(stream: BinaryIO, max_body: int,
         begun: Callable[[], object] | None = None) -> tuple[dict[str, str], bytes] | None:
    """The next message's headers (lower-case names) and body; None at a clean end of the stream.
    ``begun`` is called once its first line has arrived (e.g. to bound the time the rest may take)."""
    headers: dict[str, str] = {}
    while True:
        line = stream.readline(MAX_HEADER_LINE + 1)
        if not line:
            if headers:
                raise FramingError("the stream ended inside a header block")
            return None
        if not headers and begun is not None:
            begun()
        if len(line) > MAX_HEADER_LINE or not line.endswith(b"\n"):
            raise FramingError("a header line longer than %d bytes" % MAX_HEADER_LINE)
        line = line.rstrip(b"\r\n")
        if not line:
            break
        name, colon, value = line.partition(b":")
        if not colon or len(headers) >= MAX_HEADERS:
            raise FramingError("a malformed header block: %r" % line[:80])
        headers[name.strip().lower().decode("ascii", "replace")] = value.strip().decode("ascii", "replace")
    length = headers.get("content-length", "")
    if not length.isdigit():
        raise FramingError("a message without a valid Content-Length")
    if int(length) > max_body:
        raise TooLarge("a message of %s bytes, over the limit of %d" % (length, max_body))
    body = stream.read(int(length))
    if len(body) != int(length):
        raise FramingError("the stream ended inside a message body")
    return headers, body


def write(stream: BinaryIO, body: bytes, content_type: str = DEFAULT_TYPE, extra: dict[str, str] | None = None) -> None:
    """Write one message (with ``extra`` headers) and flush it."""
    head = "Content-Length: %d\r\nContent-Type: %s\r\n" % (len(body), content_type)
    head += "".join("%s: %s\r\n" % kv for kv in (extra or {}).items())
    stream.write(head.encode("ascii") + b"\r\n")
    stream.write(body)
    stream.flush()
