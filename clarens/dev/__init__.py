# SPDX-License-Identifier: Apache-2.0
"""Developer tooling, not part of the host: the private Apache instance behind ``./run serve`` and
the tests (:mod:`clarens.dev.instance`) and its demo certificate authority and users
(:mod:`clarens.dev.devpki`).  Nothing in the host imports it."""
