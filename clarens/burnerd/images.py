# SPDX-License-Identifier: Apache-2.0
"""What an image is, for both sides of the burner, and opening one safely.

The one definition the web tier (``modules/burner``: uploads, listings, ``burner.burn``)
and the helper share: an image's name (:func:`clarens.image_names.name_problem`, a rule of the
host's foundation so that the background hashing applies it too) and its ISO 9660 signature
(:data:`ISO_MAGIC` at :data:`ISO_MAGIC_OFFSET`, :func:`head_problem`).

An image is one file name in ``images_dir``, the web tier's upload directory.
:func:`open_image` opens it relative to a descriptor of that directory and
refuses anything that is not what an upload is:

* a name by :data:`clarens.image_names.NAME_RULES`: one visible file name (no ``/``, no ``..``, no
  leading ``.``: hidden files are uploads in progress), printable UTF-8, ending in
  ``.iso``;
* no symlink at all, not even one that stays inside (``fstatat`` without
  following, then ``O_NOFOLLOW``): a name leads to a file in the directory or nowhere;
* a regular file, checked *before* opening, so a FIFO or device is never opened
  (opening one can itself have effects); the opened descriptor must then be the
  same inode, still a regular file;
* one link: a hard link to a file the web tier could not read itself is refused;
* owned by the directory's owner (the web tier's user, who writes the uploads);
* with the ISO 9660 signature, and small enough for the medium, both read
  through the descriptor.

The image is returned *open*: every later use (hashing, handing it to xorriso)
goes through that one descriptor, so swapping the name for something else
after the checks cannot change what is burned.  xorriso gets the descriptor
itself (inherited, named ``/proc/self/fd/N``); opening that path yields the
very inode that was checked.  The content can still be rewritten in place by
whoever may write the file; the SHA-256 recorded with the job is of what was
actually read, and verification compares the disc against it.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from typing import Any

from clarens.burnerd.errors import Refused
from clarens.image_names import name_problem

# An ISO 9660 file system begins with 16 sectors (32 KiB) of system area; the first volume
# descriptor follows at sector 16 and carries the standard identifier "CD001" from its second byte.
ISO_MAGIC = b"CD001"
ISO_MAGIC_OFFSET = 32769        # byte 1 of the primary volume descriptor at sector 16
HEAD_SIZE = ISO_MAGIC_OFFSET + len(ISO_MAGIC)   # bytes of a file that show whether it is an image

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


@dataclass
class Image:
    """An open, checked image.  Close it (or use ``with``) when done."""
    name: str
    path: str            # images_dir/name, as it was opened
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


def head_problem(head: bytes) -> str | None:
    """Why a file whose first :data:`HEAD_SIZE` bytes are ``head`` is not an ISO 9660 image, or None."""
    if head[ISO_MAGIC_OFFSET:HEAD_SIZE] != ISO_MAGIC:
        return "not an ISO 9660 image (no CD001 signature at byte %d)" % ISO_MAGIC_OFFSET
    return None


def check_name(name: Any) -> str:
    """``name`` if it is an acceptable image name (:func:`name_problem`), else :class:`Refused`."""
    if not isinstance(name, str):
        raise Refused("bad_request", "image must be a string naming a file in the images directory")
    problem = name_problem(name)
    if problem is not None:
        raise Refused(*problem)
    return name


def _refuse_open_error(name: str, e: OSError) -> Refused:
    if e.errno == errno.ELOOP:          # O_NOFOLLOW met a symlink swapped in after the check
        return Refused("symlink", "image %r is a symlink" % name)
    if e.errno == errno.ENOENT:
        return Refused("image_not_found", "image %r does not exist" % name)
    return Refused("image_not_found", "image %r cannot be opened: %s" % (name, e.strerror))


def open_image(images_dir: str, name: Any, capacity: int) -> Image:
    """Check and open image ``name`` in ``images_dir`` for a medium of ``capacity`` bytes."""
    name = check_name(name)
    try:
        dir_fd = os.open(images_dir, _DIR_FLAGS)
    except OSError as e:
        raise Refused("image_not_found", "the images directory cannot be opened: %s" % e.strerror) from None
    try:
        owner = os.fstat(dir_fd).st_uid
        try:
            before = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISLNK(before.st_mode):
                raise Refused("symlink", "image %r is a symlink; only regular files are burned" % name)
            if not stat.S_ISREG(before.st_mode):
                raise Refused("not_regular", "image %r is not a regular file" % name)
            fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
        except OSError as e:
            raise _refuse_open_error(name, e) from None
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused("not_regular", "image %r is not a regular file" % name)
        if (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            raise Refused("image_changed", "image %r was replaced while it was being opened" % name)
        if st.st_nlink != 1:
            raise Refused("hard_linked", "image %r has %d hard links; an image must have one" % (name, st.st_nlink))
        if st.st_uid != owner:
            raise Refused("wrong_owner", "image %r is not owned by the owner of the images directory" % name)
        problem = head_problem(os.pread(fd, HEAD_SIZE, 0))
        if problem is not None:
            raise Refused("not_iso", "image %r is %s" % (name, problem))
        if st.st_size > capacity:
            raise Refused("too_large", "image %r is %d bytes; the medium holds %d" % (name, st.st_size, capacity))
        return Image(name=name, path=os.path.join(images_dir, name), fd=fd, size=st.st_size)
    except BaseException:
        os.close(fd)
        raise
