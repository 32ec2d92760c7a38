"""Sanitising image names and opening images safely.

An image is named relative to ``images_dir``.  :func:`open_image` refuses
anything that is not a regular ISO 9660 file inside that directory and small
enough for the medium, and returns it *open*: every later use (hashing, handing
it to xorriso) goes through that one file descriptor, so swapping the file or a
directory for a symlink after the checks cannot change what is burned.

xorriso gets the descriptor itself (inherited, named ``/proc/self/fd/N``);
opening that path yields the very inode that was checked, whatever has happened
to the name since.  The image's content can still be rewritten in place by
whoever may write to ``images_dir``; the SHA-256 recorded with the job is of
what was actually read, and verification compares the disc against it.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Any

from clarens.burnerd.errors import Refused

ISO_MAGIC = b"CD001"
ISO_MAGIC_OFFSET = 32769        # byte 1 of the primary volume descriptor at sector 16
MAX_NAME = 1024
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


@dataclass
class Image:
    """An open, checked image.  Close it (or use ``with``) when done."""
    name: str
    path: str            # the real path that was opened
    fd: int
    size: int

    @property
    def proc_path(self) -> str:
        """A path that reopens exactly this inode, for a child that inherited ``fd``."""
        return "/proc/self/fd/%d" % self.fd

    def close(self) -> None:
        """Close the descriptor (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Image":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_name(name: Any) -> str:
    """``name`` if it is an acceptable relative image name, else :class:`Refused`."""
    if not isinstance(name, str):
        raise Refused("bad_request", "image must be a string naming a file in the images directory")
    if not name or len(name) > MAX_NAME or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise Refused("bad_image_name", "image name must be 1-%d printable characters" % MAX_NAME)
    if os.path.isabs(name):
        raise Refused("absolute_path", "image %r is an absolute path; name it relative to the images directory" % name)
    if ".." in name.split("/"):
        raise Refused("parent_reference", "image %r contains a '..' component" % name)
    return name


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def open_image(images_dir: str, name: Any, capacity: int) -> Image:
    """Check and open image ``name`` under ``images_dir`` (a real path) for a medium of ``capacity`` bytes."""
    name = check_name(name)
    path = os.path.realpath(os.path.join(images_dir, name))
    if not _inside(path, images_dir):
        raise Refused("outside_images_dir", "image %r resolves outside the images directory" % name)
    try:
        before = os.lstat(path)
    except FileNotFoundError:
        raise Refused("image_not_found", "image %r does not exist" % name) from None
    except OSError as e:
        raise Refused("image_not_found", "image %r cannot be examined: %s" % (name, e.strerror)) from None
    if not stat.S_ISREG(before.st_mode):
        # Checked before opening: opening a device or FIFO can itself have effects.
        raise Refused("not_regular", "image %r is not a regular file" % name)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as e:
        raise Refused("image_not_found", "image %r cannot be opened: %s" % (name, e.strerror)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused("not_regular", "image %r is not a regular file" % name)
        # What the kernel says the descriptor is: catches a directory swapped for a
        # symlink between realpath() and open().
        if (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino) or \
                not _inside(os.readlink("/proc/self/fd/%d" % fd), images_dir):
            raise Refused("outside_images_dir", "image %r changed while it was being opened" % name)
        if os.pread(fd, len(ISO_MAGIC), ISO_MAGIC_OFFSET) != ISO_MAGIC:
            raise Refused("not_iso", "image %r is not an ISO 9660 image (no CD001 signature)" % name)
        if st.st_size > capacity:
            raise Refused("too_large", "image %r is %d bytes; the medium holds %d" % (name, st.st_size, capacity))
        return Image(name=name, path=path, fd=fd, size=st.st_size)
    except BaseException:
        os.close(fd)
        raise
