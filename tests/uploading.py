# SPDX-License-Identifier: Apache-2.0
"""Image uploads on the wire, for the tests that upload to a real Apache: a PUT's head sent
alone, byte ranges, HEAD, the partial files and the child writing one.  Shared by the
upload tests and the fault tests (which kill children mid-upload)."""

import fcntl
import http.client
import json
import os
import socket
import time

from clarens.web.uploads import PARTIAL_PREFIX
from tests.helpers import basic_header


def partials(inst):
    """Partial uploads in an instance of a test's own (the shared one: the new_hidden fixture)."""
    return sorted(n for n in os.listdir(inst.images_dir) if n.startswith(PARTIAL_PREFIX))


def send_head(inst, name, length, expect=True, user="demo", extra=None):
    """Open a connection and send only the head of a PUT; the socket (closed by the server
    once it has answered)."""
    headers = dict(basic_header(inst, user) if user else {}, Connection="close", **(extra or {}))
    if expect:
        headers["Expect"] = "100-continue"
    sock = socket.create_connection(("127.0.0.1", inst.port), timeout=10)
    sock.sendall(("PUT /clarens/images/%s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n%s\r\n" % (
        name, length, "".join("%s: %s\r\n" % kv for kv in headers.items()))).encode())
    return sock


def answer(sock):
    """Everything the server sends until it closes: (first status line, last status, JSON body)."""
    received = b""
    while chunk := sock.recv(65536):     # a timeout here means the server waited for the body
        received += chunk
    sock.close()
    first = received.split(b"\r\n", 1)[0].decode()
    head, _, body = received.rpartition(b"\r\n\r\n")
    status = int(head.rsplit(b"\nHTTP/1.1 ", 1)[-1].split(b" ", 2)[1] if b"\nHTTP/1.1 " in head
                 else head.split(b" ", 2)[1])
    return first, status, json.loads(body)


def put_range(inst, name, data, content_range, user="demo"):
    """PUT ``data`` as the part ``content_range`` of upload ``name``: (status, JSON answer)."""
    sock = send_head(inst, name, len(data), expect=False, user=user, extra={"Content-Range": content_range})
    sock.sendall(data)
    return answer(sock)[1:]


def head(inst, name, user="demo"):
    """HEAD of an upload: (status, its Upload-* headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", inst.port, timeout=10)
    conn.request("HEAD", "/clarens/images/" + name, headers=basic_header(inst, user))
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status, {k: v for k, v in response.getheaders() if k.startswith("Upload-")}


def wait_unlocked(inst, timeout=30):
    """Wait until no child is writing a partial upload any more (each holds a flock on its file)."""
    deadline = time.monotonic() + timeout
    for name in partials(inst):
        fd = os.open(os.path.join(inst.images_dir, name), os.O_RDONLY)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    assert time.monotonic() < deadline, "the upload of %s is still being written" % name
                    time.sleep(0.05)
        finally:
            os.close(fd)


def serving_child(inst, partial_name):
    """The Apache child that has the partial file open (the one receiving the upload)."""
    path = os.path.join(inst.images_dir, partial_name)
    for pid in inst.processes():
        try:
            if any(os.readlink("/proc/%d/fd/%s" % (pid, fd)) == path for fd in os.listdir("/proc/%d/fd" % pid)):
                return pid
        except OSError:
            continue
    return None

