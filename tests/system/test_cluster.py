# SPDX-License-Identifier: Apache-2.0
"""Several hosts behind HAProxy, drives on another machine over SSH, one policy: the cluster end to end.

Three private instances are the Clarens hosts, on ports of their own, in cluster mode, with the
same ACL files and modules and one shared images directory (it stands in for the export every
host and drive host mounts).  HAProxy (Debian's, a child of this test, its configuration
rendered by ``clarens.cluster`` from the shipped template) is the front end: it terminates TLS
with the first instance's demo PKI and connects to the hosts from 127.0.0.2, the only address
their ``trusted_proxies`` name, so that a client on 127.0.0.1 is provably not the proxy.  Two
burner helpers are the drive hosts: ``a``, whose socket the hosts reach directly, and ``b``,
whose socket only a throw-away OS user may open and which the hosts reach through an OpenSSH
forward (``ssh -N -L``) to a real sshd on loopback, logged in as that user.

Every wait polls, with generous limits; nothing is timed.
"""

from __future__ import annotations

import collections
import hashlib
import http.client
import io
import os
import pathlib
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
import xmlrpc.client

import pytest

from clarens import cluster as cluster_mod
from clarens import config as config_mod
from clarens import faults, procfs
from clarens.burnerd.client import BurnerClient, BurnerError
from clarens.client import Fault, Service, TransportError
from clarens.db import open_db
from clarens.dev import burnerd_launch
from clarens.dev.instance import HELPER_USER, Instance, _ensure_system_user
from tests.helpers import (
    ROOT,
    free_port,
    make_acl_dir,
    make_iso,
    make_state_dir,
    os_user_name,
    remove_stale_users,
    remove_user,
    shipped_modules,
    start_instance,
    wait_for,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: OS users, an sshd, helpers as their own user")

HAPROXY = "/usr/sbin/haproxy"
SSHD = "/usr/sbin/sshd"
TUNNEL_USER = os_user_name("tunnel")    # the drive host's account the SSH forward logs in as
PROXY_SOURCE = "127.0.0.2"          # HAProxy connects to the hosts from here; clients call from 127.0.0.1
WAIT = 60.0                         # seconds any polling wait may take before the test fails
FD_LIMIT = 20000                    # HAProxy's descriptor limit here (a container's, say)
DEMO_ADMIN_DN = "CN=Demo Administrator,O=Clarens Demo,C=UK"

CLUSTER_ACL = """# The test-only counter and probe modules, for everyone.
<Acl counter>
    Allow anonymous
    Allow authenticated
</Acl>
"""
OTHER_ACL = """# One more entry: a policy that is not the cluster's.
<Acl validator1.arrayOfStructsTest>
    Allow anonymous
</Acl>
"""

HELPER_CONF = """[burnerd]
socket = {run}/burnerd.sock
socket_mode = 0660
socket_group = {group}
allowed_uids = {allowed} root
images_dir = {images}
db = {state}/jobs.tdb
keep_jobs = 100
max_speed = 16
log_level = info

[drive:sim0]
dev = stdio:{state}/sim0.disc
capacity_mb = 4700
"""


# -- OS user and sshd on the "drive host" ------------------------------------------------------------


def _create_tunnel_user(work: str) -> str:
    """The drive host's tunnel account: no password (``*``, which sshd accepts with a key), no shell
    use, a key allowed to forward and nothing else.  The private key's path."""
    remove_stale_users()
    remove_user(TUNNEL_USER)
    home = os.path.join(work, "home", TUNNEL_USER)
    os.makedirs(os.path.dirname(home), mode=0o755, exist_ok=True)
    subprocess.run(["useradd", "--create-home", "--home-dir", home, "--user-group", "--shell", "/usr/sbin/nologin",
                    "--password", "*", TUNNEL_USER], check=True, capture_output=True)
    key = os.path.join(work, "tunnel.key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", TUNNEL_USER, "-f", key], check=True)
    account = pwd.getpwnam(TUNNEL_USER)
    dot_ssh = os.path.join(home, ".ssh")
    os.makedirs(dot_ssh, mode=0o700)
    authorized = os.path.join(dot_ssh, "authorized_keys")
    with open(key + ".pub") as f, open(authorized, "w") as out:
        out.write("restrict,port-forwarding %s\n" % f.read().strip())   # as conf/drive-hosts/ says
    os.chmod(authorized, 0o600)
    for path in (dot_ssh, authorized):
        os.chown(path, account.pw_uid, account.pw_gid)
    return key


def _start_sshd(work: str, port: int) -> subprocess.Popen:
    """The drive host's sshd on 127.0.0.1:``port``: keys only, the tunnel user only, forwarding of
    Unix sockets to it only (conf/drive-hosts/sshd_config.example); known_hosts written."""
    host_key = os.path.join(work, "host_key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host_key], check=True)
    config = os.path.join(work, "sshd_config")
    with open(config, "w") as f:
        f.write("\n".join([
            "ListenAddress 127.0.0.1", "Port %d" % port, "HostKey " + host_key,
            "PidFile " + os.path.join(work, "sshd.pid"), "AuthorizedKeysFile %h/.ssh/authorized_keys",
            "AuthenticationMethods publickey", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no", "PermitRootLogin no", "AllowUsers " + TUNNEL_USER,
            # OpenSSH checks a Unix-socket forward against the TCP forwarding settings too: "local"
            # is the least that lets it through (conf/drive-hosts/ says how to firewall the rest)
            "AllowTcpForwarding local", "AllowStreamLocalForwarding local", "AllowAgentForwarding no",
            "X11Forwarding no", "PermitTunnel no", "PermitTTY no", "PermitListen none",
            "LogLevel VERBOSE", ""]))
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    subprocess.run([SSHD, "-t", "-f", config], check=True)
    log = open(os.path.join(work, "sshd.log"), "ab")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", config], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True)
    log.close()

    def listening() -> bool:
        assert proc.poll() is None, "sshd exited with status %s" % proc.returncode
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False
    wait_for("sshd to listen", listening)
    with open(host_key + ".pub") as f:
        public = " ".join(f.read().split()[:2])
    with open(os.path.join(work, "known_hosts"), "w") as f:
        f.write("[127.0.0.1]:%d %s\n" % (port, public))
    return proc


class Tunnel:
    """``ssh -N -L LOCAL:REMOTE``: the drive host's helper socket, forwarded here, as the shipped
    clarens-drive-host@.service keeps it (here run as root, in a setgid directory of Apache's group)."""

    def __init__(self, work: str, port: int, key: str, local: str, remote: str):
        self.local, self.remote = local, remote
        self.log = os.path.join(work, "tunnel.log")
        self.argv = ["ssh", "-F", "/dev/null", "-N", "-i", key, "-o", "IdentitiesOnly=yes",
                     "-o", "IdentityAgent=none", "-o", "BatchMode=yes",
                     "-o", "UserKnownHostsFile=" + os.path.join(work, "known_hosts"),
                     "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
                     "-o", "ExitOnForwardFailure=yes", "-o", "StreamLocalBindUnlink=yes",
                     "-o", "StreamLocalBindMask=0117", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
                     "-L", "%s:%s" % (local, remote), "-p", str(port), "%s@127.0.0.1" % TUNNEL_USER]
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)

        seen = []

        def answers() -> bool:
            assert self.proc is not None and self.proc.poll() is None, "ssh exited: %s" % open(self.log).read()
            try:
                with BurnerClient(self.local, connect_timeout=1, timeout=5) as client:
                    return bool(client.status())
            except BurnerError as e:
                seen[:] = [str(e)]
                return False
        sshd_log = os.path.join(os.path.dirname(self.log), "sshd.log")
        wait_for(lambda: "the forwarded helper socket to answer (%s; ssh: %s; sshd: %s)" % (
            seen, open(self.log, errors="replace").read()[-300:], open(sshd_log, errors="replace").read()[-1500:]),
            answers)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(WAIT)
        self.proc = None


# -- burner helpers (the drive hosts) ------------------------------------------------------------------


class DriveHost:
    """A burner helper as its own user with one stdio: drive, reading the shared images directory."""

    def __init__(self, work: str, name: str, images: str, group: str, allowed: str):
        self.dir = os.path.join(work, "drivehost-" + name)
        self.run = os.path.join(self.dir, "run")
        self.state = os.path.join(self.dir, "state")
        self.socket = os.path.join(self.run, "burnerd.sock")
        self.conf = os.path.join(self.dir, "burnerd.conf")
        self.log = os.path.join(self.dir, "burnerd.log")
        self.disc = os.path.join(self.state, "sim0.disc")
        helper = pwd.getpwnam(HELPER_USER)
        for path, mode in ((self.dir, 0o755), (self.run, 0o755), (self.state, 0o700)):
            os.makedirs(path, mode=mode, exist_ok=True)
            os.chmod(path, mode)
        os.chown(self.state, helper.pw_uid, helper.pw_gid)
        with open(self.conf, "w") as f:
            f.write(HELPER_CONF.format(run=self.run, group=group, allowed=allowed, images=images, state=self.state))
        self.supervisor = burnerd_launch.launch(self.conf, HELPER_USER, self.log)

    def stop(self) -> None:
        if self.supervisor.poll() is None:
            self.supervisor.terminate()
            self.supervisor.wait(WAIT)


# -- HAProxy ----------------------------------------------------------------------------------------


class Front:
    """HAProxy as a child process, with a configuration rendered from the shipped template by
    ``python3 -m clarens.cluster haproxy --cluster FILE``, both run within a descriptor limit of
    :data:`FD_LIMIT` (where the limit it once took for granted would not start)."""

    def __init__(self, work: str, hosts: list[Instance], pki: str, digests: dict[str, str]):
        self.work = work
        self.port, self.http_port = free_port(), free_port()
        self.stats = os.path.join(work, "haproxy.sock")
        self.log = os.path.join(work, "haproxy.log")
        self.pki = pki
        pem = os.path.join(work, "front.pem")
        with open(pem, "w") as f:
            for name in ("server.crt", "server.key"):
                with open(os.path.join(pki, name)) as part:
                    f.write(part.read())
        os.chmod(pem, 0o600)
        self.cluster_file = _write(work, "cluster.conf", "[hosts]\n" + "".join(
            "h%d = 127.0.0.1:%d\n" % (n, inst.port) for n, inst in enumerate(hosts)))
        limit = ["prlimit", "--nofile=%d" % FD_LIMIT]
        self.config = os.path.join(work, "haproxy.cfg")
        with open(self.config, "w") as f:
            subprocess.run(limit + [sys.executable, "-m", "clarens.cluster", "haproxy", "--cluster", self.cluster_file,
                                    "--bind", "127.0.0.1:%d" % self.port, "--crt", pem, "--ca",
                                    os.path.join(pki, "ca.crt"), "--http-bind", "127.0.0.1:%d" % self.http_port,
                                    "--source", PROXY_SOURCE, "--stats-socket", self.stats, "--foreground"],
                           cwd=ROOT, stdout=f, check=True)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **cluster_mod.environment(digests)}
        subprocess.run([HAPROXY, "-c", "-q", "-f", self.config], env=env, check=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(limit + [HAPROXY, "-db", "-f", self.config], env=env,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        self.url = "https://127.0.0.1:%d/clarens/" % self.port
        self.http_url = "http://127.0.0.1:%d/clarens/" % self.http_port

    def command(self, text: str) -> str:
        """One command on HAProxy's runtime API (its stats socket, as an operator would use it)."""
        assert self.proc.poll() is None, "haproxy exited: %s" % self.log_text()
        return cluster_mod.admin(self.stats, text)

    def servers(self) -> dict[str, dict[str, str]]:
        """``show stat`` of the backend's servers, by name (status, check_status, check_code, scur...)."""
        assert self.proc.poll() is None, "haproxy exited: %s" % self.log_text()
        return cluster_mod.server_stats(self.stats)

    def wait_status(self, wanted: dict[str, str]) -> dict[str, dict[str, str]]:
        """Wait until each server named in ``wanted`` has a status starting with the one given."""
        def reached():
            try:
                found = self.servers()
            except (FileNotFoundError, ConnectionRefusedError):   # HAProxy is still starting
                return None
            return found if all(found[name]["status"].startswith(status) for name, status in wanted.items()) else None
        return wait_for("HAProxy to see %s" % wanted, reached)

    def service(self, cert: str | None = "demo-user", **kw) -> Service:
        creds = {"cert": os.path.join(self.pki, cert + ".crt"), "key": os.path.join(self.pki, cert + ".key")} \
            if cert else {}
        return Service(self.url, ca=os.path.join(self.pki, "ca.crt"), timeout=WAIT, **creds, **kw)

    def log_text(self) -> str:
        with open(self.log, errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(WAIT)


# -- the cluster -----------------------------------------------------------------------------------


class Cluster:
    def __init__(self, work, hosts, front, drive_a, drive_b, tunnel, images, counter_dir, acl, options):
        self.work, self.hosts, self.front = work, hosts, front
        self.drive_a, self.drive_b, self.tunnel = drive_a, drive_b, tunnel
        self.images, self.counter_dir, self.acl, self.options = images, counter_dir, acl, options
        self.greetings = {"host %d" % n: "h%d" % n for n in range(len(hosts))}

    def counts(self, prefix: str) -> dict:
        db = open_db(os.path.join(self.counter_dir, "counter.tdb"))
        try:
            return dict(db.items(prefix))
        finally:
            db.close()

    def all_up(self) -> None:
        """Every host running and in rotation (as the previous test may have left one stopped)."""
        for inst in self.hosts:
            if not inst.running_pid():
                inst.start()
        self.front.wait_status({"h%d" % n: "UP" for n in range(len(self.hosts))})


def _graceful_stop(inst: Instance) -> None:
    """What ``systemctl stop apache2`` does on Debian (``apachectl graceful-stop``): stop accepting,
    let the requests being served finish, exit."""
    os.kill(inst.running_pid(), signal.SIGWINCH)
    wait_for("the host's processes to exit", lambda: not inst.processes())
    if inst.process is not None:
        inst.process.wait(WAIT)
        inst.process = None


@pytest.fixture(scope="module")
def cluster(request):
    for program in (HAPROXY, SSHD):
        if not os.access(program, os.X_OK):
            pytest.fail("%s is missing: ./run test installs haproxy and openssh-server" % program)
    work = make_state_dir("clarens-cluster-")
    apache = Instance.apache_user()
    helper = _ensure_system_user(HELPER_USER)
    hosts: list[Instance] = []
    started: list = []
    try:
        key = _create_tunnel_user(work)
        images = os.path.join(work, "images")             # the shared images directory
        os.makedirs(images)
        os.chown(images, apache.pw_uid, helper.pw_gid)
        os.chmod(images, 0o2750)
        drive_a = DriveHost(work, "a", images, group=apache.pw_name, allowed=apache.pw_name)
        started.append(drive_a)
        drive_b = DriveHost(work, "b", images, group=TUNNEL_USER, allowed=TUNNEL_USER)
        started.append(drive_b)
        sshd_port = free_port()
        started.append(_start_sshd(work, sshd_port))
        forwards = os.path.join(work, "drive-hosts")      # root:www-data 2750: the forward is Apache's group's
        os.makedirs(forwards)
        os.chown(forwards, 0, apache.pw_gid)
        os.chmod(forwards, 0o2750)
        tunnel = Tunnel(work, sshd_port, key, os.path.join(forwards, "b.sock"), drive_b.socket)
        tunnel.start()
        started.append(tunnel)

        acl_source = os.path.join(work, "cluster.acl")
        with open(acl_source, "w") as f:
            f.write(CLUSTER_ACL)
        acl = make_acl_dir(acl_source)
        modules = os.path.join(work, "modules")           # the shipped modules, and two test-only ones
        os.makedirs(modules, mode=0o755)
        for name in ("probe", "counter"):
            os.symlink(os.path.join(ROOT, "tests", "modules", name), os.path.join(modules, name))
        counter_dir = make_state_dir("clarens-cluster-counter-")
        os.chown(counter_dir, apache.pw_uid, apache.pw_gid)
        options = {"clarens.server.modules_path": "%s:%s" % (shipped_modules(), modules),
                   "clarens.server.acl_dir": acl, "clarens.server.cluster": "on",
                   "clarens.server.trusted_proxies": PROXY_SOURCE, "clarens.module:counter.dir": counter_dir,
                   "clarens.module:burner.socket": "", "clarens.module:burner.images_dir": images,
                   "clarens.module:burner.drive_hosts": "a=%s b=%s" % (drive_a.socket, tunnel.local)}
        for n in range(3):
            hosts.append(start_instance("clarens-cluster-%d-" % n, burner=False,
                                        options=dict(options, **{"clarens.module:probe.greeting": "host %d" % n})))
        digests = cluster_mod.digests(hosts[0].server_config())
        front = Front(work, hosts, hosts[0].pki_dir, digests)
        started.append(front)
        front.wait_status({"h0": "UP", "h1": "UP", "h2": "UP"})
        yield Cluster(work, hosts, front, drive_a, drive_b, tunnel, images, counter_dir, acl, options)
    finally:
        for inst in hosts:
            inst.stop()
        for thing in reversed(started):
            if isinstance(thing, subprocess.Popen):
                thing.terminate()
                thing.wait(WAIT)
            else:
                thing.stop()
        remove_user(TUNNEL_USER)
        if not request.session.testsfailed:
            for inst in hosts:
                shutil.rmtree(inst.state_dir, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def iso(tmp_path_factory):
    return make_iso(str(tmp_path_factory.mktemp("cluster-isos")), "cluster", 4)   # ~3 s to burn at 1x


# -- tests ------------------------------------------------------------------------------------------


def test_health_reports_the_digests_every_host_shares(cluster):
    cluster.all_up()
    answers = [cluster_mod.health(inst.url) for inst in cluster.hosts]
    assert [status for status, _ in answers] == [200, 200, 200], answers
    expected = cluster_mod.digests(cluster.hosts[0].server_config())
    for _, answer in answers:
        assert answer["status"] == "ok" and answer["problems"] == [] and answer["cluster"] is True
        assert answer["access_control"] == "on" and answer["modules"]["failed"] == []
        assert {key: answer[key] for key in expected} == expected
    with cluster.front.service() as svc:
        info = svc.system.serverInfo()
    assert {key: info[key] for key in expected} == expected
    # A checker expecting other digests is told why the host is not fit, with 503.
    status, answer = cluster_mod.health(cluster.hosts[0].url, headers={"X-Clarens-Expect-Policy": "0" * 64})
    assert status == 503 and answer["status"] == "failing"
    assert answer["problems"] == ["the policy digest is %s, not the expected %s" % (expected["policy_digest"],
                                                                                   "0" * 64)]
    assert cluster_mod.check([inst.url for inst in cluster.hosts], out=io.StringIO()) == 0


def test_calls_are_spread_over_the_hosts(cluster):
    cluster.all_up()
    with cluster.front.service(idempotent=["probe.*"]) as svc:
        answered = collections.Counter(svc.probe.info()["greeting"] for _ in range(30))
    assert answered == dict.fromkeys(cluster.greetings, 10)


class Load:
    """4 threads calling through the front end, each in turn echo.echo (idempotent) and counter.bump
    (not: a count per call shows whether it ran once, twice or not at all)."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.run = "load-%s-" % uuid.uuid4().hex
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.calls = 0
        self.echo_failures: list = []
        self.bump_errors: list = []
        self.ran: dict[str, int] = {}
        self.maybe: dict[str, Exception] = {}
        self.svc = cluster.front.service(cert=None, idempotent=["echo.*"])
        self.threads = [threading.Thread(target=self._worker, args=(t,)) for t in range(4)]

    def _worker(self, thread: int) -> None:
        n = 0
        while not self.done.is_set():
            n += 1
            value = {"thread": thread, "n": n}
            try:
                answer = self.svc.echo.echo(value)
                if answer != value:
                    self.echo_failures.append(("wrong answer", value, answer))
            except Exception as e:    # asserted by the test
                self.echo_failures.append(e)
            key = "%s%d-%d" % (self.run, thread, n)
            try:
                self.ran[key] = self.svc.counter.bump(key)
            except TransportError as e:   # may have run, or not: at most once
                self.maybe[key] = e
            except Exception as e:    # asserted by the test
                self.bump_errors.append((key, e))
            with self.lock:
                self.calls += 1

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        wait_for("40 rounds of calls", lambda: self.calls >= 40)
        return self

    def more(self, rounds: int) -> None:
        after = self.calls
        wait_for("%d more rounds of calls" % rounds, lambda: self.calls >= after + rounds)

    def __exit__(self, *exc) -> None:
        self.done.set()
        for t in self.threads:
            t.join()
        self.svc.close()

    def counts(self) -> dict:
        """Every count of this load's calls: each call that answered must have run exactly once, and
        none that failed more than once."""
        counts = self.cluster.counts(self.run)
        assert set(counts) <= set(self.ran) | set(self.maybe)
        assert [k for k in self.ran if counts.get(k) != 1] == []
        assert [k for k in self.maybe if counts.get(k, 0) > 1] == []
        return counts


def _cluster_command(*args: str) -> subprocess.CompletedProcess:
    """``python3 -m clarens.cluster ARGS``, as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "clarens.cluster", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=2 * WAIT)


def test_one_host_stopped_under_load(cluster):
    """4 threads call through HAProxy while a host is taken out and stopped as an operator would do
    it (drained on the front end with ``clarens.cluster drain``, then stopped as Debian stops Apache,
    ``apachectl graceful-stop``): not one call fails, and each ran exactly once."""
    cluster.all_up()
    victim = cluster.hosts[1]
    stats = ["--stats-socket", cluster.front.stats]
    with Load(cluster) as load:
        drained = _cluster_command("drain", "h1", *stats, "--timeout", str(WAIT))
        assert drained.returncode == 0 and "h1: drained" in drained.stdout, drained
        assert cluster.front.servers()["h1"]["status"] == "DRAIN" and cluster.front.servers()["h1"]["scur"] == "0"
        _graceful_stop(victim)
        cluster.front.wait_status({"h1": "DOWN"})
        load.more(100)
    assert not load.echo_failures, load.echo_failures[:5]
    assert not load.bump_errors and not load.maybe, (load.bump_errors[:5], list(load.maybe.values())[:5])
    assert set(load.counts().values()) == {1} and len(load.ran) >= 140
    victim.start()
    ready = _cluster_command("ready", "h1", *stats)
    assert ready.returncode == 0 and "h1: ready" in ready.stdout, ready
    cluster.front.wait_status({"h1": "UP"})
    unknown = _cluster_command("drain", "h9", *stats)
    assert unknown.returncode == 2 and "No such server" in unknown.stderr, unknown


ROUNDS = 10            # stop/restart rounds under load
ROUND_SECONDS = 30.0   # at least this long each, the calls going on throughout


def test_no_idempotent_call_fails_while_a_host_is_up(cluster):
    """4 threads call through the front end (idempotent echo.echo and the non-idempotent counter)
    for ten rounds of 30 s; in each, a host is stopped as ``./run stop`` stops it (SIGTERM to Apache:
    what it was serving is cut off), then started again.  Not one idempotent call fails (the front
    end and the client retry them); no counter.bump runs twice (those that failed ran once at most)."""
    cluster.all_up()
    with Load(cluster) as load:
        for n in range(ROUNDS):
            began = time.monotonic()
            name, victim = "h%d" % (n % 3), cluster.hosts[n % 3]
            load.more(20)
            victim.stop()
            cluster.front.wait_status({name: "DOWN"})
            load.more(20)
            victim.start()
            cluster.front.wait_status({name: "UP"})
            load.more(20)
            assert not load.echo_failures, (n, load.echo_failures[:5])
            time.sleep(max(0.0, ROUND_SECONDS - (time.monotonic() - began)))
    assert not load.echo_failures and not load.bump_errors, (load.echo_failures[:5], load.bump_errors[:5])
    counts = load.counts()
    print("\n%d rounds of calls in %d stop/restart rounds; %d counter.bump failed (%d of them ran): %s" % (
        load.calls, ROUNDS, len(load.maybe), sum(counts.get(k, 0) for k in load.maybe),
        "; ".join(sorted({str(e) for e in load.maybe.values()}))[:2000]))


def test_haproxy_runs_within_the_descriptor_limit_it_has(cluster):
    """Rendered where the descriptor limit is 20,000 (a container's, say), the configuration fits it:
    HAProxy started (every other test here uses it), within that limit."""
    with open(cluster.front.config) as f:
        text = f.read()
    maxconn = cluster_mod.default_maxconn(len(cluster.hosts), FD_LIMIT)
    assert text.count("    maxconn %d\n" % maxconn) == 2 and 2 * maxconn < FD_LIMIT, text[:2000]
    with open("/proc/%d/limits" % cluster.front.proc.pid) as f:
        assert [line.split()[3:5] for line in f if line.startswith("Max open files")] == [[str(FD_LIMIT)] * 2]
    assert int(cluster_mod.admin(cluster.front.stats, "show info").split("Maxconn: ")[1].split()[0]) == maxconn


def test_one_host_lost_under_load(cluster):
    """The same load while a host's Apache is killed outright (a crash, a power cut): the
    non-idempotent calls it was serving are lost, and the caller is told (HAProxy answers 502); the
    idempotent ones are retried and none fails; no call ran twice, no call after them fails, and the
    front end takes the host out."""
    cluster.all_up()
    victim = cluster.hosts[2]
    with Load(cluster) as load:
        for pid in victim.processes():
            os.kill(pid, signal.SIGKILL)
        victim.process.wait(WAIT)
        victim.process = None
        cluster.front.wait_status({"h2": "DOWN"})
        failed_at_loss = len(load.echo_failures) + len(load.maybe)
        load.more(100)
    assert not load.bump_errors and not load.echo_failures, (load.bump_errors[:5], load.echo_failures[:5])
    lost = load.echo_failures + list(load.maybe.values())
    assert len(lost) == failed_at_loss, lost                  # none once the front end took the host out
    assert all(isinstance(e, TransportError) and e.sent for e in lost), lost
    load.counts()
    print("\n%d rounds; %d calls lost with the host: %s" % (load.calls, len(lost), "; ".join(map(str, lost))))
    victim.stop()
    victim.start()
    cluster.front.wait_status({"h2": "UP"})


def test_a_host_with_another_policy_is_taken_out(cluster):
    cluster.all_up()
    victim = cluster.hosts[2]
    expected = cluster_mod.digests(victim.server_config())["policy_digest"]
    other = make_acl_dir(os.path.join(cluster.work, "cluster.acl"), _write(cluster.work, "other.acl", OTHER_ACL))
    victim.stop()
    victim.options["clarens.server.acl_dir"] = other
    try:
        victim.start()
        status, answer = cluster_mod.health(victim.url, headers={"X-Clarens-Expect-Policy": expected})
        assert status == 503 and answer["policy_digest"] != expected, answer
        assert answer["problems"] == ["the policy digest is %s, not the expected %s" % (answer["policy_digest"],
                                                                                       expected)]
        # Out, for what its health check answers (not merely because it was restarted): 503.
        wait_for("HAProxy to take h2 out for its 503", lambda: (lambda h2: h2["status"] == "DOWN" and (
            h2["check_status"], h2["check_code"]) == ("L7STS", "503"))(cluster.front.servers()["h2"]))
        wait_for("HAProxy's log to report it", lambda: "Health check for server clarens/h2 failed"
                 in cluster.front.log_text())
        with cluster.front.service(cert=None, idempotent=["probe.*"]) as svc:
            answered = collections.Counter(svc.probe.info()["greeting"] for _ in range(30))
        assert answered == {"host 0": 15, "host 1": 15}
        assert cluster_mod.check([inst.url for inst in cluster.hosts], out=io.StringIO()) == 1
    finally:
        victim.stop()
        victim.options["clarens.server.acl_dir"] = cluster.acl
        victim.start()
    cluster.front.wait_status({"h2": "UP"})


def _write(directory: str, name: str, text: str) -> str:
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def _post(port: int, method: str, headers: dict, tls: ssl.SSLContext | None = None) -> tuple[int, object]:
    """One XML-RPC call on a connection of its own, with extra ``headers``: (status, result or Fault)."""
    conn = (http.client.HTTPSConnection("127.0.0.1", port, context=tls, timeout=WAIT) if tls
            else http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT))
    try:
        conn.request("POST", "/clarens/", xmlrpc.client.dumps((), method),
                     dict(headers, **{"Content-Type": "text/xml"}))
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    try:
        return response.status, xmlrpc.client.loads(body)[0][0]
    except xmlrpc.client.Fault as fault:
        return response.status, fault


def test_the_identity_header_cannot_be_forged(cluster):
    cluster.all_up()
    front, pki = cluster.front, cluster.front.pki
    forged = {"X-Clarens-Client-DN": DEMO_ADMIN_DN}
    tls = ssl.create_default_context(cafile=os.path.join(pki, "ca.crt"))
    user_tls = ssl.create_default_context(cafile=os.path.join(pki, "ca.crt"))
    user_tls.load_cert_chain(os.path.join(pki, "demo-user.crt"), os.path.join(pki, "demo-user.key"))

    # Through the front end, the certificate it verified is the identity...
    status, me = _post(front.port, "system.whoami", {}, user_tls)
    assert me["identity"] == "/C=UK/O=Clarens Demo/CN=Demo User" and me["source"] == "certificate", me
    # ...and a client's own header is deleted before it reaches a host, with or without a certificate.
    for context in (tls, user_tls):
        status, me = _post(front.port, "system.whoami", forged, context)
        assert status == 200 and me["identity"] in ("anonymous", "/C=UK/O=Clarens Demo/CN=Demo User"), me
    status, me = _post(front.http_port, "system.whoami", forged)
    assert me["identity"] == "anonymous", me

    # Straight at a host, from 127.0.0.1 (not the proxy's 127.0.0.2): refused, and logged.
    host = cluster.hosts[0]
    for headers in (forged, dict(forged, **{"X-Forwarded-For": PROXY_SOURCE})):
        status, fault = _post(host.port, "system.whoami", headers)
        assert isinstance(fault, xmlrpc.client.Fault) and fault.faultCode == faults.ACCESS_DENIED, fault
        assert fault.faultString == "credentials refused: a X-Clarens-Client-DN header from a client that is not " \
                                    "a trusted front end"
    wait_for("the refusal in the host's error log", lambda: "127.0.0.1: credentials refused: a X-Clarens-Client-DN "
             "header from a client that is not a trusted front end" in open(host.error_log).read())

    # The hosts log a caller at the address the front end saw (the client's), not the front end's.
    mark = {inst.error_log: os.path.getsize(inst.error_log) for inst in cluster.hosts}
    with front.service(cert=None) as svc:
        with pytest.raises(Fault) as info:
            svc.acl.show()
    assert info.value.code == faults.ACCESS_DENIED

    def logged():
        for path, offset in mark.items():
            with open(path, errors="replace") as f:
                f.seek(offset)
                text = f.read()
            if "'acl.show': fault -32001" in text:
                return text
        return None
    text = wait_for("the refusal of acl.show in a host's log", logged)
    assert "anonymous@127.0.0.1 'acl.show'" in text and "@%s" % PROXY_SOURCE not in text, text


def test_live_policy_changes_are_refused_in_cluster_mode(cluster):
    cluster.all_up()
    with cluster.front.service(cert="demo-admin") as admin:
        assert "admins" in admin.acl.show()["groups"]
        for call in (lambda: admin.acl.set_group("testers", ["someone"]), lambda: admin.acl.delete_entry("echo"),
                     lambda: admin.acl.set_entry("echo", {"allow": ["anonymous"]})):
            with pytest.raises(Fault) as info:
                call()
            assert info.value.code == faults.READ_ONLY and "cluster = on" in info.value.message, info.value
        policies = {admin.system.serverInfo()["policy_digest"] for _ in range(6)}
    assert policies == {cluster_mod.digests(cluster.hosts[0].server_config())["policy_digest"]}


def test_a_host_that_trusts_the_wrong_addresses_is_taken_out_and_check_says_why(cluster):
    """A host started without trusted_proxies, or trusting the address clients call from (the
    one-machine trap: the front end's source and the clients' address the same): its trust digest
    differs, so the health check takes it out; ``clarens.cluster check``, probing each host straight
    from this machine with a forged identity header, says which host believes it."""
    cluster.all_up()
    ok = _cluster_command("check", "--cluster", cluster.front.cluster_file)
    assert ok.returncode == 0 and ok.stdout.count(" ok ") == 3, ok
    victim = cluster.hosts[2]
    expected = cluster_mod.digests(victim.server_config())["trust_digest"]
    urls = [inst.url for inst in cluster.hosts]
    try:
        for trusted, believed in (("", False), ("127.0.0.1 " + PROXY_SOURCE, True)):
            victim.stop()
            victim.options["clarens.server.trusted_proxies"] = trusted
            victim.start()
            status, answer = cluster_mod.health(victim.url, headers={"X-Clarens-Expect-Trust": expected})
            assert status == 503 and answer["problems"] == ["the trust configuration digest is %s, not the expected "
                                                            "%s" % (answer["trust_digest"], expected)], answer
            wait_for("HAProxy to take h2 out for its 503", lambda: (lambda h2: h2["status"] == "DOWN" and (
                h2["check_status"], h2["check_code"]) == ("L7STS", "503"))(cluster.front.servers()["h2"]))
            out = io.StringIO()
            assert cluster_mod.check(urls, out) == 1
            report = out.getvalue().splitlines()
            assert ("believed a forged X-Clarens-Client-DN" in report[2]) is believed, report
            assert "believed" not in report[0] + report[1] and "trust configurations are not the same" in report[3]
    finally:
        victim.stop()
        victim.options["clarens.server.trusted_proxies"] = PROXY_SOURCE
        victim.start()
    cluster.front.wait_status({"h2": "UP"})


def _wait_job(svc: Service, job_id, until, what: str) -> dict:
    return wait_for("job %s to be %s" % (job_id, what), lambda: (lambda job: job if until(job) else None)(
        svc.burner.status(job_id)))


def test_a_burn_on_the_drive_hosts_drive_over_ssh(cluster, iso):
    cluster.all_up()
    with cluster.front.service(idempotent=["burner.status", "burner.drives", "burner.images"]) as svc:
        image = svc.upload(iso, "cluster.iso")             # through HAProxy, into the shared directory
        with open(iso, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        assert image["sha256"] == digest and os.path.exists(os.path.join(cluster.images, "cluster.iso"))
        drives = {d["name"]: d for d in svc.burner.drives()}
        assert set(drives) == {"a:sim0", "b:sim0"} and all(d["reachable"] for d in drives.values()), drives
        assert drives["b:sim0"]["host"] == "b"
        job_id = svc.burner.burn("cluster.iso", "b:sim0")
        assert isinstance(job_id, str) and job_id.startswith("b:"), job_id
        job = _wait_job(svc, job_id, lambda j: j["state"] not in ("queued", "burning", "verifying"), "finished")
        assert job["state"] == "done" and job["verification"]["match"] is True, job
        assert job["verification"]["disc_sha256"] == digest and job["drive"] == "b:sim0" and job["host"] == "b"
        # It reached drive host b through the forward: as the tunnel's user there, never as Apache's.
        assert job["uid"] == pwd.getpwnam(TUNNEL_USER).pw_uid
        assert job_id in [j["id"] for j in svc.burner.jobs()]
    with open(cluster.drive_b.disc, "rb") as f:
        assert hashlib.sha256(f.read(os.path.getsize(iso))).hexdigest() == digest
    assert not os.path.exists(cluster.drive_a.disc)
    # Apache's user cannot open drive host b's socket itself: only the forward reaches it.
    probe = subprocess.run(["runuser", "-u", Instance.apache_user().pw_name, "--", "/usr/bin/python3", "-c",
                            "import socket; s = socket.socket(socket.AF_UNIX); s.connect(%r)" % cluster.drive_b.socket],
                           capture_output=True, text=True)
    assert probe.returncode != 0 and "PermissionError" in probe.stderr, probe.stderr


def test_a_drive_host_that_disappears_mid_burn(cluster, iso):
    cluster.all_up()
    with cluster.front.service(idempotent=["burner.status", "burner.drives", "burner.jobs"]) as svc:
        if "cluster.iso" not in {i["name"] for i in svc.burner.images()}:
            svc.upload(iso, "cluster.iso")
        job_id = svc.burner.burn("cluster.iso", "b:sim0", {"speed": 1})
        _wait_job(svc, job_id, lambda j: j["state"] == "burning", "burning")
        cluster.tunnel.stop()                                 # drive host b is gone
        try:
            job = _wait_job(svc, job_id, lambda j: j["state"] == "unreachable", "unreachable")
            assert job["id"] == job_id and job["host"] == "b" and "drive host b" in job["error"], job
            drives = {d["name"]: d for d in svc.burner.drives()}
            assert drives["a:sim0"]["reachable"] is True
            assert [d["reachable"] for name, d in drives.items() if d["host"] == "b"] == [False], drives
            listed = {j["id"]: j for j in svc.burner.jobs()}
            assert listed[job_id]["state"] == "unreachable", listed
            with pytest.raises(Fault) as info:
                svc.burner.burn("cluster.iso", "b:sim0")
            assert info.value.code == faults.SERVICE_UNAVAILABLE and "drive host b" in info.value.message
            assert svc.echo.echo("unaffected") == "unaffected"
        finally:
            cluster.tunnel.start()                            # back: the job shows its true state
        job = _wait_job(svc, job_id, lambda j: j["state"] not in ("unreachable", "queued", "burning", "verifying"),
                        "finished, as seen again")
        assert job["state"] == "done" and job["verification"]["match"] is True, job


def test_a_hung_drive_host_does_not_hold_the_others(cluster):
    """A drive host whose helper hangs (stopped: it neither answers nor refuses) is marked unreachable
    after its own timeout; the other drive host's drives and jobs are listed as usual."""
    cluster.all_up()
    supervisor = str(cluster.drive_a.supervisor.pid)
    helper = next(pid for pid in procfs.pids() if (st := procfs.stat(pid)) is not None and st[1][1] == supervisor
                  and b"clarens.burnerd" in procfs.cmdline(pid))
    with cluster.front.service(idempotent=["burner.drives"]) as svc:
        os.kill(helper, signal.SIGSTOP)
        try:
            for _ in range(3):                 # on whichever hosts HAProxy sends them
                drives = svc.burner.drives()
                b = [d for d in drives if d["host"] == "b"]
                a = [d for d in drives if d["host"] == "a"]      # "a:sim0", or "a:" on a host that never saw it
                assert [(d["name"], d["reachable"]) for d in b] == [("b:sim0", True)], drives
                assert len(a) == 1 and a[0]["name"] in ("a:sim0", "a:") and a[0]["reachable"] is False, drives
                assert "drive host a" in a[0]["error"], a
            assert svc.echo.echo("unaffected") == "unaffected"
        finally:
            os.kill(helper, signal.SIGCONT)
        wait_for("drive host a to answer again",
                 lambda: all(d["reachable"] for d in svc.burner.drives()))


def test_a_slow_client_never_reaches_a_host(cluster):
    """A call whose body trickles in is held by HAProxy, answered 408 when its request timeout
    strikes, and never handed to a host: no Apache process waits for it."""
    cluster.all_up()
    marker = "slow-%s" % uuid.uuid4().hex
    body = xmlrpc.client.dumps(("x",), "echo.echo").encode()
    with socket.create_connection(("127.0.0.1", cluster.front.http_port), timeout=WAIT) as s:
        s.sendall(b"POST /clarens/?%s HTTP/1.1\r\nHost: front\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n"
                  % (marker.encode(), len(body)) + body[:20])
        answer = s.recv(65536)                 # nothing more is sent: HAProxy's timeout ends it
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert cluster.front.command("show info")          # HAProxy is fine
    for inst in cluster.hosts:
        with open(inst.access_log, errors="replace") as f:
            assert marker not in f.read()


# -- operating without extra tools ------------------------------------------------------------------


def test_deploy_policy_names_what_is_missing_before_changing_anything(cluster, tmp_path):
    script = os.path.join(ROOT, "conf", "cluster", "deploy-policy.sh")
    tools = tmp_path / "bin"                  # what is on PATH: ssh, and later a stand-in rsync
    tools.mkdir()
    os.symlink(shutil.which("ssh"), tools / "ssh")
    env = {"PATH": str(tools), "HOME": str(tmp_path)}

    def deploy(*args):
        return subprocess.run(["/bin/sh", script, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=2 * WAIT)
    assert deploy().returncode == 2
    missing_rsync = deploy(cluster.acl, cluster.front.cluster_file)
    assert missing_rsync.returncode == 1 and "rsync here (apt-get install rsync)" in missing_rsync.stderr, missing_rsync
    (tools / "rsync").write_text("#!/bin/sh\nexit 0\n")
    (tools / "rsync").chmod(0o755)
    # Every host of the cluster file, at its address: none lets root in by SSH here.
    unreachable = deploy(cluster.acl, cluster.front.cluster_file)
    assert unreachable.returncode == 1, unreachable
    for name in ("h0", "h1", "h2"):
        assert "SSH as root to host %s: ssh -o BatchMode=yes root@127.0.0.1 fails" % name in unreachable.stderr
    assert "validate" not in unreachable.stdout + unreachable.stderr      # stopped before anything else


def test_a_private_instance_runs_in_cluster_mode_from_its_own_configuration(tmp_path):
    """``./run start --config FILE``: a private instance as one host of a cluster on this machine,
    the checkout's conf/clarens.conf untouched; a configuration Apache's user cannot read is refused
    at once, saying so."""
    state = make_state_dir("clarens-run-config-")
    port, tls_port = free_port(), free_port()
    env = dict(os.environ, CLARENS_STATE=state, CLARENS_PORT=str(port), CLARENS_TLS_PORT=str(tls_port))

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([os.path.join(ROOT, "run"), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=4 * WAIT)
    text = ("[server]\nmodules_path = %s\nacl_dir = %s\ncluster = on\ntrusted_proxies = %s\n"
            "workers = 16\nspare_workers = 2\n\n[module:burner]\nmax_image_mb = 100\n"
            % (os.path.join(ROOT, "modules"), os.path.join(ROOT, "acl"), PROXY_SOURCE))
    private = tmp_path / "private.conf"             # under pytest's own directory, root's alone
    private.write_text(text)
    refused = run("start", "--config", str(private))
    assert refused.returncode == 1 and "Apache's user www-data cannot read %s" % private in refused.stderr, refused
    conf = pathlib.Path(make_state_dir("clarens-run-config-conf-"), "host.conf")
    conf.write_text(text)
    conf.chmod(0o644)
    with open(os.path.join(ROOT, "conf", "clarens.conf"), "rb") as f:
        shipped = f.read()
    started = run("start", "--config", str(conf))
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        status, answer = cluster_mod.health("http://127.0.0.1:%d/clarens/" % port)
        assert status == 200 and answer["cluster"] is True, answer
        assert answer["trust_digest"] == cluster_mod.digests(config_mod.load(str(conf)))["trust_digest"]
    finally:
        stopped = run("stop")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(conf.parent, ignore_errors=True)
    with open(os.path.join(ROOT, "conf", "clarens.conf"), "rb") as f:
        assert f.read() == shipped
