# SPDX-License-Identifier: Apache-2.0
"""The burner module's parts on their own: settings, names across helpers, refusals as faults, and
the helper set (a host with only its own helper is a set of one; with drive hosts, one that does
not answer is shown as last seen).  Through Apache with real helpers:
tests/integration/test_server_burner.py and tests/system/test_cluster.py."""

from __future__ import annotations

import dataclasses
import importlib
import os

import pytest

from clarens import loader
from clarens.burnerd.client import RequestRefused
from clarens.burnerd.errors import FAULTS, STATUS
from clarens.config import ConfigError, Settings
from clarens.db import open_db
from clarens.faults import APPLICATION_ERROR, SERVICE_UNAVAILABLE, Fault
from tests.helpers import ROOT
from tests.unit.fakes import isolated

# Helper codes that only a disagreement between the web tier and its helper can cause.
PROTOCOL_CODES = {"bad_request", "body_too_large", "not_found", "method_not_allowed", "not_implemented",
                  "uri_too_long", "headers_too_large", "bad_http_version", "internal_error"}


@pytest.fixture
def burner():
    with isolated():
        yield loader._import("burner", os.path.join(ROOT, "modules", "burner"))


def part(burner, name):
    """A part of the burner module, loaded as the host loads it."""
    return importlib.import_module("%s.%s" % (burner.__name__, name))


def config(**values):
    return Settings({k: str(v) for k, v in values.items()}, "[module:burner] of a test")


# -- settings -------------------------------------------------------------------------------------

def test_settings_are_typed_and_frozen(burner):
    settings = part(burner, "settings").Settings.from_config(config(
        max_image_mb=100, socket="/run/own.sock", drive_hosts="b=/run/b.sock a.1=/run/a.sock", admin_group="ops"))
    assert (settings.max_image, settings.unfinished_uploads, settings.upload_reserve) == (10**8, 10**8, 10**9)
    assert settings.partial_upload_expiry == 48 * 3600 and settings.admin_group == "ops"
    assert settings.helpers == (("", "/run/own.sock"), ("b", "/run/b.sock"), ("a.1", "/run/a.sock"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.admin_group = "everyone"
    assert part(burner, "settings").Settings.from_config(config(max_image_mb=1, socket="")).helpers == ()


@pytest.mark.parametrize("values, error", [
    ({}, ConfigError),                                               # max_image_mb is required
    ({"max_image_mb": 0}, ConfigError),
    ({"max_image_mb": 1, "drive_hosts": "b=relative.sock"}, ValueError),
    ({"max_image_mb": 1, "drive_hosts": "b:x=/run/b.sock"}, ValueError),   # ':' would make names ambiguous
    ({"max_image_mb": 1, "drive_hosts": "b=/run/1.sock b=/run/2.sock"}, ValueError),
    ({"max_image_mb": 1, "drive_hosts": "/run/b.sock"}, ValueError),
])
def test_bad_settings_are_refused(burner, values, error):
    with pytest.raises(error):
        part(burner, "settings").Settings.from_config(config(**values))


# -- names across helpers -------------------------------------------------------------------------

def test_drive_and_job_names(burner):
    references = part(burner, "references")
    assert references.qualified("", "sim0") == "sim0" and references.qualified("b", 7) == "b:7"
    assert references.drive_ref("sim0") == ("", "sim0", False)
    assert references.drive_ref("b:sim0") == ("b", "sim0", True)
    assert references.job_ref(7) == ("", 7) and references.job_ref("7") == ("", 7)
    assert references.job_ref("b:12") == ("b", 12)


@pytest.mark.parametrize("job_id", [-1, "b:-1", "b:", "b:1e3", "b:\uff11\uff12", "b: 1", 2 ** 63, "b:%d" % 2 ** 63])
def test_job_names_that_name_no_job(burner, job_id):
    with pytest.raises(Fault) as info:
        part(burner, "references").job_ref(job_id)
    assert info.value.code == FAULTS["job_not_found"]
    assert info.value.message == "job_not_found: there is no job %s of yours" % ascii(job_id)


# -- refusals as faults -----------------------------------------------------------------------------

def test_every_refusal_has_a_code_of_its_own():
    assert len(set(FAULTS.values())) == len(FAULTS) and all(2000 < code < 2100 for code in FAULTS.values())
    web_tier_own = set(FAULTS) - set(STATUS)
    assert web_tier_own == {"bad_option", "not_yours", "upload_not_found", "upload_in_progress"}
    # every code the helper sends is the caller's to act on, a sign it cannot serve, or a disagreement
    assert set(STATUS) == (set(FAULTS) - web_tier_own) | {"shutting_down", "forbidden"} | PROTOCOL_CODES


@pytest.mark.parametrize("code, fault_code, message", [
    ("symlink", FAULTS["symlink"], "symlink: why"),
    ("drive_busy", FAULTS["drive_busy"], "drive_busy: why"),
    ("shutting_down", SERVICE_UNAVAILABLE, "burner unavailable: shutting_down: why"),
    ("forbidden", SERVICE_UNAVAILABLE, "burner unavailable: forbidden: why"),
    ("bad_request", APPLICATION_ERROR, "burner helper error: bad_request: why"),
    ("http_502", APPLICATION_ERROR, "burner helper error: http_502: why"),
])
def test_the_helper_s_refusals_become_faults(burner, code, fault_code, message):
    fault = part(burner, "refusals").from_helper(RequestRefused(STATUS.get(code, 502), code, "why"))
    assert (fault.code, fault.message) == (fault_code, message)


# -- the helper set -----------------------------------------------------------------------------------

class FakeClient:
    def __init__(self, drives, jobs):
        self._drives, self._jobs = drives, jobs

    def drives(self):
        return self._drives

    def jobs(self, identity=None):
        return [j for j in self._jobs if identity in (None, j["identity"])]

    def job(self, number):
        for job in self._jobs:
            if job["id"] == number:
                return job
        raise RequestRefused(404, "job_not_found", "no job %d" % number)


def fake_helper(burner, host, drives=(), jobs=(), down=False):
    """A Helper whose calls go to a FakeClient, or fail as the real one does when its helper is down."""
    helpers = part(burner, "helpers")

    class Fake(helpers.Helper):
        def call(self, call, admin):
            if self.down:
                raise Fault(SERVICE_UNAVAILABLE, "burner unavailable: %snothing listens on its socket"
                            % ("drive host %s: " % host if host else ""))
            try:
                return call(FakeClient(list(drives), list(jobs)))
            except RequestRefused as e:
                raise helpers.from_helper(e) from None
    fake = Fake(host, "/nonexistent/%s.sock" % (host or "own"))
    fake.down = down
    return fake


def drive(name, job=None):
    return {"name": name, "kind": "stdio", "dev": "stdio:/secret/%s.disc" % name, "capacity": 1,
            "busy": job is not None, "current_job": job, "queued": 0, "medium": None}


def job(number, who="alice", state="burning", drive_name="sim0"):
    return {"id": number, "identity": who, "image": "a.iso", "drive": drive_name, "state": state,
            "progress": None, "verification": None}


@pytest.fixture
def db(tmp_path):
    with isolated():
        yield open_db(str(tmp_path / "burner.tdb"))


def test_a_host_with_only_its_own_helper_is_a_set_of_one(burner, db):
    helpers = part(burner, "helpers")
    own = fake_helper(burner, "", drives=[drive("sim0", job=3)], jobs=[job(3), job(4, who="bob")])
    one = helpers.Helpers([own], db)
    assert not one.remembers
    assert one.drives(admin=False) == [{k: v for k, v in drive("sim0", job=3).items() if k != "dev"}]
    assert one.jobs("alice", admin=False) == [job(3)] and len(one.jobs("alice", admin=True)) == 2
    assert one.job(3, "alice", admin=False) == job(3)
    for job_id, who in ((4, "alice"), (99, "alice"), ("b:3", "alice")):
        with pytest.raises(Fault) as info:
            one.job(job_id, who, admin=False)
        assert info.value.code == FAULTS["job_not_found"]
    with pytest.raises(Fault) as info:
        one.for_drive("b:sim0")
    assert info.value.code == FAULTS["unknown_drive"]
    assert db.keys() == []                       # nothing remembered: nothing else to show
    own.down = True
    for call in (lambda: one.drives(admin=False), lambda: one.jobs("alice", admin=False),
                 lambda: one.job(3, "alice", admin=False)):
        with pytest.raises(Fault) as info:
            call()
        assert info.value.code == SERVICE_UNAVAILABLE
    assert helpers.Helpers([], db).drives(admin=False) == []


def test_with_drive_hosts_one_that_does_not_answer_is_shown_as_last_seen(burner, db):
    helpers = part(burner, "helpers")
    own = fake_helper(burner, "", drives=[drive("sim0")], jobs=[job(1)])
    b = fake_helper(burner, "b", drives=[drive("sim0", job=12)], jobs=[job(12), job(13, who="bob")])
    c = fake_helper(burner, "c", down=True)                          # never seen
    cluster = helpers.Helpers([own, b, c], db)
    assert cluster.remembers
    listed = cluster.drives(admin=False)
    assert [(d["name"], d["host"], d["reachable"], d["current_job"]) for d in listed] == [
        ("sim0", "", True, None), ("b:sim0", "b", True, "b:12"), ("c:", "c", False, None)]
    assert "dev" not in listed[1] and "drive host c" in listed[2]["error"]
    assert [(j["id"], j.get("host"), j["drive"]) for j in cluster.jobs("alice", admin=False)] == [
        (1, None, "sim0"), ("b:12", "b", "b:sim0")]
    assert cluster.job("b:12", "alice", admin=False)["state"] == "burning"
    assert len(cluster.jobs("root", admin=True)) == 3                 # an administrator saw bob's too
    b.down = True
    assert [(d["name"], d["reachable"]) for d in cluster.drives(admin=False)] == [
        ("sim0", True), ("b:sim0", False), ("c:", False)]
    seen = {j["id"]: j for j in cluster.jobs("alice", admin=True)}
    assert (seen["b:12"]["state"], seen["b:12"]["last_state"]) == ("unreachable", "burning")
    assert seen["b:13"]["identity"] == "bob" and [j["id"] for j in cluster.jobs("alice", admin=False)] == [1, "b:12"]
    assert cluster.job("b:12", "alice", admin=False)["state"] == "unreachable"
    with pytest.raises(Fault) as info:                               # bob's job: as if it did not exist
        cluster.job("b:13", "alice", admin=False)
    assert info.value.code == FAULTS["job_not_found"]
    never = cluster.job("c:5", "alice", admin=False)                 # never seen here: nothing to hide
    assert (never["id"], never["state"], never["last_state"]) == ("c:5", "unreachable", None)
