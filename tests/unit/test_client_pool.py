# SPDX-License-Identifier: Apache-2.0
"""The client's failover pool without servers: the policy on a fake clock, and Service over fake transports.

The rule under test (issue 12): a call goes to another server only if it provably
never reached the first (``sent=False``) or running it twice does no harm (it is
idempotent); a server that fails waits out a backoff, then rejoins the rotation.
"""

import xmlrpc.client

import pytest

from clarens import Fault
from clarens.client import AllServersDown, Service, TransportError
from clarens.client.pool import FIRST_BACKOFF, FIRST_PAUSE, MAX_BACKOFF, MAX_PAUSE, Pool, may_retry
from clarens.client.service import IDEMPOTENT_HEADER
from clarens.client.transports import Answer

A, B, C = "http://a.test/clarens/", "http://b.test/clarens/", "http://c.test/clarens/"


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self):
        self.now = 1000.0
        self.pauses = []

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds

    def sleep(self, seconds):
        """What the Service's retries sleep: the clock moves on, and the pause is remembered."""
        self.pauses.append(seconds)
        self.advance(seconds)


def urls(servers):
    return [s.url for s in servers]


def down(url, cause="connection refused", sent=False):
    return TransportError(url, cause, sent=sent)


def status(pool, url):
    return next(s for s in pool.status() if s["url"] == url)


# -- the policy ------------------------------------------------------------------------------------------------

def test_round_robin_over_healthy_servers():
    pool = Pool([A, B, C], Clock())
    assert [urls(pool.order()) for _ in range(4)] == [[A, B, C], [B, C, A], [C, A, B], [A, B, C]]


def test_a_failed_server_waits_its_backoff_then_is_probed_in_its_turn():
    clock = Clock()
    pool = Pool([A, B, C], clock)
    b = pool.servers[1]
    pool.failed(b, down(B))
    assert status(pool, B) == {"url": B, "up": False, "failures": 1, "down_for": FIRST_BACKOFF,
                               "last_error": "connection refused"}
    # Within its backoff: never the first choice, only the last resort after every other server.
    for _ in range(6):
        order = urls(pool.order())
        assert order[-1] == B and set(order[:2]) == {A, C}
    clock.advance(FIRST_BACKOFF - 0.01)
    assert urls(pool.order())[-1] == B
    # Its backoff has run out: back in the rotation, so a call in its turn probes it.
    clock.advance(0.01)
    assert [urls(pool.order()) for _ in range(3)] == [[B, C, A], [C, A, B], [A, B, C]]
    assert not status(pool, B)["up"]          # down until a call succeeds there
    pool.succeeded(b)
    assert status(pool, B) == {"url": B, "up": True, "failures": 0, "down_for": 0.0, "last_error": None}


def test_backoff_doubles_per_consecutive_failure_up_to_the_maximum():
    clock = Clock()
    pool = Pool([A, B], clock)
    a = pool.servers[0]
    expected = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert FIRST_BACKOFF == 1.0 and MAX_BACKOFF == 60.0
    seen = []
    for failures in range(1, len(expected) + 1):
        pool.failed(a, down(A))
        assert a.failures == failures
        seen.append(a.down_until - clock.now)
        clock.advance(seen[-1])              # the backoff runs out; the probe fails again
    assert seen == expected
    pool.succeeded(a)                        # healthy: the next failure starts from the first backoff
    pool.failed(a, down(A))
    assert a.down_until - clock.now == FIRST_BACKOFF and a.failures == 1


def test_failures_while_down_do_not_lengthen_the_backoff():
    """Calls under way when a server went away all fail together: that is one failure, not many."""
    clock = Clock()
    pool = Pool([A, B], clock)
    a = pool.servers[0]
    for n in range(8):
        pool.failed(a, down(A, "no answer %d" % n, sent=True))
        clock.advance(0.1)
    assert a.failures == 1 and a.down_until == 1000.0 + FIRST_BACKOFF and a.last_error == "no answer 7"
    clock.advance(FIRST_BACKOFF)
    pool.failed(a, down(A))
    assert a.failures == 2 and a.down_until == clock.now + 2 * FIRST_BACKOFF


def test_when_every_server_is_down_the_one_back_soonest_comes_first():
    clock = Clock()
    pool = Pool([A, B, C], clock)
    a, b, c = pool.servers
    for _ in range(3):                       # c: 1 + 2 + 4 s of backoff, failing each time it is probed
        pool.failed(c, down(C))
        clock.advance(c.down_until - clock.now)
    pool.failed(c, down(C))                  # down for 8 s
    pool.failed(a, down(A))                  # down for 1 s
    clock.advance(0.5)
    pool.failed(b, down(B))                  # down for 1 s, back half a second after a
    for _ in range(4):                       # whatever the rotation, every server, soonest back first
        assert urls(pool.order()) == [A, B, C]
    clock.advance(0.5)                       # a's backoff runs out: a alone is ready, a probe
    assert urls(pool.order()) == [A, B, C]


def test_a_pool_of_one_is_never_shut_out():
    pool = Pool([A], Clock())
    pool.failed(pool.servers[0], down(A))
    assert urls(pool.order()) == [A]


def test_a_pool_needs_distinct_urls():
    with pytest.raises(ValueError):
        Pool([])
    with pytest.raises(ValueError, match="twice"):
        Pool([A, B, A])


@pytest.mark.parametrize("sent, idempotent, retry", [
    (False, False, True),     # never reached the server: safe to send elsewhere
    (False, True, True),
    (True, True, True),       # may have run, but running twice does no harm
    (True, False, False),     # may have run, and must not run twice
])
def test_may_retry(sent, idempotent, retry):
    assert may_retry(TransportError(A, "x", sent=sent), idempotent) is retry


# -- Service over fake transports ------------------------------------------------------------------------------

class FakeTransport:
    """Answers XML-RPC calls with ``{"server", "method", "params"}`` (system.multicall: one such result per
    call), or fails as told: ``fail`` is a TransportError to raise, ``fault`` a Fault to answer."""

    def __init__(self, url):
        self.url = url
        self.seen = []            # method names of the calls that reached it
        self.headers = []         # the extra request headers of each
        self.timeouts = []        # the time each was given
        self.fail = None
        self.fail_once = None     # a TransportError to raise on the next call only
        self.fault = None
        self.closed = False

    def exchange(self, body, content_type, timeout=None, headers=None):
        assert content_type == "text/xml"
        params, method = xmlrpc.client.loads(body, use_builtin_types=True)
        self.seen.append(method)
        self.headers.append(headers)
        self.timeouts.append(timeout)
        if self.fail_once is not None:
            fail, self.fail_once = self.fail_once, None
            raise fail
        if self.fail is not None:
            raise self.fail
        if self.fault is not None:
            return Answer(xmlrpc.client.dumps(xmlrpc.client.Fault(self.fault.code, self.fault.message),
                                              methodresponse=True, allow_none=True).encode())
        if method == "system.multicall":
            result = [[{"server": self.url, "method": c["methodName"], "params": c["params"]}] for c in params[0]]
        else:
            result = {"server": self.url, "method": method, "params": list(params)}
        return Answer(xmlrpc.client.dumps((result,), methodresponse=True, allow_none=True).encode())

    def close(self):
        self.closed = True


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def make_service(clock):
    """``make_service(urls, **settings)``: a Service whose transports are FakeTransports (``svc.fakes``)."""
    def make(service_urls=(A, B, C), **settings):
        svc = Service(list(service_urls), clock=clock, sleep=clock.sleep, **settings)
        svc.fakes = {}
        for url in service_urls:
            svc.fakes[url] = svc.transports[url] = FakeTransport(url)
        return svc
    return make


def test_calls_go_round_robin(make_service):
    svc = make_service()
    answered = [svc.echo.echo(n)["server"] for n in range(6)]
    assert answered == [A, B, C, A, B, C]
    assert svc.call("counter.bump", "k") == {"server": A, "method": "counter.bump", "params": ["k"]}


def test_an_unsent_call_goes_to_the_next_server_even_if_not_idempotent(make_service):
    svc = make_service()
    svc.fakes[A].fail = down(A)
    assert svc.counter.bump("k")["server"] == B
    assert svc.fakes[A].seen == ["counter.bump"] and svc.fakes[B].seen == ["counter.bump"]
    assert svc.fakes[C].seen == []
    assert not status(svc.pool, A)["up"] and status(svc.pool, B)["up"]


def test_a_sent_call_that_is_not_idempotent_is_not_retried(make_service):
    svc = make_service(idempotent=["echo.*"])
    svc.fakes[A].fail = down(A, "no answer: connection reset", sent=True)
    with pytest.raises(TransportError) as caught:
        svc.counter.bump("k")
    assert type(caught.value) is TransportError            # this server's error, not AllServersDown
    assert caught.value.url == A and caught.value.sent and "connection reset" in str(caught.value)
    assert svc.fakes[A].seen == ["counter.bump"]
    assert svc.fakes[B].seen == [] and svc.fakes[C].seen == []   # it may have run on A: never sent again


@pytest.mark.parametrize("method, patterns, per_call", [
    ("counter.bump", (), True),               # idempotent=True on the call
    ("echo.echo", ("echo.*",), None),         # a pattern of the service
    ("burner.status", ("echo.*", "burner.status"), None),
    ("system.listMethods", (), None),         # always safe
])
def test_a_sent_call_that_is_idempotent_is_retried(make_service, method, patterns, per_call):
    svc = make_service(idempotent=patterns)
    svc.fakes[A].fail = down(A, "no answer: timed out", sent=True)
    assert svc.call(method, idempotent=per_call)["server"] == B
    assert svc.fakes[A].seen == [method] and svc.fakes[B].seen == [method]


@pytest.mark.parametrize("method, patterns, per_call", [
    ("echo.echo", ("echo.*",), False),        # the call's own word wins over a pattern
    ("echo.echoes", ("echo.echo",), None),    # patterns match the whole name
    ("counter.bump", ("echo.*",), None),
    ("system.multicall", (), None),           # may hold anything: not safe by default
])
def test_what_is_not_idempotent(make_service, method, patterns, per_call):
    svc = make_service(idempotent=patterns)
    svc.fakes[A].fail = down(A, "no answer", sent=True)
    with pytest.raises(TransportError):
        svc.call(method, idempotent=per_call)
    assert svc.fakes[B].seen == []


def test_every_server_down_raises_all_servers_down_naming_each(make_service, clock):
    """A call that reaches no server goes round them all, with growing pauses, until its timeout; then
    AllServersDown names each server's last failure."""
    svc = make_service(timeout=10)
    for url, cause in ((A, "connection refused"), (B, "no route to host"), (C, "HTTP 503 Service Unavailable")):
        svc.fakes[url].fail = down(url, cause)
    for call in range(2):    # the first time, and again while all are in their backoff
        if call:
            first_pauses, first_rounds = list(clock.pauses), len(svc.fakes[A].seen)
        start = clock.now
        with pytest.raises(AllServersDown) as caught:
            svc.counter.bump("k")        # not idempotent, but it never reached a server: safe to send again
        e = caught.value
        assert sorted(f.url for f in e.failures) == [A, B, C] and not e.sent
        for url, cause in ((A, "connection refused"), (B, "no route to host"), (C, "HTTP 503")):
            assert url in str(e) and cause in str(e)
        assert 10 - MAX_PAUSE <= clock.now - start <= 10     # the whole timeout, and not past it
    rounds = len(svc.fakes[A].seen)
    assert [len(svc.fakes[u].seen) for u in (A, B, C)] == [rounds] * 3 and rounds > 2 * 10 / MAX_PAUSE - 2
    assert not any(s["up"] for s in svc.pool.status())
    # Short pauses at first (a front end switching hosts), growing to a second, each in its upper half.
    assert len(first_pauses) == first_rounds - 1
    for n, pause in enumerate(first_pauses):
        most = min(FIRST_PAUSE * 2 ** n, MAX_PAUSE)
        assert most / 2 <= pause <= most


def test_each_try_is_given_what_is_left_of_the_timeout(make_service, clock):
    svc = make_service([A], timeout=5)
    svc.fakes[A].fail = down(A)
    with pytest.raises(TransportError):
        svc.echo.echo(1)
    given = svc.fakes[A].timeouts
    assert given[0] == 5 and given == sorted(given, reverse=True) and given[-1] > 0
    assert all(abs(t - (5 - sum(clock.pauses[:n]))) < 1e-9 for n, t in enumerate(given))


def test_every_server_down_for_an_idempotent_call(make_service):
    svc = make_service(idempotent=["echo.*"])
    svc.fakes[A].fail = down(A, "no answer", sent=True)
    svc.fakes[B].fail = down(B)
    svc.fakes[C].fail = down(C, "no answer", sent=True)
    with pytest.raises(AllServersDown) as caught:
        svc.echo.echo(1)
    assert sorted(f.url for f in caught.value.failures) == [A, B, C] and len(svc.fakes[A].seen) > 3
    assert caught.value.sent                     # it may have run somewhere


def test_an_idempotent_call_is_tried_again_until_it_is_answered(make_service, clock):
    """A single URL (a front end) whose host went away mid-call: the call is tried again, on a fresh
    connection, after a short pause, until it is answered; a call that may have run, never."""
    svc = make_service([A], idempotent=["echo.*"])
    lost = down(A, "no answer: remote end closed", sent=True)
    failures = iter([lost, lost, down(A, "HTTP 502 Bad Gateway"), lost])

    def flaky(body, content_type, timeout=None, headers=None):
        error = next(failures, None)
        if error is not None:
            svc.fakes[A].seen.append("failed")
            raise error
        return FakeTransport.exchange(svc.fakes[A], body, content_type, timeout, headers)
    svc.fakes[A].exchange = flaky
    assert svc.echo.echo(1)["server"] == A
    assert svc.fakes[A].seen == ["failed"] * 4 + ["echo.echo"] and len(clock.pauses) == 4
    assert sum(clock.pauses) < 1.5 * FIRST_PAUSE * 2 ** 4
    svc.fakes[A].fail_once = lost
    with pytest.raises(TransportError, match="remote end closed"):
        svc.counter.bump("k")                   # not idempotent: it may have run, so never again
    assert svc.fakes[A].seen[-1:] == ["counter.bump"] and svc.fakes[A].seen.count("counter.bump") == 1


def test_a_call_that_never_reached_a_server_is_sent_once_one_answers(make_service, clock):
    svc = make_service([A])
    svc.fakes[A].fail = down(A)                  # the host is restarting: its port refuses

    def back(seconds):
        clock.sleep(seconds)
        if len(clock.pauses) == 3:
            svc.fakes[A].fail = None
    svc.sleep = back
    assert svc.counter.bump("k")["server"] == A
    assert svc.fakes[A].seen == ["counter.bump"] * 4      # three refused, one ran


def test_a_failure_trying_again_cannot_help_ends_the_call_at_once(make_service, clock):
    svc = make_service([A, B], idempotent=["echo.*"])
    svc.fakes[A].fail = TransportError(A, "an answer over the limit", transient=False)
    svc.fakes[B].fail = TransportError(B, "cannot connect: certificate verify failed", sent=False, transient=False)
    start = clock.now
    with pytest.raises(AllServersDown) as caught:
        svc.echo.echo(1)
    assert clock.now == start and clock.pauses == [] and not caught.value.transient
    assert len(svc.fakes[A].seen) == len(svc.fakes[B].seen) == 1
    # One server that cannot help is left out; the call goes on with the others.
    svc.fakes[B].fail = down(B)
    svc.fakes[B].fail_once = None

    def back(seconds):
        clock.sleep(seconds)
        svc.fakes[B].fail = None
    svc.sleep = back
    assert svc.echo.echo(2)["server"] == B and svc.fakes[A].seen.count("echo.echo") == 2


def test_the_front_end_is_told_which_calls_it_may_retry(make_service):
    svc = make_service([A], idempotent=["echo.*"])
    svc.echo.echo(1)
    svc.counter.bump("k")
    svc.system.listMethods()
    svc.batch([("echo.echo", [1]), ("counter.bump", ["k"])])
    assert svc.fakes[A].headers == [{IDEMPOTENT_HEADER: "1"}, None, {IDEMPOTENT_HEADER: "1"}, None]


def test_a_server_in_its_backoff_is_a_last_resort(make_service, clock):
    svc = make_service()
    svc.fakes[A].fail = down(A)
    assert svc.echo.echo(0)["server"] == B       # A fails, B answers
    svc.fakes[A].fail = None                     # A is back, but the pool waits out its backoff
    answered = [svc.echo.echo(n)["server"] for n in range(4)]
    assert answered in ([B, C, B, C], [C, B, C, B])   # A's downtime shared evenly, not all on B
    svc.fakes[B].fail, svc.fakes[C].fail = down(B), down(C)
    assert svc.echo.echo(0)["server"] == A       # every other server failed: A after all
    assert status(svc.pool, A)["up"]


def test_a_recovered_server_rejoins_after_its_backoff(make_service, clock):
    svc = make_service()
    svc.fakes[B].fail = down(B)
    answered = [svc.echo.echo(n)["server"] for n in range(6)]
    assert B not in answered and svc.fakes[B].seen == ["echo.echo"]   # tried once, then left alone
    svc.fakes[B].fail = None
    clock.advance(FIRST_BACKOFF)
    answered = [svc.echo.echo(n)["server"] for n in range(6)]
    assert answered.count(B) == 2 and status(svc.pool, B)["up"]


def test_a_single_server_raises_its_own_transport_error(make_service):
    svc = make_service([A])
    svc.fakes[A].fail = down(A)
    for calls in (1, 2):                         # in its backoff too: a pool of one is never shut out
        with pytest.raises(TransportError) as caught:
            svc.echo.echo(1)
        assert type(caught.value) is TransportError and caught.value.url == A
        assert len(svc.fakes[A].seen) > 20 * calls
    svc.fakes[A].fail = None
    assert svc.echo.echo(1)["server"] == A


def test_a_fault_is_an_answer(make_service, clock):
    """A server that answers with a fault is up: the fault is raised, not retried elsewhere."""
    svc = make_service([A, B], idempotent=["echo.*"])
    svc.fakes[A].fail = down(A)
    assert svc.echo.echo(0)["server"] == B                  # A fails, B answers
    svc.fakes[A].fail, svc.fakes[A].fault = None, Fault(4242, "the probe says no")
    clock.advance(FIRST_BACKOFF)
    assert svc.echo.echo(1)["server"] == B                  # B's turn
    with pytest.raises(Fault) as caught:                    # A's turn: a probe, answered with a fault
        svc.echo.echo(2)
    assert (caught.value.code, caught.value.message) == (4242, "the probe says no")
    assert len(svc.fakes[A].seen) == 2 and len(svc.fakes[B].seen) == 2
    assert status(svc.pool, A)["up"]


def test_a_garbled_answer_may_have_run(make_service):
    svc = make_service()
    svc.fakes[A].exchange = lambda body, content_type, timeout=None, headers=None: Answer(b"<html>proxy error</html>")
    with pytest.raises(TransportError) as caught:
        svc.counter.bump("k")
    assert caught.value.url == A and caught.value.sent and "not an XML-RPC answer" in str(caught.value)
    assert svc.fakes[B].seen == [] and not status(svc.pool, A)["up"]


@pytest.mark.parametrize("call", ["batch", "multicall"])
def test_a_batch_is_idempotent_only_if_every_call_is(make_service, call):
    safe = [("echo.echo", [1]), ("system.listMethods", [])]
    mixed = [("echo.echo", [1]), ("counter.bump", ["k"])]
    for calls, idempotent, retried in ((safe, None, True), (mixed, None, False), (mixed, True, True),
                                       (safe, False, False)):
        svc = make_service(idempotent=["echo.*"])
        svc.fakes[A].fail = down(A, "no answer", sent=True)
        run = getattr(svc, call)
        if retried:
            assert [r["server"] for r in run(calls, idempotent=idempotent)] == [B, B]
        else:
            with pytest.raises(TransportError) as caught:
                run(calls, idempotent=idempotent)
            assert type(caught.value) is TransportError and caught.value.url == A
        assert svc.fakes[A].seen == ["system.multicall"]
        assert svc.fakes[B].seen == (["system.multicall"] if retried else [])


def test_close_closes_every_transport(make_service):
    svc = make_service()
    with svc:
        pass
    assert all(f.closed for f in svc.fakes.values())
