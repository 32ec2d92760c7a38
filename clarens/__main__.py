# SPDX-License-Identifier: Apache-2.0
"""``python3 -m clarens``: the command line of :mod:`clarens.cli`."""

import sys

from clarens.cli import main

sys.exit(main())
