# SPDX-License-Identifier: Apache-2.0
"""The client side of resumable uploads (the protocol is described in :mod:`clarens.web.uploads`).

:func:`upload` sends a file with ``PUT``, asking the server first how much of it
it already holds (``Content-Range: bytes */SIZE``), then sending the rest with
``Content-Range: bytes OFFSET-END/SIZE`` and ``Expect: 100-continue``, so that a
refusal arrives before the body is sent.  When the connection drops, it asks again
and sends what is missing, until the server has the whole file or the attempts run
out.  Memory stays flat: the file is read and sent in chunks.

The request is written on a plain socket (TLS-wrapped for https) because
:mod:`http.client` cannot wait for ``100 Continue``; :class:`http.client.HTTPResponse`
parses the answers.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
import ssl
import time
import urllib.parse
from typing import Callable

from clarens.client.errors import UploadFailed, UploadRefused

SLICE = 8 << 20        # bytes sent between two progress reports
ANSWER_LIMIT = 1 << 20  # bytes of an answer read
CONTINUE_WAIT = 5.0    # seconds to wait for "100 Continue" before sending anyway (curl waits 1 s)
Progress = Callable[[int, int], None]   # (bytes the server has or was sent, file size)


class _Reader:
    """Hands :class:`http.client.HTTPResponse` a reader we already use, so nothing read ahead is lost."""

    def __init__(self, fp):
        self.fp = fp

    def makefile(self, mode: str):
        return self.fp


class Target:
    """Where and as whom to upload: ``url`` is the file's URL (``.../images/NAME``)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None,
                 timeout: float = 60.0):
        self.url = url
        self.parts = urllib.parse.urlsplit(url)
        if self.parts.scheme not in ("http", "https"):
            raise ValueError("not an http(s) URL: %r" % url)
        self.headers = dict(headers or {})
        self.context = context if context is not None or self.parts.scheme == "http" \
            else ssl.create_default_context()
        self.timeout = timeout

    def connect(self) -> socket.socket:
        port = self.parts.port or (443 if self.parts.scheme == "https" else 80)
        sock = socket.create_connection((self.parts.hostname, port), timeout=self.timeout)
        if self.context is not None:
            try:
                sock = self.context.wrap_socket(sock, server_hostname=self.parts.hostname)
            except BaseException:
                sock.close()
                raise
        return sock

    def head(self, length: int, extra: dict[str, str]) -> bytes:
        """A PUT request's head."""
        lines = ["PUT %s HTTP/1.1" % (self.parts.path or "/"), "Host: %s" % self.parts.netloc.rpartition("@")[2],
                 "Content-Length: %d" % length, "Content-Type: application/octet-stream", "Connection: close"]
        lines += ["%s: %s" % kv for kv in {**self.headers, **extra}.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _answer(response: http.client.HTTPResponse) -> tuple[int, dict]:
    """The status and JSON body of an answer; UploadRefused for an error status."""
    raw = response.read(ANSWER_LIMIT)     # a few hundred bytes of JSON; more is not an answer of ours
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, RecursionError):
        body = {}
    body = body if isinstance(body, dict) else {}
    if response.status >= 400:
        error = body.get("error")
        error = error if isinstance(error, dict) else {}
        retry, offset = response.getheader("Retry-After"), response.getheader("Upload-Offset")
        raise UploadRefused(response.status, str(error.get("message") or raw[:200].decode("utf-8", "replace")),
                            float(retry) if retry and retry.isdigit() else None,
                            int(offset) if offset and offset.isdigit() else None)
    return response.status, body


def _exchange(target: Target, extra: dict[str, str], length: int,
              send_body: Callable[[socket.socket], None] | None) -> tuple[int, dict]:
    """One PUT on a fresh connection; the answer's status and JSON body."""
    sock = target.connect()
    try:
        sock.sendall(target.head(length, extra))
        fp = sock.makefile("rb")
        if send_body is not None:
            # Wait for "100 Continue" or a refusal; a server that ignores Expect gets the body anyway.
            pending = isinstance(sock, ssl.SSLSocket) and sock.pending()
            if pending or select.select([sock], [], [], CONTINUE_WAIT)[0]:
                if fp.peek(12)[:12] in (b"HTTP/1.1 100", b"HTTP/1.0 100"):
                    while fp.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    send_body(sock)
            else:
                send_body(sock)
        # typeshed wants a socket, but HTTPResponse only calls makefile() on it
        response = http.client.HTTPResponse(_Reader(fp), method="PUT")  # type: ignore[arg-type]
        response.begin()
        return _answer(response)
    finally:
        sock.close()


def upload(target: Target, path: str, progress: Progress | None = None, attempts: int = 10,
           sleep: Callable[[float], None] = time.sleep) -> dict:
    """Upload the file at ``path`` to ``target``, resuming after failures; the server's answer
    to the request that completed it (201).  UploadRefused if the server refuses; UploadFailed if the
    connection failed ``attempts`` times in a row without progress."""
    size = os.path.getsize(path)
    failures, most = 0, -1
    last_error: str | Exception | None = None
    while True:
        try:
            held = _received(target, _exchange(target, {"Content-Range": "bytes */%d" % size}, 0, None)[1])
            if held > most:                 # progress since the last failure: a fresh set of attempts
                failures, most = 0, held
            if progress:
                progress(held, size)
            status, answer = _send_rest(target, path, size, held, progress)
            if status == 201:
                if not isinstance(answer.get("image"), dict):
                    raise UploadFailed(target.url, "the server's answer names no image: %.200r" % (answer,))
                return answer
            last_error, delay = "the server holds only part of the file", 0.0
        except UploadRefused as e:
            if e.status != 409 or (e.retry_after is None and e.offset is None):
                raise
            # The server holds more than we knew (ask again at once), or our previous attempt is
            # still being wound up there: usually a moment, up to Apache's Timeout when the
            # connection died silently.
            last_error = e
            if e.offset is not None:
                delay = 0.0
            else:
                assert e.retry_after is not None     # refused at once above otherwise
                delay = min(e.retry_after, 2.0 ** failures)
        except (OSError, http.client.HTTPException) as e:
            last_error, delay = e, min(2.0 ** failures, 10.0)
        failures += 1
        if failures >= attempts:
            raise UploadFailed(target.url, "upload of %s failed %d times; last: %s" % (path, failures, last_error))
        sleep(delay)


def _received(target: Target, answer: dict) -> int:
    """How much of the file the server holds, from its answer to ``Content-Range: bytes */SIZE``."""
    upload = answer.get("upload")
    held = upload.get("received") if isinstance(upload, dict) else None
    if type(held) is not int or held < 0:
        raise UploadFailed(target.url, "not an answer to an upload: %.200r" % (answer,))
    return held


def _send_rest(target: Target, path: str, size: int, offset: int, progress: Progress | None) -> tuple[int, dict]:
    def send_body(sock: socket.socket) -> None:
        sent = offset
        with open(path, "rb") as f:
            while sent < size:       # sendfile: from the page cache to the socket, no copy (plain http)
                n = sock.sendfile(f, sent, min(SLICE, size - sent))
                if not n:
                    raise OSError("%s ended after %d of %d bytes" % (path, sent, size))
                sent += n
                if progress:
                    progress(sent, size)
    extra = {"Content-Range": "bytes %d-%d/%d" % (offset, size - 1, size), "Expect": "100-continue"}
    return _exchange(target, extra, size - offset, send_body)
