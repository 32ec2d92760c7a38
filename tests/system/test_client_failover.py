# SPDX-License-Identifier: Apache-2.0
"""The client's failover pool against three real instances: spreading, losing one, getting it back, losing all.

The instances tell themselves apart by their probe greeting, and share one
counter.tdb (tests/modules/counter) so that a call that ran twice, on one host
or on two, shows as a count of 2.  Instances are stopped and started again on
their ports; every wait polls, with generous limits, and nothing is timed.
"""

import collections
import os
import shutil
import tempfile
import threading
import time
import uuid

import pytest

from clarens.client import AllServersDown, Service, TransportError
from clarens.client.pool import MAX_BACKOFF
from clarens.db import open_db
from clarens.dev.instance import Instance
from tests.helpers import make_acl_dir, make_state_dir, start_instance, wait_for

WAIT = 120.0    # seconds any polling wait may take before the test fails

COUNTER_ACL = """# The test-only counter module, for everyone (the failover tests call it anonymously).
<Acl counter>
    Allow anonymous
    Allow authenticated
</Acl>
"""


class Cluster:
    def __init__(self, instances, counter_dir):
        self.instances = instances
        self.counter_dir = counter_dir
        self.urls = [inst.url for inst in instances]
        self.greetings = {inst.url: "instance %d" % n for n, inst in enumerate(instances)}

    def counts(self, prefix):
        """Every count in the shared counter.tdb under keys starting with ``prefix``."""
        db = open_db(os.path.join(self.counter_dir, "counter.tdb"))
        try:
            return dict(db.items(prefix))
        finally:
            db.close()


def running(*instances):
    """Start those of ``instances`` that are stopped (on their own ports), at once."""
    stopped = [inst for inst in instances if not inst.running_pid()]
    _all(Instance.start, stopped)


def stopped(*instances):
    _all(Instance.stop, [inst for inst in instances if inst.running_pid() or inst.process])


def _all(action, instances):
    errors = []

    def one(inst):
        try:
            action(inst)
        except Exception as e:   # raised below
            errors.append(e)
    threads = [threading.Thread(target=one, args=(inst,)) for inst in instances]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


@pytest.fixture(scope="module")
def cluster():
    """Three instances, each with its own greeting, sharing one counter directory; stopped at the end."""
    counter_dir = make_state_dir("clarens-counter-")
    user = Instance.apache_user()
    os.chown(counter_dir, user.pw_uid, user.pw_gid)
    acl_source = tempfile.mkdtemp(prefix="clarens-counter-acl-")
    with open(os.path.join(acl_source, "counter.acl"), "w") as f:
        f.write(COUNTER_ACL)
    acl = make_acl_dir(os.path.join(acl_source, "counter.acl"))
    instances = []
    try:
        for n in range(3):
            instances.append(start_instance("clarens-failover-%d-" % n, burner=False, options={
                "clarens.module:probe.greeting": "instance %d" % n,
                "clarens.module:counter.dir": counter_dir,
                "clarens.server.acl_dir": acl}))
        yield Cluster(instances, counter_dir)
    finally:
        stopped(*instances)
        for inst in instances:
            shutil.rmtree(inst.state_dir, ignore_errors=True)
        for path in (counter_dir, acl_source, acl):
            shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("protocol", ["xmlrpc", "jsonrpc"])
def test_calls_spread_across_the_instances(cluster, protocol):
    running(*cluster.instances)
    with Service(cluster.urls, protocol, idempotent=["probe.*"]) as svc:
        answered = collections.Counter(svc.probe.info()["greeting"] for _ in range(30))
        assert answered == dict.fromkeys(cluster.greetings.values(), 10)
        key = "spread-%s-%s" % (protocol, uuid.uuid4().hex)
        assert [svc.counter.bump(key) for _ in range(3)] == [1, 2, 3]   # one count, whichever host runs it
        assert svc.counter.get(key) == 3 and cluster.counts(key) == {key: 3}


def test_one_instance_stops_under_load(cluster):
    """4 threads call through one shared Service while an instance stops: no idempotent call fails, and no
    counter.bump runs twice (those that raised may have run once, or not at all)."""
    running(*cluster.instances)
    victim = cluster.instances[1]
    run = "load-%s-" % uuid.uuid4().hex
    lock = threading.Lock()
    done = threading.Event()
    calls = [0]
    echo_failures, bump_errors, ran, maybe = [], [], {}, {}
    svc = Service(cluster.urls, idempotent=["echo.*"], timeout=60)

    def worker(thread):
        n = 0
        while not done.is_set():
            n += 1
            value = {"thread": thread, "n": n}
            try:
                answer = svc.echo.echo(value)
                if answer != value:
                    echo_failures.append(("wrong answer", value, answer))
            except Exception as e:    # asserted below: there must be none
                echo_failures.append(e)
            key = "%s%d-%d" % (run, thread, n)
            try:
                count = svc.counter.bump(key)
            except TransportError as e:   # may have run, or not: at most once
                maybe[key] = e
            except Exception as e:    # asserted below
                bump_errors.append((key, e))
            else:
                ran[key] = count
            with lock:
                calls[0] += 1

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for("40 rounds of calls before the stop", lambda: calls[0] >= 40, WAIT)
        victim.stop()
        after = calls[0]
        since = time.monotonic()
        # Long enough for the stopped server's backoff to run out and calls to probe it (and be refused).
        wait_for("100 rounds of calls after the stop",
                 lambda: calls[0] >= after + 100 and time.monotonic() - since > 3.5, WAIT)
    finally:
        done.set()
        for t in threads:
            t.join()
        svc.close()

    assert not echo_failures, echo_failures[:5]
    assert not bump_errors, bump_errors[:5]
    assert sorted(set(ran.values())) == [1], "a counter.bump answered with a count above 1"
    counts = cluster.counts(run)
    assert set(counts) <= set(ran) | set(maybe)
    assert [k for k in ran if counts.get(k) != 1] == []          # each answered call ran exactly once
    assert [k for k in maybe if counts.get(k, 0) > 1] == []      # and none that raised ran twice
    assert not svc.pool.status()[1]["up"] and svc.pool.status()[1]["failures"] >= 1
    print("\n%d rounds, %d bumps raised (%d of them ran): %s" % (
        calls[0], len(maybe), sum(counts.get(k, 0) for k in maybe), "; ".join(map(str, maybe.values()))))


def test_a_stopped_instance_rejoins_after_its_backoff(cluster):
    first, victim, last = cluster.instances
    running(first, last)
    stopped(victim)
    now = [0.0]
    frozen = Service(cluster.urls, idempotent=["probe.*"], clock=lambda: now[0])   # the backoff runs when told
    real = Service(cluster.urls, idempotent=["probe.*"])
    try:
        for svc in (frozen, real):
            answered = {svc.probe.info()["greeting"] for _ in range(6)}
            assert answered == {cluster.greetings[first.url], cluster.greetings[last.url]}
            assert not svc.pool.status()[1]["up"]

        running(victim)                           # back, on its own port
        # Within its backoff the pool leaves it alone, though it answers again...
        assert cluster.greetings[victim.url] not in {frozen.probe.info()["greeting"] for _ in range(9)}
        # ... and once the backoff has run out, a call in its turn probes it and it is in the rotation again.
        now[0] += MAX_BACKOFF
        answered = collections.Counter(frozen.probe.info()["greeting"] for _ in range(30))
        assert answered == dict.fromkeys(cluster.greetings.values(), 10) and frozen.pool.status()[1]["up"]

        # The same on the real clock: calls reach it again once its backoff has run out.
        wait_for("a call to reach the restarted instance",
                 lambda: real.probe.info()["greeting"] == cluster.greetings[victim.url], 2 * MAX_BACKOFF)
        assert real.pool.status()[1]["up"]
    finally:
        frozen.close()
        real.close()


def test_every_instance_down(cluster):
    """Every call, idempotent or not, goes round the refusing servers until its timeout (a host may be
    restarting), then fails naming each; a call that never reached a server ran nowhere."""
    stopped(*cluster.instances)
    with Service(cluster.urls, idempotent=["echo.*"], timeout=2) as svc:
        for call in (lambda: svc.counter.bump("nowhere"), lambda: svc.echo.echo(1), svc.system.listMethods):
            start = time.monotonic()
            with pytest.raises(AllServersDown) as caught:     # the first time, and while all are in their backoff
                call()
            e = caught.value
            assert time.monotonic() - start >= 1.0
            assert sorted(f.url for f in e.failures) == sorted(cluster.urls)
            assert all(url in str(e) for url in cluster.urls) and "cannot connect" in str(e)
            assert not e.sent                                  # refused: it ran nowhere
        assert not any(s["up"] for s in svc.pool.status())
    assert cluster.counts("nowhere") == {}


def test_a_call_waits_for_a_restarting_instance(cluster):
    """One instance, stopped: a call that never reached it is tried again until it answers."""
    only = cluster.instances[0]
    stopped(*cluster.instances)
    starter = threading.Thread(target=running, args=(only,))
    with Service(only.url, timeout=WAIT) as svc:
        starter.start()
        try:
            key = "restart-%s" % uuid.uuid4().hex
            assert svc.counter.bump(key) == 1          # not idempotent, but refused connections never ran
        finally:
            starter.join()
    assert cluster.counts(key) == {key: 1}
