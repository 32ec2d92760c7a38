"""What the Debian package installs agrees with itself, checked without building it (fast, in ./run test).

tests/package/test_install.py installs the real package in a fresh Debian root;
these check the rendered files on their own: the production configuration, the
agreement of socket, group, users and images directory between Apache's side,
the helper and systemd, and the single version.
"""

import configparser
import os
import subprocess

import pytest

import clarens
from clarens import config as config_mod
from clarens.acl.files import load_dir
from clarens.burnerd import config as burner_config
from clarens.dev import package as packaging
from tests.helpers import ROOT


@pytest.fixture(scope="module")
def etc(tmp_path_factory):
    """/etc of the package as debian/render.py makes it at build time (with a version to stamp)."""
    out = tmp_path_factory.mktemp("render")
    subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "debian", "render.py"), ROOT, str(out), "9.8.7"],
                   check=True, cwd=ROOT)
    return out


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read(os.path.join(ROOT, "conf", "systemd", name))
    return parser


def test_the_server_configuration_names_the_installed_places(etc):
    cfg = config_mod.load(str(etc / "etc" / "clarens" / "clarens.conf"))
    assert cfg.modules_path == ["/usr/local/lib/clarens/modules", "/usr/share/clarens/modules"]
    assert cfg.acl_dir == str(etc / "etc" / "clarens" / "acl")     # beside clarens.conf: /etc/clarens/acl
    assert cfg.db_dir == "/var/lib/clarens" and cfg.access_control and cfg.cert_require == {}


def test_production_defaults_have_no_demo_identities_and_no_simulated_drive(etc):
    policy = load_dir(str(etc / "etc" / "clarens" / "acl"))
    assert policy.groups == {"admins": []}
    for path in (etc / "etc" / "clarens").rglob("*"):
        if path.is_file():
            assert "Clarens Demo" not in path.read_text(), path
    helper = burner_config.load(str(etc / "etc" / "clarens" / "burnerd.conf"))
    assert helper.drives == {} and "# [drive:dvd0]\n# kind = device\n# dev = /dev/sr0\n" in \
        (etc / "etc" / "clarens" / "burnerd.conf").read_text()


def test_socket_group_users_and_images_agree_out_of_the_box(etc):
    server = config_mod.load(str(etc / "etc" / "clarens" / "clarens.conf")).for_module("burner")
    helper = burner_config.load(str(etc / "etc" / "clarens" / "burnerd.conf"))
    socket_unit, service = unit("clarens-burnerd.socket"), unit("clarens-burnerd.service")
    # Apache connects where the helper (and systemd for it) listens ...
    assert server["socket"] == helper.socket == socket_unit["Socket"]["ListenStream"]
    # ... as www-data, the socket's group and an allowed uid; the helper's user owns the socket.
    assert helper.socket_gid == 33 and socket_unit["Socket"]["SocketGroup"] == "www-data"
    assert 33 in helper.allowed_uids and socket_unit["Socket"]["SocketMode"] == "0660"
    assert helper.user == service["Service"]["User"] == socket_unit["Socket"]["SocketUser"] == "clarens-burner"
    assert service["Service"]["SupplementaryGroups"] == "cdrom"
    assert service["Service"]["ExecStart"] == "/usr/sbin/clarens-burnerd --config /etc/clarens/burnerd.conf"
    # Uploads go where the helper burns from (www-data:clarens-burner 2750, made by the postinst).
    assert server["images_dir"] == helper.images_dir == "/srv/clarens/images"
    with open(os.path.join(ROOT, "debian", "clarens.postinst")) as f:
        postinst = f.read()
    assert "ensure_dir www-data $HELPER 2750 /srv/clarens/images" in postinst and "HELPER=clarens-burner" in postinst


def test_the_apache_include_follows_the_installed_configuration(etc):
    text = (etc / "etc" / "apache2" / "conf-available" / "clarens.conf").read_text()
    assert "PythonOption clarens.config /etc/clarens/clarens.conf\n" in text and "PythonPath" not in text
    assert "AuthUserFile" not in text and "<IfModule !mpm_prefork_module>" in text   # the host checks passwords
    assert config_mod.load(str(etc / "etc" / "clarens" / "clarens.conf")).htpasswd == "/etc/clarens/htpasswd"
    cfg = config_mod.load(str(etc / "etc" / "clarens" / "clarens.conf"))
    assert "LimitRequestBody %d\n" % (cfg.max_body + 65536) in text


def test_the_version_is_set_in_one_place(etc):
    """debian/changelog's; the build stamps it into the installed package.  The checkout's own
    __version__ (for ./run serve) must not drift from it."""
    assert clarens.__version__ == packaging.changelog_version()
    stamped = (etc / "clarens" / "__init__.py").read_text()
    assert '\n__version__ = "9.8.7"\n' in stamped
    assert not (etc / "clarens" / "dev").exists()        # developer tooling is not installed


def test_maintainer_scripts_parse_and_keep_debhelpers_place():
    for name in ("postinst", "prerm", "postrm"):
        path = os.path.join(ROOT, "debian", "clarens." + name)
        assert os.access(path, os.X_OK)
        assert subprocess.run(["sh", "-n", path]).returncode == 0, name
        with open(path) as f:
            assert "\n#DEBHELPER#\n" in f.read(), name


def test_the_commands_run_on_debians_interpreter():
    """Installed as /usr/bin/clarens and /usr/sbin/clarens-{acl,admin,burnerd}: Debian's python3 has tdb
    and is mod_python's, whatever python3 comes first on PATH; clarens itself is in its path."""
    with open(os.path.join(ROOT, "debian", "clarens.install")) as f:
        installed = f.read()
    for name, where in (("clarens", "usr/bin"), ("clarens-acl", "usr/sbin"), ("clarens-admin", "usr/sbin"),
                        ("clarens-burnerd", "usr/sbin")):
        path = os.path.join(ROOT, "debian", "bin", name)
        assert "debian/bin/%s %s/\n" % (name, where) in installed and os.access(path, os.X_OK)
        with open(path) as f:
            assert f.readline() == "#!/usr/bin/python3\n", name
        assert os.path.exists(os.path.join(ROOT, "debian", "man", "%s.%s" % (name, "1" if where == "usr/bin" else "8")))
