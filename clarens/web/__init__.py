# SPDX-License-Identifier: Apache-2.0
"""Pages served to browsers."""
