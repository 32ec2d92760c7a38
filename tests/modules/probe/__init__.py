# SPDX-License-Identifier: Apache-2.0
"""probe: a test-only module that records how and when the host initialised it."""

import _xxsubinterpreters as interpreters  # CPython's own registry of this process's interpreters
import os

from clarens import Fault, context, once_per_server
from clarens.once import server_start_token

_state = {"init_calls": 0, "config": None}


def _append(path, line):
    with open(path, "a") as f:
        f.write(line + "\n")


def _startup_init(config, dbs, log):
    _state["init_calls"] += 1
    _state["config"] = dict(config)
    db_dir = config["db_dir"]
    _append(os.path.join(db_dir, "probe-init.log"), str(os.getpid()))
    once_per_server("probe", lambda: _append(os.path.join(db_dir, "probe-once.log"), str(os.getpid())))
    dbs.open("probe").put("last_init_pid", os.getpid())
    log.info("probe initialised in pid %d", os.getpid())


def info():
    """Return this process's pid and server start (parent and generation), how often _startup_init
    ran here, the module config, and how many Python interpreters the process has (whether this
    is the main one)."""
    return {"pid": os.getpid(), "start": server_start_token(), "init_calls": _state["init_calls"],
            "greeting": _state["config"].get("greeting", ""), "db_dir": _state["config"]["db_dir"],
            "protocol": context.current().protocol, "interpreters": len(interpreters.list_all()),
            "main_interpreter": interpreters.get_current() == interpreters.get_main()}


def pid():
    """Return the pid of the Apache child that answers (system.serverInfo shows it to admins only)."""
    return os.getpid()


def boom():
    """Raise ZeroDivisionError (an unexpected exception)."""
    return 1 / 0


def fault():
    """Raise a Fault of the module's own."""
    raise Fault(4242, "the probe says no")


def unencodable():
    """Return something no protocol can encode."""
    return {"x": object()}


def add(a, b=0):
    """Return A + B (no signature: only the arity is checked)."""
    return a + b


methods_list = {"info": info, "pid": pid, "boom": boom, "fault": fault, "unencodable": unencodable, "add": add}
methods_sig = {"info": ["struct"], "boom": ["int"], "fault": ["int"], "unencodable": ["struct"]}
