# SPDX-License-Identifier: Apache-2.0
"""Sessions: a caller proves who it is once (a password, a client certificate) and carries a token after.

A token is signed, not looked up: ``cs1.SID.ISSUED.EXPIRES.SEEN.SOURCE.FP.NAME.MAC``,
where MAC is HMAC-SHA256 under the host's session key over everything before it.
So verifying one costs microseconds (no bcrypt; two reads of a local table), every
Apache child and a restarted Apache accept it, and so does every host that holds
the same key (``[server] session_key``, deployed like the policy files): a session
opened through HAProxy on one host is valid on the others.  A token signed with
another key (another host's, a forgery) or altered in any byte is refused.

What a token says:

``SID``      16 random bytes: the session, which the host knows only by a digest of it;
``ISSUED``   when it was opened, in microseconds (a revocation of a user's sessions ends
             those opened before it, not one opened the same second after);
``EXPIRES``  its absolute end (``session_lifetime_hours``);
``SEEN``     when the token was last handed out: a token in use is renewed now and then
             (a new ``SEEN``, :meth:`Sessions.renewal`), so that any host can tell a session
             idle for ``session_idle_minutes`` from one in use elsewhere;
``SOURCE``   how the caller proved who it is (``basic``: a password; ``certificate``);
``FP``       for a password session, a keyed digest of the user's htpasswd entry when it
             opened: a new password (``clarens-admin user passwd``) or a deleted user ends
             every session of that user at once, on every host the htpasswd file reaches;
``NAME``     the identity (base64url of its UTF-8): the session carries the identity, never
             a decision; groups and the ACL are applied per request as for anyone.

What the host keeps, in ``db_dir/sessions.tdb`` (digests of session ids, never a token):

``s:ID``      a session this host has seen: identity, source, when it opened and ends, when
              last seen (written at most once every :data:`SEEN_EVERY` seconds), from
              where, and ``revoked`` once it is signed out or revoked;
``u:NAME``    every session of NAME opened before ``before`` is revoked;
``e:SEQ``     the revocations made on this host, numbered (``first`` to ``seq``), for the
              other hosts of a cluster to fetch (:mod:`clarens.session_peers`); each is kept
              for a session lifetime, after which every session it concerns has ended;
``p:URL``     how far this host has read another host's revocations (written when it moves);
``host``      this table's random name (a host that finds its own in a peer's answer
              skips that peer: every host may list every host).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable

from clarens.db import Database

DB_NAME = "sessions"
KEY_NAME = "session.key"         # in db_dir: the key of a host that has none deployed ([server] session_key)
COOKIE = "clarens_session"       # the pages' cookie
RENEWAL_HEADER = "X-Clarens-Session"   # an answer's renewed token, for a caller that sent one in a header
VERSION = "cs1"
MAX_TOKEN = 2048                 # characters: anything longer is not a token of ours
SEEN_EVERY = 60.0                # seconds between two writes of a session's last use, per host
PRUNE_EVERY = 600.0              # seconds between two sweeps of ended sessions
SOURCES = ("basic", "certificate")   # how a session may be opened
NO_FINGERPRINT = "-"
PEER_SKEW = 60.0                 # seconds a peer's signed request may be off this host's clock
SESSION_ID = re.compile(r"[0-9a-f]{32}\Z")
MEMO = 4096                      # tokens a process remembers having verified


class SessionRefused(Exception):
    """A token this host does not accept (forged, malformed, expired, revoked...): the message says why."""


@dataclass(frozen=True)
class Session:
    """A verified session."""
    id: str                  # the digest of its SID: what the host and its administrators call it
    name: str
    source: str
    issued: float
    expires: int
    seen: int                # as the token says: when it was last handed out

    def describe(self, idle: float) -> dict:
        return {"id": self.id, "identity": self.name, "source": self.source, "issued": int(self.issued),
                "expires": self.expires, "idle_timeout": int(idle)}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def digest(sid: str) -> str:
    """What a session id is known by on the host: the first 128 bits of its SHA-256, in hex."""
    return hashlib.sha256(sid.encode("ascii")).hexdigest()[:32]


def write_key(path: str, replace: bool = False, gid: int = -1) -> None:
    """A new session key in the file at ``path`` (64 hex digits; mode 0600, or 0640 for group ``gid``),
    written whole: replacing any there if ``replace``, else only if there is none (when processes race,
    one key wins)."""
    tmp = "%s.%s.tmp" % (path, secrets.token_hex(8))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.write(fd, secrets.token_hex(32).encode("ascii") + b"\n")
            if gid >= 0:
                os.fchown(fd, -1, gid)
                os.fchmod(fd, 0o640)
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_key(path: str, make: bool = False) -> bytes:
    """The session key in the file at ``path`` (hex), made (mode 0600) if there is none and ``make``.
    OSError if it cannot be read or made; ValueError if it is not a key."""
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except FileNotFoundError:
        if not make:
            raise
        write_key(path)
        return load_key(path)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 16:
        raise ValueError("%s does not hold a session key (at least 32 hex digits)" % path)
    return key


class Sessions:
    """The sessions of one host (or of every host sharing ``key``), kept in ``db``.

    ``entry(name)`` is the user's current htpasswd entry (None: no such user); ``idle`` and
    ``lifetime`` are seconds; ``cluster``: other hosts fetch this host's revocations, so one
    of a session this host never saw is kept all the same.
    """

    def __init__(self, db: Database, key: bytes, idle: float, lifetime: float,
                 entry: Callable[[str], bytes | None], clock: Callable[[], float] = time.time,
                 cluster: bool = False):
        self.db = db
        self.key = key
        self.idle = idle
        self.lifetime = lifetime
        self.entry = entry
        self.clock = clock
        self.cluster = cluster
        # token -> (session, the table's change counter then, until when)
        self._verified: dict[str, tuple[Session, int, float]] = {}
        self._host_id: str | None = None

    # -- tokens -------------------------------------------------------------------------------

    def _mac(self, text: str) -> str:
        return _b64(hmac.digest(self.key, text.encode("utf-8"), "sha256"))

    def _fingerprint(self, name: str) -> str | None:
        """A keyed digest of user ``name``'s htpasswd entry (None: no such user)."""
        entry = self.entry(name)
        if entry is None:
            return None
        return _b64(hmac.digest(self.key, b"htpasswd\0%s\0%s" % (name.encode("utf-8"), entry), "sha256")[:12])

    def _token(self, sid: str, issued: float, expires: int, seen: int, source: str, fingerprint: str,
               name: str) -> str:
        body = ".".join((VERSION, sid, str(round(issued * 1e6)), str(expires), str(seen), source, fingerprint,
                         _b64(name.encode("utf-8"))))
        return body + "." + self._mac(body)

    def _parse(self, token: str) -> tuple[str, float, int, int, str, str, str]:
        """(sid, issued, expires, seen, source, fingerprint, name) of a token signed with this key."""
        if len(token) > MAX_TOKEN or not token.isascii():
            raise SessionRefused("malformed session token")
        body, _, mac = token.rpartition(".")
        fields = body.split(".")
        if len(fields) != 8 or fields[0] != VERSION:
            raise SessionRefused("malformed session token")
        if not hmac.compare_digest(mac, self._mac(body)):
            raise SessionRefused("not a session of this server (forged, altered, or signed with another key)")
        _, sid, issued, expires, seen, source, fingerprint, name = fields
        try:
            return (sid, int(issued) / 1e6, int(expires), int(seen), source, fingerprint,
                    _unb64(name).decode("utf-8"))
        except (ValueError, binascii.Error):    # signed with our key, so never: unless the key leaked
            raise SessionRefused("malformed session token") from None

    # -- opening, verifying, renewing ---------------------------------------------------------

    def open(self, name: str, source: str, address: str = "-", agent: str = "") -> tuple[str, Session]:
        """A new session for ``name``, who proved it by ``source``: (token, session).  ValueError if
        ``source`` cannot open one, or a password user no longer exists."""
        if source not in SOURCES:
            raise ValueError("a session is opened with a password or a client certificate, not %s" % source)
        fingerprint = self._fingerprint(name) if source == "basic" else NO_FINGERPRINT
        if fingerprint is None:
            raise ValueError("no user %r" % name)
        now = self.clock()
        sid = _b64(secrets.token_bytes(16))
        session = Session(digest(sid), name, source, round(now * 1e6) / 1e6, int(now + self.lifetime), int(now))
        self.db.put("s:" + session.id, {"name": name, "source": source, "issued": session.issued,
                                        "expires": session.expires, "seen": session.seen, "address": address[:64],
                                        "agent": agent[:120]})
        self._prune(now)
        return self._token(sid, session.issued, session.expires, session.seen, source, fingerprint, name), session

    def verify(self, token: str) -> Session:
        """The session ``token`` stands for; SessionRefused saying why it is not one (any more).

        A token this process verified lately is taken on two comparisons while the table has not
        changed since (its change counter: a revocation, a last use written, a session opened, in any
        process) and its session can be neither over nor idle yet: what the full check would find then
        is what it found.  Within a minute, when the session's last use is due to be written, it is
        checked in full again, the user's htpasswd entry included: a password changed with
        ``clarens-admin`` revokes the user's sessions in the table too (at once), one changed by other
        means (the file edited or copied in) ends them within that minute.
        """
        now = self.clock()
        memo = self._verified.get(token)
        if memo is not None and memo[1] == self.db.seqnum and now < memo[2]:
            return memo[0]
        seqnum = self.db.seqnum
        session, until = self._verify(token, now)
        if len(self._verified) >= MEMO:
            self._verified.clear()
        self._verified[token] = (session, seqnum, until)
        return session

    def _verify(self, token: str, now: float) -> tuple[Session, float]:
        """The full check: the session, and until when a process may take it again without one."""
        sid, issued, expires, seen, source, fingerprint, name = self._parse(token)
        if now >= expires:
            raise SessionRefused("session expired (it lasts %g hours): sign in again" % (self.lifetime / 3600))
        session = Session(digest(sid), name, source, issued, expires, seen)
        record = self.db.get("s:" + session.id)
        if record is not None and record.get("revoked"):
            raise SessionRefused("session ended (signed out or revoked): sign in again")
        written = record["seen"] if record is not None else None
        last = max(seen, written or 0)
        if now - last > self.idle:
            raise SessionRefused("session expired (unused for %g minutes): sign in again" % (self.idle / 60))
        revoked = self.db.get("u:" + name)
        if revoked is not None and issued <= revoked["before"]:
            raise SessionRefused("session revoked by an administrator: sign in again")
        if source == "basic" and fingerprint != self._fingerprint(name):
            raise SessionRefused("the user's password changed, or the user was removed: sign in again")
        if written is None or now - written >= SEEN_EVERY:
            written = last = int(now)
            self._seen(session, written)
        # in full again once the session could have ended, or its last use is due to be written
        return session, min(expires, last + self.idle, written + SEEN_EVERY)

    def _seen(self, session: Session, now: int) -> None:
        """Write when ``session`` was last used here: at most one write a minute per session and host,
        enough for an idle timeout of minutes.  Read again under the lock: a revocation written since
        the caller read the record must stay."""
        key = "s:" + session.id
        with self.db.locked():
            record = self.db.get(key) or {"name": session.name, "source": session.source,
                                          "issued": session.issued, "expires": session.expires}
            if not record.get("revoked"):
                self.db.put(key, dict(record, seen=now))

    def renewal(self, token: str, session: Session, now: float) -> str | None:
        """A new token for ``session`` (SEEN ``now``, nothing else changed) if the one it came with was
        handed out over a sixth of the idle timeout before; None if it is fresh enough."""
        if now - session.seen < self.idle / 6:
            return None
        sid, issued, expires, _, source, fingerprint, name = self._parse(token)
        return self._token(sid, issued, expires, int(now), source, fingerprint, name)

    # -- ending -------------------------------------------------------------------------------

    def revoke(self, session_id: str) -> bool:
        """End the session known as ``session_id`` (its id, or a prefix of at least 8 of its characters
        that names one session this host has seen) on this host, and on the hosts that fetch this host's
        revocations.  Whether it was ended: False for one this host never saw, unless it is a whole id
        and this host is one of a cluster (another host may have seen it).  ValueError for a prefix
        that names several."""
        with self.db.locked():
            key = "s:" + session_id
            record = self.db.get(key)
            if record is None and len(session_id) >= 8:
                matches = self.db.keys(key)
                if len(matches) > 1:
                    raise ValueError("%r names %d sessions: give more of its id" % (session_id, len(matches)))
                if matches:
                    key, record = matches[0], self.db.get(matches[0])
            if record is None and not (self.cluster and SESSION_ID.match(session_id)):
                return False
            end = record["expires"] if record is not None else int(self.clock() + self.lifetime)
            self.db.put(key, dict(record or {"expires": end, "seen": 0}, revoked=True))
            self._publish({"session": key[2:], "until": end})
        return True

    def revoke_user(self, name: str) -> int:
        """End every session of ``name`` opened until now, on this host and the hosts that fetch its
        revocations; how many of them this host had seen."""
        now = self.clock()
        with self.db.locked():
            self._revoke_user(name, now)
            self._publish({"user": name, "before": now})
            ended = 0
            for key, record in self.db.items("s:"):
                if record.get("name") == name and not record.get("revoked") and record["issued"] <= now:
                    self.db.put(key, dict(record, revoked=True))
                    ended += 1
        return ended

    def _revoke_user(self, name: str, before: float) -> None:
        old = self.db.get("u:" + name)
        if old is None or old["before"] < before:
            self.db.put("u:" + name, {"before": before, "until": int(before + self.lifetime)})

    def active(self, name: str | None = None) -> list[dict]:
        """The sessions this host has seen and that have not ended (of ``name`` only, if given),
        oldest first: ``{id, identity, source, issued, expires, seen, address, agent}``."""
        now = self.clock()
        out = []
        for key, record in self.db.items("s:"):
            if record.get("revoked") or record["expires"] <= now or now - record["seen"] > self.idle:
                continue
            if name is not None and record["name"] != name:
                continue
            revoked = self.db.get("u:" + record["name"])
            if revoked is not None and record["issued"] <= revoked["before"]:
                continue
            out.append({"id": key[2:], "identity": record["name"], "source": record["source"],
                        "issued": int(record["issued"]), "expires": record["expires"], "seen": record["seen"],
                        "address": record.get("address", "-"), "agent": record.get("agent", "")})
        return sorted(out, key=lambda s: s["issued"])

    def _prune(self, now: float) -> None:
        """Forget ended sessions and revocations, and revocation records every session they concern
        has outlived, at most every PRUNE_EVERY seconds (the table grows with every session opened)."""
        last = self.db.get("pruned")
        if last is not None and now - last < PRUNE_EVERY:
            return
        self.db.put("pruned", now)
        for key, record in self.db.items(("s:", "u:")):
            if record.get("expires", record.get("until", 0)) <= now:
                self.db.delete(key)
        with self.db.locked():
            first, last_seq = self.db.get("first", 1), self.db.get("seq", 0)
            while first <= last_seq:
                event = self.db.get("e:%016d" % first)
                if event is not None and event["at"] + self.lifetime > now:
                    break
                self.db.delete("e:%016d" % first)
                first += 1
            self.db.put("first", first)

    # -- the revocations other hosts fetch (clarens.session_peers) ------------------------------

    def _publish(self, event: dict[str, Any]) -> None:
        """Number a revocation made here for the other hosts (call it locked)."""
        seq = self.db.get("seq", 0) + 1
        self.db.put("seq", seq)
        self.db.put("e:%016d" % seq, dict(event, at=self.clock()))

    def host_id(self) -> str:
        """This table's random name (made on first use)."""
        if self._host_id is None:
            with self.db.locked():
                self._host_id = self.db.get("host")
                if self._host_id is None:
                    self._host_id = secrets.token_hex(8)
                    self.db.put("host", self._host_id)
        return self._host_id

    def events(self, since: int, limit: int = 1000) -> dict:
        """The revocations made here after number ``since``, at most ``limit``:
        ``{host, first, seq, events: [{seq, session, until} | {seq, user, before}]}``."""
        first, last = self.db.get("first", 1), self.db.get("seq", 0)
        out = []
        for seq in range(max(since + 1, first), min(last, since + limit) + 1):
            event = self.db.get("e:%016d" % seq)
            if event is not None:
                out.append(dict(event, seq=seq))
        return {"host": self.host_id(), "first": first, "seq": last, "events": out}

    def apply(self, events: list[dict]) -> int:
        """Revocations another host made (:meth:`events`), kept here but not published again; how many
        of them ended a session this host had seen."""
        ended = 0
        with self.db.locked():
            for event in events:
                if isinstance(event.get("session"), str) and SESSION_ID.match(event["session"]):
                    key = "s:" + event["session"]
                    record = self.db.get(key)
                    ended += record is not None and not record.get("revoked")
                    self.db.put(key, dict(record or {"expires": int(event["until"]), "seen": 0}, revoked=True))
                elif isinstance(event.get("user"), str):
                    self._revoke_user(event["user"], float(event["before"]))
        return ended

    def peer_signature(self, since: int, when: float | None = None) -> str:
        """The ``X-Clarens-Peer`` header with which a host that holds this key asks for revocations."""
        when = int(self.clock() if when is None else when)
        return "%d.%s" % (when, self._mac("revocations\0%d\0%d" % (when, since)))

    def peer_allowed(self, header: str | None, since: int) -> bool:
        """Whether ``header`` proves a request for revocations comes from a host holding this key, lately."""
        when, _, mac = (header or "").partition(".")
        if not when.isdigit() or abs(self.clock() - int(when)) > PEER_SKEW:
            return False
        return hmac.compare_digest(mac, self._mac("revocations\0%d\0%d" % (int(when), since)))
