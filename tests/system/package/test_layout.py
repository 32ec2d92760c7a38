# SPDX-License-Identifier: Apache-2.0
"""What the Debian package installs agrees with itself, checked without building it (fast, in ./run test).

tests/system/package/test_install.py installs the real package in a fresh Debian root;
these check the rendered files on their own: the production configuration, the
agreement of socket, group, users and images directory between Apache's side,
the helper and systemd, and the single version.
"""

import ast
import configparser
import glob
import os
import re
import subprocess

import pytest

import clarens
from clarens import apacheconf
from clarens import config as config_mod
from clarens.acl.files import load_dir
from clarens.burnerd import config as burner_config
from clarens.dev import package as packaging
from tests.helpers import ROOT, SHIPPED_MODULES, shipped_modules


def server_wide_directives() -> list[str]:
    """Every directive the package's include and its generated settings give the whole Apache (outside
    any <Location>), but for the MPM check, the Include and the Defines (named on their own)."""
    text = apacheconf.render_system(package=True) + "\n" + apacheconf.GENERATED
    found, depth = [], 0
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if re.match(r"</(Location|If|ElseIf|Else)>", line):
            depth -= 1
        elif re.match(r"<(Location|If|ElseIf|Else)\b", line):
            depth += 1
        elif depth == 0 and not line.startswith("<"):
            name = line.split()[0]
            if name not in ("Error", "Include", "Define") and name not in found:
                found.append(name)
    return found


# What the install message lists: the MPM, the modules and every server-wide directive.
SERVER_WIDE_CHANGES = ["prefork MPM", "python, headers and reqtimeout",
                       "CLARENS_LIMIT_*"] + server_wide_directives()


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
            text = path.read_text()
            assert "Clarens Demo" not in text, path
            # What an installed host has: not the checkout's units, no "python3 -m" where a command is installed.
            for checkout in ("conf/systemd", "conf/burnerd.conf", "python3 -m clarens.burnerd",
                             "python3 -m clarens.apacheconf"):
                assert checkout not in text, (path, checkout)
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


def test_the_apache_include_names_the_installed_configuration_and_its_generated_settings(etc):
    """A conffile that never changes with the configuration or the machine: what does is in the generated
    file it includes (written by the postinst, clarens-admin apache-conf)."""
    text = (etc / "etc" / "apache2" / "conf-available" / "clarens.conf").read_text()
    assert "PythonOption clarens.config /etc/clarens/clarens.conf\n" in text and "PythonPath" not in text
    assert "AuthUserFile" not in text and "<IfModule !mpm_prefork_module>" in text   # the host checks passwords
    assert config_mod.load(str(etc / "etc" / "clarens" / "clarens.conf")).htpasswd == "/etc/clarens/htpasswd"
    assert "\nInclude /etc/clarens/apache-generated.conf\n" in text and "LimitRequestBody ${CLARENS_LIMIT_BODY}" in text
    assert not (etc / "etc" / "clarens" / "apache-generated.conf").exists()       # not shipped: not a conffile
    with open(os.path.join(ROOT, "debian", "clarens.postinst")) as f:
        assert "clarens-admin apache-conf --no-restart" in f.read()


def test_the_version_is_set_in_one_place(etc):
    """debian/changelog's; the build stamps it into the installed package.  The checkout's own
    __version__ (for ./run serve) must not drift from it."""
    assert clarens.__version__ == packaging.changelog_version()
    stamped = (etc / "clarens" / "__init__.py").read_text()
    assert '\n__version__ = "9.8.7"\n' in stamped
    assert not (etc / "clarens" / "dev").exists()        # developer tooling is not installed


# What a packaged install runs, beside the commands of debian/bin and the shipped modules: what the
# Apache include loads, what the docs have administrators and clients run with python3 -m, the library.
ENTRY_POINTS = ("clarens.handler", "clarens.startup", "clarens.stdio", "clarens.client", "clarens.cluster",
                "clarens.apacheconf", "clarens.acl.__main__", "clarens.__main__")


def _named(path: str) -> set[str]:
    """Every module name the file at ``path`` imports, or names in a string (``python3 -m NAME``)."""
    with open(path) as f:
        tree = ast.parse(f.read())
    named = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            named.add(node.module)
            named.update("%s.%s" % (node.module, alias.name) for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            named.add(node.value)
    return {".".join(n.split(".")[:i]) for n in named for i in range(1, n.count(".") + 2)}


def test_the_package_ships_no_module_that_an_installed_host_never_runs(etc):
    """The private instance's own tooling (clarens/dev: the instance, its helper's launcher, supervisor and
    socket activation) stays out of the package: every module installed is reached from what runs."""
    lib = etc / "clarens"
    modules = {".".join(p.relative_to(etc).with_suffix("").parts).removesuffix(".__init__"): str(p)
               for p in lib.rglob("*.py")}
    users = glob.glob(os.path.join(ROOT, "debian", "bin", "*")) + \
        glob.glob(os.path.join(ROOT, "modules", "**", "*.py"), recursive=True)
    todo = [*ENTRY_POINTS, *(name for path in users for name in _named(path) if name in modules)]
    reached: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo.extend(n for n in _named(modules[name]) if n in modules)
    assert sorted(set(modules) - reached) == []
    assert not any(name.startswith("clarens.dev") for name in modules)


def test_maintainer_scripts_parse_and_keep_debhelpers_place():
    for name in ("postinst", "prerm", "postrm"):
        path = os.path.join(ROOT, "debian", "clarens." + name)
        assert os.access(path, os.X_OK)
        assert subprocess.run(["sh", "-n", path]).returncode == 0, name
        with open(path) as f:
            assert "\n#DEBHELPER#\n" in f.read(), name


def test_the_commands_run_on_debians_interpreter():
    """Installed as /usr/bin/clarens{,-burn} and /usr/sbin/clarens-{acl,admin,burnerd}: Debian's python3 has tdb
    and is mod_python's, whatever python3 comes first on PATH; clarens itself is in its path."""
    with open(os.path.join(ROOT, "debian", "clarens.install")) as f:
        installed = f.read()
    for name, where in (("clarens", "usr/bin"), ("clarens-burn", "usr/bin"), ("clarens-acl", "usr/sbin"),
                        ("clarens-admin", "usr/sbin"), ("clarens-burnerd", "usr/sbin")):
        path = os.path.join(ROOT, "debian", "bin", name)
        assert "debian/bin/%s %s/\n" % (name, where) in installed and os.access(path, os.X_OK)
        with open(path) as f:
            assert f.readline() == "#!/usr/bin/python3\n", name
        assert os.path.exists(os.path.join(ROOT, "debian", "man", "%s.%s" % (name, "1" if where == "usr/bin" else "8")))


def test_the_install_message_and_the_docs_list_every_server_wide_change():
    """A shared Apache: the administrator learns from the install message and docs/administration.md what the package
    changes for every site (the install test checks that the message is printed)."""
    assert {"Timeout", "StartServers", "ServerLimit", "PythonImport", "TraceEnable"} <= set(server_wide_directives())
    with open(os.path.join(ROOT, "debian", "clarens.postinst")) as f:
        postinst = f.read()
    message = postinst[postinst.index("server_wide_message() {"):]
    with open(os.path.join(ROOT, "docs", "administration.md")) as f:
        guide = f.read()
    section = guide[guide.index("\n## A shared Apache\n"):]
    section = section[:section.index("\n## ", 1)]
    for change in SERVER_WIDE_CHANGES:
        assert change in message, change
        assert change in section, change


def test_the_tests_load_the_modules_the_package_ships_and_no_other():
    """The package ships modules/* as git tracks it (./run package builds from tracked files); the tests'
    instances load those, through a directory of their own, never the rest of the checkout's modules/."""
    out = subprocess.run(["git", "-C", ROOT, "ls-files", "modules"], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    tracked = sorted({path.split("/")[1] for path in out.stdout.split()})
    assert tracked == sorted(SHIPPED_MODULES)
    directory = shipped_modules()
    assert sorted(os.listdir(directory)) == tracked
    assert all(os.path.realpath(os.path.join(directory, name)) == os.path.join(ROOT, "modules", name)
               for name in tracked)


def test_the_package_is_built_from_tracked_files_only(tmp_path):
    """./run package refuses, listing them, files git does not track in what it builds from: a service
    author's modules/counter must not ship by accident (nor a forgotten new file be left out)."""
    repo = str(tmp_path)

    def git(*args):
        subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True)
    git("init", "-q")
    for name in ("debian/rules", "modules/echo/__init__.py", "README.md", "notes.txt"):
        os.makedirs(os.path.dirname(os.path.join(repo, name)) or repo, exist_ok=True)
        with open(os.path.join(repo, name), "w") as f:
            f.write("x\n")
    git("add", "debian", "modules", "README.md")
    assert packaging.source_files(repo) == ["README.md", "debian/rules", "modules/echo/__init__.py"]
    os.makedirs(os.path.join(repo, "modules", "counter"))
    with open(os.path.join(repo, "modules", "counter", "__init__.py"), "w") as f:
        f.write("methods_list = {}\n")
    with open(os.path.join(repo, ".gitignore"), "w") as f:
        f.write("*.log\n")
    with open(os.path.join(repo, "modules", "echo", "debug.log"), "w") as f:
        f.write("ignored\n")
    with pytest.raises(packaging.BuildError, match=r"git does not track.*\n  modules/counter/__init__.py$"):
        packaging.source_files(repo)
    git("add", "modules/counter")                    # added (not yet committed) is tracked
    assert "modules/counter/__init__.py" in packaging.source_files(repo)
