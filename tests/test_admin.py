"""``clarens-admin``: Basic-authentication users in an htpasswd file Apache's group alone may read."""

import grp
import os
import stat
import subprocess

import pytest

from clarens import admin

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="gives the file to root:www-data")
WWW_GID = grp.getgrnam("www-data").gr_gid


def run(path, *argv, password=None):
    extra = ["--password-stdin"] if password is not None else []
    return subprocess.run(["/usr/bin/python3", "-m", "clarens.admin", "user", *argv, "--file", str(path), *extra],
                          input=None if password is None else password + "\n", capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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


def test_apache_conf_renders_the_package_include_from_the_configuration(tmp_path):
    conf = tmp_path / "clarens.conf"
    conf.write_text("[server]\nmax_body = 1000\n[module:burner]\nmax_image_mb = 7\n")
    out = subprocess.run(["/usr/bin/python3", "-m", "clarens.admin", "apache-conf", "--config", str(conf)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "LimitRequestBody %d\n" % (1000 + 65536) in text and "LimitRequestBody 7000000\n" in text
    assert "PythonOption clarens.config /etc/clarens/clarens.conf\n" in text and "PythonPath" not in text
    assert "AuthUserFile" not in text and "<IfModule !mpm_prefork_module>" in text   # the host checks passwords
