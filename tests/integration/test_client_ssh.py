# SPDX-License-Identifier: Apache-2.0
"""Calls over SSH with no server running: a real OpenSSH sshd, real OS users, clarens.stdio.

The module starts a private instance (for its burner helper and ACL files), an
``sshd`` of its own on a free port of 127.0.0.1 and two throw-away OS users, both
able to read the burner's images: ``clarens-ssh-in``, also in the helper socket's
group and among the helper's allowed uids, and ``clarens-ssh-out``, in neither.
Each logs in with a key of its own; the client
(:class:`clarens.client.transports.Ssh`) runs the system's ``ssh`` with this
module's keys and ``known_hosts`` only.  The remote command is ``clarens.stdio``
from this checkout, with a clarens.conf (the ssh:// URL's path) naming the
instance's modules, ACL files and burner helper; each user's databases are its
own (``session_db_dir``, under its home).

The users run the checkout's code in place: it must be readable by other users,
as it must be for Apache's www-data (see ``Instance._check_readable_by``; the
fixture checks it too).  Nothing here changes its permissions.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import resource
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
import xmlrpc.client

import pytest

from clarens import faults, framing, procfs
from clarens.client import Fault, TransportError, connect
from clarens.dev.instance import Instance
from tests.helpers import (
    ROOT,
    free_port,
    make_acl_dir,
    make_state_dir,
    os_user_name,
    processes_of,
    remove_stale_users,
    remove_user,
    start_instance,
    wait_for,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates OS users (useradd) and runs an sshd")

PYTHON = "/usr/bin/python3"
SSHD = "/usr/sbin/sshd"
IN_USER = os_user_name("in")      # in the burner helper socket's group, and an allowed uid of the helper
OUT_USER = os_user_name("out")    # in neither
USERS = (IN_USER, OUT_USER)
REMOTE = "env PYTHONPATH=%s %s -m clarens.stdio" % (ROOT, PYTHON)
WAIT = 30.0                     # seconds any polling wait may take before the test fails

# The policy this module adds to the instance's: a method only IN_USER may call, and the
# burner's drives for both users (so that only the operating system stands between
# OUT_USER and the helper).
SSH_ACL = """\
<Group ssh-testers>
    Member unix:%(in)s
    Member unix:%(out)s
</Group>

<Acl probe.add>
    Allow unix:%(in)s
</Acl>

<Acl burner.drives>
    AllowGroup ssh-testers
</Acl>

<Acl noisy>
    Allow authenticated
</Acl>
""" % {"in": IN_USER, "out": OUT_USER}

# A module of the stdio host only, that writes to its standard output as careless code does.
NOISY = '''"""noisy: prints, and runs a program that prints."""
import subprocess


def _startup_init(config, dbs, log):
    print("noisy: starting")


def shout(text):
    """Print TEXT, have echo(1) print it, and return it."""
    print(text, flush=True)
    subprocess.run(["echo", text], check=True)
    return text


methods_list = {"shout": shout}
'''


def describe(pids: list[int]) -> list[str]:
    return ["%d %s" % (pid, b" ".join(procfs.cmdline(pid)).decode(errors="replace")) for pid in pids]


def stdio_pids(user: str) -> list[int]:
    uid = pwd.getpwnam(user).pw_uid
    return [pid for pid in processes_of(user)
            if b"clarens.stdio" in procfs.cmdline(pid) and os.stat("/proc/%d" % pid).st_uid == uid]


# -- OS users ----------------------------------------------------------------------------------------


def _create_user(name: str, work: str, groups: tuple[str, ...] = ()) -> str:
    """A fresh OS user ``name``, its home under ``work``, whose only way in is a new key; the private
    key's path.

    The password field is ``*`` (no password), not useradd's ``!`` (a locked account,
    which sshd refuses without PAM even with a key)."""
    remove_stale_users()
    remove_user(name)
    home = os.path.join(work, "home", name)
    os.makedirs(os.path.dirname(home), mode=0o755, exist_ok=True)
    argv = ["useradd", "--create-home", "--home-dir", home, "--user-group", "--shell", "/bin/sh", "--password", "*"]
    if groups:
        argv += ["--groups", ",".join(groups)]
    subprocess.run(argv + [name], check=True, capture_output=True)
    key = os.path.join(work, name + ".key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", key], check=True)
    account = pwd.getpwnam(name)
    dot_ssh = os.path.join(home, ".ssh")
    authorized = os.path.join(dot_ssh, "authorized_keys")
    os.makedirs(dot_ssh, mode=0o700)
    with open(key + ".pub") as f:
        public = f.read().strip()
    with open(authorized, "w") as f:
        f.write("restrict %s\n" % public)     # no forwarding of any kind, no pty: as a deployment's key would be
    os.chmod(authorized, 0o600)
    for path in (dot_ssh, authorized):
        os.chown(path, account.pw_uid, account.pw_gid)
    return key


# -- fixtures ----------------------------------------------------------------------------------------


class Env:
    """What the tests need: the instance, the sshd, the users' keys, clients."""

    def __init__(self, inst: Instance, work: str, port: int, sshd: int, keys: dict[str, str], conf: str):
        self.inst, self.work, self.port, self.sshd, self.keys, self.conf = inst, work, port, sshd, keys, conf
        self.known_hosts = os.path.join(work, "known_hosts")
        self.sshd_log = os.path.join(work, "sshd.log")

    def ssh(self, key: str) -> list[str]:
        """The ssh client's argv prefix: this module's key and known_hosts, nothing of root's own."""
        return ["ssh", "-F", "/dev/null", "-i", key, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
                "-o", "UserKnownHostsFile=" + self.known_hosts, "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=20"]

    def url(self, user: str) -> str:
        return "ssh://%s@127.0.0.1:%d%s" % (user, self.port, self.conf)

    def connect(self, user: str, protocol: str = "jsonrpc", key: str | None = None, remote: str = REMOTE):
        return connect(self.url(user), protocol=protocol, remote=remote, ssh=self.ssh(key or self.keys[user]),
                       timeout=WAIT)

    def logins(self, user: str) -> int:
        """How many times sshd has let ``user`` in so far."""
        with open(self.sshd_log, errors="replace") as f:
            return f.read().count("Accepted publickey for %s " % user)


def _write_stdio_config(inst: Instance, work: str, acl: str) -> str:
    """The stdio host's clarens.conf: the instance's modules (and the noisy one), ACL files and
    burner helper."""
    options = inst.all_options()
    modules = os.path.join(work, "modules")
    os.makedirs(os.path.join(modules, "noisy"))
    with open(os.path.join(modules, "noisy", "__init__.py"), "w") as f:
        f.write(NOISY)
    for directory in (modules, os.path.join(modules, "noisy")):
        os.chmod(directory, 0o755)
    conf = os.path.join(work, "clarens.conf")
    with open(conf, "w") as f:
        f.write("[server]\nmodules_path = %s:%s\nacl_dir = %s\nlog_level = info\n\n"
                "[module:burner]\nsocket = %s\nimages_dir = %s\nmax_image_mb = 100\n\n"
                "[module:probe]\ngreeting = hello over ssh\n"
                % (options["clarens.server.modules_path"], modules, acl, options["clarens.module:burner.socket"],
                   options["clarens.module:burner.images_dir"]))
    os.chmod(conf, 0o644)
    return conf


def _start_sshd(work: str, port: int) -> subprocess.Popen:
    """sshd on 127.0.0.1:``port`` with a new host key, keys only, for the test users only; the
    client's known_hosts written."""
    host_key = os.path.join(work, "host_key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "clarens-test-host", "-f", host_key],
                   check=True)
    config = os.path.join(work, "sshd_config")
    with open(config, "w") as f:
        f.write("\n".join([
            "ListenAddress 127.0.0.1", "Port %d" % port, "HostKey " + host_key,
            "PidFile " + os.path.join(work, "sshd.pid"),
            "AuthorizedKeysFile %h/.ssh/authorized_keys", "AuthenticationMethods publickey",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
            "PermitRootLogin no", "PermitUserEnvironment no", "AllowUsers " + " ".join(USERS),
            "AllowTcpForwarding no", "AllowAgentForwarding no", "X11Forwarding no", "PermitTunnel no",
            "LogLevel VERBOSE", ""]))
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)     # sshd's privilege-separation directory
    subprocess.run([SSHD, "-t", "-f", config], check=True)
    log_path = os.path.join(work, "sshd.log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", config], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)

    def listening() -> bool:
        if proc.poll() is not None:
            with open(log_path, errors="replace") as f:
                pytest.fail("sshd exited with status %d:\n%s" % (proc.returncode, f.read()))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False
    wait_for("sshd to listen on port %d" % port, listening)
    with open(host_key + ".pub") as f:
        host_public = " ".join(f.read().split()[:2])
    with open(os.path.join(work, "known_hosts"), "w") as f:
        f.write("[127.0.0.1]:%d %s\n" % (port, host_public))
    return proc


@pytest.fixture(scope="module")
def env(request):
    if not os.access(SSHD, os.X_OK):
        pytest.fail("%s is missing: apt-get install openssh-server (./run test installs it)" % SSHD)
    work = make_state_dir("clarens-ssh-")          # 0755: sshd and the users read the config there
    sshd = inst = None
    try:
        keys = {IN_USER: _create_user(IN_USER, work, groups=("www-data",)), OUT_USER: _create_user(OUT_USER, work)}
        probe = os.path.join(ROOT, "clarens", "stdio.py")
        assert subprocess.run(["runuser", "-u", OUT_USER, "--", "test", "-r", probe]).returncode == 0, \
            "other users cannot read %s: the test users run the checkout's code" % probe
        acl_file = os.path.join(work, "ssh.acl")
        with open(acl_file, "w") as f:
            f.write(SSH_ACL)
        acl = make_acl_dir(acl_file)
        # IN_USER may reach the helper's socket by its group (www-data); the helper admits it too.
        inst = start_instance("clarens-ssh-instance-", options={"clarens.server.acl_dir": acl},
                              helper_users=[IN_USER])
        # Both users may read the images (their group is the helper's, which the instance has made by
        # now), as a user who burns over SSH must: the burner module lists them, and sweeps them at start.
        images_group = grp.getgrgid(os.stat(inst.images_dir).st_gid).gr_name
        for user in USERS:
            subprocess.run(["usermod", "--append", "--groups", images_group, user], check=True, capture_output=True)
        conf = _write_stdio_config(inst, work, acl)
        port = free_port()
        sshd = _start_sshd(work, port)
        yield Env(inst, work, port, sshd.pid, keys, conf)
    finally:
        if sshd is not None:
            sshd.terminate()
            try:
                sshd.wait(WAIT)
            except subprocess.TimeoutExpired:
                sshd.kill()
                sshd.wait()
        try:
            if inst is not None:
                inst.stop()
                shutil.rmtree(inst.state_dir, ignore_errors=True)
        finally:
            for user in USERS:
                remove_user(user)
        if not request.session.testsfailed:       # else kept with the run's other files, sshd.log among them
            shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def quiet(env):
    """No session of the test users left over from an earlier test (sshd ends them asynchronously)."""
    for user in USERS:
        wait_for("the earlier sessions of %s to end" % user, lambda u=user: not processes_of(u))
    return env


# -- tests -------------------------------------------------------------------------------------------


def test_whoami_and_echo_over_json_rpc(quiet):
    with quiet.connect(IN_USER) as svc:
        me = svc.system.whoami()
        assert me["identity"] == "unix:%s" % IN_USER and me["source"] == "unix" and me["authenticated"] is True
        assert "ssh-testers" in me["groups"]
        values = [None, True, 0, -2**31, 2**53, 1.5, "", "plain", "ünïcödé ☃ 𝄞", "a\nb\t\"c\"\\",
                  [], {}, [1, [2, [3, [4, None]]]], {"k": {"nested": [1, "x", {"deep": None}]}, "ë": []}]
        for value in values:
            assert svc.echo.echo(value) == value, value
        assert svc.call("echo.echo", values) == values


def test_the_command_line_takes_the_remote_command_and_ssh_options(quiet):
    """``clarens --remote ... --ssh ...``: a checkout on the remote host, reached with a key of its own."""
    def clarens(*args):
        return subprocess.run([os.path.join(ROOT, "bin", "clarens"), *args], capture_output=True, text=True,
                              timeout=2 * WAIT)
    ssh = shlex.join(quiet.ssh(quiet.keys[IN_USER]))
    me = clarens("--remote", REMOTE, "--ssh", ssh, "call", quiet.url(IN_USER), "system.whoami")
    assert me.returncode == 0 and json.loads(me.stdout)["identity"] == "unix:%s" % IN_USER, me.stderr
    # Without the checkout on the remote Python's path (the default remote): said so, with the fix.
    bare = clarens("--remote", "env -u PYTHONPATH %s -m clarens.stdio" % PYTHON, "--ssh", ssh, "--timeout", "10",
                   "call", quiet.url(IN_USER), "system.whoami")
    assert bare.returncode == 3 and "No module named 'clarens'" in bare.stderr, bare.stderr
    assert "env PYTHONPATH=/path/to/checkout /usr/bin/python3 -m clarens.stdio" in bare.stderr


def test_xml_rpc_over_the_same_framing(quiet):
    with quiet.connect(IN_USER, protocol="xmlrpc") as svc:
        assert svc.system.whoami()["identity"] == "unix:%s" % IN_USER
        value = {"list": [1, "ünïcödé", [True, None]], "float": 2.25, "bytes": b"\x00\xff"}
        assert svc.echo.echo(value) == value
        assert svc.probe.info()["protocol"] == "xmlrpc"


def test_calls_share_one_session(quiet):
    logins = quiet.logins(IN_USER)
    with quiet.connect(IN_USER) as svc:
        pids = {svc.probe.pid() for _ in range(5)}
        pids.add(svc.call("probe.info")["pid"])
        assert svc.batch([("probe.pid", []), ("echo.echo", ["x"])])[1] == "x"
        assert len(pids) == 1, pids
        assert stdio_pids(IN_USER) == list(pids)
        info = svc.probe.info()
        assert info["greeting"] == "hello over ssh" and info["protocol"] == "jsonrpc"
        assert info["db_dir"] == os.path.join(pwd.getpwnam(IN_USER).pw_dir, ".local", "state", "clarens")
    assert quiet.logins(IN_USER) == logins + 1
    wait_for("the session to end", lambda: not processes_of(IN_USER))


def test_identity_and_acls_apply(quiet):
    with quiet.connect(IN_USER) as svc:
        assert svc.probe.add(2, 3) == 5
    with quiet.connect(OUT_USER) as svc:
        assert svc.system.whoami()["identity"] == "unix:%s" % OUT_USER
        with pytest.raises(Fault) as info:
            svc.probe.add(2, 3)
        assert info.value.code == faults.ACCESS_DENIED
        assert info.value.message == "access denied: unix:%s may not call probe.add" % OUT_USER
        assert svc.probe.pid() > 0                 # the rest of probe, as for every authenticated caller
        # The host logs the refusal with the address sshd saw (SSH_CLIENT); ssh relays it.
        transport = svc.transports[quiet.url(OUT_USER)]
        line = "WARNING clarens: unix:%s@127.0.0.1 'probe.add': fault -32001: access denied" % OUT_USER
        wait_for("the refusal's log line", lambda: any(line in seen for seen in transport.stderr_tail))


def test_the_os_decides_who_reaches_the_burner_helper(quiet):
    """Both users may call burner.drives (SSH_ACL); only the socket's permissions keep OUT_USER out."""
    with quiet.connect(IN_USER) as svc:
        assert [d["name"] for d in svc.burner.drives()] == ["sim0"]
    with quiet.connect(OUT_USER) as svc:
        assert svc.system.whoami()["groups"] == ["ssh-testers"]
        with pytest.raises(Fault) as info:
            svc.burner.drives()
    assert info.value.code == faults.SERVICE_UNAVAILABLE
    assert info.value.message.startswith("burner unavailable: ") and info.value.message.endswith(
        "unavailable: permission denied on its socket"), info.value.message


@pytest.mark.parametrize("user, key", [(IN_USER, OUT_USER), ("clarens-ssh-nobody", IN_USER)],
                         ids=["key-not-authorized", "unknown-user"])
def test_a_failed_login_is_a_transport_error_before_sending(quiet, user, key):
    for _ in range(10):            # ssh's reason arrives on its stderr as it exits: no race may lose it
        with quiet.connect(user, key=quiet.keys[key]) as svc:
            with pytest.raises(TransportError) as info:
                svc.system.whoami()
        assert info.value.sent is False
        assert "Permission denied (publickey)" in str(info.value), str(info.value)


def test_what_modules_print_does_not_reach_the_session(quiet):
    """The session's standard output carries frames only: prints (the module's own, at its start and in
    a call, or a program's it runs) go to standard error, which ssh relays."""
    with quiet.connect(IN_USER) as svc:
        assert svc.noisy.shout("hello there") == "hello there"
        assert svc.echo.echo([1, "two"]) == [1, "two"]
        transport = svc.transports[quiet.url(IN_USER)]
        wait_for("both prints on standard error", lambda: transport.stderr_tail.count("hello there") == 2)


@pytest.mark.parametrize("remote, why", [
    ("sh -c 'echo garbage; exec cat >/dev/null'", "a malformed header block: b'garbage' (exit status 0)"),
    ("sh -c 'printf \"Content-Length: 0\\r\\n\\r\\n\"; exec cat >/dev/null'",
     "the remote command is not clarens.stdio"),
    ("/nonexistent/python3 -m clarens.stdio",
     "the session ended (exit status 127): sh: 1: /nonexistent/python3: not found"),
], ids=["garbage", "no-greeting", "missing"])
def test_a_remote_command_that_is_not_the_host_fails_before_sending(quiet, remote, why):
    """A remote end that is not clarens.stdio: no call goes out, the error says why, the session is over
    (the remote ``cat`` only ends when the client closes the session's input)."""
    with quiet.connect(IN_USER, remote=remote) as svc, pytest.raises(TransportError) as info:
        svc.echo.echo(1)
    assert info.value.sent is False and str(info.value).endswith(why), str(info.value)
    wait_for("every process of %s to end" % IN_USER, lambda: not processes_of(IN_USER))


# A client that makes one call, says the remote pid, and then waits to be killed.
CLIENT = """
import sys, time
from clarens.client import connect
svc = connect(sys.argv[1], protocol="jsonrpc", remote=sys.argv[2], ssh=sys.argv[3:])
print(svc.probe.pid(), flush=True)
time.sleep(3600)
"""


def children_of(pid: int) -> list[int]:
    return [p for p in procfs.pids() if (st := procfs.stat(p)) is not None and st[1][1] == str(pid)]


def test_killing_the_client_leaves_no_process_behind(quiet):
    client = subprocess.Popen([PYTHON, "-c", CLIENT, quiet.url(IN_USER), REMOTE] + quiet.ssh(quiet.keys[IN_USER]),
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = client.stdout.readline()
        assert line.strip().isdigit(), (line, client.stderr.read() if client.poll() is not None else "")
        remote = int(line)
        assert stdio_pids(IN_USER) == [remote]
        ssh = [p for p in children_of(client.pid) if procfs.cmdline(p)[0] == b"ssh"]
        assert len(ssh) == 1, describe(children_of(client.pid))
    finally:
        client.kill()              # SIGKILL: no chance to close anything
        client.wait()
    wait_for("the ssh client %d to end" % ssh[0], lambda: not procfs.alive(ssh[0]))
    wait_for("every process of %s to end" % IN_USER, lambda: not processes_of(IN_USER))


def listening_sockets() -> dict[tuple[str, str], str]:
    """Every listening TCP socket and bound UDP socket (IPv4 and IPv6), by (table, local address), and
    every listening Unix socket, by ("unix", inode): their inodes."""
    found = {}
    for table, state in (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")):
        with open("/proc/net/" + table) as f:
            for row in list(f)[1:]:
                fields = row.split()
                if fields[3] == state:
                    found[(table, fields[1])] = fields[9]
    with open("/proc/net/unix") as f:
        for row in list(f)[1:]:
            fields = row.split()
            if int(fields[3], 16) & 0x10000:         # __SO_ACCEPTCON: listening
                found[("unix", fields[6])] = fields[6]
    return found


def socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets ``pid`` holds."""
    inodes = set()
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    except OSError:           # it ended meanwhile
        pass
    return inodes


def test_a_session_listens_nowhere(quiet):
    """No process of a session (sshd's session processes, the host) holds a listening socket: the
    only way in was sshd's own.  (Per process, not a before/after diff of the whole machine, where
    anything else may start listening meanwhile.)"""
    with quiet.connect(IN_USER) as svc:
        assert svc.probe.pid() in stdio_pids(IN_USER)
        session = processes_of(IN_USER)
        titles = describe(session)
        held = set().union(*(socket_inodes(pid) for pid in session))
        listening = listening_sockets()
    # sshd's privileged and unprivileged halves of the session, and the host
    assert [any(part in title for title in titles) for part in ("sshd: %s [priv]" % IN_USER, "sshd: %s@notty"
                                                                 % IN_USER, "clarens.stdio")] == [True] * 3, titles
    assert held, titles
    assert held & set(listening.values()) == set()
    assert socket_inodes(quiet.sshd) & set(listening.values()) == {listening[("tcp", "0100007F:%04X" % quiet.port)]}


def stdio(env, *args: str) -> subprocess.Popen:
    """clarens.stdio run directly (no ssh) as root, with the module's config and a database directory of its own."""
    db_dir = tempfile.mkdtemp(prefix="clarens-ssh-db-")
    return subprocess.Popen([PYTHON, "-m", "clarens.stdio", "--config", env.conf, "-o", "server.db_dir=" + db_dir,
                             *args], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def greeting(proc: subprocess.Popen) -> dict[str, str]:
    message = framing.read(proc.stdout, 1 << 20)
    assert message is not None, proc.stderr.read()
    headers, body = message
    assert body == b"" and headers["clarens"]
    return headers


@pytest.mark.parametrize("data, why", [
    (b"GET / HTTP/1.0\r\nHost: x\r\n\r\n", "a malformed header block: b'GET / HTTP/1.0'"),
    (b"Content-Type: application/json\r\n\r\n{}", "a message without a valid Content-Length"),
    (b"Content-Length: -1\r\n\r\n", "a message without a valid Content-Length"),
    (b"Content-Length: 99999999999999999999\r\n\r\n", "a message of 99999999999999999999 bytes, over the limit"),
    (b"X-Long: " + b"x" * 5000 + b"\r\n\r\n", "a header line longer than 1024 bytes"),
    (b"Content-Length: 10\r\n\r\n{}", "the stream ended inside a message body"),
    (b"Content-Length: 2\r\n", "the stream ended inside a header block"),
    (b"\x00\xff\xfe" * 400, "a header line longer than 1024 bytes"),
], ids=["http", "no-length", "negative-length", "huge-length", "long-line", "short-body", "cut-headers", "binary"])
def test_a_garbage_frame_ends_the_session(env, data, why):
    proc = stdio(env)
    greeting(proc)
    out, err = proc.communicate(data, timeout=WAIT)
    assert proc.returncode == 4 and out == b"", err.decode()
    assert "WARNING clarens: unix:root@local: %s" % why in err.decode(), err.decode()[-2000:]
    assert err.decode().rstrip().endswith("; closing the session")


def test_a_message_that_never_arrives_whole_ends_the_session(env):
    """Content-Length: 5 and no body, the client's end left open: once waited for forever."""
    proc = stdio(env, "--message-timeout", "2")
    greeting(proc)
    started = time.monotonic()
    proc.stdin.write(b"Content-Length: 5\r\n\r\n")
    proc.stdin.flush()
    assert proc.wait(timeout=WAIT) == 4 and time.monotonic() - started < 10
    assert "a message began but was not whole within 2 s; closing the session" in proc.stderr.read().decode()
    proc.stdin.close()


def test_an_idle_session_between_messages_is_not_cut(env):
    proc = stdio(env, "--message-timeout", "1")
    greeting(proc)
    time.sleep(2.5)
    framing.write(proc.stdin, json.dumps({"jsonrpc": "2.0", "method": "echo.echo", "params": [1], "id": 1}).encode())
    message = framing.read(proc.stdout, 1 << 20)
    assert message is not None and json.loads(message[1])["result"] == 1
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err


def test_bad_messages_are_answered_and_the_session_goes_on(env):
    proc = stdio(env)

    def exchange(body: bytes, content_type: str = framing.DEFAULT_TYPE) -> tuple[str, bytes]:
        framing.write(proc.stdin, body, content_type)
        message = framing.read(proc.stdout, 1 << 20)
        assert message is not None, proc.stderr.read()
        return message[0]["content-type"], message[1]
    try:
        greeting(proc)
        kind, body = exchange(b'{"jsonrpc": "2.0", "method": ')
        assert kind == "application/json" and json.loads(body)["error"]["code"] == faults.PARSE_ERROR
        kind, body = exchange(b"<methodCall><methodName>echo.echo</methodName><params>", "text/xml")
        with pytest.raises(xmlrpc.client.Fault) as info:
            xmlrpc.client.loads(body)
        assert kind.startswith("text/xml") and info.value.faultCode == faults.PARSE_ERROR
        kind, body = exchange(b"x=1", "application/x-www-form-urlencoded")
        assert kind == "application/json" and json.loads(body)["error"]["code"] == faults.INVALID_REQUEST
        kind, body = exchange(b"")
        assert json.loads(body)["error"]["code"] == faults.PARSE_ERROR
        kind, body = exchange(json.dumps({"jsonrpc": "2.0", "method": "system.whoami", "id": 7}).encode())
        answer = json.loads(body)
        assert answer["id"] == 7 and answer["result"]["identity"] == "unix:root"
        kind, body = exchange(xmlrpc.client.dumps(("ünï",), "echo.echo").encode(), "text/xml")
        assert xmlrpc.client.loads(body)[0] == ("ünï",)
        assert exchange(b'{"jsonrpc": "2.0", "method": "echo.echo", "params": [1]}')[1] == b""  # a notification
    finally:
        out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0 and out == b"", err


def test_a_client_with_many_open_files(quiet):
    """A process holding over 1023 descriptors (select's limit) still gets its answers."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), max(hard, 2048)))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        with quiet.connect(IN_USER) as svc:
            assert svc.echo.echo("many") == "many"
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
