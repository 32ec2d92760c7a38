# SPDX-License-Identifier: Apache-2.0
"""Every relative link in the README and docs/ names a file that exists, and a heading in it.

The documentation is split over several files that link to each other by
section; a heading renamed or moved must not leave a link pointing nowhere.
"""

import glob
import os
import re

import pytest

from tests.helpers import ROOT

DOCUMENTS = sorted([os.path.join(ROOT, "README.md")] + glob.glob(os.path.join(ROOT, "docs", "*.md")))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: str) -> set[str]:
    with open(path) as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)       # a '#' in a code block is no heading
    return {_anchor(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def test_anchors_follow_githubs_rule():
    assert _anchor("The failover pool, and the rule that no call runs twice by accident") == \
        "the-failover-pool-and-the-rule-that-no-call-runs-twice-by-accident"
    assert _anchor("Sessions: sign in once") == "sessions-sign-in-once"
    assert _anchor("Installing (administrators)") == "installing-administrators"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_resolve(document):
    with open(document) as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):          # http:, https:, mailto:: not ours to check
            continue
        path, _, anchor = target.partition("#")
        path = os.path.normpath(os.path.join(os.path.dirname(document), path)) if path else document
        if not os.path.exists(path):
            broken.append(target)
        elif anchor and path.endswith(".md") and anchor not in _anchors(path):
            broken.append(target)
    assert broken == []
