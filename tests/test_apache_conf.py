"""The shipped Apache configuration is accepted by apachectl."""

import os
import subprocess

from tests.helpers import ROOT


def test_system_include_passes_configtest():
    conf = os.path.join(ROOT, "conf", "apache", "clarens.conf")
    out = subprocess.run(["apache2ctl", "-t", "-c", "Define CLARENS_ROOT %s" % ROOT, "-c", "Include %s" % conf],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "Syntax OK" in out.stderr


def test_configtest_catches_a_broken_include(tmp_path):
    broken = tmp_path / "broken.conf"
    broken.write_text("<Location /clarens>\nPythonHandler\n")
    out = subprocess.run(["apache2ctl", "-t", "-c", "Include %s" % broken], capture_output=True, text=True)
    assert out.returncode != 0
