# SPDX-License-Identifier: Apache-2.0
"""Clarens: a service host for Apache and mod_python.

The public API for service modules:

* :class:`Fault` and the fault codes in :mod:`clarens.faults`
* :func:`clarens.context.current` - who is calling, from where, which method
* :func:`once_per_server` - run a block once per server start across all children
* :mod:`clarens.db` - the tdb registry (``_startup_init`` receives the process's ``dbs``)
* :data:`SIGNATURE_TYPES` - the type names a ``methods_sig`` signature may use

The whole contract is the table in ``docs/modules.md`` (``tests/unit/test_module_api.py``
holds the shipped modules to it).
"""

__version__ = "0.1.0"
API_VERSION = 1   # the service-module API: methods_list, methods_sig, _startup_init(config, dbs, log)

from typing import Callable  # noqa: E402

from clarens.faults import Fault  # noqa: E402
from clarens.signatures import TYPE_NAMES as SIGNATURE_TYPES  # noqa: E402


def once_per_server(name: str, block: Callable[[], object], directory: str | None = None) -> bool:
    """Run ``block()`` in exactly one process per server start, under a file lock in the host's
    ``db_dir`` (or ``directory``); True in the process that ran it (:mod:`clarens.once`)."""
    from clarens import host, once  # on first use: this API stands above the host it reaches
    if directory is not None:
        return once.once_per_server(name, block, directory)
    return host.current().once(name, block)


__all__ = ["Fault", "once_per_server", "API_VERSION", "SIGNATURE_TYPES", "__version__"]
