# SPDX-License-Identifier: Apache-2.0
"""A private Apache instance serving this checkout: render its config, start, stop.

Used by ``./run serve|start|stop`` and by the test fixtures.  All state (the
rendered config, pid file, logs, tdb files) lives under one state directory.
Apache is always started with a clean environment: a pyenv Python on ``PATH``
makes the embedded interpreter fail to find its standard library.

    python3 -m clarens.dev.instance serve [--debug] [--config FILE]   # foreground until Ctrl-C
    python3 -m clarens.dev.instance start [--config FILE] | stop | restart | status

``--config FILE`` (default ``$CLARENS_CONFIG``, else the checkout's ``conf/clarens.conf``)
is the server configuration the instance runs with, e.g. a copy with ``[server] cluster
= on`` and ``trusted_proxies`` for one host of a cluster on this machine; the instance's
own settings (its state directory, the burner helper's socket) override it.
"""

from __future__ import annotations

import argparse
import compileall
import glob
import grp
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import xmlrpc.client
from typing import Iterable, Mapping, Sequence

from clarens import apacheconf, procfs
from clarens import config as config_mod
from clarens.acl.files import load_dir as load_acl_dir
from clarens.acl.model import AclError
from clarens.dev import burnerd_launch, devpki

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEMPLATE = os.path.join(ROOT, "conf", "apache", "instance.conf.in")
BURNERD_TEMPLATE = os.path.join(ROOT, "conf", "burnerd-instance.conf.in")
HELPER_USER = "clarens-burner"   # the burner helper's own user, when started as root
DEFAULT_STATE = os.path.join(ROOT, ".state")
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
APACHE = "/usr/sbin/apache2"
APACHE_UMASK = 0o027     # the logs Apache creates: 0640, not readable by everyone


class InstanceError(Exception):
    """The instance could not be set up, started or stopped; the message says why."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for private instances and their peers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _quote(value: str) -> str:
    return '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"')


def acl_dir(directory: str, extra: Iterable[str] = (), texts: Mapping[str, str] | None = None) -> str:
    """``directory`` holding the shipped ACL files, copies of the files in ``extra`` and files named
    in ``texts`` with the text given, all readable by Apache's user: a policy for an instance."""
    os.makedirs(directory, exist_ok=True)
    shipped = glob.glob(os.path.join(ROOT, "acl", "*.acl"))
    for path in shipped + list(extra):
        shutil.copy(path, directory)
    for name, text in (texts or {}).items():
        with open(os.path.join(directory, name), "w") as f:
            f.write(text)
    for name in os.listdir(directory):
        os.chmod(os.path.join(directory, name), 0o644)
    os.chmod(directory, 0o755)
    return directory


class Instance:
    """One private Apache: ``state_dir`` holds everything it writes."""

    def __init__(self, state_dir: str = DEFAULT_STATE, port: int = 8080, tls_port: int = 8443, debug: bool = False,
                 options: Mapping[str, str] | None = None, extra_conf: str = "", log_level: str = "warn",
                 burner: bool = True, helper_users: Sequence[str] = (), config: str = config_mod.CHECKOUT_CONFIG):
        self.state_dir = os.path.abspath(state_dir)
        self.config = os.path.abspath(config)
        self.port = port
        self.tls_port = tls_port
        self.debug = debug
        self.options = dict(options or {})
        self.extra_conf = extra_conf
        self.log_level = log_level
        self.burner = burner
        self.helper_users = tuple(helper_users)   # more users the burner helper admits (e.g. over SSH)
        self.images_dir = os.path.join(self.state_dir, "images")
        self.burner_dir = os.path.join(self.state_dir, "burner")
        self.burnerd_conf = os.path.join(self.state_dir, "burnerd.conf")
        self.burnerd_pid = os.path.join(self.state_dir, "run", "burnerd.pid")
        self.burnerd_log = os.path.join(self.state_dir, "log", "burnerd.log")
        self.supervisor: subprocess.Popen | None = None   # keeps the burner helper running
        self._log_mark = 0   # the error log's size when this instance last started
        self.conf_path = os.path.join(self.state_dir, "apache.conf")
        self.pid_path = os.path.join(self.state_dir, "run", "apache.pid")
        self.error_log = os.path.join(self.state_dir, "log", "error.log")
        self.access_log = os.path.join(self.state_dir, "log", "access.log")
        self.db_dir = os.path.join(self.state_dir, "db")
        self.url = "http://127.0.0.1:%d/clarens/" % port
        self.tls_url = "https://127.0.0.1:%d/clarens/" % tls_port
        self.pki_dir = os.path.join(self.state_dir, "pki")
        self.process: subprocess.Popen | None = None

    # -- setup -------------------------------------------------------------

    @staticmethod
    def apache_user() -> pwd.struct_passwd:
        """The user Apache's children run as: www-data when started as root, else the caller."""
        return pwd.getpwnam("www-data") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())

    @property
    def helper_socket(self) -> str:
        """The burner helper's Unix socket (curl --unix-socket PATH http://burner/v1/status)."""
        return os.path.join(self.state_dir, "burner-socket", "burnerd.sock")

    def server_config(self) -> config_mod.ServerConfig:
        """The configuration the server will run with (file plus this instance's options)."""
        return config_mod.load(self.config, self.all_options())

    def all_options(self) -> dict[str, str]:
        burner = {"clarens.module:burner.socket": self.helper_socket,
                  "clarens.module:burner.images_dir": self.images_dir} if self.burner else {}
        # Only certificates of the demo organisation are identities (the demo CA could sign others).
        demo_org = {"clarens.certificate.O": devpki.ORG.rpartition("O=")[2]}
        # The demo users' passwords, accepted over plain HTTP too: a private instance on loopback.
        passwords = {"clarens.server.htpasswd": os.path.join(self.state_dir, "htpasswd"),
                     "clarens.server.passwords_over_http": "on"}
        return {"clarens.server.db_dir": self.db_dir, **burner, **demo_org, **passwords, **self.options}

    def prepare(self) -> dict[str, str]:
        """Create the state directory, demo credentials and Apache configuration.

        Refuses (InstanceError) a configuration or ACL files the server could not run
        with, so that a broken policy stops the start.  Returns the credential paths.
        """
        try:
            cfg = self.server_config()
            if cfg.access_control:
                load_acl_dir(cfg.acl_dir)
            generated = apacheconf.generated(cfg)
        except (config_mod.ConfigError, AclError) as e:
            raise InstanceError("refusing to start: %s" % e) from None
        _byte_compile([os.path.join(ROOT, name) for name in ("clarens", "modules", "bench")] + cfg.modules_path)
        user = self.apache_user()
        for sub in ("", "run", "log", "htdocs"):
            os.makedirs(os.path.join(self.state_dir, sub), mode=0o755, exist_ok=True)
        self._traversable()
        os.makedirs(self.db_dir, mode=0o700, exist_ok=True)
        os.chmod(self.db_dir, 0o700)
        if os.geteuid() == 0:
            os.chown(self.db_dir, user.pw_uid, user.pw_gid)
            self._check_readable_by(user.pw_name)
        credentials = devpki.ensure(self.state_dir, user.pw_gid if os.geteuid() == 0 else -1)
        if self.burner:
            self._prepare_burner(user)
        with open(TEMPLATE) as f:
            template = f.read()
        conf = apacheconf.render_template(template, {
            "ROOT": ROOT, "STATE": self.state_dir, "CONFIG": self.config, "PORT": str(self.port),
            "TLS_PORT": str(self.tls_port),
            "USER": "User %s\nGroup %s" % (user.pw_name, _group_name(user.pw_gid)) if os.geteuid() == 0 else "",
            "DEBUG": "On" if self.debug else "Off",
            "LOG_LEVEL": self.log_level,
            "GENERATED": generated,
            "SERVER_WIDE": apacheconf.SERVER_WIDE,
            "IMAGES_TOO_LARGE": apacheconf.IMAGES_TOO_LARGE,
            "ERROR_DOCUMENTS": apacheconf.error_documents(),
            "OPTIONS": "\n".join("PythonOption %s %s" % (k, _quote(v)) for k, v in sorted(self.all_options().items())),
            "EXTRA": self.extra_conf,
        })
        tmp = self.conf_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(conf)
        os.replace(tmp, self.conf_path)
        return credentials

    def _traversable(self) -> None:
        """As root, Apache's children (www-data) must reach the directories below the state directory:
        give it o+x if it lacks it, and say so (nothing more: a directory of 0700 stays unlistable)."""
        mode = stat.S_IMODE(os.stat(self.state_dir).st_mode)
        if os.geteuid() == 0 and not mode & stat.S_IXOTH:
            os.chmod(self.state_dir, mode | stat.S_IXOTH)
            print("note: %s is now mode %04o (it was %04o): Apache's children (www-data) must traverse it"
                  % (self.state_dir, mode | stat.S_IXOTH, mode), file=sys.stderr)

    def _prepare_burner(self, apache: pwd.struct_passwd) -> None:
        """The helper's user, its private directory, the shared images directory, its config."""
        helper = _ensure_system_user(HELPER_USER) if os.geteuid() == 0 else apache
        os.makedirs(self.burner_dir, mode=0o700, exist_ok=True)
        os.chown(self.burner_dir, helper.pw_uid, helper.pw_gid)
        os.chmod(self.burner_dir, 0o700)          # the drive file: the Apache user cannot reach it
        os.makedirs(self.images_dir, exist_ok=True)
        os.chown(self.images_dir, apache.pw_uid, helper.pw_gid)
        os.chmod(self.images_dir, 0o2750)         # Apache writes uploads, the helper's group reads them
        with open(BURNERD_TEMPLATE) as f:
            conf = apacheconf.render_template(f.read(), {
                "STATE": self.state_dir, "ALLOWED_USERS": " ".join((apache.pw_name,) + self.helper_users),
                "APACHE_GROUP": _group_name(apache.pw_gid)})
        with open(self.burnerd_conf + ".tmp", "w") as f:
            f.write(conf)
        os.replace(self.burnerd_conf + ".tmp", self.burnerd_conf)

    def _start_helper(self) -> None:
        if not self.burner:
            return
        if _pid_running(self.burnerd_pid, self.burnerd_conf):
            return   # left running by ./run start; reuse it
        try:
            self.supervisor = burnerd_launch.launch(self.burnerd_conf, HELPER_USER, self.burnerd_log)
        except RuntimeError as e:
            raise InstanceError("%s:\n%s" % (e, _tail(self.burnerd_log))) from None
        with open(self.burnerd_pid, "w") as f:
            f.write("%d\n" % self.supervisor.pid)

    def helper_pid(self) -> int | None:
        """The burner helper's pid (the child of its supervisor), if it is running now."""
        supervisor = self.supervisor.pid if self.supervisor is not None else \
            _pid_running(self.burnerd_pid, self.burnerd_conf)
        for pid in procfs.pids():
            st = procfs.stat(pid)
            if st is not None and st[1][1] == str(supervisor) and st[1][0] not in ("Z", "X") \
                    and b"clarens.burnerd" in procfs.cmdline(pid):
                return pid
        return None

    def _stop_helper(self, timeout: float) -> None:
        """Stop the supervisor, which stops the helper (whose xorriso processes die with it)."""
        pid = self.supervisor.pid if self.supervisor is not None else \
            _pid_running(self.burnerd_pid, self.burnerd_conf)
        if pid:
            helper = self.helper_pid()
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while procfs.alive(pid) and time.monotonic() < deadline:
                if self.supervisor is not None:
                    self.supervisor.poll()
                time.sleep(0.05)
            for stuck in (pid, helper):
                if stuck and procfs.alive(stuck) and self.burnerd_conf.encode() in procfs.cmdline(stuck):
                    os.kill(stuck, signal.SIGKILL)
            if self.supervisor is not None:
                self.supervisor.wait()
        self.supervisor = None
        try:
            os.unlink(self.burnerd_pid)
        except FileNotFoundError:
            pass

    def _check_readable_by(self, user: str) -> None:
        """InstanceError unless Apache's ``user`` can read the checkout and the configuration."""
        problem = checkout_unreadable(user) or _unreadable(user, self.config, "the configuration")
        if problem:
            raise InstanceError(problem)

    def command(self, foreground: bool = True) -> list[str]:
        """The argv that runs this instance's Apache (clean environment)."""
        argv = ["env", "-i"] + ["%s=%s" % kv for kv in CLEAN_ENV.items()] + [APACHE, "-f", self.conf_path]
        if self.debug:
            argv.append("-X")        # one process: step through a module with pdb
        elif foreground:
            argv.append("-DFOREGROUND")
        else:
            argv += ["-k", "start"]
        return argv

    # -- lifecycle ---------------------------------------------------------

    def configtest(self) -> None:
        """``apache2 -t`` on the rendered configuration."""
        out = subprocess.run(self.command()[:-1] + ["-t"], capture_output=True, text=True)
        if out.returncode != 0:
            raise InstanceError("Apache rejects %s:\n%s" % (self.conf_path, out.stderr.strip()))

    def _begin(self) -> None:
        """What every start does first: refuse a second instance, set up, check, start the helper."""
        pid = self.running_pid()
        if pid:
            raise InstanceError("an instance is already running from %s (pid %d); stop it first"
                                % (self.state_dir, pid))
        self.prepare()
        self.configtest()
        self._log_mark = os.path.getsize(self.error_log) if os.path.exists(self.error_log) else 0
        self._start_helper()

    def start(self, timeout: float = 30.0) -> None:
        """Start in the background (as a child of this process) and return once it answers."""
        self._begin()
        # Own session: on shutdown prefork signals its whole process group, which would include us.
        # A single debug process (-X) keeps the terminal instead, for pdb.
        self.process = subprocess.Popen(self.command(foreground=True), umask=APACHE_UMASK,
                                        stdin=None if self.debug else subprocess.DEVNULL,
                                        start_new_session=not self.debug)
        try:
            self.wait_ready(timeout)
        except InstanceError:
            self.stop()
            raise

    def start_detached(self, timeout: float = 30.0) -> None:
        """Start as a daemon (``apache2 -k start``), for ``./run start``; return once it answers."""
        self._begin()
        out = subprocess.run(self.command(foreground=False), capture_output=True, text=True, umask=APACHE_UMASK)
        if out.returncode != 0:
            self._stop_helper(timeout)
            raise InstanceError("apache2 -k start failed:\n%s" % (out.stderr.strip() or out.stdout.strip()))
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        """Poll until system.serverInfo answers; InstanceError with the log tail if it never does."""
        proxy = xmlrpc.client.ServerProxy(self.url)
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise InstanceError("Apache exited with status %d:\n%s" % (self.process.returncode, self.log_tail()))
            try:
                proxy.system.serverInfo()
                return
            except (OSError, xmlrpc.client.ProtocolError):
                if time.monotonic() > deadline:
                    raise InstanceError("Apache did not answer at %s within %.0fs:\n%s"
                                        % (self.url, timeout, self.log_tail())) from None
                time.sleep(0.1)

    def running_pid(self) -> int | None:
        """The pid of this instance's Apache parent, if it is running."""
        return _pid_running(self.pid_path, self.conf_path)

    def processes(self) -> list[int]:
        """Pids of every Apache process of this instance (parent and children)."""
        needle = self.conf_path.encode()
        return [pid for pid in procfs.pids() if needle in procfs.cmdline(pid)]

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the instance and wait until every one of its processes has exited."""
        pid = self.process.pid if self.process is not None and self.process.poll() is None else self.running_pid()
        if pid:
            os.kill(pid, signal.SIGTERM)
        if self.process is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        deadline = time.monotonic() + timeout
        while self.processes():
            if time.monotonic() > deadline:
                for p in self.processes():
                    os.kill(p, signal.SIGKILL)
            time.sleep(0.05)
        self._stop_helper(timeout)

    def graceful(self) -> None:
        """Graceful restart: new children (PythonImport runs again), same parent."""
        pid = self.running_pid()
        if not pid:
            raise InstanceError("not running")
        os.kill(pid, signal.SIGUSR1)

    def restart(self, timeout: float = 30.0) -> str:
        """``./run restart``: the configuration rendered and checked again, then a graceful restart,
        whose new children import every module again (a new one in modules/ too), or a full one when
        the pool needs it (:func:`clarens.apacheconf.full_restart_needed`); returns, saying which, once
        the old children are gone and the new ones answer.  An instance that is not running is started."""
        pid = self.running_pid()
        if not pid:
            self.start_detached(timeout)
            return "was not running: started"
        with open(self.conf_path) as f:
            before = f.read()
        self.prepare()
        self.configtest()
        with open(self.conf_path) as f:
            full = apacheconf.full_restart_needed(before, f.read())
        if full:
            self.stop(timeout)
            self.start_detached(timeout)
            return "restarted (%s: a graceful restart would not do)" % full
        old = [p for p in self.processes() if p != pid]
        self._log_mark = os.path.getsize(self.error_log) if os.path.exists(self.error_log) else 0
        os.kill(pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while [p for p in old if procfs.alive(p)]:
            if time.monotonic() > deadline:
                raise InstanceError("children of the old generation still run after %.0f s:\n%s"
                                    % (timeout, self.log_tail()))
            time.sleep(0.05)
        self.wait_ready(timeout)
        return "restarted gracefully"

    def banner(self) -> str:
        """What a user needs to reach the instance: URLs, demo certificates, demo users."""
        pki = self.pki_dir
        users = devpki.credentials(self.state_dir)
        return "\n".join([
            "Clarens is serving %s and %s" % (self.url, self.tls_url),
            "  test CA (trust it for HTTPS):  %s" % os.path.join(pki, "ca.crt"),
            "  demo user certificate:         %s (key .key, browser bundle .p12, password %s)"
            % (os.path.join(pki, "demo-user.crt"), devpki.P12_PASSWORD),
            "  demo admin certificate:        %s" % os.path.join(pki, "demo-admin.crt"),
            "  Basic-auth users:              %s (in %s)" % (
                ", ".join("%s / %s" % kv for kv in sorted(users.items())),
                os.path.join(self.state_dir, "credentials.txt")),
            "  logs:                          %s" % self.error_log,
        ])

    def log_tail(self, lines: int = 30) -> str:
        """The end of the error log (since this start, when known)."""
        return _tail(self.error_log, lines, self._log_mark)


def checkout_unreadable(user: str) -> str | None:
    """Why Apache's ``user`` cannot read the checkout's code (a clone in a directory others may not
    enter: Debian 12 makes home directories 0700), or None if it can.  Run as root."""
    return _unreadable(user, os.path.join(ROOT, "clarens", "__init__.py"), "the checkout")


def _unreadable(user: str, probe: str, what: str) -> str | None:
    if subprocess.run(["runuser", "-u", user, "--", "test", "-r", probe]).returncode == 0:
        return None
    return ("Apache's user %s cannot read %s: move %s somewhere it can read (every directory above it "
            "needs o+x)" % (user, probe, what))


def _byte_compile(directories: list[str]) -> None:
    """Byte-compile the Python files Apache's children import, as the user preparing the instance:
    Apache's user cannot write ``__pycache__`` in a checkout, and without it each child compiled
    every module from source at its start (220 ms of CPU per child against 125 ms, 2-core VM).
    Up to date, this only reads the files' times."""
    for directory in directories:
        if os.path.isdir(directory):
            compileall.compile_dir(directory, quiet=2)


def _group_name(gid: int) -> str:
    return grp.getgrgid(gid).gr_name


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    """The system user ``name``, created (with its own group, no home, no shell) if missing."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", name], check=True, capture_output=True)
        return pwd.getpwnam(name)


def _pid_running(pid_file: str, needle: str) -> int | None:
    """The pid in ``pid_file`` if that process is alive and has ``needle`` in its command line."""
    try:
        with open(pid_file) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return pid if needle.encode() in procfs.cmdline(pid) and procfs.alive(pid) else None


def _tail(path: str, lines: int = 20, offset: int = 0) -> str:
    """The last ``lines`` lines of the file at ``path`` written after ``offset``."""
    try:
        with open(path, errors="replace") as f:
            f.seek(offset)
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log at %s)" % path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m clarens.dev.instance", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["serve", "start", "stop", "restart", "status", "render"])
    parser.add_argument("--debug", action="store_true", help="one process (-X) with PythonDebug On")
    parser.add_argument("--state", default=os.environ.get("CLARENS_STATE", DEFAULT_STATE))
    parser.add_argument("--port", type=int, default=int(os.environ.get("CLARENS_PORT", "8080")))
    parser.add_argument("--tls-port", type=int, default=int(os.environ.get("CLARENS_TLS_PORT", "8443")))
    parser.add_argument("--config", default=os.environ.get("CLARENS_CONFIG") or config_mod.CHECKOUT_CONFIG,
                        help="the server configuration (default: $CLARENS_CONFIG, else conf/clarens.conf)")
    args = parser.parse_args(argv)
    if args.debug and args.action != "serve":
        parser.error("--debug is for serve (one Apache process in the foreground): ./run serve --debug")
    inst = Instance(args.state, args.port, args.tls_port, debug=args.debug, config=args.config)
    try:
        if args.action == "render":
            inst.prepare()
            print(inst.conf_path)
        elif args.action == "status":
            pid = inst.running_pid()
            if not pid:
                print("not running (./run start or ./run serve starts it)")
                return 3
            print("running, pid %d, %s and %s\n  burner helper socket: %s\n  logs: %s"
                  % (pid, inst.url, inst.tls_url, inst.helper_socket, inst.error_log))
        elif args.action == "start":
            inst.start_detached()
            print(inst.banner())
            pid = inst.running_pid()
            assert pid is not None       # start_detached returned: it has answered
            print("Running in the background (pid %d); ./run stop stops it." % pid)
        elif args.action == "stop":
            inst.stop()
            print("stopped")
        elif args.action == "restart":
            print(inst.restart())
        else:
            signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
            try:   # whatever interrupts us, from the first moment, Apache goes down with us
                inst.start()
                assert inst.process is not None      # start() returned: Apache is our child
                print(inst.banner())
                print("%sState in %s. Ctrl-C stops it." % (
                    "Single process, PythonDebug On. " if args.debug else "", inst.state_dir), flush=True)
                inst.process.wait()
                if inst.process.returncode == 0:      # stopped from elsewhere (./run stop): nothing went wrong
                    print("Apache stopped.", flush=True)
                    return 0
                print("Apache exited with status %d; the end of its log:\n%s"
                      % (inst.process.returncode, inst.log_tail()))
                return 1
            except (KeyboardInterrupt, SystemExit):
                print("\nstopping...", flush=True)
            finally:
                inst.stop()
    except InstanceError as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
