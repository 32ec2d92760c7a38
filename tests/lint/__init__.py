# SPDX-License-Identifier: Apache-2.0
"""The style, type and licence checks of the whole tree."""
