# SPDX-License-Identifier: Apache-2.0
"""Dependencies point one way: adapter -> codecs -> dispatcher -> registry/ACL -> stores -> foundation.

Every import in the host's own modules, at any depth (lazy ones, and those under
``if TYPE_CHECKING:`` for annotations, included), names a module of its own layer or
a lower one.  The tools beside the host (command lines, the private instance, the
burner helper and clients) may use anything, but nothing in the host may import them.
"""

import ast
import os

import pytest

from tests.helpers import ROOT

LAYERS = [
    # Values, parsing and rules: no file of their own, nothing kept between requests.
    ("foundation", {"clarens.faults", "clarens.procfs", "clarens.sizing", "clarens.proxies", "clarens.config",
                    "clarens.log", "clarens.text", "clarens.framing", "clarens.keepalive", "clarens.image_names",
                    "clarens.identity", "clarens.signatures", "clarens.faultlog", "clarens.acl", "clarens.acl.model",
                    "clarens.acl.files", "clarens.web"}),
    # What the host keeps in files shared by its processes: tdb tables, locks, uploads.
    ("stores", {"clarens.db", "clarens.once", "clarens.refusals", "clarens.throttle", "clarens.passwords",
                "clarens.sessions", "clarens.session_peers", "clarens.credentials", "clarens.web.uploads",
                "clarens.web.digests", "clarens.web.reservations"}),
    ("registry/ACL", {"clarens.registry", "clarens.loader", "clarens.acl.store"}),
    ("dispatcher", {"clarens.context", "clarens.dispatch"}),
    ("codecs", {"clarens.protocol", "clarens.protocol.xmlrpc", "clarens.protocol.xmlrpc_fast",
                "clarens.protocol.jsonrpc"}),
    # The host and what adapts requests to it; the package itself, whose once_per_server reaches the host.
    ("adapter", {"clarens", "clarens.web.routes", "clarens.web.discovery", "clarens.host", "clarens.serving",
                 "clarens.handler", "clarens.startup", "clarens.stdio"}),
]
# Beside the host: command lines, clients, the private instance, the burner helper.
TOOLS = ("clarens.__main__", "clarens.cli", "clarens.client", "clarens.burner_cli", "clarens.resumable",
         "clarens.apacheconf", "clarens.dev", "clarens.burnerd", "clarens.acl.__main__", "clarens.admin",
         "clarens.cluster", "clarens.apachectl", "clarens.dedicated")
LEVEL = {name: level for level, (_, names) in enumerate(LAYERS) for name in names}


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[:-len(".py")].replace(os.sep, ".")
    return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def _imports(tree: ast.AST):
    """Names of the clarens modules imported anywhere in ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "clarens")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "clarens":
            for alias in node.names:   # "from clarens import db" imports clarens.db
                full = "%s.%s" % (node.module, alias.name)
                yield full if full in LEVEL else node.module


def _modules():
    for directory, _, files in os.walk(os.path.join(ROOT, "clarens")):
        for name in files:
            if name.endswith(".py"):
                yield _module_name(os.path.join(directory, name)), os.path.join(directory, name)


def _host_modules():
    return [(module, path) for module, path in _modules() if module in LEVEL]


def test_every_module_is_in_a_layer_or_a_tool():
    """A new module must be placed in a layer of the host, or be a tool that none of it imports."""
    unplaced = [m for m, _ in _modules()
                if m not in LEVEL and not any(m == t or m.startswith(t + ".") for t in TOOLS)]
    assert unplaced == []
    assert {m for m, _ in _host_modules()} == set(LEVEL)      # and every layer's module exists


@pytest.mark.parametrize("module, path", sorted(_host_modules()))
def test_imports_point_down(module, path):
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    for imported in _imports(tree):
        assert imported in LEVEL, "%s imports %s, a tool outside the host's layers" % (module, imported)
        assert LEVEL[imported] <= LEVEL[module], "%s (%s) imports %s (%s), a layer above it" % (
            module, LAYERS[LEVEL[module]][0], imported, LAYERS[LEVEL[imported]][0])


def test_imports_for_annotations_only_count_too():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from clarens.host import Host\n")
    assert list(_imports(tree)) == ["clarens.host"]
