# SPDX-License-Identifier: Apache-2.0
"""The client library and command lines in sessions, through Apache: the password goes once, the token
after; a session ended by the host is opened again once, transparently; uploads carry the token; the
command lines keep the token for the next command.  (The layer alone: tests/unit/test_client_sessions.py.)"""

from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest

from clarens import Fault, faults
from clarens.client import connect
from clarens.dev import devpki
from tests.helpers import ROOT, htpasswd_user, make_iso


def password(server, user="demo"):
    return devpki.credentials(server.state_dir)[user]


@pytest.mark.parametrize("protocol", ["xmlrpc", "jsonrpc"])
def test_the_password_opens_a_session_once(server, admin, protocol):
    with connect(server.url, protocol=protocol, user="demo", password=password(server)) as svc:
        first = svc.system.whoami()["session"]
        svc.transports[server.url]._password = "not sent again"
        assert [svc.echo.echo(n) for n in range(5)] == list(range(5))
        assert svc.system.whoami()["session"] == first
        assert [s["identity"] for s in admin.session.list("demo") if s["id"] == first] == ["demo"]
        assert svc.logout() is True
        assert not [s for s in admin.session.list("demo") if s["id"] == first]


def test_a_session_the_host_ended_is_opened_again_once(server, admin, tmp_path):
    with connect(server.url, user="demo", password=password(server)) as svc:
        first = svc.system.whoami()["session"]
        assert admin.session.revoke(first) is True
        second = svc.system.whoami()["session"]                  # signed in again, the call sent again
        assert second != first and svc.echo.echo("still here") == "still here"
    # a password changed meanwhile (clarens-admin on the host): the fault, after one try
    htpasswd_user(server, "add", "dora", password="first")
    conf = tmp_path / "clarens.conf"
    conf.write_text("[server]\ndb_dir = %s\nhtpasswd = %s\n" % (server.db_dir,
                                                               os.path.join(server.state_dir, "htpasswd")))
    try:
        with connect(server.url, user="dora", password="first") as svc:
            assert svc.system.whoami()["identity"] == "dora"
            out = subprocess.run(["/usr/bin/python3", "-m", "clarens.admin", "user", "passwd", "dora",
                                  "--password-stdin", "--config", str(conf)], input="second\n", capture_output=True,
                                 text=True)
            assert out.returncode == 0, out.stderr
            with pytest.raises(Fault) as info:
                svc.system.whoami()
            assert info.value.code == faults.ACCESS_DENIED and "wrong user name or password" in info.value.message
    finally:
        htpasswd_user(server, "del", "dora")


def test_an_upload_goes_in_the_session(server, tmp_path):
    path = make_iso(str(tmp_path), "session-upload", 2)
    with connect(server.url, user="demo", password=password(server)) as svc:
        session = svc.system.whoami()["session"]
        svc.transports[server.url]._password = "not sent again"
        assert svc.upload(path)["uploaded_by"] == "demo"
        assert svc.system.whoami()["session"] == session
        svc.burner.delete_image("session-upload.iso")


def test_the_command_line_signs_in_once_for_the_next_commands(server, tmp_path):
    clarens = os.path.join(ROOT, "bin", "clarens")
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path))

    def run(*args, secret=None):
        return subprocess.run([clarens, "--user", "demo", *args], capture_output=True, text=True, timeout=60,
                              env=dict(env, CLARENS_PASSWORD=secret) if secret else env, stdin=subprocess.DEVNULL)
    first = run("call", server.url, "system.whoami", secret=password(server))
    assert first.returncode == 0, first.stderr
    tokens = tmp_path / "clarens" / "sessions"
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600
    again = run("call", server.url, "system.whoami")                    # no password at hand: the token
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["session"] == json.loads(first.stdout)["session"]
    out = run("logout", server.url)
    assert out.returncode == 0 and out.stdout == "signed out\n"
    assert json.loads(tokens.read_text()) == {}
    burner = subprocess.run(["/usr/bin/python3", "-m", "clarens.burner_cli", "--url", server.url, "--user", "demo",
                             "whoami"], capture_output=True, text=True, timeout=60, cwd=ROOT,
                            env=dict(env, CLARENS_PASSWORD=password(server)))
    assert burner.returncode == 0 and json.loads(burner.stdout)["session"], burner.stderr
