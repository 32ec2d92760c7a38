# SPDX-License-Identifier: Apache-2.0
"""``clarens-burn``: burn ISO images on a Clarens host from the command line (built on clarens.client).

    clarens-burn [OPTIONS] burn IMAGE.iso [--drive D] [--speed N] [--no-verify]
    clarens-burn [OPTIONS] upload IMAGE.iso
    clarens-burn [OPTIONS] images         (also: drives, jobs, whoami, uploads)
    clarens-burn [OPTIONS] status JOB     (also: cancel JOB, eject DRIVE, delete NAME)
    clarens-burn [OPTIONS] discard NAME [--uploader WHO]

burn uploads the image unless the server already has it (same name and SHA-256),
starts the burn, shows live progress until the job ends, then prints both
digests; it exits 0 only if the disc verified.  uploads lists your unfinished
uploads and discard removes one; an administrator sees everyone's and discards
anyone's (--uploader), and delete removes any image.  The other commands print
the server's answer as JSON.

The host is --url URL (or $CLARENS_URL), or --service NAME, a service of the
client configuration (/etc/clarens/client.conf, ~/.config/clarens/client.conf);
with neither, the service "burner" there.  The other options are those of
clarens(1): --user NAME (the password from $CLARENS_PASSWORD or a prompt, when
a session must be opened: its token is kept in ~/.cache/clarens/sessions),
--cert FILE --key FILE (a client certificate, over https), --ca FILE, --protocol,
--timeout.  Options may come before or after the command.

Exit status: 0 done (burn: and verified), 1 the server refused or the burn failed,
2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import sys
import time
from typing import Any, Callable

from clarens import cli, resumable
from clarens.client import ClientConfigError, Fault, Service, TransportError

DESCRIPTION = "Burn ISO images on a Clarens host: upload, burn, follow the job, verify the disc."
DEFAULT_SERVICE = "burner"      # the client configuration's service, when no host is named
# "unreachable": a drive host that does not answer now; the job goes on there, and shows its true state again
ACTIVE = ("queued", "burning", "verifying", "unreachable")


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


def burn(svc: Service, path: str, drive: str | None, speed: int | None, verify: bool, out=sys.stdout) -> int:
    """Upload if needed, burn, follow the job to its end; 0 if it is done (and verified)."""
    name = os.path.basename(path)
    digest = sha256_of(path)
    existing = {i["name"]: i for i in svc.burner.images()}
    if name in existing and existing[name]["sha256"] != digest:
        out.write("error: the server has a different image called %s; rename your file\n" % name)
        return 2
    if name not in existing:
        svc.upload(path, name, Meter("upload", out))
        out.write("\n")
    if drive is None:
        drive = svc.burner.drives()[0]["name"]
    options: dict[str, bool | int] = {"verify": verify}
    if speed:
        options["speed"] = speed
    job_id = svc.burner.burn(name, drive, options)
    out.write("job %s: burning %s to %s\n" % (job_id, name, drive))
    meter = Meter("job %s" % job_id, out)
    while True:
        job = svc.burner.status(job_id)
        meter((job.get("progress") or {}).get("bytes", 0), job.get("image_size") or 0, job["state"])
        if job["state"] not in ACTIVE:
            break
        time.sleep(0.5)
    out.write("\n")
    verification = job.get("verification") or {}
    if job["state"] != "done":
        out.write("job %s %s: %s\n" % (job_id, job["state"], job.get("error") or ""))
        return 1
    if verify:
        out.write("image SHA-256: %s\ndisc  SHA-256: %s\n%s\n" % (
            verification.get("image_sha256"), verification.get("disc_sha256"),
            "verified: the disc matches the image" if verification.get("match") else "VERIFICATION FAILED"))
        return 0 if verification.get("match") else 1
    out.write("done (not verified)\n")
    return 0


def job_id(text: str) -> int | str:
    """A job id as given on the command line: a number, or HOST:NUMBER for a drive host's job."""
    return int(text) if text.isdigit() else text


# The options of clarens, and which host.
OPTIONS = {**cli.CONNECTION_OPTIONS, "--url": 1, "--service": 1, "--cacert": 1}


def main(argv: list[str] | None = None, prog: str = "python3 -m clarens.burner_cli") -> int:
    """The command line (see the module's documentation); the exit status."""
    parser = cli.connection_options(argparse.ArgumentParser(prog=prog, description=DESCRIPTION,
                                                            formatter_class=argparse.RawDescriptionHelpFormatter,
                                                            epilog=__doc__.split("\n\n", 1)[1]))
    parser.add_argument("--url", help="the host's URL (default: $CLARENS_URL, else the service burner)")
    parser.add_argument("--service", help="a service named in the client configuration")
    parser.add_argument("--cacert", dest="ca", help=argparse.SUPPRESS)          # the old name of --ca
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    b = sub.add_parser("burn", help="upload if needed, burn, follow, verify")
    b.add_argument("image")
    b.add_argument("--drive")
    b.add_argument("--speed", type=int)
    b.add_argument("--no-verify", action="store_true")
    sub.add_parser("upload", help="upload only").add_argument("image")
    for name, what in (("images", "the images on the server"), ("drives", "the drives and their media"),
                       ("jobs", "your jobs (an admin sees all)"), ("whoami", "who the server says you are"),
                       ("uploads", "your unfinished uploads (an admin sees all)")):
        sub.add_parser(name, help=what)
    discard = sub.add_parser("discard", help="remove an unfinished upload (yours, or --uploader's: administrators)")
    discard.add_argument("name")
    discard.add_argument("--uploader")
    for name, arg in (("status", "job"), ("cancel", "job"), ("eject", "drive"), ("delete", "name")):
        sub.add_parser(name, help="%s %s" % (name, arg.upper())).add_argument(arg, type=job_id if arg == "job" else str)
    args = parser.parse_args(cli.hoist(sys.argv[1:] if argv is None else argv, OPTIONS))
    target = args.url or args.service or os.environ.get("CLARENS_URL") or DEFAULT_SERVICE
    try:
        svc = cli.open_service(target, args)
    except (ClientConfigError, ValueError, OSError) as e:
        print("%s: %s" % (prog, e), file=sys.stderr)
        return 2
    try:
        if args.command == "burn":
            return burn(svc, args.image, args.drive, args.speed, not args.no_verify)
        burner = svc.burner
        actions: dict[str, Callable[[], Any]] = {
            "upload": lambda: svc.upload(args.image, os.path.basename(args.image), Meter("upload", sys.stderr)),
            "images": burner.images, "drives": burner.drives, "jobs": burner.jobs, "whoami": svc.system.whoami,
            "status": lambda: burner.status(args.job), "cancel": lambda: burner.cancel(args.job),
            "eject": lambda: burner.eject(args.drive), "delete": lambda: burner.delete_image(args.name),
            "uploads": burner.uploads,
            "discard": lambda: burner.discard_upload(args.name, *([args.uploader] if args.uploader else []))}
        result = actions[args.command]()
        print(json.dumps(result, indent=2, default=str))
    except Fault as fault:
        print("error %d: %s" % (fault.code, fault.message), file=sys.stderr)
        return 1
    except (TransportError, OSError, resumable.UploadRefused) as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    except ClientConfigError as e:      # no password to sign in with
        print("%s: %s" % (prog, e), file=sys.stderr)
        return 2
    finally:
        svc.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
