# SPDX-License-Identifier: Apache-2.0
"""xorriso's side of a drive: the argument lists of its commands and the meaning of its output.

Both shipped backends (:mod:`clarens.burnerd.backends`) drive xorriso; they run
these commands through their worker (:mod:`clarens.burnerd.processes` says how
a process is started and stopped).

Measured with xorriso 1.5.4 on ``stdio:`` pseudo-drives (a file standing in for
the disc):

* libburn does emulate the write speed on ``stdio:`` (``speed=1`` is DVD 1x,
  about 1.3 MB/s), but only smoothly with ``stdio_sync=end``: with the default
  fsync every 16 MiB the pacing and the progress counter move in 16 MiB jumps
  and a small image is written at full speed.  ``stdio_sync=end`` also makes
  the pseudo-disc durable once the burn has reported success.
* The fifo size bounds stdio throughput: a 256 MiB image took 3.5 s with the
  default 4 MiB fifo, 0.66 s with 32 MiB, 0.47 s with 64 MiB (and 137 s with 64 KiB).
* xorriso checks whether the burn has ended only between two progress
  messages, once a second by default: ``-pacifier interval=0.1`` cut the
  average burn of that image from 0.94 s to 0.61 s (32 MiB fifo).
* 1.5.4 ignores SIGPIPE from about 2 ms after it starts: a closed output pipe
  does not stop it (see :mod:`~clarens.burnerd.processes`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

MIB = 1024 * 1024
PACIFIER_INTERVAL = 0.1     # xorriso notices the end of a burn only when it next reports progress
SECTOR = 2048

# "xorriso : UPDATE :   11 of   40 MB written (fifo 99%) [buf  50%]   6.0x."
# (xorriso's "MB" are sectors / 512, i.e. MiB; past the announced size it drops "of N")
_PROGRESS_RE = re.compile(r"UPDATE : +(\d+)(?: of +\d+)? MB written")
_PROBLEM_RE = re.compile(r"\b(?:SORRY|FAILURE|FATAL|ABORT)\b")


@dataclass(frozen=True)
class Commands:
    """The xorriso commands for one drive, as argv lists.

    ``first`` are options every command starts with (a real drive's
    ``-ban_stdio_write``), ``burn_options`` more cdrecord options for a burn (a
    pseudo-drive's ``stdio_sync=end``): the backend of the drive's kind says which.
    """
    binary: str                          # the xorriso executable
    address: str                         # the drive: "/dev/sr0", "stdio:/path"
    fifo_size: str                       # cdrecord's fs=
    first: tuple[str, ...] = ()
    burn_options: tuple[str, ...] = ()

    def burn(self, image_path: str, speed: int | None) -> list[str]:
        """Write ``image_path`` to the drive as one closed session."""
        argv = [self.binary, *self.first, "-pacifier", "interval=%g" % PACIFIER_INTERVAL,
                "-as", "cdrecord", "-v", "dev=" + self.address, "fs=" + self.fifo_size, *self.burn_options]
        if speed is not None:
            argv.append("speed=%d" % speed)
        argv.append(image_path)
        return argv

    def read_back(self, size: int) -> list[str]:
        """Copy the first ``size`` bytes (rounded up to whole sectors) of the medium to stdout."""
        last = max(0, (size + SECTOR - 1) // SECTOR - 1)
        return [self.binary, *self.first, "-outdev", self.address, "-check_media", "data_to=-", "use=outdev",
                "what=disc", "min_lba=0", "max_lba=%d" % last, "--"]

    def media(self) -> list[str]:
        """Report the medium in the drive and the space left on it."""
        return [self.binary, *self.first, "-outdev", self.address, "-tell_media_space"]

    def eject(self) -> list[str]:
        """Eject the medium (a no-op that succeeds on ``stdio:`` pseudo-drives)."""
        return [self.binary, *self.first, "-outdev", self.address, "-eject", "all"]


def parse_progress(line: str) -> int | None:
    """Bytes written according to one line of xorriso's output, or None if it is no progress line."""
    m = _PROGRESS_RE.search(line)
    return int(m.group(1)) * MIB if m else None


def is_problem(line: str) -> bool:
    """True for xorriso's SORRY/FAILURE/FATAL lines: the reason a run failed."""
    return _PROBLEM_RE.search(line) is not None


class MediaInfo(NamedTuple):
    current: str       # "DVD-R sequential recording", "stdio file, overwriteable", "is not present"...
    status: str        # "is blank", "is written , is appendable"...
    free_bytes: int | None


def parse_media(output: str) -> MediaInfo:
    """The ``Media current``, ``Media status`` and ``Media space`` lines of ``-tell_media_space``."""
    fields = {}
    for line in output.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    space = re.match(r"(\d+)s\Z", fields.get("Media space", ""))
    return MediaInfo(current=fields.get("Media current", ""), status=fields.get("Media status", ""),
                     free_bytes=int(space.group(1)) * SECTOR if space else None)
