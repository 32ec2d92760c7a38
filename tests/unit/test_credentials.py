# SPDX-License-Identifier: Apache-2.0
"""Passwords checked by the host: the throttle before bcrypt, the htpasswd file, the remembered passwords,
and the handler's answers (on a fake request and a real host booted without Apache).  The same paths
through Apache: tests/integration/test_passwords.py."""

import base64
import concurrent.futures
import json
import os
import threading
import time
import types
import xmlrpc.client

import bcrypt
import pytest

from clarens import db, passwords, refusals, throttle
from clarens.credentials import Credentials, basic
from clarens.faults import ACCESS_DENIED
from clarens.identity import Identity, IdentityRefused
from tests.unit import fakes
from tests.unit.fakes import FakeRequest

handler = fakes.import_handler()
HASH_COST = 4            # bcrypt's least: the unit tests check the logic, not the cost


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def write_htpasswd(path, users):
    with open(path, "wb") as f:
        for name, password in users.items():
            f.write(name.encode() + b":" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(HASH_COST)) + b"\n")


@pytest.fixture
def table(tmp_path):
    database = db.open_db(str(tmp_path / "throttle.tdb"))
    yield database
    database.close()


# --- the throttle ---------------------------------------------------------------------------

def test_the_delay_starts_after_the_free_attempts_and_doubles(table):
    clock = Clock()
    t = throttle.Throttle(table, clock)
    for _ in range(throttle.FREE_PER_USER):
        assert t.attempt("192.0.2.1", "alice") == 0
    waits = []
    for _ in range(4):
        wait = t.attempt("192.0.2.1", "alice")
        assert wait > 0 and t.wait("192.0.2.1", "alice") == wait     # refused, and nothing counted
        waits.append(wait)
        clock.now += wait
        assert t.attempt("192.0.2.1", "alice") == 0
    assert waits == [1.0, 2.0, 4.0, 8.0]


def test_an_attempt_counted_after_the_clock_was_read_is_no_wait(table):
    """Another process may count an attempt between this one's reading the clock and its reading the
    table: its time is then later than this one's 'now'.  Within the free attempts that is no wait
    (it was a tiny positive one, which made a right password racing another a 429)."""
    early, late = Clock(), Clock(1000.5)
    throttle.Throttle(table, late).attempt("192.0.2.1", "alice")
    assert throttle.Throttle(table, early).wait("192.0.2.1", "alice") == 0.0
    for _ in range(throttle.FREE_PER_USER - 1):
        throttle.Throttle(table, late).attempt("192.0.2.1", "alice")
    assert throttle.Throttle(table, early).wait("192.0.2.1", "alice") == throttle.FIRST_DELAY + 0.5


def test_the_delay_stops_growing_and_is_forgotten(table):
    clock = Clock()
    t = throttle.Throttle(table, clock)
    for _ in range(60):
        clock.now += t.wait("192.0.2.1", "alice")
        assert t.attempt("192.0.2.1", "alice") == 0
    assert t.wait("192.0.2.1", "alice") == throttle.MAX_DELAY
    clock.now += throttle.FORGET + 1
    assert t.wait("192.0.2.1", "alice") == 0
    for _ in range(throttle.FREE_PER_USER):
        assert t.attempt("192.0.2.1", "alice") == 0               # counted from nothing again


def test_another_address_is_not_slowed_down_by_a_flood_against_the_same_name(table):
    t = throttle.Throttle(table, Clock())
    for _ in range(throttle.FREE_PER_USER):
        t.attempt("192.0.2.1", "alice")
    assert t.attempt("192.0.2.1", "alice") > 0
    assert t.wait("198.51.100.9", "alice") == 0 and t.attempt("198.51.100.9", "alice") == 0


def test_one_address_trying_many_names_is_slowed_down_too(table):
    t = throttle.Throttle(table, Clock())
    for n in range(throttle.FREE_PER_ADDRESS):
        assert t.attempt("192.0.2.1", "user%d" % n) == 0
    assert t.attempt("192.0.2.1", "someone-new") > 0
    assert t.attempt("192.0.2.2", "someone-new") == 0


def test_a_right_password_gives_its_attempt_back(table):
    """People who sign in are never counted: an office behind one address signs in all day."""
    t = throttle.Throttle(table, Clock())
    for n in range(3 * throttle.FREE_PER_ADDRESS):
        assert t.attempt("192.0.2.1", "user%d" % n) == 0
        t.succeeded("192.0.2.1", "user%d" % n)
    assert table.keys() == [] or table.keys() == ["pruned"]


def test_ipv6_clients_are_counted_per_64_network(table):
    t = throttle.Throttle(table, Clock())
    for n in range(throttle.FREE_PER_USER):
        t.attempt("2001:db8:1:2::%x" % n, "alice")                  # each from another address of one /64
    assert t.attempt("2001:db8:1:2::ffff", "alice") > 0
    assert t.attempt("2001:db8:1:3::1", "alice") == 0
    assert throttle.client_key("192.0.2.1") == "192.0.2.1" and throttle.client_key("x") == "x"


def test_attempts_at_once_from_many_threads_are_counted_one_by_one(table):
    t = throttle.Throttle(table, Clock())
    allowed = []
    threads = [threading.Thread(target=lambda: allowed.append(t.attempt("192.0.2.1", "alice") == 0))
               for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert allowed.count(True) == throttle.FREE_PER_USER


def test_forgotten_counts_are_swept(table):
    clock = Clock()
    t = throttle.Throttle(table, clock)
    for n in range(50):
        t.attempt("192.0.2.%d" % n, "alice")
    clock.now += throttle.FORGET + throttle.PRUNE_EVERY + 1
    t.attempt("198.51.100.1", "bob")
    assert sorted(table.keys()) == ["a:198.51.100.1", "pruned", "u:198.51.100.1 bob"]


# --- passwords ------------------------------------------------------------------------------

@pytest.fixture
def checker(tmp_path):
    path = str(tmp_path / "htpasswd")
    write_htpasswd(path, {"alice": "right", "ädmin": "right", "管理者": "right"})
    clock = Clock()
    check = passwords.Checker(passwords.Htpasswd(path), passwords.Turns(str(tmp_path), "turn", 1, 1.0), clock)
    check.path, check.clock = path, clock
    return check


def test_a_password_is_checked_once_then_remembered_for_a_while(checker):
    assert not checker.remembered("alice", b"right")
    assert checker.check("alice", b"right") == passwords.RIGHT and checker.checks == 1
    assert checker.remembered("alice", b"right") and not checker.remembered("alice", b"wrong")
    checker.clock.now += passwords.REMEMBER + 1
    assert not checker.remembered("alice", b"right")


def test_a_changed_entry_is_checked_again(checker):
    checker.check("alice", b"right")
    write_htpasswd(checker.path, {"alice": "new"})
    assert not checker.remembered("alice", b"right")
    assert checker.check("alice", b"right") == passwords.WRONG
    assert checker.check("alice", b"new") == passwords.RIGHT


def test_utf8_names_in_either_normal_form(checker):
    assert checker.check("ädmin", b"right") == passwords.RIGHT
    assert checker.check("管理者", b"right") == passwords.RIGHT
    with open(checker.path, "ab") as f:
        f.write("bärbel".encode() + b":" + bcrypt.hashpw(b"pw", bcrypt.gensalt(HASH_COST)) + b"\n")
    decomposed = "ba\u0308rbel"       # written as a and a combining diaeresis: normal form C on both sides
    assert checker.check(basic(base64.b64encode(decomposed.encode() + b":pw").decode())[0], b"pw") == passwords.RIGHT


def test_unknown_users_and_other_hashes(checker):
    assert checker.check("nobody", b"right") == passwords.WRONG and checker.checks == 1   # bcrypt all the same
    assert checker.check("alice", b"right\0") == passwords.WRONG                       # bcrypt refuses NUL
    with open(checker.path, "ab") as f:
        f.write(b"md5user:$apr1$abcdefgh$0123456789abcdefghijkl\nbroken:$2y$10$short\n")
    assert checker.check("md5user", b"x") == passwords.UNUSABLE
    assert checker.check("broken", b"x") == passwords.UNUSABLE


def test_the_host_runs_a_bounded_number_of_checks_at_once(tmp_path):
    turns = passwords.Turns(str(tmp_path), "turn", 2, wait=0.05)
    held = [turns.take(), passwords.Turns(str(tmp_path), "turn", 2).take()]   # another holder, as another process
    with pytest.raises(passwords.BusyError):
        passwords.Turns(str(tmp_path), "turn", 2, wait=0.05).take()
    turns.give_back(held[0])
    assert passwords.Turns(str(tmp_path), "turn", 2).take() is not None


def test_a_password_one_process_checked_is_not_checked_again_by_another(checker, tmp_path):
    table = db.open_db(str(tmp_path / "checked.tdb"))
    def child():
        return passwords.Checker(passwords.Htpasswd(checker.path), passwords.Turns(str(tmp_path), "turn", 1, 1.0),
                                 checker.clock, shared=table, wall=checker.clock)
    first, second = child(), child()
    assert first.check("alice", b"right") == passwords.RIGHT and first.checks == 1
    assert second.remembered("alice", b"right") and not second.remembered("alice", b"wrong")
    assert second.checks == 0
    stored = json.dumps(table.get("alice"))
    assert "right" not in stored and len(table.keys()) == 1        # a digest, never the password
    # A changed password (a new hash) is checked again; an expired entry is forgotten at the next write.
    write_htpasswd(checker.path, {"alice": "new", "ädmin": "right"})
    assert not child().remembered("alice", b"right")
    assert first.check("ädmin", b"right") == passwords.RIGHT
    checker.clock.now += passwords.REMEMBER + 1
    assert not child().remembered("ädmin", b"right") and not second.remembered("ädmin", b"right")
    assert first.check("alice", b"new") == passwords.RIGHT and table.keys() == ["alice"]


def test_a_process_remembers_a_shared_password_only_as_long_as_the_host(checker, tmp_path):
    table = db.open_db(str(tmp_path / "checked.tdb"))
    first = passwords.Checker(passwords.Htpasswd(checker.path), passwords.Turns(str(tmp_path), "turn", 1, 1.0),
                              checker.clock, shared=table, wall=checker.clock)
    first.check("alice", b"right")
    checker.clock.now += passwords.REMEMBER - 10
    late = passwords.Checker(passwords.Htpasswd(checker.path), passwords.Turns(str(tmp_path), "turn", 1, 1.0),
                             checker.clock, shared=table, wall=checker.clock)
    assert late.remembered("alice", b"right")
    checker.clock.now += 11
    assert not late.remembered("alice", b"right")


@pytest.mark.parametrize("entry", [None, "x", ["zz", 1e18], [1, 2, 3], {"a": 1}, ["00", "soon"]])
def test_an_odd_shared_entry_is_no_entry(checker, tmp_path, entry):
    table = db.open_db(str(tmp_path / "checked.tdb"))
    table.put("alice", entry)
    own = passwords.Checker(passwords.Htpasswd(checker.path), passwords.Turns(str(tmp_path), "turn", 1, 1.0),
                            checker.clock, shared=table, wall=checker.clock)
    assert not own.remembered("alice", b"right")
    assert own.check("alice", b"right") == passwords.RIGHT and table.get("alice")[1] > checker.clock.now


# --- credentials ----------------------------------------------------------------------------

def header(name, password):
    return "Basic " + base64.b64encode(("%s:%s" % (name, password)).encode()).decode()


@pytest.fixture
def creds(checker, table, tmp_path):
    """Credentials without a tarpit: throttled attempts are answered at once."""
    return Credentials(checker, throttle.Throttle(table), passwords.Turns(str(tmp_path), "tarpit", 0), None)


def refusal(call):
    with pytest.raises(IdentityRefused) as info:
        call()
    return info.value


def test_basic_credentials_are_parsed_strictly(creds):
    assert creds.authorization("Negotiate abc", "192.0.2.1", True) is None      # another Apache module's
    assert basic(header("ädmin", "p:w").split()[1]) == ("ädmin", b"p:w")
    for bad in ("!!!", base64.b64encode(b"nocolon").decode(), base64.b64encode(b":nouser").decode(),
                base64.b64encode(b"\xff:x").decode()):
        assert refusal(lambda bad=bad: basic(bad)).status == 400


def test_passwords_over_plain_http_and_reserved_names_are_refused(creds):
    error = refusal(lambda: creds.authorization(header("alice", "right"), "192.0.2.1", secure=False))
    assert error.status == 403 and "https only" in str(error)
    proof = creds.authorization(header("alice", "right"), "192.0.2.1", secure=True)
    assert proof.identity == Identity("alice", "basic") and proof.renewal is None
    for name in ("anonymous", "/C=UK/CN=Alice", "unix:root"):
        assert refusal(lambda name=name: creds.password(name, b"x", "192.0.2.1", True)).status == 403
    assert creds.throttle.db.keys("a:") == []          # nothing counted for what was never checked


def test_a_wrong_password_is_a_401_and_the_log_says_which_kind(creds):
    error = refusal(lambda: creds.password("alice", b"wrong", "192.0.2.1", True))
    assert error.status == 401 and error.headers["WWW-Authenticate"].startswith("Basic ")
    assert str(error) == "wrong user name or password" and "wrong password" in error.detail
    error = refusal(lambda: creds.password("nobody", b"x", "192.0.2.1", True))
    assert str(error) == "wrong user name or password" and "no such user" in error.detail


def test_guessing_is_throttled_before_bcrypt_runs(creds):
    for _ in range(throttle.FREE_PER_USER):
        refusal(lambda: creds.password("alice", b"guess", "192.0.2.1", True))
    checks = creds.checker.checks
    for _ in range(20):
        error = refusal(lambda: creds.password("alice", b"right", "192.0.2.1", True))   # even the right one
        assert error.status == 429 and int(error.headers["Retry-After"]) >= 1
    assert creds.checker.checks == checks
    # Not from another address, and not a password this process has just found right.
    assert creds.password("alice", b"right", "192.0.2.9", True) == Identity("alice", "basic")
    assert creds.checker.checks == checks + 1
    assert creds.password("alice", b"right", "192.0.2.9", True) == Identity("alice", "basic")
    assert creds.checker.checks == checks + 1


def test_a_throttled_attempt_waits_for_its_turn_while_a_tarpit_is_free(creds, tmp_path):
    creds.tarpits = passwords.Turns(str(tmp_path), "tarpit", 1)
    for _ in range(throttle.FREE_PER_USER):
        refusal(lambda: creds.password("alice", b"guess", "192.0.2.1", True))
    busy = passwords.Turns(str(tmp_path), "tarpit", 1).take()     # another process holds the only one
    start = time.monotonic()
    assert refusal(lambda: creds.password("alice", b"guess", "192.0.2.1", True)).status == 429
    assert time.monotonic() - start < 0.5                          # refused at once
    passwords.Turns.give_back(busy)
    start = time.monotonic()
    assert creds.password("alice", b"right", "192.0.2.1", True) == Identity("alice", "basic")
    assert time.monotonic() - start >= throttle.FIRST_DELAY - 0.05   # held until its turn, then checked


def test_right_passwords_arriving_at_once_never_throttle_each_other(checker, table, tmp_path):
    """Each child checks a password it has not seen with bcrypt, one at a time on the host: counted
    before its turn, the sixth of many calls arriving at once got 429 although every one was right."""
    checked = db.open_db(str(tmp_path / "checked.tdb"))
    def child(shared=None):   # a process of its own: its own memory of passwords, the host's turns and tables
        own = passwords.Checker(passwords.Htpasswd(checker.path), passwords.Turns(str(tmp_path), "turn", 1, 30.0),
                                shared=shared)
        return Credentials(own, throttle.Throttle(table), passwords.Turns(str(tmp_path), "tarpit", 0), None)
    children = [child() for _ in range(3 * throttle.FREE_PER_USER)]
    with concurrent.futures.ThreadPoolExecutor(len(children)) as pool:
        callers = list(pool.map(lambda c: c.password("alice", b"right", "192.0.2.1", True), children))
    assert callers == [Identity("alice", "basic")] * len(children)
    assert sum(c.checker.checks for c in children) == len(children)
    # Remembered on the host, a password arriving at once in many children is checked by bcrypt once:
    # the others find it remembered when their turn comes.
    sharing = [child(checked) for _ in range(3 * throttle.FREE_PER_USER)]
    with concurrent.futures.ThreadPoolExecutor(len(sharing)) as pool:
        callers = list(pool.map(lambda c: c.password("ädmin", b"right", "192.0.2.1", True), sharing))
    assert callers == [Identity("ädmin", "basic")] * len(sharing)
    assert sum(c.checker.checks for c in sharing) == 1
    # Guesses arriving at once still stop at the free ones: bcrypt runs for those only.
    guessers = [child() for _ in range(3 * throttle.FREE_PER_USER)]
    with concurrent.futures.ThreadPoolExecutor(len(guessers)) as pool:
        statuses = list(pool.map(lambda c: refusal(lambda: c.password("alice", b"guess", "192.0.2.2", True)).status,
                                 guessers))
    assert sorted(statuses) == [401] * throttle.FREE_PER_USER + [429] * (len(guessers) - throttle.FREE_PER_USER)
    assert sum(c.checker.checks for c in guessers) == throttle.FREE_PER_USER


def test_a_busy_host_counts_nothing_against_the_caller(creds, tmp_path):
    creds.checker.turns = passwords.Turns(str(tmp_path), "turn", 1, wait=0.05)
    held = passwords.Turns(str(tmp_path), "turn", 1).take()      # another process holds the only turn
    try:
        for _ in range(2 * throttle.FREE_PER_USER):
            assert refusal(lambda: creds.password("alice", b"right", "192.0.2.1", True)).status == 503
    finally:
        passwords.Turns.give_back(held)
    assert creds.password("alice", b"right", "192.0.2.1", True) == Identity("alice", "basic")


def test_a_host_without_passwords_says_so(table, tmp_path):
    creds = Credentials(None, throttle.Throttle(table), passwords.Turns(str(tmp_path), "tarpit", 1), None, True)
    error = refusal(lambda: creds.password("alice", b"x", "192.0.2.1", False))
    assert error.status == 403 and "does not accept passwords" in str(error)


# --- through the handler --------------------------------------------------------------------

@pytest.fixture
def site(tmp_path):
    htpasswd = str(tmp_path / "htpasswd")
    write_htpasswd(htpasswd, {"alice": "right", "ädmin": "right"})
    with fakes.isolated():
        host, log = fakes.boot(str(tmp_path / "site"), htpasswd=htpasswd, passwords_over_http="on")
        host.credentials.tarpits = passwords.Turns(str(tmp_path), "tarpit", 0)   # throttled: refused at once
        yield types.SimpleNamespace(host=host, log=log)


def whoami(site, authorization, ip="192.0.2.7", content_type="text/xml"):
    body = (xmlrpc.client.dumps((), "system.whoami").encode() if content_type == "text/xml" else
            json.dumps({"jsonrpc": "2.0", "method": "system.whoami", "id": 1}).encode())
    req = FakeRequest("POST", "/clarens/", body, {"Content-Type": content_type, "Authorization": authorization}, ip=ip)
    assert handler.handler(req) == handler.apache.OK
    return req


def test_the_handler_names_the_user_a_password_proves(site):
    req = whoami(site, header("ädmin", "right"))
    assert xmlrpc.client.loads(req.output)[0][0]["identity"] == "ädmin"
    assert req.user == "ädmin".encode().decode("latin-1")          # mod_python's req.user takes Latin-1 only


@pytest.mark.parametrize("content_type", ["text/xml", "application/json"])
def test_the_handler_answers_refused_passwords_in_protocol_with_the_right_status(site, content_type):
    req = whoami(site, header("alice", "wrong"), content_type=content_type)
    assert req.status == 401 and req.headers_out["WWW-Authenticate"].startswith("Basic ")
    if content_type == "text/xml":
        with pytest.raises(xmlrpc.client.Fault) as info:
            xmlrpc.client.loads(req.output)
        code, message = info.value.faultCode, info.value.faultString
    else:
        error = json.loads(req.output)["error"]
        code, message = error["code"], error["message"]
    assert code == ACCESS_DENIED and message == "credentials refused: wrong user name or password"
    assert any("192.0.2.7: credentials refused: user 'alice': wrong password" in m for m in site.log.messages())
    for _ in range(throttle.FREE_PER_USER):
        req = whoami(site, header("alice", "wrong"), content_type=content_type)
    assert req.status == 429 and "Retry-After" in req.headers_out


def test_a_scheme_for_another_apache_module_leaves_the_caller_anonymous(site):
    req = whoami(site, "Negotiate abc")
    assert xmlrpc.client.loads(req.output)[0][0]["identity"] == "anonymous"


def test_a_throttle_table_that_cannot_be_opened_refuses_passwords_not_everything(tmp_path):
    with fakes.isolated():
        options = fakes.write_site(str(tmp_path / "site"), htpasswd="", passwords_over_http="on")
        os.makedirs(options["clarens.server.db_dir"])
        os.mkdir(os.path.join(options["clarens.server.db_dir"], "throttle.tdb"))    # not a file
        host = fakes.host_mod.boot(options, None)
        assert host.credentials is None
        req = FakeRequest("POST", "/clarens/", xmlrpc.client.dumps((), "system.whoami").encode(),
                          {"Content-Type": "text/xml", "Authorization": header("alice", "x")})
        handler.handler(req)
        assert req.status == 503
        req = FakeRequest("POST", "/clarens/", xmlrpc.client.dumps((), "system.whoami").encode(),
                          {"Content-Type": "text/xml"})
        handler.handler(req)
        assert xmlrpc.client.loads(req.output)[0][0]["identity"] == "anonymous"


def test_refused_passwords_are_logged_in_proportion(site):
    """Wrong passwords, unknown users and throttled attempts go through the host's refusal log
    (clarens.refusals): a class writes at most its budget of lines, whatever the flood."""
    now = time.time()
    site.host.refusals.clock = lambda: now      # one interval of the log's (its budgets are per interval)
    for n in range(200):
        whoami(site, header("alice" if n % 2 else "nobody%d" % (n % 4), "guess"), ip="192.0.2.%d" % (n % 9))
    lines = [m for m in site.log.messages() if "credentials refused" in m]
    for kind in ("wrong password", "no such user", "throttled"):
        assert 0 < sum(kind in m for m in lines) <= refusals.LINES, (kind, lines)
    assert len(lines) < 200 / 2
