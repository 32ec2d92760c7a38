# SPDX-License-Identifier: Apache-2.0
"""burner: burn ISO images to CD/DVD writers, verify the disc, eject it.

The work is done by the burner helper (``python3 -m clarens.burnerd``), a
separate process that may open the drives; this module authorises callers and
talks to it over its Unix socket.  Images are uploaded with
``PUT /clarens/images/NAME`` (authorised as ``burner.upload``; resumable, see
:mod:`clarens.web.uploads`).  The web page is ``GET /clarens/burner``.  Users see
and cancel only their own jobs; members of the admin group see and cancel all.

Drives on other machines: ``drive_hosts = b=/run/clarens/drive-hosts/b.sock ...``
names the helpers of other hosts, each reached through its Unix socket forwarded
here by OpenSSH (``conf/systemd/clarens-drive-host@.service``).  Their drives are
``HOST:DRIVE`` and their jobs ``"HOST:ID"`` (strings); this host's own helper keeps
plain drive names and integer job ids.  A burn runs on the drive's host, which reads
the image from the same images directory (shared storage, mounted at the same path
everywhere).

Each part in a module of its own: :mod:`.settings` (``[module:burner]``, typed),
:mod:`.service` (the burner in this process), :mod:`.helpers` (the helpers, as one
set: a host with only its own is a set of one), :mod:`.references` (``HOST:ID``
names), :mod:`.methods` (the ``burner.*`` methods), :mod:`.routes` (uploads and the
page), :mod:`.images` (the images directory), :mod:`.unfinished` (unfinished
uploads), :mod:`.refusals` (each refusal its own fault code).
"""

from . import service
from .methods import methods_list, methods_sig
from .routes import page, upload


def _startup_init(config, dbs, log):
    service.start(config, dbs, log)


web_routes = {"images": upload, "burner": page}
web_pages = {"burner": "Burner"}
__all__ = ["methods_list", "methods_sig", "web_routes", "web_pages"]
