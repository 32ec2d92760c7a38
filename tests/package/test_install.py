"""The Debian package, installed the way an administrator would, on a fresh Debian 12 (``./run test-package``).

Builds the package (and the same tree as a newer version, for the upgrade),
makes a Debian 12 root with mmdebstrap (tests/package/chroot.py: its own PID,
mount and network namespaces), installs the package there with apt, and goes
through what the README's administrator section says: the service answers, the
policy and the drives are the documented choices, Basic users come from
clarens-admin, client certificates from the site clarens-ssl; then a burn with
verification, the ACL dump round trip, an upgrade, a removal (and a reinstall)
and a purge.

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
from tests.helpers import ROOT, wait_for
from tests.package.chroot import Root, base_tarball, mounts_under, processes_in

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
# The site's own policy (the README's administrator section): who may burn, who administers.
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
    r.helper = None
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
            print("\nthe Debian root of the failed install test is kept in %s" % r.path)


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


def md5(r: Root, path: str) -> str:
    with open(r.file(path), "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


# -- the tests, in order --------------------------------------------------------------------


def test_lintian_finds_no_error_and_no_warning(debs):
    """Warnings that stay are overridden, each with its reason (debian/clarens.lintian-overrides)."""
    passed, findings = packaging.lintian(debs[debs["old"]])
    assert passed, findings
    assert not [line for line in findings.splitlines() if line.startswith(("E:", "W:"))], findings


def test_install_gives_a_running_secure_service(root, debs):
    r = root
    # What the installer writes and mmdebstrap does not: names for the loopback and this host.
    with open(r.file("/etc/hosts"), "w") as f:
        f.write("127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                % socket.gethostname())
    r.run(["apt-get", "update", "-q"], net=False)
    # As on a real system, package scripts may start and restart services (a chroot defaults to no).
    with open(r.file("/usr/sbin/policy-rc.d"), "w") as f:
        f.write("#!/bin/sh\nexit 0\n")
    os.chmod(r.file("/usr/sbin/policy-rc.d"), 0o755)
    output = apt_install(r, debs[debs["old"]], "install")

    # Apache: prefork (switched, with the reason), the modules, the configuration, a passing configtest.
    assert "switching Apache from the event MPM to prefork" in output and "mod_python" in output, output
    assert r.run(["a2query", "-M"]).stdout.strip() == "prefork"
    for module in ("python", "headers", "reqtimeout"):
        assert r.run(["a2query", "-m", module], check=False).returncode == 0, module
    assert r.run(["a2query", "-c", "clarens"], check=False).returncode == 0
    assert "Syntax OK" in r.run(["apache2ctl", "configtest"]).stderr
    info = serving(r)
    assert info["framework_version"] == debs["old"]

    # Configuration in /etc/clarens, as conffiles: production defaults, no demo identities.
    conffiles = r.run(["dpkg-query", "-W", "-f", "${Conffiles}", "clarens"]).stdout
    for path in ("/etc/clarens/clarens.conf", "/etc/clarens/burnerd.conf", "/etc/clarens/client.conf",
                 "/etc/clarens/acl/00-defaults.acl", "/etc/apache2/conf-available/clarens.conf",
                 "/etc/apache2/sites-available/clarens-ssl.conf"):
        assert path + " " in conffiles, path
    assert sorted(os.listdir(r.file("/etc/clarens/acl"))) == ["00-defaults.acl"]
    for name in ("clarens.conf", "burnerd.conf", "client.conf", "acl/00-defaults.acl"):
        with open(r.file("/etc/clarens/" + name)) as f:
            text = f.read()
        assert "Clarens Demo" not in text and "\nMember admin" not in text, name
    with open(r.file("/etc/clarens/burnerd.conf")) as f:
        assert "\n[drive:" not in f.read()                      # no drive but commented examples

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
    # The include, rendered again from the changed clarens.conf, is the installed one: nothing to redo.
    with open(r.file("/etc/apache2/conf-available/clarens.conf")) as f:
        assert r.run(["clarens-admin", "apache-conf"]).stdout == f.read()
    r.run(["a2enmod", "ssl"])
    r.run(["a2ensite", "clarens-ssl"])
    assert "Syntax OK" in r.run(["apache2ctl", "configtest"]).stderr
    r.run(["invoke-rc.d", "apache2", "restart"])
    serving(r, HTTPS, auth=("--ca", PKI + "/ca.crt"))

    me = call(r, HTTPS, "system.whoami", auth=ALICE)
    assert (me["identity"], me["authenticated"], me["groups"]) == ("alice", True, ["users"]), me
    unavailable = clarens(r, *ALICE, "call", HTTPS, "burner.drives", env={"CLARENS_PASSWORD": ALICE_PASSWORD})
    assert unavailable.returncode == 1 and "-32002" in unavailable.stderr   # allowed; the helper is not running
    wrong = clarens(r, *ALICE, "call", HTTPS, "system.whoami", env={"CLARENS_PASSWORD": "wrong"})
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


def test_burn_with_verification_through_the_helper_started_as_root(root):
    r = root
    with open(r.file("/etc/clarens/burnerd.conf"), "a") as f:
        f.write(TEST_DRIVE)
    log = os.path.join(STATE, "burnerd.log")
    if os.path.exists(log):
        os.unlink(log)
    r.helper = r.spawn(["clarens-burnerd"], log)

    def status():
        out = r.run(["clarens-burnerd", "status", "--json"], check=False)
        return json.loads(out.stdout) if out.returncode == 0 else None
    report = wait_for("the burner helper", status, 60)
    assert [d["name"] for d in report["drives"]] == ["test0"]
    proc = dict(line.split(":\t", 1) for line in r.run(["cat", "/proc/%d/status" % report["status"]["pid"]])
                .stdout.splitlines() if ":\t" in line)
    uid = r.run(["id", "-u", "clarens-burner"]).stdout.strip()
    assert proc["Uid"].split() == [uid] * 4 and proc["NoNewPrivs"].strip() == "1"
    assert mode_of(r, "/run/clarens-burner/burnerd.sock") == ("clarens-burner", "www-data", 0o660)
    assert mode_of(r, "/run/clarens-burner") == ("clarens-burner", "www-data", 0o710)

    r.run(["xorriso", "-as", "mkisofs", "-R", "-o", "/root/test.iso", "/usr/share/doc/clarens"])
    out = r.run(["python3", "-m", "clarens.burner_cli", "--url", HTTPS, "--user", "alice", "--cacert",
                 PKI + "/ca.crt", "burn", "/root/test.iso", "--drive", "test0"],
                env={"CLARENS_PASSWORD": ALICE_PASSWORD}, cwd="/tmp", check=False)
    assert out.returncode == 0, out.stdout + out.stderr + tail(r, "/var/log/apache2/error.log")
    with open(r.file("/root/test.iso"), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert digest in out.stdout
    assert mode_of(r, "/srv/clarens/images/test.iso")[:2] == ("www-data", "clarens-burner")
    assert mode_of(r, "/var/lib/clarens-burner/test0.disc")[0] == "clarens-burner"
    jobs = call(r, HTTPS, "burner.jobs", auth=ALICE)
    assert [(j["state"], j["verification"]["match"]) for j in jobs] == [("done", True)]


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


def test_upgrade_keeps_conffiles_and_state_and_restarts_gracefully(root, debs):
    r = root
    kept = ("/etc/clarens/clarens.conf", "/etc/clarens/burnerd.conf", "/etc/clarens/acl/50-local.acl",
            "/etc/clarens/acl/90-live.acl", "/etc/clarens/htpasswd", "/etc/clarens/tls/server.key",
            "/var/lib/clarens/acl.tdb", "/srv/clarens/images/test.iso")
    before = {path: md5(r, path) for path in kept if not path.endswith(".tdb")}
    with open(r.file("/run/apache2/apache2.pid")) as f:
        parent = f.read().strip()
    output = apt_install(r, debs[debs["new"]], "upgrade")
    assert "Setting up clarens (%s)" % debs["new"] in output, output
    assert r.run(["dpkg-query", "-W", "-f", "${Version}", "clarens"]).stdout == debs["new"]
    assert {path: md5(r, path) for path in before} == before and os.path.exists(r.file("/var/lib/clarens/acl.tdb"))
    # A graceful restart: the same parent, children of the new code.
    wait_for("children of the new version", lambda: serving(r)["framework_version"] == debs["new"], WAIT)
    with open(r.file("/run/apache2/apache2.pid")) as f:
        assert f.read().strip() == parent
    assert call(r, HTTPS, "system.whoami", auth=cert("user"))["identity"] == USER_DN
    assert [j["state"] for j in call(r, HTTPS, "burner.jobs", auth=ALICE)] == ["done"]


def test_remove_keeps_the_state_and_a_reinstall_takes_it_up(root, debs):
    r = root
    r.run(["apt-get", "remove", "-y", "clarens"])
    assert r.run(["dpkg-query", "-W", "-f", "${db:Status-Status}", "clarens"]).stdout == "config-files"
    for path in ("/var/lib/clarens/acl.tdb", "/var/lib/clarens-burner/jobs.tdb", "/srv/clarens/images/test.iso",
                 "/etc/clarens/clarens.conf", "/etc/clarens/htpasswd", "/etc/clarens/acl/90-live.acl"):
        assert os.path.exists(r.file(path)), path
    assert not os.path.exists(r.file("/usr/lib/python3/dist-packages/clarens"))
    # Apache goes on without Clarens (its configuration was disabled before its code went).
    assert r.run(["a2query", "-c", "clarens"], check=False).returncode != 0
    assert "Syntax OK" in r.run(["apache2ctl", "configtest"]).stderr
    wait_for("Apache without Clarens", lambda: http_get(r, HTTP)["status"] == 404, WAIT)

    apt_install(r, debs[debs["new"]], "reinstall")
    assert serving(r)["framework_version"] == debs["new"]
    assert call(r, HTTPS, "system.whoami", auth=ALICE)["identity"] == "alice"
    assert [j["state"] for j in call(r, HTTPS, "burner.jobs", auth=ALICE)] == ["done"]


def test_purge_removes_everything_and_leaves_apache_working(root):
    r = root
    status = json.loads(r.run(["clarens-burnerd", "status", "--json"]).stdout)
    r.run(["kill", "-TERM", str(status["status"]["pid"])])
    assert r.helper.wait(60) == 0
    assert not os.path.lexists(r.file("/run/clarens-burner/burnerd.sock"))   # the helper removed it

    r.run(["apt-get", "purge", "-y", "clarens"])
    assert r.run(["dpkg-query", "-W", "-f", "${db:Status-Status}", "clarens"], check=False).stdout \
        in ("", "not-installed")
    for path in ("/etc/clarens", "/var/lib/clarens", "/var/lib/clarens-burner", "/srv/clarens", "/usr/share/clarens",
                 "/usr/lib/python3/dist-packages/clarens", "/usr/bin/clarens", "/usr/sbin/clarens-acl",
                 "/usr/sbin/clarens-admin", "/usr/sbin/clarens-burnerd", "/run/clarens-burner",
                 "/etc/apache2/conf-available/clarens.conf", "/etc/apache2/conf-enabled/clarens.conf",
                 "/etc/apache2/sites-available/clarens-ssl.conf", "/etc/apache2/sites-enabled/clarens-ssl.conf",
                 "/lib/systemd/system/clarens-burnerd.socket", "/lib/systemd/system/clarens-burnerd.service",
                 "/etc/systemd/system/sockets.target.wants/clarens-burnerd.socket"):
        assert not os.path.lexists(r.file(path)), path
    leftovers = r.run(["find", "/", "-xdev", "(", "-path", "/proc", "-o", "-path", "/root", "-o", "-path",
                       "/var/cache/apt/archives", ")", "-prune", "-o", "-iname", "*clarens*", "-print"]).stdout
    assert leftovers.split() == [], leftovers
    # Apache keeps running on a configuration that still passes (the MPM stays prefork).
    assert "Syntax OK" in r.run(["apache2ctl", "configtest"]).stderr
    r.run(["apache2ctl", "graceful"])
    wait_for("Apache without Clarens", lambda: http_get(r, HTTP)["status"] == 404, WAIT)
