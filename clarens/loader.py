# SPDX-License-Identifier: Apache-2.0
"""Discover, import and register service modules.

A service module is a Python package (a directory with ``__init__.py``) in one
of the configured module directories.  It is imported once per process as
``clarens_modules.NAME`` (so it cannot shadow or be shadowed by a standard
module, and may use relative imports), and must define:

``methods_list``
    dict: method name -> callable, exposed as ``NAME.method``
``methods_sig`` (optional)
    dict: method name -> list of ``"ret,arg1,..."`` signatures

and may define ``_startup_init(config, dbs, log)``.  A module that fails in any
of this is recorded as failed, with its error, and the others are unaffected.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import logging
import os
import re
import sys
import traceback
import types
from dataclasses import dataclass, field
from typing import Callable, Iterable

from clarens import signatures
from clarens.registry import Method

PACKAGE = "clarens_modules"
NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")


@dataclass
class ServiceModule:
    """A discovered module and what became of it."""
    name: str
    path: str
    status: str = "failed"          # "loaded" or "failed"
    error: str | None = None
    methods: list[str] = field(default_factory=list)
    startup_init_calls: int = 0
    module: types.ModuleType | None = None

    def describe(self) -> dict:
        """The struct system.listModules returns for this module."""
        out = {"name": self.name, "status": self.status, "path": self.path, "methods": list(self.methods)}
        if self.error:
            out["error"] = self.error
        return out


class ModuleError(Exception):
    """A module's exports are malformed."""


def discover(paths: list[str]) -> list[tuple[str, str]]:
    """(name, directory) of every package under ``paths``, first path winning a name."""
    found: list[tuple[str, str]] = []
    for base in paths:
        try:
            entries = sorted(os.listdir(base))
        except OSError:
            continue
        for entry in entries:
            directory = os.path.join(base, entry)
            if os.path.isfile(os.path.join(directory, "__init__.py")):
                found.append((entry, directory))
    return found


def files_digest(directory: str) -> str:
    """SHA-256 (hex) of a module's files: every file under ``directory`` (compiled bytecode and
    dotfiles aside), by relative path and content.  Read without importing anything."""
    digest = hashlib.sha256()
    for base, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or name.endswith((".pyc", ".pyo")):
                continue
            path = os.path.join(base, name)
            digest.update(os.path.relpath(path, directory).encode("utf-8", "surrogateescape") + b"\0")
            try:
                with open(path, "rb") as f:
                    digest.update(hashlib.sha256(f.read()).digest())
            except OSError as e:     # unreadable: a difference all the same
                digest.update(("unreadable: %s" % e.strerror).encode())
    return digest.hexdigest()


def modules_digest(found: Iterable[tuple[str, str]]) -> str:
    """SHA-256 (hex) of a module set, ``(name, directory)`` pairs: their names and their files'
    digests.  Two hosts with the same modules, in the same versions, have the same digest."""
    digest = hashlib.sha256()
    for name, directory in sorted(found):
        digest.update(("%s\0%s\n" % (name, files_digest(directory))).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def uncompiled(modules: Iterable[types.ModuleType]) -> list[str]:
    """The source files of ``modules`` that have no current byte-compiled copy in ``__pycache__``: the
    process that imported them compiled them from source, and could not save the result (Apache's user
    cannot write where an administrator installs modules), so every process after it does the same.
    A copy counts as current as importlib decides it: the source's time and size in its header, or
    a hash of the source (not checked here)."""
    found = []
    for module in modules:
        spec = getattr(module, "__spec__", None)
        if spec is None or not spec.has_location or not spec.cached or not spec.origin.endswith(".py"):
            continue
        try:
            with open(spec.cached, "rb") as f:
                head = f.read(16)
            st = os.stat(spec.origin)
        except OSError:
            found.append(spec.origin)
            continue
        stamp = (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little") + (st.st_size & 0xFFFFFFFF).to_bytes(4, "little")
        timestamped = head[4:8] == bytes(4)
        if head[:4] != importlib.util.MAGIC_NUMBER or (timestamped and head[8:16] != stamp):
            found.append(spec.origin)
    return sorted(found)


def _ensure_package() -> None:
    if PACKAGE not in sys.modules:
        pkg = types.ModuleType(PACKAGE, "Namespace of the loaded Clarens service modules.")
        pkg.__path__ = []
        sys.modules[PACKAGE] = pkg


def _import(name: str, directory: str) -> types.ModuleType:
    _ensure_package()
    qualified = "%s.%s" % (PACKAGE, name)
    spec = importlib.util.spec_from_file_location(
        qualified, os.path.join(directory, "__init__.py"), submodule_search_locations=[directory])
    assert spec is not None and spec.loader is not None      # a .py file always gets a source file loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[qualified]
        raise
    return module


def collect_methods(name: str, module: types.ModuleType) -> list[Method]:
    """Validate ``methods_list`` / ``methods_sig`` and build the Method records."""
    methods_list = getattr(module, "methods_list", None)
    if not isinstance(methods_list, dict):
        raise ModuleError("methods_list is %s, expected a dict of name -> callable"
                          % ("missing" if methods_list is None else type(methods_list).__name__))
    methods_sig = getattr(module, "methods_sig", {})
    if not isinstance(methods_sig, dict):
        raise ModuleError("methods_sig is %s, expected a dict of name -> list of signatures"
                          % type(methods_sig).__name__)
    unknown = set(methods_sig) - set(methods_list)
    if unknown:
        raise ModuleError("methods_sig names methods not in methods_list: %s" % ", ".join(sorted(map(str, unknown))))
    out = []
    for short, func in methods_list.items():
        if not isinstance(short, str) or not NAME_RE.match(short):
            raise ModuleError("method name %r is not a valid name (letters, digits, _; not starting with _)" % (short,))
        if not callable(func):
            raise ModuleError("methods_list[%r] is not callable" % short)
        full = "%s.%s" % (name, short)
        sigs = methods_sig.get(short)
        if sigs is not None:
            if isinstance(sigs, str) or not isinstance(sigs, (list, tuple)) or not sigs:
                raise ModuleError("methods_sig[%r] must be a non-empty list of strings" % short)
            try:
                sigs = [signatures.parse(s) for s in sigs]
            except ValueError as e:
                raise ModuleError("methods_sig[%r]: %s" % (short, e)) from None
        try:
            check = signatures.ParamCheck(full, func, sigs)
        except ValueError as e:
            raise ModuleError(str(e)) from None
        out.append(Method(full, func, sigs, inspect.cleandoc(func.__doc__ or ""), check,
                          signatures.positional_names(func)))
    return out


def load(name: str, directory: str, init_args: Callable[[str], tuple] | None, log: logging.Logger
         ) -> tuple[ServiceModule, list[Method]]:
    """Import one module, collect its methods and run its ``_startup_init``.

    ``init_args(name)`` gives the (config, dbs, log) for ``_startup_init``.
    Never raises: failures are logged with their traceback and recorded.
    """
    record = ServiceModule(name, directory)
    if not NAME_RE.match(name):
        record.error = "directory name %r is not a valid module name" % name
        log.error("service module %s skipped: %s", directory, record.error)
        return record, []
    try:
        module = _import(name, directory)
        methods = collect_methods(name, module)
        init = getattr(module, "_startup_init", None)
        if init is not None and init_args is not None:
            record.startup_init_calls += 1
            init(*init_args(name))
    except (Exception, SystemExit) as e:   # a module calling sys.exit() must not end the child
        record.error = "%s: %s" % (type(e).__name__, e) if not isinstance(e, ModuleError) else str(e)
        log.error("service module %s failed to load: %s\n%s", name, record.error,
                  "" if isinstance(e, ModuleError) else traceback.format_exc().rstrip())
        return record, []
    record.status = "loaded"
    record.module = module
    record.methods = [m.name for m in methods]
    return record, methods
