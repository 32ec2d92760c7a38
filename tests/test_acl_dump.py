"""``clarens-acl dump``: live changes kept in a file that validates beside the ACL files.

The round trip through a real server (dump, graceful restart, the same decisions)
is in tests/package/test_install.py; here the command runs against a tdb file and
an ACL directory, and "a server start" is what one does: load the files.
"""

import os
import shutil
import stat

import pytest

from clarens.acl import store
from clarens.acl.__main__ import main
from clarens.acl.files import load_dir
from clarens.acl.model import Entry
from clarens.db import open_db
from clarens.identity import ANONYMOUS, Identity
from tests.helpers import ROOT

LOCAL = """\
<Group users>
    Member alice
</Group>

<Acl burner>
    AllowGroup users
</Acl>
"""
WHO = [ANONYMOUS] + [Identity(n, "basic") for n in ("alice", "bob", "carol", "dave", "admin")]
METHODS = ["system.listMethods", "echo.echo", "burner.burn", "burner.drives", "acl.audit", "acl.show",
           "validator1.easyStructTest"]


@pytest.fixture
def site(tmp_path):
    """An ACL directory (the shipped defaults and a local file), and its policy loaded into acl.tdb."""
    acl = tmp_path / "acl"
    acl.mkdir()
    shutil.copy(os.path.join(ROOT, "acl", "00-defaults.acl"), acl)
    (acl / "50-local.acl").write_text(LOCAL)
    db_dir = tmp_path / "db"
    db_dir.mkdir()
    db = open_db(str(db_dir / "acl.tdb"))
    store.load_files(db, str(acl), "server start")
    yield acl, db_dir, db
    db.close()


def dump(site, *args):
    acl, db_dir, _ = site
    return main(["--db-dir", str(db_dir), "--acl-dir", str(acl), "dump", *args], prog="clarens-acl")


def decisions(policy, now=1000.0):
    out = {}
    for who in WHO:
        who = Identity(who.name, who.source, policy.groups_of(who.name, who.authenticated))
        for method in METHODS:
            out[who.name, method] = policy.decide(who, method, now).allowed
    return out


def change(db, edit):
    store.change(db, "admin", {"action": "test"}, edit)


def test_the_dump_beside_the_files_makes_a_start_load_the_live_policy(site, capsys):
    acl, _, db = site
    change(db, lambda p: p.groups["users"].append("bob"))                       # a member added
    change(db, lambda p: p.groups.__setitem__("auditors", ["carol"]))            # a new group
    change(db, lambda p: p.entries.__setitem__("acl.audit", Entry("acl.audit", allow_groups=["auditors"])))
    change(db, lambda p: p.entries.__setitem__("validator1", Entry("validator1", allow=["authenticated"])))
    live = store.read_policy(db)
    before = decisions(live)
    assert before["bob", "burner.burn"] and before["carol", "acl.audit"] and not before["carol", "acl.show"]

    out = acl / "90-live.acl"
    assert dump(site, "--output", str(out)) == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o644               # Apache's user reads ACL files
    text = out.read_text()
    assert "Member bob" in text and "Member alice" not in text and "<Acl *>" not in text
    assert decisions(load_dir(str(acl))) == before                   # validates beside the files, same policy

    store.load_files(db, str(acl), "server start")                   # the next start (a graceful restart)
    assert decisions(store.read_policy(db)) == before
    # A later change, dumped to the same file, replaces it (it is not compared with itself).
    change(db, lambda p: p.groups["users"].append("dave"))
    assert dump(site, "--output", str(out)) == 0
    text = out.read_text()
    assert "Member bob" in text and "Member dave" in text and text.count("<Acl acl.audit>") == 1
    assert decisions(load_dir(str(acl))) == decisions(store.read_policy(db))


def test_without_output_it_prints_the_same_file(site, capsys):
    acl, _, db = site
    change(db, lambda p: p.groups["users"].append("bob"))
    assert dump(site) == 0
    printed = capsys.readouterr().out
    (acl / "90-live.acl").write_text(printed)
    assert load_dir(str(acl)).groups["users"] == ["alice", "bob"]


def test_changes_to_what_the_files_define_are_named_and_nothing_is_written(site, capsys):
    acl, _, db = site
    change(db, lambda p: p.entries["*"].allow.append("bob"))
    change(db, lambda p: p.groups.__setitem__("users", ["carol"]))
    change(db, lambda p: p.entries.pop("echo"))
    out = acl / "90-live.acl"
    assert dump(site, "--output", str(out)) == 1
    err = capsys.readouterr().err
    defaults = os.path.join(str(acl), "00-defaults.acl")
    assert "entry * was changed live; it is defined at %s:" % defaults in err
    assert "<Acl *>\n    Order allow,deny\n    Allow bob\n    AllowGroup admins\n</Acl>" in err   # its live form
    assert "entry echo was deleted live; it is defined at %s:" % defaults in err
    assert "group users: alice removed live" in err and "nothing written" in err
    assert not out.exists()


def test_all_prints_the_whole_live_policy_for_reading(site, capsys):
    assert dump(site, "--all") == 0
    printed = capsys.readouterr().out
    assert "does not validate beside them" in printed
    assert "<Acl *>" in printed and "<Acl burner>" in printed and "Member alice" in printed


def test_an_output_in_the_acl_directory_must_be_loaded(site, capsys):
    acl, _, _ = site
    assert dump(site, "--output", str(acl / "live.txt")) == 1
    assert "would not be loaded" in capsys.readouterr().err and not (acl / "live.txt").exists()


def test_no_command_prints_the_commands(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    for command in ("validate", "reload", "show", "dump [--output FILE]", "check IDENTITY METHOD", "audit [N]"):
        assert command in err
