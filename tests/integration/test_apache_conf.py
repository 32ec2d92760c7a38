# SPDX-License-Identifier: Apache-2.0
"""The Apache configuration rendered from clarens.conf and the machine: accepted by apachectl,
limits and pool following the configuration, the pool sized to the machine."""

import importlib.util
import os
import subprocess

import pytest

from clarens import apacheconf, sizing
from clarens import config as config_mod
from clarens.dev.instance import Instance, free_port
from tests.helpers import ROOT, make_state_dir

SMALL = sizing.Machine(memory_mb=1024, cores=1)


def configtest(path, *defines: str) -> subprocess.CompletedProcess:
    argv = ["apache2ctl", "-t"]
    for define in defines:
        argv += ["-c", define]
    return subprocess.run(argv + ["-c", "Include %s" % path], capture_output=True, text=True)


def test_the_checkout_include_passes_configtest(tmp_path):
    conf = tmp_path / "clarens.conf"
    conf.write_text(apacheconf.render_system(root=ROOT))
    out = configtest(conf)
    assert out.returncode == 0 and "Syntax OK" in out.stderr, out.stderr


def test_the_package_include_passes_configtest_with_its_generated_file(tmp_path):
    """The package's include (a conffile) carries neither limits nor pool: it includes the generated file."""
    include = apacheconf.render_system(package=True)
    assert "Include %s\n" % apacheconf.GENERATED_PATH in include
    assert "LimitRequestBody ${CLARENS_LIMIT_BODY}\n" in include and "StartServers" not in include
    generated = tmp_path / "apache-generated.conf"
    generated.write_text(apacheconf.generated_file(config_mod.DEFAULT_CONFIG, SMALL))
    conf = tmp_path / "clarens.conf"
    # It refuses any MPM but prefork; this machine's Apache is not ours to switch, so that check is left out.
    refusal = '    Error "Clarens needs the prefork MPM: a2dismod mpm_event mpm_worker && a2enmod mpm_prefork"\n'
    assert refusal in include
    conf.write_text(include.replace(apacheconf.GENERATED_PATH, str(generated)).replace(refusal, ""))
    out = configtest(conf)
    assert out.returncode == 0 and "AH00111" not in out.stderr, out.stderr    # AH00111: a variable not defined


def test_configtest_catches_a_broken_include(tmp_path):
    broken = tmp_path / "broken.conf"
    broken.write_text("<Location /clarens>\nPythonHandler\n")
    assert configtest(broken).returncode != 0


def test_body_limits_follow_the_configuration(tmp_path):
    conf = tmp_path / "clarens.conf"
    conf.write_text("[server]\nmax_body = 1000\n[module:burner]\nmax_image_mb = 50000\n")
    rendered = apacheconf.render_system(str(conf), root="/srv/clarens")
    assert "Define CLARENS_LIMIT_BODY %d\n" % (1000 + 65536) in rendered
    assert "Define CLARENS_LIMIT_IMAGES 50000000000\n" in rendered
    assert "<Location /clarens/images/>\n        LimitRequestBody ${CLARENS_LIMIT_IMAGES}\n" in rendered
    assert "Define CLARENS_ROOT /srv/clarens" in rendered and "clarens.config %s\n" % conf in rendered
    conf.write_text("[server]\nmax_body = 1000\n")
    out = subprocess.run(["/usr/bin/python3", "-m", "clarens.apacheconf", "--config", str(conf)], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 1 and "max_image_mb" in out.stderr


@pytest.mark.parametrize("machine, workers, spare", [
    (sizing.Machine(1024, 1), 36, 7),           # a LAN box with a DVD writer
    (sizing.Machine(2048, 2), 73, 14),
    (sizing.Machine(512, 1), 18, 3),
    (sizing.Machine(24105, 2), 512, 96),        # the benchmark machine: 96 idle, as it was tuned with
    (sizing.Machine(8192, 2), 292, 58),         # memory bounds the workers, not cores: slow clients cost no CPU
    (sizing.Machine(262144, 4), 512, 192),      # past 512 a crowd is a front end's to hold
    (sizing.Machine(128, 8), 8, 2),             # never below the floors
])
def test_the_auto_pool_follows_memory_and_cores(machine, workers, spare):
    pool = config_mod.load(config_mod.DEFAULT_CONFIG).pool_on(machine)
    assert (pool.workers, pool.spare) == (workers, spare)
    assert pool.max_spare == min(2 * spare, workers)


def test_the_idle_pool_of_a_1_gb_machine_fits_its_budget():
    """After a burst prefork keeps up to MaxSpareServers idle: with the parent, at 14 MB each (more than
    the 11-14 MB PSS measured), a fifth of the memory."""
    pool = config_mod.load(config_mod.DEFAULT_CONFIG).pool_on(SMALL)
    assert (pool.max_spare + 1) * sizing.PROCESS_MB <= SMALL.memory_mb / 4


def test_numbers_in_the_configuration_win_over_auto(tmp_path):
    conf = tmp_path / "clarens.conf"
    conf.write_text("[server]\nworkers = 20\n")
    pool = config_mod.load(str(conf)).pool_on(sizing.Machine(24105, 2))
    assert (pool.workers, pool.spare) == (20, 19)               # spare auto, kept below workers
    conf.write_text("[server]\nspare_workers = 50\n")
    with pytest.raises(config_mod.ConfigError, match="spare_workers = 50 must be below workers = 36"):
        config_mod.load(str(conf)).pool_on(SMALL)
    conf.write_text("[server]\nworkers = 10\nspare_workers = 10\n")
    with pytest.raises(config_mod.ConfigError, match="must be below"):
        config_mod.load(str(conf))
    conf.write_text("[server]\nworkers = lots\n")
    with pytest.raises(config_mod.ConfigError, match="not an integer"):
        config_mod.load(str(conf))


def test_the_generated_settings_say_where_they_come_from(tmp_path):
    text = apacheconf.generated_file(config_mod.DEFAULT_CONFIG, SMALL)
    assert text.startswith("# Generated by clarens-admin apache-conf from %s for this machine (1 core, 1024 MB)"
                           % config_mod.DEFAULT_CONFIG)
    assert "StartServers 7\n" in text and "MaxSpareServers 14\n" in text and "MaxRequestWorkers 36\n" in text
    assert "workers = 36 (auto on 1 core, 1024 MB: min(512, memory / 2 / 14 MB))" in text
    # ServerLimit has a floor: changing workers below it needs no full restart.
    assert "ServerLimit 256\n" in text
    big = apacheconf.generated(config_mod.load(config_mod.DEFAULT_CONFIG), sizing.Machine(262144, 4))
    assert "ServerLimit 512\n" in big and "MaxRequestWorkers 512\n" in big


def test_this_machine_is_read_with_its_cgroup_limits(tmp_path, monkeypatch):
    machine = sizing.this_machine()
    with open("/proc/meminfo") as f:
        total_mb = int(f.readline().split()[1]) // 1024
    assert 1 <= machine.cores <= os.cpu_count() and 64 <= machine.memory_mb <= total_mb
    # A container's limits, cgroup v2 and v1, on the process's cgroup or one above it.
    v2, v1 = tmp_path / "v2" / "box" / "svc", tmp_path / "v1" / "box"
    v2.mkdir(parents=True)
    v1.mkdir(parents=True)
    (v2 / "memory.max").write_text("max\n")
    (v2.parent / "memory.max").write_text("%d\n" % (1 << 30))
    (v2.parent / "cpu.max").write_text("150000 100000\n")
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    dirs = {"": str(v2), "memory": str(v1)}
    assert sizing._cgroup_memory(dirs) == 1 << 30 and sizing._cgroup_cores(dirs) == 2
    (v1 / "memory.limit_in_bytes").write_text("%d\n" % (512 << 20))
    assert sizing._cgroup_memory(dirs) == 512 << 20
    assert sizing._cgroup_memory({}) is None and sizing._cgroup_cores({}) is None


def test_preparing_an_instance_byte_compiles_what_its_children_import():
    """Apache's user cannot write __pycache__ in a checkout: without the compiled files each child
    compiled every module from source at its start."""
    Instance(make_state_dir("clarens-compiled-"), free_port(), free_port()).prepare()
    stale = []
    for directory in ("clarens", "modules"):
        for path, _, names in os.walk(os.path.join(ROOT, directory)):
            for name in names:
                if name.endswith(".py"):
                    source = os.path.join(path, name)
                    compiled = importlib.util.cache_from_source(source)
                    if not os.path.exists(compiled) or os.path.getmtime(compiled) < os.path.getmtime(source):
                        stale.append(source)
    assert stale == []
