# SPDX-License-Identifier: Apache-2.0
"""Exec a program the way systemd socket activation does: the socket at fd 3, ``LISTEN_PID`` = own pid.

    python3 -m clarens.dev.socket_activate FD PROGRAM ARGS...

``FD`` is an inherited listening socket.  exec keeps the pid, so ``LISTEN_PID``
names the program.  Used by :mod:`clarens.dev.burnerd_launch` (the private instance)
and the tests, to run the helper exactly as under systemd.
"""

import os
import sys

fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.set_inheritable(3, True)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = "1"
os.execv(sys.argv[2], sys.argv[2:])
