# SPDX-License-Identifier: Apache-2.0
"""Where a bench run keeps its instances' state: a directory of its own per run (two runs on one machine
never share one), removed when the run ends, unless ``--state-dir`` names one (bench/README.md)."""

from __future__ import annotations

import glob
import os
import stat

import pytest

from bench import __main__ as bench_main
from bench import cost, servers
from tests.helpers import ROOT


def test_two_runs_at_once_get_directories_of_their_own_removed_at_their_end():
    with servers.run_dir() as first, servers.run_dir() as second:
        assert first != second and os.path.isdir(first) and os.path.isdir(second)
        assert os.path.basename(first).startswith(servers.RUN_DIR_PREFIX)
        assert stat.S_IMODE(os.stat(first).st_mode) == 0o711     # Apache's children traverse it, no one lists it
        open(os.path.join(first, "state"), "w").close()
    assert not os.path.exists(first) and not os.path.exists(second)


def test_a_run_that_fails_still_removes_its_directory():
    with pytest.raises(RuntimeError), servers.run_dir() as path:
        os.makedirs(os.path.join(path, "apache", "log"))
        raise RuntimeError("a row failed")
    assert not os.path.exists(path)


def test_a_named_directory_is_used_and_kept(tmp_path):
    named = str(tmp_path / "kept" / "here")
    with servers.run_dir(named) as path:
        assert path == named and os.path.isdir(path)
        open(os.path.join(path, "mark"), "w").close()
    assert os.path.exists(os.path.join(named, "mark"))


def test_both_commands_take_the_option(capsys):
    assert bench_main.parse_args(["--state-dir", "/srv/b"]).state_dir == "/srv/b"
    assert bench_main.parse_args([]).state_dir is None
    with pytest.raises(SystemExit):      # argparse prints the help, then exits
        cost.main(["--help"])
    assert "--state-dir DIR" in capsys.readouterr().out


def test_no_bench_source_names_a_fixed_directory_of_state():
    for path in glob.glob(os.path.join(ROOT, "bench", "*.py")):
        with open(path) as f:
            assert '"/tmp/' not in f.read(), path
