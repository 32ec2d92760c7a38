# SPDX-License-Identifier: Apache-2.0
"""Fixtures for the burner helper tests (the machinery is in :mod:`tests.integration.burnerd.support`)."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from tests.integration.burnerd.support import Helper, make_iso


@pytest.fixture(scope="session")
def iso_cache(tmp_path_factory):
    """ISO images made once per session: small (about 1.2 MB) and slow (about 8.7 MB: ~7 s at speed=1)."""
    d = tmp_path_factory.mktemp("isos")
    return {"small": make_iso(str(d / "small.iso"), 1024 * 1024, "SMALL"),
            "small2": make_iso(str(d / "small2.iso"), 1024 * 1024, "SMALL2"),
            "slow": make_iso(str(d / "slow.iso"), 8 * 1024 * 1024, "SLOW")}


@pytest.fixture
def workdir():
    """A fresh directory other users can traverse; removed afterwards."""
    base = tempfile.mkdtemp(prefix="burnerd-test-", dir="/tmp")
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def helper_factory(workdir):
    """Make (not start) helpers; every helper made is stopped at the end of the test."""
    made: list[Helper] = []

    def make(**kwargs) -> Helper:
        h = Helper(workdir, **kwargs)
        made.append(h)
        return h

    yield make
    for h in made:
        if h.proc is not None and h.proc.poll() is None:
            h.proc.kill()
            h.proc.wait()


@pytest.fixture
def helper(helper_factory, iso_cache):
    """A running helper with the images small.iso and slow.iso."""
    h = helper_factory()
    h.add_image("small.iso", iso_cache["small"])
    h.add_image("slow.iso", iso_cache["slow"])
    return h.start()
