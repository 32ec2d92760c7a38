# SPDX-License-Identifier: Apache-2.0
"""broken: a test-only module that fails to import."""
import no_such_module_anywhere  # noqa: F401

methods_list = {}
