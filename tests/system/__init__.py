# SPDX-License-Identifier: Apache-2.0
"""Tests of whole deployments and long runs: several hosts, the package, the soak, a browser, ./run."""
