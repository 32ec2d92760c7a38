# SPDX-License-Identifier: Apache-2.0
"""``PythonImport clarens.startup INTERPRETER``: boot the host in every Apache child at child start.

Loading here, rather than on the first request, means no request pays for
imports or ``_startup_init``; the request path is imported and run a few times
too, for the same reason.
"""

from mod_python import apache

from clarens import handler, host
from clarens.config import ConfigError

try:
    handler.warm_up(host.boot(apache.main_server.get_options()))
except ConfigError as e:
    apache.log_error("clarens: configuration error, not serving: %s" % e, apache.APLOG_CRIT, apache.main_server)
