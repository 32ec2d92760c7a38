# SPDX-License-Identifier: Apache-2.0
"""How request bytes reach a host and its answer comes back: HTTP(S), in-process, or SSH.

Each transport has ``url``, ``exchange(body, content_type, timeout, headers) -> Answer``
and ``close()``.  ``timeout`` bounds the whole exchange, from the connection to the
answer's last byte, whatever the server does (a server that drips its answer a byte
a second is cut off when the time is up); ``headers`` are extra request headers (a
framing header over SSH).  An answer larger than ``max_answer`` bytes is refused as
soon as that is known, without reading the rest.  Every failure is a
:class:`~clarens.client.errors.TransportError`, with ``sent=False`` only when the
request provably never reached the host.  All are safe to share between threads.
"""

from __future__ import annotations

import http.client
import io
import os
import pwd
import shlex
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from base64 import b64encode
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Sequence

from clarens import framing
from clarens.client.errors import TransportError
from clarens.keepalive import closed_by_peer

if TYPE_CHECKING:
    from clarens.host import Host

# Content types an RPC answer comes in: any other answer (an HTML error page from a proxy) is no answer.
_RPC_TYPES = ("text/xml", "application/xml", "application/json")
DEFAULT_MAX_ANSWER = 64 << 20      # bytes of answer a call accepts, unless told otherwise
DEFAULT_TIMEOUT = 30.0             # seconds a call may take, unless told otherwise
_PIECE = 1 << 16                   # bytes read at a time: memory grows with the answer, not with the claims
_TRANSIENT_STATUS = (502, 503, 504)   # a front end's word that the host failed or is not there: try again


@dataclass(frozen=True)
class Answer:
    """What a host answered: the body, and the HTTP status and headers (names in lower case; over
    SSH, the message's framing headers)."""
    body: bytes
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)


def _remaining(deadline: float) -> float:
    """Seconds left until ``deadline``; TimeoutError once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    return left


class _DeadlineReader(io.RawIOBase):
    """A socket's reads, each waiting only until the exchange's deadline (not a fresh timeout each)."""

    def __init__(self, sock: socket.socket, deadline: float):
        self.sock, self.deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self.sock.settimeout(_remaining(self.deadline))
        return self.sock.recv_into(buffer)


class _Reading:
    """What :class:`http.client.HTTPResponse` takes for a socket: it only calls ``makefile``."""

    def __init__(self, sock: socket.socket, deadline: float):
        self.sock, self.deadline = sock, deadline

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self.sock, self.deadline), _PIECE)


def _too_large(url: str, size: str, limit: int) -> TransportError:
    return TransportError(url, "an answer of %s, over the limit of %d (max_answer)" % (size, limit), transient=False)


def _why(e: BaseException) -> str:
    """An exception as a short cause: its message, else its kind."""
    text = (e.strerror if isinstance(e, OSError) and e.strerror else str(e)).strip()
    return (text or type(e).__name__)[:200]


def basic_authorization(user: str, password: str) -> str:
    """The ``Authorization`` header value of Basic credentials (UTF-8, as the host reads them)."""
    return "Basic " + b64encode(("%s:%s" % (user, password)).encode("utf-8")).decode("ascii")


class Http:
    """HTTP or HTTPS to one URL: kept-alive connections, one per call in flight.

    TLS verifies the server against ``ca`` (a CA bundle; the system's by default) and its
    host name; ``cert``/``key`` present a client certificate; ``user``/``password`` send
    Basic authentication (use it over HTTPS).  An answer is the body of a 2xx, 4xx or 5xx
    response in an RPC content type (a fault may come with an error status); anything else
    (a redirect, a proxy's HTML error page) is a TransportError carrying the ``status``.
    """

    def __init__(self, url: str, *, ca: str | None = None, cert: str | None = None, key: str | None = None,
                 user: str | None = None, password: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 max_answer: int = DEFAULT_MAX_ANSWER):
        self.url = url
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http(s) URL: %r" % url)
        self.host, self.port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        self.path = parts.path or "/"
        self.timeout, self.max_answer = timeout, max_answer
        self.context: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self.context = ssl.create_default_context(cafile=ca)
            if cert:
                self.context.load_cert_chain(cert, key)
        elif cert:
            raise ValueError("a client certificate needs an https URL, not %r" % url)
        # Sent with every request (what uploads reuse: the same credentials).
        self.headers = {"Host": parts.netloc.rpartition("@")[2], "User-Agent": "clarens-client"}
        if user is not None:
            self.headers["Authorization"] = basic_authorization(user, password or "")
        self._idle: list[socket.socket] = []
        self._lock = threading.Lock()

    def _connection(self, deadline: float) -> socket.socket:
        """A connection to send on: a kept-alive one the server has not closed, else a new one (TCP
        and the TLS handshake, before anything of the call is sent: TransportError(sent=False))."""
        while True:
            with self._lock:
                sock = self._idle.pop() if self._idle else None
            if sock is None:
                break
            if not closed_by_peer(sock):
                return sock
            sock.close()
        try:
            sock = socket.create_connection((self.host, self.port), timeout=_remaining(deadline))
        except OSError as e:
            raise TransportError(self.url, "cannot connect: %s" % _why(e), sent=False) from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.context is not None:
                sock.settimeout(_remaining(deadline))       # the whole handshake, not each read of it
                sock = self.context.wrap_socket(sock, server_hostname=self.host)
        except OSError as e:
            sock.close()
            # A certificate or protocol the server will refuse again; a handshake cut short may not be.
            refused = isinstance(e, ssl.SSLError) and not isinstance(e, (ssl.SSLEOFError, ssl.SSLZeroReturnError))
            raise TransportError(self.url, "cannot connect: %s" % _why(e), sent=False, transient=not refused) from None
        return sock

    def _head(self, length: int, content_type: str, extra: Mapping[str, str] | None) -> bytes:
        fields = {**self.headers, "Content-Type": content_type, "Content-Length": str(length), **(extra or {})}
        if any("\r" in text or "\n" in text for text in (*fields, *fields.values())):
            raise ValueError("a request header holds a line break: %r" % (extra,))
        return ("POST %s HTTP/1.1\r\n%s\r\n" % (self.path, "".join("%s: %s\r\n" % kv for kv in fields.items()))
                ).encode("latin-1")

    def exchange(self, body: bytes, content_type: str, timeout: float | None = None,
                 headers: Mapping[str, str] | None = None) -> Answer:
        """POST ``body`` (with ``headers`` besides the transport's own); the answer."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        head = self._head(len(body), content_type, headers)
        sock = self._connection(deadline)
        try:
            sock.settimeout(_remaining(deadline))
            sock.sendall(head + body)
            response = http.client.HTTPResponse(_Reading(sock, deadline), method="POST")  # type: ignore[arg-type]
            response.begin()
            answer = self._read(response)
        except TransportError:
            sock.close()
            raise
        except (OSError, http.client.HTTPException) as e:
            sock.close()
            if isinstance(e, TimeoutError):
                raise TransportError(self.url, "no answer: timed out after %g s" % timeout) from None
            # A connection that dropped (a host that went away) is worth another try on a fresh one; so
            # are the others kept alive to the same place, which likely dropped too.  Junk is not.
            dropped = isinstance(e, (OSError, http.client.IncompleteRead))
            if dropped:
                self.close()
            raise TransportError(self.url, "no answer: %s" % _why(e), transient=dropped) from None
        if response.will_close:
            sock.close()
        else:
            with self._lock:
                self._idle.append(sock)
        return self._judge(response, answer)

    def _read(self, response: http.client.HTTPResponse) -> bytes:
        """The answer's body, refused as soon as it is known to be over ``max_answer``."""
        if response.length is not None and response.length > self.max_answer:
            raise _too_large(self.url, "%d bytes" % response.length, self.max_answer)
        pieces, size = [], 0
        while piece := response.read(_PIECE):
            pieces.append(piece)
            size += len(piece)
            if size > self.max_answer:
                raise _too_large(self.url, "more than %d bytes" % self.max_answer, self.max_answer)
        if response.length:           # what is still owed: read(n) takes a short body for a whole one
            raise http.client.IncompleteRead(b"", response.length)
        return b"".join(pieces)


    def _judge(self, response: http.client.HTTPResponse, body: bytes) -> Answer:
        """The answer, if it is one: an RPC body with a success or error status."""
        status = response.status
        headers = {name.lower(): value for name, value in response.getheaders()}
        kind = headers.get("content-type", "").partition(";")[0].strip().lower()
        if status == 503:            # the front had no host to give it to: it ran nowhere
            raise TransportError(self.url, "HTTP 503 %s" % response.reason, sent=False, status=status)
        if status == 204 and not body:
            return Answer(b"", status, headers)
        if kind in _RPC_TYPES and (200 <= status < 300 or 400 <= status < 600):
            return Answer(body, status, headers)
        what = " (a redirect to %s: not followed)" % headers.get("location", "nowhere") if 300 <= status < 400 else ""
        raise TransportError(self.url, "HTTP %d %s%s: %s" % (status, response.reason, what,
                                                             body[:200].decode("utf-8", "replace").strip()),
                             transient=status in _TRANSIENT_STATUS, status=status)

    def close(self) -> None:
        """Close the connections kept alive (those in use close when their call ends)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for sock in idle:
            sock.close()


class Local:
    """``local:[CONFIG]``: the host booted in this process, serving calls as the OS user running it.

    The same dispatcher, loader, ACLs and ``_startup_init`` as in Apache, in the
    ``standalone`` mode of :func:`clarens.host.boot` (the user's session databases).
    CONFIG defaults to ``$CLARENS_CONFIG``, else the checkout's ``conf/clarens.conf``.  A
    process runs one local host: every ``local:`` URL naming the same configuration
    shares it, and one naming another configuration is refused.  A call runs in the
    calling thread, to its end: ``timeout`` does not apply.
    """

    def __init__(self, url: str, max_answer: int = DEFAULT_MAX_ANSWER):
        from clarens import config as config_mod
        from clarens import host as host_mod
        from clarens.identity import unix_user
        self.url = url
        self.max_answer = max_answer
        path = os.path.abspath(os.path.expanduser(url[len("local:"):] or os.environ.get("CLARENS_CONFIG")
                                                  or config_mod.DEFAULT_CONFIG))
        try:
            self.host: Host = host_mod.standalone(path)
        except config_mod.ConfigError as e:
            raise TransportError(url, "the local host cannot start: %s" % e, sent=False, transient=False) from None
        except ValueError as e:
            raise TransportError(url, str(e), sent=False, transient=False) from None
        self.caller = unix_user(pwd.getpwuid(os.geteuid()).pw_name)

    def exchange(self, body: bytes, content_type: str, timeout: float | None = None,
                 headers: Mapping[str, str] | None = None) -> Answer:
        from clarens import serving
        codec = serving.codec_for(content_type)
        if codec is None:
            raise ValueError("no codec for %r" % content_type)
        answer = serving.serve(self.host, self.caller, codec, body, "local") or b""
        if len(answer) > self.max_answer:
            raise _too_large(self.url, "%d bytes" % len(answer), self.max_answer)
        return Answer(answer, 200, {"content-type": content_type})

    def close(self) -> None:
        pass


DEFAULT_REMOTE = "/usr/bin/python3 -m clarens.stdio"
# What ssh says when trying again cannot help.
_SSH_FINAL = ("Permission denied", "Host key verification failed", "Could not resolve hostname")
_NO_CLARENS = ("; the remote Python has no clarens: for a checkout, set remote = "
               "env PYTHONPATH=/path/to/checkout /usr/bin/python3 -m clarens.stdio")


class _Watchdog:
    """Kills a session's process at ``deadline`` (which ends any read or write on its pipes)."""

    def __init__(self, proc: subprocess.Popen, deadline: float):
        self.fired = False

        def kill() -> None:
            self.fired = True
            proc.kill()
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), kill)

    def __enter__(self) -> "_Watchdog":
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


class Ssh:
    """``ssh://[USER@]HOST[:PORT][/CONFIG]``: the host started on demand over OpenSSH, one session
    per transport, calls taking turns on it (make several services for parallel calls).

    ``ssh`` (the command and its options: a list of words, or a string split into words)
    runs with the user's keys, agent, ``known_hosts`` and ``~/.ssh/config``, in batch mode
    (it never asks for a password).  The remote end runs ``remote`` (default
    :data:`DEFAULT_REMOTE`), given ``--config CONFIG`` when the URL has a path.  ``remote``
    is split into words like a shell would, and each word reaches the remote end as it is
    (quoted for the remote shell): ``&&``, ``;``, ``cd`` and redirections do not work, and
    ``env NAME=VALUE ... COMMAND`` sets the environment.  The session starts with the first
    call and ends at :meth:`close` (or when this process exits); a call that times out ends it.
    """

    def __init__(self, url: str, remote: str = DEFAULT_REMOTE, ssh: str | Sequence[str] = ("ssh",),
                 timeout: float = DEFAULT_TIMEOUT, max_answer: int = DEFAULT_MAX_ANSWER):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "ssh" or not parts.hostname:
            raise ValueError("not an ssh:// URL: %r" % url)
        self.url = url
        self.timeout, self.max_answer = timeout, max_answer
        command = shlex.split(remote) + (["--config", parts.path] if parts.path not in ("", "/") else [])
        self.argv = (shlex.split(ssh) if isinstance(ssh, str) else list(ssh)) + ["-T", "-o", "BatchMode=yes"]
        if parts.port:
            self.argv += ["-p", str(parts.port)]
        if parts.username:
            self.argv += ["-l", urllib.parse.unquote(parts.username)]
        # ssh joins the remote words with spaces for the remote shell: quote them.
        self.argv += ["--", parts.hostname, shlex.join(command)]
        self._proc: subprocess.Popen | None = None
        self._relay: threading.Thread | None = None
        self._lock = threading.Lock()
        self.stderr_tail: list[str] = []     # the last lines the remote end or ssh wrote to standard error

    def _session(self, deadline: float) -> subprocess.Popen:
        """The running session, started (and its greeting read) if there is none."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._end(deadline)
        try:
            proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
        except OSError as e:
            raise TransportError(self.url, "cannot run %s: %s" % (self.argv[0], _why(e)), sent=False,
                                 transient=False) from None
        self._proc = proc
        self.stderr_tail = []                # this session's, not the last one's
        self._relay = threading.Thread(target=self._relay_stderr, args=(proc,), daemon=True)
        self._relay.start()
        try:
            with _Watchdog(proc, deadline) as watchdog:
                greeting = self._read(proc, watchdog, deadline, greeting=True)
        except TransportError as e:   # nothing was sent: the login or the host's start failed
            raise TransportError(self.url, e.cause, sent=False, transient=e.transient) from None
        if "clarens" not in greeting[0]:
            self._end(deadline)
            raise TransportError(self.url, "the remote command is not clarens.stdio", sent=False, transient=False)
        return proc

    def _relay_stderr(self, proc: subprocess.Popen) -> None:
        """Keep the last lines of the remote's standard error (ssh's own complaints, the host's log)."""
        assert proc.stderr is not None
        while line := proc.stderr.readline(4096):
            self.stderr_tail = (self.stderr_tail + [line.decode("utf-8", "replace").rstrip()])[-20:]

    def _read(self, proc: subprocess.Popen, watchdog: _Watchdog, deadline: float,
              greeting: bool = False) -> tuple[dict[str, str], bytes]:
        """The next message from the session; TransportError (the session is over) if there is none in time."""
        assert proc.stdout is not None
        try:
            message = framing.read(proc.stdout, self.max_answer)   # type: ignore[arg-type]
        except framing.FramingError as e:
            message, why, broken = None, str(e), True
        else:
            why, broken = "the session ended", False
        if message is not None:
            return message
        # After a framing error the stream is out of step and the remote end may still be running:
        # end the session (so that the next call starts a new one; mid-call, at once), and read ssh's
        # own reason (e.g. "Permission denied") from what it wrote to standard error.
        timed_out = watchdog.fired
        self._end(deadline, kill=broken and not greeting)
        tail = "; ".join(self.stderr_tail[-3:])
        if timed_out:
            why, transient = "no answer: timed out (%s)" % why, True
        elif greeting:     # only ssh failing to reach the host may mend (its exit status is then 255)
            transient = proc.returncode == 255 and not any(word in tail for word in _SSH_FINAL)
        else:              # a session that ended mid-call may have lost its host; a broken one will not mend
            transient = not broken
        hint = _NO_CLARENS if "No module named 'clarens'" in tail else ""
        raise TransportError(self.url, "%s (exit status %s)%s%s" % (why, proc.returncode, ": " + tail if tail else "",
                                                                    hint), transient=transient)

    def exchange(self, body: bytes, content_type: str, timeout: float | None = None,
                 headers: Mapping[str, str] | None = None) -> Answer:
        """Send ``body`` as one message (``headers`` in its header block); the answer."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise TransportError(self.url, "the session was busy with other calls until this call's timeout",
                                 sent=False)
        try:
            proc = self._session(deadline)
            assert proc.stdin is not None
            with _Watchdog(proc, deadline) as watchdog:
                try:
                    framing.write(proc.stdin, body, content_type, headers)   # type: ignore[arg-type]
                except OSError as e:
                    self._end(deadline)
                    raise TransportError(self.url, "the session ended: %s" % _why(e)) from None
                found, answer = self._read(proc, watchdog, deadline)
            return Answer(answer, 200, found)
        finally:
            self._lock.release()

    def _end(self, deadline: float | None = None, kill: bool = False) -> None:
        """End the session: close its input and wait for it to exit (at most 5 s, and not past
        ``deadline``), then kill it; or ``kill`` it at once."""
        proc, self._proc = self._proc, None
        relay, self._relay = self._relay, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        if kill:
            proc.kill()
        wait = 5.0 if deadline is None else min(5.0, max(0.05, deadline - time.monotonic()))
        try:
            proc.wait(timeout=wait)       # the remote end sees its input end and exits; so does ssh
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if relay is not None:
            # ssh has exited, but the relay may not have read its last lines yet: wait for them, unless
            # something ssh left behind (a ControlPersist master) keeps the pipe open.
            relay.join(timeout=wait)

    def close(self) -> None:
        with self._lock:
            self._end()


SETTINGS = {"http": ("ca", "cert", "key", "user", "password", "timeout", "max_answer"),
            "ssh": ("remote", "ssh", "timeout", "max_answer"), "local": ("max_answer",)}


def for_url(url: str, **settings) -> Http | Local | Ssh:
    """The transport for ``url`` with the settings that apply to its kind (the others are ignored)."""
    kind = "local" if url.startswith("local:") else "ssh" if url.startswith("ssh:") else "http"
    given = {k: v for k, v in settings.items() if k in SETTINGS[kind] and v is not None}
    return Local(url, **given) if kind == "local" else Ssh(url, **given) if kind == "ssh" else Http(url, **given)
