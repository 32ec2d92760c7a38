"""How request bytes reach a host and its answer comes back: HTTP(S), in-process, or SSH.

Each transport has ``url``, ``exchange(body, content_type, timeout) -> bytes``
(the answer's body; ``b""`` when there is none) and ``close()``, and raises
:class:`~clarens.client.errors.TransportError` with ``sent=False`` only when the
request provably never reached the host.  All are safe to share between threads.
"""

from __future__ import annotations

import base64
import http.client
import os
import pwd
import select
import shlex
import socket
import ssl
import subprocess
import threading
import urllib.parse
from typing import TYPE_CHECKING, Sequence

from clarens import framing
from clarens.client.errors import TransportError

if TYPE_CHECKING:
    from clarens.host import Host

# Content types an RPC answer comes in: any other answer (an HTML error page from a proxy) is no answer.
_RPC_TYPES = ("text/xml", "application/xml", "application/json")
MAX_ANSWER = 1 << 30


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether a kept-alive connection was closed by the server (or has unread bytes: unusable)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


class Http:
    """HTTP or HTTPS to one URL: kept-alive connections, one per call in flight.

    TLS verifies the server against ``ca`` (a CA bundle; the system's by default) and its
    host name; ``cert``/``key`` present a client certificate; ``user``/``password`` send
    Basic authentication (use it over HTTPS).
    """

    def __init__(self, url: str, *, ca: str | None = None, cert: str | None = None, key: str | None = None,
                 user: str | None = None, password: str | None = None, timeout: float = 30.0):
        self.url = url
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http(s) URL: %r" % url)
        self.host, self.port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        self.path = parts.path or "/"
        self.timeout = timeout
        self.context: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self.context = ssl.create_default_context(cafile=ca)
            if cert:
                self.context.load_cert_chain(cert, key)
        elif cert:
            raise ValueError("a client certificate needs an https URL, not %r" % url)
        self.headers = {"User-Agent": "clarens-client"}
        if user is not None:
            token = base64.b64encode(("%s:%s" % (user, password or "")).encode("utf-8")).decode("ascii")
            self.headers["Authorization"] = "Basic " + token
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connection(self, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        """A connection to use (kept-alive if one is idle, else new and connected) and whether it was
        kept alive.  TransportError(sent=False) if a new one cannot be made."""
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                break
            if conn.sock is not None and not _closed_by_peer(conn.sock):
                conn.sock.settimeout(timeout)
                return conn, True
            conn.close()
        if self.context is not None:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.context)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.connect()            # TCP, and the TLS handshake: nothing of the call is sent yet
        except (OSError, ssl.SSLError) as e:
            conn.close()
            raise TransportError(self.url, "cannot connect: %s" % (e.strerror or e if isinstance(e, OSError) else e),
                                 sent=False) from None
        return conn, False

    def exchange(self, body: bytes, content_type: str, timeout: float | None = None) -> bytes:
        """POST ``body``; the answer's body."""
        conn, _ = self._connection(self.timeout if timeout is None else timeout)
        try:
            conn.request("POST", self.path, body, {**self.headers, "Content-Type": content_type})
            response = conn.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise TransportError(self.url, "no answer: %s" % (e or type(e).__name__)) from None
        if response.will_close:
            conn.close()
        else:
            with self._lock:
                self._idle.append(conn)
        if response.status == 503:            # the front had no host to give it to: it ran nowhere
            raise TransportError(self.url, "HTTP 503 %s" % response.reason, sent=False)
        kind = (response.getheader("Content-Type") or "").partition(";")[0].strip().lower()
        if response.status == 204 and not answer:
            return b""
        if kind not in _RPC_TYPES:
            raise TransportError(self.url, "HTTP %d %s: %s" % (response.status, response.reason,
                                                               answer[:200].decode("utf-8", "replace").strip()))
        return answer                         # a fault answered with a 4xx status is still an answer

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class Local:
    """``local:[CONFIG]``: the host booted in this process, serving calls as the OS user running it.

    The same dispatcher, loader, ACLs and ``_startup_init`` as in Apache, in the
    ``standalone`` mode of :func:`clarens.host.boot` (the user's session databases).
    CONFIG defaults to ``$CLARENS_CONFIG``, else the checkout's ``conf/clarens.conf``.  A
    process runs one local host: every ``local:`` URL naming the same configuration
    shares it, and one naming another configuration is refused.
    """

    _booted: tuple[str, "Host"] | None = None      # (configuration path, host) of this process
    _boot_lock = threading.Lock()

    def __init__(self, url: str):
        from clarens import config as config_mod
        from clarens import host as host_mod
        from clarens.identity import unix_user
        self.url = url
        path = os.path.abspath(os.path.expanduser(url[len("local:"):] or os.environ.get("CLARENS_CONFIG")
                                                  or config_mod.DEFAULT_CONFIG))
        with Local._boot_lock:
            if Local._booted is None:
                try:
                    Local._booted = (path, host_mod.boot(None, path, standalone=True))
                except config_mod.ConfigError as e:
                    raise TransportError(url, "the local host cannot start: %s" % e, sent=False) from None
            elif Local._booted[0] != path:
                raise TransportError(url, "this process already runs a local host from %s" % Local._booted[0],
                                     sent=False)
            self.host = Local._booted[1]
        self.caller = unix_user(pwd.getpwuid(os.geteuid()).pw_name)

    def exchange(self, body: bytes, content_type: str, timeout: float | None = None) -> bytes:
        from clarens import serving
        codec = serving.codec_for(content_type)
        if codec is None:
            raise ValueError("no codec for %r" % content_type)
        return serving.serve(self.host, self.caller, codec, body, "local") or b""

    def close(self) -> None:
        pass


DEFAULT_REMOTE = "/usr/bin/python3 -m clarens.stdio"


class Ssh:
    """``ssh://[USER@]HOST[:PORT][/CONFIG]``: the host started on demand over OpenSSH, one session
    per transport, calls taking turns on it (make several services for parallel calls).

    ``ssh`` runs with the user's keys, agent, ``known_hosts`` and ``~/.ssh/config``, in batch mode
    (it never asks for a password).  The remote end runs ``remote`` (default
    :data:`DEFAULT_REMOTE`), given ``--config CONFIG`` when the URL has a path.  The session
    starts with the first call and ends at :meth:`close` (or when this process exits).
    """

    def __init__(self, url: str, remote: str = DEFAULT_REMOTE, ssh: Sequence[str] = ("ssh",),
                 timeout: float = 30.0):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "ssh" or not parts.hostname:
            raise ValueError("not an ssh:// URL: %r" % url)
        self.url = url
        self.timeout = timeout
        command = shlex.split(remote) + (["--config", parts.path] if parts.path not in ("", "/") else [])
        self.argv = list(ssh) + ["-T", "-o", "BatchMode=yes"]
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

    def _session(self, timeout: float) -> subprocess.Popen:
        """The running session, started (and its greeting read) if there is none."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._end()
        try:
            proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
        except OSError as e:
            raise TransportError(self.url, "cannot run %s: %s" % (self.argv[0], e.strerror), sent=False) from None
        self._proc = proc
        self.stderr_tail = []                # this session's, not the last one's
        self._relay = threading.Thread(target=self._relay_stderr, args=(proc,), daemon=True)
        self._relay.start()
        try:
            greeting = self._read(proc, timeout)
        except TransportError as e:   # nothing was sent: the login or the host's start failed
            self._end()
            raise TransportError(self.url, e.cause, sent=False) from None
        if "clarens" not in greeting[0]:
            self._end()
            raise TransportError(self.url, "the remote command is not clarens.stdio", sent=False)
        return proc

    def _relay_stderr(self, proc: subprocess.Popen) -> None:
        """Keep the last lines of the remote's standard error (ssh's own complaints, the host's log)."""
        assert proc.stderr is not None
        for line in proc.stderr:
            self.stderr_tail = (self.stderr_tail + [line.decode("utf-8", "replace").rstrip()])[-20:]

    def _read(self, proc: subprocess.Popen, timeout: float) -> tuple[dict[str, str], bytes]:
        assert proc.stdout is not None
        poller = select.poll()          # not select(): it fails on descriptors over 1023, in a busy process
        poller.register(proc.stdout, select.POLLIN)
        if not poller.poll(timeout * 1000):
            self._end()
            raise TransportError(self.url, "no answer within %g s" % timeout)
        # The first byte came in time; the rest must too: a remote end that stops mid-message is
        # killed when the time is up, which ends the read.
        watchdog = threading.Timer(timeout, proc.kill)
        watchdog.start()
        try:
            message = framing.read(proc.stdout, MAX_ANSWER)   # type: ignore[arg-type]
        except framing.FramingError as e:
            message, why = None, str(e)
        else:
            why = "the session ended"
        finally:
            watchdog.cancel()
        if message is None:
            # After a framing error the stream is out of step and the remote end may still be running:
            # end the session (so that the next call starts a new one).  Either way _end waits for ssh
            # and for the last of its standard error (ssh's own reason, e.g. "Permission denied").
            self._end()
            code = proc.returncode
            tail = "; ".join(self.stderr_tail[-3:])
            raise TransportError(self.url, "%s (exit status %s)%s" % (why, code, ": " + tail if tail else ""))
        return message

    def exchange(self, body: bytes, content_type: str, timeout: float | None = None) -> bytes:
        timeout = self.timeout if timeout is None else timeout
        with self._lock:
            proc = self._session(timeout)
            assert proc.stdin is not None
            try:
                framing.write(proc.stdin, body, content_type)   # type: ignore[arg-type]
            except OSError as e:
                self._end()
                raise TransportError(self.url, "the session ended: %s" % e.strerror) from None
            return self._read(proc, timeout)[1]

    def _end(self) -> None:
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
        try:
            proc.wait(timeout=5)       # the remote end sees its input end and exits; so does ssh
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if relay is not None:
            # ssh has exited, but the relay may not have read its last lines yet: wait for them, unless
            # something ssh left behind (a ControlPersist master) keeps the pipe open.
            relay.join(timeout=5)

    def close(self) -> None:
        with self._lock:
            self._end()


def for_url(url: str, **settings) -> Http | Local | Ssh:
    """The transport for ``url`` with the settings that apply to its kind (the others are ignored)."""
    if url.startswith("local:"):
        return Local(url)
    if url.startswith("ssh:"):
        return Ssh(url, **{k: v for k, v in settings.items() if k in ("remote", "ssh", "timeout") and v is not None})
    return Http(url, **{k: v for k, v in settings.items()
                        if k in ("ca", "cert", "key", "user", "password", "timeout") and v is not None})
