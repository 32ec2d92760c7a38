# SPDX-License-Identifier: Apache-2.0
"""Demo credentials for the private instance: a small test CA and htpasswd users.

Created once, under the instance's state directory, with ``openssl`` and
``htpasswd`` (argv lists, no shell):

* ``pki/ca.crt``: the test CA Apache trusts for client certificates;
* ``pki/server.crt``: the HTTPS server certificate for 127.0.0.1 and localhost;
* ``pki/demo-user.{crt,key,p12}`` and ``pki/demo-admin.{crt,key,p12}``: client
  certificates for ``/C=UK/O=Clarens Demo/CN=Demo User`` and ``.../CN=Demo
  Administrator`` (the ``.p12`` bundles, password ``demo``, are for browsers);
* ``htpasswd`` with the users ``demo`` and ``admin`` and random passwords, kept in
  ``credentials.txt`` (mode 0600).

Never use any of this outside development: the CA key sits beside its certificate.
"""

from __future__ import annotations

import os
import secrets
import subprocess

ORG = "/C=UK/O=Clarens Demo"
CLIENTS = {"demo-user": ORG + "/CN=Demo User", "demo-admin": ORG + "/CN=Demo Administrator"}
USERS = ("demo", "admin")
P12_PASSWORD = "demo"


def _openssl(*args: str) -> None:
    out = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (args[0], out.stderr.strip()))


def _new_key_args(key: str) -> list[str]:
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key]


def issue(pki_dir: str, name: str, subject: str, usage: str = "clientAuth", days: int = 825,
          ca: str = "ca", alt_names: str | None = None) -> tuple[str, str]:
    """Sign a new certificate for ``subject`` with CA ``ca``; returns (crt, key) paths."""
    crt, key = os.path.join(pki_dir, name + ".crt"), os.path.join(pki_dir, name + ".key")
    ext = ["-addext", "basicConstraints=critical,CA:FALSE", "-addext", "extendedKeyUsage=" + usage]
    if alt_names:
        ext += ["-addext", "subjectAltName=" + alt_names]
    old = os.umask(0o077)
    try:
        _openssl("req", "-x509", "-new", *_new_key_args(key), "-subj", subject, "-days", str(days),
                 "-CA", os.path.join(pki_dir, ca + ".crt"), "-CAkey", os.path.join(pki_dir, ca + ".key"), *ext,
                 "-out", crt)
    finally:
        os.umask(old)
    return crt, key


def make_ca(pki_dir: str, name: str = "ca", subject: str = ORG + "/CN=Clarens Demo CA") -> str:
    """A self-signed CA; returns its certificate's path."""
    crt = os.path.join(pki_dir, name + ".crt")
    old = os.umask(0o077)
    try:
        _openssl("req", "-x509", "-new", *_new_key_args(os.path.join(pki_dir, name + ".key")), "-subj", subject,
                 "-days", "3650", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", crt)
    finally:
        os.umask(old)
    os.chmod(crt, 0o644)
    return crt


BCRYPT_COST = 10     # htpasswd's -C: 2^10 rounds, about 50 ms of CPU for each request that carries a password


def ensure(state_dir: str, apache_gid: int = -1) -> dict[str, str]:
    """Create whatever is missing; returns the paths worth showing a user.  ``apache_gid``: the
    group of Apache's children, which must read the htpasswd file (-1: leave it to the caller's)."""
    pki = os.path.join(state_dir, "pki")
    os.makedirs(pki, mode=0o700, exist_ok=True)
    if not os.path.exists(os.path.join(pki, "ca.crt")):
        make_ca(pki)
    if not os.path.exists(os.path.join(pki, "server.crt")):
        issue(pki, "server", "/CN=localhost", "serverAuth", alt_names="DNS:localhost,IP:127.0.0.1")
    paths = {"ca": os.path.join(pki, "ca.crt")}
    for name, subject in CLIENTS.items():
        if not os.path.exists(os.path.join(pki, name + ".crt")):
            crt, key = issue(pki, name, subject)
            _openssl("pkcs12", "-export", "-in", crt, "-inkey", key, "-out", os.path.join(pki, name + ".p12"),
                     "-passout", "pass:" + P12_PASSWORD)
        paths[name] = os.path.join(pki, name + ".crt")
    credentials = os.path.join(state_dir, "credentials.txt")
    if not os.path.exists(credentials):
        htpasswd = os.path.join(state_dir, "htpasswd")
        lines: list[str] = []
        for user in USERS:
            password = secrets.token_urlsafe(12)
            subprocess.run(["htpasswd", "-bB" + ("c" if not lines else ""), "-C", str(BCRYPT_COST), htpasswd, user,
                            password], check=True, capture_output=True)
            lines.append("%s %s\n" % (user, password))
        os.chown(htpasswd, -1, apache_gid)
        os.chmod(htpasswd, 0o640)   # Apache's children read it (their group); nobody else
        fd = os.open(credentials + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.writelines(lines)
        os.replace(credentials + ".tmp", credentials)
    paths["credentials"] = credentials
    return paths


def credentials(state_dir: str) -> dict[str, str]:
    """The demo users' passwords: {user: password}."""
    with open(os.path.join(state_dir, "credentials.txt")) as f:
        return dict(line.split(" ", 1) for line in f.read().splitlines() if line)
