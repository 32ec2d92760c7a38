# SPDX-License-Identifier: Apache-2.0
"""The Apaches of this host that serve Clarens, as an administrator drives them.

Which Apache that is depends on how Clarens is installed: in the system's own
Apache (``/etc/apache2``, the configuration ``clarens``), or in a dedicated
instance (``/etc/apache2-clarens``, Debian's ``apache2@clarens``) that the main
Apache proxies to (``clarens-proxy``).  Each is checked (``apache2ctl
configtest``) and restarted through the init system: systemd where it runs, the
init script otherwise (``service``, which works in containers and chroots too).
When that cannot be done, the caller gets the exact command to run.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

MAIN_CONFDIR = "/etc/apache2"
INSTANCE = "clarens"
CLEAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


class ApacheError(Exception):
    """An Apache could not be checked or restarted; the message says what to run."""


def systemd_running() -> bool:
    """Whether systemd is this system's init (not merely installed)."""
    return os.path.isdir("/run/systemd/system")


@dataclass(frozen=True)
class Apache:
    """One Apache: the main one (``suffix`` empty) or a Debian instance ``apache2-SUFFIX``."""
    suffix: str = ""

    @property
    def confdir(self) -> str:
        return MAIN_CONFDIR + ("-" + self.suffix if self.suffix else "")

    @property
    def name(self) -> str:
        """The init script's name (``apache2``, ``apache2-clarens``)."""
        return "apache2" + ("-" + self.suffix if self.suffix else "")

    @property
    def unit(self) -> str:
        """systemd's name for it (``apache2``, ``apache2@clarens``)."""
        return "apache2" + ("@" + self.suffix if self.suffix else "")

    def _env(self) -> dict[str, str]:
        env = {"PATH": CLEAN_PATH, "LANG": "C.UTF-8"}
        if self.suffix:
            env["APACHE_CONFDIR"] = self.confdir
        return env

    def enabled(self, conf: str) -> bool:
        """Whether this Apache has the configuration ``conf`` (conf-enabled/) switched on."""
        return os.path.exists(os.path.join(self.confdir, "conf-enabled", conf + ".conf"))

    def configtest(self) -> str | None:
        """None if ``apache2ctl configtest`` passes, else what it said."""
        out = subprocess.run(["apache2ctl", "configtest"], env=self._env(), capture_output=True, text=True)
        return None if out.returncode == 0 else (out.stderr + out.stdout).strip()

    def pid_file(self) -> str:
        return "/run/%s/apache2.pid" % self.name

    def running(self) -> bool:
        """Whether this Apache's parent process is alive."""
        out = subprocess.run(["start-stop-daemon", "--status", "--pidfile", self.pid_file(), "--name", "apache2"],
                             env=self._env(), capture_output=True)
        return out.returncode == 0

    def command(self, action: str) -> list[str]:
        """The command that does ``action`` (start, stop, restart, reload) to this Apache here."""
        return ["systemctl", action, self.unit] if systemd_running() else ["service", self.name, action]

    def apply(self, action: str) -> str:
        """``reload`` (a graceful restart) or ``restart`` (a full one) this Apache, if it runs; what
        was done.  ApacheError naming the command if the init system refused or failed."""
        if not self.running():
            return "%s is not running: the new settings apply when it starts (%s)" % (
                self.name, " ".join(self.command("start")))
        out = subprocess.run(self.command(action), env=self._env(), capture_output=True, text=True)
        if out.returncode != 0:
            raise ApacheError("could not %s %s (%s); once that is fixed, run:\n    %s" % (
                action, self.name, (out.stderr + out.stdout).strip() or out.returncode, " ".join(self.command(action))))
        return "%s: %s" % (self.name, "restarted" if action == "restart" else "restarted gracefully")


MAIN = Apache()
DEDICATED = Apache(INSTANCE)


def serving() -> list[Apache]:
    """The Apaches whose configuration includes Clarens' generated settings: the one that runs
    Clarens (the main one, or the dedicated instance) and, with an instance, the main one that
    proxies to it (its body limits come from the same settings)."""
    found = [apache for apache, conf in ((MAIN, "clarens"), (DEDICATED, "clarens"), (MAIN, "clarens-proxy"))
             if apache.enabled(conf)]
    return list(dict.fromkeys(found))
