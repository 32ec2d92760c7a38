# SPDX-License-Identifier: Apache-2.0
"""The servers under test: one private Apache (Clarens plus the references) and the stdlib server."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Iterator

from bench import load, stdlib_server, targets
from clarens.dev import instance as dev_instance
from clarens.dev.instance import ROOT, Instance, InstanceError

PYTHON = "/usr/bin/python3"   # the interpreter mod_python embeds; the alternative runs on it too
RUN_DIR_PREFIX = "clarens-bench-"

# Served by the same Apache, beside /clarens, preloaded like the host (in the interpreter the
# host and every request run in: PythonImport into any other would make each child build a
# second interpreter at start for them alone), and behind the same access configuration as
# /clarens in the private instance (Require all granted: the host checks passwords itself),
# so that only the handler differs.
REFERENCES = (("fixed", "fixed"), ("read_fixed", "read_fixed"), ("parse", "parse_marshal"))
INTERPRETER = "main_interpreter"    # as conf/apache/instance.conf.in has it
_REFERENCE_LOCATION = """<Location /bench/%(name)s>
    SetHandler mod_python
    PythonHandler bench.handlers.%(module)s
    PythonAutoReload Off
    PythonDebug Off
    Require all granted
</Location>
"""


def references_conf() -> str:
    """The reference handlers' Apache configuration."""
    return ("# --- benchmark references (bench/servers.py) ---\n"
            + "".join("PythonImport bench.handlers.%s %s\n" % (module, INTERPRETER) for _, module in REFERENCES)
            + "".join(_REFERENCE_LOCATION % {"name": name, "module": module} for name, module in REFERENCES))


# Lets anonymous callers run the validator row (the shipped policy wants them
# authenticated, and Basic authentication would measure bcrypt, not the host).
BENCH_ACL = """<Acl validator1.moderateSizeArrayCheck>
    Allow anonymous
    Allow authenticated
</Acl>
"""


def acl_dir(state_dir: str) -> str:
    """The shipped ACL files plus the bench's entry, in a directory of the state."""
    return dev_instance.acl_dir(os.path.join(state_dir, "acl"), texts={"zz-bench.acl": BENCH_ACL})


def instance(state_dir: str, port: int, access_control: bool = True, burner: bool = False,
             extra_conf: str = "") -> Instance:
    """A private instance for the bench: HTTPS on ``port + 1``, the bench's ACL entry (not started)."""
    os.makedirs(state_dir, mode=0o755, exist_ok=True)
    options = {"clarens.server.acl_dir": acl_dir(state_dir),
               "clarens.server.access_control": "on" if access_control else "off"}
    inst = Instance(state_dir, port, port + 1, options=options, extra_conf=extra_conf, burner=burner)
    if inst.running_pid():
        raise InstanceError("an instance is still running from %s: /usr/bin/python3 -m clarens.dev.instance stop "
                            "--state %s" % (state_dir, state_dir))
    return inst


def apache(state_dir: str, port: int, access_control: bool = True) -> Instance:
    """An Instance serving Clarens, the static file and the reference handlers (not started)."""
    inst = instance(state_dir, port, access_control, extra_conf=references_conf())
    os.makedirs(os.path.join(inst.state_dir, "htdocs"), exist_ok=True)
    with open(os.path.join(inst.state_dir, "htdocs", targets.STATIC_FILE), "wb") as f:
        f.write(b"x" * (targets.STATIC_SIZE - 1) + b"\n")
    return inst


def truncate_access_log(inst: Instance) -> None:
    """Empty the access log (Apache appends, so this is safe while it runs): it grows ~100 MB a minute."""
    path = os.path.join(inst.state_dir, "log", "access.log")
    if os.path.exists(path):
        os.truncate(path, 0)


def alternate(inst: Instance, runs: dict[str, tuple[str, str]], settings: load.Load) -> dict[str, list[load.Result]]:
    """wrk's measurements of each of ``runs`` (name -> (url, script)), round after round, the runs taking
    turns within each round (warmed up each time): what pairs of rounds compare without the drift."""
    rounds: dict[str, list[load.Result]] = {name: [] for name in runs}
    for _ in range(settings.rounds):
        for name, (url, script) in runs.items():
            if settings.warmup:
                load.run(url, script, settings.warmup, settings)
            rounds[name].append(load.run(url, script, settings.duration, settings))
            truncate_access_log(inst)
    return rounds


def settle(inst: Instance, url: str, script: str, settings: load.Load, tries: int = 10) -> int:
    """Load the instance until prefork stops adding children; returns how many processes it has.

    Under 16 busy keep-alive connections prefork grows from StartServers towards
    MinSpareServers idle children, spawning 1, 2, 4... a second, and each new
    child runs PythonImport: measured before this settles, a row pays for it.
    """
    count = len(inst.processes())
    for _ in range(tries):
        load.run(url, script, 2, settings)
        previous, count = count, len(inst.processes())
        if count == previous:
            break
    return count


def wait_port(port: int, timeout: float = 15.0, process: subprocess.Popen | None = None) -> None:
    """Return once something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError("server exited with status %d before listening" % process.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("nothing listens on port %d after %.0fs" % (port, timeout)) from None
            time.sleep(0.05)


def start_stdlib(port: int) -> subprocess.Popen:
    """Start :mod:`bench.stdlib_server` as a subprocess and wait until it listens."""
    proc = subprocess.Popen([PYTHON, "-m", stdlib_server.__name__, str(port)], cwd=ROOT, stdin=subprocess.DEVNULL)
    try:
        wait_port(port, process=proc)
    except BaseException:
        stop_process(proc)
        raise
    return proc


def stop_process(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def run_dir(named: str | None = None) -> Iterator[str]:
    """The directory under which one run keeps its instances' state (one directory each below it).

    ``named`` (``--state-dir``): that one, made if need be and kept after the run, to look into.
    Otherwise a new one in the system's temporary directory, removed when the run ends (also on
    Ctrl-C), so that two runs on one machine never share state; as root it may be traversed but not
    listed by others, for Apache's children (www-data) to reach their state below it."""
    if named:
        os.makedirs(named, exist_ok=True)
        yield os.path.abspath(named)
        return
    path = tempfile.mkdtemp(prefix=RUN_DIR_PREFIX)
    try:
        os.chmod(path, 0o711)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
