# SPDX-License-Identifier: Apache-2.0
"""The registry of exported methods: what the loader builds and the dispatcher serves.

Methods are reached only through this table, by their full name
(``module.method``), never by attribute lookup: nothing a module does not list
in ``methods_list`` can be called.  Its records are frozen, so the read-only view
service modules get (``context.current().methods``) cannot change what is served.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

# By name: in Method, the field "signatures" would hide the module.
from clarens.signatures import ParamCheck


@dataclass(frozen=True)
class Method:
    """One exported method.  ``name``, ``signatures`` and ``help`` are public (introspection);
    ``func``, ``check`` and ``param_names`` are how the dispatcher calls it."""
    name: str                       # "module.method"
    func: Callable[..., Any]
    signatures: list[tuple[str, ...]] | None
    help: str
    check: ParamCheck
    param_names: list[str] | None   # for JSON-RPC named parameters


Methods = dict[str, Method]         # full name -> method: the table of one process
