# SPDX-License-Identifier: Apache-2.0
"""Build the Debian package from this checkout, and check it with lintian (``./run package``).

The build runs in a copy of the files the package is made of (those git tracks: it
refuses, listing them, files there that git does not), under ``.state/package/``, so that dpkg-buildpackage's
leftovers (debian/clarens/, debian/files, ...) never land in the checkout and two
builds never share a tree.  The version is debian/changelog's; ``--version``
builds the same tree as another version (a changelog entry is added to the copy
only), which is how the install test makes an upgrade.

    python3 -m clarens.dev.package [--version V] [--out DIR] [--no-lintian]

prints the path of ``clarens_VERSION_all.deb`` and lintian's findings; exits 1 if
the build fails or lintian reports an error or a warning (overrides, with their
reasons, are in debian/clarens.lintian-overrides).
"""

from __future__ import annotations

import argparse
import email.utils
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_OUT = os.path.join(ROOT, ".state", "package")
# What the package is built from (debian/rules and debian/clarens.install name nothing else).
SOURCES = ("debian", "clarens", "modules", "conf", "acl", "docs", "README.md")
CHANGELOG_HEAD = re.compile(r"^clarens \(([^)]+)\) (\S+); urgency=\S+$", re.M)
MAINTAINER_LINE = re.compile(r"^ -- (.+?)  ", re.M)


class BuildError(Exception):
    """The package could not be built; the message has the tool's output."""


def changelog_version(path: str = os.path.join(ROOT, "debian", "changelog")) -> str:
    """The version of the newest debian/changelog entry."""
    with open(path, encoding="utf-8") as f:
        head = CHANGELOG_HEAD.search(f.read())
    if head is None:
        raise BuildError("%s: no 'clarens (VERSION) DIST; urgency=...' line" % path)
    return head.group(1)


def source_files(root: str = ROOT) -> list[str]:
    """The files the package is built from: those git tracks under :data:`SOURCES` (committed or
    added), present; without git, every file there but caches.  BuildError listing the files git does
    not track there (and does not ignore): a service author's module in modules/ must not ship by
    accident, nor a new file of the project be left out silently."""
    def listed(*options: str) -> list[str]:
        out = subprocess.run(["git", "-C", root, "ls-files", "-z", *options, "--", *SOURCES], capture_output=True,
                             check=True)
        return [n for n in out.stdout.decode().split("\0") if n]
    try:
        names, untracked = listed("--cached"), listed("--others", "--exclude-standard")
    except (OSError, subprocess.CalledProcessError):
        names, untracked = [], []
        for top in SOURCES:
            for directory, dirs, files in os.walk(os.path.join(root, top)):
                dirs[:] = [d for d in dirs if d != "__pycache__"]
                names += [os.path.relpath(os.path.join(directory, f), root) for f in files]
            if os.path.isfile(os.path.join(root, top)):
                names.append(top)
    if untracked:
        raise BuildError("git does not track these files, so they are not built into the package; add them "
                         "(git add), remove them, or have .gitignore ignore them:\n  " + "\n  ".join(sorted(untracked)))
    return sorted(n for n in set(names) if os.path.isfile(os.path.join(root, n)) and not n.endswith(".pyc"))


def _bump(changelog: str, version: str) -> None:
    """Add an entry for ``version`` on top of ``changelog``, by the newest entry's maintainer."""
    with open(changelog, encoding="utf-8") as f:
        text = f.read()
    head, maintainer = CHANGELOG_HEAD.search(text), MAINTAINER_LINE.search(text)
    if head is None or maintainer is None:
        raise BuildError("%s: cannot find the newest entry" % changelog)
    entry = "clarens (%s) %s; urgency=medium\n\n  * Rebuilt as %s.\n\n -- %s  %s\n\n" % (
        version, head.group(2), version, maintainer.group(1), email.utils.formatdate(localtime=False))
    with open(changelog, "w", encoding="utf-8") as f:
        f.write(entry + text)


def build(version: str | None = None, out: str = DEFAULT_OUT) -> str:
    """Build the package (as ``version``, if given) into ``out``; the path of the .deb."""
    version = version or changelog_version()
    work = os.path.join(out, "build-%s" % version)
    tree = os.path.join(work, "clarens-%s" % version)
    shutil.rmtree(work, ignore_errors=True)
    for name in source_files():
        os.makedirs(os.path.dirname(os.path.join(tree, name)), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, name), os.path.join(tree, name))
    if version != changelog_version(os.path.join(tree, "debian", "changelog")):
        _bump(os.path.join(tree, "debian", "changelog"), version)
    result = subprocess.run(["dpkg-buildpackage", "-b", "-us", "-uc"], cwd=tree, capture_output=True, text=True,
                            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                                 "DEB_BUILD_OPTIONS": "nocheck"})
    with open(os.path.join(work, "build.log"), "w") as log:
        log.write(result.stdout + result.stderr)
    deb = "clarens_%s_all.deb" % version
    if result.returncode != 0 or not os.path.exists(os.path.join(work, deb)):
        raise BuildError("dpkg-buildpackage failed (%s):\n%s" % (
            os.path.join(work, "build.log"), "\n".join((result.stdout + result.stderr).splitlines()[-30:])))
    shutil.copy2(os.path.join(work, deb), os.path.join(out, deb))
    return os.path.join(out, deb)


def lintian(deb: str) -> tuple[bool, str]:
    """Whether ``deb`` passes lintian (no error, no warning that is not overridden), and every finding,
    informational and overridden ones included."""
    verdict = subprocess.run(["lintian", "--fail-on", "error,warning", deb], capture_output=True, text=True)
    shown = subprocess.run(["lintian", "--display-info", "--show-overrides", deb], capture_output=True, text=True)
    findings = [line for line in (shown.stdout + shown.stderr).splitlines()
                if line and not line.startswith("running with root privileges")]
    return verdict.returncode == 0, "\n".join(findings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./run package", description=__doc__.splitlines()[0])
    parser.add_argument("--version", help="build as this version (default: debian/changelog's)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="where the .deb goes (default .state/package)")
    parser.add_argument("--no-lintian", action="store_true")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    try:
        deb = build(args.version, args.out)
    except BuildError as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    print(deb)
    if args.no_lintian:
        return 0
    passed, findings = lintian(deb)
    print("lintian: %s" % ("passed" if passed else "FAILED"))
    if findings:
        print(findings)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
