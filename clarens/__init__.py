# SPDX-License-Identifier: Apache-2.0
"""Clarens: a service host for Apache and mod_python.

The public API for service modules:

* :class:`Fault` and the fault codes in :mod:`clarens.faults`
* :func:`clarens.context.current` - who is calling, from where, which method
* :func:`once_per_server` - run a block once per server start across all children
* :mod:`clarens.db` - the tdb registry (``_startup_init`` receives the process's ``dbs``)
"""

__version__ = "0.1.0"
API_VERSION = 1   # the service-module API: methods_list, methods_sig, _startup_init(config, dbs, log)

from clarens.faults import Fault  # noqa: E402
from clarens.once import once_per_server  # noqa: E402

__all__ = ["Fault", "once_per_server", "API_VERSION", "__version__"]
