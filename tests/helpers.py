# SPDX-License-Identifier: Apache-2.0
"""Helpers for tests against real private Apache + mod_python instances of this checkout.

Each instance runs from a throw-away state directory on free ports, with the
test-only modules of tests/modules/ loaded beside the shipped ones (and never
any other module of the checkout's modules/), and the shipped ACL files plus
tests/acl/.
"""

from __future__ import annotations

import base64
import functools
import glob
import hashlib
import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import xmlrpc.client

from clarens import procfs
from clarens.dev import devpki
from clarens.dev.instance import Instance, acl_dir, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TEST_MODULES = os.path.join(ROOT, "tests", "modules")
# The service modules the project ships in modules/ (tests/system/package/test_layout.py holds this list to
# what git tracks there).  The checkout's modules/ may also hold a service author's own, which no
# test may load: one called like a test module shadowed it and broke a test with no hint.
SHIPPED_MODULES = ("acl", "burner", "echo", "session", "system", "validator1")
ORG = devpki.ORG


@functools.lru_cache(maxsize=None)
def shipped_modules() -> str:
    """A directory of the shipped modules alone (links into modules/), for the tests' instances."""
    path = make_state_dir("clarens-modules-")
    for name in SHIPPED_MODULES:
        os.symlink(os.path.join(ROOT, "modules", name), os.path.join(path, name))
    return path


# What the run leaves behind on purpose, for a look after a failure: named in its last lines.
KEPT: list[str] = []


def keep(path: str, what: str) -> None:
    """Name ``path`` (``what`` it is, and its size) in the run's last lines: it is kept."""
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files
               if not os.path.islink(os.path.join(d, f)))
    KEPT.append("%s (%s, %.0f MB): rm -rf %s removes it" % (path, what, size / 1e6, path))


def make_state_dir(prefix: str) -> str:
    """A state directory Apache's children (www-data) can traverse."""
    path = tempfile.mkdtemp(prefix=prefix)
    os.chmod(path, 0o755)
    return path


def make_acl_dir(*extra_files: str) -> str:
    """The shipped ACL files plus tests/acl/*.acl (and ``extra_files``), in a directory of their own."""
    return acl_dir(make_state_dir("clarens-acl-"),
                   glob.glob(os.path.join(ROOT, "tests", "acl", "*.acl")) + list(extra_files))


def start_instance(prefix: str, **kwargs) -> Instance:
    options = {"clarens.server.modules_path": "%s:%s" % (shipped_modules(), TEST_MODULES),
               "clarens.module:probe.greeting": "hello from PythonOption",
               "clarens.server.log_level": "info",
               # a small process pool: many instances run at once in a test run (the hostile tests use the shipped one)
               "clarens.server.spare_workers": "4", "clarens.server.workers": "48",
               "clarens.server.acl_dir": make_acl_dir(),
               # the lines tests look for are not held back by the budget of refusal lines (test_hostile keeps it)
               "clarens.server.log_lines": "1000"}
    options.update(kwargs.pop("options", {}))
    kwargs.setdefault("log_level", "info")
    port, tls_port = kwargs.pop("port", None) or free_port(), kwargs.pop("tls_port", None) or free_port()
    inst = Instance(make_state_dir(prefix), port, tls_port, options=options, **kwargs)
    inst.start()
    return inst


def basic_url(inst: Instance, user: str) -> str:
    """The instance's URL with a demo htpasswd user's credentials in it."""
    return inst.url.replace("http://", "http://%s:%s@" % (user, devpki.credentials(inst.state_dir)[user]))


def basic_proxy(inst: Instance, user: str) -> xmlrpc.client.ServerProxy:
    """A proxy that authenticates as a demo htpasswd user."""
    return xmlrpc.client.ServerProxy(basic_url(inst, user), allow_none=True, use_builtin_types=True)


def basic_header(inst: Instance, user: str) -> dict:
    token = base64.b64encode(("%s:%s" % (user, devpki.credentials(inst.state_dir)[user])).encode()).decode()
    return {"Authorization": "Basic " + token}


def tls_context(inst: Instance, cert: str | None = None) -> ssl.SSLContext:
    """Trust the instance's test CA; present client certificate ``cert`` (a name in its pki dir)."""
    ctx = ssl.create_default_context(cafile=os.path.join(inst.pki_dir, "ca.crt"))
    if cert:
        ctx.load_cert_chain(os.path.join(inst.pki_dir, cert + ".crt"), os.path.join(inst.pki_dir, cert + ".key"))
    return ctx


def cert_proxy(inst: Instance, cert: str | None) -> xmlrpc.client.ServerProxy:
    """A proxy over HTTPS presenting client certificate ``cert`` (None: no certificate)."""
    return xmlrpc.client.ServerProxy(inst.tls_url, context=tls_context(inst, cert), allow_none=True,
                                     use_builtin_types=True)



class Raw:
    """Raw HTTP against the instance, for requests no well-behaved client would send."""

    def __init__(self, inst: Instance):
        self.inst = inst

    def request(self, method: str, body: bytes | str | None = None, content_type: str | None = "text/xml",
                path: str = "/clarens/", headers: dict | None = None) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection("127.0.0.1", self.inst.port, timeout=30)
        hdrs = dict(headers or {})
        if content_type:
            hdrs["Content-Type"] = content_type
        if isinstance(body, str):
            body = body.encode("utf-8")
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        resp.body = resp.read()
        conn.close()
        return resp

    def xmlrpc(self, body: bytes | str, **kw):
        """POST an XML-RPC body; returns (HTTP status, decoded result or Fault)."""
        resp = self.request("POST", body, **kw)
        try:
            return resp.status, xmlrpc.client.loads(resp.body, use_builtin_types=True)[0][0]
        except xmlrpc.client.Fault as fault:
            return resp.status, fault

    def json(self, payload: bytes | str, **kw):
        import json
        resp = self.request("POST", payload, content_type="application/json", **kw)
        return resp.status, (json.loads(resp.body) if resp.body else None)


def concurrently(fn, n: int) -> list:
    """Run ``fn`` in ``n`` threads at once (each on its own connection, so that several
    Apache children answer); their results, after asserting that none raised."""
    results, errors = [], []

    def one():
        try:
            results.append(fn())
        except Exception as e:   # asserted below
            errors.append(e)
    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    return results


class CuttingProxy:
    """A TCP proxy in front of an instance that can slow uploads down and cut connections,
    as a flaky LAN does: ``cut_after(n)`` makes the next connection that carries more than
    ``n`` bytes from the client be closed (both ways) once it has; ``rate`` limits what
    the client sends, in bytes per second.  ``sent`` counts every client byte forwarded."""

    def __init__(self, port: int, rate: float | None = None):
        self.target = ("127.0.0.1", port)
        self.rate = rate
        self.sent = 0
        self.cuts = 0
        self._cut_after: int | None = None
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_after(self, n: int) -> None:
        with self._lock:
            self._cut_after = n

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self._open += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        carried, due = 0, 0.0
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                if not upstream:
                    continue
                carried += len(data)
                with self._lock:
                    self.sent += len(data)
                    cut = self._cut_after is not None and carried > self._cut_after
                    if cut:
                        self._cut_after, self.cuts = None, self.cuts + 1
                if cut:
                    break
                if self.rate:
                    # paced from when this chunk arrived, so a kept-alive connection's idle
                    # time is no credit for a burst
                    due = max(due, time.monotonic()) + len(data) / self.rate
                    time.sleep(max(0.0, due - time.monotonic()))
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        """Stop, closing every connection as a peer that went away would (close() alone would
        not wake a thread blocked reading the socket, and the connection would stay open)."""
        self._listener.close()
        for s in self._open:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def on_many_children(make_proxy, call, n: int, close=lambda proxy: proxy("close")()) -> list:
    """``call(proxy)`` on ``n`` fresh connections at once, so that several Apache children answer:
    each connection is kept open (keep-alive) until every call has been answered, because a
    prefork child serves one connection at a time, and one fast child could otherwise answer
    every call in turn; then ``close(proxy)``.  The results, in no particular order."""
    answered = threading.Barrier(n)

    def one():
        proxy = make_proxy()
        try:
            result = call(proxy)
            answered.wait(timeout=30)
            return result
        finally:
            close(proxy)
    return concurrently(one, n)


def make_iso(directory: str, name: str, megabytes: float) -> str:
    """``directory/name.iso``: an ISO 9660 image holding one file of random bytes."""
    src = os.path.join(directory, name + ".d")
    os.makedirs(src)
    with open(os.path.join(src, "data.bin"), "wb") as f:
        left = int(megabytes * 1000 * 1000)
        while left:
            chunk = os.urandom(min(left, 1 << 24))
            f.write(chunk)
            left -= len(chunk)
    path = os.path.join(directory, name + ".iso")
    subprocess.run(["xorriso", "-as", "mkisofs", "-R", "-V", name.upper()[:32], "-o", path, src],
                   check=True, capture_output=True)
    shutil.rmtree(src)
    return path


def put(inst: Instance, name: str, data: bytes, headers: dict | None = None, user: str | None = "demo",
        length: int | None = None) -> tuple[int, dict]:
    """PUT an upload to /clarens/images/NAME; (status, decoded JSON, or {"html": ...})."""
    conn = http.client.HTTPConnection("127.0.0.1", inst.port, timeout=60)
    hdrs = dict(basic_header(inst, user) if user else {}, **(headers or {}))
    hdrs["Content-Length"] = str(len(data) if length is None else length)
    conn.putrequest("PUT", "/clarens/images/" + name)
    for k, v in hdrs.items():
        conn.putheader(k, v)
    conn.endheaders()
    try:
        conn.send(data)
        resp = conn.getresponse()
        body = resp.read()
        try:
            return resp.status, json.loads(body or b"{}")
        except ValueError:   # Apache's own error page
            return resp.status, {"html": body.decode(errors="replace")}
    finally:
        conn.close()


def upload(inst: Instance, path: str, name: str | None = None, user: str = "demo") -> dict:
    """Upload the file at ``path`` whole; the server's record of the image."""
    with open(path, "rb") as f:
        status, body = put(inst, name or os.path.basename(path), f.read(), user=user)
    assert status == 201, body
    return body["image"]


def wait_for(what, check, timeout: float = 60.0, interval: float = 0.05):
    """Poll ``check()`` every ``interval`` seconds until it returns something true; that value.  The
    test fails after ``timeout`` seconds, saying ``what`` (or what ``what()`` says then)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("still waiting, after %.0f s, for %s" % (timeout, what() if callable(what) else what))
        time.sleep(interval)


def sha256_file(path: str, size: int | None = None) -> str:
    """SHA-256 of the file at ``path``, or of its first ``size`` bytes, read in 1 MiB pieces."""
    digest, left = hashlib.sha256(), size
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20 if left is None else min(1 << 20, left)):
            digest.update(chunk)
            if left is not None:
                left -= len(chunk)
    return digest.hexdigest()


def read_from(path: str, offset: int) -> bytes:
    """What a file (a log) holds past ``offset``."""
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read()


def htpasswd_user(inst: Instance, *argv: str, password: str | None = None) -> str:
    """``clarens-admin user ARGV...`` on the instance's htpasswd file (the password on standard input);
    what it printed, after asserting that it succeeded."""
    out = subprocess.run(["/usr/bin/python3", "-m", "clarens.admin", "user", *argv, "--file",
                          os.path.join(inst.state_dir, "htpasswd")] + (["--password-stdin"] if password else []),
                         input=password and password + "\n", capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


# -- OS users made by tests ---------------------------------------------------------------------------

USER_PREFIX = "clarens-t"


def os_user_name(role: str) -> str:
    """The name of this test run's OS user for ``role``: ``clarens-t-ROLE-PID``.  Concurrent runs on one
    machine each have their own (with one fixed name, a run starting removed the other's user and
    killed its processes: its SSH forward died mid-test); :func:`remove_stale_users` removes those
    of runs that are gone."""
    return "%s-%s-%d" % (USER_PREFIX, role, os.getpid())


def processes_of(user: str) -> list[int]:
    """Live processes running as ``user``, and sshd's privileged half of its sessions (root's)."""
    uid = pwd.getpwnam(user).pw_uid
    found = []
    for pid in procfs.pids():
        if not procfs.alive(pid):
            continue
        try:
            owner = os.stat("/proc/%d" % pid).st_uid
        except OSError:
            continue
        title = b" ".join(procfs.cmdline(pid))
        if owner == uid or title.startswith(b"sshd: %s" % user.encode()):
            found.append(pid)
    return found


def remove_user(name: str) -> None:
    """Remove test user ``name``, its home and its group, if they exist.  Its processes can only be its
    run's (the user exists for that run alone): they are ended by pid."""
    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        uid = None
    if uid is not None:
        for pid in procfs.pids():
            try:
                if os.stat("/proc/%d" % pid).st_uid == uid:
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        wait_for("the processes of %s to end" % name, lambda: not processes_of(name))
        out = subprocess.run(["userdel", "--remove", name], capture_output=True, text=True)
        assert out.returncode in (0, 12), out.stderr        # 12: its home was already gone
    if subprocess.run(["getent", "group", name], capture_output=True).returncode == 0:
        subprocess.run(["groupdel", name], check=True, capture_output=True)


def remove_stale_users() -> None:
    """Remove the users of :func:`os_user_name` whose run has ended (crashed before removing them)."""
    for entry in pwd.getpwall():
        prefix, _, pid = entry.pw_name.rpartition("-")
        if prefix.startswith(USER_PREFIX + "-") and pid.isdigit() and not procfs.alive(int(pid)):
            remove_user(entry.pw_name)
