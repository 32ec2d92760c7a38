"""Command-line client for the burner service.

    python3 -m clarens.client [CONNECTION] burn IMAGE.iso [--drive D] [--speed N] [--no-verify]
    python3 -m clarens.client [CONNECTION] upload IMAGE.iso
    python3 -m clarens.client [CONNECTION] images | drives | jobs | whoami
    python3 -m clarens.client [CONNECTION] status JOB | cancel JOB | eject DRIVE | delete NAME

``burn`` uploads the image unless the server already has it (same name and
SHA-256), starts the burn, shows a live progress bar until the job ends, then
prints the verification result; it exits 0 only if the disc verified.

CONNECTION: ``--url`` (default http://127.0.0.1:8080/clarens/), and either
``--user NAME`` (password from ``CLARENS_PASSWORD`` or a prompt) or ``--cert
FILE --key FILE`` (a client certificate, over https); ``--cacert FILE`` trusts
the server's CA.  ``./run burn IMAGE`` runs ``burn`` against the private
instance as its demo user.
"""

from __future__ import annotations

import argparse
import base64
import collections
import getpass
import hashlib
import json
import os
import ssl
import sys
import time
import urllib.parse
import xmlrpc.client
from typing import Any

from clarens import resumable

ACTIVE = ("queued", "burning", "verifying")


class Connection:
    """XML-RPC calls and image uploads to one server, as one identity."""

    def __init__(self, url: str, user: str | None = None, password: str | None = None, cert: str | None = None,
                 key: str | None = None, cacert: str | None = None):
        self.url = url if url.endswith("/") else url + "/"
        self.parts = urllib.parse.urlsplit(self.url)
        self.context = None
        if self.parts.scheme == "https":
            self.context = ssl.create_default_context(cafile=cacert)
            if cert:
                self.context.load_cert_chain(cert, key)
        self.headers = {}
        if user:
            token = base64.b64encode(("%s:%s" % (user, password or "")).encode("utf-8")).decode("ascii")
            self.headers["Authorization"] = "Basic " + token
        # Any: what a call returns is whatever the server sent (typeshed's union of every marshallable type
        # could not even be indexed), and the methods are the server's, not ServerProxy's.
        self.proxy: Any = xmlrpc.client.ServerProxy(self.url, transport=_Transport(self.headers, self.context),
                                               allow_none=True, use_builtin_types=True)

    def upload(self, path: str, name: str, progress: resumable.Progress | None = None) -> dict:
        """Upload the file at ``path`` as image ``name``, resuming after dropped connections (and
        where an earlier run stopped); the server's record of the image."""
        url = self.url + "images/" + urllib.parse.quote(name)
        return resumable.upload(resumable.Target(url, self.headers, self.context), path, progress)["image"]


class _Transport(xmlrpc.client.SafeTransport):
    """xmlrpc.client transport that adds our headers, over http or https."""

    def __init__(self, headers: dict, context: ssl.SSLContext | None):
        super().__init__(context=context)
        self._extra = headers
        self._https = context is not None

    def make_connection(self, host):
        if self._https:
            return super().make_connection(host)
        return xmlrpc.client.Transport.make_connection(self, host)

    def send_headers(self, connection, headers):
        super().send_headers(connection, headers + list(self._extra.items()))


def bar(fraction: float, width: int = 30) -> str:
    filled = int(round(max(0.0, min(1.0, fraction)) * width))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return "%d:%02d:%02d" % (seconds // 3600, seconds // 60 % 60, seconds % 60) if seconds >= 3600 \
        else "%d:%02d" % (seconds // 60, seconds % 60)


def _megabytes(n: int) -> str:
    return "%.1f MB" % (n / 1e6) if n < 10**10 else "%.2f GB" % (n / 1e9)


class Meter:
    """One progress line, redrawn in place: bar, percent, bytes, rate and time left.

    The rate is measured over the last ``WINDOW`` seconds, so that it follows a
    transfer whose speed changes (and ignores what a resumed upload already had).
    """

    WINDOW = 5.0
    REDRAW = 0.2     # seconds between two redraws (the last one is always drawn)

    def __init__(self, label: str, out=sys.stdout, clock=time.monotonic):
        self.label = label
        self.out = out
        self.clock = clock
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._drawn = (float("-inf"), 0)     # when, and how wide, the line was last drawn

    def line(self, done: int, total: int, state: str = "") -> str:
        """The text for ``done`` of ``total`` bytes now (and remember the sample)."""
        now = self.clock()
        if self._samples and done < self._samples[-1][1]:
            self._samples.clear()                     # a new phase (burning, then verifying)
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[1][0] > self.WINDOW:
            self._samples.popleft()
        (t0, d0), rate = self._samples[0], 0.0
        if now > t0 and done > d0:
            rate = (done - d0) / (now - t0)
        fraction = done / total if total else 1.0
        left = "%s left" % _duration((total - done) / rate) if rate and done < total else ""
        return "\r%s %s %5.1f%% %s/%s %s %-14s %s" % (
            self.label, bar(fraction), 100 * fraction, _megabytes(done), _megabytes(total),
            "%7.1f MB/s" % (rate / 1e6) if rate else "      - MB/s", left, state)

    def __call__(self, done: int, total: int, state: str = "") -> None:
        now = self.clock()
        if now - self._drawn[0] < self.REDRAW and done < total:
            return
        text = self.line(done, total, state).rstrip()
        self.out.write(text.ljust(self._drawn[1]))     # cover what a longer line left behind
        self.out.flush()
        self._drawn = (now, len(text))


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def burn(conn: Connection, path: str, drive: str | None, speed: int | None, verify: bool, out=sys.stdout) -> int:
    """Upload if needed, burn, follow the job to its end; 0 if it is done (and verified)."""
    name = os.path.basename(path)
    digest = sha256_of(path)
    existing = {i["name"]: i for i in conn.proxy.burner.images()}
    if name in existing and existing[name]["sha256"] != digest:
        out.write("error: the server has a different image called %s; rename your file\n" % name)
        return 2
    if name not in existing:
        conn.upload(path, name, Meter("upload", out))
        out.write("\n")
    if drive is None:
        drive = conn.proxy.burner.drives()[0]["name"]
    options: dict[str, bool | int] = {"verify": verify}
    if speed:
        options["speed"] = speed
    job_id = conn.proxy.burner.burn(name, drive, options)
    out.write("job %d: burning %s to %s\n" % (job_id, name, drive))
    meter = Meter("job %d" % job_id, out)
    while True:
        job = conn.proxy.burner.status(job_id)
        meter((job.get("progress") or {}).get("bytes", 0), job.get("image_size") or 0, job["state"])
        if job["state"] not in ACTIVE:
            break
        time.sleep(0.5)
    out.write("\n")
    verification = job.get("verification") or {}
    if job["state"] != "done":
        out.write("job %d %s: %s\n" % (job_id, job["state"], job.get("error") or ""))
        return 1
    if verify:
        out.write("image SHA-256: %s\ndisc  SHA-256: %s\n%s\n" % (
            verification.get("image_sha256"), verification.get("disc_sha256"),
            "verified: the disc matches the image" if verification.get("match") else "VERIFICATION FAILED"))
        return 0 if verification.get("match") else 1
    out.write("done (not verified)\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m clarens.client", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--url", default=os.environ.get("CLARENS_URL", "http://127.0.0.1:8080/clarens/"))
    parser.add_argument("--user", default=os.environ.get("CLARENS_USER"))
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--cacert")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("burn", help="upload if needed, burn, follow, verify")
    b.add_argument("image")
    b.add_argument("--drive")
    b.add_argument("--speed", type=int)
    b.add_argument("--no-verify", action="store_true")
    sub.add_parser("upload").add_argument("image")
    for name in ("images", "drives", "jobs", "whoami"):
        sub.add_parser(name)
    for name, arg in (("status", "job"), ("cancel", "job"), ("eject", "drive"), ("delete", "name")):
        sub.add_parser(name).add_argument(arg, type=int if arg == "job" else str)
    args = parser.parse_args(argv)
    password = None
    if args.user:
        password = os.environ.get("CLARENS_PASSWORD") or getpass.getpass("password for %s: " % args.user)
    conn = Connection(args.url, args.user, password, args.cert, args.key, args.cacert)
    p = conn.proxy
    try:
        if args.command == "burn":
            return burn(conn, args.image, args.drive, args.speed, not args.no_verify)
        result = {"upload": lambda: conn.upload(args.image, os.path.basename(args.image), Meter("upload", sys.stderr)),
                  "images": p.burner.images, "drives": p.burner.drives, "jobs": p.burner.jobs,
                  "whoami": p.system.whoami, "status": lambda: p.burner.status(args.job),
                  "cancel": lambda: p.burner.cancel(args.job), "eject": lambda: p.burner.eject(args.drive),
                  "delete": lambda: p.burner.delete_image(args.name)}[args.command]()
        print(json.dumps(result, indent=2, default=str))
    except xmlrpc.client.Fault as fault:
        print("error %d: %s" % (fault.faultCode, fault.faultString), file=sys.stderr)
        return 1
    except (OSError, resumable.UploadRefused, resumable.UploadFailed, xmlrpc.client.ProtocolError) as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
