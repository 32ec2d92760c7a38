# SPDX-License-Identifier: Apache-2.0
"""Services named by configuration (clarens.client.config): found, merged, and every mistake named by file and line."""

from __future__ import annotations

import configparser
import os

import pytest

from clarens.client import ClientConfigError, config, service
from clarens.client import transports as transports_mod
from tests.helpers import ROOT


@pytest.fixture
def conf(tmp_path, monkeypatch):
    """Write a client configuration and point CLARENS_CLIENT_CONF at it."""
    def write(text, name="client.conf"):
        path = tmp_path / name
        path.write_text(text)
        monkeypatch.setenv(config.ENV, str(path))
        return str(path)
    return write


def test_a_named_service_has_its_urls_protocol_credentials_and_policy(conf, tmp_path):
    (tmp_path / "pw").write_text("s3cret\n")
    conf("[service:burner]\nurl = http://a.example/clarens/\n  http://b.example:8080/clarens/\nprotocol = jsonrpc\n"
         "user = alice\npassword_file = %s\ntimeout = 7.5\nidempotent = burner.status echo.*\n" % (tmp_path / "pw"))
    svc = service("burner")
    assert [s.url for s in svc.pool.servers] == ["http://a.example/clarens/", "http://b.example:8080/clarens/"]
    assert svc.wire.NAME == "jsonrpc" and svc.timeout == 7.5
    assert svc.is_idempotent("burner.status") and svc.is_idempotent("echo.echo")
    assert not svc.is_idempotent("burner.burn")
    session = svc.transports["http://b.example:8080/clarens/"]        # a password: in a session
    http = session.inner
    assert isinstance(http, transports_mod.Http) and http.port == 8080 and http.timeout == 7.5
    assert (session.user, session.password()) == ("alice", "s3cret") and "Authorization" not in http.headers


def test_system_then_user_files_the_user_winning(tmp_path, monkeypatch):
    system, user = tmp_path / "etc.conf", tmp_path / "user.conf"
    system.write_text("[service:a]\nurl = http://system/\nprotocol = jsonrpc\n[service:b]\nurl = http://only-system/\n")
    user.write_text("[service:a]\nurl = http://user/\n")
    monkeypatch.delenv(config.ENV, raising=False)
    monkeypatch.setattr(config, "SEARCH", (str(system), str(user), str(tmp_path / "absent.conf")))
    assert config.files() == [str(system), str(user)]
    a = service("a")
    assert [s.url for s in a.pool.servers] == ["http://user/"] and a.wire.NAME == "jsonrpc"
    assert [s.url for s in service("b").pool.servers] == ["http://only-system/"]


@pytest.mark.parametrize("text, where, says", [
    ("[service:x]\nurl = http://h/\nprotcol = xmlrpc\n", "line 3", "unknown key 'protcol'"),
    ("[service:x]\nurl = http://h/\ntimeout = soon\n", "line 3", "timeout = 'soon'"),
    ("# no url\n[service:x]\nprotocol = xmlrpc\n", "line 2", "needs url"),
    ("[service:x]\nurl = http://h/\nprotocol = soap\n", "line 1", "xmlrpc or jsonrpc"),
    ("[service:x]\nurl = gopher://h/\n", "line 1", "not an http(s) URL"),
    ("[service:x]\nurl = http://h/\nuser = a\npassword_file = /nonexistent/pw\n", "line 4", "/nonexistent/pw"),
    ("[service:x]\nurl = http://h/\nurl = http://again/\n", "line 3", "sets url a second time"),
    ("[service:x]\nurl = http://h/\n[service:x]\n", "line 3", "a second [service:x]"),
    ("url = http://h/\n", "line 1", "a setting before any [section]"),
    ("[service:x]\nurl = http://h/\nthis is not ini\n", "line 3", "this is not ini"),
])
def test_every_mistake_names_the_file_and_line(conf, text, where, says):
    path = conf(text)
    with pytest.raises(ClientConfigError) as e:
        service("x")
    assert path in str(e.value) and where in str(e.value) and says in str(e.value)


def test_an_unknown_service_lists_the_known_ones(conf):
    path = conf("[service:one]\nurl = http://h/\n[service:two]\nurl = http://h/\n")
    with pytest.raises(ClientConfigError, match="no \\[service:three\\] in %s \\(services: one, two\\)" % path):
        service("three")


def test_a_named_file_that_is_missing_is_an_error_naming_it(monkeypatch, tmp_path):
    monkeypatch.setenv(config.ENV, str(tmp_path / "nope.conf"))
    with pytest.raises(ClientConfigError, match="cannot read configuration .*nope.conf"):
        service("x")


def test_no_configuration_at_all_says_where_to_put_one(monkeypatch, tmp_path):
    monkeypatch.delenv(config.ENV, raising=False)
    monkeypatch.setattr(config, "SEARCH", (str(tmp_path / "a.conf"),))
    with pytest.raises(ClientConfigError, match="~/.config/clarens/client.conf"):
        service("x")


def test_the_shipped_example_names_no_service_and_its_examples_use_known_keys(tmp_path):
    path = os.path.join(ROOT, "conf", "client.conf")
    with pytest.raises(ClientConfigError, match=r"services: none"):
        service("dev", [path])
    blocks, block = [], None                    # the commented [service:...] examples, uncommented
    with open(path) as f:
        for line in f:
            if line.startswith("# [service:"):
                block = [line[2:]]
                blocks.append(block)
            elif block is not None and line.startswith("# "):
                block.append(line[2:])
            else:
                block = None
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string("".join("".join(b) for b in blocks))
    assert len(parser.sections()) == 5
    for section in parser.sections():
        assert set(parser[section]) <= set(config.KEYS) and parser[section]["url"].split()


def test_ssh_settings_and_the_answer_limit_come_from_the_configuration(tmp_path):
    conf = tmp_path / "client.conf"
    conf.write_text("[service:lab]\nurl = ssh://alice@lab.example:2222/etc/clarens/clarens.conf\nmax_answer = 1000\n"
                    "remote = env PYTHONPATH=/home/alice/clarens /usr/bin/python3 -m clarens.stdio\n"
                    "ssh = ssh -i '/home/alice/my key' -o ConnectTimeout=5\n")
    svc = service("lab", [str(conf)])
    ssh = svc.transports["ssh://alice@lab.example:2222/etc/clarens/clarens.conf"]
    assert isinstance(ssh, transports_mod.Ssh) and ssh.max_answer == 1000
    assert ssh.argv[:5] == ["ssh", "-i", "/home/alice/my key", "-o", "ConnectTimeout=5"]
    # The remote words reach the remote shell quoted, one by one: no shell syntax of their own.
    assert ssh.argv[-1] == ("env PYTHONPATH=/home/alice/clarens /usr/bin/python3 -m clarens.stdio "
                            "--config /etc/clarens/clarens.conf")
    conf.write_text("[service:lab]\nurl = ssh://lab/\nmax_answer = lots\n")
    with pytest.raises(ClientConfigError, match="line 3.*max_answer = 'lots' is not a number of bytes"):
        service("lab", [str(conf)])
