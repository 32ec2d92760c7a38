# SPDX-License-Identifier: Apache-2.0
"""Faults are logged in proportion to the request: one line per code, with caller-controlled text cut."""

from clarens import faultlog
from clarens.faults import ACCESS_DENIED, INVALID_PARAMS, Fault


def test_one_fault_one_plain_line():
    [(code, line)] = faultlog.lines("alice@192.0.2.7", [("acl.show", Fault(ACCESS_DENIED, "access denied: no"))])
    assert code == ACCESS_DENIED and line == "alice@192.0.2.7 acl.show: fault -32001: access denied: no"


def test_many_faults_one_line_per_code_with_the_first_few_methods():
    faults = [("acl.m%d" % i, Fault(ACCESS_DENIED, "access denied %d" % i)) for i in range(10000)]
    faults.insert(3, ("echo.echo", Fault(INVALID_PARAMS, "wrong")))
    out = faultlog.lines("anonymous@192.0.2.7", faults)
    assert [code for code, _ in out] == [ACCESS_DENIED, INVALID_PARAMS]
    line = out[0][1]
    assert line.startswith("anonymous@192.0.2.7: 10000 calls got fault -32001 (acl.m0, acl.m1, acl.m2, acl.m3, "
                           "acl.m4, ...): access denied 0")
    assert len(line) < 300 and out[1][1] == "anonymous@192.0.2.7 echo.echo: fault -32602: wrong"


def test_caller_controlled_text_is_cut():
    [(_, line)] = faultlog.lines("a@b", [("x" * 5000, Fault(1, "y" * 5000 + "\nsecond line"))])
    assert len(line) < 2 * faultlog.MAX_TEXT + 40 and "second line" not in line
