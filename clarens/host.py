# SPDX-License-Identifier: Apache-2.0
"""The host: one per process, built once at child start by :mod:`clarens.startup`.

It holds the configuration, the tdb registry, the loaded service modules with
their methods, and the dispatcher that serves them; it is what a call context
asks of its host (:class:`clarens.context.HostServices`).  The booted host is
this process's one singleton: whatever else lasts for the process (the
``once_per_server`` directory, the handler's memo of URIs, the host a ``local:``
client runs) hangs from it.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import threading
import time
from typing import Callable, Mapping

from clarens import config as config_mod
from clarens import db, faultlog, loader, once, passwords, proxies, refusals, session_peers, sessions, throttle
from clarens import log as log_mod
from clarens.acl import store as acl_store
from clarens.acl.model import AclError, Decision, Policy
from clarens.acl.store import Guard
from clarens.context import CallContext
from clarens.credentials import Credentials
from clarens.dispatch import Dispatcher
from clarens.faults import SERVICE_UNAVAILABLE, Fault
from clarens.identity import Identity, IdentityRefused
from clarens.loader import ServiceModule
from clarens.protocol import Limits
from clarens.registry import Methods
from clarens.web import routes


class Host:
    """Configuration, databases, modules and dispatcher of this process."""

    def __init__(self, config: config_mod.ServerConfig, log: logging.Logger, standalone: bool = False):
        self.config = config
        self.standalone = standalone         # a server of this one process (an SSH session, a local: client)
        self.log = log
        self.dbs = db.Registry(config.db_dir)
        self.modules: dict[str, ServiceModule] = {}
        self.methods: Methods = {}
        self.dispatcher = Dispatcher(self.methods, log)
        self.limits = Limits(config.max_depth, config.max_items, config.max_values, config.max_base64)
        # Refusals (denied calls, credentials refused...): counted by every process of the server together.
        self.refusals = refusals.RefusalLog(os.path.join(config.db_dir, refusals.FILE_NAME), log,
                                            config.log_interval, config.log_lines)
        self.guard: Guard | None = None
        self.credentials: Credentials | None = None   # set by install_credentials; None: none can be checked
        self.routes: dict[str, routes.Route] = {}
        self.pages: dict[str, str] = {}      # route -> title: the modules' pages, for the navigation
        self.started = time.time()
        self.modules_digest = ""             # set by load_modules
        self.trust_digest = proxies.trust_digest(config.trusted_proxies, config.cluster)
        self.pid = os.getpid()
        # URI -> (its <Location>, the rest), for clarens.handler: fixed per configuration.
        self.places: dict[str, tuple[str, str | None]] = {}

    @property
    def startup_init_calls(self) -> int:
        """How many times ``_startup_init`` ran in this process, over all modules."""
        return sum(m.startup_init_calls for m in self.modules.values())

    def policy_state(self) -> tuple[str, str]:
        """The access-control state, ``on``, ``off`` or ``failed`` (the policy did not load: every
        call is refused), and the digest of the policy in force ("" unless ``on``)."""
        if self.guard is None:
            return "off", ""
        if self.guard.broken:
            return "failed", ""
        return "on", self.guard.refresh().digest()

    def once(self, name: str, block: Callable[[], object]) -> bool:
        """Run ``block`` once per server start (:func:`clarens.once.once_per_server`, in ``db_dir``)."""
        return once.once_per_server(name, block, self.config.db_dir, self.standalone)

    # -- what a call context asks of its host (clarens.context.HostServices) ------------------

    @property
    def admin_group(self) -> str:
        return self.config.admin_group

    def identify(self, identity: Identity) -> Identity:
        return identity if self.guard is None else self.guard.identify(identity)

    def allows(self, identity: Identity, method: str) -> bool:
        return self.guard is None or self.guard.allows(identity, method)

    def decide(self, identity: Identity, method: str) -> Decision | None:
        return None if self.guard is None else self.guard.decide(identity, method)

    def policy(self) -> Policy | None:
        return None if self.guard is None else self.guard.refresh()

    def multicall(self, ctx: CallContext, calls: list) -> list:
        return self.dispatcher.multicall(ctx, calls)

    def note(self, ctx: CallContext, method: str, fault: Fault) -> None:
        self.dispatcher.note(ctx, method, fault)

    def end(self, ctx: CallContext) -> None:
        """Write the request's faults, one line per code (clarens.faultlog), each a refusal of class
        ``fault CODE``: rate-limited per address, or per caller if authenticated, and summarised
        (clarens.refusals)."""
        if ctx.faults:
            caller = ctx.identity.name if ctx.identity.authenticated else None
            for code, line in faultlog.lines(ctx.describe(), ctx.faults):
                self.refusals.refuse("fault %d" % code, ctx.client_address, line, caller=caller)
            ctx.faults.clear()
        if self.refusals.due():
            request = ctx.request
            if request is not None:
                # Apache: after the answer has gone (mod_python runs cleanups once the request is
                # logged): the caller who happens to come when it is due does not wait for the
                # look at every class's interval (tens of us, more in a child idle for a while).
                request.register_cleanup(refusals.RefusalLog.flush, self.refusals)    # called with its data
            else:
                self.refusals.flush()

    def facts(self) -> dict:
        modules = self.modules.values()
        state, digest = self.policy_state()
        return {"started": int(self.started), "startup_init_calls": self.startup_init_calls,
                "modules_loaded": sum(1 for m in modules if m.status == "loaded"),
                "modules_failed": sum(1 for m in modules if m.status != "loaded"),
                "access_control": state, "policy_digest": digest, "modules_digest": self.modules_digest,
                "trust_digest": self.trust_digest, "cluster": self.config.cluster}

    def sessions(self) -> sessions.Sessions | None:
        return self.credentials.sessions if self.credentials is not None else None

    def check_password(self, name: str, password: bytes, address: str, secure: bool) -> Identity:
        if self.credentials is None:
            raise Fault(SERVICE_UNAVAILABLE, "credentials cannot be checked now (see the server's error log)")
        try:
            return self.credentials.password(name, password, address, secure)
        except IdentityRefused as e:
            self.refuse_credentials(address, e)
            raise

    def passwords_accepted(self) -> bool:
        return self.credentials is not None and self.credentials.checker is not None

    # -- building it ---------------------------------------------------------------------------

    def load_modules(self) -> None:
        """Import every module on the modules path once, recording failures."""
        for name, directory in loader.discover(self.config.modules_path):
            if name in self.modules:
                self.log.error("service module %s in %s skipped: a module of that name was loaded from %s",
                               name, directory, self.modules[name].path)
                continue
            record, methods = loader.load(name, directory, self._init_args, self.log)
            self.modules[name] = record
            for method in methods:
                self.methods[method.name] = method
        self.routes, self.pages = routes.collect(self.modules, self.log)
        # What code this host serves, comparable across hosts (system.serverInfo, the health check).
        self.modules_digest = loader.modules_digest((m.name, m.path) for m in self.modules.values())
        loaded = [m.name for m in self.modules.values() if m.status == "loaded"]
        failed = [m.name for m in self.modules.values() if m.status != "loaded"]
        self.log.info("pid %d: loaded %d module(s) (%s), %d method(s)%s", self.pid, len(loaded), " ".join(loaded),
                      len(self.methods), "; FAILED: " + " ".join(failed) if failed else "")
        if not self.standalone:
            self._say_uncompiled()

    def _say_uncompiled(self) -> None:
        """Say once per server start which service modules every child compiles from source at its start,
        for want of their bytecode, and the command that writes it (docs/administration.md)."""
        prefix = loader.PACKAGE + "."
        files = loader.uncompiled(module for name, module in list(sys.modules.items()) if name.startswith(prefix))
        if not files:
            return
        directories = sorted({m.path for m in self.modules.values()
                              if any(f.startswith(m.path + os.sep) for f in files)})

        def say() -> None:
            self.log.warning(
                "%d file(s) of service modules have no current byte-compiled copy (__pycache__, which Apache's user "
                "cannot write where they are): every Apache child compiles them from source at its start (%s); as "
                "their owner, run: python3 -m compileall -q %s", len(files),
                ", ".join(files[:3]) + (", ..." if len(files) > 3 else ""), " ".join(map(shlex.quote, directories)))
        try:
            self.once("uncompiled", say)
        except OSError:         # no db_dir to note it in (said at boot): each child says it
            say()

    def install_access_control(self) -> None:
        """Load the ACL files once per server start and make the dispatcher check every call.

        A policy that cannot be loaded is never half-applied: this process then
        refuses every call (fails closed) and says why in the error log.
        """
        acl_dir = self.config.acl_dir
        try:
            acl_db = self.dbs.open(acl_store.DB_NAME)
        except (OSError, RuntimeError) as e:
            self.guard = acl_store.Guard(None, self.log)
            self.guard.broken = "cannot open %s: %s" % (self.dbs.path(acl_store.DB_NAME), e)
        else:
            self.guard = acl_store.Guard(acl_db, self.log)
            try:
                retention = acl_store.AuditRetention(self.config.acl_audit_keep, self.config.acl_audit_days)
                self.once("acl-load", lambda: acl_store.load_files(
                    acl_db, acl_dir, "server start, pid %d" % self.pid, retention))
            except AclError as e:
                self.guard.broken = str(e)
        if self.guard.broken:
            self.log.critical("access control: %s; every call will be refused until this is fixed", self.guard.broken)
        else:
            self.guard.refresh()
        self.dispatcher.authorise = self.guard.authorise

    def install_credentials(self) -> None:
        """Passwords checked by this host against ``[server] htpasswd``, throttled in ``throttle.tdb`` and
        remembered in ``checked.tdb``, and sessions signed with ``[server] session_key`` kept in
        ``sessions.tdb``, all shared by every child
        (:mod:`clarens.credentials`).  Without the throttle's table no credentials are checked, and without
        the session key or table no session: each request carrying such is refused (503), and the error
        log says why."""
        cfg = self.config
        htpasswd = passwords.Htpasswd(cfg.htpasswd) if cfg.htpasswd else None
        checker = None
        try:
            counts = throttle.Throttle(self.dbs.open(throttle.DB_NAME))
            if htpasswd is not None:
                checker = passwords.Checker(htpasswd, passwords.Turns(cfg.db_dir, "password-check",
                                                                      passwords.CHECKS_AT_ONCE, passwords.TURN_WAIT),
                                            shared=self.dbs.open(passwords.DB_NAME))
        except (OSError, RuntimeError) as e:
            self.log.critical("cannot open the tables of %s (%s): every request with credentials will be refused",
                              cfg.db_dir, e)
            return
        key_path = cfg.session_key or os.path.join(cfg.db_dir, sessions.KEY_NAME)
        try:       # a key of this host's own is made at its first start; a cluster's is deployed
            key = sessions.load_key(key_path, make=cfg.session_key is None)
            kept: sessions.Sessions | None = sessions.Sessions(
                self.dbs.open(sessions.DB_NAME), key, cfg.session_idle, cfg.session_lifetime,
                htpasswd.entry if htpasswd is not None else lambda name: None, cluster=bool(cfg.session_peers))
        except (OSError, RuntimeError, ValueError) as e:
            self.log.critical("sessions unavailable (%s: %s): every session token will be refused", key_path, e)
            kept = None
        if cfg.session_peers and cfg.session_key is None:
            self.log.critical("session_peers without session_key: each host signs sessions with a key of its own, "
                              "so a session is valid only on the host that opened it")
        # A quarter of the workers at most sleep on throttled attempts: the rest are answered at once.
        tarpits = passwords.Turns(cfg.db_dir, "tarpit", max(1, cfg.workers // 4))
        self.credentials = Credentials(checker, counts, tarpits, kept, cfg.passwords_over_http)

    def fetch_revocations(self) -> None:
        """Fetch the session revocations of ``[server] session_peers`` in the background, in one process
        of this server at a time (:mod:`clarens.session_peers`)."""
        kept = self.credentials.sessions if self.credentials is not None else None
        if kept is None or not self.config.session_peers:
            return
        try:
            status = self.dbs.open(session_peers.DB_NAME)
        except (OSError, RuntimeError) as e:
            self.log.critical("session revocations will not be fetched from session_peers: cannot open %s (%s)",
                              self.dbs.path(session_peers.DB_NAME), e)
            return
        session_peers.Peers(kept, self.config.session_peers, self.config.session_sync,
                            os.path.join(self.config.db_dir, session_peers.LOCK_NAME), self.log, status).start()

    def session_sync(self, with_urls: bool) -> tuple[list[dict], list[str]]:
        """Per peer of ``[server] session_peers``, when its revocations were last fetched and the last
        error, and a problem for each not fetched from within the bound (:func:`session_peers.report`)."""
        if not self.config.session_peers:
            return [], []
        try:
            status = self.dbs.open(session_peers.DB_NAME)
            return session_peers.report(status, self.config.session_peers, self.config.session_sync, time.time(),
                                        self.started, with_urls)
        except (OSError, RuntimeError) as e:
            return [], ["the state of the session revocations' fetching cannot be read (%s)" % e]

    def refuse_credentials(self, address: str, error: IdentityRefused) -> None:
        """Log credentials refused to the client at ``address`` (rate-limited and summarised across the
        server with the other refusals: a flood of guesses writes a few lines)."""
        self.refusals.refuse(error.kind, address, "%s: credentials refused: %s" % (address, error.detail))

    def _init_args(self, name: str) -> tuple:
        return self.config.for_module(name), self.dbs, log_mod.for_module(name)


_lock = threading.RLock()   # reentrant: standalone() boots under it
_host: Host | None = None


def boot(options: Mapping[str, str] | None = None, path: str | None = config_mod.DEFAULT_CONFIG,
         standalone: bool = False) -> Host:
    """Build this process's host from the config file and ``clarens.*`` options, and load modules.

    ``standalone``: a server of this one process, outside Apache (an SSH session, a
    ``local:`` client), run by an OS user: its databases go in ``[server] session_db_dir``
    (unless ``clarens.server.db_dir`` is given), and each start is a server start.
    Raises config.ConfigError if the configuration is unusable.
    """
    global _host
    with _lock:
        cfg = config_mod.load(path, options)
        if standalone and not (options and "clarens.server.db_dir" in options):
            own = dict(options or {}, **{"clarens.server.db_dir": os.path.expanduser(cfg.server["session_db_dir"])})
            cfg = config_mod.load(path, own)
        log = log_mod.setup(cfg.log_level)
        try:
            os.makedirs(cfg.db_dir, mode=0o700, exist_ok=True)
        except OSError as e:
            log.error("db_dir %s cannot be created (%s): modules using databases will fail", cfg.db_dir, e.strerror)
        host = Host(cfg, log, standalone)
        _host = host
        if cfg.access_control:
            host.install_access_control()
        else:
            log.warning("access_control = off: every method is open to every caller")
        host.install_credentials()
        if not standalone:
            host.fetch_revocations()
        host.load_modules()
        return host


def current() -> Host:
    """The booted host (RuntimeError before :func:`boot`)."""
    if _host is None:
        raise RuntimeError("the Clarens host has not been booted in this process")
    return _host


def current_or_none() -> Host | None:
    """The booted host, or None before :func:`boot`."""
    return _host


def standalone(path: str) -> Host:
    """The host this process runs by itself from the configuration at ``path`` (a ``local:``
    client's), booted on first use; every later call naming the same configuration gets it.
    ValueError if this process already runs a host from another configuration; ConfigError
    if the configuration is unusable."""
    with _lock:
        host = _host or boot(None, path, standalone=True)
    if host.config.path != path:
        raise ValueError("this process already runs a %shost from %s" % ("local " if host.standalone else "",
                                                                         host.config.path))
    return host
