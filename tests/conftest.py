"""Shared fixtures: a real private Apache + mod_python instance serving this checkout.

The instance runs from a throw-away state directory on a free port, with the
test-only modules of tests/modules/ loaded beside the shipped ones.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import sys
import tempfile
import xmlrpc.client

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from clarens.instance import Instance  # noqa: E402

TEST_MODULES = os.path.join(ROOT, "tests", "modules")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_state_dir(prefix: str) -> str:
    """A state directory Apache's children (www-data) can traverse."""
    path = tempfile.mkdtemp(prefix=prefix)
    os.chmod(path, 0o755)
    return path


def start_instance(prefix: str, **kwargs) -> Instance:
    options = {"clarens.server.modules_path": "%s:%s" % (os.path.join(ROOT, "modules"), TEST_MODULES),
               "clarens.module:probe.greeting": "hello from PythonOption",
               "clarens.server.log_level": "info"}
    options.update(kwargs.pop("options", {}))
    kwargs.setdefault("log_level", "info")
    inst = Instance(make_state_dir(prefix), free_port(), options=options, **kwargs)
    inst.start()
    return inst


@pytest.fixture(scope="session")
def server():
    """The shared Apache instance (started once per test session)."""
    inst = start_instance("clarens-test-")
    yield inst
    inst.stop()
    shutil.rmtree(inst.state_dir, ignore_errors=True)


@pytest.fixture
def proxy(server):
    return xmlrpc.client.ServerProxy(server.url, allow_none=True, use_builtin_types=True)


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


@pytest.fixture
def raw(server):
    return Raw(server)
