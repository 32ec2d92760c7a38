# SPDX-License-Identifier: Apache-2.0
"""``clarens-admin``: Basic-authentication users in an htpasswd file Apache's group alone may read."""

import grp
import os
import stat
import subprocess

import pytest

from clarens import admin
from tests.helpers import ROOT

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="gives the file to root:www-data")
WWW_GID = grp.getgrnam("www-data").gr_gid


def run(path, *argv, password=None):
    extra = ["--password-stdin"] if password is not None else []
    return subprocess.run(["/usr/bin/python3", "-m", "clarens.admin", "user", *argv, "--file", str(path), *extra],
                          input=None if password is None else password + "\n", capture_output=True, text=True,
                          cwd=ROOT)


def verifies(path, name, password):
    return subprocess.run(["htpasswd", "-v", "-i", str(path), name], input=password + "\n", text=True,
                          capture_output=True).returncode == 0


def test_users_are_added_with_bcrypt_in_a_file_only_apache_reads(tmp_path):
    path = tmp_path / "htpasswd"
    old = os.umask(0)                 # the most permissive umask an administrator could have
    try:
        out = run(path, "add", "alice", password="s3cret pass")
    finally:
        os.umask(old)
    assert out.returncode == 0, out.stderr
    st = os.stat(path)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, WWW_GID, 0o640)
    assert path.read_text().startswith("alice:$2y$10$")
    assert verifies(path, "alice", "s3cret pass") and not verifies(path, "alice", "wrong")
    assert run(path, "add", "bob", password="b").returncode == 0
    assert run(path, "list").stdout.split() == ["alice", "bob"]

    again = run(path, "add", "alice", password="x")
    assert again.returncode == 1 and "already exists" in again.stderr and verifies(path, "alice", "s3cret pass")
    assert run(path, "passwd", "alice", password="new one").returncode == 0
    assert verifies(path, "alice", "new one") and not verifies(path, "alice", "s3cret pass")
    assert run(path, "passwd", "carol", password="x").returncode == 1

    assert run(path, "del", "bob").returncode == 0
    assert run(path, "list").stdout.split() == ["alice"]
    missing = run(path, "del", "bob")
    assert missing.returncode == 1 and "no user 'bob'" in missing.stderr
    st = os.stat(path)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, WWW_GID, 0o640)


@pytest.mark.parametrize("name", ["anonymous", "authenticated", "/C=UK/CN=Alice", "unix:root", "a:b", "a b", ""])
def test_names_that_could_pass_for_other_identities_are_refused(tmp_path, name):
    out = run(tmp_path / "htpasswd", "add", name, password="x")
    assert out.returncode in (1, 2) and out.stderr
    assert admin.users(str(tmp_path / "htpasswd")) == []


def test_empty_password_and_no_terminal_are_refused(tmp_path):
    assert "password is empty" in run(tmp_path / "h", "add", "alice", password="").stderr
    no_tty = subprocess.run(["/usr/bin/python3", "-m", "clarens.admin", "user", "add", "alice", "--file",
                             str(tmp_path / "h")], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert no_tty.returncode == 1 and "--password-stdin" in no_tty.stderr


def test_the_password_never_appears_on_a_command_line(tmp_path, monkeypatch):
    seen = []
    real = subprocess.run

    def spy(argv, **kwargs):
        seen.append(list(argv))
        return real(argv, **kwargs)

    monkeypatch.setattr(admin.subprocess, "run", spy)
    admin.set_password("alice", "hunter2-secret", str(tmp_path / "h"))
    assert seen and all("hunter2-secret" not in " ".join(a) for a in seen)
    assert verifies(tmp_path / "h", "alice", "hunter2-secret")


POOL = "[server]\nworkers = %d\nspare_workers = %d\n[module:burner]\nmax_image_mb = 7\n"


class FakeApache:
    """An Apache that includes the generated settings: what apache-conf asked of it."""

    def __init__(self, name, rejects=None):
        self.name, self.rejects, self.actions = name, rejects, []

    def configtest(self):
        return self.rejects

    def apply(self, action):
        self.actions.append(action)
        return "%s: %s" % (self.name, action)


def test_apache_conf_prints_the_generated_settings(tmp_path):
    conf = tmp_path / "clarens.conf"
    conf.write_text("[server]\nmax_body = 1000\nworkers = 20\nspare_workers = 5\n[module:burner]\nmax_image_mb = 7\n")
    out = subprocess.run(["/usr/bin/python3", "-m", "clarens.admin", "apache-conf", "--print", "--config", str(conf)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "Define CLARENS_LIMIT_BODY %d\n" % (1000 + 65536) in out.stdout
    assert "Define CLARENS_LIMIT_IMAGES 7000000\n" in out.stdout
    assert "StartServers 5\n" in out.stdout and "MaxRequestWorkers 20\n" in out.stdout


def test_apache_conf_applies_a_growing_pool_gracefully_and_other_changes_fully(tmp_path, monkeypatch):
    conf, generated = tmp_path / "clarens.conf", tmp_path / "apache-generated.conf"
    apaches = [FakeApache("apache2-clarens"), FakeApache("apache2")]
    monkeypatch.setattr(admin.apachectl, "serving", lambda: apaches)
    conf.write_text(POOL % (20, 5))
    admin.apache_conf(str(conf), str(generated))
    assert oct(stat.S_IMODE(os.stat(generated).st_mode)) == "0o644"
    assert [a.actions for a in apaches] == [["restart"], ["restart"]]       # there was none: ServerLimit is new
    conf.write_text(POOL % (40, 9))      # more workers, ServerLimit stays 256: graceful
    admin.apache_conf(str(conf), str(generated))
    assert "MaxRequestWorkers 40\n" in generated.read_text()
    assert [a.actions[-1] for a in apaches] == ["reload", "reload"]
    conf.write_text(POOL % (30, 9))      # fewer: a full restart
    admin.apache_conf(str(conf), str(generated))
    assert [a.actions[-1] for a in apaches] == ["restart", "restart"]
    conf.write_text(POOL % (300, 9))     # ServerLimit 256 -> 300
    admin.apache_conf(str(conf), str(generated))
    assert [a.actions[-1] for a in apaches] == ["restart", "restart"]
    admin.apache_conf(str(conf), str(generated))                              # nothing changed: nothing done
    assert [len(a.actions) for a in apaches] == [4, 4]


def test_apache_conf_keeps_the_old_settings_when_apache_rejects_the_new_ones(tmp_path, monkeypatch):
    conf, generated = tmp_path / "clarens.conf", tmp_path / "apache-generated.conf"
    conf.write_text(POOL % (20, 5))
    monkeypatch.setattr(admin.apachectl, "serving", lambda: [])
    admin.apache_conf(str(conf), str(generated))
    before = generated.read_text()
    rejecting = FakeApache("apache2", rejects="AH00526: Syntax error")
    monkeypatch.setattr(admin.apachectl, "serving", lambda: [rejecting])
    conf.write_text(POOL % (30, 5))
    with pytest.raises(admin.AdminError, match="apache2 rejects the new settings.*\n.*AH00526"):
        admin.apache_conf(str(conf), str(generated))
    assert generated.read_text() == before and rejecting.actions == []
    assert sorted(os.listdir(tmp_path)) == ["apache-generated.conf", "clarens.conf"]
