# SPDX-License-Identifier: Apache-2.0
"""What makes a file an ISO 9660 image: the one definition the web tier and the helper share.

An ISO 9660 file system begins with 16 sectors (32 KiB) of system area; the
first volume descriptor follows at sector 16 and carries the standard
identifier ``CD001`` from its second byte on.  The web tier checks it on the head
of an upload (``modules/burner``), the helper on the opened image before a burn
(:mod:`clarens.burnerd.images`).
"""

ISO_MAGIC = b"CD001"
ISO_MAGIC_OFFSET = 32769        # byte 1 of the primary volume descriptor at sector 16
