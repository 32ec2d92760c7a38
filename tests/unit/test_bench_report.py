# SPDX-License-Identifier: Apache-2.0
"""The bench's targets are computed from its rounds as documented (bench/README.md)."""

from __future__ import annotations

import pytest

from bench import report


def _rows(**rps: list[float]) -> dict:
    return {key: {"key": key, "rps": sorted(values)[len(values) // 2], "p99_ms": 1.0,
                  "rounds": [{"rps": v} for v in values]}
            for key, values in rps.items()}


def test_own_cost_divides_out_the_floor_both_sides_pay():
    # floor 25 us a request; the reference costs 10 us more, the host 5 us more: a 2x lead,
    # which the whole requests' ratio (35 us against 30 us) shows as 1.17x.
    rows = _rows(read_fixed=[40_000.0], parse=[1e6 / 35], xmlrpc_echo_acl=[1e6 / 30])
    assert report._own_cost_ratio(rows, "xmlrpc_echo_acl", "parse", "read_fixed") == pytest.approx(2.0)
    assert report._rps_ratio(rows, "xmlrpc_echo_acl", "parse") == pytest.approx(35 / 30)


def test_own_cost_sums_the_rounds_instead_of_a_median_of_noisy_differences():
    # A round in which the host measured no faster than the floor still counts, with its weight.
    rows = _rows(read_fixed=[1e6 / 25, 1e6 / 25], parse=[1e6 / 35, 1e6 / 35],
                 xmlrpc_echo_acl=[1e6 / 25, 1e6 / 35])
    assert report._own_cost_ratio(rows, "xmlrpc_echo_acl", "parse", "read_fixed") == pytest.approx(20 / 10)


def test_the_lead_target_is_met_at_1_3x_and_missing_rows_leave_it_out():
    met = report.goals(_rows(read_fixed=[40_000.0], parse=[1e6 / 38.5], xmlrpc_echo_acl=[1e6 / 35]))
    lead = [g for g in met if "own cost" in g["target"]]
    assert len(lead) == 1 and lead[0]["met"] and lead[0]["shown"] == "1.35x lead"
    missed = report.goals(_rows(read_fixed=[40_000.0], parse=[1e6 / 38], xmlrpc_echo_acl=[1e6 / 36]))
    assert not [g for g in missed if "own cost" in g["target"]][0]["met"]
    assert not [g for g in report.goals(_rows(parse=[1.0], xmlrpc_echo_acl=[1.0])) if "own cost" in g["target"]]
