# SPDX-License-Identifier: Apache-2.0
"""counter: a test-only module that counts how often each call ran, for the client's failover tests.

The failover rule is that a call which is not idempotent never runs twice.  A
count per key, kept in one tdb that every Apache child of every instance shares,
makes "ran twice" observable: give each call a key of its own and read the counts
afterwards.  The instances of a test share the file by naming the same directory
(``[module:counter] dir``, or ``PythonOption clarens.module:counter.dir``); without
it the count lives in the instance's own ``db_dir``.
"""

from clarens.db import Registry

_db = None   # this process's handle on counter.tdb, opened in _startup_init


def _startup_init(config, dbs, log):
    global _db
    directory = config.get("dir", "").strip()
    _db = Registry(directory).open("counter") if directory else dbs.open("counter")
    log.info("counter counts in %s", _db.path)


def bump(key):
    """Add one to the count of KEY and return the new count (1 the first time).  Atomic across the
    threads and processes of every host sharing the file."""
    with _db.transaction():
        count = _db.get(key, 0) + 1
        _db.put(key, count)
    return count


def get(key):
    """Return how many times KEY was bumped (0 if never)."""
    return _db.get(key, 0)


methods_list = {"bump": bump, "get": get}
methods_sig = {"bump": ["int,string"], "get": ["int,string"]}
