# SPDX-License-Identifier: Apache-2.0
"""Reference mod_python handlers the benchmark serves beside Clarens, from the same Apache.

They are preloaded with ``PythonImport`` like the host, so no request pays for importing them.
"""
