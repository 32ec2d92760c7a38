"""Who is calling: the identity the host establishes for each request."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Identity:
    """A caller.  ``name`` is a certificate DN, an Apache user name or ``anonymous``;
    ``source`` says how it was established; ``groups`` are the ACL groups it is in."""
    name: str
    source: str                 # "certificate", "apache", or "anonymous"
    groups: tuple[str, ...] = ()

    @property
    def authenticated(self) -> bool:
        return self.source != "anonymous"

    def describe(self) -> dict:
        """The struct system.whoami returns."""
        return {"identity": self.name, "source": self.source, "authenticated": self.authenticated,
                "groups": list(self.groups)}


ANONYMOUS = Identity("anonymous", "anonymous")
