"""The shipped Apache configuration is accepted by apachectl."""

import os
import subprocess

from clarens import apacheconf
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


def test_shipped_include_is_rendered_from_the_shipped_configuration():
    """Its body limits follow conf/clarens.conf: python3 -m clarens.apacheconf renders it."""
    with open(os.path.join(ROOT, "conf", "apache", "clarens.conf")) as f:
        assert f.read() == apacheconf.render_system()


def test_body_limits_follow_the_configuration(tmp_path):
    conf = tmp_path / "clarens.conf"
    conf.write_text("[server]\nmax_body = 1000\n[module:burner]\nmax_image_mb = 50000\n")
    rendered = apacheconf.render_system(str(conf), root="/srv/clarens")
    assert "LimitRequestBody %d\n" % (1000 + 65536) in rendered
    assert "<Location /clarens/images/>\n        LimitRequestBody 50000000000\n" in rendered
    assert "Define CLARENS_ROOT /srv/clarens" in rendered and "clarens.config %s\n" % conf in rendered
    conf.write_text("[server]\nmax_body = 1000\n")
    out = subprocess.run(["/usr/bin/python3", "-m", "clarens.apacheconf", "--config", str(conf)], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 1 and "max_image_mb" in out.stderr
