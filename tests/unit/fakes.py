# SPDX-License-Identifier: Apache-2.0
"""Small stand-ins for mod_python and Apache, and a real host booted without them, for the unit tests."""

from __future__ import annotations

import contextlib
import http
import importlib
import logging
import os
import sys
import textwrap
import types
from typing import Any, Iterator

from clarens import db as db_mod
from clarens import host as host_mod
from clarens.context import CallContext
from clarens.dispatch import Dispatcher
from clarens.faults import SERVICE_UNAVAILABLE, Fault
from clarens.identity import Identity

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class FakeRequest:
    """What clarens.handler and clarens.web.routes use of mod_python's request object.

    ``headers_in`` is a plain dict (mod_python's table is case-insensitive: use
    the usual spelling).  A Content-Length matching ``body`` is sent unless
    ``headers`` names one or ``content_length`` is False.
    """

    def __init__(self, method: str = "GET", uri: str = "/clarens/", body: bytes = b"",
                 headers: dict[str, str] | None = None, *, directory: str = "/clarens", args: str | None = None,
                 user: str | None = None, auth_type: str | None = None, ssl: dict[str, str] | None = None,
                 config: dict[str, str] | None = None, ip: str = "192.0.2.7", content_length: bool = True):
        self.method = method
        self.uri = uri
        self.hlist = types.SimpleNamespace(directory=directory)   # the <Location> the handler serves
        self.headers_in: dict[str, str] = {"Host": "server.example"}
        if content_length and method in ("POST", "PUT"):
            self.headers_in["Content-Length"] = str(len(body))
        self.headers_in.update(headers or {})
        self.headers_out: dict[str, str] = {}
        self.args = args
        self.useragent_ip = ip
        self.user = user                   # set by Apache only when it authenticated someone...
        self.ap_auth_type = auth_type      # ...and then this names how ("Basic")
        self._ssl = dict(ssl or {})
        self._config = dict(config or {})
        self.body = body
        self.bytes_read = 0
        self.reads = 0
        self.status = 200                  # mod_python's initial status
        self.content_type: str | None = None
        self.content_length: int | None = None
        self.chunks: list[bytes] = []
        self.flushed = False
        self.cleanups: list[Any] = []

    def ssl_var_lookup(self, name: str) -> str | None:
        return self._ssl.get(name)

    def is_https(self) -> bool:
        return bool(self._ssl)       # mod_ssl has variables only for a TLS connection

    def get_config(self) -> dict[str, str]:
        return self._config

    def read(self, n: int = -1) -> bytes:
        self.reads += 1
        rest = self.body[self.bytes_read:]
        data = rest if n < 0 else rest[:n]
        self.bytes_read += len(data)
        return data

    def write(self, data: bytes, flush: int = 1) -> None:
        if not isinstance(data, bytes):   # the handler must encode what it sends
            raise TypeError("write() wants bytes, got %s" % type(data).__name__)
        self.chunks.append(data)

    def flush(self) -> None:
        self.flushed = True

    def register_cleanup(self, callable: Any, data: Any = None) -> None:
        self.cleanups.append((callable, data))      # mod_python calls callable(data) once the request is over

    def set_content_length(self, length: int) -> None:
        self.content_length = length

    @property
    def output(self) -> bytes:
        return b"".join(self.chunks)


class LogRecorder(logging.Handler):
    """Collects the records of a logger, to count what was logged."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int | None = None) -> list[str]:
        return [r.getMessage() for r in self.records if level is None or r.levelno == level]

    def faults(self, code: int) -> list[str]:
        """The lines logging a fault with ``code`` (the dispatcher's and the handler's format), at
        WARNING or above: what the shipped ``log_level = warning`` keeps."""
        return [r.getMessage() for r in self.records
                if r.levelno >= logging.WARNING and ": fault %d: " % code in r.getMessage()]

    def text(self) -> str:
        """Everything logged, tracebacks included."""
        return "\n".join(logging.Formatter().format(r) for r in self.records)


def own_logger(name: str = "tests.unit") -> tuple[logging.Logger, LogRecorder]:
    """A logger outside the logging tree (nothing else sees it, nothing leaks) and its recorder."""
    log = logging.Logger(name, logging.DEBUG)
    recorder = LogRecorder()
    log.addHandler(recorder)
    return log, recorder


# --- mod_python.apache outside Apache -------------------------------------------------

def _stub_apache() -> types.ModuleType:
    """The constants and hooks of mod_python.apache that the handler uses."""
    stub = types.ModuleType("mod_python.apache", "A stand-in for mod_python.apache outside Apache (tests).")
    names: dict[str, Any] = {"HTTP_" + status.name: int(status) for status in http.HTTPStatus}
    names.update(OK=0, APLOG_CRIT=2, main_server=None, log_error=lambda *args: None,
                 HTTP_REQUEST_ENTITY_TOO_LARGE=413)   # mod_python's name; newer Pythons list only CONTENT_TOO_LARGE
    vars(stub).update(names)
    return stub


class FakeHost:
    """A call context's host (:class:`clarens.context.HostServices`) around a bare dispatcher: no
    policy, no sessions, no passwords; the faults of each request that ended, in ``ended``."""

    def __init__(self, dispatcher: Dispatcher, admin_group: str = "admins"):
        self.dispatcher = dispatcher
        self.methods = dispatcher.methods
        self.modules: dict = {}
        self.admin_group = admin_group
        self.ended: list[list] = []

    def identify(self, identity: Identity) -> Identity:
        return identity

    def allows(self, identity: Identity, method: str) -> bool:
        return True

    def decide(self, identity: Identity, method: str) -> None:
        return None

    def policy(self) -> None:
        return None

    def multicall(self, ctx: CallContext, calls: list) -> list:
        return self.dispatcher.multicall(ctx, calls)

    def note(self, ctx: CallContext, method: str, fault: Fault) -> None:
        self.dispatcher.note(ctx, method, fault)

    def end(self, ctx: CallContext) -> None:
        self.ended.append(list(ctx.faults or []))

    def facts(self) -> dict:
        return {}

    def sessions(self) -> None:
        return None

    def session_sync(self, with_urls: bool) -> tuple[list, list]:
        return [], []

    def check_password(self, name: str, password: bytes, address: str, secure: bool) -> Identity:
        raise Fault(SERVICE_UNAVAILABLE, "no passwords here")

    def passwords_accepted(self) -> bool:
        return False


def import_handler() -> types.ModuleType:
    """clarens.handler, with a stand-in for mod_python.apache when the real one cannot be imported.

    The real one imports only inside Apache (it needs the embedded ``_apache``).  The
    stand-in is in ``sys.modules`` only while clarens.handler is imported, so anything
    imported later (or a real mod_python) never sees it; clarens.log and clarens.once
    are imported first, so that they see no mod_python, as every tool outside Apache does.
    """
    if "clarens.handler" in sys.modules:
        return sys.modules["clarens.handler"]
    try:
        importlib.import_module("mod_python.apache")
    except ImportError:
        pass
    else:
        return importlib.import_module("clarens.handler")
    importlib.import_module("clarens.log")
    importlib.import_module("clarens.once")
    import mod_python
    sys.modules["mod_python.apache"] = mod_python.apache = _stub_apache()
    try:
        return importlib.import_module("clarens.handler")
    finally:
        del sys.modules["mod_python.apache"]
        del mod_python.apache


# --- a real host, booted without Apache ---------------------------------------------

UNIT_MODULE = '''\
"""unit: the service module of the handler tests."""

from clarens import Fault, context
from clarens.web.routes import WebResponse

calls = []   # (method, what the call context said) of every call, for the tests


def echo(value):
    """Return VALUE."""
    ctx = context.current()
    calls.append(("echo", ctx.method, ctx.protocol, ctx.identity.name))
    return value


def note(text):
    """Remember TEXT."""
    calls.append(("note", text))
    return True


def boom():
    """Raise an unexpected exception."""
    raise ZeroDivisionError("the secret detail")


def fault():
    """Raise a fault of the module's own."""
    raise Fault(4242, "the unit says no")


def unencodable():
    """Return what no protocol can encode."""
    calls.append(("unencodable",))
    return {"x": object()}


def secret():
    """Only for the staff group."""
    return "for staff"


def hello(web):
    web.authorise("unit.echo")
    body = web.read(1 << 20) if web.method in ("POST", "PUT") else b""
    calls.append(("hello", web.method, web.path))
    return WebResponse.json({"path": web.path, "query": web.query, "who": web.ctx.identity.name,
                             "method": context.current().method, "body": body.decode()})


def crash(web):
    raise RuntimeError("a bug in a route")


methods_list = {"echo": echo, "note": note, "boom": boom, "fault": fault, "unencodable": unencodable,
                "secret": secret}
methods_sig = {"note": ["boolean,string"], "boom": ["int"], "fault": ["int"], "unencodable": ["struct"],
               "secret": ["string"]}
web_routes = {"hello": hello, "crash": crash}
'''

POLICY = """\
<Group staff>
    Member alice
</Group>

<Acl system>
    Allow anonymous
    Allow authenticated
</Acl>

<Acl unit>
    Allow anonymous
    Allow authenticated
</Acl>

<Acl unit.secret>
    AllowGroup staff
</Acl>
"""


def write_site(directory: str, modules: dict[str, str] | None = None, policy: str = POLICY,
               **server: str) -> dict[str, str]:
    """Write service modules (name -> source; default: ``unit`` and the shipped ``system``) and an
    ACL policy under ``directory``; the ``clarens.*`` options that boot a host on them."""
    modules_dir = os.path.join(directory, "modules")
    acl_dir = os.path.join(directory, "acl")
    os.makedirs(acl_dir)
    os.makedirs(modules_dir)
    for name, source in (modules if modules is not None else {"unit": UNIT_MODULE}).items():
        os.makedirs(os.path.join(modules_dir, name))
        with open(os.path.join(modules_dir, name, "__init__.py"), "w") as f:
            f.write(textwrap.dedent(source))
    if modules is None:
        os.symlink(os.path.join(ROOT, "modules", "system"), os.path.join(modules_dir, "system"))
    with open(os.path.join(acl_dir, "unit.acl"), "w") as f:
        f.write(policy)
    options = {"clarens.server.db_dir": os.path.join(directory, "db"),
               "clarens.server.modules_path": modules_dir,
               "clarens.server.acl_dir": acl_dir}
    options.update(("clarens.server." + key, value) for key, value in server.items())
    return options


@contextlib.contextmanager
def isolated() -> Iterator[None]:
    """Restore, on the way out, what booting a host changes in the process: the host (the one
    singleton, holding what lasts for the process), the ``clarens`` logger and the imported service
    modules; and close the tdb files opened meanwhile (one handle per file per process: libtdb's rule)."""
    saved_host = host_mod._host
    root = logging.getLogger("clarens")
    saved_log = (root.handlers[:], root.level, root.propagate)
    saved_modules = {k for k in sys.modules if k == "clarens_modules" or k.startswith("clarens_modules.")}
    saved_dbs = set(db_mod._open)
    try:
        yield
    finally:
        host_mod._host = saved_host
        root.handlers[:], root.level, root.propagate = saved_log[0], saved_log[1], saved_log[2]
        for name in [k for k in sys.modules if (k == "clarens_modules" or k.startswith("clarens_modules."))
                     and k not in saved_modules]:
            del sys.modules[name]
        for path in set(db_mod._open) - saved_dbs:
            db_mod._open[path].close()


def boot(directory: str, **kwargs: Any) -> tuple[host_mod.Host, LogRecorder]:
    """A real host on :func:`write_site`'s files (call it inside :func:`isolated`), and a recorder
    of everything it logs from now on."""
    host = host_mod.boot(write_site(directory, **kwargs), None)
    recorder = LogRecorder()
    host.log.addHandler(recorder)
    return host, recorder
