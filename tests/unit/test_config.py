# SPDX-License-Identifier: Apache-2.0
"""Configuration loading and PythonOption overrides."""

import os

import pytest

from clarens import config
from tests.helpers import ROOT


def write(tmp_path, text):
    path = tmp_path / "clarens.conf"
    path.write_text(text)
    return str(path)


def test_relative_paths_are_relative_to_the_file_and_options_override(tmp_path):
    path = write(tmp_path, "[server]\nmodules_path = mods:other\ndb_dir = db\nmax_body = 100\n"
                           "[module:echo]\ncolour = blue\n")
    cfg = config.load(path, {"clarens.server.max_body": "200", "clarens.module:echo.size": "9",
                             "mod_python.mutex_directory": "/ignored"})
    assert cfg.modules_path == [str(tmp_path / "mods"), str(tmp_path / "other")]
    assert cfg.db_dir == str(tmp_path / "db") and cfg.max_body == 200
    module = cfg.for_module("echo")
    assert module["colour"] == "blue" and module.get_int("size") == 9 and module["db_dir"] == cfg.db_dir
    with pytest.raises(TypeError):
        module["colour"] = "red"   # read-only


def test_config_option_names_another_file(tmp_path):
    other = write(tmp_path, "[server]\nmax_depth = 7\n")
    assert config.load("/nonexistent", {"clarens.config": other}).max_depth == 7


@pytest.mark.parametrize("text, options, message", [
    ("[server]\nmax_body = lots\n", {}, "max_body = 'lots' is not an integer"),
    ("[server]\nmax_body = 0\n", {}, "below 1"),
    ("[server]\ncolour = red\n", {}, "unknown setting(s) colour"),
    ("[wrong]\n", {}, "unknown section [wrong]"),
    ("not ini", {}, "line 1: a setting before any [section]"),
    ("[server]\nmax_body = 1\nmax_body = 2\n", {}, "line 3: [server] sets max_body a second time"),
    ("[server]\nmax_body 5\n", {}, "line 2: not a [section] or a key = value line: max_body 5"),
    ("[server]\n", {"clarens.server.nope": "1"}, "unknown server setting 'nope'"),
    ("[server]\n", {"clarens.bogus": "1"}, "expected clarens.server.KEY, clarens.certificate.FIELD"),
    ("[server]\nlog_level = chatty\n", {}, "not a logging level"),
])
def test_bad_configuration_is_reported_precisely(tmp_path, text, options, message):
    with pytest.raises(config.ConfigError) as info:
        config.load(write(tmp_path, text), options)
    assert message in str(info.value)


def test_missing_file_is_an_error():
    with pytest.raises(config.ConfigError, match="cannot read configuration"):
        config.load("/nonexistent/clarens.conf")


def test_shipped_file_loads():
    cfg = config.load(os.path.join(ROOT, "conf", "clarens.conf"))
    assert cfg.modules_path[0].endswith("/modules") and cfg.max_body == 10485760
