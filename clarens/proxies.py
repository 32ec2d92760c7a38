# SPDX-License-Identifier: Apache-2.0
"""Requests that reach the host through a trusted front end: HAProxy terminating TLS.

Why this exists: behind a front end that terminates TLS (conf/haproxy/clarens.cfg),
Apache no longer sees the client's certificate, address or scheme on the
connection; the front end saw them, and passes them in headers:

``X-Clarens-Client-DN``
    the subject DN, in RFC 2253 form as mod_ssl gives it, of a client certificate
    the front end verified against the CA; absent when the client presented none;
``X-Forwarded-For``
    the client's address (the last entry: the one the front end itself added);
``X-Forwarded-Proto``
    ``https`` or ``http``, as the client connected (for the cross-site check).

Anyone can send headers, so they are believed only on a connection whose peer is
an address in ``[server] trusted_proxies``, and the front end deletes any copy a
client sent.  A client DN header arriving from anywhere else is a forgery: the
identity step refuses the request with a logged fault (:mod:`clarens.identity`)
rather than serving it as someone else, or silently as anonymous.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Any

CLIENT_DN_HEADER = "X-Clarens-Client-DN"
FOR_HEADER = "X-Forwarded-For"
PROTO_HEADER = "X-Forwarded-Proto"
_MEMO_LIMIT = 1024     # peer addresses remembered per process (they come from outside: bounded)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Forwarded:
    """What a trusted front end says about the client of one request."""
    proxy: str                  # the front end's address (the connection's peer)
    client_dn: str | None       # the verified certificate's subject DN, None without one
    address: str | None         # the client's address, None if the front end sent none
    scheme: str | None          # "https" or "http", None if the front end did not say


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(text.strip())
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped    # an IPv4 peer accepted on an IPv6 socket
    return ip


class TrustedProxies:
    """The front ends whose forwarding headers this host believes (``[server] trusted_proxies``)."""

    def __init__(self, networks: tuple[Network, ...] = ()):
        self.networks = networks
        self._memo: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __repr__(self) -> str:
        return "TrustedProxies(%s)" % " ".join(str(n) for n in self.networks)

    def trusts(self, address: str | None) -> bool:
        """Whether ``address`` (a connection's peer) is one of the trusted front ends."""
        if not address or not self.networks:
            return False
        known = self._memo.get(address)
        if known is None:
            try:
                ip = _address(address)
                known = any(ip in network for network in self.networks)
            except ValueError:
                known = False
            if len(self._memo) < _MEMO_LIMIT:
                self._memo[address] = known
        return known

    def forwarded(self, req: Any) -> Forwarded | None:
        """What the front end says about ``req``'s client (a mod_python request), or None when the
        connection does not come from a trusted front end (its forwarding headers then mean nothing)."""
        if not self.networks:
            return None
        peer = req.connection.client_ip       # the TCP peer, whatever any header claims
        if not self.trusts(peer):
            return None
        headers = req.headers_in
        forwarded_for = headers.get(FOR_HEADER)
        address = forwarded_for.rpartition(",")[2].strip() if forwarded_for else None
        try:
            address = str(_address(address)) if address else None
        except ValueError:
            address = None
        scheme = (headers.get(PROTO_HEADER) or "").strip().lower()
        return Forwarded(peer, headers.get(CLIENT_DN_HEADER), address,
                         scheme if scheme in ("http", "https") else None)


def trust_digest(trusted: TrustedProxies, cluster: bool) -> str:
    """SHA-256 (hex) of whom a host believes about its callers: its trusted front ends (as networks,
    in order, repeats aside) and whether it is one of a cluster.  Hosts of one cluster must have
    the same; a host started without ``trusted_proxies`` (or with the wrong ones) has another, and
    its health check takes it out."""
    networks = " ".join(sorted({str(n) for n in trusted.networks}))
    return hashlib.sha256(("trusted_proxies=%s\ncluster=%s\n" % (networks, "on" if cluster else "off"))
                          .encode("ascii")).hexdigest()


def parse(text: str) -> TrustedProxies:
    """``[server] trusted_proxies``: addresses or networks (``10.0.0.5``, ``10.0.1.0/28``, ``::1``),
    separated by spaces or commas.  ValueError naming a bad one."""
    networks = []
    for item in text.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError("%r is not an IP address or network" % item) from None
    return TrustedProxies(tuple(networks))
