# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures: the session's Apache instance and callers of each kind."""

import os
import shutil
import signal
import tempfile
import xmlrpc.client

import pytest

from clarens.dev.instance import Instance, checkout_unreadable
from clarens.web import reservations
from tests.helpers import KEPT, Raw, basic_proxy, cert_proxy, keep, start_instance


def _interrupted(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


def pytest_configure(config):
    """SIGTERM ends the run as Ctrl-C does: every test's finally and every fixture's teardown still
    run, so no Apache, helper or browser the run started outlives it."""
    signal.signal(signal.SIGTERM, _interrupted)


LAYERS = ("unit", "integration", "system", "lint")


def pytest_collection_modifyitems(items):
    """Each test is marked with its layer, the directory of tests/ it is in (pyproject.toml names them);
    a test outside them would run with the whole suite only, never with its layer."""
    layers = set()
    for item in items:
        layer = item.path.relative_to(os.path.dirname(__file__)).parts[0]
        if layer not in LAYERS:
            raise pytest.UsageError("%s: a test belongs in a layer, tests/{%s}/" % (item.nodeid, ",".join(LAYERS)))
        item.add_marker(layer)
        layers.add(layer)
    # Every integration and system test starts Apache: where its user cannot read the checkout, each
    # would fail with the same error (as in a clone in a 0700 directory): said once instead.
    if os.geteuid() == 0 and layers & {"integration", "system"}:
        problem = checkout_unreadable(Instance.apache_user().pw_name)
        if problem:
            pytest.exit(problem, returncode=1)


def pytest_terminal_summary(terminalreporter):
    """The run's last lines name what it kept (tests.helpers.keep), so that nothing is left unsaid."""
    for line in KEPT:
        terminalreporter.write_line("kept: " + line, yellow=True)


@pytest.fixture(scope="session", autouse=True)
def _one_temporary_root(request, tmp_path_factory):
    """Every temporary directory of the run (instances, ACL files, images) under one, removed at the
    end unless a test failed: then it is kept for a look, and named in the run's last lines.  pytest's
    own (tmp_path) stays where pytest keeps it, and cleans it as pytest does."""
    tmp_path_factory.getbasetemp()   # placed before tempfile's default moves
    root = tempfile.mkdtemp(prefix="clarens-tests-")
    os.chmod(root, 0o755)            # Apache's children (www-data) traverse it
    tempfile.tempdir = root
    # The command lines keep session tokens under XDG_CACHE_HOME: the run's own, not the user's.
    cache = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = os.path.join(root, "cache")
    yield
    if cache is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = cache
    tempfile.tempdir = None
    if request.session.testsfailed:
        keep(root, "the temporary files of a run with failures")
    else:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def server():
    """The shared Apache instance (started once per test session)."""
    inst = start_instance("clarens-test-")
    yield inst
    inst.stop()
    shutil.rmtree(inst.state_dir, ignore_errors=True)


@pytest.fixture
def anon(server):
    """An anonymous caller."""
    return xmlrpc.client.ServerProxy(server.url, allow_none=True, use_builtin_types=True)


@pytest.fixture
def proxy(server):
    """The demo user (Basic authentication): may call everything but administration."""
    return basic_proxy(server, "demo")


@pytest.fixture
def admin(server):
    """The demo administrator, by client certificate over HTTPS."""
    return cert_proxy(server, "demo-admin")


@pytest.fixture
def raw(server):
    return Raw(server)


@pytest.fixture
def new_hidden(server):
    """A function listing the hidden files (partial uploads) that appeared in the shared
    instance's images directory since the test began; what is left of them is removed after it."""
    def hidden():
        return {n for n in os.listdir(server.images_dir) if n.startswith(".") and n != reservations.LOCK_NAME}
    before = hidden()
    yield lambda: sorted(hidden() - before)
    for name in hidden() - before:
        os.unlink(os.path.join(server.images_dir, name))
