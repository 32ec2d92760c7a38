# SPDX-License-Identifier: Apache-2.0
"""Tests against the real parts: Apache with mod_python, the burner helper, tdb, sshd."""
