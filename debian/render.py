#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Render what the package installs under /etc from the checkout's own files, at build time.

The checkout's configuration (conf/, acl/) is the one source: it documents every
key and is what the tests run with.  The package needs the same files with the
installed paths (modules in /usr/share/clarens/modules, the ACL files beside
clarens.conf in /etc/clarens/acl), and the Apache include rendered from that
clarens.conf, so that its body limits follow it.  Each substitution must match
exactly once: a checkout file that no longer has the line fails the build
instead of shipping a half-edited configuration.

    python3 debian/render.py SOURCE_DIR OUTPUT_DIR VERSION
"""

from __future__ import annotations

import os
import re
import shutil
import sys

EDITS = {
    "conf/clarens.conf": [
        ("modules_path = ../modules\n",
         "modules_path = /usr/local/lib/clarens/modules:/usr/share/clarens/modules\n"),
        ("# Directories holding service modules (one Python package each), separated by ':'.\n",
         "# Directories holding service modules (one Python package each), separated by ':';\n"
         "# the first wins a name.  Put your own in /usr/local/lib/clarens/modules; the\n"
         "# package's are in /usr/share/clarens/modules.\n"),
        ("acl_dir = ../acl\n", "acl_dir = acl\n"),
        ("(python3 -m clarens.apacheconf; the private instance does it at every start)",
         "(clarens-admin apache-conf writes them and restarts Apache as the change needs)"),
        ("# Subject fields every client certificate must carry, FIELD = VALUE (like Spring\n"
         "# Python's verify_fields).  A verified certificate without them is refused.\n",
         "# Subject fields every client certificate must carry, FIELD = VALUE (like Spring\n"
         "# Python's verify_fields).  A verified certificate without them is refused.  Apache\n"
         "# accepts any certificate its SSLCACertificateFile (the site clarens-ssl) vouches\n"
         "# for; if that CA also signs certificates for other purposes, name your users' here.\n"),
        ("[certificate]\n# O = Clarens Demo\n", "[certificate]\n# O = Example\n"),
    ],
    "conf/burnerd.conf": [],
    "conf/client.conf": [
        ("# url = local:/opt/clarens/conf/clarens.conf\n", "# url = local:/etc/clarens/clarens.conf\n"),
    ],
    "acl/00-defaults.acl": [
        ("    # Members are added elsewhere (demo.acl for the private instance), e.g.\n",
         "    # Add members in a file of your own (groups add up across files), e.g.\n"
         "    # /etc/clarens/acl/50-local.acl:  <Group admins> Member jane </Group>\n"),
    ],
}
TARGETS = {"conf/clarens.conf": "clarens.conf", "conf/burnerd.conf": "burnerd.conf",
           "conf/client.conf": "client.conf", "acl/00-defaults.acl": "acl/00-defaults.acl"}


class RenderError(Exception):
    """A checkout file no longer looks the way an edit expects."""


def render_file(source: str, edits: list[tuple[str, str]]) -> str:
    """``source``'s text with every (old, new) edit applied; each old text must occur exactly once."""
    with open(source, encoding="utf-8") as f:
        text = f.read()
    for old, new in edits:
        if text.count(old) != 1:
            raise RenderError("%s: expected exactly one %r, found %d" % (source, old, text.count(old)))
        text = text.replace(old, new)
    return text


def render(src: str, out: str, version: str) -> None:
    """Write etc/clarens/*, the Apache include and the version-stamped package under ``out``."""
    etc = os.path.join(out, "etc", "clarens")
    os.makedirs(os.path.join(etc, "acl"), exist_ok=True)
    for name, edits in EDITS.items():
        with open(os.path.join(etc, TARGETS[name]), "w", encoding="utf-8") as f:
            f.write(render_file(os.path.join(src, name), edits))
    sys.path.insert(0, src)
    from clarens import apacheconf
    apache = os.path.join(out, "etc", "apache2", "conf-available")
    os.makedirs(apache, exist_ok=True)
    with open(os.path.join(apache, "clarens.conf"), "w", encoding="utf-8") as f:
        f.write(apacheconf.render_system(os.path.join(etc, "clarens.conf"), package=True))
    # The Python package, with the version of debian/changelog, the one place it is set (without the
    # developer tooling of clarens/dev: the private instance, its demo CA; READMEs go to /usr/share/doc).
    lib = os.path.join(out, "clarens")
    shutil.rmtree(lib, ignore_errors=True)
    shutil.copytree(os.path.join(src, "clarens"), lib,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "dev", "README.md"))
    init = os.path.join(lib, "__init__.py")
    with open(init, encoding="utf-8") as f:
        text, count = re.subn(r'^__version__ = "[^"]*"$', '__version__ = "%s"' % version, f.read(), flags=re.M)
    if count != 1:
        raise RenderError("%s: no __version__ line to stamp" % init)
    with open(init, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    try:
        render(sys.argv[1], sys.argv[2], sys.argv[3])
    except RenderError as e:
        sys.exit("debian/render.py: %s" % e)
