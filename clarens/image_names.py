# SPDX-License-Identifier: Apache-2.0
"""What may name an image: the one rule for image names, which the web tier (uploads, listings, the
background hashing, ``burner.burn``) and the burner helper (:mod:`clarens.burnerd.images`) all apply.

One visible file name directly in the images directory (no ``/``, no ``..``, no leading ``.``:
hidden files are uploads in progress), printable UTF-8 (:func:`clarens.text.printable`), at most
:data:`MAX_NAME` bytes and :data:`MAX_NAME_CHARS` characters, ending in ``.iso``.  A value of its own,
below the host's stores and the helper alike, so that both import it rather than copy it.
"""

from __future__ import annotations

from clarens import text

MAX_NAME = 255                  # bytes: the longest file name (NAME_MAX)
MAX_NAME_CHARS = 200            # characters: what a listing or a page shows in full
NAME_RULES = ("1-%d characters (at most %d bytes of UTF-8) ending in .iso, without '/', a leading '.', "
              "or control or formatting characters" % (MAX_NAME_CHARS, MAX_NAME))


def name_problem(name: str) -> tuple[str, str] | None:
    """Why ``name`` cannot name an image, as (refusal code, message), or None if it can: the one
    rule for image names, which the web tier and the helper both apply."""
    shown = ascii(name)[:120]
    if not name or not text.printable(name) or len(name.encode("utf-8")) > MAX_NAME:
        return "bad_image_name", "image name %s is not %s" % (shown, NAME_RULES)
    if name.startswith("/"):
        return "absolute_path", "image %s is an absolute path; name a file in the images directory" % shown
    if ".." in name.split("/"):
        return "parent_reference", "image %s contains a '..' component" % shown
    if "/" in name:
        return "subdirectory", "image %s is in a subdirectory; images are files directly in the images " \
                               "directory" % shown
    if name.startswith("."):
        return "hidden_file", "image %s is a hidden file (uploads in progress are hidden)" % shown
    if len(name) > MAX_NAME_CHARS or name[-4:].lower() != ".iso":
        return "bad_image_name", "image name %s is not %s" % (shown, NAME_RULES)
    return None
