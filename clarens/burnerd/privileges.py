# SPDX-License-Identifier: Apache-2.0
"""Starting the helper as root where there is no systemd (containers, chroots, a plain init script).

systemd makes the socket and the state directory and starts the helper as its
own user; without systemd the helper has to do that itself, and only root can:
the socket belongs to the web tier's group (``www-data``), which the helper's
user is deliberately not a member of.  So a helper started as root

1. gives its state directory (the job database's) and its socket's directory to
   its user, creating them if they are missing (refusing anything that belongs
   to somebody else, or a non-empty directory of root's: it never takes over a
   directory it was not given);
2. takes the database lock and binds the socket *as its user* (effective ids
   only), so that nothing in those directories is ever opened or created by root;
3. as root, checks that the socket it bound is still the one there (an
   ``O_PATH`` descriptor, not following links) and gives that very inode its
   group and mode through ``/proc/self/fd``;
4. drops every privilege for good (groups, gid, uid, ``no_new_privs``) before it
   opens the database or serves a request.

The helper's user owns the socket's directory, so it can remove the socket when
it stops, and it removes it too when the start fails after binding.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import stat
from typing import Iterator

PR_SET_NO_NEW_PRIVS = 38


class PrivilegeError(Exception):
    """The helper cannot be set up as its user; the message says why and what to do."""


def account(name: str) -> pwd.struct_passwd:
    """The account named ``name`` (``user`` in burnerd.conf), or PrivilegeError saying how to create it."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise PrivilegeError(
            "no user %r to run as (burnerd.conf: user = %s): create it with "
            "'adduser --system --group --home /var/lib/%s --no-create-home %s' and 'adduser %s cdrom', "
            "or name another user" % (name, name, name, name, name)) from None


def _groups(user: pwd.struct_passwd) -> list[int]:
    return os.getgrouplist(user.pw_name, user.pw_gid)


@contextlib.contextmanager
def acting_as(user: pwd.struct_passwd) -> Iterator[None]:
    """Run the block with ``user``'s effective uid, gid and groups (root's again afterwards)."""
    saved = os.getgroups()
    os.setgroups(_groups(user))
    os.setegid(user.pw_gid)
    os.seteuid(user.pw_uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)
        os.setgroups(saved)


def ensure_dir(path: str, uid: int, gid: int, mode: int) -> None:
    """``path`` a directory owned by ``uid``:``gid`` with ``mode``: created if missing, taken over if it is
    root's and empty, refused (PrivilegeError) if it is anything else.  Run as root."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        parent = os.path.dirname(path)
        os.makedirs(parent, mode=0o755, exist_ok=True)
        os.mkdir(path, 0o700)
        fd = os.open(path, flags)
    except OSError as e:
        raise PrivilegeError("%s is not a directory (%s)" % (path, e.strerror)) from None
    try:
        st = os.fstat(fd)
        if st.st_uid != uid:
            owner = _user_name(st.st_uid)
            if st.st_uid != 0 or os.listdir(fd):
                raise PrivilegeError(
                    "%s belongs to %s%s, but the helper runs as %s: give the helper a directory of its own "
                    "(or 'chown -R %s %s' if it is the helper's)" % (
                        path, owner, " and is not empty" if st.st_uid == 0 else "", _user_name(uid),
                        _user_name(uid), path))
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def give_socket(path: str, owner: int, uid: int, gid: int, mode: int) -> None:
    """Give the socket at ``path``, bound by ``owner``, its final owner ``uid``, group ``gid`` and ``mode``.

    Run as root.  The node is opened with ``O_PATH | O_NOFOLLOW`` and must be a socket
    of ``owner`` with one link; ownership and mode are then set on that inode through
    ``/proc/self/fd`` (which names exactly it), never through the name, which its
    owner could have swapped for a link to something else.
    """
    try:
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise PrivilegeError("cannot open the socket %s: %s" % (path, e.strerror)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISSOCK(st.st_mode) or st.st_uid != owner or st.st_nlink != 1:
            raise PrivilegeError("%s is no longer the socket the helper bound; not touching it" % path)
        node = "/proc/self/fd/%d" % fd
        if not os.path.exists(node):
            raise PrivilegeError("cannot give %s its group: /proc is not mounted" % path)
        os.chown(node, uid, gid)
        os.chmod(node, mode)
    finally:
        os.close(fd)


def drop(user: pwd.struct_passwd) -> None:
    """Become ``user`` for good: its groups, gid and uid (real, effective and saved), and no new privileges."""
    os.setgroups(_groups(user))
    os.setresgid(user.pw_gid, user.pw_gid, user.pw_gid)
    os.setresuid(user.pw_uid, user.pw_uid, user.pw_uid)
    if os.getresuid() != (user.pw_uid,) * 3 or os.getresgid() != (user.pw_gid,) * 3:
        raise PrivilegeError("could not drop root privileges to %s" % user.pw_name)
    # Nothing the helper runs (setpriv, xorriso) may gain privileges through a setuid bit again.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise PrivilegeError("prctl(PR_SET_NO_NEW_PRIVS) failed: %s" % os.strerror(ctypes.get_errno()))
