# SPDX-License-Identifier: Apache-2.0
"""malformed: a test-only module whose methods_list is not a dict."""
methods_list = ["not", "a", "dict"]
