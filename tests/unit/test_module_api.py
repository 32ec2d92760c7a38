# SPDX-License-Identifier: Apache-2.0
"""Shipped service modules use the module API and nothing else of the host.

The API is the tables of ``docs/modules.md`` ("The module API"): what a module may
import from ``clarens`` (module and names), what it may ask of the call context
(``ctx.*``), and the few shipped modules that may import more, and what.  Every
import of a shipped module's files from ``clarens``, every attribute it reads of
such a module, and every attribute it reads of ``context.current()`` is checked
against them; and what the tables name exists.
"""

from __future__ import annotations

import ast
import importlib
import os
import re

import pytest

from clarens.context import CallContext
from tests.helpers import ROOT, SHIPPED_MODULES

DOC = os.path.join(ROOT, "docs", "modules.md")
SECTION = "## The module API (the contract)"


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def read_api(text: str) -> tuple[dict[str, set[str]], set[str], dict[str, tuple[str, ...]]]:
    """From the module-API section of ``text``: {module: names it may import}, the ``ctx`` members,
    and {shipped module: the clarens packages it may also import}."""
    section = text[text.index(SECTION) + len(SECTION):]
    section = section[:section.index("\n## ")] if "\n## " in section else section
    names: dict[str, set[str]] = {}
    extras: dict[str, tuple[str, ...]] = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = _cells(line)
        first = _ticked(cells[0])
        if len(first) == 1 and re.fullmatch(r"clarens(\.\w+)*", first[0]):
            names[first[0]] = set(_ticked(cells[1]))
        elif len(first) == 1 and re.fullmatch(r"\w+", first[0]):
            extras[first[0]] = tuple(_ticked(cells[1]))
    members = set(re.findall(r"`ctx\.(\w+)", section))
    return names, members, extras


def problems(module: str, source: str, api: dict[str, set[str]], members: set[str],
             extras: tuple[str, ...] = ()) -> list[str]:
    """What ``source`` (a file of service module ``module``) uses of clarens beyond the API."""
    found = []

    def beyond(name: str) -> bool:   # a clarens module outside the API, unless this module may import it
        return name not in api and not any(name == p or name.startswith(p + ".") for p in extras)

    tree = ast.parse(source)
    bound: dict[str, str] = {}      # local name -> the API module it is
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != "clarens":
                    continue
                if beyond(alias.name):
                    found.append("%s imports %s" % (module, alias.name))
                elif alias.name in api:
                    bound[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else "clarens"
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module \
                and node.module.split(".")[0] == "clarens":
            if not beyond(node.module) and node.module not in api:
                continue                 # one of the module's own extras
            for alias in node.names:
                submodule = "%s.%s" % (node.module, alias.name)
                if submodule in api:
                    bound[alias.asname or alias.name] = submodule
                elif node.module not in api or alias.name not in api[node.module]:
                    found.append("%s imports %s from %s" % (module, alias.name, node.module))

    def resolve(node: ast.AST) -> str | None:
        """The API module ``node`` is, if it is one."""
        if isinstance(node, ast.Name):
            return bound.get(node.id)
        if isinstance(node, ast.Attribute):
            parent = resolve(node.value)
            if parent is not None and "%s.%s" % (parent, node.attr) in api:
                return "%s.%s" % (parent, node.attr)
        return None

    def is_current(node: ast.AST) -> bool:
        """Whether ``node`` is a call of clarens.context.current()."""
        return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "current" \
            and resolve(node.func.value) == "clarens.context"

    scopes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for scope in scopes:
        contexts = {t.id for n in ast.walk(scope) if isinstance(n, ast.Assign) and is_current(n.value)
                    for t in n.targets if isinstance(t, ast.Name)}
        for node in ast.walk(scope):
            if not isinstance(node, ast.Attribute):
                continue
            owner = resolve(node.value)
            if owner is not None and "%s.%s" % (owner, node.attr) not in api and node.attr not in api[owner]:
                found.append("%s uses %s.%s" % (module, owner, node.attr))
            if (is_current(node.value) or isinstance(node.value, ast.Name) and node.value.id in contexts) \
                    and node.attr not in members:
                found.append("%s asks the call context for %s" % (module, node.attr))
    return sorted(set(found))


with open(DOC, encoding="utf-8") as _f:
    API, MEMBERS, EXTRAS = read_api(_f.read())


def _files(name: str):
    for directory, _, files in os.walk(os.path.join(ROOT, "modules", name)):
        for file in sorted(files):
            if file.endswith(".py"):
                yield os.path.join(directory, file)


@pytest.mark.parametrize("module", SHIPPED_MODULES)
def test_shipped_modules_use_only_the_module_api(module):
    found = []
    for path in _files(module):
        with open(path, encoding="utf-8") as f:
            found += problems(module, f.read(), API, MEMBERS, EXTRAS.get(module, ()))
    assert found == [], "beyond the module API of docs/modules.md: %s" % found


def test_the_tables_name_what_exists():
    assert {"clarens", "clarens.context", "clarens.faults", "clarens.web.routes"} <= set(API)
    for name, names in API.items():
        module = importlib.import_module(name)
        assert names and all(hasattr(module, n) for n in names), (name, names - set(dir(module)))
    assert {"identity", "may_call", "note_fault"} <= MEMBERS
    assert all(hasattr(CallContext, m) for m in MEMBERS), MEMBERS - set(dir(CallContext))
    assert EXTRAS == {"acl": ("clarens.acl", "clarens.identity"), "burner": ("clarens.burnerd", "clarens.image_names")}
    assert set(EXTRAS) <= set(SHIPPED_MODULES)


@pytest.mark.parametrize("source, problem", [
    ("from clarens.signatures import TYPE_NAMES", "m imports TYPE_NAMES from clarens.signatures"),
    ("from clarens import text", "m imports text from clarens"),
    ("import clarens.db\nclarens.db.open_db('x')", "m uses clarens.db.open_db"),
    ("import clarens.text", "m imports clarens.text"),
    ("from clarens.faults import Fault, _private", "m imports _private from clarens.faults"),
    ("import clarens\nclarens.host.current()", "m uses clarens.host"),
    ("from clarens import context\ncontext._current", "m uses clarens.context._current"),
    ("from clarens import context\ndef f():\n    ctx = context.current()\n    return ctx._host",
     "m asks the call context for _host"),
    ("import clarens.context as c\nc.current().faults", "m asks the call context for faults"),
    ("from clarens.burnerd.client import BurnerClient", "m imports BurnerClient from clarens.burnerd.client"),
])
def test_the_check_finds_what_is_beyond_the_api(source, problem):
    api = {"clarens": {"Fault"}, "clarens.context": {"current"}, "clarens.faults": {"Fault"}, "clarens.db": set()}
    assert problem in problems("m", source, api, {"identity"})


def test_what_the_api_and_a_module_s_extras_allow_passes():
    api = {"clarens": {"Fault", "__version__"}, "clarens.context": {"current"}, "clarens.faults": {"Fault"}}
    source = ("import clarens\nfrom clarens import Fault, context\nfrom clarens.burnerd import images\n"
              "from . import own\nimport os\n"
              "def f():\n    ctx = context.current()\n    return ctx.identity, clarens.__version__, images.x, own.y\n")
    assert problems("m", source, api, {"identity"}, ("clarens.burnerd",)) == []
