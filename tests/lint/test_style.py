# SPDX-License-Identifier: Apache-2.0
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


# The licence (LICENSE, debian/copyright): every source file says it on one of its first lines, after a
# #! line if it has one.  Configuration, templates, documents and test data do not (they are shown to
# administrators, or read byte for byte); LICENSE and debian/copyright cover every file.
SPDX = "SPDX-License-Identifier: Apache-2.0"
SOURCE_SUFFIXES = (".py", ".sh", ".js", ".css")


def source_files() -> list[str]:
    """The source files git tracks: by suffix, or a script's #! line."""
    names = subprocess.run(["git", "-C", ROOT, "ls-files", "-z"], capture_output=True, check=True).stdout
    found = []
    for name in names.decode().split("\0"):
        path = os.path.join(ROOT, name)
        if not name or not os.path.isfile(path) or os.path.islink(path):
            continue
        with open(path, "rb") as f:
            script = f.read(2) == b"#!"
        if name.endswith(SOURCE_SUFFIXES) or script:
            found.append(name)
    return found


def licence_comment(name: str) -> str:
    """The header line for ``name``, in its language's comment."""
    if name.endswith(".js"):
        return "// " + SPDX
    if name.endswith(".css"):
        return "/* %s */" % SPDX
    return "# " + SPDX


def test_every_source_file_names_its_licence():
    missing = []
    for name in source_files():
        with open(os.path.join(ROOT, name), encoding="utf-8") as f:
            head = [f.readline() for _ in range(2)]
        if not any(SPDX in line for line in head):
            missing.append(name)
    assert missing == [], "add '%s' (a comment) at the top of each, after a #! line" % SPDX
