# SPDX-License-Identifier: Apache-2.0
"""Hostile crowds (:mod:`clarens.dev.crowd`) against the product as shipped, each giving one table row.

* ``slow_crowd``: 200 slow-body clients (9 kB/s) and 200 slow-header clients (1 B/s), each
  from one address and from 200, while echo is called every 0.25 s (40 s; 10 s with
  ``--quick``) and an image is uploaded at 1 MB/s: the probes' p99 (the target: under 2 s)
  and whether the upload completed.
* ``log_ratio``: a burst of 1,000 requests of every kind the host refuses, from one address
  and from 400: error-log bytes per request byte (the target: under 0.2).
"""

from __future__ import annotations

import base64
import os
import tempfile
from typing import Callable

from bench import servers, targets
from bench.probes import ProbeEnv, ProbeRow
from clarens.dev import crowd, devpki

CROWD = 200
SCENARIOS = [("body", 9000.0, 1), ("body", 9000.0, CROWD), ("header", 1.0, 1), ("header", 1.0, CROWD)]
P99_LIMIT_S = 2.0
UPLOAD_RATE = 10**6
RATIO_LIMIT = 0.2


def slow_crowd(env: ProbeEnv) -> ProbeRow:
    """Other callers' p99 under each slow crowd, with the shipped pool and timeouts."""
    seconds = 10 if env.load.duration <= 2 else 40
    inst = servers.instance(env.state_dir, env.port, burner=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-crowd-") as tmp:
        image = crowd.sparse_image(os.path.join(tmp, "lan.iso"))
        inst.start()
        try:
            pool = inst.server_config().workers
            password = devpki.credentials(inst.state_dir)["demo"]
            auth = "Basic " + base64.b64encode(("demo:%s" % password).encode()).decode()
            for kind, rate, spread in SCENARIOS:
                name = "lan-%s-%d.iso" % (kind, spread)
                measured = crowd.under_crowd(inst.port, kind, CROWD, rate, spread, seconds,
                                             (image, name, UPLOAD_RATE, auth),
                                             settled=lambda: len(inst.processes()) > pool)
                if os.path.exists(os.path.join(inst.images_dir, name)):
                    os.unlink(os.path.join(inst.images_dir, name))
                results["%s x%d from %d" % (kind, CROWD, spread)] = dict(
                    measured.probes.summary(), upload=list(measured.upload or (None, None)),
                    settle_s=measured.settle_s, **measured.counts)
        finally:
            inst.stop()
    worst = max(r["p99_s"] for r in results.values())
    note = "workers %d; probe p99: %s; uploads at 1 MB/s: %s" % (
        pool, ", ".join("%s %.2f s" % (k, r["p99_s"]) for k, r in results.items()),
        ", ".join("%s" % r["upload"][0] for r in results.values()))
    return ProbeRow("slow_crowd", "echo p99 under 200 slow clients (worst of 4 crowds)", targets.PRODUCT,
                    worst * 1000, worst / P99_LIMIT_S, note, results)


def log_ratio(env: ProbeEnv) -> ProbeRow:
    """Error-log bytes per request byte for 1,000 refused requests of each kind, from 1 and 400 addresses."""
    inst = servers.instance(env.state_dir, env.port)
    results = {}
    inst.start()
    try:
        for kind in crowd.REFUSED:
            for spread in (1, 400):
                measured = crowd.log_ratio(inst.port, inst.error_log, kind, 1000, spread)
                results["%s from %d" % (kind, spread)] = round(measured["ratio"], 4)
    finally:
        inst.stop()
    worst = max(results.values())
    note = "worst %.3f; %s" % (worst, ", ".join("%s %.3f" % kv for kv in results.items()))
    return ProbeRow("log_ratio", "error-log bytes per request byte, refused bursts (worst kind)", targets.PRODUCT,
                    None, worst, note, results)


PROBES: list[Callable[[ProbeEnv], ProbeRow]] = [slow_crowd, log_ratio]
