# SPDX-License-Identifier: Apache-2.0
"""Development tool: the ACL enforcing path (``Policy.allows``) in-process, per case.

    /usr/bin/python3 -m bench.acl                  # nanoseconds per check, each case
    /usr/bin/python3 -m bench.acl --number 20000 --case miss_prefix_denied --once

Every request's access check is ``Policy.allows``.  A decision is memoised per
identity and method for each policy version (the ``hit`` case, what almost every
request pays); it is evaluated in full (the ``miss_*`` cases) the first time,
past the memo's bound, and on every call an entry with a validity window decides.
Timings on a shared machine drift; ``--once`` runs one case NUMBER times and
nothing else, for counting instructions, which a loaded machine does not disturb::

    valgrind --tool=cachegrind --cache-sim=no /usr/bin/python3 -m bench.acl --once --case hit --number 0
    valgrind --tool=cachegrind --cache-sim=no /usr/bin/python3 -m bench.acl --once --case hit --number 100000

(the difference of the two ``I refs`` totals over 100,000 is the instructions per check).
"""

from __future__ import annotations

import argparse
import sys
import timeit
from typing import Callable

from clarens.acl.model import EARLIEST, LATEST, Entry, Policy
from clarens.identity import ANONYMOUS, Identity

ALICE = Identity("/C=UK/O=Home/OU=Lab/CN=Alice", "certificate")
MALLORY = Identity("/C=UK/O=Elsewhere/CN=Mallory", "certificate")
BOB = Identity("bob", "basic")


def _policy(window: bool) -> Policy:
    # A validity window that is always open: the same decisions, but never memoised.
    extra: dict = {"not_before": EARLIEST, "not_after": LATEST} if window else {}
    groups = {"staff": ["bob", "/C=UK/O=Home/"], "suspended": ["carol"]}
    entries = [
        Entry("*", "allow,deny", allow=["/C=UK/O=Home/OU=Lab/CN=Alice"], **extra),
        Entry("burner", "allow,deny", allow=["authenticated"], deny=["/C=UK/O=Elsewhere/", "/C=UK/O=Other/"],
              **extra),
        Entry("echo", "deny,allow", deny=["anonymous"], allow_groups=["staff"], deny_groups=["suspended"], **extra),
        Entry("echo.echo", "allow,deny", allow=["anonymous", "authenticated"], **extra),
    ]
    policy = Policy({e.target: e for e in entries}, groups)
    policy.validate()
    return policy


def _member(policy: Policy, who: Identity) -> Identity:
    return Identity(who.name, who.source, policy.groups_of(who.name, who.authenticated))


def cases() -> dict[str, Callable[[], bool]]:
    """Each case: a call of the enforcing path, and what it must answer (checked before timing)."""
    memo, window = _policy(False), _policy(True)

    def check(policy: Policy, who: Identity, method: str) -> Callable[[], bool]:
        who = _member(policy, who)
        return lambda: policy.allows(who, method, clock)

    return {
        "hit": check(memo, ALICE, "burner.burn"),
        "miss_exact_allowed": check(window, ALICE, "system.whoami"),          # via "*": the whole chain
        "miss_prefix_denied": check(window, MALLORY, "burner.burn"),
        "miss_no_allow": check(window, ANONYMOUS, "burner.burn"),
        "miss_group_allowed": check(window, BOB, "echo.reverse"),
        "miss_special_allowed": check(window, BOB, "echo.echo"),
    }


EXPECTED = {"hit": True, "miss_exact_allowed": True, "miss_prefix_denied": False, "miss_no_allow": False,
            "miss_group_allowed": True, "miss_special_allowed": True}


def clock() -> float:
    return 1000.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.acl", description=__doc__.splitlines()[0])
    p.add_argument("--number", type=int, default=200000, help="checks per timing")
    p.add_argument("--case", choices=sorted(EXPECTED), action="append", help="only these cases (repeatable)")
    p.add_argument("--once", action="store_true", help="run each case NUMBER times, untimed (for valgrind)")
    args = p.parse_args(argv)
    table = cases()
    for key in args.case or list(table):
        call = table[key]
        got = call()
        if got != EXPECTED[key]:
            raise SystemExit("%s: allows() answered %s, expected %s" % (key, got, EXPECTED[key]))
        if args.once:
            for _ in range(args.number):
                call()
            continue
        best = min(timeit.repeat(call, number=args.number, repeat=7)) / args.number
        print("%-22s %8.1f ns/check" % (key, best * 1e9))
    return 0


if __name__ == "__main__":
    sys.exit(main())
