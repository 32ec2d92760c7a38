# SPDX-License-Identifier: Apache-2.0
"""Access control: identities, groups and per-method ACLs kept in tdb (see model, files, store)."""
