# SPDX-License-Identifier: Apache-2.0
"""Which text may be a name: one rule for image names (web tier and helper) and for identities.

A name is shown to people (pages, listings, logs) and stored (tdb keys, file names), so
it must be valid UTF-8 and show as what it is: no controls (C0 and C1), no formatting
characters (bidi overrides, zero-width ones), no surrogates, private-use, unassigned or
non-characters (U+FFFE), no line or paragraph separators.
"""

from __future__ import annotations

import unicodedata

_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def printable(text: str) -> bool:
    """Whether ``text`` holds only characters a name may hold (see the module docstring)."""
    if text.isascii():
        return text.isprintable()
    return not any(unicodedata.category(c) in _BAD_CATEGORIES for c in text)
