"""The code passes the style and type checks configured in pyproject.toml: ruff and mypy.

``./run test`` installs both (mypy from Debian, ruff pinned into .tools/).
"""

import os
import subprocess

from tests.helpers import ROOT

RUFF = os.path.join(ROOT, ".tools", "bin", "ruff")


def test_ruff():
    assert os.path.exists(RUFF), "ruff is not installed in .tools/: run ./run test once"
    out = subprocess.run([RUFF, "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy():
    out = subprocess.run(["mypy", "--no-incremental", "--cache-dir", "/dev/null"], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr
