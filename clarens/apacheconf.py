"""Apache's side of the configuration, rendered from ``clarens.conf`` so that the two never disagree.

Apache refuses a body over ``LimitRequestBody`` before the host sees the request,
so its limits must follow the host's: RPC bodies get ``[server] max_body`` (plus
some slack, so that the host, not Apache, answers an oversized call with a proper
fault), and image uploads (``/clarens/images/``) get ``[module:burner]
max_image_mb``, in a ``<Location>`` of their own, whose 413 carries a JSON error
like the host's own.  Both the private instance
(``clarens.dev.instance``) and the include shipped for the system Apache
(``conf/apache/clarens.conf``, rendered from ``clarens.conf.in``) take their limits
from :func:`body_limits`.

    python3 -m clarens.apacheconf [--config conf/clarens.conf] [--root /opt/clarens] > clarens.conf

prints the system include for a configuration (the shipped file is this command's
output for the shipped ``conf/clarens.conf``; a test keeps them equal).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Mapping

from clarens import config as config_mod

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSTEM_TEMPLATE = os.path.join(ROOT, "conf", "apache", "clarens.conf.in")
RPC_SLACK = 65536                 # bytes over max_body that Apache lets through to the host
IMAGES_MODULE, IMAGES_KEY = "burner", "max_image_mb"


class TemplateError(Exception):
    """A template names a placeholder nobody gave a value for."""


def render_template(template: str, values: Mapping[str, str]) -> str:
    """Replace every ``@@NAME@@``; a placeholder without a value is an error."""
    def sub(m: re.Match) -> str:
        if m.group(1) not in values:
            raise TemplateError("template placeholder @@%s@@ has no value" % m.group(1))
        return values[m.group(1)]
    return re.sub(r"@@([A-Z_]+)@@", sub, template)


def body_limits(config: config_mod.ServerConfig) -> dict[str, str]:
    """``LIMIT_BODY`` (RPC calls) and ``LIMIT_IMAGES`` (image uploads), as Apache's ``LimitRequestBody``,
    and ``IMAGES_TOO_LARGE``: the JSON error Apache answers an upload over the limit with (it
    does so from the request's Content-Length, before the host sees the request)."""
    images = config.for_module(IMAGES_MODULE).get_int(IMAGES_KEY, minimum=1) * 1000 * 1000
    too_large = json.dumps({"error": {"code": 413, "message": "the image is larger than the limit of %d bytes"
                                                              % images}}, separators=(",", ":"))
    return {"LIMIT_BODY": str(config.max_body + RPC_SLACK), "LIMIT_IMAGES": str(images),
            "IMAGES_TOO_LARGE": '"%s"' % too_large.replace('"', '\\"')}


def render_system(config_path: str = config_mod.DEFAULT_CONFIG, root: str = "/opt/clarens") -> str:
    """The include for the system Apache (Debian's conf-available/) serving the checkout at ``root``
    with the configuration at ``config_path`` (the shipped one is named inside ``root``)."""
    with open(SYSTEM_TEMPLATE, encoding="utf-8") as f:
        template = f.read()
    config_path = os.path.abspath(config_path)
    named = "${CLARENS_ROOT}/conf/clarens.conf" if config_path == config_mod.DEFAULT_CONFIG else config_path
    return render_template(template, {"ROOT": root, "CONFIG": named, **body_limits(config_mod.load(config_path))})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m clarens.apacheconf", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=config_mod.DEFAULT_CONFIG,
                        help="the clarens.conf whose limits Apache must follow")
    parser.add_argument("--root", default="/opt/clarens", help="where the checkout is installed")
    args = parser.parse_args(argv)
    try:
        sys.stdout.write(render_system(args.config, args.root))
    except config_mod.ConfigError as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
