# SPDX-License-Identifier: Apache-2.0
"""ACL semantics, the file format, and the tdb store, on their own."""

import logging
import multiprocessing
import os
import random
import textwrap
import time

import pytest

from clarens.acl import files, store
from clarens.acl.model import EARLIEST, LATEST, AclError, Entry, Policy
from clarens.db import open_db
from clarens.identity import ANONYMOUS, Identity
from tests.helpers import ROOT

ALICE = Identity("/C=UK/O=Home/OU=Lab/CN=Alice", "certificate")
BOB = Identity("bob", "basic")
MALLORY = Identity("/C=UK/O=Elsewhere/CN=Mallory", "certificate")


def policy(entries, groups=None):
    p = Policy({e.target: e for e in entries}, groups or {})
    p.validate()
    return p


def allowed(p, who, method, now=1000.0):
    who = Identity(who.name, who.source, p.groups_of(who.name, who.authenticated))
    return p.decide(who, method, now).allowed


def test_orders_have_apaches_meaning():
    both = dict(allow=["authenticated"], deny=["/C=UK/O=Elsewhere/"])
    allow_deny = policy([Entry("m", "allow,deny", **both)])
    deny_allow = policy([Entry("m", "deny,allow", **both)])
    # allow,deny: needs an allow match and no deny match; default deny.
    assert allowed(allow_deny, ALICE, "m.x") and not allowed(allow_deny, MALLORY, "m.x")
    assert not allowed(allow_deny, ANONYMOUS, "m.x")
    # deny,allow: refused only on a deny match without an allow match; default allow.
    assert allowed(deny_allow, ANONYMOUS, "m.x") and allowed(deny_allow, MALLORY, "m.x")
    only_deny = policy([Entry("m", "deny,allow", deny=["/C=UK/O=Elsewhere/"])])
    assert not allowed(only_deny, MALLORY, "m.x") and allowed(only_deny, BOB, "m.x")


def test_special_identities_exact_names_and_dn_prefixes():
    p = policy([Entry("a", allow=["anonymous"]), Entry("b", allow=["authenticated"]),
                Entry("c", allow=["bob", "/C=UK/O=Home/"]), Entry("d", allow=["/C=UK/O=Home"])])
    assert allowed(p, ANONYMOUS, "a.x") and not allowed(p, BOB, "a.x")
    assert allowed(p, BOB, "b.x") and allowed(p, ALICE, "b.x") and not allowed(p, ANONYMOUS, "b.x")
    assert allowed(p, BOB, "c.x") and allowed(p, ALICE, "c.x") and not allowed(p, MALLORY, "c.x")
    assert not allowed(p, Identity("anonymous", "basic"), "a.x")   # a name is not the special identity
    assert not allowed(p, ALICE, "d.x")                           # no trailing slash: exact match only
    assert not allowed(p, Identity("/C=UK/O=Homewrecker/CN=Eve", "certificate"), "c.x")


def test_group_membership():
    p = policy([Entry("m", allow_groups=["staff"], deny_groups=["suspended"])],
               {"staff": ["/C=UK/O=Home/", "bob"], "suspended": ["bob"]})
    assert p.groups_of(ALICE.name, True) == ("staff",)
    assert p.groups_of("bob", True) == ("staff", "suspended")
    assert p.groups_of("anonymous", False) == ()
    assert allowed(p, ALICE, "m.x") and not allowed(p, BOB, "m.x") and not allowed(p, MALLORY, "m.x")


def test_most_specific_entry_decides():
    p = policy([Entry("*", allow=["authenticated"]), Entry("mod", deny=["bob"], allow=["authenticated"]),
                Entry("mod.open", allow=["anonymous", "authenticated"])])
    assert allowed(p, BOB, "other.x")                                           # root
    assert not allowed(p, BOB, "mod.x") and allowed(p, ALICE, "mod.x")          # module
    assert allowed(p, BOB, "mod.open") and allowed(p, ANONYMOUS, "mod.open")    # method
    assert p.decide(BOB, "mod.x", 0).entry == "mod"
    assert not policy([]).decide(ALICE, "any.thing", 0).allowed                 # nothing covers it: deny


def test_validity_window_entry_only_in_force_inside_it():
    p = policy([Entry("mod", allow=["authenticated"]),
                Entry("mod.x", allow=["anonymous"], not_before=100.0, not_after=200.0)])
    assert not allowed(p, ANONYMOUS, "mod.x", now=99.0)    # before: the module entry decides
    assert allowed(p, ANONYMOUS, "mod.x", now=100.0)
    assert allowed(p, ANONYMOUS, "mod.x", now=200.0)
    assert not allowed(p, ANONYMOUS, "mod.x", now=200.5)
    assert allowed(p, BOB, "mod.x", now=300.0)


# -- generated policies: the per-call check, the explanations and the file format agree ----------

PATTERNS = ["anonymous", "authenticated", "/C=UK/", "/C=UK/O=Home/", "/C=UK/O=Home/OU=Lab/CN=Alice", "bob",
            "/C=UK/O=Elsewhere/", "carol#1", "/CN=Zoë Ü/", "unix:dave", "/C=UK/O=Home"]
GROUPS = ["staff", "suspended", "lab"]
TARGETS = ["*", "m", "m.a", "m.b", "n", "n.a"]
METHODS = ["m.a", "m.b", "m.c", "n.a", "n.b", "o.x", "m"]
CALLERS = [ANONYMOUS, Identity("anonymous", "basic"), ALICE, BOB, MALLORY, Identity("/C=UK/CN=Eve", "certificate"),
           Identity("carol#1", "basic"), Identity("/CN=Zoë Ü/CN=Zed", "certificate"), Identity("unix:dave", "unix")]
WINDOW_TIMES = [None, 100.0, 150.5, 200.0]
NOW = [50.0, 100.0, 150.5, 175.0, 200.0, 250.0]


def generated_policy(rng):
    """A random policy over the names above (a fixed seed: hypothesis is not packaged for Debian's Python)."""
    groups = {g: rng.sample(PATTERNS, rng.randint(0, 3)) for g in rng.sample(GROUPS, rng.randint(0, 3))}
    entries = []
    for target in rng.sample(TARGETS, rng.randint(0, len(TARGETS))):
        a, b = sorted(rng.choice(WINDOW_TIMES) or 0.0 for _ in range(2))
        entries.append(Entry(target, rng.choice(["allow,deny", "deny,allow"]),
                             allow=rng.sample(PATTERNS, rng.randint(0, 3)),
                             deny=rng.sample(PATTERNS, rng.randint(0, 2)),
                             allow_groups=rng.sample(sorted(groups), rng.randint(0, len(groups))),
                             deny_groups=rng.sample(sorted(groups), rng.randint(0, len(groups))),
                             not_before=a or None, not_after=(b or None) if rng.random() < 0.5 else None))
    return policy(entries, groups)


def pattern_matches(pattern, name, authenticated):
    """The pattern rules of docs/administration.md (Access control), written out plainly."""
    if pattern in ("anonymous", "authenticated"):
        return authenticated == (pattern == "authenticated")
    return authenticated and (name.startswith(pattern) if pattern.endswith("/") else name == pattern)


def reference(p, who, method, now):
    """(allowed, deciding target) by the documented semantics: the most specific entry in force decides,
    with Apache's meaning of Order; no entry: denied."""
    member_of = {g for g, members in p.groups.items()
                 if any(pattern_matches(m, who.name, who.authenticated) for m in members)}
    for target in (method, method.split(".")[0], "*"):
        e = p.entries.get(target)
        if e is None or (e.not_before is not None and now < e.not_before) \
                or (e.not_after is not None and now > e.not_after):
            continue
        allow = any(pattern_matches(x, who.name, who.authenticated) for x in e.allow) or member_of & set(e.allow_groups)
        deny = any(pattern_matches(x, who.name, who.authenticated) for x in e.deny) or member_of & set(e.deny_groups)
        return bool(allow and not deny if e.order == "allow,deny" else allow or not deny), target
    return False, None


def test_the_check_and_the_explanation_agree_with_the_rules_on_generated_policies():
    rng = random.Random(24)
    checked = 0
    for _ in range(300):
        p = generated_policy(rng)
        for who in CALLERS:
            who = Identity(who.name, who.source, p.groups_of(who.name, who.authenticated))
            for method in METHODS:
                for now in rng.sample(NOW, 3) * 2:        # each time twice: the second may come from the memo
                    expected, target = reference(p, who, method, now)
                    decision = p.decide(who, method, now)
                    assert (decision.allowed, decision.entry) == (expected, target), (who, method, now, p.canonical())
                    assert p.allows(who, method, lambda t=now: t) == expected, (who, method, now, p.canonical())
                    if target is not None:       # the explanation names what decided
                        by = p.entries[target].judge(who)[1]
                        assert decision.reason.startswith("%s by %s" % ("allowed" if expected else "denied", by)
                                                          if by else "no ")
                    checked += 1
    assert checked > 100000


def test_generated_policies_round_trip_through_the_file_format(tmp_path):
    """What dump writes loads back as the same policy: every directive's formatter and parser agree."""
    rng = random.Random(2024)
    for i in range(200):
        p = generated_policy(rng)
        for entry in p.entries.values():       # times to the microsecond, across the whole range files can hold
            if entry.not_before is not None:
                entry.not_before = round(rng.uniform(EARLIEST, LATEST), rng.choice([0, 3, 6]))
                entry.not_after = None
        text = files.format_policy(p)
        groups, entries = {}, {}
        files.parse_text(text, "dump-%d" % i, groups, entries)
        again = Policy(entries, groups)
        assert again.canonical() == p.canonical(), text


@pytest.mark.parametrize("kwargs, message", [
    (dict(target="a.b.c"), "invalid ACL target"), (dict(target="_x"), "invalid ACL target"),
    (dict(target="m", order="allow"), "order must be"), (dict(target="m", allow=[" "]), "invalid identity"),
    (dict(target="m", allow_groups=["bad name"]), "invalid group"),
    (dict(target="m", not_before=5.0, not_after=1.0), "not_before is after"),
])
def test_invalid_entries_are_refused(kwargs, message):
    with pytest.raises(AclError, match=message):
        Entry(**kwargs)


def test_undefined_group_is_refused():
    with pytest.raises(AclError, match="undefined group 'ghosts'"):
        policy([Entry("m", allow_groups=["ghosts"])])


def write(tmp_path, name, text):
    (tmp_path / name).write_text(textwrap.dedent(text))


def test_files_parse_merge_groups_and_round_trip_through_dump(tmp_path):
    write(tmp_path, "a.acl", """
        # comment
        <Group staff>
            Member /C=UK/O=Home/    # trailing comment
        </Group>
        <acl mod>
            order Deny,Allow
            Deny /C=UK/O=Home/OU=Lab/CN=Alice#1
            AllowGroup staff
            NotBefore 2026-01-01
            NotAfter 2026-12-31T23:59:59+01:00
        </acl>
        """)
    write(tmp_path, "b.acl", "<Group staff>\n  Member bob\n</Group>\n<Acl *>\n  Allow authenticated\n</Acl>\n")
    p = files.load_dir(str(tmp_path))
    assert p.groups == {"staff": ["/C=UK/O=Home/", "bob"]}
    e = p.entries["mod"]
    assert e.order == "deny,allow" and e.deny == ["/C=UK/O=Home/OU=Lab/CN=Alice#1"]
    assert e.not_before == 1767225600.0 and e.not_after == 1798757999.0
    assert e.source == str(tmp_path / "a.acl") + ":6"
    dumped = tmp_path / "dump"
    dumped.mkdir()
    (dumped / "live.acl").write_text(files.format_policy(p))
    again = files.load_dir(str(dumped))
    assert again.groups == p.groups
    assert {t: {k: v for k, v in x.to_dict().items() if k != "source"} for t, x in again.entries.items()} == \
           {t: {k: v for k, v in x.to_dict().items() if k != "source"} for t, x in p.entries.items()}


@pytest.mark.parametrize("text, where, message", [
    ("<Acl m>\n  Allow x\n", ":1", "never closed"),
    ("<Acl m>\n  Permit x\n</Acl>\n", ":2", "unknown directive 'permit'"),
    ("Allow x\n", ":1", "outside a <Group> or <Acl> block"),
    ("<Acl m>\n  Order sometimes\n</Acl>\n", ":2", "Order must be"),
    ("<Acl m>\n  NotAfter tomorrow\n</Acl>\n", ":2", "invalid date/time"),
    ("<Acl m>\n</Acl>\n<Acl m>\n</Acl>\n", ":3", "a second entry for m"),
    ("<Acl m>\n  AllowGroup nobody\n</Acl>\n", ":1", "undefined group 'nobody'"),
    ("<Group g>\n  <Acl m>\n", ":2", "<Acl> inside <Group g>"),
    ("</Acl>\n", ":1", "without a matching"),
    ("<Acl bad.target.x>\n</Acl>\n", ":1", "invalid ACL target"),
    ("<Acl m>\n  Allow\n</Acl>\n", ":2", "allow needs a value"),
])
def test_file_errors_name_file_and_line(tmp_path, text, where, message):
    write(tmp_path, "broken.acl", text)
    with pytest.raises(AclError) as info:
        files.load_dir(str(tmp_path))
    assert str(tmp_path / "broken.acl") + where in str(info.value) and message in str(info.value)


def test_shipped_files_are_valid():
    p = files.load_dir(os.path.join(ROOT, "acl"))
    assert allowed(p, ANONYMOUS, "system.listMethods") and allowed(p, ANONYMOUS, "echo.echo")
    assert not allowed(p, ANONYMOUS, "validator1.easyStructTest") and not allowed(p, ANONYMOUS, "acl.show")


@pytest.fixture
def db(tmp_path):
    d = open_db(str(tmp_path / "acl.tdb"))
    yield d
    d.close()


def test_load_replaces_the_policy_and_changes_are_audited(tmp_path, db):
    write(tmp_path, "p.acl", "<Group g>\n Member bob\n</Group>\n<Acl a>\n Allow bob\n</Acl>\n<Acl b>\n</Acl>\n")
    store.load_files(db, str(tmp_path), "tester")
    store.change(db, "admin", {"action": "x"}, lambda p: p.entries.pop("b"))
    assert sorted(store.read_policy(db).entries) == ["a"]
    with pytest.raises(AclError):   # an edit that would not validate changes nothing
        store.change(db, "admin", {"action": "y"}, lambda p: p.entries.__setitem__("c", Entry("c", allow_groups=["x"])))
    assert sorted(store.read_policy(db).entries) == ["a"]
    (tmp_path / "p.acl").write_text("<Acl z>\n Allow anonymous\n</Acl>\n")
    store.load_files(db, str(tmp_path), "tester")
    p = store.read_policy(db)
    assert sorted(p.entries) == ["z"] and p.groups == {}
    assert [(r["who"], r["what"]["action"]) for r in store.audit_log(db)] == [
        ("tester", "load"), ("admin", "x"), ("tester", "load")]


def test_the_audit_trail_is_pruned_by_count_and_age(tmp_path, db):
    write(tmp_path, "p.acl", "<Acl a>\n Allow bob\n</Acl>\n")
    retention = store.AuditRetention(keep=5, days=30)
    store.load_files(db, str(tmp_path), "tester", retention)
    for i in range(12):
        store.change(db, "admin", {"action": "x%d" % i}, lambda p: None, retention)
    assert [r["what"]["action"] for r in store.audit_log(db)] == ["x7", "x8", "x9", "x10", "x11"]
    with db.transaction():    # a record from two months ago, as an earlier run may have left
        db.put("audit:%017.6f:1" % (time.time() - 60 * 86400), {"who": "old", "when": 0, "what": {}})
    store.change(db, "admin", {"action": "last"}, lambda p: None, store.AuditRetention(keep=100, days=30))
    assert [r["what"]["action"] for r in store.audit_log(db)] == ["x7", "x8", "x9", "x10", "x11", "last"]


def _change_in_child(path):
    d = open_db(path)
    store.change(d, "child", {"action": "open"}, lambda p: p.entries.__setitem__("m", Entry("m", allow=["anonymous"])))


def test_guard_sees_another_process_change_at_its_next_check(tmp_path, db):
    write(tmp_path, "p.acl", "<Acl m>\n Deny anonymous\n Order deny,allow\n</Acl>\n")
    store.load_files(db, str(tmp_path), "tester")
    guard = store.Guard(db, logging.getLogger("test"))
    assert not guard.decide(ANONYMOUS, "m.x").allowed
    child = multiprocessing.get_context("fork").Process(target=_change_in_child, args=(db.path,))
    child.start()
    child.join()
    assert child.exitcode == 0
    assert guard.decide(ANONYMOUS, "m.x").allowed


class _KilledCommit:
    """acl.tdb around a commit killed midway: the header's counter (read without a lock) already
    shows the killed change's value, 7; the first locked read recovers the file, which puts the
    counter back to 5 and the old policy with it; the next change then counts up to 7 again."""
    OLD = {"entry:m": {"deny": ["anonymous"], "order": "deny,allow"}}
    NEW = {"entry:m": {"allow": ["anonymous"]}}

    def __init__(self):
        self.seqnum, self.records, self.recovered = 7, self.OLD, False

    def items(self, prefix):
        if not self.recovered:
            self.seqnum, self.recovered = 5, True
        return sorted(self.records.items())

    def next_change(self):
        self.seqnum, self.records = 7, self.NEW


def test_guard_never_keeps_a_counter_that_a_killed_commit_rolled_back():
    acl = _KilledCommit()
    guard = store.Guard(acl, logging.getLogger("test"))
    assert not guard.decide(ANONYMOUS, "m.x").allowed      # the old policy, as recovered
    acl.next_change()
    assert guard.decide(ANONYMOUS, "m.x").allowed          # the new one, at the counter's old value


def test_broken_guard_refuses_everything(db):
    guard = store.Guard(db, logging.getLogger("test"))
    guard.broken = "x.acl:3: nonsense"
    decision = guard.decide(ALICE, "system.listMethods")
    assert not decision.allowed and "failed to load" in decision.reason
