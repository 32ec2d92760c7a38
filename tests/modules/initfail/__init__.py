# SPDX-License-Identifier: Apache-2.0
"""initfail: a test-only module whose _startup_init raises."""


def hello():
    """Never reachable: the module fails to initialise."""
    return "hello"


def _startup_init(config, dbs, log):
    raise RuntimeError("initfail refuses to start")


methods_list = {"hello": hello}
