# SPDX-License-Identifier: Apache-2.0
"""``clarens-acl dump``: live changes kept in a file that validates beside the ACL files.

The round trip through a real server (dump, graceful restart, the same decisions)
is in tests/system/package/test_install.py; here the command runs against a tdb file and
an ACL directory, and "a server start" is what one does: load the files.
"""

import os
import shutil
import stat
import time

import pytest

from clarens.acl import store
from clarens.acl.__main__ import main
from clarens.acl.files import load_dir
from clarens.acl.model import EARLIEST, LATEST, AclError, Entry, validate_pattern
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


def test_check_answers_from_the_files_at_once_after_reload_and_says_when_they_differ(site, capsys):
    """The issue: check right after editing a file (and a graceful restart, which loads it a moment
    later, in a child) still answered from the old policy, without a word."""
    acl, db_dir, _ = site

    def check(who, method):
        code = main(["--db-dir", str(db_dir), "--acl-dir", str(acl), "check", who, method], prog="clarens-acl")
        out = capsys.readouterr()
        return code, out.out, out.err

    assert check("alice", "burner.burn")[0] == 0 and check("alice", "burner.burn")[2] == ""
    (acl / "60-dave.acl").write_text("<Group users>\n    Member dave\n</Group>\n")
    code, out, err = check("dave", "burner.burn")
    assert code == 1 and out.startswith("DENY") and "differs from the files in %s" % acl in err
    assert "'clarens-acl reload' makes the files the live policy now" in err
    assert main(["--db-dir", str(db_dir), "--acl-dir", str(acl), "reload"], prog="clarens-acl") == 0
    capsys.readouterr()
    code, out, err = check("dave", "burner.burn")
    assert code == 0 and out.startswith("ALLOW") and err == ""


@pytest.mark.parametrize("entry, members", [
    (Entry("validator1", allow=["/C=UK/O=Team#2/CN=Bob", "a#b", "ädmin"], not_before=EARLIEST, not_after=LATEST),
     ["/O=Clarens Demo/CN=C#", "名前"]),
    (Entry("echo.echo", allow=["anonymous"], not_before=1767225600.25, not_after=1798757999.123456), ["x"]),
    (Entry("burner.burn", deny=["bob"], order="deny,allow", not_after=time.time() + 3600.5), ["y"]),
], ids=["extremes-and-hashes", "fractions", "now"])
def test_every_value_the_live_api_accepts_is_dumped_and_loads_back(site, capsys, entry, members):
    """dump checks itself that the files plus its output are the live policy: 0 means a round trip."""
    acl, _, db = site
    change(db, lambda p: p.entries.__setitem__(entry.target, entry))
    change(db, lambda p: p.groups.__setitem__("odd", members))
    out = acl / "90-live.acl"
    assert dump(site, "--output", str(out)) == 0, capsys.readouterr().err
    loaded = load_dir(str(acl))
    assert loaded.entries[entry.target].not_after == entry.not_after and loaded.groups["odd"] == members


@pytest.mark.parametrize("fields, why", [
    ({"not_after": 99999999999999}, "between years 1 and 9999"),
    ({"not_before": -99999999999999}, "between years 1 and 9999"),
    ({"not_after": float("inf")}, "between years 1 and 9999"),
    ({"not_after": float("nan")}, "between years 1 and 9999"),
    ({"allow": ["#demo"]}, "would begin a comment"),
    ({"deny": ["demo # not a comment"]}, "would begin a comment"),
], ids=["far-future", "far-past", "infinite", "nan", "hash-first", "hash-after-space"])
def test_what_a_file_cannot_hold_is_refused_by_the_live_api(fields, why):
    with pytest.raises(AclError) as info:
        Entry.from_dict("echo", fields)
    assert why in str(info.value)
    with pytest.raises(AclError):
        validate_pattern("#demo")


@pytest.mark.parametrize("where", ["missing", "empty"])
def test_without_a_database_the_commands_say_so(tmp_path, capsys, where):
    db_dir = tmp_path / "db"
    if where == "empty":
        db_dir.mkdir()
    for command in (["dump", "--all"], ["dump"], ["show"], ["audit"]):
        assert main(["--db-dir", str(db_dir), "--acl-dir", os.path.join(ROOT, "acl"), *command]) == 1
        assert "there is no live policy at %s" % (db_dir / "acl.tdb") in capsys.readouterr().err
    assert not (db_dir / "acl.tdb").exists()              # and none was made
