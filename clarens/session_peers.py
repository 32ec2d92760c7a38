# SPDX-License-Identifier: Apache-2.0
"""Revocations reach every host of a cluster: each host fetches the others' every few seconds.

A session token is valid on every host that holds the session key
(:mod:`clarens.sessions`); a revocation (sign-out, ``clarens-admin session revoke``,
``session.revoke``) is written on the host that made it, numbered.  Every
``[server] session_sync_seconds`` (5), each host asks every host of ``session_peers``
for the revocations it made since the last one fetched::

    GET PEER/revocations?since=N        X-Clarens-Peer: TIME.MAC

which a peer answers only to a host holding the same key (the MAC,
:meth:`clarens.sessions.Sessions.peer_signature`).  Every host may list every host,
itself included: it recognises its own answer and skips it.

One process per host fetches: the one whose thread holds the ``flock`` on
``db_dir/session-peers.lock``; the other children's threads wait on it, and one takes
over when that process exits.  No request ever waits for a fetch.  So a revocation is
refused on every host within ``session_sync_seconds`` plus one fetch (at most
:data:`FETCH_TIMEOUT` seconds), between hosts that can reach each other.  A peer that
cannot be reached is logged when it fails and when it is back, and asked again every
round; what it revokes meanwhile reaches this host once it can be reached again.

Whether that works shows in ``/clarens/health`` (:func:`report`): the fetching process notes, per peer,
when it last fetched its revocations and the last error, in ``db_dir/session-peers.tdb``, which every
child reads; a peer not fetched from for :func:`late_after` seconds makes the host's health "degraded".
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from clarens.db import Database
from clarens.sessions import Sessions

HEADER = "X-Clarens-Peer"
LOCK_NAME = "session-peers.lock"     # in db_dir
FETCH_TIMEOUT = 2.0                  # seconds one fetch from one peer may take
MAX_ANSWER = 4 << 20                 # bytes of a peer's answer read at most
PAGE = 1000                          # revocations asked for at once
DB_NAME = "session-peers"            # session-peers.tdb in db_dir: per peer URL, its last fetch and error
ERROR_CHARS = 200                    # of an error kept and reported


def late_after(interval: float) -> float:
    """Seconds without a fetch from a peer after which the health check reports it: three rounds of
    ``interval`` and one fetch's timeout (17 s with the default 5 s)."""
    return 3 * interval + FETCH_TIMEOUT


def report(status: Database, urls: list[str], interval: float, now: float, started: float,
           with_urls: bool) -> tuple[list[dict], list[str]]:
    """For the health check: per peer of ``urls`` (numbered from 1 in their order), ``{peer, url (if
    with_urls), fetched, error, error_at}`` or ``{peer, self: true}`` for this host, from the
    ``status`` table the fetching process keeps; and a problem for each peer whose revocations have
    not been fetched for :func:`late_after` seconds (counted from its first attempt, or from
    ``started`` when there was none yet)."""
    late = late_after(interval)
    peers, problems = [], []
    for n, url in enumerate(urls, 1):
        record = status.get(url) or {}
        entry: dict = {"peer": n, "url": url} if with_urls else {"peer": n}
        if record.get("self"):
            peers.append(dict(entry, self=True))
            continue
        fetched = record.get("fetched")
        peers.append(dict(entry, fetched=fetched, error=record.get("error"), error_at=record.get("error_at")))
        waited = now - (fetched or record.get("since") or started)
        if waited > late:
            problems.append(
                "session revocations from peer %d of session_peers not fetched for %d s (more than %d s)%s: "
                "sessions revoked there may still be accepted here"
                % (n, waited, late, ": " + record["error"] if record.get("error") else ""))
    return peers, problems


class Peers:
    """Fetches the revocations of the hosts at ``urls`` (their Clarens URLs) into ``sessions``."""

    def __init__(self, sessions: Sessions, urls: list[str], interval: float, lock_path: str,
                 log: logging.Logger, status: Database, timeout: float = FETCH_TIMEOUT):
        self.sessions = sessions
        self.status = status                 # the table of DB_NAME: see report()
        self.urls = list(urls)
        self.interval = interval
        self.lock_path = lock_path
        self.log = log
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # never an environment's proxy
        self._failing: dict[str, str] = {}
        self._myself: set[str] = set()

    def start(self) -> threading.Thread:
        """Fetch from the peers every ``interval`` seconds in a thread of this process, once this process
        holds the host's lock (until then the thread waits for it, costing nothing)."""
        thread = threading.Thread(target=self._run, name="session-peers", daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)      # held until this process exits: then another child's thread takes it
        while True:
            started = time.monotonic()
            try:
                self.sync()
            except Exception:                # a bug here must not end the fetching for good
                self.log.exception("session revocations: fetching from the peers failed")
            time.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    def sync(self) -> None:
        """One round: the revocations of every peer, fetched at once."""
        urls = [u for u in self.urls if u not in self._myself]
        if urls:
            with ThreadPoolExecutor(len(urls)) as pool:
                list(pool.map(self._sync_peer, urls))

    def _sync_peer(self, url: str) -> None:
        db = self.sessions.db
        cursor = db.get("p:" + url) or {}
        kept = dict(cursor)
        try:
            while True:
                answer = self._fetch(url, cursor.get("seq", 0))
                if answer["host"] == self.sessions.host_id():
                    self._myself.add(url)
                    self.status.put(url, {"self": True})
                    return
                if answer["host"] != cursor.get("host"):       # a peer whose table is new to us: from the start
                    if cursor.get("seq"):
                        cursor = {"host": answer["host"], "seq": 0}
                        continue
                    cursor["host"] = answer["host"]
                events = answer["events"]
                ended = self.sessions.apply(events)
                if ended:
                    self.log.info("session revocations from %s ended %d session(s) seen here", url, ended)
                cursor["seq"] = max([cursor.get("seq", 0)] + [int(e["seq"]) for e in events])
                if cursor != kept:      # (a write changes the table's counter: every process checks tokens anew)
                    db.put("p:" + url, cursor)
                    kept = dict(cursor)
                if len(events) < PAGE or cursor["seq"] >= answer["seq"]:
                    break
        except (OSError, ValueError, KeyError, TypeError) as e:
            why = "it holds another session_key (it refuses this host's signature)" \
                if isinstance(e, urllib.error.HTTPError) and e.code == 403 else str(e)[:ERROR_CHARS] or type(e).__name__
            self._note(url, error=why)
            if url not in self._failing:
                self.log.warning("session revocations from %s cannot be fetched (%s): sessions it revokes stay "
                                 "valid here until it can", url, why)
            self._failing[url] = why
            return
        self._note(url)
        if self._failing.pop(url, None) is not None:
            self.log.warning("session revocations from %s are fetched again", url)

    def _note(self, url: str, error: str | None = None) -> None:
        """Note for the health check that the revocations of ``url`` were fetched now, or not (``error``)."""
        now = time.time()
        record = self.status.get(url) or {}
        record.pop("self", None)
        record.setdefault("since", now)      # the first attempt: lateness counts from it until a fetch
        if error is None:
            record["fetched"] = now
        else:
            record.update(error=error, error_at=now)
        self.status.put(url, record)

    def _fetch(self, url: str, since: int) -> dict:
        request = urllib.request.Request("%s/revocations?since=%d" % (url.rstrip("/"), since),
                                         headers={HEADER: self.sessions.peer_signature(since)})
        with self._opener.open(request, timeout=self.timeout) as response:
            data = response.read(MAX_ANSWER + 1)
        if len(data) > MAX_ANSWER:
            raise ValueError("an answer over %d bytes" % MAX_ANSWER)
        answer = json.loads(data)
        if not isinstance(answer, dict) or not isinstance(answer.get("events"), list):
            raise ValueError("not an answer of revocations")
        return answer
