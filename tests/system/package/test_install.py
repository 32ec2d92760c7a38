# SPDX-License-Identifier: Apache-2.0
"""The Debian package, installed the way an administrator would, on a fresh Debian 12 (``./run test-package``).

Builds the package (and the same tree as a newer version, for the upgrade),
makes a Debian 12 root with mmdebstrap (tests/system/package/chroot.py: its own PID,
mount and network namespaces), installs the package there with apt, and goes
through what docs/administration.md says: the service answers, the
policy and the drives are the documented choices, Basic users come from
clarens-admin, client certificates from the site clarens-ssl; then a burn with
verification, the ACL dump round trip, pool changes, an upgrade, a removal (and a
reinstall) and a purge.

The root has no init system, as a container or a chroot: invoke-rc.d may not start
or restart anything, so the maintainer scripts say what to run, and the tests run
exactly that (the reinstall is made with a policy-rc.d that allows it, as on a
host with an init system).  The burner helper runs from its init script, and once
started by hand, as clarens-burnerd(8) says: removal stops it either way.

The tests run in order and share the root; they are skipped unless
CLARENS_TEST_PACKAGE=1 (``./run test-package`` sets it: this takes minutes, and
it needs the network to Debian's archive).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat

import pytest

from clarens import cluster
from clarens.dev import devpki
from clarens.dev import package as packaging
from tests.helpers import ROOT, keep, wait_for
from tests.system.package import test_layout as layout
from tests.system.package.chroot import Root, base_tarball, mounts_under, processes_in

pytestmark = [
    pytest.mark.skipif(os.environ.get("CLARENS_TEST_PACKAGE") != "1",
                       reason="installs the package in a fresh Debian root: ./run test-package"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, chroot, apt)"),
]

STATE = os.path.join(ROOT, ".state", "package-test")
WAIT = 120.0                                         # seconds a polling wait may take before the test fails
ORG = "/C=UK/O=Clarens Package Test"
USER_DN, ADMIN_DN = ORG + "/CN=Test User", ORG + "/CN=Test Administrator"
HTTP, HTTPS = "http://127.0.0.1/clarens/", "https://localhost/clarens/"
PKI = "/root/pki"                                    # the clients' certificates, in the root
ALICE_PASSWORD = "correct horse battery staple"
LOCAL_ACL = """\
# The site's own policy (docs/administration.md): who may burn, who administers.
<Group admins>
    Member %s
</Group>

<Group users>
    Member alice
    Member %s
</Group>

<Acl burner>
    AllowGroup users
    AllowGroup admins
</Acl>
""" % (ADMIN_DN, USER_DN)
TEST_DRIVE = """
# Added by the package test: a stdio: drive, a file standing in for the disc.
[drive:test0]
dev = stdio:/var/lib/clarens-burner/test0.disc
capacity_mb = 100
"""
# Decisions of the live policy, for every identity and method below, as the host decides them.
DECISIONS = """\
import json, logging
from clarens.acl import store
from clarens.db import open_db
from clarens.identity import ANONYMOUS, Identity
guard = store.Guard(open_db("/var/lib/clarens/acl.tdb"), logging.getLogger("test"))
who = [ANONYMOUS] + [Identity(n, "test") for n in %r]
methods = %r
print(json.dumps({"%%s %%s" %% (w.name, m): guard.decide(guard.identify(w), m).allowed for w in who for m in methods}))
""" % (["alice", "bob", "carol", USER_DN, ADMIN_DN],
       ["system.whoami", "echo.echo", "burner.burn", "acl.audit", "acl.show", "validator1.easyStructTest"])

# Where the package's Python code is installed, and where an administrator's service modules go.
INSTALLED_CODE = ("/usr/lib/python3/dist-packages/clarens", "/usr/share/clarens")
LOCAL_MODULES = "/usr/local/lib/clarens/modules"
# The Python files under the directories given that have no byte-compiled copy Python uses instead
# of compiling the source (as importlib's SourceLoader decides), with why, and how many there are.
# Apache's user cannot write __pycache__ there: without one, each child compiles the file at its start.
BYTECODE = """\
import json, os, stat, sys
from importlib.util import MAGIC_NUMBER, cache_from_source, source_hash

def why_not(source):
    compiled = cache_from_source(source)
    try:
        with open(compiled, "rb") as f:
            head = f.read(16)
        mode = os.stat(compiled).st_mode & os.stat(os.path.dirname(compiled)).st_mode
    except OSError:
        return "no bytecode"
    if head[:4] != MAGIC_NUMBER:
        return "another Python's bytecode"
    if not mode & stat.S_IROTH:
        return "bytecode Apache's user cannot read"
    flags = int.from_bytes(head[4:8], "little")
    if flags == 0:                                   # checked by the source's time and size
        st = os.stat(source)
        current = head[8:16] == ((int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
                                 + (st.st_size & 0xFFFFFFFF).to_bytes(4, "little"))
    elif flags == 3:                                 # checked by the source's hash
        with open(source, "rb") as f:
            current = head[8:16] == source_hash(f.read())
    else:
        return "bytecode never checked against its source"
    return None if current else "stale bytecode"

sources, missing = 0, {}
for top in sys.argv[1:]:
    for directory, _, names in os.walk(top):
        for name in names:
            if name.endswith(".py"):
                sources += 1
                reason = why_not(os.path.join(directory, name))
                if reason:
                    missing[os.path.join(directory, name)] = reason
print(json.dumps({"sources": sources, "missing": missing}))
"""
# A service module of the administrator's own (docs/modules.md).
LOCAL_MODULE = '''"""A site's own service module."""

def hello(name):
    """A greeting for name."""
    return "hello, %s" % name

methods_list = {"hello": hello}
methods_sig = {"hello": ["string,string"]}
'''


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def debs():
    """The package as debian/changelog says, and the same tree one version later."""
    os.makedirs(STATE, exist_ok=True)
    old = packaging.changelog_version()
    new = old + "+1"
    return {"old": old, "new": new, old: packaging.build(out=STATE), new: packaging.build(new, out=STATE)}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A test CA (its key stays here), the server's certificate and the clients'."""
    d = str(tmp_path_factory.mktemp("pki"))
    devpki.make_ca(d, subject=ORG + "/CN=Test CA")
    devpki.issue(d, "server", "/CN=localhost", "serverAuth", alt_names="DNS:localhost,IP:127.0.0.1")
    devpki.issue(d, "user", USER_DN)
    devpki.issue(d, "admin", ADMIN_DN)
    devpki.issue(d, "outsider", "/C=UK/O=Elsewhere/CN=Eve")     # same CA, not the site's organisation
    return d


@pytest.fixture(scope="module")
def root(request):
    """A fresh Debian 12 root; at the end every process in it is stopped and its mounts are gone.
    It is removed when every test passed, and kept for a look otherwise."""
    r = Root(os.path.join(STATE, "root"), base_tarball(STATE), os.path.join(STATE, "apt-archives"))
    r.create()
    failed = request.session.testsfailed
    try:
        yield r
    finally:
        r.run(["apache2ctl", "stop"], check=False, timeout=60)
        r.destroy()
        assert processes_in(r.path) == [] and mounts_under(r.path) == []
        if request.session.testsfailed == failed:
            shutil.rmtree(r.path)
        else:
            keep(r.path, "the Debian root of the failed install test")


# -- helpers --------------------------------------------------------------------------------


def tail(r: Root, path: str, lines: int = 30) -> str:
    try:
        with open(r.file(path), errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no %s)" % path


def clarens(r: Root, *args: str, cwd: str = "/tmp", env: dict[str, str] | None = None):
    """The installed client command line, in the root."""
    return r.run(["clarens", *args], check=False, cwd=cwd, env=env)


def call(r: Root, url: str, method: str, *params, auth: tuple[str, ...] = ()):
    """The result of a call made with the installed ``clarens`` (AssertionError on a fault)."""
    out = clarens(r, *auth, "call", url, method, *(json.dumps(p) for p in params),
                  env={"CLARENS_PASSWORD": ALICE_PASSWORD})
    assert out.returncode == 0, "%s %s: %s\n%s" % (method, auth, out.stderr, tail(r, "/var/log/apache2/error.log"))
    return json.loads(out.stdout)


def cert(name: str) -> tuple[str, ...]:
    return ("--cert", "%s/%s.crt" % (PKI, name), "--key", "%s/%s.key" % (PKI, name), "--ca", PKI + "/ca.crt")


ALICE = ("--user", "alice", "--ca", PKI + "/ca.crt")


def serving(r: Root, url: str = HTTP, **kwargs) -> dict:
    """Wait until Apache answers at ``url``; its system.serverInfo."""
    def probe():
        out = clarens(r, *kwargs.get("auth", ()), "call", url, "system.serverInfo")
        return json.loads(out.stdout) if out.returncode == 0 else None
    return wait_for("Apache at %s" % url, probe, WAIT)


def http_get(r: Root, url: str, headers: dict[str, str] | None = None) -> dict:
    """Status, type and body of a GET made in the root."""
    script = ("import json, sys, urllib.request, urllib.error\n"
              "req = urllib.request.Request(sys.argv[1], headers=json.loads(sys.argv[2]))\n"
              "try:\n    resp = urllib.request.urlopen(req, timeout=30)\n"
              "except urllib.error.HTTPError as e:\n    resp = e\n"
              "print(json.dumps({'status': resp.status, 'type': resp.headers.get('Content-Type'),"
              " 'body': resp.read().decode('utf-8', 'replace')}))\n")
    return json.loads(r.run(["python3", "-c", script, url, json.dumps(headers or {})]).stdout)


def mode_of(r: Root, path: str) -> tuple[str, str, int]:
    """(owner, group, permission bits) of the root's ``path``, by the root's own user names."""
    st = os.lstat(r.file(path))
    owner = r.run(["getent", "passwd", str(st.st_uid)]).stdout.split(":")[0]
    group = r.run(["getent", "group", str(st.st_gid)]).stdout.split(":")[0]
    return owner, group, stat.S_IMODE(st.st_mode) | (stat.S_ISGID & st.st_mode)


def apt_install(r: Root, deb: str, step: str) -> str:
    """``apt-get install ./clarens_*.deb`` in the root: dependencies downloaded in this machine's
    network, the installation itself in the root's own.  Its output (also kept in STATE/STEP.log)."""
    shutil.copy(deb, r.file("/root/"))
    local = "/root/" + os.path.basename(deb)
    r.run(["apt-get", "install", "-y", "--download-only", local], net=False)
    out = r.run(["apt-get", "install", "-y", local])          # from the cache: there is no network in here
    with open(os.path.join(STATE, "%s.log" % step), "w") as f:
        f.write(out.stdout + out.stderr)
    return out.stdout + out.stderr


def printed_commands(output: str) -> list[str]:
    """The commands the maintainer scripts said to run, in order ("...run:  COMMAND")."""
    return [line.split("run:  ", 1)[1].strip() for line in output.splitlines() if "run:  " in line]


def run_printed(r: Root, output: str, expected: list[str]) -> None:
    """Check that the maintainer scripts asked for exactly ``expected``, and run it in the root."""
    assert printed_commands(output) == expected, output
    for command in expected:
        r.run(command.split())


def processes_named(r: Root, name: str) -> list[int]:
    """The processes in the root (their pids here) whose command name is ``name``."""
    found = []
    for pid in processes_in(r.path):
        try:
            with open("/proc/%d/comm" % pid) as f:
                if f.read().strip() == name:
                    found.append(pid)
        except OSError:
            pass
    return found


def helpers(r: Root) -> list[int]:
    """The burner helpers running in the root, however they were started (they go by this name)."""
    return processes_named(r, "clarens-burnerd")


def helper_status(r: Root) -> dict | None:
    out = r.run(["clarens-burnerd", "status", "--json"], check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def apache_parent(r: Root) -> str:
    with open(r.file("/run/apache2/apache2.pid")) as f:
        return f.read().strip()


def allow_services(r: Root, allowed: bool) -> None:
    """A policy-rc.d that lets maintainer scripts start and restart services (as on a host with an
    init system), or none: the root then has no init system, and invoke-rc.d may not."""
    path = r.file("/usr/sbin/policy-rc.d")
    if allowed:
        with open(path, "w") as f:
            f.write("#!/bin/sh\nexit 0\n")
        os.chmod(path, 0o755)
    elif os.path.exists(path):
        os.unlink(path)


def uncompiled(r: Root, *directories: str) -> dict[str, str]:
    """The Python files under the root's ``directories`` that Python would compile from source
    (no byte-compiled copy it uses), with why; AssertionError if there are none to look at."""
    found = json.loads(r.run(["python3", "-c", BYTECODE, *directories]).stdout)
    assert found["sources"] > 0, directories
    return found["missing"]


def pycache_under(r: Root, directory: str) -> list[str]:
    return r.run(["find", directory, "-name", "__pycache__"]).stdout.split()


def md5(r: Root, path: str) -> str:
    with open(r.file(path), "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


# -- the tests, in order --------------------------------------------------------------------


def test_lintian_finds_no_error_and_no_warning(debs):
    """Warnings that stay are overridden, each with its reason (debian/clarens.lintian-overrides)."""
    passed, findings = packaging.lintian(debs[debs["old"]])
    assert passed, findings
    assert not [line for line in findings.splitlines() if line.startswith(("E:", "W:"))], findings


def test_install_without_an_init_system_says_what_to_run(root, debs):
    r = root
    # What the installer writes and mmdebstrap does not: names for the loopback and this host.
    with open(r.file("/etc/hosts"), "w") as f:
        f.write("127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                % socket.gethostname())
    r.run(["apt-get", "update", "-q"], net=False)
    allow_services(r, False)
    output = apt_install(r, debs[debs["old"]], "install")

    # Apache: prefork (switched, with the reason), the modules, the configuration, a passing configtest;
    # every change to the whole Apache is listed.
    assert "it was event; to undo: a2disconf clarens" in output and "mod_python needs it" in output, output
    for change in layout.SERVER_WIDE_CHANGES:
        assert change in output, change
    assert r.run(["a2query", "-M"]).stdout.strip() == "prefork"
    for module in ("python", "headers", "reqtimeout"):
        assert r.run(["a2query", "-m", module], check=False).returncode == 0, module
    assert r.run(["a2query", "-c", "clarens"], check=False).returncode == 0
    assert "Syntax OK" in r.run(["apache2ctl", "configtest"]).stderr
    # Nothing could be started: the scripts say what to run, and that is what makes it serve.
    assert processes_named(r, "apache2") == [] and helpers(r) == []
    run_printed(r, output, ["service apache2 restart", "service clarens-burnerd start"])
    info = serving(r)
    assert info["framework_version"] == debs["old"]
    # No bytecode ships; all of the code is byte-compiled at install, so that no Apache child compiles any.
    assert not [path for path in r.run(["dpkg", "-L", "clarens"]).stdout.split() if "__pycache__" in path]
    assert uncompiled(r, *INSTALLED_CODE) == {}

    # Configuration in /etc/clarens, as conffiles: production defaults, no demo identities.  The
    # settings generated for this machine are not a conffile: they are what clarens-admin writes.
    conffiles = r.run(["dpkg-query", "-W", "-f", "${Conffiles}", "clarens"]).stdout
    for path in ("/etc/clarens/clarens.conf", "/etc/clarens/burnerd.conf", "/etc/clarens/client.conf",
                 "/etc/clarens/acl/00-defaults.acl", "/etc/apache2/conf-available/clarens.conf",
                 "/etc/apache2/sites-available/clarens-ssl.conf", "/etc/init.d/clarens-burnerd",
                 "/etc/logrotate.d/clarens"):
        assert path + " " in conffiles, path
    assert "/etc/clarens/apache-generated.conf" not in conffiles
    with open(r.file("/etc/clarens/apache-generated.conf")) as f:
        assert f.read() == r.run(["clarens-admin", "apache-conf", "--print"]).stdout
    assert mode_of(r, "/etc/clarens/apache-generated.conf") == ("root", "root", 0o644)
    assert sorted(os.listdir(r.file("/etc/clarens/acl"))) == ["00-defaults.acl"]
    for name in ("clarens.conf", "burnerd.conf", "client.conf", "acl/00-defaults.acl"):
        with open(r.file("/etc/clarens/" + name)) as f:
            text = f.read()
        assert "Clarens Demo" not in text and "\nMember admin" not in text, name
    with open(r.file("/etc/clarens/burnerd.conf")) as f:
        assert "\n[drive:" not in f.read()                      # no drive but commented examples

    # The helper, from its init script: its own user, its log in /var/log/clarens.
    assert "is running" in r.run(["service", "clarens-burnerd", "status"]).stdout
    [pid] = helpers(r)
    with open("/proc/%d/status" % pid) as f:
        uid = next(line.split()[1] for line in f if line.startswith("Uid:"))
    assert uid == r.run(["id", "-u", "clarens-burner"]).stdout.strip()
    assert mode_of(r, "/var/log/clarens") == ("root", "adm", 0o750)
    with open(r.file("/var/log/clarens/burnerd.log")) as f:
        assert "listening on /run/clarens-burner/burnerd.sock" in f.read()
    assert helper_status(r)["drives"] == []

    # State and users.
    assert mode_of(r, "/var/lib/clarens") == ("www-data", "www-data", 0o700)
    assert mode_of(r, "/var/lib/clarens-burner") == ("clarens-burner", "clarens-burner", 0o700)
    assert mode_of(r, "/srv/clarens/images") == ("www-data", "clarens-burner", 0o2750)
    assert mode_of(r, "/etc/clarens/htpasswd") == ("root", "www-data", 0o640)
    assert "cdrom" in r.run(["id", "-nG", "clarens-burner"]).stdout.split()
    # The socket-activated helper is enabled for systemd (there is none in here to start it).
    assert os.path.islink(r.file("/etc/systemd/system/sockets.target.wants/clarens-burnerd.socket"))

    # It answers: an RPC call with the installed command line, from any directory, and the page.
    assert call(r, HTTP, "system.whoami")["identity"] == "anonymous"
    assert call(r, HTTP, "echo.echo", ["ünï", 7])  == ["ünï", 7]
    page = http_get(r, HTTP)
    assert page["status"] == 200 and page["type"].startswith("text/html")
    assert "system.listMethods" in page["body"] and "burner.burn" in page["body"]
    denied = clarens(r, "call", HTTP, "burner.drives")
    assert denied.returncode == 1 and "-32001" in denied.stderr        # the burner is not for anonymous callers
    assert "OK" in r.run(["clarens-acl", "validate"], cwd="/tmp").stdout


def test_basic_users_and_client_certificates_over_https(root, pki):
    r = root
    add = r.run(["clarens-admin", "user", "add", "alice", "--password-stdin"], input=ALICE_PASSWORD + "\n")
    assert "added alice" in add.stdout
    assert r.run(["clarens-admin", "user", "list"]).stdout.split() == ["alice"]
    assert mode_of(r, "/etc/clarens/htpasswd") == ("root", "www-data", 0o640)
    # A password over plain HTTP is refused, and says why.
    plain = http_get(r, HTTP, {"Authorization": "Basic YWxpY2U6eA=="})
    assert plain["status"] == 403 and "https only" in plain["body"]

    # The documented choices: the policy, the certificate restriction, TLS.
    with open(r.file("/etc/clarens/acl/50-local.acl"), "w") as f:
        f.write(LOCAL_ACL)
    conf = r.file("/etc/clarens/clarens.conf")
    with open(conf) as f:
        text = f.read()
    assert "\n[certificate]\n" in text
    with open(conf, "w") as f:
        f.write(text.replace("\n[certificate]\n", "\n[certificate]\nO = Clarens Package Test\n", 1))
    os.makedirs(r.file(PKI), exist_ok=True)
    for name in ("ca.crt", "user.crt", "user.key", "admin.crt", "admin.key", "outsider.crt", "outsider.key"):
        shutil.copy(os.path.join(pki, name), r.file(PKI))
    shutil.copy(os.path.join(pki, "server.crt"), r.file("/etc/clarens/tls/server.crt"))
    shutil.copy(os.path.join(pki, "server.key"), r.file("/etc/clarens/tls/server.key"))
    os.chmod(r.file("/etc/clarens/tls/server.key"), 0o600)
    shutil.copy(os.path.join(pki, "ca.crt"), r.file("/etc/clarens/tls/client-ca.crt"))
    assert "OK" in r.run(["clarens-acl", "validate"]).stdout
    # None of these changes the generated settings: nothing to redo.
    assert "is up to date" in r.run(["clarens-admin", "apache-conf"]).stdout
    r.run(["a2enmod", "ssl"])
    r.run(["a2ensite", "clarens-ssl"])
    assert "Syntax OK" in r.run(["apache2ctl", "configtest"]).stderr
    r.run(["service", "apache2", "restart"])
    serving(r, HTTPS, auth=("--ca", PKI + "/ca.crt"))

    me = call(r, HTTPS, "system.whoami", auth=ALICE)
    assert (me["identity"], me["authenticated"], me["groups"]) == ("alice", True, ["users"]), me
    assert call(r, HTTPS, "burner.drives", auth=ALICE) == []          # allowed; the helper has no drive yet
    wrong = clarens(r, *ALICE, "call", HTTPS, "system.whoami",           # without alice's session, kept by now
                    env={"CLARENS_PASSWORD": "wrong", "XDG_CACHE_HOME": "/tmp/no-session-kept"})
    assert wrong.returncode != 0

    me = call(r, HTTPS, "system.whoami", auth=cert("user"))
    assert (me["identity"], me["groups"]) == (USER_DN, ["users"]), me
    outsider = clarens(r, *cert("outsider"), "call", HTTPS, "system.whoami")
    assert outsider.returncode == 1 and "credentials refused" in outsider.stderr


def test_the_cluster_tools_work_from_the_package(root):
    """docs/scaling.md, followed on an installed host: HAProxy's configuration rendered from the
    package's template, the digests a front end expects equal to what the host reports, and
    the drive-host tunnel's unit and the deployment examples where the documentation says."""
    r = root
    servers = [arg for name, address in cluster.EXAMPLE_SERVERS for arg in ("--server", "%s=%s" % (name, address))]
    rendered = r.run(["python3", "-m", "clarens.cluster", "haproxy", *servers, "--maxconn", "20000"],
                     cwd="/tmp").stdout
    with open(os.path.join(ROOT, "conf", "haproxy", "clarens.cfg")) as f:
        assert rendered == f.read()

    expected = dict(line.split("=", 1) for line in r.run(
        ["python3", "-m", "clarens.cluster", "digest", "--env"], cwd="/tmp").stdout.split())
    health = http_get(r, HTTP + "health", {"X-Clarens-Expect-Policy": expected["CLARENS_POLICY_DIGEST"],
                                           "X-Clarens-Expect-Modules": expected["CLARENS_MODULES_DIGEST"],
                                           "X-Clarens-Expect-Trust": expected["CLARENS_TRUST_DIGEST"]})
    assert health["status"] == 200, health
    reported = json.loads(health["body"])
    assert (reported["policy_digest"], reported["modules_digest"], reported["trust_digest"]) == (
        expected["CLARENS_POLICY_DIGEST"], expected["CLARENS_MODULES_DIGEST"], expected["CLARENS_TRUST_DIGEST"])
    assert r.run(["python3", "-m", "clarens.cluster", "check", HTTP], cwd="/tmp", check=False).returncode == 0

    # A template unit, enabled per drive host by the administrator, never by the package.
    assert os.path.isfile(r.file("/lib/systemd/system/clarens-drive-host@.service"))
    assert not [name for name in os.listdir(r.file("/etc/systemd/system")) if "drive-host" in name]
    with open(r.file("/lib/systemd/system/clarens-drive-host@.service")) as f:
        documentation = next(line for line in f if line.startswith("Documentation="))
    assert os.path.isfile(r.file(documentation.split("file://", 1)[1].strip()))
    for example in ("haproxy/clarens.cfg", "cluster/deploy-policy.sh", "cluster/deploy-policy.yml",
                    "cluster/cluster.conf", "drive-hosts/ssh_config.example", "drive-hosts/sshd_config.example"):
        assert os.path.isfile(r.file("/usr/share/doc/clarens/examples/" + example)), example


def test_burn_with_verification_through_the_helper_of_the_init_script(root):
    r = root
    with open(r.file("/etc/clarens/burnerd.conf"), "a") as f:
        f.write(TEST_DRIVE)
    before = helpers(r)
    r.run(["service", "clarens-burnerd", "restart"])          # docs/administration.md: after adding a drive
    report = wait_for("the burner helper", lambda: helper_status(r), 60)
    assert [d["name"] for d in report["drives"]] == ["test0"]
    assert len(helpers(r)) == 1 and helpers(r) != before                # a new helper (pids as seen here)
    proc = dict(line.split(":\t", 1) for line in r.run(["cat", "/proc/%d/status" % report["status"]["pid"]])
                .stdout.splitlines() if ":\t" in line)
    uid = r.run(["id", "-u", "clarens-burner"]).stdout.strip()
    assert proc["Uid"].split() == [uid] * 4 and proc["NoNewPrivs"].strip() == "1"
    assert mode_of(r, "/run/clarens-burner/burnerd.sock") == ("clarens-burner", "www-data", 0o660)
    assert mode_of(r, "/run/clarens-burner") == ("clarens-burner", "www-data", 0o710)
    # Its log is rotated by logrotate (which an administrator installs; the package does not need it).
    r.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "--download-only", "logrotate"], net=False)
    r.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "logrotate"])
    r.run(["logrotate", "--force", "/etc/logrotate.d/clarens"])
    with open(r.file("/var/log/clarens/burnerd.log.1")) as f:
        assert "drives test0" in f.read()

    r.run(["xorriso", "-as", "mkisofs", "-R", "-o", "/root/test.iso", "/usr/share/doc/clarens"])
    assert os.path.isfile(r.file("/usr/share/man/man1/clarens-burn.1.gz"))
    out = r.run(["clarens-burn", "burn", "/root/test.iso", "--drive", "test0", "--url", HTTPS, *ALICE],
                env={"CLARENS_PASSWORD": ALICE_PASSWORD}, cwd="/tmp", check=False)
    assert out.returncode == 0, out.stdout + out.stderr + tail(r, "/var/log/apache2/error.log")
    with open(r.file("/root/test.iso"), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert digest in out.stdout
    assert mode_of(r, "/srv/clarens/images/test.iso")[:2] == ("www-data", "clarens-burner")
    assert mode_of(r, "/var/lib/clarens-burner/test0.disc")[0] == "clarens-burner"
    jobs = call(r, HTTPS, "burner.jobs", auth=ALICE)
    assert [(j["state"], j["verification"]["match"]) for j in jobs] == [("done", True)]
    with open(r.file("/var/log/clarens/burnerd.log")) as f:           # the rotated log goes on
        assert "job %d" % jobs[0]["id"] in f.read()


def decisions(r: Root) -> dict[str, bool]:
    return json.loads(r.run(["python3", "-c", DECISIONS]).stdout)


def loads(r: Root) -> int:
    """How many times the ACL files were loaded into the live policy (server starts, reloads)."""
    out = r.run(["clarens-acl", "audit", "1000"]).stdout
    return sum(1 for line in out.splitlines() if '"action": "load"' in line)


def test_acl_dump_keeps_live_changes_through_a_graceful_restart(root):
    r = root
    admin = cert("admin")
    call(r, HTTPS, "acl.set_group", "users", ["alice", USER_DN, "bob"], auth=admin)
    call(r, HTTPS, "acl.set_group", "auditors", ["carol"], auth=admin)
    call(r, HTTPS, "acl.set_entry", "acl.audit", {"allow_groups": ["auditors"]}, auth=admin)
    call(r, HTTPS, "acl.set_entry", "validator1", {"allow": ["authenticated"]}, auth=admin)
    before = decisions(r)
    assert before["bob burner.burn"] and before["carol acl.audit"] and not before["carol acl.show"]
    assert not before["anonymous validator1.easyStructTest"] and before["carol validator1.easyStructTest"]

    out = r.run(["clarens-acl", "dump", "--output", "/etc/clarens/acl/90-live.acl"], cwd="/tmp")
    assert "wrote /etc/clarens/acl/90-live.acl" in out.stderr
    assert "OK" in r.run(["clarens-acl", "validate"]).stdout
    assert r.run(["clarens-acl", "check", "carol", "acl.audit"], check=False).returncode == 0
    loaded = loads(r)
    r.run(["apache2ctl", "graceful"])
    wait_for("the files to be loaded at the graceful restart", lambda: loads(r) > loaded, WAIT)
    assert decisions(r) == before
    again = r.run(["clarens-acl", "dump"]).stdout                 # the files now hold it all
    assert "<Acl" not in again and "<Group" not in again
    shown = r.run(["clarens-acl", "show"]).stdout
    assert "group auditors" in shown and "90-live.acl" in shown
    assert "loaded" in r.run(["clarens-acl", "reload"]).stdout and decisions(r) == before

    # A file changed: until it is loaded, check answers from the live policy and says the files differ;
    # clarens-acl reload loads them, and check answers from them at once (no restart to wait for).
    with open(r.file("/etc/clarens/acl/60-dave.acl"), "w") as f:
        f.write("<Group users>\n    Member dave\n</Group>\n")
    stale = r.run(["clarens-acl", "check", "dave", "burner.burn"], check=False)
    assert stale.returncode == 1 and "clarens-acl reload" in stale.stderr, stale.stdout + stale.stderr
    r.run(["clarens-acl", "reload"])
    fresh = r.run(["clarens-acl", "check", "dave", "burner.burn"], check=False)
    assert fresh.returncode == 0 and fresh.stdout.startswith("ALLOW") and fresh.stderr == "", fresh.stderr
    os.unlink(r.file("/etc/clarens/acl/60-dave.acl"))
    r.run(["clarens-acl", "reload"])


def test_pool_changes_apply_with_the_restart_they_need(root):
    """clarens-admin apache-conf after a change of the pool in clarens.conf: a graceful restart when the
    pool grows within ServerLimit, a full one when ServerLimit changes (a graceful restart cannot change
    it: AH00179) or MaxRequestWorkers goes down (after a graceful restart Apache loses track of the old
    children beyond it: "long lost child came home")."""
    r = root
    conf = r.file("/etc/clarens/clarens.conf")
    with open(conf) as f:
        original = f.read()

    def pool(workers: str, spare: str) -> str:
        with open(conf, "w") as f:
            f.write(original.replace("\nworkers = auto\nspare_workers = auto\n",
                                     "\nworkers = %s\nspare_workers = %s\n" % (workers, spare), 1))
        return r.run(["clarens-admin", "apache-conf"]).stdout

    parent, log_mark = apache_parent(r), os.path.getsize(r.file("/var/log/apache2/error.log"))
    out = pool("200", "3")                      # from auto (512 and ServerLimit 512 on a big machine)
    assert "apache2: restarted" in out, out     # fully where ServerLimit went down to its floor
    serving(r)
    parent = apache_parent(r)
    out = pool("40", "3")                       # fewer workers, the same ServerLimit: a full restart
    assert "MaxRequestWorkers went down: a full restart applies it" in out and "apache2: restarted\n" in out
    serving(r)
    assert apache_parent(r) != parent
    # The new pool: the idle processes settle between 3 and 6.
    wait_for("3 to 6 idle children", lambda: 3 <= len(processes_named(r, "apache2")) - 1 <= 6, WAIT)
    parent = apache_parent(r)
    out = pool("60", "3")                       # more: a graceful restart does
    assert "apache2: restarted gracefully" in out and apache_parent(r) == parent
    out = pool("300", "3")
    assert "ServerLimit changed: a full restart applies it" in out and "apache2: restarted\n" in out
    serving(r)
    assert apache_parent(r) != parent
    with open(r.file("/etc/clarens/apache-generated.conf")) as f:
        assert "ServerLimit 300\n" in f.read()
    with open(conf, "w") as f:
        f.write(original)
    assert "apache2: restarted\n" in r.run(["clarens-admin", "apache-conf"]).stdout    # 300 -> 256: full again
    serving(r)
    with open(r.file("/var/log/apache2/error.log")) as f:
        f.seek(log_mark)
        log = f.read()
    assert "AH00179" not in log and "long lost child" not in log, log


def memory_cgroup(limit: int) -> str | None:
    """A memory cgroup (v1) of ``limit`` bytes under this process's own, or None where there is none to make."""
    try:
        with open("/proc/self/cgroup") as f:
            own = next(line.split(":", 2)[2].strip() for line in f if line.split(":")[1] == "memory")
        path = os.path.join("/sys/fs/cgroup/memory", own.lstrip("/"), "clarens-package-test")
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "memory.limit_in_bytes"), "w") as f:
            f.write(str(limit))
        return path
    except (OSError, StopIteration):
        return None


def apache_memory(r: Root) -> tuple[int, float, float]:
    """How many Apache processes run in the root, and the sum of their PSS and RSS, in MB."""
    pss = rss = count = 0
    for pid in processes_named(r, "apache2"):
        try:
            with open("/proc/%d/smaps_rollup" % pid) as f:
                fields = dict(line.split(":", 1) for line in f if line[0].isupper())
        except OSError:                     # it has just exited (prefork trims its idle processes)
            continue
        pss, rss, count = pss + int(fields["Pss"].split()[0]), rss + int(fields["Rss"].split()[0]), count + 1
    return count, pss / 1024, rss / 1024


BURST = """\
import socket, time
held = [socket.create_connection(("127.0.0.1", 80)) for _ in range(30)]
for s in held:
    s.sendall(b"GET /clarens/ HTTP/1.1\\r\\nHost: localhost\\r\\n")
time.sleep(3)
for s in held:
    s.sendall(b"\\r\\n")
    s.recv(100)
    s.close()
"""


def test_on_a_1_gb_machine_the_idle_apache_stays_under_256_mb_pss(root):
    """The pool sized for a machine of 1 GB, measured: Apache started in a memory cgroup of 1 GB (the
    sizing reads the cgroup's limit, as in a container), idle after its start and after a burst of
    30 connections.  PSS counts the pages its processes share once; RSS (reported) counts them in each."""
    r = root
    cgroup = memory_cgroup(1 << 30)
    if cgroup is None:
        pytest.skip("no memory cgroup to make here")
    os.makedirs(r.file("/sys/fs/cgroup"), exist_ok=True)
    r.host(["mount", "--rbind", "/sys/fs/cgroup", r.file("/sys/fs/cgroup")], net=False)
    in_cgroup = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup]
    figures = []
    try:
        r.run(["service", "apache2", "stop"])
        r.run(in_cgroup + ["clarens-admin", "apache-conf", "--no-restart"])
        with open(r.file("/etc/clarens/apache-generated.conf")) as f:
            generated = f.read()
        assert "(auto on 2 cores, 1024 MB" in generated or "(auto on 1 core, 1024 MB" in generated, generated
        assert "StartServers 7\n" in generated and "MaxSpareServers 14\n" in generated
        r.run(in_cgroup + ["service", "apache2", "start"])
        serving(r)
        wait_for("8 Apache processes", lambda: apache_memory(r)[0] == 8, WAIT)
        figures.append(("after its start",) + apache_memory(r))
        r.run(["python3", "-c", BURST])
        wait_for("at most 15 Apache processes", lambda: apache_memory(r)[0] <= 15, WAIT)
        figures.append(("after a burst of 30",) + apache_memory(r))
    finally:
        r.run(["service", "apache2", "stop"], check=False)
        r.run(["clarens-admin", "apache-conf", "--no-restart"])
        r.run(["service", "apache2", "start"])
        r.host(["umount", "--recursive", r.file("/sys/fs/cgroup")], net=False)
        os.rmdir(cgroup)
    report = "\n".join("idle %s: %d processes, PSS %.1f MB, RSS %.1f MB" % f for f in figures)
    with open(os.path.join(STATE, "memory-1gb.txt"), "w") as f:
        f.write(report + "\n")
    print("\n" + report)
    assert all(pss < 256 for _, _, pss, _ in figures), report
    serving(r)


def test_upgrade_without_an_init_system_keeps_conffiles_and_state_and_says_what_to_run(root, debs):
    r = root
    kept = ("/etc/clarens/clarens.conf", "/etc/clarens/burnerd.conf", "/etc/clarens/acl/50-local.acl",
            "/etc/clarens/acl/90-live.acl", "/etc/clarens/htpasswd", "/etc/clarens/tls/server.key",
            "/var/lib/clarens/acl.tdb", "/srv/clarens/images/test.iso")
    before = {path: md5(r, path) for path in kept if not path.endswith(".tdb")}
    parent, [helper] = apache_parent(r), helpers(r)
    # A module of the administrator's own, not byte-compiled: Apache's children say so (once per server
    # start, not once each) with the command that does it.  The upgrade compiles it with the package's code.
    os.makedirs(r.file(LOCAL_MODULES + "/hello"))
    with open(r.file(LOCAL_MODULES + "/hello/__init__.py"), "w") as f:
        f.write(LOCAL_MODULE)
    r.run(["apache2ctl", "graceful"])
    warning = "as their owner, run: python3 -m compileall -q %s/hello" % LOCAL_MODULES
    wait_for("the children's word on the uncompiled module",
             lambda: warning in tail(r, "/var/log/apache2/error.log", 200), WAIT)
    output = apt_install(r, debs[debs["new"]], "upgrade")
    assert "Setting up clarens (%s)" % debs["new"] in output, output
    assert r.run(["dpkg-query", "-W", "-f", "${Version}", "clarens"]).stdout == debs["new"]
    assert {path: md5(r, path) for path in before} == before and os.path.exists(r.file("/var/lib/clarens/acl.tdb"))
    # The new version's code compiled, none of the old version's bytecode kept (clarens/__init__.py,
    # stamped with the version, differs), and the administrator's module compiled too.
    assert uncompiled(r, *INSTALLED_CODE) == {}
    assert uncompiled(r, LOCAL_MODULES) == {}
    # The helper of the old version was stopped; nothing could start the new one, or reload Apache.
    assert helper not in helpers(r) and helpers(r) == []
    run_printed(r, output, ["service apache2 reload", "service clarens-burnerd start"])
    # A graceful restart: the same parent, children of the new code.
    wait_for("children of the new version", lambda: serving(r)["framework_version"] == debs["new"], WAIT)
    assert apache_parent(r) == parent
    assert helper_status(r)["status"]["version"] == debs["new"]
    assert call(r, HTTPS, "system.whoami", auth=cert("user"))["identity"] == USER_DN
    assert [j["state"] for j in call(r, HTTPS, "burner.jobs", auth=ALICE)] == ["done"]
    assert call(r, HTTPS, "hello.hello", "admin", auth=cert("admin")) == "hello, admin"
    with open(r.file("/var/log/apache2/error.log")) as f:
        assert f.read().count(warning) == 1                          # none since it was compiled


def test_remove_stops_a_helper_started_by_hand_and_keeps_the_state(root, debs):
    r = root
    # The helper as clarens-burnerd(8) says to run it without systemd: as root, in the foreground.
    r.run(["service", "clarens-burnerd", "stop"])
    assert helpers(r) == []
    log = os.path.join(STATE, "burnerd-by-hand.log")
    if os.path.exists(log):
        os.unlink(log)
    by_hand = r.spawn(["clarens-burnerd"], log)
    wait_for("the helper started by hand", lambda: helper_status(r), 60)

    removed = r.run(["apt-get", "remove", "-y", "clarens"])
    output = removed.stdout + removed.stderr
    assert by_hand.wait(60) == 0 and helpers(r) == []
    assert not os.path.lexists(r.file("/run/clarens-burner/burnerd.sock"))   # the helper removed it
    assert r.run(["dpkg-query", "-W", "-f", "${db:Status-Status}", "clarens"]).stdout == "config-files"
    for path in ("/var/lib/clarens/acl.tdb", "/var/lib/clarens-burner/jobs.tdb", "/srv/clarens/images/test.iso",
                 "/etc/clarens/clarens.conf", "/etc/clarens/htpasswd", "/etc/clarens/acl/90-live.acl"):
        assert os.path.exists(r.file(path)), path
    assert not os.path.exists(r.file("/usr/lib/python3/dist-packages/clarens"))
    # Apache goes on without Clarens once reloaded (its configuration was disabled before its code
    # went): the command the prerm printed.
    assert r.run(["a2query", "-c", "clarens"], check=False).returncode != 0
    assert "Syntax OK" in r.run(["apache2ctl", "configtest"]).stderr
    run_printed(r, output, ["service apache2 reload"])
    wait_for("Apache without Clarens", lambda: http_get(r, HTTP)["status"] == 404, WAIT)


def test_a_reinstall_where_services_may_start_takes_the_state_up_by_itself(root, debs):
    r = root
    allow_services(r, True)
    output = apt_install(r, debs[debs["new"]], "reinstall")
    assert printed_commands(output) == [] and "could not" not in output, output
    assert serving(r)["framework_version"] == debs["new"]
    assert uncompiled(r, *INSTALLED_CODE) == {}
    wait_for("the helper its init script started", lambda: helper_status(r), 60)
    assert call(r, HTTPS, "system.whoami", auth=ALICE)["identity"] == "alice"
    assert [j["state"] for j in call(r, HTTPS, "burner.jobs", auth=ALICE)] == ["done"]


WHOAMI = """\
import json, ssl, sys, urllib.request
url, headers = sys.argv[1], json.loads(sys.argv[2])
context = ssl.create_default_context(cafile="/root/pki/ca.crt")
if len(sys.argv) > 3:
    context.load_cert_chain(sys.argv[3], sys.argv[4])
body = json.dumps({"jsonrpc": "2.0", "method": "system.whoami", "id": 1}).encode()
request = urllib.request.Request(url, body, {"Content-Type": "application/json", **headers})
try:
    answer = urllib.request.urlopen(request, timeout=30, context=context)
except urllib.error.HTTPError as e:
    answer = e
print(json.dumps({"status": answer.status, "body": answer.read().decode("utf-8", "replace")}))
"""


def whoami(r: Root, url: str, headers: dict[str, str] | None = None, certificate: str | None = None) -> dict:
    """The HTTP status and the caller's identity (or the body) of a JSON-RPC system.whoami sent with ``headers``."""
    extra = ["%s/%s.crt" % (PKI, certificate), "%s/%s.key" % (PKI, certificate)] if certificate else []
    out = json.loads(r.run(["python3", "-c", WHOAMI, url, json.dumps(headers or {}), *extra]).stdout)
    if out["status"] == 200:
        out["identity"] = json.loads(out["body"])["result"]["identity"]
    return out


def test_a_dedicated_instance_leaves_the_main_apache_alone(root):
    """clarens-admin apache-instance dedicated: Clarens in apache2-clarens (prefork, mod_python), the main
    Apache back on event with HTTP/2, proxying /clarens/ and passing the client certificate's identity
    as the HAProxy front end does, which nobody else can forge; a burn through it all."""
    r = root
    r.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "--download-only", "curl"], net=False)
    r.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "curl"])
    out = r.run(["clarens-admin", "apache-instance", "dedicated"]).stdout
    assert "apache2-clarens: started" in out and "apache2: restarted" in out, out
    assert r.run(["clarens-admin", "apache-instance"]).stdout.startswith("dedicated: /etc/apache2-clarens")
    assert r.run(["a2query", "-M"]).stdout.strip() == "event"
    assert r.run(["a2query", "-m", "http2"], check=False).returncode == 0
    assert r.run(["a2query", "-m", "python"], check=False).returncode != 0
    assert r.run(["a2query", "-c", "clarens"], check=False).returncode != 0
    assert r.run(["a2query", "-c", "clarens-proxy"], check=False).returncode == 0
    assert mode_of(r, "/etc/clarens/apache-dedicated.conf") == ("root", "root", 0o600)

    def loaded(pid_file: str) -> str:
        """What the Apache of that pid file has mapped (its modules among it), read in the root."""
        with open(r.file(pid_file)) as f:
            return r.run(["cat", "/proc/%s/maps" % f.read().strip()]).stdout
    assert "mod_python" not in loaded("/run/apache2/apache2.pid")
    assert "mod_python" in loaded("/run/apache2-clarens/apache2.pid") and "mpm_prefork" in \
        r.run(["env", "APACHE_CONFDIR=/etc/apache2-clarens", "apache2ctl", "-M"]).stdout

    # Through the main Apache: HTTP/2 over TLS, the certificate's owner, a password over HTTPS only.
    version = r.run(["curl", "--http2", "-s", "-o", "/dev/null", "-w", "%{http_version}", "--cacert",
                     PKI + "/ca.crt", HTTPS]).stdout
    assert version == "2", version
    assert whoami(r, HTTPS, certificate="user")["identity"] == USER_DN
    assert call(r, HTTPS, "system.whoami", auth=ALICE)["identity"] == "alice"
    plain = http_get(r, HTTP, {"Authorization": "Basic YWxpY2U6eA=="})
    assert plain["status"] == 403 and "https only" in plain["body"]
    assert whoami(r, HTTP)["identity"] == "anonymous"
    # Forged: a client's own identity header goes no further than the main Apache, and another local
    # user who talks to the instance directly, with or without a made-up key, stays anonymous.
    forged = {"X-Clarens-Client-DN": ADMIN_DN.replace("/", ",").lstrip(",")}
    assert whoami(r, HTTP, forged)["identity"] == "anonymous"
    assert whoami(r, HTTPS, forged, certificate="user")["identity"] == USER_DN
    direct = "http://127.0.0.1:%d/clarens/" % 8280
    assert whoami(r, direct, forged)["identity"] == "anonymous"
    assert whoami(r, direct, {**forged, "X-Clarens-Proxy-Key": "0" * 64})["identity"] == "anonymous"

    # A burn, its upload through both Apaches.
    r.run(["xorriso", "-as", "mkisofs", "-R", "-o", "/root/dedicated.iso", "/usr/share/doc/apache2"])
    out = r.run(["clarens-burn", "burn", "/root/dedicated.iso", "--drive", "test0", "--url", HTTPS, *ALICE],
                env={"CLARENS_PASSWORD": ALICE_PASSWORD}, cwd="/tmp", check=False)
    assert out.returncode == 0 and "verified: the disc matches the image" in out.stdout, \
        out.stdout + out.stderr + tail(r, "/var/log/apache2-clarens/error.log")


def test_the_dedicated_instance_is_upgraded_and_can_be_given_back(root, debs):
    """A reinstall (what an upgrade does) restarts the instance with the new code and keeps the main Apache
    proxying; 'shared' puts Clarens back in the main Apache and removes the instance; 'dedicated' again."""
    r = root
    log = r.file("/var/log/apache2-clarens/error.log")
    mark = os.path.getsize(log)
    output = r.run(["apt-get", "install", "-y", "--reinstall", "/root/" + os.path.basename(debs[debs["new"]])])
    assert printed_commands(output.stdout + output.stderr) == [], output.stdout + output.stderr
    assert r.run(["a2query", "-M"]).stdout.strip() == "event"           # the main Apache left as it is
    with open(log) as f:
        f.seek(mark)
        assert "Graceful restart requested" in f.read()                 # the instance: new children, new code
    assert whoami(r, HTTPS, certificate="user")["identity"] == USER_DN

    out = r.run(["clarens-admin", "apache-instance", "shared"]).stdout
    assert "apache2-clarens removed" in out and "apache2: restarted" in out, out
    assert r.run(["a2query", "-M"]).stdout.strip() == "prefork"
    assert r.run(["a2query", "-c", "clarens"], check=False).returncode == 0
    assert r.run(["a2query", "-c", "clarens-proxy"], check=False).returncode != 0
    for gone in ("/etc/apache2-clarens", "/etc/init.d/apache2-clarens", "/etc/clarens/apache-dedicated.conf"):
        assert not os.path.lexists(r.file(gone)), gone
    serving(r, HTTPS, auth=("--ca", PKI + "/ca.crt"))
    assert whoami(r, HTTPS, certificate="user")["identity"] == USER_DN

    out = r.run(["clarens-admin", "apache-instance", "dedicated"]).stdout
    assert "apache2-clarens: started" in out, out
    serving(r, HTTPS, auth=("--ca", PKI + "/ca.crt"))
    assert whoami(r, HTTPS, certificate="user")["identity"] == USER_DN


def test_purge_removes_everything_stops_the_helper_and_its_apache_and_leaves_apache_working(root):
    """After the dedicated instance's test: purge stops that instance and removes it too."""
    r = root
    assert len(helpers(r)) == 1
    r.run(["apt-get", "purge", "-y", "clarens"])
    # The administrator's module stays, without the bytecode the package made of it.
    assert pycache_under(r, LOCAL_MODULES) == [] and os.path.isfile(r.file(LOCAL_MODULES + "/hello/__init__.py"))
    shutil.rmtree(r.file("/usr/local/lib/clarens"))                # the administrator's, gone before the look below
    assert helpers(r) == [] and not os.path.lexists(r.file("/run/clarens-burner"))
    assert not os.path.lexists(r.file("/run/clarens-burnerd.pid"))
    assert r.run(["dpkg-query", "-W", "-f", "${db:Status-Status}", "clarens"], check=False).stdout \
        in ("", "not-installed")
    for path in ("/etc/clarens", "/var/lib/clarens", "/var/lib/clarens-burner", "/srv/clarens", "/usr/share/clarens",
                 "/usr/lib/python3/dist-packages/clarens", "/usr/bin/clarens", "/usr/sbin/clarens-acl",
                 "/usr/sbin/clarens-admin", "/usr/sbin/clarens-burnerd", "/run/clarens-burner",
                 "/etc/apache2/conf-available/clarens.conf", "/etc/apache2/conf-enabled/clarens.conf",
                 "/etc/apache2/sites-available/clarens-ssl.conf", "/etc/apache2/sites-enabled/clarens-ssl.conf",
                 "/lib/systemd/system/clarens-burnerd.socket", "/lib/systemd/system/clarens-burnerd.service",
                 "/etc/systemd/system/sockets.target.wants/clarens-burnerd.socket", "/etc/init.d/clarens-burnerd",
                 "/etc/logrotate.d/clarens", "/var/log/clarens", "/etc/apache2/conf-available/clarens-proxy.conf",
                 "/etc/apache2/conf-enabled/clarens-proxy.conf", "/etc/apache2-clarens", "/etc/init.d/apache2-clarens",
                 "/var/log/apache2-clarens", "/run/apache2-clarens"):
        assert not os.path.lexists(r.file(path)), path
    # Nothing of Clarens' own Apache runs any more: every Apache process left is the main one's.
    for pid in processes_named(r, "apache2"):
        with open("/proc/%d/environ" % pid, "rb") as f:
            assert b"APACHE_CONFDIR=/etc/apache2-clarens" not in f.read(), pid
    leftovers = r.run(["find", "/", "-xdev", "(", "-path", "/proc", "-o", "-path", "/root", "-o", "-path",
                       "/var/cache/apt/archives", ")", "-prune", "-o", "-iname", "*clarens*", "-print"]).stdout
    assert leftovers.split() == [], leftovers
    # Apache keeps running on a configuration that still passes (the MPM stays prefork).
    assert "Syntax OK" in r.run(["apache2ctl", "configtest"]).stderr
    wait_for("Apache without Clarens", lambda: http_get(r, HTTP)["status"] == 404, WAIT)
